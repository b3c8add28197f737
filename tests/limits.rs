//! The connection limit of `serve --max-connections`, through real sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, TempDir};

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

const REQUEST: &[u8] = b"GET /v1/is-internal?ip=10.1.2.3 HTTP/1.1\r\nHost: ipclass\r\n\r\n";

/// Sends one GET on `stream` and returns the start of the response.
fn get(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(REQUEST)?;
    let mut buffer = [0u8; 512];
    let read = stream.read(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

#[test]
fn limit_queues_clients_until_one_closes() {
    let dir = TempDir::new("limits-connections");
    let config = dir.write("c.toml", CONFIG);
    let mut server = Server::start(&config, &["--max-connections", "2"]);
    let address = server.url("").trim_start_matches("http://").to_owned();

    let mut first = TcpStream::connect(&address).unwrap();
    let mut second = TcpStream::connect(&address).unwrap();
    assert!(get(&mut first).unwrap().starts_with("HTTP/1.1 200"));
    assert!(get(&mut second).unwrap().starts_with("HTTP/1.1 200"));
    server.wait_for_log(|line| {
        line["message"].as_str().is_some_and(|message| {
            message.starts_with("connection limit reached") && line["max_connections"] == 2
        })
    });

    // The kernel completes the handshake, but the server reads nothing
    // from a third client while two are open.
    let mut third = TcpStream::connect(&address).unwrap();
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
