//! Single-address `GET /v1/is-internal` over HTTP/1.1, served without
//! hyper.
//!
//! Every connection on the main listener starts here. While its requests
//! are plain HTTP/1.1 GETs of `/v1/is-internal`, they are parsed with
//! `httparse` and served straight from the read buffer, pipelined ones in
//! one write. At the first request that is anything else (another path or
//! method, a body, HTTP/1.0, an upgrade, the HTTP/2 preface, bytes that do
//! not parse) the connection and every byte not yet handled go to hyper,
//! which serves the rest of the connection. Responses are those of the
//! axum route, byte for byte apart from the date.
//!
//! A head that hyper would reject with an empty 400 or 431 response gets
//! that status here, with a JSON body that quotes the bad line, and is
//! counted under `http_other`.

use std::cell::RefCell;
use std::io;
use std::io::Write as _;
use std::ops::Range;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::uri::PathAndQuery;
use axum::http::StatusCode;
use axum::http::Uri;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::json::TYPICAL_ANSWER_LEN;
use crate::http::{answer_one, error_body, shortened, valid_host};
use crate::metrics::{self, Api};
use crate::server::drained;
use crate::state::AppState;

const ROUTE: &str = "/v1/is-internal";

/// Maximum number of headers in a request that this module serves.
const MAX_HEADERS: usize = 32;

/// Buffered bytes without a complete request head after which the
/// connection goes to hyper, which applies its own limits to such a head.
const MAX_BUFFERED: usize = 16 * 1024;

/// Maximum number of headers that hyper accepts in a request; a head with
/// more gets 431.
const HYPER_MAX_HEADERS: usize = 100;

/// The HTTP/2 connection preface that a client with prior knowledge sends.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Final state of a connection that [`serve`] returns.
pub enum Outcome {
    /// The connection is closed, or the client closed it.
    Closed,
    /// Hyper serves the rest, starting with the unhandled bytes. `served`
    /// is true when requests were served here first, so the connection is
    /// HTTP/1.1 and must stay so.
    Handoff { io: Rewind, served: bool },
}

/// Serves requests on `stream` until one needs hyper, the client closes
/// the connection, `drain` turns true, or no complete request head arrives
/// within `header_timeout`.
pub async fn serve(
    mut stream: TcpStream,
    state: &AppState,
    header_timeout: Duration,
    drain: &mut watch::Receiver<bool>,
) -> Outcome {
    let mut input = BytesMut::with_capacity(4096);
    let mut output = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(TYPICAL_ANSWER_LEN);
    let mut served = false;
    // One drain wait lasts the whole connection, because creating one per
    // read cost a waker registration per request.
    let mut drain_wait = drain.clone();
    let drain_started = drained(&mut drain_wait);
    tokio::pin!(drain_started);
    // The header read timeout runs from the connection's start or the last
    // response. Resetting a timer costs a lock in tokio's timer driver, so
    // each response only records its time, and the timer, when it fires
    // early, moves on to the deadline that time gives.
    let mut last_response = Instant::now();
    let head_timer = tokio::time::sleep(header_timeout);
    tokio::pin!(head_timer);
    loop {
        let mut close = false;
        let mut handoff = false;
        while !close {
            match parse(&input) {
                Parsed::Get {
                    query,
                    len,
                    close: requested,
                } => {
                    let started = Instant::now();
                    let query =
                        std::str::from_utf8(&input[query]).expect("httparse checks the target");
                    body.clear();
                    let status = answer_one(state, query, &mut body);
                    // During the shutdown delay each response closes its
                    // connection, so no request races the final close.
                    close = requested || *drain.borrow() || state.is_shutting_down();
                    let finished = Instant::now();
                    write_response(&mut output, status, &body, close, finished);
                    metrics::record_http_status(Api::HttpGet, status, finished - started);
                    last_response = finished;
                    input.advance(len);
                    served = true;
                }
                Parsed::Malformed { status, message } => {
                    let started = Instant::now();
                    body.clear();
                    // A response to HEAD has no body. A head whose request
                    // line is itself bad gets one.
                    if !input.starts_with(b"HEAD ") {
                        body.extend_from_slice(&error_body(&message));
                    }
                    let finished = Instant::now();
                    write_response(&mut output, status, &body, true, finished);
                    metrics::record_http_status(Api::HttpOther, status, finished - started);
                    close = true;
                }
                Parsed::Partial => break,
                Parsed::Other => {
                    handoff = true;
                    break;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return Outcome::Closed;
            }
            output.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return Outcome::Closed;
        }
        if handoff || input.len() > MAX_BUFFERED {
            let io = Rewind::new(input.freeze(), stream);
            return Outcome::Handoff { io, served };
        }
        tokio::select! {
            read = stream.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            },
            // A request whose head has not fully arrived has not started,
            // so draining closes its connection at once, as hyper does.
            () = &mut drain_started => return Outcome::Closed,
            () = &mut head_timer => {
                let deadline = last_response + header_timeout;
                if deadline > Instant::now() {
                    head_timer.as_mut().reset(deadline);
                    continue;
                }
                tracing::debug!(
                    timeout_seconds = header_timeout.as_secs_f64(),
                    buffered = input.len(),
                    "no complete request head within the header read timeout; closing the connection"
                );
                return Outcome::Closed;
            }
        }
    }
}

