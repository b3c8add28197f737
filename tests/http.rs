//! The HTTP/JSON API of the real binary, called with `curl`: the address
//! rules again, request errors, health endpoints and an IPv6 listener.

mod common;

use std::process::Command;

use common::{classification, Server, TempDir};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[sets.home-lan]
internal = true
networks = ["192.168.1.0/24", "fd12:3456:789a::/48"]

[sets.guest-wifi]
internal = false
networks = ["192.168.1.192/26"]

[sets.hosts]
internal = true
networks = ["203.0.113.7/32", "2001:db8::7/128"]

[sets.link-local]
internal = true
networks = ["fe80::/10"]

[sets.everything-else]
internal = false
networks = ["0.0.0.0/0"]
"#;

struct Fixture {
    // Field order matters: the server stops before its folder is removed.
    server: Server,
    _dir: TempDir,
}

fn start(extra: &[&str]) -> Fixture {
    let dir = TempDir::new("http");
    let path = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&path, extra);
    Fixture { server, _dir: dir }
}

/// Runs curl with `args` and returns the status code and the JSON body.
fn curl(args: &[&str]) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--globoff", "--max-time", "10"])
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl; is it installed?");
    let stdout = String::from_utf8(output.stdout).expect("curl output is UTF-8");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, code) = stdout.rsplit_once('\n').expect("status code line");
    let status = code.parse().expect("status code is a number");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("body of curl {args:?} is not JSON ({error}): {body:?}"));
    (status, json)
}

/// GETs /v1/is-internal with `ip` URL-encoded by curl.
fn get_ip(server: &Server, ip: &str) -> (u16, Value) {
    let url = server.url("/v1/is-internal");
    curl(&["--get", "--data-urlencode", &format!("ip={ip}"), &url])
}

fn post(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let url = server.url(path);
    curl(&[
        "--header",
        "content-type: application/json",
        "--data-binary",
        body,
        &url,
    ])
}

#[test]
fn get_classifies_by_every_rule() {
    let fixture = start(&[]);
    let cases = [
        classification("192.168.1.10", "internal", "home-lan", "192.168.1.0/24"),
        classification(
            "192.168.1.200",
            "external",
            "guest-wifi",
            "192.168.1.192/26",
        ),
        classification("8.8.8.8", "external", "everything-else", "0.0.0.0/0"),
        classification("2001:db8::8", "external", "", ""),
        classification("203.0.113.7", "internal", "hosts", "203.0.113.7/32"),
        classification("2001:db8::7", "internal", "hosts", "2001:db8::7/128"),
        classification(
            "::ffff:192.168.1.10",
            "internal",
            "home-lan",
            "192.168.1.0/24",
        ),
        classification("::FFFF:c0a8:10a", "internal", "home-lan", "192.168.1.0/24"),
        classification("::192.168.1.10", "external", "", ""),
        classification("fe80::1%eth0", "internal", "link-local", "fe80::/10"),
        classification(" 192.168.1.10\t", "internal", "home-lan", "192.168.1.0/24"),
        classification("0.0.0.0", "unknown", "", ""),
        classification("::", "unknown", "", ""),
        classification("255.255.255.255", "unknown", "", ""),
    ];
    for case in cases {
        let ip = case["ip"].as_str().unwrap();
        let (status, body) = get_ip(&fixture.server, ip);
        assert_eq!(status, 200, "{ip:?}: {body}");
        assert_eq!(body, case, "{ip:?}");
    }
}

#[test]
fn percent_encoded_zone_is_decoded_and_dropped() {
    let fixture = start(&[]);
    let url = fixture.server.url("/v1/is-internal?ip=fe80::1%25eth0");
    let (status, body) = curl(&[&url]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        classification("fe80::1%eth0", "internal", "link-local", "fe80::/10")
    );
}

const INVALID: &[(&str, &str)] = &[
    ("10.1.2.3:8080", "remove the port"),
    ("[::1]:443", "remove the brackets"),
    ("[::1]", "remove the brackets"),
    ("192.168.1.0/24", "CIDR"),
    ("010.0.0.1", "leading zeros"),
    ("localhost", "host names are not resolved"),
    ("10.1.2.3%eth0", "zone"),
    ("1.2.3", "shorthand IPv4"),
    ("1.2.3.256", "such as 192.0.2.1"),
];

#[test]
fn get_invalid_address_is_400_with_error() {
    let fixture = start(&[]);
    for (ip, reason) in INVALID {
        let (status, body) = get_ip(&fixture.server, ip);
        assert_eq!(status, 400, "{ip}: {body}");
        assert_eq!(body["ip"], *ip);
        assert_eq!(body["verdict"], "invalid", "{ip}");
        assert_eq!(body["internal"], false, "{ip}");
        assert_eq!(body["set"], "", "{ip}");
        assert_eq!(body["network"], "", "{ip}");
        assert_eq!(body["generation"], 1, "{ip}");
        let error = body["error"].as_str().expect("error is a string");
        assert!(error.contains(&format!("{ip:?}")), "{ip}: {error}");
        assert!(error.contains(reason), "{ip}: {error}");
    }
    for (ip, reason) in [("", "empty address"), ("   ", "empty address")] {
        let (status, body) = get_ip(&fixture.server, ip);
        assert_eq!(status, 400, "{ip:?}: {body}");
        assert_eq!(body["verdict"], "invalid");
        assert_eq!(body["internal"], false);
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    }
    let overlong = "1".repeat(300);
    let (status, body) = get_ip(&fixture.server, &overlong);
    assert_eq!(status, 400);
    assert_eq!(body["internal"], false);
    assert!(
        body["error"].as_str().unwrap().contains("too long"),
        "{body}"
    );
}

