//! Drives a running `ipclass serve` over gRPC with batches of addresses and
//! prints addresses/s, requests/s, latency percentiles and errors.
//!
//!     cargo run --release --example load -- --target 127.0.0.1:50051 \
//!         --form packed --batch 1024 --concurrency 32 --connections 4 --duration 10s
//!
//! Requests are encoded once before the run and responses are only scanned,
//! not decoded into messages, so the client takes little of the CPU it
//! shares with the server. Every response must carry one result per address
//! and a generation, or it counts as an error.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf, BufMut, Bytes};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use prost::encoding::decode_varint;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use ipclass::proto::{IsInternalPackedRequest, IsInternalRequest};

#[derive(Debug, Parser)]
#[command(about = "Load generator for ipclass over gRPC")]
struct Args {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: SocketAddr,

    /// Request form: text (IsInternal) or packed (IsInternalPacked).
    #[arg(long, value_enum, default_value_t = Form::Packed)]
    form: Form,

    /// Addresses per request.
    #[arg(long, default_value_t = 1024)]
    batch: usize,

    /// Requests in flight at once, spread over the connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,

    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Length of the measured run, such as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Unmeasured run before the measured one.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// File with one address a line; default: a seeded mix of 70% private
    /// IPv4, 22% public IPv4 and 8% IPv6.
    #[arg(long)]
    addresses: Option<PathBuf>,

    /// Address family of the lines of the address file to send.
    #[arg(long, value_enum, default_value_t = Family::Any)]
    family: Family,

    /// PID of the server, to report its CPU time per address.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Client runtime threads; one keeps the client's CPU share small.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// CSV file to append one line of results to (with a header if new).
    #[arg(long)]
    csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Form {
    Text,
    Packed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Family {
    Any,
    V4,
    V6,
}

/// Number of distinct request bodies cycled through, so the server does not
/// classify one batch over and over.
const DISTINCT_BATCHES: usize = 16;

/// Pause of a worker after a failed request, so that a server that has
/// stopped does not turn the client into a busy loop on the shared cores.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.target.ip().is_loopback(),
        "target {} is not a loopback address; this tool loads only local servers",
        args.target
    );
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than 0, such as 10s"
    );

    let addresses = load_addresses(&args)?;
    let bodies = encode_batches(&addresses, &args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(run(args, bodies))
}

fn load_addresses(args: &Args) -> anyhow::Result<Vec<IpAddr>> {
    let Some(path) = &args.addresses else {
        return Ok(default_mix(DISTINCT_BATCHES * args.batch));
    };
    let text = fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("failed to read {}: {error}", path.display()))?;
    let addresses: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| line.trim().parse::<IpAddr>().ok())
        .filter(|address| match args.family {
            Family::Any => true,
            Family::V4 => address.is_ipv4(),
            Family::V6 => address.is_ipv6(),
        })
        .collect();
    anyhow::ensure!(
        !addresses.is_empty(),
        "{} has no addresses of the requested family",
        path.display()
    );
    Ok(addresses)
}

fn default_mix(count: usize) -> Vec<IpAddr> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = state as u32;
            match state >> 60 {
                0..=10 => IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (bits & 0x00ff_ffff))),
                11..=14 => IpAddr::V4(Ipv4Addr::from(bits | 0x0100_0000)),
                _ => format!("fd00::{:x}:{:x}", bits >> 16, bits & 0xffff)
                    .parse()
                    .expect("the format is an IPv6 address"),
            }
        })
        .collect()
}

/// One encoded request and the number of results its response must hold.
#[derive(Clone)]
struct Body {
    message: Bytes,
    addresses: usize,
}

fn encode_batches(addresses: &[IpAddr], args: &Args) -> Vec<Body> {
    (0..DISTINCT_BATCHES)
        .map(|index| {
            let batch: Vec<IpAddr> = addresses
                .iter()
                .cycle()
                .skip(index * args.batch % addresses.len())
                .take(args.batch)
                .copied()
                .collect();
            let message = match args.form {
                Form::Text => IsInternalRequest {
                    ips: batch.iter().map(IpAddr::to_string).collect(),
                }
                .encode_to_vec(),
                Form::Packed => {
                    let mut request = IsInternalPackedRequest::default();
                    let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
                    for address in &batch {
                        match address {
                            IpAddr::V4(v4) => ipv4.extend_from_slice(&v4.octets()),
                            IpAddr::V6(v6) => ipv6.extend_from_slice(&v6.octets()),
                        }
                    }
                    request.ipv4 = ipv4.into();
                    request.ipv6 = ipv6.into();
                    request.encode_to_vec()
                }
            };
            Body {
                message: message.into(),
                addresses: batch.len(),
            }
        })
        .collect()
}

