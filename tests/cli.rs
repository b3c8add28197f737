//! The `check`, `lookup` and `serve` commands of the real binary: output,
//! exit codes, environment variables and start-up failures.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{binary, TempDir, LOG_TIMEOUT};

const CONFIG: &str = r#"# Home network.
[sets.home-lan]
internal = true
networks = [
  "192.168.1.0/24",
  "fd12:3456:789a::/48",
]

[sets.guest-wifi]
internal = false
networks = ["192.168.1.192/26"]

[sets.vpn]
internal = true
files = ["vpn.txt"]
"#;

const VPN: &str = "# WireGuard peers\n\n10.8.0.0/24\nfd7a:115c:a1e0::/48\n";

fn config_dir() -> (TempDir, String) {
    let dir = TempDir::new("cli");
    dir.write("vpn.txt", VPN);
    let path = dir.write("ipclass.toml", CONFIG);
    (dir, path.display().to_string())
}

fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    for name in [
        "IPCLASS_CONFIG",
        "IPCLASS_LISTEN",
        "IPCLASS_STRICT",
        "IPCLASS_LOG_FORMAT",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run ipclass")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

#[test]
fn check_prints_summary_and_exits_0() {
    let (_dir, config) = config_dir();
    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!(
            "{config}: valid\n\
             \x20 3 sets, 5 prefixes (3 IPv4, 2 IPv6), 0 warnings\n\
             \x20 set guest-wifi  external  1 IPv4, 0 IPv6\n\
             \x20 set home-lan    internal  1 IPv4, 1 IPv6\n\
             \x20 set vpn         internal  1 IPv4, 1 IPv6\n"
        )
    );
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn check_lists_warnings_and_strict_rejects_them() {
    let dir = TempDir::new("cli-warn");
    let config = dir.write(
        "ipclass.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"192.168.1.7/24\", \"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
    );
    let config = config.display().to_string();

    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("1 set, 2 prefixes (2 IPv4, 0 IPv6), 2 warnings"),
        "{stdout}"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {config}:3: host bits are set in 192.168.1.7/24; using 192.168.1.0/24"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: {config}:3: prefix 10.0.0.0/8 appears again"
        )),
        "{stderr}"
    );

    let single_dir = TempDir::new("cli-one");
    let single = single_dir.write(
        "ipclass.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    let output = run(&["check", "--config", single.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("  1 set, 1 prefix (1 IPv4, 0 IPv6), 0 warnings\n"),
        "{stdout}"
    );

    let output = run(&["check", "--strict", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("host bits are set in 192.168.1.7/24"),
        "{stderr}"
    );
    assert!(
        stderr.contains("under --strict: 2 warning(s) above are errors"),
        "{stderr}"
    );

    let output = run_with_env(
        &["check", "--config", &config],
        &[("IPCLASS_STRICT", "true")],
    );
    assert_eq!(output.status.code(), Some(1), "IPCLASS_STRICT=true");
    for (value, code) in [
        ("1", 1),
        ("yes", 1),
        ("on", 1),
        ("0", 0),
        ("false", 0),
        ("off", 0),
    ] {
        let output = run_with_env(
            &["check", "--config", &config],
            &[("IPCLASS_STRICT", value)],
        );
        assert_eq!(output.status.code(), Some(code), "IPCLASS_STRICT={value}");
    }
}

#[test]
fn check_lists_every_error_with_file_and_line() {
    let dir = TempDir::new("cli-errors");
    dir.write("vpn.txt", "10.8.0.0/24\n10.8.1.0/33\n");
    let config = dir.write(
        "ipclass.toml",
        "colour = 1\n[sets.lan]\ninternal = true\nnetworks = [\"010.0.0.0/8\"]\n[sets.vpn]\nfiles = [\"vpn.txt\"]\n",
    );
    let config = config.display().to_string();
    let list = dir.path.join("vpn.txt").display().to_string();

    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    assert_eq!(lines[0], format!("invalid config {config} (4 errors)"));
    assert!(
        lines[1].starts_with(&format!("  {config}:1: unknown key \"colour\"")),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("  {config}:4: invalid prefix \"010.0.0.0/8\"")),
        "{stderr}"
    );
    assert!(
        lines[3].starts_with(&format!("  {config}:5: set \"vpn\" has no `internal` key")),
        "{stderr}"
    );
    assert!(
        lines[4].starts_with(&format!("  {list}:2: invalid prefix \"10.8.1.0/33\"")),
        "{stderr}"
    );
}

