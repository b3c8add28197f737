//! Prometheus metrics: the recorder, the `/metrics` route, and the counters
//! that the APIs update once per batch.
//!
//! Metrics are recorded through the `metrics` crate macros, so any module may
//! record its own; this module installs the recorder that renders them all.
//! Labels take values only from fixed sets (API names, verdicts, status
//! codes, set names from the config), never an address.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::OwnedSemaphorePermit;

use crate::classify::Classification;
use crate::response::{self, ResponseBudget};
use crate::state::AppState;
use crate::table::{SetId, Table, Verdict};

pub const LOOKUPS: &str = "ipclass_lookups_total";
pub const REQUESTS: &str = "ipclass_requests_total";
pub const REQUEST_DURATION: &str = "ipclass_request_duration_seconds";
pub const BATCH_SIZE: &str = "ipclass_batch_size";
pub const SET_HITS: &str = "ipclass_set_hits_total";
pub const BUILD_INFO: &str = "ipclass_build_info";
const TABLE_PREFIXES: &str = "ipclass_table_prefixes";
const TABLE_PREFIXES_HELP: &str =
    "Prefixes in the table that answers now, by set and family (ipv4 or ipv6).";

/// Upper bounds of the request duration buckets, in seconds: 10µs to 1s,
/// because a lookup takes well under a microsecond and a full batch of
/// 65,536 text addresses takes tens of milliseconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds of the batch size buckets: powers of 4 from 1 to 65,536, the
/// default maximum batch.
const BATCH_BUCKETS: [f64; 9] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// How often histogram samples are folded into the rendered state when no
/// scrape does it.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The APIs that requests are counted under; the value of the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Api {
    GrpcIsInternal,
    GrpcIsInternalPacked,
    GrpcGetTableInfo,
    HttpGet,
    HttpPost,
    HttpTable,
    /// Health, readiness, `/metrics`, and paths that no route serves.
    HttpOther,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::GrpcIsInternal => "grpc_is_internal",
            Api::GrpcIsInternalPacked => "grpc_is_internal_packed",
            Api::GrpcGetTableInfo => "grpc_get_table_info",
            Api::HttpGet => "http_get",
            Api::HttpPost => "http_post",
            Api::HttpTable => "http_table",
            Api::HttpOther => "http_other",
        }
    }

    /// Position of the API's handles in [`HANDLES`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Number of [`Api`] variants.
const API_COUNT: usize = 7;

/// Number of gRPC status codes, `OK` (0) to `UNAUTHENTICATED` (16).
const GRPC_CODES: usize = 17;

/// HTTP statuses that the server sends, whose request counters are resolved
/// once. Any other status is looked up in the registry on each request.
const HTTP_STATUSES: [u16; 11] = [200, 400, 404, 405, 408, 413, 415, 422, 429, 500, 503];

/// Set by [`install`]. Before it, a handle would belong to no recorder and
/// count nothing forever, so handles are resolved per use and not kept.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The labelled handles of one API, each resolved in the registry on its
/// first use and reused afterwards, so a request hashes no metric key.
///
/// Handles are resolved on first use, not at start-up, because resolving a
/// handle creates its series, and a series appears only once counted.
struct ApiHandles {
    grpc_requests: [OnceLock<Counter>; GRPC_CODES],
    http_requests: [OnceLock<Counter>; HTTP_STATUSES.len()],
    duration: OnceLock<Histogram>,
    batch_size: OnceLock<Histogram>,
    lookups: [OnceLock<Counter>; VERDICTS.len()],
}

impl ApiHandles {
    const fn new() -> ApiHandles {
        ApiHandles {
            grpc_requests: [const { OnceLock::new() }; GRPC_CODES],
            http_requests: [const { OnceLock::new() }; HTTP_STATUSES.len()],
            duration: OnceLock::new(),
            batch_size: OnceLock::new(),
            lookups: [const { OnceLock::new() }; VERDICTS.len()],
        }
    }
}

