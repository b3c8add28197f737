//! Runs the Python client tests (grpcio and requests) against the binary
//! that cargo built. A missing interpreter, pytest or Python module fails
//! this test, because a skipped client suite would hide a broken contract.

use std::process::Command;

#[test]
fn python_clients_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("python3")
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .args(["tests/python", "-k", "grpc_client or http_client"])
        .current_dir(root)
        .env("IPCLASS_BIN", env!("CARGO_BIN_EXE_ipclass"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3; install it with tests/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = format!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "pytest failed (run tests/setup.sh if a module is missing):\n{log}"
    );
    assert!(stdout.contains(" passed"), "pytest ran no tests:\n{log}");
    assert!(!stdout.contains("skipped"), "pytest skipped tests:\n{log}");
}
