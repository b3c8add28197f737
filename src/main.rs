//! The `ipclass` binary: parses flags, starts logging, runs one command.

use std::io::IsTerminal;
use std::process::ExitCode;

use ipclass::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Cli::parse_or_exit();
    init_tracing(args.log_format);
    match args.command {
        Command::Check(check) => cli::check(&check),
        Command::Lookup(lookup) => cli::lookup(&lookup),
        Command::Serve(serve) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all();
            if let Some(workers) = serve.workers {
                builder.worker_threads(usize::from(workers));
            }
            if let Some(slice) = serve.sched_slice.0 {
                builder.on_thread_start(move || set_sched_slice(slice));
            }
            let runtime = match builder.build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("failed to start the async runtime: {error}");
                    return ExitCode::from(cli::EXIT_RUNTIME_FAILURE);
                }
            };
            let code = runtime.block_on(async {
                // Registered before the server starts, because a signal that
                // arrives before registration kills the process at once.
                let shutdown = shutdown_signal();
                cli::serve(&serve, shutdown).await
            });
            // A reload may still be reading files or waiting out its settle
            // period on a blocking thread, and the process exits without it.
            runtime.shutdown_background();
            code
        }
    }
}

/// Gives the calling runtime thread the scheduler time slice `slice`.
fn set_sched_slice(slice: std::time::Duration) {
    // Each runtime thread makes the call, and only the first failure is logged.
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(error) = ipclass::sched::set_thread_slice(Some(slice)) {
        let slice_us = slice.as_micros();
        WARNED.call_once(|| {
            tracing::warn!(%error, slice_us, "failed to set the scheduler time slice; running with the kernel default; set --sched-slice off to skip the attempt");
        });
    }
}

/// Directives of the log filter when RUST_LOG is unset or invalid. The
/// file-watching library warns about watches that a rename or delete
/// already removed, which every editor save causes.
const DEFAULT_LOG_FILTER: &str = "info,notify=error,inotify=error";

/// Level for all targets that RUST_LOG gets when it sets levels only for
/// some, so that a typo such as `RUST_LOG=nonsense` cannot hide errors.
const FALLBACK_LOG_LEVEL: &str = "warn";

/// Builds the log filter from RUST_LOG. Also returns a warning about
/// RUST_LOG, if any, to log once logging is set up.
fn log_filter() -> (EnvFilter, Option<String>) {
    let directives = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) => directives,
        Err(std::env::VarError::NotPresent) => String::new(),
        Err(std::env::VarError::NotUnicode(text)) => {
            let problem = format!("RUST_LOG {:?} is not UTF-8; logging with {DEFAULT_LOG_FILTER:?}; set RUST_LOG to a level such as info or debug", text.to_string_lossy());
            return (EnvFilter::new(DEFAULT_LOG_FILTER), Some(problem));
        }
    };
    if directives.trim().is_empty() {
        return (EnvFilter::new(DEFAULT_LOG_FILTER), None);
    }
    match EnvFilter::try_new(&directives) {
        Err(error) => {
            let problem = format!("invalid RUST_LOG {directives:?}: {error}; logging with {DEFAULT_LOG_FILTER:?}; set RUST_LOG to a level such as info or debug");
            (EnvFilter::new(DEFAULT_LOG_FILTER), Some(problem))
        }
        Ok(filter) if sets_global_level(&directives) => (filter, None),
        Ok(_) => {
            let problem = format!("RUST_LOG {directives:?} sets no level for all targets, so warnings and errors of every target are logged too; start it with a level such as \"info,\" to choose another");
            let filter = EnvFilter::new(format!("{FALLBACK_LOG_LEVEL},{directives}"));
            (filter, Some(problem))
        }
    }
}

/// Tells whether `directives` contains a bare level, which applies to every
/// target.
fn sets_global_level(directives: &str) -> bool {
    directives
        .split(',')
        .map(str::trim)
        // An empty directive parses as a level but sets none.
        .filter(|directive| !directive.is_empty())
        .any(|directive| {
            directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_ok()
        })
}

fn init_tracing(format: LogFormat) {
    let (filter, problem) = log_filter();
    // Colour codes only help a person at a terminal; in a file or journald
    // they are noise around every field.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written is dropped. Reporting it on the
        // same closed stderr would panic and stop the server.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// Registers for SIGTERM and SIGINT (Ctrl-C) now, and returns a future that
/// resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let (mut terminate, mut interrupt) = match (terminate, interrupt) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "failed to watch SIGTERM and SIGINT; stop the server with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "signal received"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        }
        // A second signal cuts the shutdown delay and the grace period short.
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::warn!("second signal received; exiting without waiting for open requests");
            std::process::exit(0);
        });
    }
}
