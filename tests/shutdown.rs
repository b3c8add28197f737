//! Graceful shutdown of the real binary: health turns NOT_SERVING at once,
//! requests in flight finish, idle connections do not delay the exit, and a
//! connection that never finishes its request is cut at the grace period.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TempDir};
use ipclass::proto::ip_classifier_client::IpClassifierClient;
use ipclass::proto::GetTableInfoRequest;
use serde_json::Value;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

/// Maximum time a drained server may take to exit when no request is open.
/// It is far below the 30s grace period these tests set.
const PROMPT_EXIT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

fn start(dir: &TempDir, grace: &str) -> Server {
    let config = dir.write("ipclass.toml", CONFIG);
    Server::start(&config, &["--shutdown-grace", grace])
}

/// Reads the next message of a gRPC stream within `timeout`.
async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    timeout: Duration,
) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(timeout, stream.message())
        .await
        .expect("stream message within the timeout")
}

/// Waits until the server has accepted every connection opened so far: it
/// accepts in order, so it responds to a request on a new connection only
/// after it accepted the earlier ones. A connection still in the kernel's
/// backlog at shutdown would be refused rather than drained.
fn await_accepted(server: &Server) {
    let status = runtime().block_on(async {
        let response = reqwest::get(server.url("/healthz")).await;
        response.expect("GET /healthz").status()
    });
    assert_eq!(status, 200);
}

#[test]
fn health_watch_sees_not_serving() {
    let dir = TempDir::new("shutdown-watch");
    let mut server = start(&dir, "30s");
    // The client's connection task must keep running while the test thread
    // waits for the exit, so it can acknowledge the server's GOAWAY and PING.
    let rt = tokio::runtime::Runtime::new().expect("build a tokio runtime");
    let channel = Channel::from_shared(server.grpc_endpoint()).expect("valid endpoint");
    let channel = rt.block_on(channel.connect()).expect("connect gRPC");
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = rt
        .block_on(health.watch(request))
        .expect("Watch starts")
        .into_inner();
    let first = rt.block_on(next_message(&mut stream, Duration::from_secs(5)));
    let first = first.expect("first status").expect("stream is open");
    assert_eq!(first.status(), ServingStatus::Serving);

    server.signal("TERM");
    let sent = Instant::now();
    let update = rt.block_on(next_message(&mut stream, Duration::from_secs(2)));
    let update = update.expect("status update").expect("stream is open");
    assert_eq!(update.status(), ServingStatus::NotServing);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    let end = rt.block_on(next_message(&mut stream, PROMPT_EXIT));
    assert!(matches!(end, Ok(None)), "Watch stream ends: {end:?}");

    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("exits while Watch is open");
    assert_eq!(status.code(), Some(0));
}

/// Sends the start of an HTTP/1.1 POST whose body is `body`, leaving the
/// last `unsent` bytes of the body unsent.
fn send_partial_post(server: &Server, body: &[u8], unsent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(server.address).expect("connect");
    let head = format!(
        "POST /v1/is-internal HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        server.address,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() - unsent]).unwrap();
    stream.flush().unwrap();
    stream
}

/// Reads a response until the server closes the connection, as a draining
/// server does after its last response, and returns the status and body.
fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("the server closes the connection");
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("response has a header end");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

#[test]
fn in_flight_request_finishes() {
    let dir = TempDir::new("shutdown-in-flight");
    let mut server = start(&dir, "30s");
    let ips: Vec<String> = (0..1000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "ips": ips })).unwrap();
    let mut stream = send_partial_post(&server, &body, 10);
    await_accepted(&server);

    server.signal("TERM");
    server.wait_for_log(|line| line["message"] == "shutting down");
    stream.write_all(&body[body.len() - 10..]).unwrap();
    let (status, response) = read_response(&mut stream);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
    let response: Value = serde_json::from_slice(&response).expect("JSON body");
    let results = response["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|result| result["verdict"] == "internal"));

    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("exits after the request");
    assert_eq!(status.code(), Some(0));
}

