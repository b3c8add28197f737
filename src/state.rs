//! The table in use, and the limits requests obey.
//!
//! Readers take one snapshot per request, so exactly one table classifies
//! each batch, even while a reload swaps in the next one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::config::Loaded;
use crate::error::RequestError;
use crate::metrics::SetCounters;
use crate::response::ResponseBudget;
use crate::table::Table;

/// Memory that large responses waiting for their clients may hold by default.
pub const DEFAULT_RESPONSE_MEMORY: usize = 256 << 20;

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

impl Snapshot {
    /// Builds a table from a validated config; `started` is when reading began.
    pub fn build(loaded: Loaded, generation: u64, started: Instant) -> Snapshot {
        // The service reports a matched prefix's set and network, never
        // its file and line, so it keeps no origins.
        let table = Table::new(loaded.spec, generation).without_origins();
        release_free_memory();
        Snapshot {
            set_counters: SetCounters::new(&table),
            table,
            content_hash: loaded.content_hash,
            loaded_at: SystemTime::now(),
            build_time: started.elapsed(),
        }
    }
}

/// Returns free heap pages to the operating system. Loading a large config
/// frees tens of megabytes (the list file text, sort buffers, the duplicate
/// index) that glibc would otherwise keep in the process's resident memory.
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and releases only pages that no
    // allocation uses.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocation size from which glibc maps memory of its own for each block.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Makes glibc give each allocation of 1 MiB or more its own mapping, which
/// returns to the operating system when freed. Call it before the first
/// table is built.
///
/// By default glibc adjusts that threshold to the program's allocations
/// (glibc manual, "Malloc Tunable Parameters"). Buffers that a load freed
/// then stayed resident in a thread's heap, even after `malloc_trim`. With
/// 1.1M prefixes the process kept 45 MiB resident after start-up and 57-76
/// MiB after reloads, against 33-34 MiB with the fixed threshold.
pub fn map_large_allocations() {
    // SAFETY: mallopt takes no pointers and only changes how later
    // allocations are placed. A rejected value leaves the default in force.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Outcome of the newest reload attempt and the health of the file watcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Error of the newest reload if it failed; `None` once a reload succeeds.
    pub last_error: Option<String>,
    /// Error that stopped the config file watcher; `None` while it runs.
    pub watcher_error: Option<String>,
}

/// Shared state of a running service.
#[derive(Debug)]
pub struct AppState {
    current: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub max_batch: usize,
    shutting_down: AtomicBool,
    reload_status: Mutex<ReloadStatus>,
    /// Memory that large responses may hold until their clients read them.
    pub responses: ResponseBudget,
}

impl AppState {
    pub fn new(snapshot: Snapshot, config_path: PathBuf, max_batch: usize) -> AppState {
        AppState {
            current: ArcSwap::from_pointee(snapshot),
            config_path,
            max_batch,
            shutting_down: AtomicBool::new(false),
            reload_status: Mutex::new(ReloadStatus::default()),
            responses: ResponseBudget::new(DEFAULT_RESPONSE_MEMORY),
        }
    }

    /// Gives large responses `bytes` in all, in place of the default 256 MiB.
    pub fn with_response_memory(mut self, bytes: usize) -> AppState {
        self.responses = ResponseBudget::new(bytes);
        self
    }

    /// Returns the snapshot in use. Hold it for a whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot in one atomic store; requests that already hold
    /// the old one finish with it.
    pub fn install(&self, snapshot: Snapshot) {
        self.install_shared(Arc::new(snapshot));
    }

    /// Like [`AppState::install`], for a snapshot the caller keeps a handle to.
    pub fn install_shared(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot);
    }

    /// Like [`AppState::install_shared`], and returns the snapshot it
    /// replaced, so the caller chooses the thread that frees it.
    pub fn replace_shared(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.current.swap(snapshot)
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

    pub fn reload_status(&self) -> ReloadStatus {
        self.lock_reload_status().clone()
    }

    pub fn set_last_reload_error(&self, error: Option<String>) {
        self.lock_reload_status().last_error = error;
    }

    pub fn set_watcher_error(&self, error: Option<String>) {
        self.lock_reload_status().watcher_error = error;
    }

    // The status is plain data that every writer leaves whole, so a panic in
    // another holder does not make it unusable.
    fn lock_reload_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}