#[test]
fn missing_or_repeated_ip_is_400() {
    let fixture = start(&[]);
    for path in ["/v1/is-internal", "/v1/is-internal?address=10.0.0.1"] {
        let (status, body) = curl(&[&fixture.server.url(path)]);
        assert_eq!(status, 400, "{path}");
        let error = body["error"].as_str().expect("error is a string");
        assert!(error.contains("missing query parameter \"ip\""), "{error}");
    }
    let url = fixture
        .server
        .url("/v1/is-internal?ip=10.0.0.1&ip=192.168.1.10");
    let (status, body) = curl(&[&url]);
    assert_eq!(status, 400);
    let error = body["error"].as_str().expect("error is a string");
    assert!(error.contains("given 2 times"), "{error}");
}

#[test]
fn post_returns_results_in_request_order() {
    let fixture = start(&[]);
    let body = r#"{"ips": ["192.168.1.200", "bogus", "::ffff:192.168.1.10", "255.255.255.255", "fe80::1%eth0"]}"#;
    let (status, response) = post(&fixture.server, "/v1/is-internal", body);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["generation"], 1);
    let results = response["results"].as_array().expect("results array");
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[0],
        classification(
            "192.168.1.200",
            "external",
            "guest-wifi",
            "192.168.1.192/26"
        )
    );
    assert_eq!(results[1]["ip"], "bogus");
    assert_eq!(results[1]["verdict"], "invalid");
    assert_eq!(results[1]["internal"], false);
    assert!(results[1]["error"].as_str().unwrap().contains("\"bogus\""));
    assert_eq!(
        results[2],
        classification(
            "::ffff:192.168.1.10",
            "internal",
            "home-lan",
            "192.168.1.0/24"
        )
    );
    assert_eq!(
        results[3],
        classification("255.255.255.255", "unknown", "", "")
    );
    assert_eq!(
        results[4],
        classification("fe80::1%eth0", "internal", "link-local", "fe80::/10")
    );
}

#[test]
fn post_lone_surrogate_fails_alone() {
    let fixture = start(&[]);
    // What Python's json.dumps writes for a byte that is not UTF-8.
    let body = r#"{"ips": ["10.1.2.3", "10.0.0.1\udcff", "\ud83d\ude00", "::1"]}"#;
    let (status, json) = post(&fixture.server, "/v1/is-internal", body);
    assert_eq!(status, 200, "{json}");
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!(results[1]["ip"], "10.0.0.1\u{fffd}");
    assert_eq!(results[1]["verdict"], "invalid");
    let error = results[1]["error"].as_str().expect("an error");
    assert!(error.contains("bytes that are not UTF-8"), "{error}");
    // A surrogate pair is a real character.
    assert_eq!(results[2]["ip"], "\u{1f600}");
    for index in [0, 3] {
        assert_ne!(results[index]["verdict"], "invalid", "{}", results[index]);
    }
}

#[test]
fn post_empty_batch_returns_empty_results() {
    let fixture = start(&[]);
    let (status, response) = post(&fixture.server, "/v1/is-internal", r#"{"ips": []}"#);
    assert_eq!(status, 200);
    assert_eq!(response, json!({"results": [], "generation": 1}));
}

#[test]
fn post_malformed_or_misshapen_json_is_400() {
    let fixture = start(&[]);
    let bodies = [
        "",
        "{",
        "not json",
        r#"{"ips": ["10.0.0.1",]}"#,
        "[]",
        "{}",
        "null",
        r#"{"ips": "10.0.0.1"}"#,
        r#"{"ips": [1, 2]}"#,
        r#"{"ips": [null]}"#,
        r#"{"ip": ["10.0.0.1"]}"#,
        r#"{"ips": [], "extra": true}"#,
        // serde would read the struct from an array of its fields.
        r#"[["10.0.0.1", "8.8.8.8"]]"#,
        r#" [[]]"#,
    ];
    for body in bodies {
        let (status, response) = post(&fixture.server, "/v1/is-internal", body);
        assert_eq!(status, 400, "{body:?}: {response}");
        let error = response["error"].as_str().expect("error is a string");
        assert!(error.starts_with("invalid JSON body"), "{body:?}: {error}");
    }
}

/// Windows tools such as PowerShell's `Out-File` write a UTF-8 byte order
/// mark before the JSON.
#[test]
fn post_json_with_bom_is_accepted() {
    let fixture = start(&[]);
    let body = "\u{feff}{\"ips\": [\"192.168.1.10\"]}";
    let (status, response) = post(&fixture.server, "/v1/is-internal", body);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["results"][0]["ip"], "192.168.1.10");
    assert_eq!(response["results"][0]["verdict"], "internal");
    assert_eq!(response["results"][0]["set"], "home-lan");
}