/// The first request in a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A GET of the route: where its query string lies, the length of the
    /// whole request, and whether the client requested that the connection close afterwards.
    Get {
        query: Range<usize>,
        len: usize,
        close: bool,
    },
    /// Not complete yet, and a GET so far.
    Partial,
    /// Anything that hyper serves.
    Other,
    /// A head that does not parse. The response has `status` and
    /// `message`, and the connection closes.
    Malformed { status: StatusCode, message: String },
}

fn parse(input: &[u8]) -> Parsed {
    const GET: &[u8] = b"GET ";
    if !input.starts_with(GET) {
        // Hyper waits for the rest of an HTTP/2 client preface with no
        // timeout, so a part of one waits here, under the header timeout.
        return if GET.starts_with(input) || preface_pending(input) {
            Parsed::Partial
        } else if input.starts_with(PREFACE) {
            Parsed::Other
        } else {
            check_head(input)
        };
    }
    let target = &input[GET.len()..];
    let known = target.len().min(ROUTE.len());
    if target[..known] != ROUTE.as_bytes()[..known] {
        return check_head(input);
    }

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return check_head(input),
        Err(error) => return malformed(input, error),
    };
    let (Some(1), Some(target)) = (request.version, request.path) else {
        return Parsed::Other;
    };
    // http::Uri drops a fragment, which a query string here would keep, so
    // hyper parses such targets.
    if target.contains('#') {
        return Parsed::Other;
    }
    let query = match target.strip_prefix(ROUTE) {
        Some("") => "",
        Some(rest) => match rest.strip_prefix('?') {
            Some(query) => query,
            None => return Parsed::Other,
        },
        None => return Parsed::Other,
    };
    // Hyper rejects some targets that httparse accepts, with an empty
    // 400, so those are rejected here.
    if !plainly_valid(target) && PathAndQuery::from_str(target).is_err() {
        return invalid_target(target);
    }

    let mut close = false;
    let mut hosts = 0;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if !valid_host(header.value) {
                return Parsed::Other;
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            match header.value.trim_ascii() {
                value if value.eq_ignore_ascii_case(b"keep-alive") => {}
                value if value.eq_ignore_ascii_case(b"close") => close = true,
                _ => return Parsed::Other,
            }
        } else if [
            "content-length",
            "transfer-encoding",
            "content-type",
            "expect",
            "upgrade",
        ]
        .iter()
        .any(|other| name.eq_ignore_ascii_case(other))
        {
            return Parsed::Other;
        }
    }
    // Hyper's path rejects a request without exactly one valid Host.
    if hosts != 1 {
        return Parsed::Other;
    }
    // The query is a suffix of the target, which is a slice of `input`.
    let end = target.as_ptr() as usize - input.as_ptr() as usize + target.len();
    Parsed::Get {
        query: end - query.len()..end,
        len,
        close,
    }
}

/// Parses a head that is not a GET of the route, with hyper's limit on
/// headers. A complete head goes to hyper and an incomplete one waits for
/// more bytes. One that hyper would reject gets its response here.
fn check_head(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(error) => return malformed(input, error),
    }
    // Hyper rejects these with an empty 400 too.
    if let Some(target) = request.path {
        if target != "*" && Uri::from_str(target).is_err() {
            return invalid_target(target);
        }
    }
    let lengths = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("content-length"));
    let mut declared: Option<&[u8]> = None;
    for header in lengths {
        let value = header.value.trim_ascii();
        let problem = if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            "is not a decimal length"
        } else if declared.is_some_and(|first| first != value) {
            "differs from the Content-Length before it"
        } else {
            declared = Some(value);
            continue;
        };
        return Parsed::Malformed {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "Content-Length {:?} {problem}; send one Content-Length with the body's length in decimal digits",
                shortened(&String::from_utf8_lossy(header.value))
            ),
        };
    }
    Parsed::Other
}