/// Handles of every API, indexed by [`Api::index`].
static HANDLES: [ApiHandles; API_COUNT] = [const { ApiHandles::new() }; API_COUNT];

fn handles(api: Api) -> &'static ApiHandles {
    &HANDLES[api.index()]
}

/// Calls `apply` with the handle in `cell`, resolving it with `resolve` on
/// first use once the recorder is installed.
///
/// NOTE: once [`install`] has run, kept handles write to the global recorder
/// even inside `metrics::with_local_recorder`, so a test that needs request
/// metrics in a local recorder must run in a process without [`install`].
fn with_handle<T>(cell: &OnceLock<T>, resolve: impl FnOnce() -> T, apply: impl FnOnce(&T)) {
    if INSTALLED.load(Ordering::Acquire) {
        apply(cell.get_or_init(resolve));
    } else {
        apply(&resolve());
    }
}

/// Installs the global recorder, describes every metric, and sets
/// `ipclass_build_info`. Call it once, inside the runtime, before any table
/// is built, because tables resolve their per-set counters when built.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS)?
        .install_recorder()?;
    INSTALLED.store(true, Ordering::Release);
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    describe_counter!(
        LOOKUPS,
        "Addresses classified, by API and verdict (internal, external, unknown, invalid)."
    );
    describe_counter!(
        REQUESTS,
        "Requests answered, by API and status code (gRPC code name or HTTP status)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer a request, by API. gRPC time excludes message decoding and encoding."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Addresses in each accepted request, by API."
    );
    describe_counter!(
        SET_HITS,
        "Addresses whose longest matching prefix belongs to the set, by set name."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running ipclass release."
    );
}

/// Routes that serve `/metrics`: the series in `handle`, then the prefix
/// counts of the table that `state` serves.
pub fn routes(handle: PrometheusHandle, state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state((handle, state))
}

