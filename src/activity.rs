//! Request tracking for one connection: counts of requests, open streams
//! and body frames, so that a connection without any progress for a while
//! can be closed, and a timeout on each wait for request body data.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::BoxError;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;
use tower::Service;

use crate::metrics::is_grpc;

/// Paths whose request bodies may pause without limit: a reflection client
/// keeps its request stream open between questions.
const UNTIMED_PREFIX: &str = "/grpc.reflection.";

/// Path of the health service's stream, which may stay silent for hours.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Counts of the requests on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    /// Open requests of the streaming methods: reflection and health Watch.
    streams: AtomicUsize,
    /// Requests started since the connection opened.
    started: AtomicU64,
    /// Frames of request and response bodies passed on so far.
    frames: AtomicU64,
}

impl Activity {
    /// Resolves once the connection has been idle for `timeout`: no request
    /// started, no body frame passed, and no stream open. It checks every
    /// quarter of `timeout`, so it resolves at most a quarter late. A unary
    /// request whose response the client does not read counts as idle, so
    /// that such a client cannot hold a connection forever.
    pub async fn idle_for(&self, timeout: Duration) {
        let tick = (timeout / 4).max(Duration::from_millis(10));
        let mut seen = self.counts();
        let mut idle_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let counts = self.counts();
            let now = tokio::time::Instant::now();
            if counts != seen || self.streams.load(Ordering::Relaxed) > 0 {
                seen = counts;
                idle_since = now;
            } else if now.duration_since(idle_since) >= timeout {
                return;
            }
        }
    }

    fn counts(&self) -> (u64, u64) {
        let started = self.started.load(Ordering::Relaxed);
        (started, self.frames.load(Ordering::Relaxed))
    }

    fn frame_passed(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request whose response body is not finished or dropped yet. For a
/// stream it keeps [`Activity::streams`] one higher until dropped.
pub struct OpenRequest {
    activity: Arc<Activity>,
    stream: bool,
}

impl OpenRequest {
    fn new(activity: &Arc<Activity>, stream: bool) -> OpenRequest {
        activity.started.fetch_add(1, Ordering::Relaxed);
        if stream {
            activity.streams.fetch_add(1, Ordering::Relaxed);
        }
        OpenRequest {
            activity: activity.clone(),
            stream,
        }
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        if self.stream {
            self.activity.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A service that records its requests in an [`Activity`] and fails a
/// request body that sends nothing for `body_timeout`.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>, body_timeout: Duration) -> Tracked<S> {
        Tracked {
            inner,
            activity,
            body_timeout,
        }
    }
}

impl<S, B> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let untimed = path.starts_with(UNTIMED_PREFIX);
        let open = OpenRequest::new(&self.activity, untimed || path == HEALTH_WATCH);
        let request = if untimed {
            request.map(Body::new)
        } else {
            let grpc = is_grpc(request.headers());
            let timeout = self.body_timeout;
            let activity = self.activity.clone();
            request.map(|body| timed_body(body, timeout, grpc, activity))
        };
        TrackedFuture {
            response: self.inner.call(request),
            open: Some(open),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Tracked`], which moves the open request into
    /// the response body.
    pub struct TrackedFuture<F> {
        #[pin]
        response: F,
        open: Option<OpenRequest>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx))?;
        let open = this
            .open
            .take()
            .expect("a response future is not polled after it ends");
        Poll::Ready(Ok(response.map(|body| Body::new(Guarded { body, open }))))
    }
}

/// Wraps `body` so that a wait of more than `timeout` for its next frame
/// fails it. For gRPC the error is a status, which tonic passes on to the
/// client as it is.
fn timed_body<B>(body: B, timeout: Duration, grpc: bool, activity: Arc<Activity>) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(TimedBody {
        body,
        timeout,
        grpc,
        timer: None,
        armed: false,
        activity,
    })
}

/// A request body that fails when its next frame takes longer than
/// `timeout`. The timer starts only when a poll finds no frame ready, so a
/// body that arrives with its request costs no timer at all. tower-http's
/// `TimeoutBody` starts one on every poll, and every timer start takes a
/// lock of tokio's timer driver.
struct TimedBody<B> {
    body: B,
    timeout: Duration,
    grpc: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the frame now awaited.
    armed: bool,
    activity: Arc<Activity>,
}

impl<B> hyper::body::Body for TimedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            self.armed = false;
            self.activity.frame_passed();
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let armed = std::mem::replace(&mut self.armed, true);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !armed {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let stalled = BodyStalled(self.timeout);
        let error: BoxError = if self.grpc {
            Box::new(tonic::Status::deadline_exceeded(stalled.to_string()))
        } else {
            Box::new(stalled)
        };
        Poll::Ready(Some(Err(error)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Error of a request body that sent nothing for the given time.
#[derive(Debug, thiserror::Error)]
#[error("no request body data arrived for {}; send the body without pauses that long, or raise --body-read-timeout", humantime::format_duration(*.0))]
pub struct BodyStalled(pub Duration);

/// A response body that keeps its request counted as open until the body
/// is finished or dropped.
struct Guarded {
    body: Body,
    open: OpenRequest,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if frame.is_ready() {
            self.open.activity.frame_passed();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
