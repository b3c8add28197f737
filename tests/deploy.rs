//! Validates the files in `deploy/` offline: YAML parsing, Kubernetes schema
//! validation, `systemd-analyze verify` and hadolint, through
//! `tests/python/test_deploy.py`.

mod pytest_runner;

#[test]
fn deploy_files_pass_validators() {
    pytest_runner::run_pytest("tests/python/test_deploy.py");
}