/// A SIGHUP reload reads the config at once and then waits out
/// `--reload-debounce` before it keeps the table. Shutdown does not wait
/// for that reload.
#[test]
fn settling_reload_does_not_delay_exit() {
    let dir = TempDir::new("shutdown-settling");
    let config = dir.write("ipclass.toml", CONFIG);
    let mut server = Server::start(&config, &["--reload-debounce", "60s"]);

    server.signal("HUP");
    server.wait_for_log(|line| line["message"] == "signal received; reloading the config");
    server.signal("TERM");
    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("a settling reload does not hold the exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn delay_serves_while_not_ready() {
    let dir = TempDir::new("shutdown-delay");
    let config = dir.write("ipclass.toml", CONFIG);
    let mut server = Server::start(&config, &["--shutdown-delay", "2s"]);
    let started = Instant::now();
    server.signal("TERM");
    server.wait_for_log(|line| line["message"] == "shutting down" && line["delay_seconds"] == 2.0);

    let (ready, answer) = runtime().block_on(async {
        let client = reqwest::Client::new();
        let ready = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        let ready = (
            ready.status().as_u16(),
            ready.json::<serde_json::Value>().await.unwrap(),
        );
        let answer = client
            .get(server.url("/v1/is-internal?ip=10.1.2.3"))
            .send()
            .await
            .expect("GET /v1/is-internal");
        (ready, answer.json::<serde_json::Value>().await.unwrap())
    });
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["status"], "shutting down");
    assert_eq!(answer["verdict"], "internal", "{answer}");
    let health = runtime().block_on(async {
        let channel = Channel::from_shared(server.grpc_endpoint())
            .unwrap()
            .connect()
            .await
            .expect("connect gRPC");
        let request = HealthCheckRequest {
            service: "ipclass.v1.IpClassifier".to_owned(),
        };
        HealthClient::new(channel).check(request).await
    });
    let status = health
        .expect("health check during the delay")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);

    let status = server.wait_exit(PROMPT_EXIT).expect("exit after the delay");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "exited before the delay"
    );
}

/// Sends a GET of `path` on `stream`, reads the whole response and returns
/// its head in lower case.
fn get_head(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: ipclass\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.to_ascii_lowercase();
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    head
}

#[test]
fn delay_closes_http1_connections() {
    let dir = TempDir::new("shutdown-delay-close");
    let config = dir.write("ipclass.toml", CONFIG);
    let extra = ["--shutdown-delay", "5s", "--metrics-listen", "127.0.0.1:0"];
    let mut server = Server::start(&config, &extra);
    let serving = server.wait_for_log(|line| line["message"] == "serving metrics");
    let metrics = serving["address"].as_str().unwrap().to_owned();
    // Keep-alive connections from before the signal: the GET fast path, a
    // route that hyper serves, and the metrics listener.
    let mut connections = [
        (
            TcpStream::connect(server.address).unwrap(),
            "/v1/is-internal?ip=10.0.0.1",
        ),
        (TcpStream::connect(server.address).unwrap(), "/v1/table"),
        (TcpStream::connect(&metrics).unwrap(), "/metrics"),
    ];
    for (stream, path) in &mut connections {
        let head = get_head(stream, path);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(!head.contains("connection: close"), "{path}: {head}");
    }

    server.signal("TERM");
    server.wait_for_log(|line| line["message"] == "shutting down");
    for (stream, path) in &mut connections {
        let head = get_head(stream, path);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains("connection: close"), "{path}: {head}");
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "{path}: {read:?}");
        assert!(rest.is_empty(), "{path}: {rest:?}");
    }
}

