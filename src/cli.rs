//! The command line: `serve`, `check` and `lookup`.
//!
//! Every flag can also come from an `IPCLASS_*` environment variable. This
//! module turns outcomes into output and exit codes; the work itself lives
//! in the other modules.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::address::{self, Normalized};
use crate::classify::classify_text;
use crate::config::{self, Loaded};
use crate::metrics;
use crate::reload::{self, ReloadSettings};
use crate::server;
use crate::state::{self, AppState, Snapshot, DEFAULT_MAX_BATCH};
use crate::table::{Table, Verdict};

/// Exit code for a config that is missing or invalid.
pub const EXIT_CONFIG_INVALID: u8 = 1;
/// Exit code for a failure after the config was accepted, such as a port in use.
pub const EXIT_RUNTIME_FAILURE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "ipclass",
    version,
    about = "Classifies client IP addresses as internal or external"
)]
pub struct Cli {
    /// Log line format on standard error. The level comes from RUST_LOG (default: info).
    #[arg(long, env = "IPCLASS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the `IPCLASS_*` variables, or exits with
    /// a usage error. An invalid value that came from a variable gets a tip
    /// that names the variable, because clap's message names only the flag.
    pub fn parse_or_exit() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        Cli::try_parse_from(&args).unwrap_or_else(|error| name_variable(error, &args).exit())
    }
}

/// Adds a tip naming the environment variable to `error` when it is about an
/// invalid value of a flag that `args` leaves out and its variable sets.
fn name_variable(mut error: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};

    if error.kind() == ErrorKind::InvalidUtf8 {
        return name_non_utf8(error, args);
    }
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    // clap names the flag as `--max-connections <MAX_CONNECTIONS>`.
    let Some(long) = invalid
        .split(' ')
        .next()
        .and_then(|flag| flag.strip_prefix("--"))
    else {
        return error;
    };
    let command = Cli::command();
    let variable = std::iter::once(&command)
        .chain(command.get_subcommands())
        .flat_map(clap::Command::get_arguments)
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned());
    let Some(variable) = variable else {
        return error;
    };
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|arg| {
        let arg = arg.to_string_lossy();
        arg == flag || arg.starts_with(&format!("{flag}="))
    });
    if on_command_line || std::env::var_os(&variable).is_none() {
        return error;
    }
    let tip =
        format!("the value comes from the environment variable {variable}; correct or unset it");
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
}