/// Returns the response to a request target that is not a valid URI.
fn invalid_target(target: &str) -> Parsed {
    Parsed::Malformed {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "invalid request target {:?}; start it with / and percent-encode characters such as \" < > and space, as in /v1/is-internal?ip=ADDRESS",
            shortened(target)
        ),
    }
}

/// Returns the response to a head that httparse rejects with `error`. It
/// quotes the line at fault when a single line is at fault.
fn malformed(input: &[u8], error: httparse::Error) -> Parsed {
    if error == httparse::Error::TooManyHeaders {
        return Parsed::Malformed {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "the request head has more than {HYPER_MAX_HEADERS} header fields; send fewer"
            ),
        };
    }
    // A TLS record starts with its content type, 22 for a handshake.
    if input.first() == Some(&0x16) {
        return Parsed::Malformed {
            status: StatusCode::BAD_REQUEST,
            message: "this is a TLS handshake, and this listener serves HTTP and gRPC without TLS; connect with http:// or plaintext gRPC, or put a TLS proxy in front".to_owned(),
        };
    }
    let advice = match error {
        httparse::Error::HeaderName => {
            "write each header field as `Name: value`, with a name of letters, digits and !#$%&'*+-.^_`|~"
        }
        httparse::Error::HeaderValue => {
            "header values may not contain control characters other than tab"
        }
        httparse::Error::NewLine => "end each line with CRLF",
        _ => "start the request with a line such as `GET /v1/is-internal?ip=ADDRESS HTTP/1.1`",
    };
    let message = match bad_line(input) {
        Some((number, line)) => {
            let text = String::from_utf8_lossy(line);
            let end = line.as_ptr() as usize + line.len();
            let quoted = if end < input.as_ptr() as usize + input.len() {
                format!("{:?}", shortened(&text))
            } else {
                // The rest of the line had not arrived when the error showed,
                // so its length is unknown.
                let start: String = text.chars().take(64).collect();
                format!("{start:?}... (its first {} bytes)", line.len())
            };
            format!("malformed request head, line {number} {quoted}: {error}; {advice}")
        }
        None => format!("malformed request head: {error}; {advice}"),
    };
    Parsed::Malformed {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

/// Finds the first line of a rejected head that httparse rejects on its
/// own: the request line, or a header line. Returns its number, counting
/// the request line as 1, and its text without the line ending.
fn bad_line(input: &[u8]) -> Option<(usize, &[u8])> {
    let mut lines = input.split(|&byte| byte == b'\n');
    let first = lines.next()?;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut request_line = first.to_vec();
    request_line.extend_from_slice(b"\r\n\r\n");
    if httparse::Request::new(&mut [])
        .parse(&request_line)
        .is_err()
    {
        return Some((1, first));
    }
    for (index, line) in lines.enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let mut header_line = line.to_vec();
        header_line.extend_from_slice(b"\r\n\r\n");
        let mut header = [httparse::EMPTY_HEADER; 1];
        if httparse::parse_headers(&header_line, &mut header).is_err() {
            return Some((index + 2, line));
        }
    }
    None
}

/// Returns true while `input` is an unfinished HTTP/2 client preface: part
/// of the connection preface, or the preface and part of the SETTINGS frame
/// after it. Of a frame over 16 KiB, the default maximum, 16 KiB is awaited.
pub fn preface_pending(input: &[u8]) -> bool {
    const FRAME_HEADER: usize = 9;
    if input.len() < PREFACE.len() {
        return PREFACE.starts_with(input);
    }
    let Some(frame) = input.strip_prefix(PREFACE) else {
        return false;
    };
    if frame.len() < FRAME_HEADER {
        return true;
    }
    let length = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
    frame.len() < FRAME_HEADER + length.min(16 * 1024)
}

