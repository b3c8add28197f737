//! The limits that `serve` puts on connections, through real sockets: how
//! many are served at once, how long a request body may pause, and how long
//! a connection may stay idle.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, TempDir};

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

const REQUEST: &[u8] = b"GET /v1/is-internal?ip=10.1.2.3 HTTP/1.1\r\nHost: ipclass\r\n\r\n";

/// Starts a server on [`CONFIG`] with `extra` arguments, in a temporary
/// folder named after `name`.
fn start(name: &str, extra: &[&str]) -> (TempDir, Server) {
    let dir = TempDir::new(name);
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start(&config, extra);
    (dir, server)
}

/// Sends one GET on `stream` and returns the start of the response.
fn get(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(REQUEST)?;
    let mut buffer = [0u8; 512];
    let read = stream.read(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

#[test]
fn limit_queues_clients_until_one_closes() {
    let (_dir, mut server) = start("limits-connections", &["--max-connections", "2"]);
    let address = server.address;

    let mut first = TcpStream::connect(address).unwrap();
    let mut second = TcpStream::connect(address).unwrap();
    assert!(get(&mut first).unwrap().starts_with("HTTP/1.1 200"));
    assert!(get(&mut second).unwrap().starts_with("HTTP/1.1 200"));
    server.wait_for_log(|line| {
        line["message"].as_str().is_some_and(|message| {
            message.starts_with("connection limit reached") && line["max_connections"] == 2
        })
    });

    // The kernel completes the handshake, but the server reads nothing
    // from a third client while two are open.
    let mut third = TcpStream::connect(address).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let waiting = get(&mut third).unwrap_err();
    assert!(
        matches!(waiting.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waiting}"
    );

    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 512];
    let read = third.read(&mut buffer).unwrap();
    let response = String::from_utf8_lossy(&buffer[..read]);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(get(&mut second).unwrap().starts_with("HTTP/1.1 200"));
}

/// Reads from `stream` until the server closes it, and returns all it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("the server closes the connection within 20 s");
    received
}

#[test]
fn stalled_body_gets_408_and_close() {
    let (_dir, server) = start("limits-stalled-body", &["--body-read-timeout", "1s"]);
    let address = server.address;

    let mut stream = TcpStream::connect(address).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /v1/is-internal HTTP/1.1\r\nHost: ipclass\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"ips\": [")
        .unwrap();
    let received = read_to_close(&mut stream);
    let waited = started.elapsed();
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    let body: serde_json::Value =
        serde_json::from_str(&response[response.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        body["error"],
        "no request body data arrived for 1s; send the body without pauses that long, or raise --body-read-timeout"
    );
    assert!(
        waited >= Duration::from_secs(1),
        "answered after {waited:?}"
    );
}

