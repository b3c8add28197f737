//! Config reload against the real binary: each way an operator or a platform
//! changes the config, while a client keeps querying and checks that every
//! response comes whole from one known config.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Server, TempDir};
use serde_json::{json, Value};

/// Reload flags that keep each test short: a short quiet period, and a poll
/// so slow that only file events and signals reload.
const FAST_RELOAD: &[&str] = &["--reload-debounce", "50ms", "--poll-interval", "1h"];

/// Maximum time a test waits for a reload to show.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Marker addresses 192.0.2.1 to 192.0.2.MARKERS; config version N makes
/// only 192.0.2.N internal.
const MARKERS: u32 = 12;

/// A config whose verdicts identify `version`: 10.0.0.0/8 and fd00::/8 are
/// internal in set "lan", and 192.0.2.VERSION/32 is internal in set "marker".
fn config_text(version: u32) -> String {
    format!(
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"fd00::/8\"]\n\n\
         [sets.marker]\ninternal = true\nnetworks = [\"192.0.2.{version}/32\"]\n"
    )
}

/// Builds a config that takes its marker prefix from the list file `marker.txt`.
fn config_with_list() -> String {
    "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"fd00::/8\"]\n\n\
     [sets.marker]\ninternal = true\nfiles = [\"marker.txt\"]\n"
        .to_owned()
}

fn probe_addresses() -> Vec<String> {
    let mut ips = vec![
        "10.1.2.3".to_owned(),
        "fd00::1".to_owned(),
        "8.8.8.8".to_owned(),
    ];
    ips.extend((1..=MARKERS).map(|n| format!("192.0.2.{n}")));
    ips
}

