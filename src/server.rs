//! One listener for gRPC and HTTP/JSON, with health, reflection and a
//! graceful shutdown that is bounded by a grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::address::MAX_ADDRESS_LEN;
use crate::grpc::text::{self, TextService};
use crate::grpc::{ClassifierService, IpClassifierServer};
use crate::http;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::state::AppState;

/// Builds the router that serves every API on one listener, and the
/// reporter that sets the status the gRPC health service returns.
pub async fn router(state: Arc<AppState>) -> (Router, HealthReporter) {
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
    let classifier = IpClassifierServer::new(ClassifierService::new(state.clone()))
        .max_decoding_message_size(max_message);

    let router = Routes::new(classifier)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        // The exact path takes precedence over the generated service's
        // wildcard route, so IsInternal is answered by the leaner codec.
        .route_service(text::PATH, TextService::new(state.clone(), max_message))
        .merge(http::routes(state))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed);
    (router, reporter)
}

/// Binds `address`; port 0 picks a free port.
pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves until `shutdown` resolves, then reports NOT_SERVING, stops
/// accepting, and waits at most `grace` for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let (app, reporter) = router(state.clone()).await;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = drain_rx.await;
    });
    let mut server = tokio::spawn(async move { server.await });

    tokio::select! {
        result = &mut server => return flatten(result),
        () = shutdown => {}
    }

    tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down");
    state.begin_shutdown();
    report_not_serving(&reporter).await;
    let _ = drain_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => flatten(result),
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "connections still open after the grace period; closing them"
            );
            server.abort();
            Ok(())
        }
    }
}

async fn report_not_serving(reporter: &HealthReporter) {
    reporter
        .set_not_serving::<IpClassifierServer<ClassifierService>>()
        .await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

fn flatten(result: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    result.map_err(io::Error::other)?
}