/// Counts of a scanned response: results and generation fields.
#[derive(Debug, Default)]
struct Summary {
    results: usize,
    generations: usize,
}

/// Sends pre-encoded requests and scans responses without decoding them.
#[derive(Clone, Copy)]
struct ScanCodec {
    form: Form,
}

impl Codec for ScanCodec {
    type Encode = Bytes;
    type Decode = Summary;
    type Encoder = ScanCodec;
    type Decoder = ScanCodec;

    fn encoder(&mut self) -> ScanCodec {
        *self
    }

    fn decoder(&mut self) -> ScanCodec {
        *self
    }
}

impl Encoder for ScanCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ScanCodec {
    type Item = Summary;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Summary>, Status> {
        scan_response(src, self.form)
            .map(Some)
            .map_err(|reason| Status::internal(format!("malformed response: {reason}")))
    }
}

/// Counts results in a response: one `results` message each in the text
/// form, one verdict byte each (checked to be a known verdict) in the packed
/// form.
fn scan_response(src: &mut impl Buf, form: Form) -> Result<Summary, String> {
    let mut summary = Summary::default();
    while src.has_remaining() {
        let key = decode_varint(src).map_err(|error| error.to_string())?;
        let (field, wire_type) = (key >> 3, key & 7);
        match (form, field, wire_type) {
            (Form::Text, 2, 0) | (Form::Packed, 3, 0) => {
                decode_varint(src).map_err(|error| error.to_string())?;
                summary.generations += 1;
            }
            (_, _, 2) => {
                let len = decode_varint(src).map_err(|error| error.to_string())? as usize;
                if len > src.remaining() {
                    return Err("field runs past the end".into());
                }
                match (form, field) {
                    (Form::Text, 1) => summary.results += 1,
                    (Form::Packed, 1 | 2) => {
                        let verdicts = src.copy_to_bytes(len);
                        if verdicts.iter().any(|&v| !(1..=4).contains(&v)) {
                            return Err("unknown verdict byte".into());
                        }
                        summary.results += len;
                        continue;
                    }
                    _ => {}
                }
                src.advance(len);
            }
            _ => return Err(format!("unexpected field {field} of wire type {wire_type}")),
        }
    }
    Ok(summary)
}

/// Counts of one worker.
struct Tally {
    requests: u64,
    addresses: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            addresses: 0,
            errors: 0,
            first_error: None,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }

    fn error(&mut self, reason: String) {
        self.errors += 1;
        self.first_error.get_or_insert(reason);
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.addresses += other.addresses;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(other.latency)
            .expect("same histogram bounds");
    }
}

async fn run(args: Args, bodies: Vec<Body>) -> anyhow::Result<()> {
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let endpoint = Endpoint::from_shared(format!("http://{}", args.target))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "failed to connect to {}; start the server or correct --target",
                args.target
            )
        })?;
        channels.push(channel);
    }
    let path = match args.form {
        Form::Text => "/ipclass.v1.IpClassifier/IsInternal",
        Form::Packed => "/ipclass.v1.IpClassifier/IsInternalPacked",
    };

    // Warm up, then measure with fresh counters.
    spawn_workers(&args, &channels, &bodies, path, args.warmup).await;
    let cpu_before = args.server_pid.map(server_cpu_seconds).transpose()?;
    let started = Instant::now();
    let tally = spawn_workers(&args, &channels, &bodies, path, args.duration).await;
    let elapsed = started.elapsed().as_secs_f64();
    // A server that exited during the run has no CPU time to read, and the
    // report still shows what the run measured.
    let cpu_after = match args.server_pid.map(server_cpu_seconds).transpose() {
        Ok(cpu) => cpu,
        Err(error) => {
            eprintln!("server CPU not measured: {error}");
            None
        }
    };

    report(&args, &tally, elapsed);
    let mut cpu_per_address = None;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = after - before;
        let per_address = cpu / tally.addresses.max(1) as f64 * 1e9;
        println!(
            "server CPU:   {cpu:.2} s in {elapsed:.2} s ({:.0}% of one core), {per_address:.1} ns per address",
            cpu / elapsed * 100.0
        );
        cpu_per_address = Some(per_address);
    }
    if let Some(path) = &args.csv {
        append_csv(path, &args, &tally, elapsed, cpu_per_address)?;
    }
    if tally.errors > 0 {
        anyhow::bail!("{} requests failed", tally.errors);
    }
    Ok(())
}

