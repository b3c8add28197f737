//! `/metrics` of the real binary: exact counts after a known workload,
//! `promtool check metrics`, a flat series count under random addresses, and
//! a real Prometheus server that scrapes the service.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TempDir};
use ipclass::proto::ip_classifier_client::IpClassifierClient;
use ipclass::proto::{IsInternalPackedRequest, IsInternalRequest};
use serde_json::{json, Value};
use tonic::transport::Channel;

const CONFIG: &str = r#"
[sets.lan]
internal = true
networks = ["10.0.0.0/8"]

[sets.guest]
internal = false
networks = ["10.9.0.0/16"]

[sets.vpn]
internal = true
networks = ["fd00::/8"]

[sets.unused]
internal = true
networks = ["192.0.2.0/24"]
"#;

/// Maximum time a test waits for Prometheus to start and scrape.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);

/// One sample line of the text format: metric name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape, with the `# HELP` and `# TYPE` lines by metric name.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape {
            samples: Vec::new(),
            help: BTreeMap::new(),
            types: BTreeMap::new(),
        };
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP line has text");
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else {
                scrape.samples.push(parse_sample(line));
            }
        }
        scrape
    }

    /// Returns the value of the one sample named `name` with exactly
    /// `labels`, or 0 if there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let expected: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels == expected)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears twice");
        found.first().map_or(0.0, |sample| sample.value)
    }

    /// Returns the samples named `name`.
    fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .collect()
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value: f64 = value.parse().expect("sample value is a number");
    let Some((name, labels)) = series.split_once('{') else {
        return Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let labels = labels.strip_suffix('}').expect("labels end with }");
    let labels = labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("label has =");
            let value = value.trim_matches('"');
            (key.to_owned(), value.to_owned())
        })
        .collect();
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Fetches `url` and returns its text after checking the status and the
/// content type.
fn scrape_text(url: &str) -> String {
    runtime().block_on(async {
        let response = reqwest::get(url).await.expect("GET succeeds");
        assert_eq!(response.status(), 200, "GET {url}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain"),
            "content type of {url} is {content_type}"
        );
        response.text().await.expect("body is text")
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

async fn grpc_client(server: &Server) -> IpClassifierClient<Channel> {
    IpClassifierClient::connect(server.grpc_endpoint())
        .await
        .expect("connect gRPC")
}

fn packed_ipv4(addresses: &[Ipv4Addr]) -> Vec<u8> {
    addresses
        .iter()
        .flat_map(|address| address.octets())
        .collect()
}

fn packed_ipv6(addresses: &[Ipv6Addr]) -> Vec<u8> {
    addresses
        .iter()
        .flat_map(|address| address.octets())
        .collect()
}

/// Runs a workload whose counts are known over every API, including
/// rejected batches of `max_batch + 1` addresses and a path that no route
/// serves.
async fn run_known_workload(server: &Server, max_batch: usize) {
    let mut grpc = grpc_client(server).await;
    let texts = ["10.1.1.1", "10.9.1.1", "8.8.8.8", "0.0.0.0", "not-an-ip"];
    let request = IsInternalRequest {
        ips: texts.iter().map(|text| text.to_string()).collect(),
    };
    let response = grpc
        .is_internal(request)
        .await
        .expect("text batch")
        .into_inner();
    assert_eq!(response.results.len(), 5);

    let oversize = IsInternalRequest {
        ips: vec!["10.0.0.1".to_owned(); max_batch + 1],
    };
    let status = grpc
        .is_internal(oversize)
        .await
        .expect_err("batch over the maximum");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let packed = IsInternalPackedRequest {
        ipv4: packed_ipv4(&["10.2.2.2".parse().unwrap(), "1.1.1.1".parse().unwrap()]).into(),
        ipv6: packed_ipv6(&["fd00::1".parse().unwrap()]).into(),
    };
    let response = grpc
        .is_internal_packed(packed)
        .await
        .expect("packed batch")
        .into_inner();
    assert_eq!(response.ipv4_verdicts.len(), 2);
    let ragged = IsInternalPackedRequest {
        ipv4: vec![10, 0, 0, 1, 7].into(),
        ipv6: Vec::new().into(),
    };
    let status = grpc.is_internal_packed(ragged).await.expect_err("5 bytes");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Failures that tonic returns before a method runs: a message that is
    // not protobuf, and one over the size limit.
    let truncated = [0x0a, 0x05, b'1', b'0'];
    let text_path = "/ipclass.v1.IpClassifier/IsInternal";
    let packed_path = "/ipclass.v1.IpClassifier/IsInternalPacked";
    let (code, _) = common::grpc_raw(server, text_path, &truncated).await;
    assert_eq!(code, "13", "INTERNAL");
    let (code, _) = common::grpc_raw(server, packed_path, &truncated).await;
    assert_eq!(code, "13", "INTERNAL");
    // The limit is 136 bytes an address plus 4 KiB.
    let oversize = vec![0; max_batch * 200 + 8192];
    let (code, message) = common::grpc_raw(server, packed_path, &oversize).await;
    assert_eq!(code, "11", "OUT_OF_RANGE, as tonic answers it");
    assert!(
        message.ends_with("%3B%20split%20the%20batch%20or%20raise%20--max-batch-size"),
        "{message}"
    );

    let http = reqwest::Client::new();
    let get = |query: &str| {
        http.get(server.url(&format!("/v1/is-internal{query}")))
            .send()
    };
    assert_eq!(get("?ip=10.3.3.3").await.unwrap().status(), 200);
    assert_eq!(get("?ip=garbage").await.unwrap().status(), 400);
    assert_eq!(get("").await.unwrap().status(), 400);

    let post = |body: Value| http.post(server.url("/v1/is-internal")).json(&body).send();
    let batch = json!({ "ips": ["10.4.4.4", "::ffff:10.5.5.5", "9.9.9.9"] });
    assert_eq!(post(batch).await.unwrap().status(), 200);
    let oversize = json!({ "ips": vec!["10.0.0.1"; max_batch + 1] });
    assert_eq!(post(oversize).await.unwrap().status(), 400);

    let missing = http.get(server.url("/no/such/path")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[test]
fn scrape_counts_known_workload() {
    let dir = TempDir::new("metrics-counts");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "8"]);
    runtime().block_on(run_known_workload(&server, 8));
    let text = scrape_text(&server.url("/metrics"));
    let scrape = Scrape::parse(&text);

    let lookups = "ipclass_lookups_total";
    let expected_lookups = [
        ("grpc_is_internal", "internal", 1.0),
        ("grpc_is_internal", "external", 2.0),
        ("grpc_is_internal", "unknown", 1.0),
        ("grpc_is_internal", "invalid", 1.0),
        ("grpc_is_internal_packed", "internal", 2.0),
        ("grpc_is_internal_packed", "external", 1.0),
        ("http_get", "internal", 1.0),
        ("http_get", "invalid", 1.0),
        ("http_post", "internal", 2.0),
        ("http_post", "external", 1.0),
    ];
    for (api, verdict, count) in expected_lookups {
        let labels = [("api", api), ("verdict", verdict)];
        assert_eq!(
            scrape.value(lookups, &labels),
            count,
            "{api} {verdict}\n{text}"
        );
    }
    assert_eq!(
        scrape.named(lookups).len(),
        expected_lookups.len(),
        "{text}"
    );

    let requests = "ipclass_requests_total";
    let expected_requests = [
        ("grpc_is_internal", "OK", 1.0),
        ("grpc_is_internal", "INVALID_ARGUMENT", 1.0),
        ("grpc_is_internal", "INTERNAL", 1.0),
        ("grpc_is_internal_packed", "OK", 1.0),
        ("grpc_is_internal_packed", "INVALID_ARGUMENT", 1.0),
        ("grpc_is_internal_packed", "INTERNAL", 1.0),
        ("grpc_is_internal_packed", "OUT_OF_RANGE", 1.0),
        ("http_get", "200", 1.0),
        ("http_get", "400", 2.0),
        ("http_post", "200", 1.0),
        ("http_post", "400", 1.0),
        ("http_other", "404", 1.0),
    ];
    for (api, code, count) in expected_requests {
        let labels = [("api", api), ("code", code)];
        assert_eq!(
            scrape.value(requests, &labels),
            count,
            "{api} {code}\n{text}"
        );
    }
    assert_eq!(
        scrape.named(requests).len(),
        expected_requests.len(),
        "{text}"
    );

    // Only accepted batches have a size: rejected ones never reach the table.
    let expected_batches = [
        ("grpc_is_internal", 1.0, 5.0),
        ("grpc_is_internal_packed", 1.0, 3.0),
        ("http_get", 2.0, 2.0),
        ("http_post", 1.0, 3.0),
    ];
    for (api, count, sum) in expected_batches {
        let labels = [("api", api)];
        assert_eq!(
            scrape.value("ipclass_batch_size_count", &labels),
            count,
            "{api}"
        );
        assert_eq!(
            scrape.value("ipclass_batch_size_sum", &labels),
            sum,
            "{api}"
        );
    }

    let expected_hits = [("lan", 5.0), ("guest", 1.0), ("vpn", 1.0), ("unused", 0.0)];
    for (set, count) in expected_hits {
        let hits = scrape.value("ipclass_set_hits_total", &[("set", set)]);
        assert_eq!(hits, count, "hits of set {set}\n{text}");
    }
    assert_eq!(scrape.named("ipclass_set_hits_total").len(), 4, "{text}");

    let version = env!("CARGO_PKG_VERSION");
    let build_info = scrape.value("ipclass_build_info", &[("version", version)]);
    assert_eq!(build_info, 1.0);

    for (api, _, _) in expected_requests {
        let total: f64 = expected_requests
            .iter()
            .filter(|(other, _, _)| *other == api)
            .map(|(_, _, count)| count)
            .sum();
        let labels = [("api", api)];
        let count = scrape.value("ipclass_request_duration_seconds_count", &labels);
        assert_eq!(count, total, "duration count of {api} equals its requests");
        let sum = scrape.value("ipclass_request_duration_seconds_sum", &labels);
        assert!(sum > 0.0, "duration sum of {api} is {sum}");
        assert!(sum < 10.0 * total, "duration sum of {api} is {sum} seconds");
    }
    check_histograms(&scrape, "ipclass_request_duration_seconds");
    check_histograms(&scrape, "ipclass_batch_size");

    for name in [
        "ipclass_lookups_total",
        "ipclass_requests_total",
        "ipclass_set_hits_total",
        "ipclass_build_info",
        "ipclass_request_duration_seconds",
        "ipclass_batch_size",
    ] {
        assert!(scrape.help.contains_key(name), "{name} has no HELP line");
    }
    assert_eq!(
        scrape.types["ipclass_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(scrape.types["ipclass_batch_size"], "histogram");
    assert_eq!(scrape.types["ipclass_lookups_total"], "counter");
}

/// Checks each series of histogram `name`: buckets rise with `le`, end at
/// `+Inf` equal to `_count`, and the `_sum` fits inside the bucket bounds.
fn check_histograms(scrape: &Scrape, name: &str) {
    let bucket_name = format!("{name}_bucket");
    let mut by_api: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in scrape.named(&bucket_name) {
        let le = &sample.labels["le"];
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let api = sample.labels["api"].clone();
        by_api.entry(api).or_default().push((bound, sample.value));
    }
    assert!(!by_api.is_empty(), "{name} has no buckets");
    for (api, mut buckets) in by_api {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in buckets.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "{name} {api} buckets fall: {pair:?}"
            );
        }
        let labels = [("api", api.as_str())];
        let count = scrape.value(&format!("{name}_count"), &labels);
        let (last_bound, last_value) = *buckets.last().unwrap();
        assert_eq!(last_bound, f64::INFINITY, "{name} {api} has a +Inf bucket");
        assert_eq!(last_value, count, "{name} {api} +Inf bucket equals _count");
        let sum = scrape.value(&format!("{name}_sum"), &labels);
        let lowest_bound = buckets[0].0;
        let under_lowest = buckets[0].1;
        // Samples above the lowest bound add at least that bound each.
        assert!(
            sum >= (count - under_lowest) * lowest_bound,
            "{name} {api} _sum {sum} is too small for its buckets"
        );
    }
}

#[test]
fn promtool_accepts_scrape() {
    let dir = TempDir::new("metrics-promtool");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "8"]);
    runtime().block_on(run_known_workload(&server, 8));
    let text = scrape_text(&server.url("/metrics"));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool; install it with the Debian package prometheus");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "promtool rejected the scrape: {stdout}{stderr}\n{text}"
    );
    assert_eq!(stdout.trim(), "", "promtool lint findings");
    assert_eq!(stderr.trim(), "", "promtool lint findings");
}

