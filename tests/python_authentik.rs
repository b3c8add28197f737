//! Runs the Authentik expression policy in `examples/authentik` against the
//! real binary through the Python harness in `tests/python`.

mod pytest_runner;

#[test]
fn authentik_policy_harness_passes() {
    pytest_runner::run_pytest("tests/python/test_authentik_policy.py");
}
