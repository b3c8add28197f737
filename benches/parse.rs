//! Address decoding: text parsing (IPv4, IPv6, IPv4-mapped) against raw
//! 4- and 16-byte decoding, per address.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipclass::address;

const COUNT: usize = 1024;

fn texts(ipv6: bool) -> Vec<String> {
    common::sample_addresses(&Default::default(), ipv6, COUNT)
        .iter()
        .map(IpAddr::to_string)
        .collect()
}

fn bench_parse(c: &mut Criterion) {
    let ipv4 = texts(false);
    let ipv6 = texts(true);
    let mapped: Vec<String> = ipv4.iter().map(|ip| format!("::ffff:{ip}")).collect();

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(COUNT as u64));
    for (name, list) in [
        ("text-ipv4", &ipv4),
        ("text-ipv6", &ipv6),
        ("text-mapped", &mapped),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for text in list {
                    black_box(address::parse(black_box(text)).ok());
                }
            })
        });
    }
    group.bench_function("std-ipv4", |b| {
        b.iter(|| {
            for text in &ipv4 {
                black_box(black_box(text).parse::<IpAddr>().ok());
            }
        })
    });

    let raw4: Vec<u8> = ipv4
        .iter()
        .flat_map(|ip| ip.parse::<Ipv4Addr>().unwrap().octets())
        .collect();
    let raw16: Vec<u8> = ipv6
        .iter()
        .flat_map(|ip| ip.parse::<Ipv6Addr>().unwrap().octets())
        .collect();
    group.bench_function("raw-ipv4", |b| {
        b.iter(|| {
            for chunk in black_box(&raw4).chunks_exact(4) {
                let raw: [u8; 4] = chunk.try_into().unwrap();
                black_box(address::normalize(Ipv4Addr::from(raw).into()));
            }
        })
    });
    group.bench_function("raw-ipv6", |b| {
        b.iter(|| {
            for chunk in black_box(&raw16).chunks_exact(16) {
                let raw: [u8; 16] = chunk.try_into().unwrap();
                black_box(address::normalize(Ipv6Addr::from(raw).into()));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