/// Returns the config version whose table produced `body`, a batch response for
/// [`probe_addresses`], or why its verdicts match no whole config.
fn version_of(body: &Value) -> Result<(u64, u32), String> {
    let generation = body["generation"]
        .as_u64()
        .ok_or_else(|| format!("no generation in {body}"))?;
    let results = body["results"]
        .as_array()
        .ok_or_else(|| format!("no results in {body}"))?;
    if results.len() != probe_addresses().len() {
        return Err(format!("{} results in {body}", results.len()));
    }
    for result in results {
        if result["generation"].as_u64() != Some(generation) {
            return Err(format!("batch mixes generations: {body}"));
        }
    }
    let verdict = |index: usize| {
        (
            results[index]["verdict"].as_str(),
            results[index]["set"].as_str(),
        )
    };
    if verdict(0) != (Some("internal"), Some("lan"))
        || verdict(1) != (Some("internal"), Some("lan"))
    {
        return Err(format!("lan prefixes missing: {body}"));
    }
    if verdict(2) != (Some("external"), Some("")) {
        return Err(format!("8.8.8.8 not external: {body}"));
    }
    let internal: Vec<u32> = (1..=MARKERS)
        .filter(|n| verdict(2 + *n as usize) == (Some("internal"), Some("marker")))
        .collect();
    match internal.as_slice() {
        [version] => Ok((generation, *version)),
        other => Err(format!("marker prefixes {other:?} match no config: {body}")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a test runtime")
}

fn get_json(url: &str) -> Value {
    runtime().block_on(async {
        let response = reqwest::get(url).await.expect("GET succeeds");
        response.json().await.expect("response is JSON")
    })
}

fn query_version(server: &Server) -> (u64, u32) {
    let body: Value = runtime().block_on(async {
        reqwest::Client::new()
            .post(server.url("/v1/is-internal"))
            .json(&json!({ "ips": probe_addresses() }))
            .send()
            .await
            .expect("POST succeeds")
            .json()
            .await
            .expect("response is JSON")
    });
    version_of(&body).unwrap_or_else(|error| panic!("{error}"))
}

fn grpc_table_info(server: &Server) -> ipclass::proto::TableInfo {
    use ipclass::proto::ip_classifier_client::IpClassifierClient;
    use ipclass::proto::GetTableInfoRequest;

    runtime().block_on(async {
        let mut client = IpClassifierClient::connect(server.grpc_endpoint())
            .await
            .expect("gRPC connects");
        client
            .get_table_info(GetTableInfoRequest {})
            .await
            .expect("GetTableInfo succeeds")
            .into_inner()
    })
}

fn table(server: &Server) -> Value {
    get_json(&server.url("/v1/table"))
}

/// Polls `/v1/table` until `accept` holds, and returns that table.
fn await_table(server: &Server, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let table = table(server);
        if accept(&table) {
            return table;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {RELOAD_TIMEOUT:?}; table: {table}\nlog:\n{}",
            server.seen.lock().unwrap().join("\n")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a generation above `after` and checks it classifies as `version`.
fn await_version(server: &Server, after: u64, version: u32) -> u64 {
    let table = await_table(server, "reload", |table| {
        table["generation"].as_u64().is_some_and(|g| g > after)
    });
    assert_eq!(
        table["last_reload_error"], "",
        "a successful reload clears the error"
    );
    let (generation, answered) = query_version(server);
    assert_eq!(
        answered, version,
        "generation {generation} answers version {answered}"
    );
    generation
}

/// Waits for a failed reload whose error contains every one of `parts`, and
/// checks that generation `kept` still classifies as `version`.
fn await_failure(server: &Server, kept: u64, version: u32, parts: &[&str]) {
    let table = await_table(server, "failed reload", |table| {
        table["last_reload_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    });
    let error = table["last_reload_error"].as_str().unwrap();
    for part in parts {
        assert!(
            error.contains(part),
            "error {error:?} does not name {part:?}"
        );
    }
    assert_eq!(table["generation"], kept, "a failed reload keeps the table");
    assert_eq!(query_version(server), (kept, version));
}

/// Writes `text` to `path` through a temporary file renamed over it, as vim
/// and `sed -i` do.
fn replace_by_rename(path: &Path, text: &str) {
    let temporary = path.with_file_name(".ipclass-save.tmp");
    fs::write(&temporary, text).expect("write temporary file");
    fs::rename(&temporary, path).expect("rename over the config");
}

/// A client that queries the server in a loop until stopped, checking that
/// each batch comes whole from one config and that one generation always
/// answers as the same config.
struct Querier {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<QueryStats>>,
}

#[derive(Debug, Default)]
struct QueryStats {
    batches: u64,
    failures: Vec<String>,
    versions: HashMap<u64, u32>,
}

impl Querier {
    fn start(server: &Server) -> Querier {
        let url = server.url("/v1/is-internal");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || runtime().block_on(query_until(url, flag)));
        Querier {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the client and asserts that it ran and every answer was whole.
    fn finish(mut self) -> QueryStats {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.handle.take().unwrap().join().expect("querier thread");
        assert!(stats.batches > 0, "the client sent no batch");
        assert!(
            stats.failures.is_empty(),
            "failed queries: {:?}",
            stats.failures
        );
        stats
    }
}

impl Drop for Querier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn query_until(url: String, stop: Arc<AtomicBool>) -> QueryStats {
    const MAX_BATCHES: u64 = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(120);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut stats = QueryStats::default();
    let request = json!({ "ips": probe_addresses() });
    while !stop.load(Ordering::Relaxed)
        && stats.batches < MAX_BATCHES
        && started.elapsed() < MAX_TIME
    {
        stats.batches += 1;
        let response = match client.post(&url).json(&request).send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                stats.failures.push(format!("status {}", response.status()));
                continue;
            }
            Err(error) => {
                stats.failures.push(error.to_string());
                continue;
            }
        };
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(error) => {
                stats.failures.push(error.to_string());
                continue;
            }
        };
        match version_of(&body) {
            Ok((generation, version)) => {
                let first = *stats.versions.entry(generation).or_insert(version);
                if first != version {
                    stats.failures.push(format!(
                        "generation {generation} answered as {first} and as {version}"
                    ));
                }
            }
            Err(error) => stats.failures.push(error),
        }
    }
    stats
}

#[test]
fn in_place_rewrite_reloads() {
    let dir = TempDir::new("reload-in-place");
    let config = dir.write("c.toml", &config_text(1));
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);
    assert_eq!(query_version(&server), (1, 1));

    fs::write(&config, config_text(2)).unwrap();
    assert_eq!(await_version(&server, 1, 2), 2);

    let stats = querier.finish();
    assert!(stats.versions.values().all(|v| [1, 2].contains(v)));
}

#[test]
fn rename_over_twice_reloads_each() {
    let dir = TempDir::new("reload-rename");
    let config = dir.write("c.toml", &config_text(1));
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    replace_by_rename(&config, &config_text(2));
    let second = await_version(&server, 1, 2);
    replace_by_rename(&config, &config_text(3));
    await_version(&server, second, 3);

    querier.finish();
}

#[test]
fn delete_then_recreate_reloads() {
    let dir = TempDir::new("reload-recreate");
    let config = dir.write("c.toml", &config_text(1));
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    fs::remove_file(&config).unwrap();
    await_failure(&server, 1, 1, &["c.toml", "cannot read"]);
    fs::write(&config, config_text(4)).unwrap();
    await_version(&server, 1, 4);

    querier.finish();
}

/// Publishes `version` the way the kubelet updates a ConfigMap volume: a new
/// version folder, a `..data` symlink swapped by rename, the old folder
/// removed.
fn publish_configmap(dir: &Path, version: u32, old: Option<&Path>) -> PathBuf {
    let folder_name = format!("..2026_12_04_v{version}");
    let folder = dir.join(&folder_name);
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("c.toml"), config_text(version)).unwrap();
    let staged = dir.join("..data_tmp");
    symlink(&folder_name, &staged).unwrap();
    fs::rename(&staged, dir.join("..data")).unwrap();
    if let Some(old) = old {
        fs::remove_dir_all(old).unwrap();
    }
    folder
}

#[test]
fn configmap_symlink_swap_reloads() {
    let dir = TempDir::new("reload-configmap");
    let mut folder = publish_configmap(&dir.path, 1, None);
    let config = dir.path.join("c.toml");
    symlink("..data/c.toml", &config).unwrap();
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    let mut generation = 1;
    for version in 2..=4 {
        folder = publish_configmap(&dir.path, version, Some(&folder));
        generation = await_version(&server, generation, version);
    }

    querier.finish();
    assert_eq!(generation, 4, "each swap loads one generation");
}

#[test]
fn list_file_change_reloads() {
    let dir = TempDir::new("reload-list");
    dir.write("marker.txt", "192.0.2.1/32\n");
    let config = dir.write("c.toml", &config_with_list());
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    dir.write("marker.txt", "# moved\n192.0.2.5/32\n");
    await_version(&server, 1, 5);

    querier.finish();
}

#[test]
fn list_file_named_by_reload_is_watched() {
    let dir = TempDir::new("reload-new-list");
    let config = dir.write("c.toml", &config_text(1));
    let lists = dir.path.join("lists");
    fs::create_dir(&lists).unwrap();
    fs::write(lists.join("marker.txt"), "192.0.2.6/32\n").unwrap();
    let server = Server::start(&config, FAST_RELOAD);

    let text = config_with_list().replace("marker.txt", "lists/marker.txt");
    fs::write(&config, text).unwrap();
    let generation = await_version(&server, 1, 6);
    fs::write(lists.join("marker.txt"), "192.0.2.7/32\n").unwrap();
    await_version(&server, generation, 7);
}

#[test]
fn sighup_forces_reload() {
    let dir = TempDir::new("reload-sighup");
    let config = dir.write("c.toml", &config_text(1));
    let mut server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    server.signal("HUP");
    let reloaded =
        server.wait_for_log(|line| line["message"] == "table reloaded" && line["generation"] == 2);
    assert_eq!(query_version(&server), (2, 1));
    // The swap waits until the files still hash alike 50 ms after the read.
    let build_ms = reloaded["build_ms"].as_f64().unwrap();
    let reload_ms = reloaded["reload_ms"].as_f64().unwrap();
    assert!(reload_ms >= 50.0, "reload took {reload_ms} ms");
    assert!(
        reload_ms >= build_ms,
        "reload {reload_ms} ms, build {build_ms} ms"
    );

    querier.finish();
}

/// A SIGHUP while a changed file settles joins the reload that follows, so
/// the change is built once and no second reload comes after it.
#[test]
fn sighup_in_settle_wait_joins_reload() {
    let dir = TempDir::new("reload-sighup-settle");
    let config = dir.write("c.toml", &config_text(1));
    let slow_settle = ["--reload-debounce", "1s", "--poll-interval", "1h"];
    let mut server = Server::start(&config, &slow_settle);

    fs::write(&config, config_text(2)).unwrap();
    server
        .wait_for_log(|line| line["message"] == "config files changed; reloading once they settle");
    server.signal("HUP");
    let reloaded = server.wait_for_log(|line| line["message"] == "table reloaded");
    assert_eq!(reloaded["generation"], 2);
    assert_eq!(reloaded["trigger"], "signal");
    assert_eq!(query_version(&server), (2, 2));

    fs::write(&config, config_text(3)).unwrap();
    let next =
        server.wait_for_log(|line| line["message"] == "table reloaded" && line["generation"] != 2);
    assert_eq!(
        next["generation"], 3,
        "one reload for the change and the signal"
    );
    assert_eq!(next["trigger"], "file-event");
}

/// A list folder reached through a symlink that is swapped by rename raises
/// no event the watcher acts on, because only the config folder reports the
/// rename and the symlink is not a file the config names. The periodic
/// check finds the change.
#[test]
fn poll_finds_change_without_event() {
    let dir = TempDir::new("reload-poll");
    for (version, folder) in [(1, "lists-v1"), (2, "lists-v2")] {
        fs::create_dir(dir.path.join(folder)).unwrap();
        let marker = format!("192.0.2.{version}/32\n");
        fs::write(dir.path.join(folder).join("marker.txt"), marker).unwrap();
    }
    symlink("lists-v1", dir.path.join("lists")).unwrap();
    let text = config_with_list().replace("marker.txt", "lists/marker.txt");
    let config = dir.write("c.toml", &text);
    let mut server = Server::start(
        &config,
        &["--reload-debounce", "50ms", "--poll-interval", "500ms"],
    );
    assert_eq!(query_version(&server), (1, 1));

    symlink("lists-v2", dir.path.join("lists-next")).unwrap();
    fs::rename(dir.path.join("lists-next"), dir.path.join("lists")).unwrap();
    await_version(&server, 1, 2);
    let reloaded = server.wait_for_log(|line| line["message"] == "table reloaded");
    assert_eq!(reloaded["old_generation"], 1);
    assert_eq!(reloaded["generation"], 2);
    assert_eq!(
        reloaded["sets"],
        "lan: 1 IPv4, 1 IPv6; marker: 1 IPv4, 0 IPv6"
    );
    assert!(
        reloaded["build_ms"].as_f64().is_some(),
        "reload logs its build time"
    );
}

/// Asks for `ip` over HTTP until `stop` is set, and returns the verdicts
/// seen, with how often each came.
async fn verdicts_until(url: String, stop: Arc<AtomicBool>) -> HashMap<String, u64> {
    const MAX_TIME: Duration = Duration::from_secs(60);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut verdicts = HashMap::new();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_TIME {
        let verdict = match client.get(&url).send().await {
            Ok(response) => match response.json::<Value>().await {
                Ok(body) => body["verdict"].as_str().unwrap_or("none").to_owned(),
                Err(error) => format!("unreadable: {error}"),
            },
            Err(error) => format!("failed: {error}"),
        };
        *verdicts.entry(verdict).or_insert(0) += 1;
    }
    verdicts
}

#[test]
fn staged_update_is_not_served_halfway() {
    // An update in three renames, 1.6 s apart with a 1 s quiet period: a
    // comment, then a config that takes the guest carve-out from a list
    // file, then that list file. Served alone, the middle state would call
    // guest addresses internal.
    const SETS: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n\n";
    let before = format!("{SETS}[sets.guest]\ninternal = false\nnetworks = [\"10.99.0.0/16\"]\n");
    let after = format!("{SETS}[sets.guest]\ninternal = false\nfiles = [\"guest.txt\"]\n");
    let dir = TempDir::new("reload-staged");
    let list = dir.write("guest.txt", "# filled in by the update\n");
    let config = dir.write("c.toml", &before);
    let server = Server::start(
        &config,
        &["--reload-debounce", "1s", "--poll-interval", "1h"],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url("/v1/is-internal?ip=10.99.1.1");
    let flag = stop.clone();
    let prober = thread::spawn(move || runtime().block_on(verdicts_until(url, flag)));
    replace_by_rename(&config, &format!("# edited\n{before}"));
    thread::sleep(Duration::from_millis(1600));
    replace_by_rename(&config, &after);
    thread::sleep(Duration::from_millis(1600));
    replace_by_rename(&list, "10.99.0.0/16\n10.98.0.0/16\n");
    await_table(&server, "the final state", |table| {
        table["sets"][0]["name"] == "guest" && table["sets"][0]["ipv4_prefixes"] == 2
    });
    stop.store(true, Ordering::Relaxed);
    let verdicts = prober.join().expect("prober thread");

    assert!(
        verdicts.get("external").is_some_and(|&count| count > 0),
        "{verdicts:?}"
    );
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
}

/// Returns whether the log so far has a line containing `text`.
fn logged(server: &Server, text: &str) -> bool {
    server
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains(text))
}

fn await_writer_wait(server: &mut Server, file: &str) {
    server.wait_for_log(|line| {
        line["message"] == "waiting for the writer to close the file before reloading"
            && line["file"].as_str().is_some_and(|f| f.ends_with(file))
    });
}

#[test]
fn half_written_file_keeps_table() {
    let dir = TempDir::new("reload-halves");
    let config = dir.write("c.toml", &config_text(1));
    let mut server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    let full = config_text(2);
    let cut = full.find("192.0.2.2").unwrap() + 4;
    let mut file = fs::File::create(&config).unwrap();
    file.write_all(&full.as_bytes()[..cut]).unwrap();
    file.flush().unwrap();
    // The half is never read while its writer has the file open.
    await_writer_wait(&mut server, "c.toml");
    assert_eq!(query_version(&server), (1, 1));
    file.write_all(&full.as_bytes()[cut..]).unwrap();
    drop(file);
    await_version(&server, 1, 2);
    assert!(!logged(&server, "config reload failed"));

    querier.finish();
}

/// `sort new > marker.txt` truncates the list at once and writes it only
/// when the sort ends, after a pause that can outlast any quiet period. A
/// SIGHUP at the truncate must not serve the empty list either.
#[test]
fn truncated_list_waits_for_its_writer() {
    for hangup in [false, true] {
        let dir = TempDir::new("reload-truncate");
        dir.write("marker.txt", "192.0.2.1/32\n");
        let config = dir.write("c.toml", &config_with_list());
        let mut server = Server::start(&config, FAST_RELOAD);
        assert_eq!(query_version(&server), (1, 1));

        let mut file = fs::File::create(dir.path.join("marker.txt")).unwrap();
        if hangup {
            server.signal("HUP");
        }
        await_writer_wait(&mut server, "marker.txt");
        assert_eq!(query_version(&server), (1, 1));
        file.write_all(b"192.0.2.9/32\n").unwrap();
        drop(file);
        await_version(&server, 1, 9);
        assert!(
            !logged(&server, "marker: 0 IPv4"),
            "the empty list was served"
        );
    }
}

/// A `touch` while `sort > marker.txt` still writes closes one write
/// descriptor of the file. The writer still has it open, so the empty list
/// must not be served.
#[test]
fn second_writer_close_keeps_wait() {
    let dir = TempDir::new("reload-second-writer");
    let list = dir.write("marker.txt", "192.0.2.1/32\n");
    let config = dir.write("c.toml", &config_with_list());
    let mut server = Server::start(&config, FAST_RELOAD);
    assert_eq!(query_version(&server), (1, 1));

    let mut file = fs::File::create(&list).unwrap();
    await_writer_wait(&mut server, "marker.txt");
    drop(fs::OpenOptions::new().append(true).open(&list).unwrap());
    server.wait_for_log(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("file closed after writing, but another process"))
    });
    assert_eq!(query_version(&server), (1, 1));
    // A second such close repeats no log line.
    drop(fs::OpenOptions::new().append(true).open(&list).unwrap());

    file.write_all(b"192.0.2.9/32\n").unwrap();
    drop(file);
    await_version(&server, 1, 9);
    assert!(
        !logged(&server, "marker: 0 IPv4"),
        "the empty list was served"
    );
    let waits = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("another process still has it open"))
        .count();
    assert_eq!(waits, 1, "one wait for another writer logs once");
}