#[test]
fn second_signal_exits_at_once() {
    let dir = TempDir::new("shutdown-second");
    let config = dir.write("ipclass.toml", CONFIG);
    let mut server = Server::start(&config, &["--shutdown-delay", "60s"]);
    server.signal("TERM");
    server.wait_for_log(|line| line["message"] == "shutting down");
    server.signal("INT");
    server.wait_for_log(|line| {
        line["message"] == "second signal received; exiting without waiting for open requests"
    });
    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("exit before the delay ends");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn silent_metrics_client_does_not_delay_exit() {
    let dir = TempDir::new("shutdown-metrics-silent");
    let config = dir.write("ipclass.toml", CONFIG);
    let extra = ["--metrics-listen", "127.0.0.1:0", "--shutdown-grace", "30s"];
    let mut server = Server::start(&config, &extra);
    let serving = server.wait_for_log(|line| line["message"] == "serving metrics");
    let address = serving["address"].as_str().unwrap().to_owned();

    // A client that connects and sends nothing. The listener accepts in
    // order, so a response on a second connection shows that it accepted the
    // first.
    let _silent = TcpStream::connect(&address).expect("connect to metrics");
    let mut scrape = TcpStream::connect(&address).expect("connect to metrics");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ipclass\r\n\r\n")
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = scrape.read(&mut buffer).unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    server.signal("TERM");
    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("a silent metrics client does not hold the server");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn idle_connections_do_not_delay_exit() {
    let dir = TempDir::new("shutdown-idle");
    let mut server = start(&dir, "30s");

    let mut idle_http = TcpStream::connect(server.address).expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.address);
    idle_http.write_all(request.as_bytes()).unwrap();
    let mut buffer = [0u8; 1024];
    let read = idle_http.read(&mut buffer).unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // A GET whose head never completes has not started, so it does not
    // hold the server either.
    let mut half_sent = TcpStream::connect(server.address).expect("connect");
    half_sent
        .write_all(b"GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: x")
        .unwrap();

    // The gRPC client's connection task must keep running while the test
    // thread waits, so it can acknowledge the server's GOAWAY and PING.
    let rt = tokio::runtime::Runtime::new().expect("build a tokio runtime");
    let mut grpc = rt
        .block_on(IpClassifierClient::connect(server.grpc_endpoint()))
        .expect("connect gRPC");
    let info = rt
        .block_on(grpc.get_table_info(GetTableInfoRequest {}))
        .expect("GetTableInfo")
        .into_inner();
    assert_eq!(info.generation, 1);

    server.signal("INT");
    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("idle connections do not hold it");
    assert_eq!(status.code(), Some(0));
    idle_http
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let after = idle_http.read(&mut buffer).unwrap_or(0);
    assert_eq!(after, 0, "the idle connection is closed");
    half_sent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let after = half_sent.read(&mut buffer).unwrap_or(0);
    assert_eq!(after, 0, "the half-sent request's connection is closed");
}

#[test]
fn stalled_request_cut_at_grace() {
    let dir = TempDir::new("shutdown-stalled");
    let mut server = start(&dir, "1s");
    let mut stalled = TcpStream::connect(server.address).expect("connect");
    let partial = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", server.address);
    stalled.write_all(partial.as_bytes()).unwrap();

    // A POST whose body never completes keeps its connection open as well.
    let body = b"{\"ips\": [\"10.0.0.1\"]}";
    let _stalled_body = send_partial_post(&server, body, 5);
    await_accepted(&server);

    server.signal("TERM");
    let sent = Instant::now();
    let status = server
        .wait_exit(PROMPT_EXIT)
        .expect("exits at the grace period");
    let elapsed = sent.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        elapsed >= Duration::from_millis(900),
        "exited after {elapsed:?}"
    );
    server.wait_for_log(|line| {
        line["message"] == "connections still open after the grace period; closing them"
    });
}

/// A log line written to a closed stderr, such as a pipe whose reader exited,
/// is dropped, and the shutdown still exits 0.
#[test]
fn closed_stderr_does_not_fail_exit() {
    let dir = TempDir::new("shutdown-closed-stderr");
    let config = dir.write("c.toml", CONFIG);
    let mut child = Command::new(common::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipclass serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        let read = stderr.read_line(&mut line).unwrap();
        assert!(read > 0, "stderr closed before the listening line");
    }
    drop(stderr);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + PROMPT_EXIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit within {PROMPT_EXIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "{exit}");
}
