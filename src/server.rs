//! One listener for gRPC and HTTP/JSON, with health, reflection and a
//! graceful shutdown that is bounded by a grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use bytes::BytesMut;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::activity::{Activity, Tracked};
use crate::address::MAX_ADDRESS_LEN;
use crate::grpc::text::{self, TextService};
use crate::grpc::{ClassifierService, IpClassifierServer};
use crate::http;
use crate::http::fast::{self, Outcome, Rewind};
use crate::metrics;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::state::AppState;

/// Builds the router that serves every API on one listener, and the
/// reporter that sets the status the gRPC health service returns.
pub async fn router(state: Arc<AppState>, metrics: PrometheusHandle) -> (Router, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<IpClassifierServer<ClassifierService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");

    // A text address is at most MAX_ADDRESS_LEN bytes plus a few bytes of
    // framing, so a full batch always fits.
    let max_message = state
        .max_batch
        .saturating_mul(MAX_ADDRESS_LEN + 8)
        .saturating_add(4096);
    // Requests may be gzip-compressed, and the limit applies to the
    // decompressed message. Responses stay uncompressed.
    let classifier = IpClassifierServer::new(ClassifierService::new(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message);

    let router = Routes::new(classifier)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        // The exact path takes precedence over the generated service's
        // wildcard route, so the leaner codec serves IsInternal.
        .route_service(text::PATH, TextService::new(state.clone(), max_message))
        .merge(metrics::routes(metrics, state.clone()))
        .merge(http::routes(state.clone()))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(axum::middleware::from_fn(http::drop_unused_body))
        .layer(axum::middleware::from_fn_with_state(
            state.responses.clone(),
            metrics::count_http,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            http::close_when_shutting_down,
        ));
    (router, reporter)
}

/// Time limits of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time open requests get to finish once shutdown begins.
    pub grace: Duration,
    /// Time the server keeps serving after a shutdown signal, while it
    /// reports itself not ready, before it stops accepting.
    pub shutdown_delay: Duration,
    /// Time an HTTP/1.1 connection gets to send a complete request head,
    /// counted from its start or its last response.
    pub header_read: Duration,
    /// Maximum wait for the next piece of a request body.
    pub body_read: Duration,
    /// Time without a new request, a body frame or an open stream after which
    /// a connection is closed.
    pub idle: Duration,
    /// Connections served at once on the main listener. Further clients
    /// wait in the kernel's listen queue until one closes.
    pub max_connections: usize,
}

/// Connections served at once on the metrics listener, which only
/// scrapers use.
const MAX_METRICS_CONNECTIONS: usize = 64;

/// TCP keepalive of client connections, which finds clients whose host is
/// gone: the first probe after this idle time, then one at each interval,
/// and the connection fails after the last unanswered one. HTTP/2 pings
/// would find them too, but hyper then reads the clock on every frame.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// Time a connection closed for being idle gets to finish its goodbye: an
/// HTTP/2 client acknowledges the GOAWAY, and a silent one is dropped then.
const IDLE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Time between warnings while the connection limit keeps clients waiting.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Connections the kernel queues before they are accepted, capped by
/// `net.core.somaxconn`. Clients over `--max-connections` wait there, and
/// std's queue of 128 overflowed in bursts of new connections, which then
/// waited a second for the SYN to be sent again.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address`; port 0 picks a free port.
pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std does on Unix, so a restarted server can bind while connections
    // of the old one linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` resolves, then reports NOT_SERVING, stops
/// accepting, and waits at most `limits.grace` for open requests to finish.
/// `metrics_listener`, if given, serves only `/metrics` and stops with the
/// main listener.
pub async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> io::Result<()> {
    let (app, mut reporter) = router(state.clone(), metrics.clone()).await;
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    servers.spawn(serve_until_drained(
        listener,
        app,
        Some(state.clone()),
        limits,
        drain_rx.clone(),
    ));
    if let Some(metrics_listener) = metrics_listener {
        let app = metrics::routes(metrics, state.clone())
            .fallback(http::metrics_not_found)
            .method_not_allowed_fallback(http::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                state.responses.clone(),
                metrics::count_http,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                http::close_when_shutting_down,
            ));
        let limits = Limits {
            // A quarter of the main limit at most, so that with a low
            // open-file limit both listeners together stay within it.
            max_connections: (limits.max_connections / 4).clamp(1, MAX_METRICS_CONNECTIONS),
            ..limits
        };
        servers.spawn(serve_until_drained(
            metrics_listener,
            app,
            None,
            limits,
            drain_rx,
        ));
    }

    tokio::select! {
        Some(result) = servers.join_next() => {
            servers.abort_all();
            return flatten(result);
        }
        () = shutdown => {}
    }

    // Marked before the log line, so that once the line is written, /readyz
    // and gRPC health already report the shutdown.
    state.begin_shutdown();
    report_not_serving(&mut reporter).await;
    tracing::info!(
        grace_seconds = limits.grace.as_secs_f64(),
        delay_seconds = limits.shutdown_delay.as_secs_f64(),
        "shutting down"
    );
    // Load balancers see the instance as not ready during the delay, and
    // take it out before it stops accepting.
    tokio::select! {
        Some(result) = servers.join_next() => {
            servers.abort_all();
            return flatten(result);
        }
        () = tokio::time::sleep(limits.shutdown_delay) => {}
    }
    end_health_watches(&mut reporter).await;
    let _ = drain_tx.send(true);
    let drained = async {
        while let Some(result) = servers.join_next().await {
            flatten(result)?;
        }
        Ok(())
    };
    match tokio::time::timeout(limits.grace, drained).await {
        Ok(result) => result,
        Err(_) => {
            // Connections that are still open when the process exits are
            // closed by the kernel.
            tracing::warn!(
                grace_seconds = limits.grace.as_secs_f64(),
                "connections still open after the grace period; closing them"
            );
            servers.abort_all();
            Ok(())
        }
    }
}