/// Adds a tip to clap's error for text that is not UTF-8, which names
/// neither the flag nor where the text came from: the non-UTF-8 arguments,
/// or else the `IPCLASS_*` variables whose values are not UTF-8.
fn name_non_utf8(mut error: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};

    let arguments: Vec<String> = args
        .iter()
        .skip(1)
        .filter(|arg| arg.to_str().is_none())
        .map(|arg| format!("{:?}", arg.to_string_lossy()))
        .collect();
    let tip = if arguments.is_empty() {
        let command = Cli::command();
        let mut variables: Vec<String> = std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(clap::Command::get_arguments)
            .filter_map(|arg| {
                let name = arg.get_env()?;
                std::env::var_os(name)?.to_str().is_none().then(|| {
                    let flag = arg.get_long().unwrap_or_default();
                    format!("{} (--{flag})", name.to_string_lossy())
                })
            })
            .collect();
        variables.sort_unstable();
        variables.dedup();
        if variables.is_empty() {
            return error;
        }
        format!(
            "the environment variable {} is not UTF-8; correct or unset it",
            variables.join(", ")
        )
    } else {
        format!(
            "the argument {} is not UTF-8 (shown with each invalid byte replaced); pass UTF-8 text",
            arguments.join(", ")
        )
    };
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC and HTTP/JSON on one listener.
    Serve(ServeArgs),
    /// Validate a config and print a summary; exit 0 if valid, 1 if not.
    Check(CheckArgs),
    /// Classify addresses offline and explain each verdict.
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file with the prefix sets.
    #[arg(long, env = "IPCLASS_CONFIG")]
    pub config: PathBuf,

    /// Address and port for gRPC and HTTP; port 0 picks a free port.
    #[arg(long, env = "IPCLASS_LISTEN", default_value = "127.0.0.1:50051", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Maximum number of addresses in one request.
    #[arg(long, env = "IPCLASS_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH,
          value_parser = parse_batch_size)]
    pub max_batch_size: usize,

    /// Time open requests get to finish after SIGTERM or Ctrl-C, such as 10s or 500ms.
    #[arg(long, env = "IPCLASS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Time the server keeps serving after SIGTERM or Ctrl-C, with /readyz
    /// returning 503 and gRPC health NOT_SERVING, before it stops accepting
    /// and the grace period starts, such as 5s. Default: no delay.
    #[arg(long, env = "IPCLASS_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Time an HTTP/1.1 connection gets to send a complete request head,
    /// counted from its start or its last response, such as 30s. Idle
    /// keep-alive connections close after it too.
    #[arg(long, env = "IPCLASS_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Maximum pause in a request body, such as 30s. A request whose body
    /// sends nothing for longer fails: HTTP with 408, gRPC with
    /// DEADLINE_EXCEEDED.
    #[arg(long, env = "IPCLASS_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub body_read_timeout: Duration,

    /// Time a connection may stay open without a request in progress, or
    /// with responses its client does not read, such as 5m. HTTP/2 clients
    /// get a GOAWAY and reconnect on their next call.
    #[arg(long, env = "IPCLASS_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Memory that responses over 64 KiB may hold until their clients read
    /// them, such as 256MiB or 1GiB. A response that does not fit is rejected:
    /// HTTP with 503, gRPC with RESOURCE_EXHAUSTED.
    #[arg(long, env = "IPCLASS_RESPONSE_MEMORY", default_value = "256MiB", value_parser = parse_response_memory)]
    pub response_memory: usize,

    /// Connections served at once. Further clients wait in the listen queue
    /// until one closes. Default: the open-file limit less 128, which is kept
    /// for list files, the watcher and metrics, or half a limit below 256.
    #[arg(long, env = "IPCLASS_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Quiet period after a config file event before the reload starts, and
    /// between the reads that must agree before a file counts as complete,
    /// such as 250ms or 1s; 10ms to 10m.
    #[arg(long, env = "IPCLASS_RELOAD_DEBOUNCE", default_value = "250ms", value_parser = parse_debounce)]
    pub reload_debounce: Duration,

    /// Interval of the content-hash check that catches config changes no
    /// file event reports, such as 30s or 5m; must be above zero.
    #[arg(long, env = "IPCLASS_POLL_INTERVAL", default_value = "30s", value_parser = parse_poll_interval)]
    pub poll_interval: Duration,

    /// Extra address and port that serves only GET /metrics, apart from the
    /// API; /metrics is on --listen either way.
    #[arg(long, env = "IPCLASS_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Number of runtime worker threads; default: one per CPU core.
    #[arg(long, env = "IPCLASS_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Time slice the Linux scheduler (EEVDF, 6.12 or later) gives each
    /// runtime thread, from 100us to 100ms, or `off` for the kernel's
    /// default. A short slice lets a woken thread preempt its callers sooner
    /// when they share the cores.
    #[arg(long, env = "IPCLASS_SCHED_SLICE", default_value = "100us", value_parser = parse_sched_slice)]
    pub sched_slice: SchedSlice,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file to validate.
    #[arg(long, env = "IPCLASS_CONFIG")]
    pub config: PathBuf,

    /// Treat every warning as an error.
    #[arg(long, env = "IPCLASS_STRICT", value_parser = BoolishValueParser::new())]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Config file with the prefix sets.
    #[arg(long, env = "IPCLASS_CONFIG")]
    pub config: PathBuf,

    /// Addresses to classify.
    #[arg(required = true, value_name = "ADDRESS")]
    pub addresses: Vec<String>,
}