/// Returns true when `target` contains only ASCII letters, digits and
/// `/?=.:-_&%+`, which `http` accepts in a path and query. Any other target
/// needs a full parse.
fn plainly_valid(target: &str) -> bool {
    const PLAIN: [bool; 256] = {
        let mut plain = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            let b = byte as u8;
            plain[byte] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'?' | b'=' | b'.' | b':' | b'-' | b'_' | b'&' | b'%' | b'+'
                );
            byte += 1;
        }
        plain
    };
    target.bytes().all(|byte| PLAIN[usize::from(byte)])
}

/// Appends a response with the headers hyper writes for the axum route,
/// dated `now`.
fn write_response(out: &mut Vec<u8>, status: StatusCode, body: &[u8], close: bool, now: Instant) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    write!(out, "{}", body.len()).expect("writing to a Vec never fails");
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    with_date(now, |date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Passes the `Date` header value for the time `now` to `f`. Each thread
/// reads the wall clock and formats the value again only after `now` passes
/// the end of the cached second, so most responses read no clock here.
fn with_date(now: Instant, f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(Option<Instant>, String)> = const { RefCell::new((None, String::new())) };
    }
    DATE.with_borrow_mut(|(valid_until, text)| {
        if valid_until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now();
            let into_second = wall
                .duration_since(UNIX_EPOCH)
                .map_or(Duration::ZERO, |since| {
                    Duration::from_nanos(u64::from(since.subsec_nanos()))
                });
            *valid_until = Some(now + (Duration::from_secs(1) - into_second));
            *text = httpdate::fmt_http_date(wall);
        }
        f(text.as_bytes());
    });
}