#[test]
fn metrics_listen_serves_only_metrics() {
    let dir = TempDir::new("metrics-listen");
    let config = dir.write("ipclass.toml", CONFIG);
    let mut server = Server::start(&config, &["--metrics-listen", "127.0.0.1:0"]);
    let line = server.wait_for_log(|line| line["message"] == "serving metrics");
    let address = line["address"].as_str().unwrap().to_owned();

    let text = scrape_text(&format!("http://{address}/metrics"));
    let scrape = Scrape::parse(&text);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        scrape.value("ipclass_build_info", &[("version", version)]),
        1.0
    );

    let client = reqwest::Client::new();
    for (method, path, status, message) in [
        (
            reqwest::Method::GET,
            "/v1/is-internal?ip=10.1.1.1",
            404,
            "no route for GET /v1/is-internal; this listener serves only GET /metrics",
        ),
        (
            reqwest::Method::POST,
            "/metrics",
            405,
            "method POST is not allowed on /metrics",
        ),
    ] {
        let (code, body) = runtime().block_on(async {
            let url = format!("http://{address}{path}");
            let response = client.request(method, url).send().await.unwrap();
            let code = response.status();
            (code, response.json::<serde_json::Value>().await.unwrap())
        });
        assert_eq!(code, status, "{path}");
        assert_eq!(body["error"], message, "{path}");
    }
}

