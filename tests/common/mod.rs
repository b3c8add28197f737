//! Runs the real `ipclass` binary for integration tests: on a free port,
//! with JSON logs, and stopped when the handle is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Maximum time a test waits for a server log line.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ipclass")
}

/// A running `ipclass serve` process.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
    logs: Receiver<Value>,
    /// Every log line read so far, for failure messages.
    pub seen: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl Server {
    /// Starts `ipclass serve --config CONFIG --listen 127.0.0.1:0 EXTRA...` and
    /// waits for its "listening" log line.
    pub fn start(config: &Path, extra: &[&str]) -> Server {
        Server::launch(&[], "127.0.0.1:0", config, extra)
    }

    /// Like [`Server::start`], but listens on `listen`, such as `[::1]:0`.
    pub fn start_listening(listen: &str, config: &Path, extra: &[&str]) -> Server {
        Server::launch(&[], listen, config, extra)
    }

    /// Like [`Server::start`], but runs the server through `wrapper`, such as
    /// `["setpriv", "--reuid=65534", ...]`.
    pub fn start_wrapped(wrapper: &[&str], config: &Path, extra: &[&str]) -> Server {
        Server::launch(wrapper, "127.0.0.1:0", config, extra)
    }

    /// Runs `WRAPPER... ipclass serve --listen LISTEN --config CONFIG EXTRA...`
    /// and waits for its "listening" log line; an empty wrapper runs the
    /// binary directly.
    fn launch(wrapper: &[&str], listen: &str, config: &Path, extra: &[&str]) -> Server {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        command
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                listen,
                "--config",
            ])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn ipclass serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let logs = read_json_lines(stderr, seen.clone());
        let mut server = Server {
            child,
            address: "127.0.0.1:0".parse().unwrap(),
            logs,
            seen,
            config: config.to_owned(),
        };
        let listening = server.wait_for_log(|line| line["message"] == "listening");
        server.address = listening["address"]
            .as_str()
            .expect("listening line has an address")
            .parse()
            .expect("listening address parses");
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line that satisfies `accept` and returns it. Panics
    /// with the log so far if none arrives within [`LOG_TIMEOUT`].
    pub fn wait_for_log(&mut self, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if accept(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "expected log line did not arrive within {LOG_TIMEOUT:?}; log so far:\n{}",
                    self.seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Sends `signal` (such as "TERM" or "HUP") to the server process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json_lines(stderr: ChildStderr, seen: Arc<Mutex<Vec<String>>>) -> Receiver<Value> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            seen.lock().unwrap().push(line.clone());
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if sender.send(value).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A temporary folder removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "ipclass-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Returns the JSON result that the HTTP API gives for `ip` in a table of
/// generation 1.
pub fn classification(ip: &str, verdict: &str, set: &str, network: &str) -> Value {
    json!({
        "ip": ip,
        "verdict": verdict,
        "internal": verdict == "internal",
        "set": set,
        "network": network,
        "generation": 1,
    })
}

/// Sends `message` to the gRPC method at `path` as one length-prefixed
/// frame over a raw HTTP/2 stream, whatever its bytes, and returns the
/// `grpc-status` and `grpc-message` of the response. Real gRPC clients only
/// send messages that they encode themselves.
pub async fn grpc_raw(server: &Server, path: &str, message: &[u8]) -> (String, String) {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    grpc_raw_body(server, path, frame, true).await
}

/// Sends `body` as the request body of a gRPC call to `path`, ending the
/// stream only if `end` is true, and returns the `grpc-status` and
/// `grpc-message` of the response.
pub async fn grpc_raw_body(
    server: &Server,
    path: &str,
    body: Vec<u8>,
    end: bool,
) -> (String, String) {
    grpc_raw_request(server, path, &[], body, end).await
}

/// Like [`grpc_raw_body`], with `headers` added to the request.
pub async fn grpc_raw_request(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    end: bool,
) -> (String, String) {
    let address = server.address;
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = axum::http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    stream.send_data(body.into(), end).unwrap();
    let response = tokio::time::timeout(LOG_TIMEOUT, response)
        .await
        .expect("a response within the log timeout")
        .unwrap();

    // The status comes in the headers or, after a message, in the trailers.
    let mut headers = response.headers().clone();
    if !headers.contains_key("grpc-status") {
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            // Without this, a response over the flow-control window stalls.
            let _ = body.flow_control().release_capacity(data.unwrap().len());
        }
        headers = body.trailers().await.unwrap().expect("trailers");
    }
    let text = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (text("grpc-status"), text("grpc-message"))
}
