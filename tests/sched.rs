//! The scheduler time slice of the runtime threads, by default and with
//! `serve --sched-slice`, read back from `/proc`.

#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::{Server, TempDir};

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

/// Returns the `se.slice` of each runtime thread of `pid`, in nanoseconds.
fn runtime_slices(pid: u32) -> Vec<u64> {
    let mut slices = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("tokio-r") {
            continue;
        }
        let sched = fs::read_to_string(task.join("sched")).unwrap();
        let slice: Option<u64> = sched
            .lines()
            .find_map(|line| line.strip_prefix("se.slice"))
            .and_then(|rest| rest.trim_start_matches([' ', ':']).trim().parse().ok());
        slices.extend(slice);
    }
    slices
}

#[test]
fn sched_slice_reaches_runtime_threads() {
    let own = fs::read_to_string("/proc/self/sched").unwrap_or_default();
    if !own.contains("se.slice") {
        eprintln!("skipped: this kernel shows no EEVDF slice in /proc");
        return;
    }
    let dir = TempDir::new("sched-slice");
    let config = dir.write("c.toml", CONFIG);
    let default = Server::start(&config, &["--workers", "2"]);
    let slices = runtime_slices(default.pid());
    assert!(slices.len() >= 2, "runtime threads' slices: {slices:?}");
    assert!(slices.iter().all(|&slice| slice == 100_000), "{slices:?}");

    let chosen = Server::start(&config, &["--sched-slice", "300us", "--workers", "2"]);
    let slices = runtime_slices(chosen.pid());
    assert!(slices.len() >= 2, "runtime threads' slices: {slices:?}");
    assert!(slices.iter().all(|&slice| slice == 300_000), "{slices:?}");

    let off = Server::start(&config, &["--sched-slice", "off", "--workers", "2"]);
    let slices = runtime_slices(off.pid());
    assert!(!slices.is_empty(), "no runtime thread shows a slice");
    assert!(!slices.contains(&100_000), "{slices:?}");
}
