//! The memory that large responses may hold while they wait for their
//! clients.
//!
//! A batch response is built whole before it is sent, and a client that
//! stops reading leaves it in memory until the idle timeout closes the
//! connection. Each response over [`THRESHOLD`] bytes reserves its size from
//! one budget for the whole server until its last piece has been handed to
//! hyper. A response that does not fit is rejected: HTTP with 503, gRPC with
//! `RESOURCE_EXHAUSTED`. Such a response goes out in pieces of [`PIECE`]
//! bytes, so hyper and h2 buffer about one piece at a time and the rest stays
//! counted here.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Size above which a response counts against the budget. Smaller ones go
/// to hyper whole: splitting the 40 KB responses of text batches of 1,024
/// cost 9% of their rate.
pub const THRESHOLD: usize = 64 * 1024;

/// Largest piece of a budgeted response that is handed to hyper at once.
/// HTTP/2 streams buffer at most this much beyond what their client has
/// read (the server sets hyper's send buffer to it), and each piece may come
/// on top.
pub const PIECE: usize = 16 * 1024;

/// Budget of bytes for responses over [`THRESHOLD`] that have not been sent
/// yet.
#[derive(Clone, Debug)]
pub struct ResponseBudget {
    /// One permit per KiB.
    kib: Arc<Semaphore>,
    limit: usize,
}

impl ResponseBudget {
    pub fn new(limit: usize) -> ResponseBudget {
        ResponseBudget {
            kib: Arc::new(Semaphore::new(limit.div_ceil(1024))),
            limit,
        }
    }

    /// Size of the whole budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `len` bytes until the returned permit drops, or returns
    /// `None` when responses already hold the rest of the budget.
    pub fn reserve(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(len.div_ceil(1024)).ok()?;
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }

    /// Returns the error message for a response of `len` bytes that does
    /// not fit.
    pub fn rejection(&self, len: usize) -> String {
        if len > self.limit {
            return format!(
                "the response of {} KiB is larger than the {} MiB of --response-memory; raise --response-memory, or send smaller batches",
                len.div_ceil(1024),
                self.limit / (1024 * 1024)
            );
        }
        format!(
            "the response of {} KiB does not fit: responses that clients have not read yet hold the {} MiB of --response-memory; retry shortly, read responses as they arrive, or send smaller batches",
            len.div_ceil(1024),
            self.limit / (1024 * 1024)
        )
    }
}

/// A response body that hands `data` to hyper in pieces of at most
/// [`PIECE`] bytes and keeps its reservation until the last piece.
pub struct ChunkedBody {
    data: Bytes,
    reservation: Option<OwnedSemaphorePermit>,
}

impl ChunkedBody {
    pub fn new(data: Bytes, reservation: Option<OwnedSemaphorePermit>) -> ChunkedBody {
        ChunkedBody { data, reservation }
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            self.reservation = None;
            return Poll::Ready(None);
        }
        let piece = next_piece(&mut self.data);
        if self.data.is_empty() {
            self.reservation = None;
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.remaining() as u64)
    }
}

/// Splits the next piece of at most [`PIECE`] bytes off `data`.
pub fn next_piece(data: &mut Bytes) -> Bytes {
    data.split_to(data.len().min(PIECE))
}

/// Parses a size such as `256MiB`, `1GiB` or `65536KiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let units = [("KiB", 1usize << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)];
    let Some((digits, unit)) = units
        .iter()
        .find_map(|&(suffix, unit)| Some((text.strip_suffix(suffix)?, unit)))
    else {
        return Err(format!(
            "{text:?} has no unit; write a whole number with KiB, MiB or GiB, such as 256MiB"
        ));
    };
    let amount: usize = digits.trim().parse().map_err(|_| {
        format!("{text:?} is not a size; write a whole number with KiB, MiB or GiB, such as 256MiB")
    })?;
    amount
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large for this machine"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        for bad in ["256", "256MB", "MiB", "-1MiB", "1.5GiB", ""] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn budget_rejects_what_does_not_fit() {
        let budget = ResponseBudget::new(1 << 20);
        let first = budget.reserve(700 * 1024).expect("fits");
        assert!(budget.reserve(400 * 1024).is_none());
        drop(first);
        assert!(budget.reserve(1 << 20).is_some());
        assert!(budget.reserve((1 << 20) + 1).is_none());
    }

    #[test]
    fn body_sends_pieces_and_releases_at_the_end() {
        let budget = ResponseBudget::new(1 << 20);
        let data = Bytes::from(vec![7u8; 2 * PIECE + 10]);
        let mut body = ChunkedBody::new(data, budget.reserve(2 * PIECE + 10));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            let data = frame.into_data().expect("data frame");
            sizes.push(data.len());
            if sizes.len() < 3 {
                assert!(budget.reserve(1 << 20).is_none(), "released early");
            }
        }
        assert_eq!(sizes, [PIECE, PIECE, 10]);
        assert!(budget.reserve(1 << 20).is_some(), "kept after the end");
    }
}