/// Breaks the config with `broken`, checks the failure names `parts`, then
/// fixes it with the next version.
fn check_failure_then_fix(name: &str, broken: &str, parts: &[&str]) {
    let dir = TempDir::new(name);
    let config = dir.write("c.toml", &config_text(1));
    let mut server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    fs::write(&config, broken).unwrap();
    await_failure(&server, 1, 1, parts);
    let http_error = table(&server)["last_reload_error"].clone();
    assert_eq!(grpc_table_info(&server).last_reload_error, http_error);
    server.wait_for_log(|line| {
        line["level"] == "ERROR"
            && line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload failed"))
    });
    fs::write(&config, config_text(3)).unwrap();
    await_version(&server, 1, 3);
    let logged = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("config reload failed"))
        .count();
    assert_eq!(logged, 1, "one broken config logs one error");

    querier.finish();
}

#[test]
fn empty_file_keeps_table() {
    check_failure_then_fix("reload-empty", "", &["c.toml", "no prefix in any set"]);
}

#[test]
fn invalid_toml_keeps_table() {
    check_failure_then_fix(
        "reload-toml",
        "[sets.lan\ninternal = true\n",
        &["c.toml:1", "invalid TOML"],
    );
}

#[test]
fn invalid_prefix_keeps_table() {
    let broken = config_text(1).replace("192.0.2.1/32", "192.0.2.300/32");
    check_failure_then_fix(
        "reload-prefix",
        &broken,
        &[
            "c.toml:7",
            "invalid prefix; the server log and `ipclass check` show it",
        ],
    );
}