async fn render(State((handle, state)): State<(PrometheusHandle, Arc<AppState>)>) -> Response {
    let mut text = handle.render();
    write_table_prefixes(&mut text, &state.snapshot().table);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Appends `ipclass_table_prefixes` for each set of `table`. Reading the
/// table at each scrape drops the series of a set that a reload removed,
/// where a registry gauge would stay at 0.
fn write_table_prefixes(text: &mut String, table: &Table) {
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let _ = writeln!(text, "# HELP {TABLE_PREFIXES} {TABLE_PREFIXES_HELP}");
    let _ = writeln!(text, "# TYPE {TABLE_PREFIXES} gauge");
    for (set, (ipv4, ipv6)) in table.sets().iter().zip(table.prefix_counts()) {
        // Set names are letters, digits, '-', '_' and '.', so they need no
        // escaping in a label value.
        let name = &set.name;
        let _ = writeln!(
            text,
            "{TABLE_PREFIXES}{{set=\"{name}\",family=\"ipv4\"}} {ipv4}"
        );
        let _ = writeln!(
            text,
            "{TABLE_PREFIXES}{{set=\"{name}\",family=\"ipv6\"}} {ipv6}"
        );
    }
}

/// Counts `ipclass_requests_total` and `ipclass_request_duration_seconds`
/// for every HTTP request, including rejected ones and 404 fallbacks, and
/// for every call of the classifier's gRPC methods.
pub async fn count_http(
    State(responses): State<ResponseBudget>,
    request: Request,
    next: Next,
) -> Response {
    let grpc = is_grpc(request.headers());
    if grpc && request.version() == axum::http::Version::HTTP_2 {
        let path = request.uri().path();
        if request.method() != Method::POST {
            let method = crate::http::shortened(request.method().as_str());
            let message = format!("gRPC calls use POST, and this one used {method}");
            return tonic::Status::unimplemented(message).into_http();
        }
        return match grpc_api(path) {
            Some(api) => count_grpc_call(api, responses, request, next).await,
            None => match unimplemented_method(path) {
                Some(status) => status.into_http(),
                None => next.run(request).await,
            },
        };
    }
    let api = http_api(&request);
    let started = Instant::now();
    // gRPC over HTTP/1.1 has no trailers, so its status could not arrive.
    let rejection = if grpc {
        Some(crate::http::grpc_needs_http2(&request))
    } else if is_grpc_service_path(request.uri().path()) {
        Some(crate::http::grpc_needs_content_type(&request))
    } else {
        crate::http::host_rejection(&request)
            .or_else(|| crate::http::transfer_coding_rejection(&request))
    };
    let response = match rejection {
        // A response to HEAD has no body, and hyper removes it only over
        // HTTP/1.
        Some(mut rejection) if request.method() == Method::HEAD => {
            *rejection.body_mut() = Body::empty();
            rejection
        }
        Some(rejection) => rejection,
        None => next.run(request).await,
    };
    record_http_status(api, response.status(), started.elapsed());
    response
}

/// Counts a gRPC call of the classifier by how it ends. A failed unary call
/// returns its status in the response headers, whether the method rejected
/// it or tonic did before the method ran, as for a message that does not
/// decode or exceeds the size limit. A call that succeeds ends with the
/// trailers of its response body, and one whose client resets the stream
/// before then, as at its deadline, drops that body unfinished.
async fn count_grpc_call(
    api: Api,
    responses: ResponseBudget,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let ended = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(WatchedBody {
            body,
            ended: ended.clone(),
            framing: Framing::default(),
        })
    });
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .map(|value| grpc_timeout(value.as_bytes()).ok_or(value.clone()));
    let unfinished = Unfinished {
        api,
        started,
        timeout: match deadline {
            Some(Ok(timeout)) => Some(timeout),
            _ => None,
        },
    };
    let mut response = match deadline {
        Some(Err(value)) => tonic::Status::invalid_argument(format!(
            "malformed grpc-timeout {:?}; it takes 1 to 8 digits and a unit: H, M, S, m, u or n",
            crate::http::shortened(&String::from_utf8_lossy(value.as_bytes()))
        ))
        .into_http(),
        Some(Ok(timeout)) => match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => deadline_exceeded(timeout).into_http(),
        },
        None => next.run(request).await,
    };
    let Some(code) = grpc_status(response.headers()) else {
        // The status comes in the trailers at the end of the body.
        return response.map(|body| {
            Body::new(CountedBody {
                body,
                unfinished: Some(unfinished),
                ended,
                responses,
                rest: Bytes::new(),
                reservation: None,
                rejected: false,
            })
        });
    };
    let code = end_call(unfinished, code, &ended, response.headers());
    match code {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
            // Percent-encoded as grpc-message requires.
            advise(
                response.headers_mut(),
                "%3B%20split%20the%20batch%20or%20raise%20--max-batch-size",
            );
        }
        // tonic's message names an encoding it lacks, but not the one it has.
        tonic::Code::Unimplemented if response.headers().contains_key("grpc-accept-encoding") => {
            advise(
                response.headers_mut(),
                "%3B%20send%20gzip%20or%20uncompressed%20messages",
            );
        }
        _ => {}
    }
    response
}

/// Returns the `grpc-status` in `headers`.
fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let number = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(number))
}

/// Counts a call that ended with `code` and the status in `headers`, and
/// logs a failure. Returns the code counted: tonic takes a request body
/// that the client cancelled, `ended`, for one that stopped early and
/// returns INTERNAL, which counts as CANCELLED, or as DEADLINE_EXCEEDED
/// once the deadline has passed.
fn end_call(
    call: Unfinished,
    code: tonic::Code,
    ended: &AtomicBool,
    headers: &HeaderMap,
) -> tonic::Code {
    let code = match code != tonic::Code::Ok && ended.load(Ordering::Relaxed) {
        true => match call.past_deadline() {
            Some(_) => tonic::Code::DeadlineExceeded,
            None => tonic::Code::Cancelled,
        },
        false => code,
    };
    let (api, started) = (call.api, call.started);
    std::mem::forget(call);
    record_grpc_code(api, code, started.elapsed());
    if code != tonic::Code::Ok {
        let status = tonic::Status::from_header_map(headers);
        tracing::debug!(
            api = api.as_str(),
            code = grpc_code_name(code),
            error = status.as_ref().map_or("", |status| status.message()),
            "gRPC call failed"
        );
    }
    code
}

