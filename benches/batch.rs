//! Whole batches of 1,024 addresses through the functions the gRPC handlers
//! call: text (classify, then write the response bytes), packed IPv4 and
//! packed IPv6.

mod common;

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipclass::grpc::batch;
use ipclass::grpc::text::TextBatch;
use ipclass::metrics::BatchTally;
use ipclass::proto::IsInternalRequest;
use ipclass::table::Table;
use prost::Message;

const BATCH: usize = 1024;

fn bench_batch(c: &mut Criterion) {
    let (Some(homelab), Some(queries)) = (common::homelab_list(), common::query_texts()) else {
        eprintln!("skipping batch benchmarks: peer harness not found; set PEERS_DIR");
        return;
    };
    let mut tables: Vec<(&str, Vec<PathBuf>)> = vec![("homelab", vec![homelab])];
    if let Some(list) = common::generated_list(1_000_000, 100_000) {
        tables.push(("synthetic-1m", vec![list]));
    }

    // The first addresses of the query mix, as grpc_bench.sh sends them.
    let texts: Vec<String> = queries.iter().cycle().take(BATCH).cloned().collect();
    let request = Bytes::from(IsInternalRequest { ips: texts }.encode_to_vec());
    let packed = packed_batch(&queries, false);
    // The IPv6 lines of the query mix, IPv4-mapped and unspecified ones
    // included.
    let packed_v6 = packed_batch(&queries, true);

    for (name, lists) in tables {
        let lists: Vec<&std::path::Path> = lists.iter().map(PathBuf::as_path).collect();
        let table = Table::new(common::spec_from_lists(&lists), 1).without_origins();
        let mut group = c.benchmark_group(format!("batch/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));

        group.bench_function("text-1024", |b| {
            let mut out = Vec::new();
            b.iter(|| {
                let decoded = TextBatch::decode(request.clone()).unwrap();
                let mut tally = BatchTally::new(&table);
                out.clear();
                batch::write_text_response(&table, decoded.addresses(), &mut tally, &mut out);
                black_box(out.len())
            })
        });
        group.bench_function("packed-ipv4-1024", |b| {
            b.iter(|| {
                let mut tally = BatchTally::new(&table);
                black_box(batch::classify_packed_ipv4(
                    &table,
                    black_box(&packed),
                    &mut tally,
                ))
            })
        });
        group.bench_function("packed-ipv6-1024", |b| {
            b.iter(|| {
                let mut tally = BatchTally::new(&table);
                black_box(batch::classify_packed_ipv6(
                    &table,
                    black_box(&packed_v6),
                    &mut tally,
                ))
            })
        });
        group.finish();
    }
}

/// Returns the addresses of one family from `queries` as concatenated
/// network-order bytes, repeated to fill a batch.
fn packed_batch(queries: &[String], ipv6: bool) -> Vec<u8> {
    queries
        .iter()
        .filter_map(|text| match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if !ipv6 => Some(v4.octets().to_vec()),
            Ok(IpAddr::V6(v6)) if ipv6 => Some(v6.octets().to_vec()),
            _ => None,
        })
        .cycle()
        .take(BATCH)
        .flatten()
        .collect()
}

criterion_group!(benches, bench_batch);
criterion_main!(benches);