#[test]
fn restored_files_clear_the_error() {
    let dir = TempDir::new("reload-restored");
    let config = dir.write("c.toml", &config_text(1));
    let mut server = Server::start(&config, FAST_RELOAD);

    fs::write(&config, "").unwrap();
    await_failure(&server, 1, 1, &["c.toml", "no prefix in any set"]);
    fs::write(&config, config_text(1)).unwrap();
    let cleared = server.wait_for_log(|line| {
        line["message"] == "config files match the served table again; the reload error is cleared"
    });
    assert_eq!(cleared["generation"], 1);
    let table = table(&server);
    assert_eq!(table["last_reload_error"], "");
    assert_eq!(table["generation"], 1, "no reload happened");
}

#[test]
fn api_error_leaves_out_file_text() {
    let dir = TempDir::new("reload-file-text");
    let list = dir.write("marker.txt", "192.0.2.1/32\n");
    let config = dir.write("c.toml", &config_with_list());
    let mut server = Server::start(&config, FAST_RELOAD);

    // A list file that was overwritten with secrets by mistake.
    fs::write(&list, "db_password=Hunter2-SECRET\n").unwrap();
    await_failure(
        &server,
        1,
        1,
        &["marker.txt:1", "invalid prefix; the server log"],
    );
    for error in [
        table(&server)["last_reload_error"]
            .as_str()
            .unwrap()
            .to_owned(),
        grpc_table_info(&server).last_reload_error,
        get_json(&server.url("/readyz"))["last_reload_error"]
            .as_str()
            .unwrap()
            .to_owned(),
    ] {
        assert!(!error.contains("Hunter2"), "{error}");
    }
    let logged = server.wait_for_log(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("config reload failed"))
    });
    let message = logged["message"].as_str().unwrap();
    assert!(
        message.contains("invalid prefix \"db_password=Hunter2-SECRET\""),
        "{message}"
    );
}

