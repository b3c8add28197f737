//! `IsInternal` served with its own codec, so that a batch of text
//! addresses is read without one `String` per address and its response is
//! written without one `Classification` message per address.
//!
//! The bytes on the wire are those of the generated messages. The generated
//! handler in the parent module stays as the reference that tests compare
//! against.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use prost::encoding::decode_varint;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, UnaryService};
use tonic::Status;

use crate::grpc::batch::{classify_texts, encode_text_response, text_response_capacity};
use crate::grpc::{log_rejected, request_span};
use crate::metrics::{record_grpc, Api, BatchTally};
use crate::proto::IsInternalRequest;
use crate::state::{AppState, Snapshot};

/// Path of the method this module serves.
pub const PATH: &str = "/ipclass.v1.IpClassifier/IsInternal";

/// A decoded `IsInternalRequest`: the message bytes and where each address
/// lies in them. Every span is valid UTF-8.
#[derive(Debug)]
pub struct TextBatch {
    message: Bytes,
    spans: Vec<Range<usize>>,
}

impl TextBatch {
    /// Reads an encoded `IsInternalRequest`. Input that the fast reader does
    /// not expect, such as unknown fields, goes through prost, so the result
    /// and every error are the same as the generated decoder's.
    pub fn decode(message: Bytes) -> Result<TextBatch, prost::DecodeError> {
        if let Some(spans) = scan_ips(&message) {
            return Ok(TextBatch { message, spans });
        }
        let request = IsInternalRequest::decode(message)?;
        let message = Bytes::from(request.encode_to_vec());
        let spans = scan_ips(&message).expect("prost writes only field 1 with valid UTF-8");
        Ok(TextBatch { message, spans })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Returns the addresses in request order.
    pub fn ips(&self) -> Vec<&str> {
        self.spans
            .iter()
            .map(|span| {
                std::str::from_utf8(&self.message[span.clone()])
                    .expect("spans were checked for UTF-8 when decoded")
            })
            .collect()
    }
}

/// Finds every `ips` string in `message`, or returns `None` if the message
/// contains anything else or a string that is not UTF-8.
fn scan_ips(message: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut spans = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let key = decode_varint(&mut rest).ok()?;
        if key != 0x0a {
            return None;
        }
        let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
        if len > rest.len() {
            return None;
        }
        std::str::from_utf8(&rest[..len]).ok()?;
        let start = message.len() - rest.len();
        spans.push(start..start + len);
        rest.advance(len);
    }
    Some(spans)
}

/// A batch and the snapshot that classifies it. Classification happens
/// while the response is encoded, so results are never stored as messages.
pub struct TextAnswer {
    snapshot: Arc<Snapshot>,
    batch: TextBatch,
    /// When the request was decoded, for the request duration metric.
    started: Instant,
}

/// The codec of [`PATH`]: reads [`TextBatch`], writes [`TextAnswer`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TextCodec;

impl Codec for TextCodec {
    type Encode = TextAnswer;
    type Decode = TextBatch;
    type Encoder = TextCodec;
    type Decoder = TextCodec;

    fn encoder(&mut self) -> TextCodec {
        TextCodec
    }

    fn decoder(&mut self) -> TextCodec {
        TextCodec
    }
}

impl Encoder for TextCodec {
    type Item = TextAnswer;
    type Error = Status;

    fn encode(&mut self, answer: TextAnswer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let table = &answer.snapshot.table;
        let ips = answer.batch.ips();
        let span = request_span(Api::GrpcIsInternal, ips.len(), table.generation());
        let _entered = span.enter();
        let results = classify_texts(table, &ips);
        dst.reserve(text_response_capacity(&ips));
        let mut scratch = Vec::with_capacity(256);
        encode_text_response(&ips, &results, table.generation(), &mut scratch, dst);

        let mut tally = BatchTally::new(table);
        for found in &results {
            tally.add(found);
        }
        tally.record(Api::GrpcIsInternal, &answer.snapshot.set_counters);
        record_grpc::<()>(Api::GrpcIsInternal, &Ok(()), answer.started);
        Ok(())
    }
}