#[test]
fn check_shows_warnings_beside_errors() {
    let dir = TempDir::new("cli-mixed");
    let config = dir.write(
        "ipclass.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.20.0.7/16\"]\n[sets.guest]\ninternal = false\nnetworks = [\"10.20.0.0/16\"]\n",
    );
    let config = config.display().to_string();

    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(
        lines[0],
        format!("warning: {config}:3: host bits are set in 10.20.0.7/16; using 10.20.0.0/16")
    );
    assert_eq!(lines[1], format!("invalid config {config} (1 error)"));
    assert!(
        lines[2].starts_with(&format!(
            "  {config}:6: prefix 10.20.0.0/16 is in set \"guest\" and also in set \"lan\" at {config}:3"
        )),
        "{stderr}"
    );
}

#[test]
fn check_missing_config_exits_1() {
    let output = run(&["check", "--config", "/nonexistent/ipclass.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/ipclass.toml"),
        "{stderr}"
    );
}

/// A list file that is huge or endless, such as `/dev/zero`, is rejected
/// after a bounded read instead of filling memory.
#[test]
fn check_rejects_oversize_list_file() {
    let (dir, config) = config_dir();
    let list = std::fs::File::create(dir.path.join("vpn.txt")).expect("create list file");
    list.set_len(64 * 1024 * 1024 + 1)
        .expect("grow the sparse list file");
    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let start: String = stderr.chars().take(500).collect();
    assert!(
        stderr.len() < 4096,
        "stderr of {} bytes: {start}",
        stderr.len()
    );
    assert!(
        stderr.contains(&format!("{config}:15: cannot read ")),
        "{start}"
    );
    assert!(stderr.contains("larger than the 64 MiB limit"), "{start}");
    assert!(stderr.contains("split"), "{start}");
    assert!(!stderr.contains("check that the file exists"), "{start}");
}

/// A FIFO or a device in place of a list file is rejected at once. Opening a
/// FIFO without a writer would otherwise block the check for good.
#[test]
fn check_rejects_list_file_not_regular() {
    let (dir, config) = config_dir();
    let list = dir.path.join("vpn.txt");
    std::fs::remove_file(&list).expect("remove list file");
    let status = Command::new("mkfifo")
        .arg(&list)
        .status()
        .expect("run mkfifo");
    assert!(status.success());

    let child = Command::new(binary())
        .args(["check", "--config", &config])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipclass");
    let (sender, receiver) = mpsc::channel();
    let id = child.id();
    thread::spawn(move || sender.send(child.wait_with_output()));
    let Ok(output) = receiver.recv_timeout(LOG_TIMEOUT) else {
        let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
        panic!("check did not finish within {LOG_TIMEOUT:?} on a FIFO");
    };
    let output = output.expect("wait for ipclass");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{config}:15: cannot read ")),
        "{stderr}"
    );
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!stderr.contains("check that the file exists"), "{stderr}");

    std::fs::remove_file(&list).expect("remove FIFO");
    std::os::unix::fs::symlink("/dev/null", &list).expect("link to /dev/null");
    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("not a regular file"));
}

/// A config that is not UTF-8 is reported at the line of the first bad byte.
#[test]
fn check_rejects_config_not_utf8() {
    let dir = TempDir::new("cli-latin1");
    let path = dir.path.join("ipclass.toml");
    std::fs::write(&path, b"[sets.a]\ninternal = true\n# caf\xe9\n").unwrap();
    let config = path.display().to_string();
    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{config}:3: cannot read {config}: line 3 is not valid UTF-8 (byte offset 30)"
        )),
        "{stderr}"
    );
}