/// Parses `--response-memory`: a size of 1 MiB or more.
fn parse_response_memory(text: &str) -> Result<usize, String> {
    let bytes = crate::response::parse_size(text)?;
    if bytes < 1 << 20 {
        return Err(format!(
            "{text:?} is below 1MiB, too small for one large response; use 256MiB or more"
        ));
    }
    Ok(bytes)
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    const EXAMPLE: &str = "such as 127.0.0.1:50051 or [::1]:50051";
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Err(format!(
            "no port; add one, as in {}",
            SocketAddr::new(ip, 50051)
        ));
    }
    let ip_part = text
        .rsplit_once(':')
        .map(|(ip, _)| ip.trim_matches(['[', ']']));
    if ip_part.is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
        return Err(format!(
            "the port must be a number from 0 to 65535, {EXAMPLE}"
        ));
    }
    Err(format!(
        "expected an IP address and a port, {EXAMPLE}; host names such as localhost are not resolved"
    ))
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(size) if (1..=u32::MAX as usize).contains(&size) => Ok(size),
        _ => Err(format!(
            "{text:?} is not a whole number from 1 to {}",
            u32::MAX
        )),
    }
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    let debounce = humantime::parse_duration(text)
        .map_err(|error| format!("{error}; give a duration such as 250ms"))?;
    if (Duration::from_millis(10)..=Duration::from_secs(600)).contains(&debounce) {
        Ok(debounce)
    } else {
        Err(format!(
            "{text:?} is outside 10ms to 10m; a shorter quiet period can reload an update that is half applied, such as a config saved before its new list file, and a longer one holds back every reload"
        ))
    }
}

fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(interval) if !interval.is_zero() => Ok(interval),
        Ok(_) => Err("the poll interval must be above zero, such as 30s".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// File descriptors that the default connection limit leaves for list
/// files, the file watcher and the metrics listener.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Returns the open-file limit less [`RESERVED_DESCRIPTORS`], or half a
/// limit below twice that, so that too many clients make new ones wait
/// instead of failing every open.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    // Below twice the reserve, half the limit goes to connections, so a low
    // limit still serves more than one client at once.
    let max = if soft >= 2 * RESERVED_DESCRIPTORS {
        soft - RESERVED_DESCRIPTORS
    } else {
        soft / 2
    };
    usize::try_from(max.clamp(1, 1 << 20)).unwrap_or(1 << 20)
}

/// The runtime threads' scheduler time slice, or `None` for the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedSlice(pub Option<Duration>);