#[test]
fn missing_list_file_keeps_table() {
    let broken = config_with_list().replace("marker.txt", "absent.txt");
    check_failure_then_fix("reload-missing-list", &broken, &["c.toml:7", "absent.txt"]);
}

/// Root reads any file whatever its mode, so the server runs as the
/// unprivileged user 65534 through `setpriv`, and the config is
/// made unreadable with mode 000.
#[test]
fn permission_denied_keeps_table() {
    let dir = TempDir::new("reload-permission");
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write("c.toml", &config_text(1));
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let unprivileged = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let server = Server::start_wrapped(&unprivileged, &config, FAST_RELOAD);
    let querier = Querier::start(&server);

    fs::set_permissions(&config, fs::Permissions::from_mode(0o000)).unwrap();
    await_failure(&server, 1, 1, &["c.toml", "Permission denied"]);
    fs::write(&config, config_text(2)).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    await_version(&server, 1, 2);

    querier.finish();
}

/// Mounts a single file over the config path the way `docker run -v
/// FILE:PATH` does, in a private mount namespace of the server. Only the
/// watch on the file itself reports writes made through the source path.
#[test]
fn single_file_bind_mount_reloads() {
    let dir = TempDir::new("reload-bind-mount");
    fs::create_dir(dir.path.join("host")).unwrap();
    fs::create_dir(dir.path.join("container")).unwrap();
    let source = dir.path.join("host").join("c.toml");
    fs::write(&source, config_text(1)).unwrap();
    let config = dir.path.join("container").join("c.toml");
    fs::write(&config, "").unwrap();
    let script = format!(
        "mount --bind '{}' '{}' && exec \"$0\" \"$@\"",
        source.display(),
        config.display()
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let server = Server::start_wrapped(&wrapper, &config, FAST_RELOAD);
    let querier = Querier::start(&server);
    assert_eq!(query_version(&server), (1, 1));

    fs::write(&source, config_text(10)).unwrap();
    await_version(&server, 1, 10);

    querier.finish();
}

#[test]
fn readyz_reports_watcher_health() {
    let dir = TempDir::new("reload-readyz");
    let config = dir.write("c.toml", &config_text(1));
    let server = Server::start(&config, FAST_RELOAD);
    let body = get_json(&server.url("/readyz"));
    assert_eq!(body["status"], "ready");
    assert_eq!(body["watcher"]["healthy"], true);
    assert_eq!(body["watcher"]["error"], "");
}

#[test]
fn removed_folder_fails_watcher_until_restored() {
    let dir = TempDir::new("reload-folder");
    let folder = dir.path.join("conf");
    fs::create_dir(&folder).unwrap();
    let config = folder.join("c.toml");
    fs::write(&config, config_text(1)).unwrap();
    let server = Server::start(
        &config,
        &["--reload-debounce", "50ms", "--poll-interval", "200ms"],
    );

    fs::remove_dir_all(&folder).unwrap();
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let body = get_json(&server.url("/readyz"));
        if body["watcher"]["healthy"] == false {
            let error = body["watcher"]["error"].as_str().unwrap();
            assert!(
                error.contains("conf"),
                "watcher error {error:?} names the folder"
            );
            assert_eq!(body["status"], "ready", "the table still answers");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watcher failure not reported: {body}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(query_version(&server), (1, 1));

    fs::create_dir(&folder).unwrap();
    fs::write(&config, config_text(9)).unwrap();
    await_version(&server, 1, 9);
    let body = await_json(&server.url("/readyz"), |body| {
        body["watcher"]["healthy"] == true
    });
    assert_eq!(body["watcher"]["error"], "");
}

/// A config folder renamed away fails the watcher also when the config is
/// named by a relative path, although the move event gives an absolute one.
#[test]
fn renamed_folder_of_relative_config_fails_watcher() {
    let dir = TempDir::new("reload-folder-relative");
    let folder = dir.path.join("conf");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("c.toml"), config_text(1)).unwrap();
    let chdir = format!("--chdir={}", dir.path.display());
    let server = Server::start_wrapped(&["env", &chdir], Path::new("conf/c.toml"), FAST_RELOAD);

    fs::rename(&folder, dir.path.join("conf.old")).unwrap();
    let body = await_json(&server.url("/readyz"), |body| {
        body["watcher"]["healthy"] == false
    });
    let error = body["watcher"]["error"].as_str().unwrap();
    assert!(error.contains("conf"), "watcher error {error:?}");

    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("c.toml"), config_text(6)).unwrap();
    await_version(&server, 1, 6);
}