impl Decoder for TextCodec {
    type Item = TextBatch;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<TextBatch>, Status> {
        let message = src.copy_to_bytes(src.remaining());
        TextBatch::decode(message)
            .map(Some)
            // The same status as tonic-prost's decoder gives.
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// Handles one decoded batch: checks its size and takes a snapshot.
struct TextMethod {
    state: Arc<AppState>,
}

impl UnaryService<TextBatch> for TextMethod {
    type Response = TextAnswer;
    type Future = Ready<Result<tonic::Response<TextAnswer>, Status>>;

    fn call(&mut self, request: tonic::Request<TextBatch>) -> Self::Future {
        let started = Instant::now();
        let batch = request.into_inner();
        let answer = match self.state.check_batch(batch.len()) {
            Ok(()) => Ok(tonic::Response::new(TextAnswer {
                snapshot: self.state.snapshot(),
                batch,
                started,
            })),
            Err(error) => {
                let snapshot = self.state.snapshot();
                let span = request_span(
                    Api::GrpcIsInternal,
                    batch.len(),
                    snapshot.table.generation(),
                );
                let _entered = span.enter();
                log_rejected(&error);
                let status = Status::from(error);
                record_grpc::<()>(Api::GrpcIsInternal, &Err(status.clone()), started);
                Err(status)
            }
        };
        ready(answer)
    }
}

/// The HTTP service for [`PATH`], mounted on the router in place of the
/// generated one.
#[derive(Debug, Clone)]
pub struct TextService {
    state: Arc<AppState>,
    max_message: usize,
}

impl TextService {
    pub fn new(state: Arc<AppState>, max_message: usize) -> TextService {
        TextService { state, max_message }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl tower::Service<axum::extract::Request> for TextService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> ResponseFuture {
        let method = TextMethod {
            state: self.state.clone(),
        };
        let max_message = self.max_message;
        Box::pin(async move {
            let mut grpc = Grpc::new(TextCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .apply_max_message_size_config(Some(max_message), None);
            let response = grpc.unary(method, request).await;
            Ok(response.map(axum::body::Body::new))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_addresses_in_place() {
        let request = IsInternalRequest {
            ips: vec!["10.0.0.1".into(), String::new(), "fe80::1%eth0".into()],
        };
        let batch = TextBatch::decode(request.encode_to_vec().into()).unwrap();
        assert_eq!(batch.ips(), ["10.0.0.1", "", "fe80::1%eth0"]);
    }

    #[test]
    fn decode_skips_unknown_fields_like_prost() {
        let mut message = IsInternalRequest {
            ips: vec!["10.0.0.1".into()],
        }
        .encode_to_vec();
        // Field 9, varint 5: unknown to this schema.
        message.extend_from_slice(&[0x48, 0x05]);
        message.extend_from_slice(&[0x0a, 0x01, b'x']);
        let batch = TextBatch::decode(message.into()).unwrap();
        assert_eq!(batch.ips(), ["10.0.0.1", "x"]);
    }

    #[test]
    fn decode_rejects_invalid_utf8_like_prost() {
        let message: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
        let ours = TextBatch::decode(Bytes::from_static(message)).unwrap_err();
        let reference = IsInternalRequest::decode(message).unwrap_err();
        assert_eq!(ours.to_string(), reference.to_string());
    }

    #[test]
    fn decode_rejects_truncated_message_like_prost() {
        let message: &[u8] = &[0x0a, 0x05, b'1'];
        let ours = TextBatch::decode(Bytes::from_static(message)).unwrap_err();
        let reference = IsInternalRequest::decode(message).unwrap_err();
        assert_eq!(ours.to_string(), reference.to_string());
    }
}
