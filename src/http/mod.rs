//! The HTTP/JSON encoding of the API, plus health and readiness endpoints.
//!
//! [`json`] writes the classification responses by hand, and the rest uses
//! serde. [`fast`] serves plain single-address GETs over HTTP/1.1 before
//! hyper reads the connection.

pub mod fast;
pub mod json;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::activity::BodyStalled;
use crate::address::MAX_ADDRESS_LEN;
use crate::classify::classify_text;
use crate::error::RequestError;
use crate::grpc::{log_rejected, request_span, table_info};
use crate::metrics::{Api, BatchTally};
use crate::response::{self, ChunkedBody};
use crate::state::AppState;

/// Characters of a `Content-Encoding` value that an error repeats.
const MAX_ENCODING_ECHO: usize = 32;

/// Characters of a method or path that an error quotes.
const MAX_ECHO: usize = 64;

/// Routes of the HTTP API. The caller adds the fallbacks.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/is-internal",
            get(is_internal_one).post(is_internal_batch),
        )
        .route("/v1/table", get(table))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    ips: Vec<String>,
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        error_response(self.http_status(), self.to_string())
    }
}

pub fn error_response(status: StatusCode, message: String) -> Response {
    json_response(status, error_body(&message))
}

/// Encodes the JSON body of an error: `{"error": message}`.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "error": message })).expect("a JSON object always serializes")
}

async fn is_internal_one(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut body = Vec::with_capacity(json::TYPICAL_ANSWER_LEN);
    let status = answer_one(&state, query.as_deref().unwrap_or_default(), &mut body);
    json_response(status, body)
}

/// Classifies the address of a `GET /v1/is-internal` raw query string,
/// appends the JSON body to `body` and returns the status. Both HTTP/1.1
/// paths, hyper's and [`fast`], call it.
pub fn answer_one(state: &AppState, query: &str, body: &mut Vec<u8>) -> StatusCode {
    match classify_query(state, query, body) {
        Ok(status) => status,
        Err(error) => {
            body.extend_from_slice(&error_body(&error.to_string()));
            error.http_status()
        }
    }
}

/// Returns the value of the only `ip` parameter of `query`.
fn ip_parameter(query: &str) -> Result<Cow<'_, str>, RequestError> {
    // The common query is `ip=` and a value that needs no decoding, so it is
    // used as it is. form_urlencoded returns the same value for it.
    if let Some(value) = query.strip_prefix("ip=") {
        if !value.bytes().any(|byte| matches!(byte, b'&' | b'%' | b'+')) {
            return Ok(Cow::Borrowed(value));
        }
    }
    let mut values = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "ip")
        .map(|(_, value)| value);
    match (values.next(), values.next()) {
        (Some(ip), None) => Ok(ip),
        (None, _) => Err(RequestError::MissingIp),
        (Some(_), Some(_)) => Err(RequestError::RepeatedIp(2 + values.count())),
    }
}

fn classify_query(
    state: &AppState,
    query: &str,
    body: &mut Vec<u8>,
) -> Result<StatusCode, RequestError> {
    let ip = ip_parameter(query)?;
    let snapshot = state.snapshot();
    let table = &snapshot.table;
    let span = request_span(Api::HttpGet, 1, table.generation());
    let _entered = span.enter();
    let found = classify_text(table, &ip);
    let mut tally = BatchTally::new(table);
    tally.add(&found);
    tally.record(Api::HttpGet, &snapshot.set_counters);
    let status = if found.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    json::write_classification(body, &ip, &found, table.generation());
    Ok(status)
}