/// Reload and watcher counters show 0 before the first reload, so a rate
/// over the first failure counts it.
#[test]
fn reload_counters_start_at_zero() {
    let dir = TempDir::new("metrics-zero");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &[]);
    let text = scrape_text(&server.url("/metrics"));
    let scrape = Scrape::parse(&text);
    for result in ["success", "failure"] {
        let series = scrape
            .named("ipclass_config_reloads_total")
            .into_iter()
            .filter(|sample| sample.labels.get("result").map(String::as_str) == Some(result))
            .count();
        assert_eq!(series, 1, "no {result} series in:\n{text}");
        let count = scrape.value("ipclass_config_reloads_total", &[("result", result)]);
        assert_eq!(count, 0.0);
    }
    assert_eq!(
        scrape.named("ipclass_config_watcher_failures_total").len(),
        1
    );
}

/// A small deterministic generator, so a failing run can be repeated.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn address(&mut self) -> IpAddr {
        let bits = self.next();
        if bits % 3 == 0 {
            let high = u128::from(self.next()) << 64;
            IpAddr::V6(Ipv6Addr::from(high | u128::from(bits)))
        } else {
            IpAddr::V4(Ipv4Addr::from(bits as u32))
        }
    }
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count()
}

#[test]
fn series_stay_flat_across_random_addresses() {
    let dir = TempDir::new("metrics-series");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "1000"]);
    let url = server.url("/metrics");
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);

    // Every API and verdict once, and two scrapes so the scrape's own
    // request series exist before the baseline.
    runtime().block_on(send_random(&server, &mut random, 64));
    runtime().block_on(run_known_workload(&server, 1000));
    scrape_text(&url);
    let baseline = scrape_text(&url);
    let before = series_count(&baseline);

    runtime().block_on(send_random(&server, &mut random, 10_000));
    let after_text = scrape_text(&url);
    let after = series_count(&after_text);
    assert_eq!(before, after, "series grew:\n{baseline}\n---\n{after_text}");

    let scrape = Scrape::parse(&after_text);
    for sample in &scrape.samples {
        for value in sample.labels.values() {
            assert!(
                value.parse::<IpAddr>().is_err(),
                "label value {value} of {} is an address",
                sample.name
            );
        }
    }
    let looked_up: f64 = scrape
        .named("ipclass_lookups_total")
        .iter()
        .map(|sample| sample.value)
        .sum();
    assert!(looked_up >= 10_064.0, "{looked_up} lookups counted");
}