/// A list file saved in another encoding, such as Latin-1, gets advice to
/// re-save it rather than to check that it exists.
#[test]
fn check_rejects_list_file_not_utf8() {
    let (dir, config) = config_dir();
    std::fs::write(
        dir.path.join("vpn.txt"),
        b"10.9.0.0/24\n# caf\xe9 peers\n10.8.0.0/24\n",
    )
    .expect("write list file");
    let output = run(&["check", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{config}:15: cannot read ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 2 is not valid UTF-8 (byte offset 17)"),
        "{stderr}"
    );
    assert!(stderr.contains("save the file as UTF-8"), "{stderr}");
    assert!(!stderr.contains("check that the file exists"), "{stderr}");
}

#[test]
fn lookup_explains_each_verdict() {
    let (dir, config) = config_dir();
    let list = dir.path.join("vpn.txt").display().to_string();
    let output = run(&[
        "lookup",
        "--config",
        &config,
        "192.168.1.10",
        "192.168.1.200",
        "10.8.0.5",
        "::ffff:192.168.1.10",
        "fd12:3456:789a::1%eth0",
        "8.8.8.8",
        "255.255.255.255",
        "10.0.0.1:80",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("192.168.1.10: internal, set \"home-lan\" (internal), prefix 192.168.1.0/24 from {config}:5"),
            format!("192.168.1.200: external, set \"guest-wifi\" (external), prefix 192.168.1.192/26 from {config}:11"),
            format!("10.8.0.5: internal, set \"vpn\" (internal), prefix 10.8.0.0/24 from {list}:3"),
            format!("::ffff:192.168.1.10: internal (looked up as 192.168.1.10), set \"home-lan\" (internal), prefix 192.168.1.0/24 from {config}:5"),
            format!("fd12:3456:789a::1%eth0: internal (looked up as fd12:3456:789a::1), set \"home-lan\" (internal), prefix fd12:3456:789a::/48 from {config}:6"),
            "8.8.8.8: external, no prefix matched".to_owned(),
            "255.255.255.255: unknown, unspecified or broadcast address, which identifies no client".to_owned(),
            "10.0.0.1:80: invalid: invalid address \"10.0.0.1:80\": remove the port and send the address alone".to_owned(),
        ]
    );
}

#[test]
fn lookup_escapes_control_characters() {
    let (_dir, config) = config_dir();
    let forged = "8.8.8.8\n10.8.0.5: internal";
    let output = run(&["lookup", "--config", &config, forged]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("\"8.8.8.8\\n10.8.0.5: internal\": invalid"),
        "{stdout}"
    );
}

#[test]
fn lookup_reads_config_from_environment() {
    let (_dir, config) = config_dir();
    let output = run_with_env(&["lookup", "192.168.1.10"], &[("IPCLASS_CONFIG", &config)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("192.168.1.10: internal"));

    let output = run_with_env(&["check"], &[("IPCLASS_CONFIG", &config)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with(&format!("{config}: valid")));
}

/// Runs `ipclass serve` on a port this test holds, so a server that tried
/// to bind would fail with the runtime exit code 3, not the config code 1.
fn serve_on_held_port(config: &str) -> Output {
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let listen = held.local_addr().unwrap().to_string();
    let output = run(&[
        "--log-format",
        "json",
        "serve",
        "--config",
        config,
        "--listen",
        &listen,
    ]);
    drop(held);
    output
}

#[test]
fn serve_with_invalid_config_exits_before_binding() {
    let dir = TempDir::new("cli-serve");
    let invalid = dir.write(
        "bad.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.300/8\"]\n",
    );
    let cases = [
        (
            invalid.display().to_string(),
            "invalid prefix \\\"10.0.0.300/8\\\"",
        ),
        (
            dir.path.join("missing.toml").display().to_string(),
            "cannot read",
        ),
    ];
    for (config, expected) in cases {
        let output = serve_on_held_port(&config);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("\"level\":\"ERROR\""), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
        assert!(!stderr.contains("failed to listen"), "{stderr}");
    }
}

#[test]
fn serve_on_port_in_use_exits_3() {
    let (_dir, config) = config_dir();
    let output = serve_on_held_port(&config);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("failed to listen"), "{stderr}");
    assert!(!stderr.contains("\"message\":\"listening\""), "{stderr}");
}

#[test]
fn serve_reads_config_and_listen_from_environment() {
    let (_dir, config) = config_dir();
    // Port 0 differs from the default 127.0.0.1:50051, so a server that
    // ignored the variable would report a different address.
    let listen = "127.0.0.1:0";
    let mut child = Command::new(binary())
        .args(["--log-format", "json", "serve"])
        .env("IPCLASS_CONFIG", &config)
        .env("IPCLASS_LISTEN", listen)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipclass serve");
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let listening = loop {
        match receiver.recv_timeout(LOG_TIMEOUT) {
            Ok(line) if line.contains("\"message\":\"listening\"") => break line,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!("no listening line within {LOG_TIMEOUT:?}");
            }
        }
    };
    let line: serde_json::Value = serde_json::from_str(&listening).expect("JSON log line");
    let address: std::net::SocketAddr = line["address"].as_str().unwrap().parse().unwrap();
    assert!(address.ip().is_loopback(), "{listening}");
    assert_ne!(address.port(), 50051, "{listening}");
    assert_ne!(address.port(), 0, "{listening}");
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "10"])
        .arg(format!("http://{address}/v1/is-internal?ip=10.8.0.1"))
        .output()
        .expect("run curl");
    let _ = child.kill();
    let _ = child.wait();
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON body");
    assert_eq!(body["verdict"], "internal");
    assert_eq!(body["set"], "vpn");
}

