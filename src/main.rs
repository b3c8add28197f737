//! The `ipclass` binary: parses flags, starts logging, runs one command.

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
            let runtime = match builder.build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("failed to start the async runtime: {error}");
                    return ExitCode::from(cli::EXIT_RUNTIME_FAILURE);
                }
            };
            runtime.block_on(cli::serve(&serve, shutdown_signal()))
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to watch SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
        () = terminate => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
