//! Runs a pytest file from `tests/python` against the binary under test and
//! fails with pytest's output unless every test in it passed.
//!
//! Needs `python3` with the packages in `tests/python/requirements.txt`.
//! A missing interpreter or package fails the test; nothing is skipped.

use std::process::Command;

/// Runs `python3 -m pytest -q FILE` from the repository root with
/// `IPCLASS_BIN` set to the binary Cargo built for this test run.
pub fn run_pytest(file: &str) {
    let output = Command::new("python3")
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", file])
        .env("IPCLASS_BIN", env!("CARGO_BIN_EXE_ipclass"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| {
            panic!("failed to run python3 for {file}: {error}; install Python 3.11 or newer")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("pytest {file}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");

    assert!(
        output.status.success(),
        "pytest failed with {}; install the packages with \
         `python3 -m pip install -r tests/python/requirements.txt` if one is missing\n{report}",
        output.status
    );
    let summary = stdout.lines().rev().find(|line| line.contains(" passed"));
    assert!(summary.is_some(), "pytest ran no test\n{report}");
    assert!(
        !stdout.contains(" skipped"),
        "pytest skipped tests, which must all run\n{report}"
    );
}