/// Serves `app` on `listener` until `drain` turns true, then waits for open
/// connections to finish their requests. With `fast`, each connection
/// starts in [`fast::serve`], which serves single-address GETs itself. An
/// HTTP/2 connection closes only after its client acknowledges the GOAWAY,
/// so a client that stops reading keeps it open until the grace period ends.
async fn serve_until_drained(
    listener: TcpListener,
    app: Router,
    fast: Option<Arc<AppState>>,
    limits: Limits,
    drain: watch::Receiver<bool>,
) -> io::Result<()> {
    let max_connections = limits.max_connections;
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut last_warning: Option<Instant> = None;
    let mut stop = drain.clone();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_warning.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL) {
                    if fast.is_some() {
                        tracing::warn!(max_connections, "connection limit reached; new clients wait until a connection closes; raise --max-connections and the open-file limit to serve more");
                    } else {
                        tracing::warn!(max_connections, "metrics connection limit reached; new scrapers wait until a connection closes; close idle scrape connections, or scrape /metrics on --listen");
                    }
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = drained(&mut stop) => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = drained(&mut stop) => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "failed to set TCP keepalive");
        }
        let served = connection(stream, app.clone(), fast.clone(), limits, drain.clone());
        connections.spawn(async move {
            served.await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection: first the fast path, if any, then hyper with
/// whatever the fast path left unanswered. A connection idle for
/// `limits.idle`, as [`Activity::idle_for`] defines it, is closed as in a
/// shutdown.
async fn connection(
    stream: TcpStream,
    app: Router,
    fast: Option<Arc<AppState>>,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) {
    let (io, served) = match fast {
        Some(state) => match fast::serve(stream, &state, limits.header_read, &mut drain).await {
            Outcome::Closed => return,
            Outcome::Handoff { io, served } => (io, served),
        },
        None => {
            // Hyper's header read timeout does not cover a connection that
            // sent nothing or part of an HTTP/2 client preface (hyper 1.x
            // here), so those bytes are read here under that timeout. A shutdown closes
            // such a connection at once.
            let mut stream = stream;
            let mut head = BytesMut::with_capacity(32);
            let deadline = tokio::time::Instant::now() + limits.header_read;
            while fast::preface_pending(&head) {
                tokio::select! {
                    read = tokio::time::timeout_at(deadline, stream.read_buf(&mut head)) => match read {
                        Ok(Ok(0) | Err(_)) => return,
                        Ok(Ok(_)) => {}
                        Err(_) => {
                            tracing::debug!(
                                timeout_seconds = limits.header_read.as_secs_f64(),
                                buffered = head.len(),
                                "no request within the header read timeout; closing the connection"
                            );
                            return;
                        }
                    },
                    () = drained(&mut drain) => return,
                }
            }
            (Rewind::new(head.freeze(), stream), false)
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if served {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // Each HTTP/2 stream buffers at most about one piece of a response
    // beyond what the client has read. So a client that grants a large
    // window and reads nothing leaves the rest of a large response in its
    // reservation.
    // NOTE: no test covers this bound. It was measured with 40 connections
    // of 200 unread streams each (BENCHMARKS.md); one connection's streams
    // stall behind its full socket before enough of them start.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(crate::response::PIECE);
    let activity = Arc::new(Activity::default());
    let service = Tracked::new(app, activity.clone(), limits.body_read);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let idle = tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::trace!(%error, "connection ended with an error");
            }
            return;
        }
        () = drained(&mut drain) => false,
        () = activity.idle_for(limits.idle) => true,
    };
    connection.as_mut().graceful_shutdown();
    if idle {
        tracing::debug!(
            idle_seconds = limits.idle.as_secs_f64(),
            "closing an idle connection, or one whose client stopped reading"
        );
        // A client that never acknowledges the goodbye would otherwise keep
        // the connection open.
        if let Ok(Err(error)) = tokio::time::timeout(IDLE_CLOSE_WAIT, connection).await {
            tracing::trace!(%error, "connection ended with an error");
        }
    } else if let Err(error) = connection.await {
        tracing::trace!(%error, "connection ended with an error");
    }
}

/// Resolves once `drain` is true or its sender is gone.
pub async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|drain| *drain).await;
}

/// Waits after a failed accept. Errors of a single connection are retried at
/// once. Others, such as running out of file descriptors, wait a second so
/// that the loop does not spin.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "failed to accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Reports NOT_SERVING to every health check and Watch stream.
async fn report_not_serving(reporter: &mut HealthReporter) {
    reporter
        .set_not_serving::<IpClassifierServer<ClassifierService>>()
        .await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Ends every health Watch stream. A Watch stream never finishes by itself,
/// so without this a watching client would hold its connection open for the
/// whole grace period. Checks then return NOT_FOUND.
async fn end_health_watches(reporter: &mut HealthReporter) {
    // Each Watch stream yields the NOT_SERVING status it has not yet seen
    // before it observes the removal and ends.
    reporter
        .clear_service_status(<IpClassifierServer<ClassifierService> as NamedService>::NAME)
        .await;
    reporter.clear_service_status("").await;
}

fn flatten(result: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    result.map_err(io::Error::other)?
}