/// Sends `count` random addresses, split across gRPC text and packed
/// batches, HTTP POST batches and single HTTP GETs.
async fn send_random(server: &Server, random: &mut XorShift, count: usize) {
    let mut grpc = grpc_client(server).await;
    let http = reqwest::Client::new();
    let addresses: Vec<IpAddr> = (0..count).map(|_| random.address()).collect();
    let quarter = count / 4;
    let (text, rest) = addresses.split_at(quarter);
    let (packed, rest) = rest.split_at(quarter);
    let (posted, single) = rest.split_at(rest.len() - (quarter / 10).max(1));

    for chunk in text.chunks(1000) {
        let ips = chunk.iter().map(IpAddr::to_string).collect();
        grpc.is_internal(IsInternalRequest { ips }).await.unwrap();
    }
    for chunk in packed.chunks(1000) {
        let mut request = IsInternalPackedRequest::default();
        let mut ipv4 = Vec::new();
        let mut ipv6 = Vec::new();
        for address in chunk {
            match address {
                IpAddr::V4(v4) => ipv4.extend(v4.octets()),
                IpAddr::V6(v6) => ipv6.extend(v6.octets()),
            }
        }
        request.ipv4 = ipv4.into();
        request.ipv6 = ipv6.into();
        grpc.is_internal_packed(request).await.unwrap();
    }
    for chunk in posted.chunks(1000) {
        let ips: Vec<String> = chunk.iter().map(IpAddr::to_string).collect();
        let response = http
            .post(server.url("/v1/is-internal"))
            .json(&json!({ "ips": ips }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for address in single {
        let url = server.url("/v1/is-internal");
        let response = http
            .get(url)
            .query(&[("ip", address.to_string())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // NOTE: the port is free when checked but could be taken before
    // Prometheus binds it; a clash fails the test with Prometheus's log.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_prometheus(dir: &Path, target: &str) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: ipclass\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run prometheus; install it with the Debian package prometheus");
    Prometheus { child, address }
}

/// Queries Prometheus for `query` and returns the value of its only result.
async fn query_value(http: &reqwest::Client, prometheus: &str, query: &str) -> Option<f64> {
    let url = format!("http://{prometheus}/api/v1/query");
    let response = http.get(url).query(&[("query", query)]).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    assert_eq!(body["status"], "success", "{body}");
    let results = body["data"]["result"].as_array()?;
    let value = results.first()?["value"][1].as_str()?;
    value.parse().ok()
}

#[test]
fn prometheus_scrapes_lookup_counter() {
    let dir = TempDir::new("metrics-prometheus");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "8"]);
    runtime().block_on(run_known_workload(&server, 8));
    let prometheus = start_prometheus(&dir.path, &server.address.to_string());

    let query = r#"ipclass_lookups_total{job="ipclass",api="grpc_is_internal",verdict="external"}"#;
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    let value = runtime().block_on(async {
        let http = reqwest::Client::new();
        loop {
            let value = query_value(&http, &prometheus.address, query).await;
            if value.is_some() || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let log = std::fs::read_to_string(dir.path.join("prometheus.log")).unwrap_or_default();
    assert_eq!(value, Some(2.0), "Prometheus log:\n{log}");
}

/// Starts a gRPC call to `path` with a message header that announces 100
/// bytes and only 4 of them, and returns once the server has received them,
/// with the connection task, the client, the open stream and its pings.
async fn start_partial_call(
    server: &Server,
    path: &str,
) -> (
    tokio::task::JoinHandle<()>,
    h2::client::SendRequest<bytes::Bytes>,
    h2::SendStream<bytes::Bytes>,
    h2::PingPong,
) {
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("ping_pong is taken once");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = axum::http::Request::post(format!("http://{}{path}", server.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_response, mut stream) = client.send_request(request, false).unwrap();
    let partial = b"\0\0\0\0\x64\x0a\x04\x0a\x01".to_vec();
    stream.send_data(partial.into(), false).unwrap();
    // h2 may write the first PING ahead of the stream's frames, but they go
    // out with it, so the reply to a second PING shows that the server has
    // read them.
    for _ in 0..2 {
        ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    }
    (connection, client, stream, ping_pong)
}

/// Waits until the count of `code` calls to `api` reaches `expected`, and
/// returns the last scrape.
fn await_code_count(server: &Server, api: &str, code: &str, expected: f64) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::parse(&scrape_text(&server.url("/metrics")));
        let labels = [("api", api), ("code", code)];
        let count = scrape.value("ipclass_requests_total", &labels);
        if count >= expected || Instant::now() > deadline {
            assert_eq!(count, expected, "{api} {code}");
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_abort_counts_cancelled() {
    let dir = TempDir::new("metrics-cancelled");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &[]);
    let api = "grpc_is_internal_packed";
    let path = "/ipclass.v1.IpClassifier/IsInternalPacked";

    // The client resets the stream in the middle of the message.
    runtime().block_on(async {
        let (_connection, _client, mut stream, mut ping_pong) =
            start_partial_call(&server, path).await;
        stream.send_reset(h2::Reason::CANCEL);
        ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    });
    await_code_count(&server, api, "CANCELLED", 1.0);

    // The client closes the connection in the middle of the message.
    runtime().block_on(async {
        let (connection, client, stream, ping_pong) = start_partial_call(&server, path).await;
        drop((stream, client, ping_pong));
        connection.abort();
    });
    let scrape = await_code_count(&server, api, "CANCELLED", 2.0);
    for code in ["INTERNAL", "UNKNOWN"] {
        let labels = [("api", api), ("code", code)];
        assert_eq!(
            scrape.value("ipclass_requests_total", &labels),
            0.0,
            "{code}"
        );
    }
}

/// A call counts by how it ends, not by whether its method finished: a
/// reset after the whole message is CANCELLED, and a response that ends
/// after the call's deadline is DEADLINE_EXCEEDED.
#[test]
fn calls_count_by_how_they_end() {
    let dir = TempDir::new("metrics-call-ends");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "100000"]);
    let api = "grpc_is_internal";

    // The whole message, and then a reset instead of the end of the stream.
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
        let mut ping_pong = connection.ping_pong().unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = axum::http::Request::post(format!(
            "http://{}/ipclass.v1.IpClassifier/IsInternal",
            server.address
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (_response, mut stream) = client.send_request(request, false).unwrap();
        // One IsInternalRequest with the address "10.1.1.1".
        let message = b"\0\0\0\0\x0a\x0a\x0810.1.1.1".to_vec();
        stream.send_data(message.into(), false).unwrap();
        for _ in 0..2 {
            ping_pong.ping(h2::Ping::opaque()).await.unwrap();
        }
        stream.send_reset(h2::Reason::CANCEL);
        ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    });
    await_code_count(&server, api, "CANCELLED", 1.0);

    // A batch of 65,536 addresses takes longer than its 1 ms deadline to
    // classify, so the response fails, though the method finished.
    let mut message = Vec::new();
    for n in 0..65_536u32 {
        let address = Ipv4Addr::from(0x0a00_0000 + n).to_string();
        message.push(0x0a);
        message.push(u8::try_from(address.len()).unwrap());
        message.extend_from_slice(address.as_bytes());
    }
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    let path = "/ipclass.v1.IpClassifier/IsInternal";
    let headers = [("grpc-timeout", "1m")];
    let (code, message) = runtime()
        .block_on(async { common::grpc_raw_request(&server, path, &headers, body, true).await });
    assert_eq!(code, "4", "DEADLINE_EXCEEDED: {message}");
    let scrape = await_code_count(&server, api, "DEADLINE_EXCEEDED", 1.0);
    let labels = [("api", api), ("code", "OK")];
    assert_eq!(scrape.value("ipclass_requests_total", &labels), 0.0);
}

#[test]
fn removed_set_loses_prefix_series() {
    let dir = TempDir::new("metrics-removed-set");
    let config = dir.write("ipclass.toml", CONFIG);
    let mut server = Server::start(&config, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics_url = server.wait_for_log(|line| line["message"] == "serving metrics")["address"]
        .as_str()
        .map(|address| format!("http://{address}/metrics"))
        .expect("the metrics line has an address");
    let prefixes = "ipclass_table_prefixes";
    let scrape = Scrape::parse(&scrape_text(&server.url("/metrics")));
    assert_eq!(
        scrape.value(prefixes, &[("set", "lan"), ("family", "ipv4")]),
        1.0
    );
    assert_eq!(
        scrape.value(prefixes, &[("set", "vpn"), ("family", "ipv6")]),
        1.0
    );
    assert_eq!(scrape.named(prefixes).len(), 8, "4 sets, 2 families");

    // The reload drops the `unused` set and adds a prefix to `lan`.
    let edited = CONFIG
        .replace(
            "[sets.unused]\ninternal = true\nnetworks = [\"192.0.2.0/24\"]\n",
            "",
        )
        .replace("[\"10.0.0.0/8\"]", "[\"10.0.0.0/8\", \"172.16.0.0/12\"]");
    assert_ne!(edited, CONFIG);
    dir.write("ipclass.toml", &edited);
    server.wait_for_log(|line| line["message"] == "table reloaded" && line["generation"] == 2);

    for url in [server.url("/metrics"), metrics_url] {
        let scrape = Scrape::parse(&scrape_text(&url));
        assert_eq!(scrape.named(prefixes).len(), 6, "3 sets, 2 families: {url}");
        let unused = scrape
            .named(prefixes)
            .into_iter()
            .filter(|sample| sample.labels["set"] == "unused")
            .count();
        assert_eq!(unused, 0, "{url}");
        assert_eq!(
            scrape.value(prefixes, &[("set", "lan"), ("family", "ipv4")]),
            2.0
        );
        assert_eq!(scrape.types[prefixes], "gauge");
    }
}

#[test]
fn head_counts_as_its_route() {
    let dir = TempDir::new("metrics-head");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &[]);
    let status = Command::new("curl")
        .args([
            "--silent",
            "--head",
            "--max-time",
            "10",
            "--output",
            "/dev/null",
        ])
        .arg(server.url("/v1/is-internal?ip=10.0.0.1"))
        .status()
        .expect("run curl");
    assert!(status.success());

    let scrape = Scrape::parse(&scrape_text(&server.url("/metrics")));
    let requests = "ipclass_requests_total";
    assert_eq!(
        scrape.value(requests, &[("api", "http_get"), ("code", "200")]),
        1.0
    );
    let lookups = [("api", "http_get"), ("verdict", "internal")];
    assert_eq!(scrape.value("ipclass_lookups_total", &lookups), 1.0);
}

#[test]
fn malformed_heads_are_counted() {
    let dir = TempDir::new("metrics-malformed");
    let config = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&config, &[]);
    let mut too_many = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned();
    for field in 0..100 {
        too_many.push_str(&format!("X-Field-{field}: 1\r\n"));
    }
    too_many.push_str("\r\n");

    let heads: [&[u8]; 4] = [
        b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00",
        too_many.as_bytes(),
    ];
    for head in heads {
        let mut connection = std::net::TcpStream::connect(server.address).unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        std::io::Write::write_all(&mut connection, head).unwrap();
        let mut reply = Vec::new();
        std::io::Read::read_to_end(&mut connection, &mut reply).expect("server closes");
        assert!(reply.starts_with(b"HTTP/1.1 4"), "{reply:?}");
    }

    let scrape = Scrape::parse(&scrape_text(&server.url("/metrics")));
    for (code, expected) in [("400", 3.0), ("431", 1.0)] {
        let labels = [("api", "http_other"), ("code", code)];
        assert_eq!(
            scrape.value("ipclass_requests_total", &labels),
            expected,
            "{code}"
        );
    }

    // The scrape's own request is counted after its body is rendered.
    assert_eq!(
        scrape.value(
            "ipclass_request_duration_seconds_count",
            &[("api", "http_other")]
        ),
        4.0
    );
}