async fn spawn_workers(
    args: &Args,
    channels: &[Channel],
    bodies: &[Body],
    path: &'static str,
    duration: Duration,
) -> Tally {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let bodies = bodies.to_vec();
        let form = args.form;
        tasks.push(tokio::spawn(async move {
            drive(channel, bodies, worker, form, path, deadline).await
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        total.merge(task.await.expect("load worker panicked"));
    }
    total
}

/// Sends requests one after another until `deadline`.
async fn drive(
    channel: Channel,
    bodies: Vec<Body>,
    worker: usize,
    form: Form,
    path: &'static str,
    deadline: Instant,
) -> Tally {
    let mut client = tonic::client::Grpc::new(channel);
    let path = axum::http::uri::PathAndQuery::from_static(path);
    let mut tally = Tally::new();
    let mut next = worker;
    while Instant::now() < deadline {
        let body = &bodies[next % bodies.len()];
        next += 1;
        if let Err(error) = client.ready().await {
            tally.error(format!("connection not ready: {error}"));
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        let sent = Instant::now();
        let outcome = client
            .unary(
                tonic::Request::new(body.message.clone()),
                path.clone(),
                ScanCodec { form },
            )
            .await;
        let micros = sent.elapsed().as_micros() as u64;
        match outcome {
            Ok(response) => {
                let summary = response.into_inner();
                if summary.results != body.addresses {
                    tally.error(format!(
                        "{} results for {} addresses",
                        summary.results, body.addresses
                    ));
                } else if summary.generations != 1 {
                    tally.error(format!("{} generation fields", summary.generations));
                } else {
                    tally.requests += 1;
                    tally.addresses += body.addresses as u64;
                    let _ = tally.latency.record(micros.max(1));
                }
            }
            Err(status) => {
                tally.error(format!("{:?}: {}", status.code(), status.message()));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    tally
}

fn report(args: &Args, tally: &Tally, elapsed: f64) {
    let latency = &tally.latency;
    let millis = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "target {} form {:?} batch {} concurrency {} connections {} duration {:.1} s",
        args.target, args.form, args.batch, args.concurrency, args.connections, elapsed
    );
    println!("addresses/s:  {:.0}", tally.addresses as f64 / elapsed);
    println!("requests/s:   {:.0}", tally.requests as f64 / elapsed);
    println!(
        "latency ms:   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        millis(0.50),
        millis(0.90),
        millis(0.99),
        latency.max() as f64 / 1000.0
    );
    println!("errors:       {}", tally.errors);
    if let Some(reason) = &tally.first_error {
        println!("first error:  {reason}");
    }
}

fn append_csv(
    path: &PathBuf,
    args: &Args,
    tally: &Tally,
    elapsed: f64,
    cpu_per_address: Option<f64>,
) -> anyhow::Result<()> {
    use std::io::Write as _;

    let is_new = !path.exists();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if is_new {
        writeln!(
            file,
            "form,batch,concurrency,connections,seconds,addresses_per_s,requests_per_s,\
             p50_ms,p90_ms,p99_ms,max_ms,errors,server_cpu_ns_per_address"
        )?;
    }
    let latency = &tally.latency;
    let millis = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    let form = match args.form {
        Form::Text => "text",
        Form::Packed => "packed",
    };
    writeln!(
        file,
        "{form},{},{},{},{elapsed:.2},{:.0},{:.0},{:.3},{:.3},{:.3},{:.3},{},{}",
        args.batch,
        args.concurrency,
        args.connections,
        tally.addresses as f64 / elapsed,
        tally.requests as f64 / elapsed,
        millis(0.5),
        millis(0.9),
        millis(0.99),
        latency.max() as f64 / 1000.0,
        tally.errors,
        cpu_per_address
            .map(|ns| format!("{ns:.1}"))
            .unwrap_or_default()
    )?;
    Ok(())
}

/// User plus system CPU time of a process so far, from `/proc/PID/stat`.
fn server_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| anyhow::anyhow!("failed to read /proc/{pid}/stat: {error}"))?;
    // The command name in parentheses may contain spaces, so count fields
    // after its closing parenthesis: utime and stime are fields 14 and 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat format"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat format"))?
        .iter()
        .map(|field| field.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}
