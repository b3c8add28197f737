//! Errors that reject a whole request, and their gRPC and HTTP forms.
//!
//! An invalid address never rejects a request; it gets its own verdict.

use axum::http::StatusCode;
use thiserror::Error;

/// Reason a request was rejected before any address was classified.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("batch of {size} addresses exceeds the maximum of {max}; split it into smaller batches or raise --max-batch-size")]
    BatchTooLarge { size: usize, max: usize },
    #[error("{field} is {len} bytes long, which is not a multiple of {width}; send whole {width}-byte addresses")]
    PackedLength {
        field: &'static str,
        len: usize,
        width: usize,
    },
    #[error("missing query parameter \"ip\"; call /v1/is-internal?ip=ADDRESS")]
    MissingIp,
    #[error("query parameter \"ip\" is given {0} times; send one, or POST a batch as {{\"ips\": [...]}}")]
    RepeatedIp(usize),
    #[error("invalid JSON body: {0}; send {{\"ips\": [\"ADDRESS\", ...]}}")]
    InvalidJson(String),
    #[error("request body has Content-Encoding {0:?}, which is not supported; send uncompressed JSON without a Content-Encoding header")]
    CompressedBody(String),
    #[error("request body exceeds {0} bytes; split the batch")]
    BodyTooLarge(usize),
    #[error("{0}")]
    BodyStalled(String),
    #[error("failed to read the request body: {0}; check its framing: a Content-Length that matches the body, or well-formed chunks")]
    BodyRead(String),
    #[error("{0}")]
    ResponseMemory(String),
}

impl RequestError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::CompressedBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::ResponseMemory(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<RequestError> for tonic::Status {
    fn from(error: RequestError) -> tonic::Status {
        tonic::Status::invalid_argument(error.to_string())
    }
}