#[test]
fn post_gzip_body_is_415() {
    let fixture = start(&[]);
    let dir = TempDir::new("http-gzip");
    let json = dir.write("batch.json", r#"{"ips": ["192.168.1.10"]}"#);
    let gzip = Command::new("gzip")
        .arg("--keep")
        .arg(&json)
        .status()
        .expect("run gzip");
    assert!(gzip.success(), "gzip exited with {gzip}");
    let data = format!("@{}.gz", json.display());
    let url = fixture.server.url("/v1/is-internal");
    let (status, response) = curl(&[
        "--header",
        "content-type: application/json",
        "--header",
        "content-encoding: gzip",
        "--data-binary",
        &data,
        &url,
    ]);
    assert_eq!(status, 415, "{response}");
    let error = response["error"].as_str().expect("error is a string");
    assert!(error.contains("\"gzip\""), "{error}");
    assert!(error.contains("send uncompressed JSON"), "{error}");
}

#[test]
fn post_over_batch_limit_is_400() {
    let fixture = start(&["--max-batch-size", "3"]);
    let (status, _) = post(
        &fixture.server,
        "/v1/is-internal",
        r#"{"ips": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}"#,
    );
    assert_eq!(status, 200);
    let body = r#"{"ips": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]}"#;
    let (status, response) = post(&fixture.server, "/v1/is-internal", body);
    assert_eq!(status, 400);
    let error = response["error"].as_str().expect("error is a string");
    assert!(
        error.contains("batch of 4 addresses exceeds the maximum of 3"),
        "{error}"
    );
}

#[test]
fn unknown_path_is_json_404() {
    let fixture = start(&[]);
    for path in [
        "/",
        "/v2/is-internal",
        "/v1/is-internal/extra",
        "/healthz/x",
    ] {
        let (status, body) = curl(&[&fixture.server.url(path)]);
        assert_eq!(status, 404, "{path}");
        let error = body["error"].as_str().expect("error is a string");
        assert!(error.contains(path), "{path}: {error}");
    }
}

#[test]
fn long_path_is_cut_in_404() {
    let fixture = start(&[]);
    let path = format!("/{}", "a".repeat(5000));
    let (status, body) = curl(&[&fixture.server.url(&path)]);
    assert_eq!(status, 404);
    let error = body["error"].as_str().expect("error is a string");
    assert!(error.contains(&path[..64]), "{error}");
    assert!(error.contains("... (4937 more bytes)"), "{error}");
    assert!(error.len() < 300, "{} bytes", error.len());
}

#[test]
fn grpc_over_http1_is_505() {
    let fixture = start(&[]);
    let url = fixture.server.url("/ipclass.v1.IpClassifier/IsInternal");
    let (status, body) = curl(&[
        "--http1.1",
        "--header",
        "content-type: application/grpc",
        "--header",
        "te: trailers",
        "--data-binary",
        "not a message",
        &url,
    ]);
    assert_eq!(status, 505);
    let error = body["error"].as_str().expect("error is a string");
    assert!(error.contains("gRPC needs HTTP/2"), "{error}");
    assert!(error.contains("--http2-prior-knowledge"), "{error}");
}

#[test]
fn wrong_method_is_json_405() {
    let fixture = start(&[]);
    for (method, path) in [
        ("DELETE", "/v1/is-internal"),
        ("PUT", "/v1/is-internal"),
        ("POST", "/healthz"),
        ("POST", "/readyz"),
    ] {
        let (status, body) = curl(&["--request", method, &fixture.server.url(path)]);
        assert_eq!(status, 405, "{method} {path}");
        let error = body["error"].as_str().expect("error is a string");
        assert!(
            error.contains(&format!("method {method} is not allowed on {path}")),
            "{error}"
        );
    }
}

#[test]
fn health_and_readiness_answer() {
    let fixture = start(&[]);
    let (status, body) = curl(&[&fixture.server.url("/healthz")]);
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = curl(&[&fixture.server.url("/readyz")]);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "status": "ready",
            "generation": 1,
            "last_reload_error": "",
            "watcher": {"healthy": true, "error": ""},
        })
    );
}

#[test]
fn ipv6_listener_serves_http() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("NOTE: ::1 is not available on this machine; IPv6 listener not tested");
        return;
    }
    let dir = TempDir::new("http-ipv6");
    let path = dir.write("ipclass.toml", CONFIG);
    let server = Server::start_listening("[::1]:0", &path, &[]);
    assert!(server.address.is_ipv6(), "{}", server.address);
    let (status, body) = get_ip(&server, "fd12:3456:789a::1");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        classification(
            "fd12:3456:789a::1",
            "internal",
            "home-lan",
            "fd12:3456:789a::/48"
        )
    );
}
