//! The `ipclass` binary: parses flags, starts logging, runs one command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ipclass::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Cli::parse();
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

/// Attributes of `sched_setattr(2)`, as in `linux/sched/types.h`.
#[cfg(target_os = "linux")]
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Sets the scheduler time slice of the calling thread to `slice`. For a
/// normal thread, `runtime` sets the EEVDF slice on Linux 6.12 and later.
/// NOTE: older kernels are expected to ignore the field; no test ran there.
#[cfg(target_os = "linux")]
fn set_sched_slice(slice: std::time::Duration) {
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        // SAFETY: getpriority takes no pointers. On Linux, process 0 is the
        // calling thread, whose nice value the call below keeps.
        nice: unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        priority: 0,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        deadline: 0,
        period: 0,
    };
    // SAFETY: `attr` is a valid `sched_attr` of the size it declares, and it
    // outlives the call; thread id 0 names the calling thread.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    // Each runtime thread makes the call; only the first failure is logged.
    static WARNED: std::sync::Once = std::sync::Once::new();
    if result != 0 {
        let error = std::io::Error::last_os_error();
        let slice_us = slice.as_micros();
        WARNED.call_once(|| {
            tracing::warn!(%error, slice_us, "failed to set the scheduler time slice; running with the kernel default; set --sched-slice off to skip the attempt");
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_sched_slice(_slice: std::time::Duration) {}

fn init_tracing(format: LogFormat) {
    // The file-watching library warns about watches that a rename or delete
    // already removed, which every editor save causes.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,notify=error,inotify=error"));
    // Colour codes only help a person at a terminal; in a file or journald
    // they are noise around every field.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
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
    }
}
