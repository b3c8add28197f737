//! Longest-prefix match and classification per address, in a batch loop,
//! on tables from homelab size to a million prefixes, and the table build.
//!
//! Every benchmark goes through `Table`, so a different lookup structure
//! behind `Table::longest_match` is measured without changing this file.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipclass::address::{self, Normalized};
use ipclass::table::{Table, TableSpec};

/// Addresses per measured loop; large enough to defeat branch prediction
/// on the query order.
const COUNT: usize = 4096;

/// Lists the measured tables by name, with the files they are built from.
fn tables() -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut tables = Vec::new();
    if let Some(homelab) = common::homelab_list() {
        tables.push(("homelab", vec![homelab]));
    }
    if let Some(list) = common::generated_list(100_000, 20_000) {
        tables.push(("synthetic-100k", vec![list]));
    }
    if let Some(list) = common::generated_list(1_000_000, 100_000) {
        tables.push(("synthetic-1m", vec![list]));
    }
    if let Some((ipv4, ipv6)) = common::real_lists() {
        tables.push(("real-500k", vec![ipv4, ipv6]));
    }
    tables
}

fn spec_of(lists: &[PathBuf]) -> TableSpec {
    let lists: Vec<&std::path::Path> = lists.iter().map(PathBuf::as_path).collect();
    common::spec_from_lists(&lists)
}

fn bench_lookup(c: &mut Criterion) {
    // Allocate as the service does, so large tables get fresh mappings.
    ipclass::state::map_large_allocations();
    for (name, lists) in tables() {
        let spec = spec_of(&lists);
        let prefixes = spec.prefix_count();
        let ipv4 = common::sample_addresses(&spec, false, COUNT);
        let ipv6 = common::sample_addresses(&spec, true, COUNT);
        // The service drops origins, and with them each match's search for
        // its file and line.
        let table = Table::new(spec, 1).without_origins();

        let mut group = c.benchmark_group(format!("lookup/{name}"));
        group.throughput(Throughput::Elements(COUNT as u64));
        eprintln!("table {name}: {prefixes} prefixes");
        for (family, addresses) in [("ipv4", &ipv4), ("ipv6", &ipv6)] {
            group.bench_function(format!("longest_match-{family}"), |b| {
                b.iter(|| {
                    for &address in addresses {
                        black_box(table.longest_match(black_box(address)));
                    }
                })
            });
        }
        // The batch form of the compiled table, as packed requests use it.
        let keys: Vec<u32> = ipv4
            .iter()
            .filter_map(|address| match address {
                std::net::IpAddr::V4(v4) => Some(u32::from(*v4)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let mut found = vec![0u32; keys.len()];
        group.bench_function("compiled_batch-ipv4", |b| {
            b.iter(|| {
                table
                    .compiled()
                    .lookup_v4_batch(black_box(&keys), &mut found);
                black_box(&found);
            })
        });
        // IPv6 keys as the packed path passes them, without the IPv4-mapped
        // addresses, which it looks up as IPv4.
        let keys: Vec<u128> = ipv6
            .iter()
            .filter_map(|address| match address {
                std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(u128::from(*v6)),
                _ => None,
            })
            .collect();
        let mut found = vec![0u32; keys.len()];
        group.bench_function("compiled_batch-ipv6", |b| {
            b.iter(|| {
                table
                    .compiled()
                    .lookup_v6_batch(black_box(&keys), &mut found);
                black_box(&found);
            })
        });
        let normalized: Vec<Normalized> = ipv4.iter().map(|&a| address::normalize(a)).collect();
        group.bench_function("classify-ipv4", |b| {
            b.iter(|| {
                for &address in &normalized {
                    black_box(table.classify(black_box(address)).verdict);
                }
            })
        });
        group.finish();
    }
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, lists) in tables() {
        if name == "homelab" {
            continue;
        }
        let spec = spec_of(&lists);
        group.throughput(Throughput::Elements(spec.prefix_count() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || spec.clone(),
                |spec| Table::new(spec, 1),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_build);
criterion_main!(benches);