async fn is_internal_batch(
    State(state): State<Arc<AppState>>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    check_content_encoding(&headers)?;
    let limit = body_limit(state.max_batch);
    // A declared length over the limit is rejected before any of the body is
    // read, so a client that waits for `100 Continue` sends none of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(RequestError::BodyTooLarge(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        match find_source::<BodyStalled>(&error) {
            Some(stalled) => RequestError::BodyStalled(stalled.to_string()),
            None if find_source::<http_body_util::LengthLimitError>(&error).is_some() => {
                RequestError::BodyTooLarge(limit)
            }
            None => RequestError::BodyRead(error.to_string()),
        }
    })?;
    // Some Windows tools write a UTF-8 byte order mark before the JSON, which
    // serde_json rejects.
    let json = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    if json.trim_ascii().is_empty() {
        let problem = match version {
            // HTTP/1.0 has no chunked bodies, so a body needs its length.
            axum::http::Version::HTTP_10 => {
                "the body is empty (an HTTP/1.0 request needs a Content-Length for its body)"
            }
            _ => "the body is empty",
        };
        return Err(RequestError::InvalidJson(problem.to_owned()));
    }
    // serde reads a struct from an array of its fields too, which the API
    // does not accept.
    if json
        .trim_ascii_start()
        .first()
        .is_some_and(|&byte| byte != b'{')
    {
        return Err(RequestError::InvalidJson(
            "the body is not a JSON object".to_owned(),
        ));
    }
    let request: BatchRequest = serde_json::from_slice(json)
        .or_else(|error| with_lone_surrogates_replaced(json).ok_or(error))
        .map_err(|error| RequestError::InvalidJson(error.to_string()))?;
    let snapshot = state.snapshot();
    let table = &snapshot.table;
    let generation = table.generation();
    let span = request_span(Api::HttpPost, request.ips.len(), generation);
    let _entered = span.enter();
    state
        .check_batch(request.ips.len())
        .inspect_err(log_rejected)?;

    let mut tally = BatchTally::new(table);
    let mut body = Vec::with_capacity(request.ips.len() * json::TYPICAL_ANSWER_LEN + 64);
    body.extend_from_slice(b"{\"results\":[");
    for (index, ip) in request.ips.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        let found = classify_text(table, ip);
        tally.add(&found);
        json::write_classification(&mut body, ip, &found, generation);
    }
    body.extend_from_slice(b"],\"generation\":");
    body.extend_from_slice(generation.to_string().as_bytes());
    body.push(b'}');
    tally.record(Api::HttpPost, &snapshot.set_counters);
    if body.len() <= response::THRESHOLD {
        return Ok(json_response(StatusCode::OK, body));
    }
    let reservation = state
        .responses
        .reserve(body.len())
        .ok_or_else(|| RequestError::ResponseMemory(state.responses.rejection(body.len())))
        .inspect_err(log_rejected)?;
    let body = ChunkedBody::new(Bytes::from(body), Some(reservation));
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    Ok((StatusCode::OK, content_type, Body::new(body)).into_response())
}

/// Reads the batch of `json` when its only fault is escaped surrogates that
/// do not form a pair, as Python's `json.dumps` writes for bytes that are not
/// UTF-8. Each such surrogate becomes U+FFFD, so its address classifies as
/// invalid on its own, as in the other forms.
fn with_lone_surrogates_replaced(json: &[u8]) -> Option<BatchRequest> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        ips: Vec<&'a serde_json::value::RawValue>,
    }

    let raw: RawBatch = serde_json::from_slice(json).ok()?;
    let ips = raw
        .ips
        .iter()
        .map(|ip| {
            let text = ip.get();
            serde_json::from_str(text)
                .or_else(|_| serde_json::from_str(&replace_lone_surrogates(text)))
        })
        .collect::<Result<_, serde_json::Error>>()
        .ok()?;
    Some(BatchRequest { ips })
}

/// Returns the JSON text `text` with each `\u` escape of a surrogate that is
/// not part of a high-low pair replaced by `\ufffd`. `text` must be valid
/// JSON syntax, so every escape is whole and ASCII.
fn replace_lone_surrogates(text: &str) -> String {
    /// Returns the UTF-16 unit of a `\u` escape of a surrogate at the start
    /// of `text`.
    fn surrogate_at(text: &str) -> Option<u16> {
        let digits = text.strip_prefix("\\u")?.get(..4)?;
        let unit = u16::from_str_radix(digits, 16).ok()?;
        (0xd800..=0xdfff).contains(&unit).then_some(unit)
    }

    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let low_follows = || {
            rest.get(6..)
                .and_then(surrogate_at)
                .is_some_and(|low| low >= 0xdc00)
        };
        let len = match surrogate_at(rest) {
            Some(high) if high < 0xdc00 && low_follows() => 12,
            Some(_) => {
                out.push_str("\\ufffd");
                rest = &rest[6..];
                continue;
            }
            None if rest[1..].starts_with('u') => 6,
            None => 2,
        };
        let len = len.min(rest.len());
        out.push_str(&rest[..len]);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Rejects a compressed body, which would otherwise fail as invalid JSON at
/// its first byte.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), RequestError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = text.trim();
        if !text.is_empty() && !text.eq_ignore_ascii_case("identity") {
            let encoding = text.chars().take(MAX_ENCODING_ECHO).collect();
            return Err(RequestError::CompressedBody(encoding));
        }
    }
    Ok(())
}