#[test]
fn short_body_pauses_are_served() {
    let (_dir, server) = start("limits-slow-body", &["--body-read-timeout", "1s"]);
    let address = server.address;

    let body = br#"{"ips": ["10.1.2.3", "192.0.2.1"]}"#;
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /v1/is-internal HTTP/1.1\r\nHost: ipclass\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Three pieces, each well within the timeout, and 1.2 s in all.
    for piece in body.chunks(body.len().div_ceil(3)) {
        std::thread::sleep(Duration::from_millis(400));
        stream.write_all(piece).unwrap();
    }
    let received = read_to_close(&mut stream);
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let answer: serde_json::Value =
        serde_json::from_str(&response[response.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(answer["results"][0]["verdict"], "internal");
    assert_eq!(answer["results"][1]["verdict"], "external");
}

#[test]
fn oversize_body_rejected_before_continue() {
    let (_dir, server) = start("limits-expect", &["--max-batch-size", "10"]);
    let address = server.address;

    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(b"POST /v1/is-internal HTTP/1.1\r\nHost: ipclass\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 512];
    let read = stream.read(&mut buffer).unwrap();
    let response = String::from_utf8_lossy(&buffer[..read]);
    // 10 addresses of at most 128 bytes, 8 bytes of JSON each, and 4096.
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(
        response.ends_with(r#"{"error":"request body exceeds 5456 bytes; split the batch"}"#),
        "{response}"
    );
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Frame types of `received`, read as a sequence of HTTP/2 frames.
fn frame_types(mut received: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while received.len() >= 9 {
        let length = usize::from(received[0]) << 16
            | usize::from(received[1]) << 8
            | usize::from(received[2]);
        types.push(received[3]);
        received = &received[(9 + length).min(received.len())..];
    }
    types
}

#[test]
fn idle_http2_connection_gets_goaway() {
    const GOAWAY: u8 = 7;
    let (_dir, server) = start("limits-idle", &["--idle-timeout", "1s"]);
    let address = server.address;

    // A client that opens HTTP/2, then neither sends a request nor
    // acknowledges the server's GOAWAY.
    let mut stream = TcpStream::connect(address).unwrap();
    let started = Instant::now();
    stream.write_all(H2_PREFACE).unwrap();
    let received = read_to_close(&mut stream);
    let waited = started.elapsed();
    assert!(frame_types(&received).contains(&GOAWAY), "{received:?}");
    assert!(waited >= Duration::from_secs(1), "closed after {waited:?}");
}

#[tokio::test]
async fn open_watch_stream_keeps_its_connection() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (_dir, server) = start("limits-watch", &["--idle-timeout", "1s"]);
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, 1, "SERVING");
    // Three idle timeouts pass while the stream is open; the server must
    // neither end the stream nor close its connection.
    let next = tokio::time::timeout(Duration::from_secs(3), watch.message()).await;
    assert!(next.is_err(), "the stream ended: {next:?}");
}

#[tokio::test]
async fn stalled_grpc_body_gets_deadline_exceeded() {
    let (_dir, server) = start("limits-grpc-body", &["--body-read-timeout", "1s"]);

    // A message header that announces 100 bytes, then 4 of them, and the
    // stream left open.
    let partial = b"\0\0\0\0\x64\x0a\x04\x0a\x01".to_vec();
    let path = "/ipclass.v1.IpClassifier/IsInternalPacked";
    let (code, message) = common::grpc_raw_body(&server, path, partial, false).await;
    assert_eq!(code, "4", "DEADLINE_EXCEEDED");
    assert!(
        message.starts_with("no%20request%20body%20data%20arrived%20for%201s"),
        "{message}"
    );
}

#[test]
fn silent_metrics_client_is_closed() {
    let extra = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--header-read-timeout",
        "1s",
    ];
    let (_dir, mut server) = start("limits-metrics-silent", &extra);
    let serving = server.wait_for_log(|line| line["message"] == "serving metrics");
    let address = serving["address"].as_str().unwrap().to_owned();

    let mut stream = TcpStream::connect(address).unwrap();
    let started = Instant::now();
    let received = read_to_close(&mut stream);
    let waited = started.elapsed();
    assert!(received.is_empty(), "{received:?}");
    assert!(waited >= Duration::from_secs(1), "closed after {waited:?}");
}

#[test]
fn partial_http2_preface_is_closed() {
    let extra = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--header-read-timeout",
        "1s",
    ];
    let (_dir, mut server) = start("limits-preface", &extra);
    let serving = server.wait_for_log(|line| line["message"] == "serving metrics");
    let metrics: std::net::SocketAddr = serving["address"].as_str().unwrap().parse().unwrap();

    // Hyper alone waits for the rest of a preface until the idle timeout.
    for address in [server.address, metrics] {
        let whole_magic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let half_settings = format!("{whole_magic}\0\0\x06\x04\0\0");
        for part in [
            "P",
            "PRI * HTTP/2.0\r\n",
            whole_magic,
            half_settings.as_str(),
        ] {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(part.as_bytes()).unwrap();
            let started = Instant::now();
            let received = read_to_close(&mut stream);
            let waited = started.elapsed();
            assert!(received.is_empty(), "{address} {part:?}: {received:?}");
            assert!(
                waited < Duration::from_secs(10),
                "{address} {part:?}: {waited:?}"
            );
        }
    }
}

#[tokio::test]
async fn grpc_timeout_ends_stalled_call() {
    let (_dir, server) = start("limits-grpc-timeout", &[]);
    let partial = b"\0\0\0\0\x64\x0a\x04\x0a\x01".to_vec();
    let path = "/ipclass.v1.IpClassifier/IsInternalPacked";
    let headers = [("grpc-timeout", "300m")];
    let started = Instant::now();
    let (code, message) = common::grpc_raw_request(&server, path, &headers, partial, false).await;
    assert_eq!(code, "4", "DEADLINE_EXCEEDED");
    assert!(message.contains("grpc-timeout%20of%20300ms"), "{message}");
    // The body read timeout is 30 s here.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unsupported_compression_names_gzip() {
    let (_dir, server) = start("limits-grpc-deflate", &[]);
    let path = "/ipclass.v1.IpClassifier/GetTableInfo";
    let headers = [("grpc-encoding", "deflate")];
    let (code, message) =
        common::grpc_raw_request(&server, path, &headers, vec![1, 0, 0, 0, 0], true).await;
    assert_eq!(code, "12", "UNIMPLEMENTED: {message}");
    assert!(message.contains("deflate"), "{message}");
    assert!(
        message.ends_with("%3B%20send%20gzip%20or%20uncompressed%20messages"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_grpc_timeout_is_named() {
    let (_dir, server) = start("limits-grpc-timeout-malformed", &[]);
    let path = "/ipclass.v1.IpClassifier/GetTableInfo";
    for value in ["abc", "1", "123456789S", "-1S", "5s"] {
        let headers = [("grpc-timeout", value)];
        let (code, message) =
            common::grpc_raw_request(&server, path, &headers, vec![0, 0, 0, 0, 0], true).await;
        assert_eq!(code, "3", "INVALID_ARGUMENT for {value}");
        let expected = format!("malformed%20grpc-timeout%20%22{}%22", value);
        assert!(message.starts_with(&expected), "{value}: {message}");
    }
    let headers = [("grpc-timeout", "5S")];
    let (code, _) =
        common::grpc_raw_request(&server, path, &headers, vec![0, 0, 0, 0, 0], true).await;
    assert_eq!(code, "0");
}

#[tokio::test]
async fn unknown_grpc_methods_are_named() {
    let (_dir, server) = start("limits-grpc-unknown", &[]);
    for (path, expected) in [
        (
            "/ipclass.v1.IpClassifier/IsExternal",
            "ipclass.v1.IpClassifier%20has%20no%20method%20%22IsExternal%22;",
        ),
        (
            "/grpc.health.v1.Health/List",
            "this%20server%20implements%20Check%20and%20Watch",
        ),
        (
            "/grpc.health.v1.Health/Nope",
            "grpc.health.v1.Health%20has%20no%20method%20%22Nope%22;%20its%20methods%20are%20Check%20and%20Watch",
        ),
        (
            "/grpc.reflection.v1.ServerReflection/Nope",
            "grpc.reflection.v1.ServerReflection%20has%20no%20method%20%22Nope%22;",
        ),
    ] {
        let (code, message) =
            common::grpc_raw_request(&server, path, &[], vec![0, 0, 0, 0, 0], true).await;
        assert_eq!(code, "12", "UNIMPLEMENTED for {path}");
        assert!(message.starts_with(expected), "{path}: {message}");
    }
}

#[tokio::test]
async fn grpc_call_without_post_rejected() {
    let (_dir, server) = start("limits-grpc-put", &[]);
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for method in ["PUT", "GET", "HEAD"] {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!(
                "http://{}/ipclass.v1.IpClassifier/GetTableInfo",
                server.address
            ))
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "12", "UNIMPLEMENTED for {method}");
        let expected = format!("gRPC%20calls%20use%20POST,%20and%20this%20one%20used%20{method}");
        assert_eq!(headers["grpc-message"], expected.as_str());
    }

    // Without the gRPC content type it gets 415, and a HEAD response has
    // no body.
    let request = axum::http::Request::head(format!(
        "http://{}/ipclass.v1.IpClassifier/IsInternal",
        server.address
    ))
    .body(())
    .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 415);
    let mut body = response.into_body();
    assert!(body.data().await.is_none(), "a HEAD response has no body");
}

#[test]
fn low_open_file_limit_serves_half() {
    let dir = TempDir::new("limits-nofile");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start_wrapped(&["prlimit", "--nofile=100", "--"], &config, &[]);
    let listening: serde_json::Value = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .find(|line: &serde_json::Value| line["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["max_connections"], 50);
}

#[test]
fn max_connections_over_open_files_warns() {
    let dir = TempDir::new("limits-nofile-warning");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start_wrapped(
        &["prlimit", "--nofile=100", "--"],
        &config,
        &["--max-connections", "500"],
    );
    // The warning comes before the `listening` line that start waits for.
    let warning: serde_json::Value = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .find(|line: &serde_json::Value| {
            line["message"].as_str().is_some_and(|m| {
                m.starts_with("--max-connections is above what the open-file limit")
            })
        })
        .expect("a warning about the open-file limit");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["max_connections"], 500);
    assert_eq!(warning["open_file_room"], 50);
}

/// Reads a number from a file under /proc/sys.
fn sysctl(path: &str) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {path}: {error}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn listen_backlog_is_4096() {
    let (_dir, server) = start("limits-backlog", &[]);
    let port = server.address.port();
    let output = std::process::Command::new("ss")
        .args(["-tlnH"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("run ss");
    let listeners = String::from_utf8_lossy(&output.stdout);
    assert_eq!(listeners.lines().count(), 1, "{listeners}");
    // A listening socket shows its queue size in the Send-Q column.
    let backlog: u32 = listeners
        .split_whitespace()
        .nth(2)
        .and_then(|column| column.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {listeners}"));
    let expected = sysctl("/proc/sys/net/core/somaxconn").min(4096);
    assert_eq!(backlog, expected, "{listeners}");
}

#[test]
fn accepted_connection_has_tcp_keepalive() {
    let (_dir, server) = start("limits-keepalive", &[]);
    let address = server.address;
    let port = address.port();

    let mut stream = TcpStream::connect(address).unwrap();
    // The first response proves that the server accepted the connection.
    assert!(get(&mut stream).unwrap().starts_with("HTTP/1.1 200"));
    let output = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("run ss");
    let sockets = String::from_utf8_lossy(&output.stdout);
    assert_eq!(sockets.lines().count(), 1, "{sockets}");
    assert!(sockets.contains("timer:(keepalive,"), "{sockets}");
}

#[test]
fn metrics_listener_serves_a_quarter() {
    let extra = ["--max-connections", "8", "--metrics-listen", "127.0.0.1:0"];
    let (_dir, mut server) = start("limits-metrics-share", &extra);
    let serving = server.wait_for_log(|line| line["message"] == "serving metrics");
    let address = serving["address"].as_str().unwrap().to_owned();

    // Two open connections use up the metrics listener's 2 slots.
    let request = b"GET /metrics HTTP/1.1\r\nHost: ipclass\r\n\r\n";
    let mut open_connections = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.write_all(request).unwrap();
        let mut buffer = [0u8; 64];
        let read = stream.read(&mut buffer).unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        open_connections.push(stream);
    }
    server.wait_for_log(|line| {
        line["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("metrics connection limit reached"))
            && line["max_connections"] == 2
    });
    let mut third = TcpStream::connect(&address).unwrap();
    third.write_all(request).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let waiting = third.read(&mut buffer).unwrap_err();
    assert!(
        matches!(waiting.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waiting}"
    );
}

#[tokio::test]
async fn client_that_never_reads_is_closed() {
    let (_dir, server) = start("limits-no-read", &["--idle-timeout", "1s"]);

    // An HTTP/2 client that grants no window, so no response data can reach
    // it, sends one complete call.
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = axum::http::Request::post(format!(
        "http://{}/ipclass.v1.IpClassifier/GetTableInfo",
        server.address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("the server closes the connection within 20 s")
        .unwrap()
        .ok();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}"
    );
}

#[test]
fn idle_below_header_timeout_warns() {
    let extra = ["--idle-timeout", "5s", "--header-read-timeout", "30s"];
    let (_dir, mut server) = start("limits-idle-warning", &extra);
    let warning = server.wait_for_log(|line| {
        line["message"].as_str().is_some_and(|message| {
            message.starts_with("--idle-timeout is below --header-read-timeout")
        })
    });
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["idle_seconds"], 5.0);
    assert_eq!(warning["header_read_seconds"], 30.0);
}

/// Returns a JSON batch of `count` copies of one address.
fn batch_of(count: usize) -> String {
    format!("{{\"ips\":[{}]}}", vec!["\"10.1.2.3\""; count].join(","))
}

/// Posts `body` to `/v1/is-internal` and returns the status and the body.
fn post_batch(server: &Server, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /v1/is-internal HTTP/1.1\r\nHost: ipclass\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let reply = String::from_utf8(read_to_close(&mut stream)).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn unread_responses_hold_response_memory() {
    let (_dir, server) = start("limits-responses", &["--response-memory", "8MiB"]);
    // A response of 65,536 results is about 6 MB. Its client reads nothing,
    // and its receive buffer stays small, so most of the response waits in
    // the server.
    let body = batch_of(65_536);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.address.into()).unwrap();
    let mut unread = TcpStream::from(socket);
    let head = format!(
        "POST /v1/is-internal HTTP/1.1\r\nHost: ipclass\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    unread.write_all(head.as_bytes()).unwrap();
    unread.write_all(body.as_bytes()).unwrap();

    // The response has begun, so it keeps its share of the budget.
    let mut status_line = [0u8; 12];
    unread.read_exact(&mut status_line).unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");

    // A second response of the same size does not fit beside it.
    let (status, message) = post_batch(&server, &body);
    assert_eq!(status, 503, "{}", &message[..message.len().min(300)]);
    assert!(
        message.contains(
            "responses that clients have not read yet hold the 8 MiB of --response-memory"
        ),
        "{message}"
    );
    // Small responses take no part in the budget.
    let (status, _) = post_batch(&server, &batch_of(100));
    assert_eq!(status, 200);

    // Once the first client goes, its response leaves the budget.
    drop(unread);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, answer) = loop {
        let (status, answer) = post_batch(&server, &body);
        if status == 200 || Instant::now() > deadline {
            break (status, answer);
        }
    };
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 65_536);
}

#[tokio::test]
async fn grpc_response_over_memory_refused() {
    use ipclass::proto::ip_classifier_client::IpClassifierClient;
    use ipclass::proto::IsInternalRequest;

    let (_dir, server) = start("limits-grpc-responses", &["--response-memory", "1MiB"]);
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = IpClassifierClient::new(channel);
    let ips = |count: usize| IsInternalRequest {
        ips: vec!["10.1.2.3".to_owned(); count],
    };

    // About 40 bytes a result: 20,000 results fit in 1 MiB and go out in
    // pieces.
    let answer = client.is_internal(ips(20_000)).await.unwrap().into_inner();
    assert_eq!(answer.results.len(), 20_000);
    assert!(answer.results.iter().all(|result| result.internal));

    let status = client.is_internal(ips(60_000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("is larger than the 1 MiB of --response-memory; raise --response-memory"),
        "{}",
        status.message()
    );

    // The refused call left nothing reserved.
    let answer = client.is_internal(ips(20_000)).await.unwrap().into_inner();
    assert_eq!(answer.results.len(), 20_000);

    let scrape = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (code, count) in [("OK", 2), ("RESOURCE_EXHAUSTED", 1)] {
        let line =
            format!("ipclass_requests_total{{api=\"grpc_is_internal\",code=\"{code}\"}} {count}");
        assert!(
            scrape.lines().any(|sample| sample == line),
            "no {line} in:\n{scrape}"
        );
    }
}
