//! Single-address GETs on raw HTTP/1.1 connections to the real binary:
//! pipelined and split requests, closing, and the same connection moving
//! on to hyper when a request of another kind arrives.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{classification, Server, TempDir};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[sets.office]
internal = true
networks = ["10.0.0.0/8", "fd00::/8"]

[sets.guests]
internal = false
networks = ["10.9.0.0/16"]
"#;

struct Fixture {
    // Field order matters: the server stops before its folder is removed.
    server: Server,
    _dir: TempDir,
}

fn start() -> Fixture {
    let dir = TempDir::new("http1");
    let path = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&path, &[]);
    Fixture { server, _dir: dir }
}

fn connect(server: &Server) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(server.address).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

fn send(connection: &mut BufReader<TcpStream>, bytes: &[u8]) {
    connection.get_mut().write_all(bytes).expect("send request");
}

/// A response read off the wire.
#[derive(Debug)]
struct Response {
    status_line: String,
    /// Header lines in order, names lowercase, without `date`.
    headers: Vec<(String, String)>,
    date: Option<String>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn read_response(connection: &mut BufReader<TcpStream>) -> Response {
    let mut status_line = String::new();
    connection
        .read_line(&mut status_line)
        .expect("read status line");
    assert!(
        status_line.ends_with("\r\n"),
        "incomplete status line {status_line:?}"
    );
    let mut headers = Vec::new();
    let mut date = None;
    loop {
        let mut line = String::new();
        connection.read_line(&mut line).expect("read header line");
        let line = line.strip_suffix("\r\n").expect("header line ends in CRLF");
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(": ").expect("header line has a colon");
        let name = name.to_ascii_lowercase();
        if name == "date" {
            date = Some(value.to_owned());
        } else {
            headers.push((name, value.to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<usize>().expect("content-length is a number"))
        .expect("response has content-length");
    let mut body = vec![0; len];
    connection.read_exact(&mut body).expect("read body");
    Response {
        status_line: status_line.trim_end().to_owned(),
        headers,
        date,
        body,
    }
}

fn get(ip: &str) -> String {
    format!("GET /v1/is-internal?ip={ip} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn assert_closed(connection: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    connection
        .read_to_end(&mut rest)
        .expect("server closes the connection");
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
}

#[test]
fn pipelined_gets_in_order() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let requests = [
        get("10.1.2.3"),
        get("10.9.0.1"),
        get("192.0.2.1"),
        get("fd00::1"),
    ]
    .concat();
    send(&mut connection, requests.as_bytes());
    let expected = [
        classification("10.1.2.3", "internal", "office", "10.0.0.0/8"),
        classification("10.9.0.1", "external", "guests", "10.9.0.0/16"),
        classification("192.0.2.1", "external", "", ""),
        classification("fd00::1", "internal", "office", "fd00::/8"),
    ];
    for want in expected {
        let response = read_response(&mut connection);
        assert_eq!(response.status_line, "HTTP/1.1 200 OK");
        assert_eq!(response.json(), want);
    }
}

#[test]
fn get_sent_bytewise() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    for byte in get("10.0.0.9").bytes() {
        send(&mut connection, &[byte]);
    }
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        response.json(),
        classification("10.0.0.9", "internal", "office", "10.0.0.0/8")
    );
}

#[test]
fn errors_keep_the_connection_open() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let requests = [
        get("not-an-ip"),
        "GET /v1/is-internal HTTP/1.1\r\nHost: test\r\n\r\n".to_owned(),
        get("10.0.0.1&ip=10.0.0.2"),
        get("10.0.0.1"),
    ]
    .concat();
    send(&mut connection, requests.as_bytes());

    let invalid = read_response(&mut connection);
    assert_eq!(invalid.status_line, "HTTP/1.1 400 Bad Request");
    let body = invalid.json();
    assert_eq!(body["verdict"], "invalid");
    assert!(
        body["error"].as_str().unwrap().contains("\"not-an-ip\""),
        "{body}"
    );
    let missing = read_response(&mut connection);
    assert_eq!(missing.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        missing.json(),
        json!({"error": "missing query parameter \"ip\"; call /v1/is-internal?ip=ADDRESS"})
    );
    let repeated = read_response(&mut connection);
    assert_eq!(repeated.status_line, "HTTP/1.1 400 Bad Request");
    assert!(repeated.json()["error"]
        .as_str()
        .unwrap()
        .contains("given 2 times"));
    let fine = read_response(&mut connection);
    assert_eq!(fine.json()["verdict"], "internal");
}

#[test]
fn connection_close_is_honoured() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let request =
        "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    send(&mut connection, request.as_bytes());
    let response = read_response(&mut connection);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.json()["verdict"], "internal");
    assert_closed(&mut connection);
}

