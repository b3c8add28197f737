//! Start-up cost of a large config: `config::load` (read, parse, validate,
//! hash) and `Table::new` (compile the lookup structure), on a list of 1.1
//! million prefixes.
//!
//! Run `IPCLASS_LARGE_LIST=FILE cargo bench --bench load` with FILE a list
//! of one prefix a line. The default list path
//! is `/tmp/big/large-1m.txt`; the bench prints a message and skips when it
//! is missing.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipclass::config;
use ipclass::table::Table;

const DEFAULT_LIST: &str = "/tmp/big/large-1m.txt";

/// Writes a config naming the list at `list` and returns its path.
fn write_config(list: &Path) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("ipclass-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("temp folder is writable");
    let path = folder.join("ipclass.toml");
    let text = format!(
        "[sets.large]\ninternal = true\nfiles = [{:?}]\n",
        list.display().to_string()
    );
    std::fs::write(&path, text).expect("temp config is writable");
    path
}

fn bench_load(c: &mut Criterion) {
    let list = std::env::var_os("IPCLASS_LARGE_LIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LIST));
    if !list.exists() {
        eprintln!(
            "skipping the load bench: {} is missing; set IPCLASS_LARGE_LIST to a list file",
            list.display()
        );
        return;
    }
    let config_path = write_config(&list);

    // One timed pass per phase, so a run shows where the time goes.
    let started = Instant::now();
    let loaded = config::load(&config_path).expect("the list file is a valid config");
    let load_time = started.elapsed();
    let prefixes = loaded.spec.prefix_count();
    let started = Instant::now();
    let table = Table::new(loaded.spec, 1);
    let build_time = started.elapsed();
    eprintln!(
        "{prefixes} prefixes: config::load {load_time:?}, Table::new {build_time:?}, \
         table {} bytes",
        table.memory_bytes()
    );
    drop(table);

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("config-load", |b| {
        b.iter(|| black_box(config::load(&config_path).expect("valid config")))
    });
    let spec = config::load(&config_path).expect("valid config").spec;
    group.bench_function("table-new", |b| {
        b.iter_batched(
            || spec.clone(),
            |spec| black_box(Table::new(spec, 1)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("load-and-build", |b| {
        b.iter(|| {
            let loaded = config::load(&config_path).expect("valid config");
            black_box(Table::new(loaded.spec, 1))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