/// Wraps an already encoded JSON body in a response with the content type
/// that `axum::Json` sets.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (status, content_type, body).into_response()
}

/// Bytes a JSON batch of `max_batch` addresses of maximum length can take.
fn body_limit(max_batch: usize) -> usize {
    max_batch
        .saturating_mul(MAX_ADDRESS_LEN + 8)
        .saturating_add(4096)
}

/// Returns the first error of type `E` in the source chain of `error`.
fn find_source<E: std::error::Error + 'static>(error: &axum::Error) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found);
        }
        source = current.source();
    }
    None
}

async fn table(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot();
    Json(table_info(&state, &snapshot)).into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Reports readiness. A failed config watcher does not make the service
/// unready, because the table still serves and the periodic check still
/// reloads, so it shows only in the `watcher` detail.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let generation = state.snapshot().table.generation();
    let status = state.reload_status();
    let watcher = json!({
        "healthy": status.watcher_error.is_none(),
        "error": status.watcher_error.unwrap_or_default(),
    });
    let last_reload_error = status.last_error.unwrap_or_default();
    if state.is_shutting_down() {
        let body = json!({
            "status": "shutting down",
            "generation": generation,
            "watcher": watcher,
            "last_reload_error": last_reload_error,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let body = json!({
        "status": "ready",
        "generation": generation,
        "watcher": watcher,
        "last_reload_error": last_reload_error,
    });
    Json(body).into_response()
}

/// Handles paths that no route serves: gRPC callers get UNIMPLEMENTED, others
/// a JSON 404.
pub async fn not_found(method: Method, uri: Uri, headers: axum::http::HeaderMap) -> Response {
    let path = shortened(&target(&uri));
    if crate::metrics::is_grpc(&headers) {
        let status = tonic::Status::unimplemented(format!("no gRPC method at {path}"));
        return status.into_http();
    }
    let method = shortened(method.as_str());
    let message = format!(
        "no route for {method} {path}; the API serves /v1/is-internal, /v1/table, /healthz, /readyz and /metrics"
    );
    error_response(StatusCode::NOT_FOUND, message)
}

/// Handles paths that the metrics listener does not serve.
pub async fn metrics_not_found(method: Method, uri: Uri) -> Response {
    let message = format!(
        "no route for {} {}; this listener serves only GET /metrics",
        shortened(method.as_str()),
        shortened(&target(&uri))
    );
    error_response(StatusCode::NOT_FOUND, message)
}

/// Returns the request target to quote: the path, or the whole target of a
/// request that has none, such as `CONNECT host:port`.
fn target(uri: &Uri) -> Cow<'_, str> {
    match uri.path() {
        "" => Cow::Owned(uri.to_string()),
        path => Cow::Borrowed(path),
    }
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!(
        "method {} is not allowed on {}",
        shortened(method.as_str()),
        shortened(&target(&uri))
    );
    error_response(StatusCode::METHOD_NOT_ALLOWED, message)
}

/// Adds `Connection: close` to HTTP/1 responses once shutdown has begun, so
/// that during the shutdown delay clients stop reusing their connections
/// and no request races the final close. HTTP/2 clients learn of the close
/// from the GOAWAY that ends the delay.
pub async fn close_when_shutting_down(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && state.is_shutting_down() {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Bytes of a `GET` or `HEAD` body that the server reads and drops, so that
/// an HTTP/1.1 connection stays open for the next request.
const MAX_DROPPED_BODY: usize = 64 * 1024;

/// Reads and drops the body of a `GET` or `HEAD` request, which no route
/// uses, because hyper closes the connection without saying so when a body
/// is left unread. A body over [`MAX_DROPPED_BODY`], or one that fails,
/// closes it with `Connection: close`.
pub async fn drop_unused_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use hyper::body::Body as _;

    let unused = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.body().size_hint().exact() != Some(0);
    if !unused {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // A body declared longer than the limit is not read at all, so a client
    // that waits for `100 Continue` sends none of it.
    let dropped = match body.size_hint().lower() > MAX_DROPPED_BODY as u64 {
        true => Err(()),
        false => axum::body::to_bytes(body, MAX_DROPPED_BODY)
            .await
            .map_err(drop),
    };
    let request = axum::extract::Request::from_parts(parts, Body::empty());
    let mut response = next.run(request).await;
    if dropped.is_err() {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Rejects a gRPC request that came over HTTP/1.1, which cannot carry the
/// gRPC status in trailers.
pub fn grpc_needs_http2<B>(request: &axum::http::Request<B>) -> Response {
    let message = format!(
        "gRPC needs HTTP/2, and {} came over {:?}; send it over HTTP/2 (with curl, --http2-prior-knowledge), or use the HTTP/JSON API",
        shortened(request.uri().path()),
        request.version()
    );
    error_response(StatusCode::HTTP_VERSION_NOT_SUPPORTED, message)
}

/// Rejects an HTTP/1 request with a `Host` header that RFC 9112 requires a
/// 400 for: none in HTTP/1.1, more than one, or an invalid value.
pub fn host_rejection<B>(request: &axum::http::Request<B>) -> Option<Response> {
    if request.version() > axum::http::Version::HTTP_11 {
        return None;
    }
    let hosts = request.headers().get_all(header::HOST);
    let mut values = hosts.iter();
    let problem = match (values.next(), values.next()) {
        (None, _) if request.version() == axum::http::Version::HTTP_11 => {
            "an HTTP/1.1 request needs a Host header, and this one has none".to_owned()
        }
        (None, _) => return None,
        (Some(_), Some(_)) => format!(
            "a request may carry one Host header, and this one has {}",
            hosts.iter().count()
        ),
        (Some(value), None) if !valid_host(value.as_bytes()) => format!(
            "the Host header {:?} is not a host with an optional port",
            shortened(&String::from_utf8_lossy(value.as_bytes()))
        ),
        (Some(_), None) => return None,
    };
    let message = format!(
        "{problem}; send one Host header that names the server, as curl and HTTP libraries do"
    );
    Some(error_response(StatusCode::BAD_REQUEST, message))
}

/// Rejects a request body with a transfer coding other than `chunked`, which
/// hyper passes on still encoded, with 501 as RFC 9112 advises. The body
/// stays unread, so the connection closes.
pub fn transfer_coding_rejection<B>(request: &axum::http::Request<B>) -> Option<Response> {
    let unknown = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .find(|coding| !coding.eq_ignore_ascii_case(b"chunked"))?;
    let message = format!(
        "transfer coding {:?} is not supported; send the body uncompressed, with a Content-Length or Transfer-Encoding: chunked alone",
        shortened(&String::from_utf8_lossy(unknown))
    );
    let mut response = error_response(StatusCode::NOT_IMPLEMENTED, message);
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    Some(response)
}

/// Tells whether `value` may be a `Host` header: empty, or a host and an
/// optional port as RFC 3986 writes them. The host is an IPv6 address in
/// brackets, or a name or IPv4 address of unreserved characters,
/// sub-delimiters and percent-escapes. The port is at most 65535.
pub fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&byte| byte == b']') else {
                return false;
            };
            let literal = std::str::from_utf8(&rest[..end]).ok();
            if literal
                .and_then(|text| text.parse::<std::net::Ipv6Addr>().ok())
                .is_none()
            {
                return false;
            }
            match &rest[end + 1..] {
                [] => (None, None),
                [b':', port @ ..] => (None, Some(port)),
                _ => return false,
            }
        }
        None => match value.iter().rposition(|&byte| byte == b':') {
            Some(colon) => (Some(&value[..colon]), Some(&value[colon + 1..])),
            None => (Some(value), None),
        },
    };
    let port_valid = port.is_none_or(|port| {
        port.is_empty()
            || (port.len() <= 5
                && port.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(port).is_ok_and(|text| text.parse::<u16>().is_ok()))
    });
    port_valid && host.is_none_or(valid_name)
}

/// Tells whether `name` is a registered name or IPv4 address of RFC 3986:
/// unreserved characters, sub-delimiters and `%` with two hex digits.
fn valid_name(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            match tail {
                [high, low, after @ ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    rest = after;
                    continue;
                }
                _ => return false,
            }
        }
        if !(byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)) {
            return false;
        }
        rest = tail;
    }
    !name.is_empty()
}