#[test]
fn get_then_half_close() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    send(&mut connection, get("10.0.0.1").as_bytes());
    connection.get_ref().shutdown(Shutdown::Write).unwrap();
    let response = read_response(&mut connection);
    assert_eq!(response.json()["verdict"], "internal");
    assert_closed(&mut connection);
}

#[test]
fn other_request_switches_to_router() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let body = r#"{"ips":["10.9.1.1"]}"#;
    let requests = [
        get("10.0.0.1"),
        format!(
            "POST /v1/is-internal HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        "GET /v1/table HTTP/1.1\r\nHost: test\r\n\r\n".to_owned(),
        get("10.0.0.2"),
        "GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n".to_owned(),
    ]
    .concat();
    send(&mut connection, requests.as_bytes());

    assert_eq!(
        read_response(&mut connection).json(),
        classification("10.0.0.1", "internal", "office", "10.0.0.0/8")
    );
    assert_eq!(
        read_response(&mut connection).json(),
        json!({"results": [classification("10.9.1.1", "external", "guests", "10.9.0.0/16")], "generation": 1})
    );
    let table = read_response(&mut connection).json();
    assert_eq!(table["generation"], 1, "{table}");
    assert_eq!(
        read_response(&mut connection).json(),
        classification("10.0.0.2", "internal", "office", "10.0.0.0/8")
    );
    let missing = read_response(&mut connection);
    assert_eq!(missing.status_line, "HTTP/1.1 404 Not Found");
}

#[test]
fn responses_match_router() {
    let fixture = start();
    for ip in [
        "10.1.2.3",
        "10.9.9.9",
        "198.51.100.1",
        "%3A%3Affff%3A10.0.0.1",
        "nope",
        "",
    ] {
        let request = get(ip);
        let mut fast = connect(&fixture.server);
        send(&mut fast, request.as_bytes());
        let fast = read_response(&mut fast);

        // After a request of another kind, hyper serves the connection and
        // the axum route handles the same GET.
        let mut full = connect(&fixture.server);
        send(&mut full, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
        assert_eq!(read_response(&mut full).json(), json!({"status": "ok"}));
        send(&mut full, request.as_bytes());
        let full = read_response(&mut full);

        assert_eq!(fast.status_line, full.status_line, "{ip}");
        assert_eq!(fast.headers, full.headers, "{ip}");
        assert_eq!(
            String::from_utf8_lossy(&fast.body),
            String::from_utf8_lossy(&full.body),
            "{ip}"
        );
        let date = fast.date.expect("date header");
        assert!(
            httpdate::parse_http_date(&date).is_ok(),
            "unparsable date {date:?}"
        );
    }
}

#[test]
fn http10_and_get_with_body() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.0\r\n\r\n",
    );
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.0 200 OK");
    assert_eq!(response.json()["verdict"], "internal");

    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc",
    );
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(response.json()["verdict"], "internal");

    // A longer declared body is not read, and a client that waits for
    // `100 Continue` gets the response at once.
    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
    );
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed(&mut connection);

    // An HTTP/1.0 POST has no body without a Content-Length.
    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"POST /v1/is-internal HTTP/1.0\r\nContent-Type: application/json\r\n\r\n",
    );
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.0 400 Bad Request");
    let message = response.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("the body is empty (an HTTP/1.0 request needs a Content-Length"),
        "{message}"
    );

    // A body of 64 KiB is dropped and the connection stays open. A longer
    // one closes it, with `Connection: close` on the response.
    for (size, kept) in [(64 * 1024, true), (64 * 1024 + 1, false)] {
        let mut connection = connect(&fixture.server);
        let mut bytes = format!(
            "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n"
        )
        .into_bytes();
        bytes.resize(bytes.len() + size, b'x');
        bytes.extend_from_slice(get("10.0.0.2").as_bytes());
        send(&mut connection, &bytes);
        let response = read_response(&mut connection);
        assert_eq!(response.json()["ip"], "10.0.0.1", "{size}");
        if kept {
            assert_eq!(response.header("connection"), None, "{size}");
            assert_eq!(read_response(&mut connection).json()["ip"], "10.0.0.2");
        } else {
            assert_eq!(response.header("connection"), Some("close"), "{size}");
            assert_closed(&mut connection);
        }
    }
}