/// A folder renamed away and created again, as `mv conf conf.old; mkdir
/// conf` does, gets its watch back without waiting for the periodic check,
/// which [`FAST_RELOAD`] puts an hour away.
#[test]
fn renamed_folder_recreated_reloads() {
    let dir = TempDir::new("reload-folder-renamed");
    let folder = dir.path.join("conf");
    fs::create_dir(&folder).unwrap();
    let config = folder.join("c.toml");
    fs::write(&config, config_text(1)).unwrap();
    let server = Server::start(&config, FAST_RELOAD);

    fs::rename(&folder, dir.path.join("conf.old")).unwrap();
    let body = await_json(&server.url("/readyz"), |body| {
        body["watcher"]["healthy"] == false
    });
    let error = body["watcher"]["error"].as_str().unwrap();
    assert!(
        error.contains("conf"),
        "watcher error {error:?} names the folder"
    );
    assert_eq!(query_version(&server), (1, 1));

    fs::create_dir(&folder).unwrap();
    fs::write(&config, config_text(6)).unwrap();
    await_version(&server, 1, 6);
    let body = await_json(&server.url("/readyz"), |body| {
        body["watcher"]["healthy"] == true
    });
    assert_eq!(body["watcher"]["error"], "");

    fs::write(&config, config_text(7)).unwrap();
    let generation = await_version(&server, 2, 7);
    assert!(
        generation > 2,
        "generation {generation} after the second write"
    );
}