/// A connection that first yields bytes already read from it.
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_of(input: &str) -> Option<(&str, usize, bool)> {
        match parse(input.as_bytes()) {
            Parsed::Get { query, len, close } => Some((&input[query], len, close)),
            _ => None,
        }
    }

    #[test]
    fn parse_plain_get() {
        let request = "GET /v1/is-internal?ip=10.0.0.1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            query_of(request),
            Some(("ip=10.0.0.1", request.len(), false))
        );
    }

    #[test]
    fn parse_valid_hosts() {
        for host in [
            "",
            "[::1]:8080",
            "127.0.0.1:50051",
            "ipclass.svc.cluster.local",
        ] {
            let request = format!("GET /v1/is-internal?ip=1 HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(query_of(&request).is_some(), "{host:?}");
        }
    }

    #[test]
    fn parse_first_pipelined_request() {
        let first = "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n\r\n";
        let both = format!("{first}GET /v1/is-internal?ip=5.6.7.8 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(query_of(&both), Some(("ip=1.2.3.4", first.len(), false)));
    }

    #[test]
    fn parse_route_without_query() {
        assert_eq!(
            query_of("GET /v1/is-internal HTTP/1.1\r\nHost: a\r\n\r\n").map(|found| found.0),
            Some("")
        );
        assert_eq!(
            query_of("GET /v1/is-internal? HTTP/1.1\r\nHost: a\r\n\r\n").map(|found| found.0),
            Some("")
        );
    }

    #[test]
    fn parse_connection_close() {
        let request =
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n";
        assert_eq!(query_of(request).map(|found| found.2), Some(true));
        let request =
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nconnection: keep-alive\r\n\r\n";
        assert_eq!(query_of(request).map(|found| found.2), Some(false));
    }

    #[test]
    fn parse_incomplete_get() {
        for input in [
            "",
            "G",
            "GET",
            "GET /v1/is",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost",
            // Heads of other requests are complete before hyper gets them.
            "GET /v1/table HTTP/1.1\r\nHost",
            "GET /v1/x",
            "POST /v1/is-internal HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse(input.as_bytes()), Parsed::Partial, "{input:?}");
        }
    }

    #[test]
    fn parse_other_requests() {
        for input in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
            "POST /v1/is-internal HTTP/1.1\r\nHost: a\r\n\r\n",
            "GEX /v1/is-internal HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.0\r\n\r\n",
            "GET /v1/table HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internal/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internals?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\ncontent-type: application/grpc\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4#x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internal?x=#&ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\"b\r\n\r\n",
        ] {
            assert_eq!(parse(input.as_bytes()), Parsed::Other, "{input:?}");
        }
    }

    #[test]
    fn parse_malformed_heads() {
        for (input, status, line) in [
            (
                "GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n",
                400,
                "line 3 \"bad header\"",
            ),
            (
                "GET  /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n\r\n",
                400,
                "line 1 \"GET  /v1/is-internal?ip=1.2.3.4 HTTP/1.1\"",
            ),
            // A bad line is found before the head is complete.
            ("POST /x HTTP/1.1\r\nHost: a\r\n\x7f: b\r\n", 400, "line 3 "),
            (
                "GET /x HTTP/1.1\nHost: a\nX: \x01\n\n",
                400,
                "line 3 \"X: \\u{1}\"",
            ),
            // A line whose end has not arrived is quoted by what came of it.
            (
                "GET /x HTTP/1.1\r\nX-Long: a\x01bcdef",
                400,
                "line 2 \"X-Long: a\\u{1}bcdef\"... (its first 15 bytes)",
            ),
            (
                "POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                400,
                "Content-Length \"1x\" is not a decimal length",
            ),
        ] {
            match parse(input.as_bytes()) {
                Parsed::Malformed {
                    status: got,
                    message,
                } => {
                    assert_eq!(got.as_u16(), status, "{input:?}");
                    assert!(message.contains(line), "{input:?}: {message}");
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_waits_for_whole_preface() {
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for end in 0..preface.len() {
            let part = &preface.as_bytes()[..end];
            assert_eq!(parse(part), Parsed::Partial, "{:?}", &preface[..end]);
        }
        // The preface, then its SETTINGS frame: a 9-byte header and 6 bytes.
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let mut whole = preface.as_bytes().to_vec();
        for byte in settings {
            assert_eq!(parse(&whole), Parsed::Partial, "{} bytes", whole.len());
            whole.push(byte);
        }
        assert_eq!(parse(&whole), Parsed::Other);
        assert_eq!(parse(b"PRX / HTTP/1.1\r\n\r\n"), Parsed::Other);
    }

    #[test]
    fn parse_too_many_headers() {
        let mut request = String::from("GET /v1/is-internal?ip=1.2.3.4 HTTP/1.1\r\nHost: a\r\n");
        for n in 0..MAX_HEADERS {
            request.push_str(&format!("x-{n}: y\r\n"));
        }
        assert_eq!(parse(format!("{request}\r\n").as_bytes()), Parsed::Other);
        for n in MAX_HEADERS..HYPER_MAX_HEADERS {
            request.push_str(&format!("x-{n}: y\r\n"));
        }
        match parse(format!("{request}\r\n").as_bytes()) {
            Parsed::Malformed { status, .. } => {
                assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_headers_match_hyper() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            StatusCode::BAD_REQUEST,
            b"{}",
            true,
            Instant::now(),
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines[..4],
            [
                "HTTP/1.1 400 Bad Request",
                "content-type: application/json",
                "content-length: 2",
                "connection: close",
            ]
        );
        let date = lines[4].strip_prefix("date: ").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(lines.len(), 5);
        assert_eq!(body, "{}");
    }

    #[test]
    fn date_changes_with_second() {
        let date = |now| {
            let mut text = String::new();
            with_date(now, |date| text = String::from_utf8(date.to_vec()).unwrap());
            httpdate::parse_http_date(&text).unwrap()
        };
        let before = SystemTime::now() - Duration::from_secs(1);
        let now = Instant::now();
        let first = date(now);
        assert!(first >= before, "{first:?}");
        assert!(first <= SystemTime::now(), "{first:?}");
        // One second on, the cached second has ended, so the wall clock is
        // read again.
        let later = Instant::now() + Duration::from_secs(1);
        let second = date(later);
        assert!(second >= SystemTime::now() - Duration::from_secs(1));
        assert_eq!(date(later), second);
    }

    proptest::proptest! {
        #[test]
        fn plain_target_parses(target in "/[A-Za-z0-9/?=.:_&%+-]{0,80}") {
            proptest::prop_assert!(plainly_valid(&target));
            proptest::prop_assert!(PathAndQuery::from_str(&target).is_ok(), "{}", target);
        }

        #[test]
        fn other_byte_not_plain(target in "/[ -~]{0,20}", byte in 0u8..=255) {
            let plain = byte.is_ascii_alphanumeric() || b"/?=.:-_&%+".contains(&byte);
            let mut bytes = target.into_bytes();
            bytes.push(byte);
            if let Ok(target) = String::from_utf8(bytes) {
                if !plain {
                    proptest::prop_assert!(!plainly_valid(&target));
                }
            }
        }
    }
}