#[test]
fn host_header_once_and_valid() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let requests = [
        "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\n\r\n",
        "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a, b\r\n\r\n",
        "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: a:1:2\r\n\r\n",
    ]
    .concat();
    send(&mut connection, requests.as_bytes());
    for problem in [
        "needs a Host header, and this one has none;",
        "may carry one Host header, and this one has 2;",
        "the Host header \"a b\" is not a host with an optional port;",
        "needs a Host header, and this one has none;",
        "the Host header \"a, b\" is not",
        "the Host header \"a:1:2\" is not",
    ] {
        let response = read_response(&mut connection);
        assert_eq!(response.status_line, "HTTP/1.1 400 Bad Request");
        let message = response.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(problem), "{message}");
    }
    // The connection stays open for the next request, and these hosts pass.
    for host in ["", "[::1]:50051", "ipclass.example:8080"] {
        let request = format!("GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: {host}\r\n\r\n");
        send(&mut connection, request.as_bytes());
        assert_eq!(
            read_response(&mut connection).json()["verdict"],
            "internal",
            "{host:?}"
        );
    }

    // HTTP/1.0 needs no Host, but may carry only one.
    let mut connection = connect(&fixture.server);
    send(&mut connection, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(
        read_response(&mut connection).status_line,
        "HTTP/1.0 200 OK"
    );
    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    assert_eq!(
        read_response(&mut connection).status_line,
        "HTTP/1.0 400 Bad Request"
    );
}

#[test]
fn unknown_transfer_coding_gets_501() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let body = "{\"ips\": [\"10.0.0.1\"]}";
    let request = format!(
        "POST /v1/is-internal HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    send(&mut connection, request.as_bytes());
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 501 Not Implemented");
    assert_eq!(response.header("connection"), Some("close"));
    let message = response.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("transfer coding \"gzip\" is not supported; "),
        "{message}"
    );
    assert_closed(&mut connection);

    // Chunked alone is served.
    let mut connection = connect(&fixture.server);
    let request = request.replace("gzip, chunked", "Chunked");
    send(&mut connection, request.as_bytes());
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
}

#[test]
fn connect_error_quotes_its_target() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    send(
        &mut connection,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 404 Not Found");
    let message = response.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("no route for CONNECT example.com:443; "),
        "{message}"
    );
}

/// Sends `head` on a new connection and returns the one response, after
/// checking that the server closes the connection after it.
fn answer_to_malformed(server: &Server, head: &[u8]) -> Response {
    let mut connection = connect(server);
    send(&mut connection, head);
    let response = read_response(&mut connection);
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert_closed(&mut connection);
    response
}