#[test]
fn help_lists_every_flag_and_variable() {
    let output = run(&["serve", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    for part in [
        "--config",
        "IPCLASS_CONFIG",
        "--listen",
        "IPCLASS_LISTEN",
        "127.0.0.1:50051",
        "--max-batch-size",
        "IPCLASS_MAX_BATCH_SIZE",
        "65536",
        "--shutdown-grace",
        "IPCLASS_SHUTDOWN_GRACE",
        "--header-read-timeout",
        "IPCLASS_HEADER_READ_TIMEOUT",
        "--log-format",
        "IPCLASS_LOG_FORMAT",
    ] {
        assert!(help.contains(part), "serve --help lacks {part}:\n{help}");
    }
    let help = text(&run(&["check", "--help"]).stdout);
    for part in ["--config", "--strict", "IPCLASS_STRICT"] {
        assert!(help.contains(part), "check --help lacks {part}:\n{help}");
    }
    let help = text(&run(&["lookup", "--help"]).stdout);
    for part in ["--config", "<ADDRESS>..."] {
        assert!(help.contains(part), "lookup --help lacks {part}:\n{help}");
    }
    let help = text(&run(&["--help"]).stdout);
    for part in ["serve", "check", "lookup", "--version"] {
        assert!(help.contains(part), "--help lacks {part}:\n{help}");
    }
}

#[test]
fn invalid_flag_values_are_usage_errors() {
    let (_dir, config) = config_dir();
    for (flag, value) in [
        ("--max-batch-size", "0"),
        ("--max-batch-size", "many"),
        ("--listen", "localhost:80"),
        ("--shutdown-grace", "soon"),
        ("--header-read-timeout", "0s"),
        ("--header-read-timeout", "later"),
        ("--sched-slice", "50us"),
        ("--sched-slice", "1s"),
        ("--sched-slice", "none"),
        ("--reload-debounce", "0ms"),
        ("--reload-debounce", "1ns"),
        ("--reload-debounce", "100y"),
    ] {
        let output = run(&["serve", "--config", &config, flag, value]);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains(value), "{stderr}");
    }
}

#[test]
fn invalid_variable_is_named() {
    let (_dir, config) = config_dir();
    for (variable, value, command) in [
        ("IPCLASS_MAX_CONNECTIONS", "abc", "serve"),
        ("IPCLASS_IDLE_TIMEOUT", "5", "serve"),
        ("IPCLASS_LOG_FORMAT", "xml", "check"),
        ("IPCLASS_STRICT", "maybe", "check"),
    ] {
        let args = [command, "--config", &config];
        let output = run_with_env(&args, &[(variable, value)]);
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("'{value}'")), "{stderr}");
        assert!(
            stderr.contains(&format!("environment variable {variable}")),
            "{stderr}"
        );
    }
}

#[test]
fn non_utf8_text_is_named() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let (_dir, config) = config_dir();
    let output = Command::new(binary())
        .args(["serve", "--config", &config])
        .env("IPCLASS_LISTEN", OsStr::from_bytes(b"127.0.0.1:\xff"))
        .stdin(Stdio::null())
        .output()
        .expect("run ipclass");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("environment variable IPCLASS_LISTEN (--listen) is not UTF-8"),
        "{stderr}"
    );

    let output = Command::new(binary())
        .args(["serve", "--config", &config, "--listen"])
        .arg(OsStr::from_bytes(b"127.0.0.1:\xfe"))
        .env_remove("IPCLASS_LISTEN")
        .stdin(Stdio::null())
        .output()
        .expect("run ipclass");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the argument \"127.0.0.1:\u{FFFD}\" is not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn listen_address_with_host_name_is_explained() {
    let (_dir, config) = config_dir();
    for flag in ["--listen", "--metrics-listen"] {
        let output = run(&["serve", "--config", &config, flag, "localhost:50051"]);
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("'localhost:50051'"), "{stderr}");
        assert!(
            stderr.contains("such as 127.0.0.1:50051 or [::1]:50051; host names such as localhost are not resolved"),
            "{stderr}"
        );
    }
    for (value, problem) in [
        ("127.0.0.1", "no port; add one, as in 127.0.0.1:50051"),
        ("::1", "no port; add one, as in [::1]:50051"),
        (
            "127.0.0.1:99999",
            "the port must be a number from 0 to 65535",
        ),
        ("[::1]:x", "the port must be a number from 0 to 65535"),
    ] {
        let output = run(&["serve", "--config", &config, "--listen", value]);
        assert_eq!(output.status.code(), Some(2), "{value}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(problem), "{value}: {stderr}");
    }
}

#[test]
fn invalid_flag_beside_variable_names_flag() {
    let (_dir, config) = config_dir();
    let output = run_with_env(
        &["serve", "--config", &config, "--max-connections=x"],
        &[("IPCLASS_MAX_CONNECTIONS", "abc")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("'x'"), "{stderr}");
    assert!(!stderr.contains("environment variable"), "{stderr}");
}
