//! The table that answers requests now, and the limits requests obey.
//!
//! Readers take one snapshot per request, so each batch is answered by
//! exactly one table even while a reload swaps in the next one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::error::RequestError;
use crate::metrics::SetCounters;
use crate::table::Table;

/// Default maximum number of addresses in one request.
pub const DEFAULT_MAX_BATCH: usize = 65_536;

/// A table together with what it was built from.
#[derive(Debug)]
pub struct Snapshot {
    pub table: Table,
    /// SHA-256 over the config and list files, hex encoded.
    pub content_hash: String,
    pub loaded_at: SystemTime,
    pub build_time: Duration,
    /// Hit counters of `table`'s sets, resolved when the table was built.
    pub set_counters: SetCounters,
}

/// Shared state of a running service.
#[derive(Debug)]
pub struct AppState {
    current: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub max_batch: usize,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(snapshot: Snapshot, config_path: PathBuf, max_batch: usize) -> AppState {
        AppState {
            current: ArcSwap::from_pointee(snapshot),
            config_path,
            max_batch,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Returns the snapshot that answers now. Hold it for a whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot in one atomic store; requests that already hold
    /// the old one finish with it.
    pub fn install(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Rejects a batch larger than the configured maximum.
    pub fn check_batch(&self, size: usize) -> Result<(), RequestError> {
        if size > self.max_batch {
            return Err(RequestError::BatchTooLarge {
                size,
                max: self.max_batch,
            });
        }
        Ok(())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}
