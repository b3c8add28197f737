//! Log output of the real binary with `--log-format json`: one JSON object
//! per line, even for a multi-line config error, and per-request logging
//! only at debug level.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{binary, Server, TempDir};
use serde_json::Value;

fn parse_lines(stderr: &[u8]) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let line = line.expect("stderr is UTF-8");
            serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("log line is not one JSON object ({error}): {line}"))
        })
        .collect()
}

/// Runs `ipclass serve` with JSON logs on `config` and `RUST_LOG` set to
/// `directives`, and returns its output once it exits.
fn serve_once(
    config: &std::path::Path,
    directives: impl AsRef<std::ffi::OsStr>,
) -> std::process::Output {
    Command::new(binary())
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", directives)
        .stdin(Stdio::null())
        .output()
        .expect("run ipclass serve")
}

#[test]
fn config_error_is_one_json_line() {
    let dir = TempDir::new("logging-config");
    let config = dir.write(
        "bad.toml",
        "[sets.a]\ninternal = true\nnetworks = [\"10.0.0.0/33\", \"bogus\"]\n",
    );
    let output = serve_once(&config, "info");
    assert_eq!(output.status.code(), Some(1), "invalid config exit code");

    let lines = parse_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let error = &lines[0];
    assert_eq!(error["level"], "ERROR");
    let message = error["message"].as_str().expect("message is a string");
    assert!(message.contains("(2 errors)"), "{message}");
    assert!(
        message.contains("bad.toml:3: invalid prefix \"bogus\""),
        "{message}"
    );
    assert_eq!(message.lines().count(), 3, "{message}");
}

#[test]
fn config_error_shows_with_logging_off() {
    let dir = TempDir::new("logging-off");
    let config = dir.write("bad.toml", "[sets.a]\ninternal = maybe\n");
    for directives in ["off", "ipclass=off"] {
        let output = serve_once(&config, directives);
        assert_eq!(output.status.code(), Some(1), "{directives}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("invalid config"),
            "{directives}: {stderr}"
        );
        assert!(
            stderr.contains("bad.toml:2: invalid TOML"),
            "{directives}: {stderr}"
        );
    }
}

#[test]
fn log_filter_typo_keeps_errors() {
    let dir = TempDir::new("logging-filter");
    let config = dir.write("bad.toml", "[sets.a]\ninternal = true\n");
    let cases = [
        (
            "nonsense",
            "RUST_LOG \"nonsense\" sets no level for all targets",
        ),
        (
            "garbage=,,",
            "RUST_LOG \"garbage=,,\" sets no level for all targets",
        ),
        ("[bad", "invalid RUST_LOG \"[bad\""),
    ];
    let not_utf8 = std::os::unix::ffi::OsStrExt::from_bytes(b"ipclass=debug\xff");
    let cases = cases
        .map(|(directives, warning)| (std::ffi::OsStr::new(directives), warning))
        .into_iter()
        .chain([(
            not_utf8,
            "RUST_LOG \"ipclass=debug\u{FFFD}\" is not UTF-8; logging with",
        )]);
    for (directives, warning) in cases {
        let output = serve_once(&config, directives);
        let directives = directives.to_string_lossy();
        assert_eq!(output.status.code(), Some(1), "{directives}");

        let lines = parse_lines(&output.stderr);
        assert_eq!(lines.len(), 2, "{directives}: {lines:?}");
        assert_eq!(lines[0]["level"], "WARN", "{directives}");
        let message = lines[0]["message"].as_str().unwrap();
        assert!(message.starts_with(warning), "{message}");
        assert_eq!(lines[1]["level"], "ERROR", "{directives}");
        let message = lines[1]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid config"), "{message}");
    }
}

#[test]
fn requests_not_logged_at_info() {
    let dir = TempDir::new("logging-info");
    let config = dir.write(
        "c.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    let mut server = Server::start(&config, &[]);
    let url = server.url("/v1/is-internal?ip=10.1.2.3");
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "200");

    server.signal("TERM");
    server.wait_for_log(|line| line["message"] == "stopped");
    let seen = server.seen.lock().unwrap().clone();
    for line in &seen {
        let value: Value = serde_json::from_str(line).expect("every line is JSON");
        assert_ne!(value["level"], "DEBUG", "{line}");
        assert!(
            !line.contains("10.1.2.3"),
            "an address is logged at info: {line}"
        );
    }
    let messages: Vec<&str> = seen
        .iter()
        .filter_map(|line| line.split("\"message\":\"").nth(1))
        .map(|rest| rest.split('"').next().unwrap_or(""))
        .collect();
    for expected in ["table loaded", "listening", "shutting down", "stopped"] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
}

#[test]
fn debug_logs_one_span_per_request() {
    let dir = TempDir::new("logging-debug");
    let config = dir.write(
        "c.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    let mut child = Command::new(binary())
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .env("RUST_LOG", "ipclass=debug")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipclass serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("log line before listening").unwrap();
        let value: Value = serde_json::from_str(&line).expect("JSON log line");
        if value["message"] == "listening" {
            break value["address"].as_str().unwrap().to_owned();
        }
    };

    let body = r#"{"ips": ["10.1.1.1", "8.8.8.8", "nonsense"]}"#;
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", body])
        .arg(format!("http://{address}/v1/is-internal"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "200");

    let batch = loop {
        let line = lines.next().expect("batch log line").unwrap();
        let value: Value = serde_json::from_str(&line).expect("JSON log line");
        if value["message"] == "batch classified" {
            break value;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(batch["level"], "DEBUG");
    assert_eq!(batch["internal"], 1);
    assert_eq!(batch["external"], 1);
    assert_eq!(batch["invalid"], 1);
    let span = &batch["span"];
    assert_eq!(span["name"], "request");
    assert_eq!(span["api"], "http_post");
    assert_eq!(span["batch_size"], 3);
    assert_eq!(span["generation"], 1);
}