fn parse_sched_slice(text: &str) -> Result<SchedSlice, String> {
    if text == "off" {
        return Ok(SchedSlice(None));
    }
    let slice = humantime::parse_duration(text)
        .map_err(|error| format!("{error}; give a duration such as 100us, or off"))?;
    if (Duration::from_micros(100)..=Duration::from_millis(100)).contains(&slice) {
        Ok(SchedSlice(Some(slice)))
    } else {
        Err(format!(
            "{text:?} is outside the scheduler's range; give 100us to 100ms, or off"
        ))
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(timeout) if !timeout.is_zero() => Ok(timeout),
        Ok(_) => Err("the timeout must be above zero, such as 30s".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// Validates a config, prints a summary to stdout and problems to stderr.
pub fn check(args: &CheckArgs) -> ExitCode {
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for warning in &errors.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(more) = config::more_warnings(errors.omitted_warnings) {
                eprintln!("warning: {more}");
            }
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG_INVALID);
        }
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(more) = config::more_warnings(loaded.omitted_warnings) {
        eprintln!("warning: {more}");
    }
    let count = loaded.warnings.len() + loaded.omitted_warnings;
    if args.strict && count > 0 {
        eprintln!(
            "invalid config {} under --strict: {count} warning(s) above are errors",
            args.config.display()
        );
        return ExitCode::from(EXIT_CONFIG_INVALID);
    }
    print!("{}", summary(&args.config, &loaded));
    ExitCode::SUCCESS
}

/// Describes a valid config: sets, prefix counts per family, warnings.
pub fn summary(path: &Path, loaded: &Loaded) -> String {
    // Counting needs only the validated prefixes, so no table is built.
    let spec = &loaded.spec;
    let counts = spec.prefix_counts();
    let ipv4: u64 = counts.iter().map(|count| count.0).sum();
    let ipv6: u64 = counts.iter().map(|count| count.1).sum();
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid", path.display());
    let _ = writeln!(
        out,
        "  {}, {} ({ipv4} IPv4, {ipv6} IPv6), {}",
        count(spec.sets.len() as u64, "set"),
        count(ipv4 + ipv6, "prefix"),
        count(
            (loaded.warnings.len() + loaded.omitted_warnings) as u64,
            "warning"
        ),
    );
    let width = spec
        .sets
        .iter()
        .map(|set| set.name.len())
        .max()
        .unwrap_or(0);
    let mut rows: Vec<_> = spec.sets.iter().zip(&counts).collect();
    rows.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for (set, (set_v4, set_v6)) in rows {
        let kind = if set.internal { "internal" } else { "external" };
        let _ = writeln!(
            out,
            "  set {:width$}  {kind}  {set_v4} IPv4, {set_v6} IPv6",
            set.name
        );
    }
    out
}

/// Writes `number` and `noun`, adding the plural "es" or "s" unless it is 1.
fn count(number: u64, noun: &str) -> String {
    match (number, noun.ends_with('x')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{number} {noun}es"),
        (_, false) => format!("{number} {noun}s"),
    }
}

/// Classifies each address offline and prints why it got its verdict.
pub fn lookup(args: &LookupArgs) -> ExitCode {
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG_INVALID);
        }
    };
    let table = Table::new(loaded.spec, 0);
    for text in &args.addresses {
        println!("{}", explain(&table, text));
    }
    ExitCode::SUCCESS
}

/// Formats one line for `lookup`: the address, its verdict and where it came from.
pub fn explain(table: &Table, text: &str) -> String {
    let found = classify_text(table, text);
    // A newline or other control character in an argument would break the
    // one-line-per-address output, so such text is shown escaped.
    let mut line = if text.chars().any(char::is_control) {
        format!("{text:?}: {}", found.verdict)
    } else {
        format!("{text}: {}", found.verdict)
    };
    if let Ok(Normalized::Lookup(looked_up) | Normalized::Sentinel(looked_up)) =
        address::parse(text)
    {
        if looked_up.to_string() != text.trim_ascii() {
            let _ = write!(line, " (looked up as {looked_up})");
        }
    }
    match (found.verdict, found.prefix, &found.error) {
        (_, Some(entry), _) => {
            let set = table.set(entry.set);
            let kind = if set.internal { "internal" } else { "external" };
            let _ = write!(
                line,
                ", set {:?} ({kind}), prefix {}",
                set.name, entry.network
            );
            if let Some(origin) = entry.origin {
                let file = table.files()[origin.file as usize].display();
                let _ = write!(line, " from {file}:{}", origin.line);
            }
        }
        (Verdict::Unknown, None, _) => {
            line.push_str(", unspecified or broadcast address, which identifies no client")
        }
        (_, None, Some(error)) => {
            let _ = write!(line, ": {error}");
        }
        (_, None, None) => line.push_str(", no prefix matched"),
    }
    line
}

