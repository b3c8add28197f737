mod common;

use common::{Server, TempDir};

#[test]
fn server_answers_single_get() {
    let dir = TempDir::new("smoke");
    let config = dir.write(
        "c.toml",
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    let server = Server::start(&config, &[]);
    let output = std::process::Command::new("curl")
        .args(["-s", &server.url("/v1/is-internal?ip=10.1.2.3")])
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["verdict"], "internal");
}