fn await_json(url: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let body = get_json(url);
        if accept(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} stayed at {body}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn alternating_files_answer_whole_configs() {
    let dir = TempDir::new("reload-alternate");
    let config = dir.write("c.toml", &config_text(1));
    let server = Server::start(&config, FAST_RELOAD);
    let querier = Querier::start(&server);

    let mut generation = 1;
    for round in 0..20 {
        let version = if round % 2 == 0 { 2 } else { 1 };
        replace_by_rename(&config, &config_text(version));
        generation = await_version(&server, generation, version);
    }

    let stats = querier.finish();
    assert!(
        stats.versions.len() > 1,
        "the client saw more than one generation"
    );
    for (generation, version) in &stats.versions {
        let expected = if generation % 2 == 0 { 2 } else { 1 };
        assert_eq!(*version, expected, "generation {generation}");
    }
}

/// Swaps the table hundreds of times in process through `AppState::install`
/// while several clients send batches over HTTP; each batch must carry one
/// generation and answer exactly as the config that generation was built from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_never_mix_tables() {
    use ipclass::config;
    use ipclass::state::{AppState, Snapshot};

    const SWAPS: u64 = 400;
    const CLIENTS: usize = 4;
    let build = |version: u32, generation: u64| {
        let text = config_text(version);
        let loaded = config::parse(&text, Path::new("c.toml"), &mut |_| {
            Err(std::io::Error::other("no list files"))
        })
        .expect("test config is valid");
        Snapshot::build(loaded, generation, Instant::now())
    };
    // Odd generations answer as version 1 and even ones as version 2.
    let version_for = |generation: u64| if generation % 2 == 1 { 1 } else { 2 };
    let state = Arc::new(AppState::new(build(1, 1), "c.toml".into(), 1024));
    let listener = ipclass::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/is-internal", listener.local_addr().unwrap());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    // A recorder that is not installed: this test reads no metrics.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let server = tokio::spawn(ipclass::server::serve(
        listener,
        None,
        state.clone(),
        metrics,
        async {
            let _ = stopped.await;
        },
        ipclass::server::Limits {
            grace: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(300),
            max_connections: 1024,
        },
    ));

    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(query_until(url.clone(), done.clone())));
    }
    for generation in 2..=SWAPS + 1 {
        state.install(build(version_for(generation), generation));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.store(true, Ordering::Relaxed);

    let mut batches = 0;
    let mut generations = std::collections::BTreeSet::new();
    for client in clients {
        let stats = client.await.unwrap();
        assert!(
            stats.failures.is_empty(),
            "failed queries: {:?}",
            stats.failures
        );
        for (generation, version) in &stats.versions {
            assert_eq!(
                *version,
                version_for(*generation),
                "generation {generation}"
            );
            generations.insert(*generation);
        }
        batches += stats.batches;
    }
    let lookups = batches * probe_addresses().len() as u64;
    println!(
        "{lookups} lookups in {batches} batches saw {} generations",
        generations.len()
    );
    assert!(
        lookups >= 2_000,
        "only {lookups} lookups ran during the swaps"
    );
    assert!(generations.len() > 10, "batches saw only {generations:?}");
    let _ = stop_server.send(());
    server.await.unwrap().unwrap();
}