#[test]
fn malformed_heads_get_json_naming_the_line() {
    let fixture = start();
    for (head, status, quoted) in [
        (
            &b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: test\r\nno colon here\r\n\r\n"[..],
            "400 Bad Request",
            r#"line 3 "no colon here": invalid header name; write each header field as `Name: value`"#,
        ),
        (
            b"POST /v1/is-internal HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
            "400 Bad Request",
            r#"line 3 "Bad Name: 1": invalid header name"#,
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Tag: a\x01b\r\n\r\n",
            "400 Bad Request",
            "invalid header value; header values may not contain control characters",
        ),
        (
            b"G@T / HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            r#"line 1 "G@T / HTTP/1.1": invalid token; start the request with a line such as"#,
        ),
        (
            b"GET / http/1.1\r\nHost: x\r\n\r\n",
            "400 Bad Request",
            r#"line 1 "GET / http/1.1": invalid HTTP version"#,
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00",
            "400 Bad Request",
            "this is a TLS handshake, and this listener serves HTTP and gRPC without TLS",
        ),
        (
            b"POST /v1/is-internal HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "400 Bad Request",
            r#"Content-Length "-1" is not a decimal length"#,
        ),
        (
            b"POST /v1/is-internal HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "400 Bad Request",
            r#"Content-Length "3" differs from the Content-Length before it"#,
        ),
        (
            b"GET /v1/is-internal?ip=<1> HTTP/1.1\r\nHost: x\r\n\r\n",
            "400 Bad Request",
            r#"invalid request target "/v1/is-internal?ip=<1>"; start it with /"#,
        ),
        (
            b"GET :v1/table HTTP/1.1\r\nHost: x\r\n\r\n",
            "400 Bad Request",
            r#"invalid request target ":v1/table""#,
        ),
    ] {
        let response = answer_to_malformed(&fixture.server, head);
        assert_eq!(response.status_line, format!("HTTP/1.1 {status}"));
        assert_eq!(response.header("content-type"), Some("application/json"));
        let message = response.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(quoted), "{message}");
    }

    // Hyper accepts at most 100 header fields, and every path rejects more
    // with the same response.
    for start in [
        "GET /v1/is-internal?ip=10.0.0.1",
        "GET /healthz",
        "POST /v1/is-internal",
    ] {
        let mut head = format!("{start} HTTP/1.1\r\nHost: x\r\n");
        for field in 0..100 {
            head.push_str(&format!("X-Field-{field}: 1\r\n"));
        }
        head.push_str("\r\n");
        let response = answer_to_malformed(&fixture.server, head.as_bytes());
        assert_eq!(
            response.status_line,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(
            response.json()["error"],
            "the request head has more than 100 header fields; send fewer"
        );
    }

    // A response to HEAD has no body, because its content-length may not
    // describe one.
    let response = answer_to_malformed(&fixture.server, b"HEAD /x HTTP/1.1\r\nA B\r\n\r\n");
    assert_eq!(response.status_line, "HTTP/1.1 400 Bad Request");
    assert!(response.body.is_empty(), "{response:?}");

    // 100 header fields and a host are still served.
    let mut head = "GET /healthz HTTP/1.1\r\n".to_owned();
    for field in 0..99 {
        head.push_str(&format!("X-Field-{field}: 1\r\n"));
    }
    head.push_str("Host: x\r\n\r\n");
    let mut connection = connect(&fixture.server);
    send(&mut connection, head.as_bytes());
    assert_eq!(
        read_response(&mut connection).status_line,
        "HTTP/1.1 200 OK"
    );
}

#[test]
fn fragment_is_ignored() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    send(&mut connection, get("10.0.0.1#&ip=192.0.2.1").as_bytes());
    let response = read_response(&mut connection);
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        response.json(),
        classification("10.0.0.1", "internal", "office", "10.0.0.0/8")
    );
}

#[test]
fn http2_preface_after_get_is_rejected() {
    let fixture = start();
    let mut connection = connect(&fixture.server);
    let mut bytes = get("10.0.0.1").into_bytes();
    bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // An empty SETTINGS frame.
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    send(&mut connection, &bytes);
    assert_eq!(read_response(&mut connection).json()["verdict"], "internal");

    // The connection stays HTTP/1.1: hyper rejects the preface as a
    // request and closes, and sends no HTTP/2 SETTINGS frame.
    let mut rest = Vec::new();
    connection
        .read_to_end(&mut rest)
        .expect("server closes the connection");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 "),
        "bytes after the GET answer: {rest:?}"
    );
}

#[test]
fn slow_heads_closed_at_header_timeout() {
    let dir = TempDir::new("http1-timeout");
    let path = dir.write("ipclass.toml", CONFIG);
    let server = Server::start(&path, &["--header-read-timeout", "1s"]);

    let mut lean = connect(&server);
    send(
        &mut lean,
        b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: x",
    );
    let mut other = connect(&server);
    send(&mut other, b"GET /healthz HTTP/1.1\r\nHost: x");
    let mut idle = connect(&server);
    let mut after_answer = connect(&server);
    send(&mut after_answer, get("10.0.0.1").as_bytes());
    assert_eq!(
        read_response(&mut after_answer).json()["verdict"],
        "internal"
    );
    let opened = std::time::Instant::now();

    for (name, connection) in [
        ("lean", &mut lean),
        ("other route", &mut other),
        ("idle", &mut idle),
        ("after an answer", &mut after_answer),
    ] {
        let mut rest = Vec::new();
        connection
            .read_to_end(&mut rest)
            .unwrap_or_else(|error| panic!("{name}: not closed within the read timeout: {error}"));
        assert!(rest.is_empty(), "{name}: {rest:?}");
    }
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed after {elapsed:?}"
    );
}
