#!/usr/bin/env python3
"""Redraw the benchmark figures in docs/ from measured data.

docs/cost-vs-table-size.png: nanoseconds per address of the lookup
benchmarks (`cargo bench --bench lookup`), read from criterion's output in
target/criterion, against the number of prefixes in each table.

docs/cost-vs-batch-size.png: server CPU nanoseconds per address and
addresses/s over gRPC against the batch size, from the load.csv that
scripts/bench-peers.sh writes (the newest results/*/load.csv unless --load
names one).

Usage: scripts/plot.py [--criterion DIR] [--load FILE] [--out DIR]
"""
import argparse
import csv
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prefix counts of the generated tables, as benches/lookup.rs requests them.
GENERATED_SIZES = {"synthetic-100k": 120_000, "synthetic-1m": 1_100_000}


def count_prefixes(path):
    with open(path) as lines:
        return sum(1 for line in lines if line.split("#")[0].strip())


def table_size(name):
    if name in GENERATED_SIZES:
        return GENERATED_SIZES[name]
    if name == "homelab":
        peers = os.environ.get("PEERS_DIR") or next(
            (p for p in (os.path.join(REPO, "../shared/peers"), os.path.join(REPO, "../../shared/peers"))
             if os.path.isfile(os.path.join(p, "data/homelab.txt"))), None)
        return count_prefixes(os.path.join(peers, "data/homelab.txt")) if peers else None
    if name.startswith("real"):
        state = os.environ.get("PEERS_STATE") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "ipclass-peers")
        lists = [os.path.join(state, "prefix-data", f) for f in ("real-v4.txt", "real-v6.txt")]
        if all(os.path.isfile(p) for p in lists):
            return sum(count_prefixes(p) for p in lists)
    return None


def read_criterion(root):
    """Yield (group, function, ns per element) for every benchmark with an element throughput."""
    for bench_file in glob.glob(os.path.join(root, "*", "*", "new", "benchmark.json")):
        folder = os.path.dirname(bench_file)
        with open(bench_file) as f:
            bench = json.load(f)
        with open(os.path.join(folder, "estimates.json")) as f:
            estimates = json.load(f)
        elements = (bench.get("throughput") or {}).get("Elements")
        if not elements:
            continue
        yield bench["group_id"], bench["function_id"], estimates["mean"]["point_estimate"] / elements


def plot_table_size(root, out):
    series = {}
    for group, function, ns in read_criterion(root):
        if not group.startswith("lookup/"):
            continue
        size = table_size(group.split("/", 1)[1])
        if size:
            series.setdefault(function, []).append((size, ns))
    if not series:
        print(f"plot: no lookup results under {root}; run cargo bench --bench lookup", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for function, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=function)
    ax.set_xscale("log")
    ax.set_xlabel("prefixes in the table")
    ax.set_ylabel("ns per address (criterion mean)")
    ax.set_title("Lookup cost against table size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "cost-vs-table-size.png")
    fig.savefig(path, dpi=120)
    print(f"plot: wrote {path}")


def plot_batch_size(load_csv, out):
    if not load_csv or not os.path.isfile(load_csv):
        print(f"plot: no results/*/load.csv under {REPO}; run scripts/bench-peers.sh, or pass --load", file=sys.stderr)
        return
    rows = list(csv.DictReader(open(load_csv)))
    fig, (cpu_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for form in sorted({row["form"] for row in rows}):
        points = sorted((int(r["batch"]), r) for r in rows if r["form"] == form)
        batches = [b for b, _ in points]
        cpu = [float(r["server_cpu_ns_per_address"] or "nan") for _, r in points]
        rate = [float(r["addresses_per_s"]) for _, r in points]
        cpu_ax.plot(batches, cpu, marker="o", label=form)
        rate_ax.plot(batches, rate, marker="o", label=form)
    for ax in (cpu_ax, rate_ax):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("addresses per gRPC request")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    cpu_ax.set_ylabel("server CPU ns per address")
    rate_ax.set_ylabel("addresses/s (load generator on the same cores)")
    fig.suptitle(f"gRPC cost against batch size ({os.path.relpath(load_csv, REPO)})")
    fig.tight_layout()
    path = os.path.join(out, "cost-vs-batch-size.png")
    fig.savefig(path, dpi=120)
    print(f"plot: wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", default=os.path.join(REPO, "target", "criterion"))
    parser.add_argument("--load", help="load.csv from scripts/bench-peers.sh")
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    args = parser.parse_args()
    load_csv = args.load
    if load_csv and not os.path.isfile(load_csv):
        sys.exit(f"plot: {load_csv} not found; pass a load.csv that scripts/bench-peers.sh wrote")
    if not load_csv:
        found = sorted(glob.glob(os.path.join(REPO, "results", "*", "load.csv")))
        load_csv = found[-1] if found else None
    os.makedirs(args.out, exist_ok=True)
    plot_table_size(args.criterion, args.out)
    plot_batch_size(load_csv, args.out)


if __name__ == "__main__":
    main()
