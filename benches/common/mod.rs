//! Tables and addresses shared by the benchmarks.
//!
//! The peer harness folder (`PEERS_DIR`, else `../shared/peers` or
//! `../../shared/peers` beside this checkout) provides the homelab list, the
//! query mix and the generator of synthetic tables. Real routed prefixes
//! come from `$PEERS_STATE/prefix-data` when `real_prefixes.sh` has written
//! them. A benchmark whose input is missing prints why and is skipped.

#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use ip_network::IpNetwork;
use ipclass::config;
use ipclass::table::TableSpec;

/// Finds the peer harness folder.
pub fn peers_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PEERS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../shared/peers", "../../shared/peers"]
        .iter()
        .map(|relative| manifest.join(relative))
        .find(|dir| dir.join("data/homelab.txt").is_file())
}

fn peers_state() -> PathBuf {
    match std::env::var_os("PEERS_STATE") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("ipclass-peers"),
    }
}

/// Reads list files into one spec: every file becomes an internal set.
pub fn spec_from_lists(lists: &[&Path]) -> TableSpec {
    let mut text = String::new();
    for (index, list) in lists.iter().enumerate() {
        text.push_str(&format!(
            "[sets.list{index}]\ninternal = true\nfiles = [{:?}]\n",
            list.display().to_string()
        ));
    }
    let loaded = config::parse(&text, Path::new("bench.toml"), &mut |path| {
        fs::read_to_string(path)
    })
    .unwrap_or_else(|errors| panic!("benchmark lists must be valid: {errors}"));
    loaded.spec
}

/// Returns the path of the peers' homelab list.
pub fn homelab_list() -> Option<PathBuf> {
    let Some(peers) = peers_dir() else {
        eprintln!("skipping homelab tables: peer harness not found; set PEERS_DIR");
        return None;
    };
    Some(peers.join("data/homelab.txt"))
}

/// Writes a synthetic list of `ipv4` + `ipv6` prefixes with the peers'
/// generator, once into the target folder, and reuses it in later runs.
pub fn generated_list(ipv4: usize, ipv6: usize) -> Option<PathBuf> {
    let Some(peers) = peers_dir() else {
        eprintln!("skipping generated tables: peer harness not found; set PEERS_DIR");
        return None;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-tables");
    let out = dir.join(format!("large-{ipv4}-{ipv6}.txt"));
    if out.is_file() {
        return Some(out);
    }
    fs::create_dir_all(&dir).expect("create the benchmark table folder");
    let status = Command::new("python3")
        .arg(peers.join("gen_large.py"))
        .args([
            "--v4",
            &ipv4.to_string(),
            "--v6",
            &ipv6.to_string(),
            "--out",
        ])
        .arg(&out)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status();
    match status {
        Ok(status) if status.success() => Some(out),
        other => {
            eprintln!("skipping generated table {ipv4}+{ipv6}: gen_large.py failed: {other:?}");
            None
        }
    }
}

/// Real routed prefixes written by `real_prefixes.sh`, as (IPv4, IPv6) lists.
pub fn real_lists() -> Option<(PathBuf, PathBuf)> {
    let dir = peers_state().join("prefix-data");
    let lists = (dir.join("real-v4.txt"), dir.join("real-v6.txt"));
    if lists.0.is_file() && lists.1.is_file() {
        return Some(lists);
    }
    eprintln!(
        "skipping real tables: {} not found; run real_prefixes.sh first",
        dir.display()
    );
    None
}

/// Reads the peers' seeded query mix, one address a line.
pub fn query_texts() -> Option<Vec<String>> {
    let path = peers_dir()?.join("data/queries.txt");
    let text = fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

/// A small seeded generator, so every run looks up the same addresses.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Picks `count` addresses of one family: half inside random prefixes of `spec`,
/// half uniformly random, shuffled together.
pub fn sample_addresses(spec: &TableSpec, ipv6: bool, count: usize) -> Vec<IpAddr> {
    let networks: Vec<IpNetwork> = spec
        .prefixes()
        .map(|entry| entry.network)
        .filter(|network| network.is_ipv6() == ipv6)
        .collect();
    let mut rng = XorShift::new(0x1b2c_3d4e_5f60_7182);
    (0..count)
        .map(|index| {
            let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            if index % 2 == 1 || networks.is_empty() {
                return random_address(ipv6, random);
            }
            let network = networks[rng.next_u64() as usize % networks.len()];
            inside(network, random)
        })
        .collect()
}

fn random_address(ipv6: bool, random: u128) -> IpAddr {
    if ipv6 {
        // Global unicast, where routed IPv6 prefixes live.
        let bits = (random >> 3) | (0x2u128 << 124);
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(random as u32))
    }
}

fn inside(network: IpNetwork, random: u128) -> IpAddr {
    match network {
        IpNetwork::V4(net) => {
            let host_bits = 32 - u32::from(net.netmask());
            let host = if host_bits == 0 {
                0
            } else {
                (random as u32) >> (32 - host_bits)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(net.network_address()) | host))
        }
        IpNetwork::V6(net) => {
            let host_bits = 128 - u32::from(net.netmask());
            let host = if host_bits == 0 {
                0
            } else {
                random >> (128 - host_bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(net.network_address()) | host))
        }
    }
}