/// Rejects a request for a gRPC method that is not a gRPC call, such as one
/// with a JSON body.
pub fn grpc_needs_content_type<B>(request: &axum::http::Request<B>) -> Response {
    let content_type = match request.headers().get(header::CONTENT_TYPE) {
        Some(value) => format!(
            "content-type {:?}",
            shortened(&String::from_utf8_lossy(value.as_bytes()))
        ),
        None => "no content-type".to_owned(),
    };
    let message = format!(
        "{} is a gRPC method, and this {} request has {content_type}; call it over HTTP/2 as POST with content-type application/grpc, or use the HTTP/JSON API at /v1/is-internal",
        shortened(request.uri().path()),
        shortened(request.method().as_str()),
    );
    error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
}

/// Returns `text` cut to its first [`MAX_ECHO`] characters, with the length
/// of the rest, for quoting request text in an error.
pub fn shortened(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO) {
        Some((end, _)) => format!("{}... ({} more bytes)", &text[..end], text.len() - end),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        for valid in [
            "",
            "a",
            "a:",
            "a:80",
            "EXAMPLE.com:65535",
            "127.0.0.1:50051",
            "[::1]",
            "[::1]:8080",
            "a%20b",
            "a,b",
        ] {
            assert!(valid_host(valid.as_bytes()), "{valid:?}");
        }
        for invalid in [
            "a b",
            "a:http",
            "a:1:2",
            "::1",
            "[::1",
            "[zzz]",
            "[::1]x",
            "a%zz",
            "a%2",
            "[fe80::1%eth0]",
            "a:65536",
            "a:000080",
            "a@b",
            ":80",
            "a\tb",
            "\u{e9}",
        ] {
            assert!(!valid_host(invalid.as_bytes()), "{invalid:?}");
        }
    }

    /// Decodes the `ip` parameter of `query` with form_urlencoded alone.
    fn decoded(query: &str) -> Result<String, String> {
        let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .filter(|(key, _)| key == "ip")
            .map(|(_, value)| value.into_owned())
            .collect();
        match values.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(RequestError::MissingIp.to_string()),
            many => Err(RequestError::RepeatedIp(many.len()).to_string()),
        }
    }

    #[test]
    fn lone_surrogates_replaced() {
        for (text, expected) in [
            (r#""\udcff""#, r#""\ufffd""#),
            (r#""\ud800x""#, r#""\ufffdx""#),
            (r#""\ud83d\ude00""#, r#""\ud83d\ude00""#),
            (r#""\udc00\ud800""#, r#""\ufffd\ufffd""#),
            (r#""\\udcff""#, r#""\\udcff""#),
            (r#""a\"\u0041\n""#, r#""a\"\u0041\n""#),
        ] {
            assert_eq!(replace_lone_surrogates(text), expected, "{text}");
        }
    }

    #[test]
    fn shortened_cuts_long_text() {
        assert_eq!(shortened("/v1/x"), "/v1/x");
        let long = "/".repeat(MAX_ECHO + 10);
        assert_eq!(
            shortened(&long),
            format!("{}... (10 more bytes)", &long[..MAX_ECHO])
        );
        let wide = "é".repeat(MAX_ECHO + 1);
        assert_eq!(
            shortened(&wide),
            format!("{}... (2 more bytes)", "é".repeat(MAX_ECHO))
        );
    }

    #[test]
    fn ip_parameter_cases() {
        for query in [
            "ip=10.0.0.1",
            "ip=",
            "",
            "ip=1%2E2.3.4",
            "ip=a+b",
            "ip=1&ip=2",
            "ip=1&ip=2&ip=3&x=4",
            "x=1&ip=fe80::1",
            "ip=fe80::1%25eth0",
            "ip",
            "ip=1&",
        ] {
            let got = ip_parameter(query)
                .map(Cow::into_owned)
                .map_err(|error| error.to_string());
            assert_eq!(got, decoded(query), "{query:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ip_parameter_any_query(query in "[a-z0-9=&%+.:]{0,24}") {
            let got = ip_parameter(&query)
                .map(Cow::into_owned)
                .map_err(|error| error.to_string());
            proptest::prop_assert_eq!(got, decoded(&query));
        }
    }
}
