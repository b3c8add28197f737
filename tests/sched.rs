//! The scheduler time slice of the runtime threads, by default and with
//! `serve --sched-slice`, read back from `/proc`.

#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::{Server, TempDir};

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

/// Returns `field` of `/proc/PID/task/*/sched`, such as `se.slice` or
/// `policy`, for each runtime thread of `pid`.
fn runtime_field(pid: u32, field: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("tokio-r") {
            continue;
        }
        let sched = fs::read_to_string(task.join("sched")).unwrap();
        let value: Option<u64> = sched
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches([' ', ':']).trim().parse().ok());
        values.extend(value);
    }
    values
}

/// Returns the `se.slice` of each runtime thread of `pid`, in nanoseconds.
fn runtime_slices(pid: u32) -> Vec<u64> {
    runtime_field(pid, "se.slice")
}

/// Reports whether this kernel shows the EEVDF slice in `/proc`.
fn kernel_shows_slice() -> bool {
    let own = fs::read_to_string("/proc/self/sched").unwrap_or_default();
    if !own.contains("se.slice") {
        eprintln!("skipped: this kernel shows no EEVDF slice in /proc");
        return false;
    }
    true
}

#[test]
fn sched_slice_reaches_runtime_threads() {
    if !kernel_shows_slice() {
        return;
    }
    let dir = TempDir::new("sched-slice");
    let config = dir.write("c.toml", CONFIG);
    let cases: [(&[&str], u64); 2] = [(&[], 100_000), (&["--sched-slice", "300us"], 300_000)];
    for (flags, expected) in cases {
        let server = Server::start(&config, &[flags, &["--workers", "2"]].concat());
        let slices = runtime_slices(server.pid());
        assert!(
            slices.len() >= 2,
            "{flags:?}: runtime threads' slices {slices:?}"
        );
        assert!(
            slices.iter().all(|&slice| slice == expected),
            "{flags:?}: {slices:?}"
        );
    }

    let off = Server::start(&config, &["--sched-slice", "off", "--workers", "2"]);
    let slices = runtime_slices(off.pid());
    assert!(!slices.is_empty(), "no runtime thread shows a slice");
    assert!(!slices.contains(&100_000), "{slices:?}");
}

#[test]
fn reload_thread_runs_with_kernel_slice() {
    if !kernel_shows_slice() {
        return;
    }
    let dir = TempDir::new("sched-reload");
    let config = dir.write("c.toml", CONFIG);
    let mut server = Server::start(&config, &["--workers", "2"]);
    server.signal("HUP");
    server.wait_for_log(|line| line["message"] == "table reloaded");
    // The blocking thread that ran the reload stays for tokio's keep-alive
    // of 10 s after it.
    // Threads started from a worker, such as further blocking threads,
    // keep 100us; only the reset gives a thread the kernel's slice.
    let slices = runtime_slices(server.pid());
    let short = slices.iter().filter(|&&slice| slice == 100_000).count();
    assert!(short >= 2, "the two workers run with 100us: {slices:?}");
    assert!(
        slices.iter().any(|&slice| slice != 100_000),
        "no thread runs with the kernel's slice, so the reload thread kept 100us: {slices:?}"
    );
}

#[test]
fn policy_and_nice_are_kept() {
    if !kernel_shows_slice() {
        return;
    }
    let dir = TempDir::new("sched-policy");
    let config = dir.write("c.toml", CONFIG);
    let wrapper = ["chrt", "--batch", "0", "nice", "-n", "3"];
    let server = Server::start_wrapped(&wrapper, &config, &["--workers", "2"]);
    let pid = server.pid();
    assert_eq!(runtime_slices(pid), [100_000, 100_000]);
    // SCHED_BATCH is policy 3, and nice 3 is priority 123.
    assert_eq!(runtime_field(pid, "policy"), [3, 3]);
    assert_eq!(runtime_field(pid, "prio"), [123, 123]);
}