pin_project_lite::pin_project! {
    /// The response body of a gRPC call, which counts the call with the
    /// status in its trailers, or as unfinished if it is dropped before.
    struct CountedBody {
        #[pin]
        body: Body,
        unfinished: Option<Unfinished>,
        ended: Arc<AtomicBool>,
        // A message over `response::THRESHOLD` bytes goes out in pieces, and
        // `rest` keeps what is left of it under its reservation.
        responses: ResponseBudget,
        rest: Bytes,
        reservation: Option<OwnedSemaphorePermit>,
        // Set when a message did not fit the budget and the call ended.
        rejected: bool,
    }
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if !this.rest.is_empty() {
            let piece = response::next_piece(this.rest);
            if this.rest.is_empty() {
                *this.reservation = None;
            }
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if *this.rejected {
            return Poll::Ready(None);
        }
        let mut frame = std::task::ready!(this.body.poll_frame(cx));
        if let Some(data) = frame
            .as_mut()
            .and_then(|frame| frame.as_mut().ok())
            .and_then(Frame::data_mut)
            .filter(|data| data.len() > response::THRESHOLD)
        {
            match this.responses.reserve(data.len()) {
                Some(reservation) => {
                    *this.rest = std::mem::take(data);
                    *this.reservation = Some(reservation);
                    return Poll::Ready(Some(Ok(Frame::data(response::next_piece(this.rest)))));
                }
                None => {
                    let status =
                        tonic::Status::resource_exhausted(this.responses.rejection(data.len()));
                    let mut trailers = HeaderMap::new();
                    if status.add_header(&mut trailers).is_ok() {
                        frame = Some(Ok(Frame::trailers(trailers)));
                        *this.rejected = true;
                    }
                }
            }
        }
        let ends = match &frame {
            Some(Ok(frame)) => frame.is_trailers(),
            _ => true,
        };
        if !ends {
            return Poll::Ready(frame);
        }

        let Some(unfinished) = this.unfinished.take() else {
            return Poll::Ready(frame);
        };
        // A response that ends after the deadline fails the call, because
        // its client has stopped waiting.
        if let Some(status) = unfinished.past_deadline() {
            let mut trailers = HeaderMap::new();
            if status.add_header(&mut trailers).is_ok() {
                frame = Some(Ok(Frame::trailers(trailers)));
            }
        }

        let empty = HeaderMap::new();
        let trailers = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().unwrap_or(&empty),
            _ => &empty,
        };
        // tonic ends every call with trailers, so a body that ends or fails
        // without them is a fault.
        let code = grpc_status(trailers).unwrap_or(tonic::Code::Internal);
        end_call(unfinished, code, this.ended, trailers);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && (self.rejected || self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.rest.is_empty() {
            true => self.body.size_hint(),
            false => SizeHint::default(),
        }
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u` or `n`), as the gRPC over HTTP/2 specification
/// defines it. Returns `None` for any other value, which fails the call.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A gRPC call in progress. Hyper drops a call whose client reset the
/// stream, and dropping this counts the call as `CANCELLED`, or as
/// `DEADLINE_EXCEEDED` once its deadline has passed, since a client resets
/// the stream when its deadline passes.
struct Unfinished {
    api: Api,
    started: Instant,
    /// The call's `grpc-timeout`.
    timeout: Option<Duration>,
}

impl Unfinished {
    /// Returns the status for a call whose `grpc-timeout` has passed.
    fn past_deadline(&self) -> Option<tonic::Status> {
        let timeout = self.timeout?;
        (self.started.elapsed() >= timeout).then(|| deadline_exceeded(timeout))
    }
}

/// Returns the status of a call that outlasted its `grpc-timeout`.
fn deadline_exceeded(timeout: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!(
        "the call did not finish within its grpc-timeout of {timeout:?}"
    ))
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let code = match self.past_deadline() {
            Some(_) => tonic::Code::DeadlineExceeded,
            None => tonic::Code::Cancelled,
        };
        record_grpc_code(self.api, code, self.started.elapsed());
    }
}

pin_project_lite::pin_project! {
    /// The request body of a unary call: notes in `ended` when the client
    /// cancels it, and fails when a second message starts, which tonic
    /// would read and drop.
    struct WatchedBody {
        #[pin]
        body: Body,
        ended: Arc<AtomicBool>,
        framing: Framing,
    }
}

/// Position of a request body in gRPC's framing. Each message is a 5-byte
/// prefix (a compression flag and a big-endian length), then that many
/// bytes.
#[derive(Debug, Default)]
struct Framing {
    messages: u32,
    /// Bytes of the current prefix seen so far, 0 between messages.
    prefix_seen: u8,
    length: u32,
    payload_left: usize,
}

impl Framing {
    /// Takes the next bytes of the body and returns the number of messages
    /// begun so far.
    fn feed(&mut self, mut bytes: &[u8]) -> u32 {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len());
                self.payload_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            if self.prefix_seen == 0 {
                self.messages += 1;
            } else {
                self.length = self.length << 8 | u32::from(byte);
            }
            self.prefix_seen += 1;
            if self.prefix_seen == 5 {
                self.payload_left = self.length as usize;
                self.prefix_seen = 0;
                self.length = 0;
            }
            bytes = rest;
        }
        self.messages
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Err(error)) if client_ended(error) => {
                this.ended.store(true, Ordering::Relaxed);
            }
            Some(Ok(frame)) => {
                let data = frame.data_ref().map_or(&[][..], |data| &data[..]);
                if this.framing.feed(data) > 1 {
                    // tonic takes a Status from the error's source chain.
                    let status = tonic::Status::internal(
                        "the call sent more than one request message, and its method takes one; send the whole batch in one message",
                    );
                    return Poll::Ready(Some(Err(axum::Error::new(status))));
                }
            }
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Returns true when `error` of a request body means that the client reset
/// the stream with `CANCEL` or that the connection closed, the two ways a
/// gRPC client cancels a call.
fn client_ended(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(error) = current.downcast_ref::<h2::Error>() {
            return error.reason() == Some(h2::Reason::CANCEL) || error.is_io();
        }
        if let Some(error) = current.downcast_ref::<hyper::Error>() {
            if error.is_incomplete_message() || error.is_canceled() {
                return true;
            }
        }
        source = current.source();
    }
    false
}

/// Appends `advice`, percent-encoded, to the `grpc-message` of a status
/// that tonic wrote without saying what to do.
fn advise(headers: &mut HeaderMap, advice: &str) {
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    let advised = [message.as_bytes(), advice.as_bytes()].concat();
    if let Ok(value) = HeaderValue::from_bytes(&advised) {
        headers.insert("grpc-message", value);
    }
}

/// The classifier method at `path`, if any.
fn grpc_api(path: &str) -> Option<Api> {
    match path.strip_prefix("/ipclass.v1.IpClassifier/")? {
        "IsInternal" => Some(Api::GrpcIsInternal),
        "IsInternalPacked" => Some(Api::GrpcIsInternalPacked),
        "GetTableInfo" => Some(Api::GrpcGetTableInfo),
        _ => None,
    }
}

/// Package and service prefixes of the paths of the gRPC methods served.
const GRPC_SERVICES: [&str; 4] = [
    "/ipclass.v1.IpClassifier/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Tells whether `path` names a method of a gRPC service served here.
fn is_grpc_service_path(path: &str) -> bool {
    GRPC_SERVICES
        .iter()
        .any(|service| path.starts_with(service))
}

/// Returns the status for a call to a method that a served service lacks,
/// for which tonic returns an empty message.
fn unimplemented_method(path: &str) -> Option<tonic::Status> {
    const METHODS: [&str; 4] = [
        "IsInternal, IsInternalPacked and GetTableInfo",
        "Check and Watch",
        "ServerReflectionInfo",
        "ServerReflectionInfo",
    ];
    if path == "/grpc.health.v1.Health/List" {
        let message = "this server implements Check and Watch of grpc.health.v1.Health, not List; call Check with a service name, or an empty one for the server";
        return Some(tonic::Status::unimplemented(message));
    }
    let (service, methods) = GRPC_SERVICES
        .iter()
        .zip(METHODS)
        .find(|(service, _)| path.starts_with(*service))?;
    let method = &path[service.len()..];
    if methods.split([',', ' ']).any(|known| known == method) {
        return None;
    }
    let message = format!(
        "{} has no method {:?}; its methods are {methods}",
        service.trim_matches('/'),
        crate::http::shortened(method)
    );
    Some(tonic::Status::unimplemented(message))
}

/// Tells whether a request with `headers` is a gRPC call.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    // `application/grpc`, alone or with `+proto` or parameters, in any case
    // as media types are.
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let prefix = b"application/grpc";
    value.len() >= prefix.len()
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(value.get(prefix.len()), None | Some(b'+' | b';' | b' '))
}

fn http_api(request: &Request) -> Api {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match (request.method(), route) {
        (&Method::GET | &Method::HEAD, Some("/v1/is-internal")) => Api::HttpGet,
        (&Method::POST, Some("/v1/is-internal")) => Api::HttpPost,
        (&Method::GET | &Method::HEAD, Some("/v1/table")) => Api::HttpTable,
        _ => Api::HttpOther,
    }
}

/// Adds one request to `ipclass_requests_total` and its duration to the
/// histogram. `code` is a gRPC code name or an HTTP status.
pub fn record_request(api: Api, code: impl Into<metrics::SharedString>, elapsed: Duration) {
    let code = code.into();
    if let Some(grpc) = GRPC_CODE_NAMES.iter().position(|name| *name == &*code) {
        count_grpc_request(api, grpc);
    } else if let Some(status) = http_status(&code) {
        count_http_request(api, status);
    } else {
        counter!(REQUESTS, "api" => api.as_str(), "code" => code).increment(1);
    }
    record_duration(api, elapsed);
}

/// Returns the status that `code` is the number of, written as a status
/// line writes it.
fn http_status(code: &str) -> Option<StatusCode> {
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    (status.as_str() == code).then_some(status)
}

/// Adds one gRPC request that ended with `code` and its duration, as
/// [`record_request`] with the code's name does.
pub fn record_grpc_code(api: Api, code: tonic::Code, elapsed: Duration) {
    count_grpc_request(api, code as usize);
    record_duration(api, elapsed);
}

/// Adds one HTTP request that ended with `status` and its duration, as
/// [`record_request`] with the status number does.
pub fn record_http_status(api: Api, status: StatusCode, elapsed: Duration) {
    count_http_request(api, status);
    record_duration(api, elapsed);
}

/// `code` is the number of a gRPC status code, below [`GRPC_CODES`].
fn count_grpc_request(api: Api, code: usize) {
    with_handle(
        &handles(api).grpc_requests[code],
        || counter!(REQUESTS, "api" => api.as_str(), "code" => GRPC_CODE_NAMES[code]),
        |counter| counter.increment(1),
    );
}

fn count_http_request(api: Api, status: StatusCode) {
    let resolve =
        || counter!(REQUESTS, "api" => api.as_str(), "code" => status.as_str().to_owned());
    match HTTP_STATUSES
        .iter()
        .position(|&known| known == status.as_u16())
    {
        Some(slot) => with_handle(&handles(api).http_requests[slot], resolve, |counter| {
            counter.increment(1)
        }),
        None => resolve().increment(1),
    }
}

fn record_duration(api: Api, elapsed: Duration) {
    with_handle(
        &handles(api).duration,
        || histogram!(REQUEST_DURATION, "api" => api.as_str()),
        |histogram| histogram.record(elapsed.as_secs_f64()),
    );
}

/// Returns the canonical name of a gRPC status code, as the gRPC
/// specification spells it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    GRPC_CODE_NAMES[code as usize]
}

/// Canonical names of the gRPC status codes, indexed by code number, as the
/// gRPC specification spells them.
const GRPC_CODE_NAMES: [&str; GRPC_CODES] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `ipclass_set_hits_total` counters of one table, one per set in
/// [`Table::sets`] order. Resolved once when the table is built so that a
/// batch adds to them without a registry lookup.
#[derive(Debug, Clone, Default)]
pub struct SetCounters {
    counters: Arc<[Counter]>,
}

impl SetCounters {
    /// Resolves the counters of `table`'s sets in the installed recorder;
    /// without one they count nothing.
    pub fn new(table: &Table) -> SetCounters {
        let counters = table
            .sets()
            .iter()
            .map(|set| counter!(SET_HITS, "set" => set.name.clone()))
            .collect();
        SetCounters { counters }
    }
}

/// Verdicts and set hits of one batch, counted locally and added to the
/// shared counters once per batch by [`BatchTally::record`].
#[derive(Debug)]
pub struct BatchTally {
    verdicts: [u64; 4],
    set_hits: Vec<u64>,
}

impl BatchTally {
    pub fn new(table: &Table) -> BatchTally {
        BatchTally {
            verdicts: [0; 4],
            set_hits: vec![0; table.sets().len()],
        }
    }

    pub fn add(&mut self, found: &Classification<'_>) {
        self.add_verdict(found.verdict, found.prefix.map(|entry| entry.set));
    }

    /// Counts one address with `verdict`, matched by a prefix of `set`.
    pub fn add_verdict(&mut self, verdict: Verdict, set: Option<SetId>) {
        self.verdicts[verdict_index(verdict)] += 1;
        if let Some(set) = set {
            self.set_hits[usize::from(set)] += 1;
        }
    }

    /// Counts `count` addresses with `verdict`, without any set hits, which
    /// the caller adds with [`BatchTally::add_set_hits`].
    pub fn add_verdicts(&mut self, verdict: Verdict, count: u64) {
        self.verdicts[verdict_index(verdict)] += count;
    }

    /// Counts `count` hits of `set`, without their verdict, which the caller
    /// adds with [`BatchTally::add_verdicts`].
    pub fn add_set_hits(&mut self, set: SetId, count: u64) {
        self.set_hits[usize::from(set)] += count;
    }

    /// Adds the batch to `ipclass_lookups_total`, `ipclass_batch_size` and
    /// the set counters, which must belong to the table the batch used, and
    /// logs the verdict counts at debug level in the current request span.
    pub fn record(&self, api: Api, sets: &SetCounters) {
        let [internal, external, unknown, invalid] = self.verdicts;
        tracing::debug!(internal, external, unknown, invalid, "batch classified");
        let size: u64 = self.verdicts.iter().sum();
        let handles = handles(api);
        with_handle(
            &handles.batch_size,
            || histogram!(BATCH_SIZE, "api" => api.as_str()),
            |histogram| histogram.record(size as f64),
        );
        for ((verdict, &count), cell) in VERDICTS.iter().zip(&self.verdicts).zip(&handles.lookups) {
            if count > 0 {
                with_handle(
                    cell,
                    || counter!(LOOKUPS, "api" => api.as_str(), "verdict" => verdict.as_str()),
                    |counter| counter.increment(count),
                );
            }
        }
        for (counter, &count) in sets.counters.iter().zip(&self.set_hits) {
            if count > 0 {
                counter.increment(count);
            }
        }
    }
}

const VERDICTS: [Verdict; 4] = [
    Verdict::Internal,
    Verdict::External,
    Verdict::Unknown,
    Verdict::Invalid,
];

fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Internal => 0,
        Verdict::External => 1,
        Verdict::Unknown => 2,
        Verdict::Invalid => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `payload` as one gRPC message: the 5-byte prefix, then the
    /// payload.
    fn message(payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn framing_counts_messages_begun() {
        let mut framing = Framing::default();
        assert_eq!(framing.feed(&message(&[7; 300])), 1);
        assert_eq!(framing.feed(&[]), 1);
        assert_eq!(framing.feed(&[0]), 2);

        // An empty message ends at its prefix.
        let mut framing = Framing::default();
        assert_eq!(framing.feed(&message(&[])), 1);
        assert_eq!(framing.feed(&message(b"x")), 2);
    }

    proptest::proptest! {
        /// However the body is cut into frames, the count turns 2 at the
        /// first byte of the second message, and not before.
        #[test]
        fn framing_ignores_frame_boundaries(
            first in proptest::collection::vec(0u8..=255, 0..600),
            second in proptest::collection::vec(0u8..=255, 0..50),
            cuts in proptest::collection::vec(1usize..200, 0..20),
        ) {
            let first = message(&first);
            let mut body = first.clone();
            body.extend_from_slice(&message(&second));
            let mut framing = Framing::default();
            let mut at = 0;
            for size in cuts.into_iter().chain(std::iter::repeat(1)) {
                if at == body.len() {
                    break;
                }
                let end = (at + size).min(body.len());
                let begun = framing.feed(&body[at..end]);
                let expected = if end > first.len() { 2 } else { 1 };
                proptest::prop_assert_eq!(begun, expected, "after {} bytes", end);
                at = end;
            }
        }
    }

    #[test]
    fn grpc_content_types() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        for value in [
            "application/grpc",
            "APPLICATION/GRPC",
            "application/grpc+proto",
            "Application/gRPC; charset=utf-8",
        ] {
            assert!(is_grpc(&headers(value)), "{value}");
        }
        for value in ["application/grpcx", "application/json", "application/grp"] {
            assert!(!is_grpc(&headers(value)), "{value}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout(b"500m"), Some(Duration::from_millis(500)));
        assert_eq!(
            grpc_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(grpc_timeout(b"0n"), Some(Duration::ZERO));
        for invalid in [
            &b""[..],
            b"S",
            b"100",
            b"123456789S",
            b"1.5S",
            b"-1S",
            b"10s",
            b" 1S",
        ] {
            assert_eq!(
                grpc_timeout(invalid),
                None,
                "{:?}",
                String::from_utf8_lossy(invalid)
            );
        }
    }

    #[test]
    fn grpc_code_names_follow_code_numbers() {
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            grpc_code_name(tonic::Code::InvalidArgument),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            grpc_code_name(tonic::Code::Unauthenticated),
            "UNAUTHENTICATED"
        );
        for number in 0..GRPC_CODES as i32 {
            let code = tonic::Code::from_i32(number);
            assert_eq!(code as i32, number, "code {number}");
        }
    }

    #[test]
    fn http_status_reads_only_status_numbers() {
        assert_eq!(http_status("200"), Some(StatusCode::OK));
        assert_eq!(http_status("404"), Some(StatusCode::NOT_FOUND));
        assert_eq!(http_status("0200"), None);
        assert_eq!(http_status("OK"), None);
        assert_eq!(http_status(""), None);
    }

    #[test]
    fn api_index_covers_handles() {
        let apis = [
            Api::GrpcIsInternal,
            Api::GrpcIsInternalPacked,
            Api::GrpcGetTableInfo,
            Api::HttpGet,
            Api::HttpPost,
            Api::HttpTable,
            Api::HttpOther,
        ];
        assert_eq!(apis.len(), API_COUNT);
        for (position, api) in apis.iter().enumerate() {
            assert_eq!(api.index(), position, "{}", api.as_str());
        }
    }
}
