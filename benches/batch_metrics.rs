//! Measures what metrics add to one batch of 1024 addresses: the batch
//! alone, with the tally and no recorder, and with the Prometheus recorder.
//!
//! Run with `cargo bench --bench batch_metrics`. It prints nanoseconds per
//! batch, the median of 15 rounds of 400 batches each.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipclass::classify::{classify_address, classify_text};
use ipclass::metrics::{self, Api, BatchTally, SetCounters};
use ipclass::table::{Origin, SetInfo, Table, TableSpec};

const BATCH: usize = 1024;
const ROUNDS: usize = 15;
const BATCHES_PER_ROUND: usize = 400;

fn table() -> Table {
    let mut spec = TableSpec::default();
    for (index, name) in ["lan", "guest", "vpn", "unused"].iter().enumerate() {
        spec.sets.push(SetInfo {
            name: name.to_string(),
            internal: index != 1,
        });
    }
    spec.add_file("bench.toml".into(), 4);
    let networks = [
        ("10.0.0.0/8", 0),
        ("10.9.0.0/16", 1),
        ("100.64.0.0/10", 2),
        ("192.0.2.0/24", 3),
    ];
    for (line, (network, set)) in networks.iter().enumerate() {
        let origin = Origin {
            file: 0,
            line: line as u32 + 1,
        };
        spec.push(network.parse().unwrap(), *set, origin);
    }
    Table::new(spec, 1).without_origins()
}

fn addresses() -> Vec<IpAddr> {
    let mut state: u32 = 0x1234_5678;
    (0..BATCH)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // A quarter in 10/8, so sets are hit as well as missed.
            let bits = if i % 4 == 0 {
                0x0a00_0000 | (state >> 8)
            } else {
                state
            };
            IpAddr::V4(Ipv4Addr::from(bits))
        })
        .collect()
}

/// Returns the median time of one call of `batch` over several rounds.
fn median(mut batch: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..BATCHES_PER_ROUND {
                batch();
            }
            started.elapsed() / BATCHES_PER_ROUND as u32
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

fn measure(label: &str, table: &Table, sets: &SetCounters) {
    let addresses = addresses();
    let texts: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();

    let packed_plain = median(|| {
        for address in &addresses {
            black_box(classify_address(table, *address).verdict);
        }
    });
    let packed_counted = median(|| {
        let started = Instant::now();
        let mut tally = BatchTally::new(table);
        for address in &addresses {
            let found = classify_address(table, *address);
            tally.add(&found);
            black_box(found.verdict);
        }
        tally.record(Api::GrpcIsInternalPacked, sets);
        metrics::record_request(Api::GrpcIsInternalPacked, "OK", started.elapsed());
    });
    let text_plain = median(|| {
        for text in &texts {
            black_box(classify_text(table, text).verdict);
        }
    });
    let text_counted = median(|| {
        let started = Instant::now();
        let mut tally = BatchTally::new(table);
        for text in &texts {
            let found = classify_text(table, text);
            tally.add(&found);
            black_box(found.verdict);
        }
        tally.record(Api::GrpcIsInternal, sets);
        metrics::record_request(Api::GrpcIsInternal, "OK", started.elapsed());
    });
    // The metrics work alone, on classifications made beforehand: the
    // difference above is within the noise of a shared machine.
    let found: Vec<_> = addresses
        .iter()
        .map(|address| classify_address(table, *address))
        .collect();
    let metrics_only = median(|| {
        let started = Instant::now();
        let mut tally = BatchTally::new(table);
        for classification in &found {
            tally.add(black_box(classification));
        }
        tally.record(Api::GrpcIsInternalPacked, sets);
        metrics::record_request(Api::GrpcIsInternalPacked, "OK", started.elapsed());
    });
    println!(
        "{label:>12} metrics work alone: {:>8} ns/batch",
        metrics_only.as_nanos()
    );
    for (kind, plain, counted) in [
        ("packed", packed_plain, packed_counted),
        ("text", text_plain, text_counted),
    ] {
        let overhead = counted.as_nanos() as i128 - plain.as_nanos() as i128;
        println!(
            "{label:>12} {kind:>6}: {:>8} ns/batch without metrics, {:>8} ns/batch with, overhead {overhead} ns",
            plain.as_nanos(),
            counted.as_nanos()
        );
    }
}

fn main() {
    let table = table();
    measure("no recorder", &table, &SetCounters::new(&table));

    let runtime = tokio::runtime::Runtime::new().expect("build a tokio runtime");
    let _guard = runtime.enter();
    metrics::install().expect("install the recorder");
    measure("prometheus", &table, &SetCounters::new(&table));
}
