//! `IsInternal` served with its own codec, so that a batch of text
//! addresses is read without one `String` per address and its response is
//! written without one `Classification` message per address.
//!
//! The bytes on the wire are those of the generated messages. The generated
//! handler in the parent module stays as the reference that tests compare
//! against.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::encoding::decode_varint;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, UnaryService};
use tonic::Status;

use crate::grpc::batch::{text_response_capacity, write_text_response};
use crate::grpc::{log_rejected, request_span};
use crate::metrics::{Api, BatchTally};
use crate::state::{AppState, Snapshot};
use crate::table::Table;

/// Path of the method this module serves.
pub const PATH: &str = "/ipclass.v1.IpClassifier/IsInternal";

/// A decoded `IsInternalRequest`: the message bytes, in which every
/// address is a field 1 string, and nothing else. A string that is not
/// UTF-8 stays in the batch, where it classifies as invalid.
#[derive(Debug)]
pub struct TextBatch {
    message: Bytes,
    len: usize,
}

impl TextBatch {
    /// Reads an encoded `IsInternalRequest`. Input that the fast reader does
    /// not expect, such as unknown fields, goes through prost, so the result
    /// and every error are the same as the generated decoder's.
    pub fn decode(message: Bytes) -> Result<TextBatch, prost::DecodeError> {
        if let Some(len) = count_ips(&message) {
            return Ok(TextBatch { message, len });
        }
        let request = raw::IsInternalRequest::decode(message)?;
        let message = Bytes::from(request.encode_to_vec());
        let len = count_ips(&message).expect("prost writes only field 1");
        Ok(TextBatch { message, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the addresses in request order, as bytes that may not be
    /// UTF-8.
    pub fn addresses(&self) -> Addresses<'_> {
        Addresses {
            rest: &self.message,
        }
    }

    /// Returns an estimate of the response size from `table`, for
    /// reserving it at once.
    pub fn response_capacity(&self, table: &Table) -> usize {
        text_response_capacity(table, self.message.len(), self.len)
    }
}

/// Iterator over the addresses of a [`TextBatch`].
#[derive(Debug, Clone)]
pub struct Addresses<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Addresses<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The message was scanned when decoded, so this only stops at its end.
        read_ip(&mut self.rest)
    }
}

mod raw {
    /// `IsInternalRequest` with its addresses as bytes. prost rejects a
    /// whole message for one string that is not UTF-8, and this reads the
    /// same wire format without that check. Its name is the message's, so
    /// decode errors read the same.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IsInternalRequest {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub ips: Vec<Vec<u8>>,
    }
}

/// Counts the `ips` strings in `message`, or returns `None` if the message
/// contains anything else.
fn count_ips(message: &[u8]) -> Option<usize> {
    let mut count = 0;
    let mut rest = message;
    while !rest.is_empty() {
        read_ip(&mut rest)?;
        count += 1;
    }
    Some(count)
}

/// Reads one field 1 string from the start of `rest` and moves past it, or
/// returns `None` at the end or at anything else.
#[inline]
fn read_ip<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    // The key of field 1 as a string is the one byte 0x0a. Any other key,
    // even an overlong encoding of the same one, goes to prost.
    *rest = rest.strip_prefix(&[0x0a])?;
    let len = match rest.first() {
        Some(&len) if len < 0x80 => {
            *rest = &rest[1..];
            usize::from(len)
        }
        _ => usize::try_from(decode_varint(rest).ok()?).ok()?,
    };
    if len > rest.len() {
        return None;
    }
    let (ip, tail) = rest.split_at(len);
    *rest = tail;
    Some(ip)
}

/// A batch and the snapshot that classifies it. Classification happens
/// while the response is encoded, so results are never stored as messages.
pub struct TextAnswer {
    snapshot: Arc<Snapshot>,
    batch: TextBatch,
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
        let batch = &answer.batch;
        let span = request_span(Api::GrpcIsInternal, batch.len(), table.generation());
        let _entered = span.enter();
        dst.reserve(batch.response_capacity(table));
        let mut tally = BatchTally::new(table);
        write_text_response(table, batch.addresses(), &mut tally, dst);
        tally.record(Api::GrpcIsInternal, &answer.snapshot.set_counters);
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
        let batch = request.into_inner();
        let answer = match self.state.check_batch(batch.len()) {
            Ok(()) => Ok(tonic::Response::new(TextAnswer {
                snapshot: self.state.snapshot(),
                batch,
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
                Err(Status::from(error))
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
    use crate::proto::IsInternalRequest;

    #[test]
    fn decode_reads_addresses_in_place() {
        let request = IsInternalRequest {
            ips: vec!["10.0.0.1".into(), String::new(), "fe80::1%eth0".into()],
        };
        let batch = TextBatch::decode(request.encode_to_vec().into()).unwrap();
        assert_eq!(batch.len(), 3);
        let ips: Vec<&[u8]> = batch.addresses().collect();
        assert_eq!(ips, [&b"10.0.0.1"[..], b"", b"fe80::1%eth0"]);
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
        assert_eq!(batch.len(), 2);
        let ips: Vec<&[u8]> = batch.addresses().collect();
        assert_eq!(ips, [&b"10.0.0.1"[..], b"x"]);
    }

    #[test]
    fn decode_reads_overlong_key_like_prost() {
        // Field 1 as a string with its key in two bytes, then one address
        // whose length is also in two bytes.
        let mut message = vec![0x8a, 0x00, 0x01, b'x', 0x0a, 0x80, 0x01];
        message.extend_from_slice(&[b'1'; 128]);
        let reference = IsInternalRequest::decode(message.as_slice()).unwrap();
        let batch = TextBatch::decode(message.into()).unwrap();
        let ips: Vec<&[u8]> = batch.addresses().collect();
        let expected: Vec<&[u8]> = reference.ips.iter().map(|ip| ip.as_bytes()).collect();
        assert_eq!(ips, expected);
    }

    #[test]
    fn decode_keeps_address_not_utf8() {
        let message: &[u8] = &[0x0a, 0x01, b'x', 0x0a, 0x02, 0xff, 0xfe];
        let batch = TextBatch::decode(Bytes::from_static(message)).unwrap();
        let ips: Vec<&[u8]> = batch.addresses().collect();
        assert_eq!(ips, [&b"x"[..], &[0xff, 0xfe]]);

        // The same through the fallback reader, after an unknown field.
        let mut message = message.to_vec();
        message.extend_from_slice(&[0x48, 0x05]);
        let batch = TextBatch::decode(message.into()).unwrap();
        let ips: Vec<&[u8]> = batch.addresses().collect();
        assert_eq!(ips, [&b"x"[..], &[0xff, 0xfe]]);
    }

    #[test]
    fn decode_reads_utf8_and_long_addresses() {
        let long = "1".repeat(300);
        let request = IsInternalRequest {
            ips: vec!["é.example".into(), long.clone()],
        };
        let batch = TextBatch::decode(request.encode_to_vec().into()).unwrap();
        let ips: Vec<&[u8]> = batch.addresses().collect();
        assert_eq!(ips, ["é.example".as_bytes(), long.as_bytes()]);
    }

    #[test]
    fn decode_rejects_truncated_message_like_prost() {
        let message: &[u8] = &[0x0a, 0x05, b'1'];
        let ours = TextBatch::decode(Bytes::from_static(message)).unwrap_err();
        let reference = IsInternalRequest::decode(message).unwrap_err();
        assert_eq!(ours.to_string(), reference.to_string());
    }
}