/// Loads the config, binds, and serves until `shutdown` resolves.
pub async fn serve(
    args: &ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let started = Instant::now();
    state::map_large_allocations();
    // Installed before the table is built, because the table resolves its
    // per-set counters in the installed recorder.
    let metrics = match metrics::install() {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "failed to install the metrics recorder");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            tracing::error!(config = %args.config.display(), "{errors}");
            // A RUST_LOG that turns errors off would hide why serve exits.
            if !tracing::enabled!(tracing::Level::ERROR) {
                eprintln!("{errors}");
            }
            return ExitCode::from(EXIT_CONFIG_INVALID);
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!(config = %args.config.display(), "{warning}");
    }
    if let Some(more) = config::more_warnings(loaded.omitted_warnings) {
        tracing::warn!(config = %args.config.display(), "{more}");
    }
    let loaded_sources = loaded.sources.clone();
    let snapshot = build_snapshot(loaded, 1, started);
    log_table(&snapshot, &args.config);
    let sources = loaded_sources;
    let state = Arc::new(
        AppState::new(snapshot, args.config.clone(), args.max_batch_size)
            .with_response_memory(args.response_memory),
    );
    // A response larger than the whole budget is always rejected.
    let full_batch = args
        .max_batch_size
        .saturating_mul(crate::http::json::MIN_RESULT_LEN);
    if full_batch > args.response_memory {
        tracing::warn!(
            response_memory_mib = args.response_memory >> 20,
            full_batch_mib_at_least = full_batch.div_ceil(1 << 20),
            max_batch_size = args.max_batch_size,
            "--response-memory is below the JSON response to a full batch, so full batches get 503; raise --response-memory above that size, or lower --max-batch-size"
        );
    }
    reload::describe_metrics();
    let settings = ReloadSettings {
        debounce: args.reload_debounce,
        poll_interval: args.poll_interval,
    };
    let reloader = reload::spawn(state.clone(), settings, sources);

    let listener = match server::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %args.listen, %error, "failed to listen; choose another address with --listen");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let open_file_room = default_max_connections();
    let max_connections = args
        .max_connections
        .map_or(open_file_room, |max| max as usize);
    if max_connections > open_file_room {
        tracing::warn!(
            max_connections,
            open_file_room,
            "--max-connections is above what the open-file limit leaves after list files and the watcher; clients at the limit can make reloads fail with \"Too many open files\", so lower it or raise the limit (ulimit -n, LimitNOFILE=)"
        );
    }
    tracing::info!(%address, max_connections, version = env!("CARGO_PKG_VERSION"), "listening");
    if args.idle_timeout < args.header_read_timeout {
        tracing::warn!(
            idle_seconds = args.idle_timeout.as_secs_f64(),
            header_read_seconds = args.header_read_timeout.as_secs_f64(),
            "--idle-timeout is below --header-read-timeout, so a request head still arriving is cut off at the idle timeout; raise --idle-timeout to the header read timeout or above"
        );
    }
    let metrics_listener = match args.metrics_listen {
        Some(address) => match server::bind(address).await {
            Ok(listener) => {
                let bound = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::info!(address = %bound, "serving metrics");
                Some(listener)
            }
            Err(error) => {
                tracing::error!(%address, %error, "failed to listen for metrics; choose another address with --metrics-listen");
                return ExitCode::from(EXIT_RUNTIME_FAILURE);
            }
        },
        None => None,
    };

    let limits = server::Limits {
        grace: args.shutdown_grace,
        shutdown_delay: args.shutdown_delay,
        header_read: args.header_read_timeout,
        body_read: args.body_read_timeout,
        idle: args.idle_timeout,
        max_connections,
    };
    let served = server::serve(listener, metrics_listener, state, metrics, shutdown, limits).await;
    reloader.abort();
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

/// Builds a table from a validated config; `started` is when reading began.
pub fn build_snapshot(loaded: Loaded, generation: u64, started: Instant) -> Snapshot {
    Snapshot::build(loaded, generation, started)
}

fn log_table(snapshot: &Snapshot, config: &Path) {
    let table = &snapshot.table;
    let counts = table.prefix_counts();
    for (set, (ipv4, ipv6)) in table.sets().iter().zip(counts) {
        tracing::info!(set = %set.name, internal = set.internal, ipv4, ipv6, "set loaded");
    }
    tracing::info!(
        config = %config.display(),
        generation = table.generation(),
        prefixes = table.prefix_count(),
        table_bytes = table.memory_bytes(),
        build_ms = snapshot.build_time.as_secs_f64() * 1000.0,
        "table loaded"
    );
}
