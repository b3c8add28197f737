//! Follows the config file and its list files, and swaps in a new table when
//! they change.
//!
//! File events, SIGHUP and a periodic content-hash check all start the same
//! reload: wait until no writer has a changed file open, read the files
//! until two reads agree, build the table on a blocking thread, and install
//! it with one atomic store. A failed reload
//! keeps the current table. The table module has no part in this.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::config::{self, ConfigErrors, Loaded};
use crate::state::{AppState, Snapshot};

const RELOADS: &str = "ipclass_config_reloads_total";
const LAST_RELOAD_SUCCESSFUL: &str = "ipclass_config_last_reload_successful";
const LAST_RELOAD_SUCCESS_TIMESTAMP: &str = "ipclass_config_last_reload_success_timestamp_seconds";
const TABLE_GENERATION: &str = "ipclass_table_generation";
const WATCHER_FAILURES: &str = "ipclass_config_watcher_failures_total";
const WATCHER_UP: &str = "ipclass_config_watcher_up";

/// Reads of one reload after the first, at most, while the files keep
/// changing. The last read is used if they never agree.
const MAX_SETTLE_READS: u32 = 10;

/// Time a file may stay open for writing, with no change, before the wait
/// for its writer is logged as a warning, and a SIGHUP may end the wait.
const OPEN_WRITE_LIMIT: Duration = Duration::from_secs(30);

/// Maximum wait for the files to be quiet before a read. A file that a
/// program rewrites again and again would otherwise stop every reload.
const MAX_QUIET_WAIT: Duration = Duration::from_secs(30);

/// Bounds of the pause between attempts to restart a failed watcher. The
/// first pause is the debounce period within these bounds, and each failed
/// attempt doubles it. The lower bound keeps a zero debounce from spinning.
const MIN_WATCH_RETRY: Duration = Duration::from_millis(10);
const MAX_WATCH_RETRY: Duration = Duration::from_secs(5);

/// Timing settings of the reload path.
#[derive(Debug, Clone, Copy)]
pub struct ReloadSettings {
    /// Quiet period after a file event, and the pause between the reads that
    /// must agree before the files count as complete.
    pub debounce: Duration,
    /// Interval of the content-hash check that catches changes without events.
    pub poll_interval: Duration,
}

/// Registers the help text of every reload and table metric.
pub fn describe_metrics() {
    describe_counter!(
        RELOADS,
        Unit::Count,
        "Config reloads by result: success or failure."
    );
    describe_gauge!(
        LAST_RELOAD_SUCCESSFUL,
        "1 if the newest config reload succeeded, 0 if it failed."
    );
    describe_gauge!(
        LAST_RELOAD_SUCCESS_TIMESTAMP,
        Unit::Seconds,
        "Unix time at which the table that answers now was loaded."
    );
    describe_gauge!(
        TABLE_GENERATION,
        "Generation of the table that answers now."
    );
    describe_counter!(
        WATCHER_FAILURES,
        Unit::Count,
        "Failures of the config file watcher; it is retried, and the periodic check still runs."
    );
    describe_gauge!(
        WATCHER_UP,
        "1 while the config file watcher runs, 0 after it failed."
    );
}

/// Starts following the config of `state`; `sources` are the files that the
/// current table was read from. The watches and the SIGHUP handler are in
/// place when this returns, and the task runs until it is aborted.
pub fn spawn(
    state: Arc<AppState>,
    settings: ReloadSettings,
    sources: Vec<PathBuf>,
) -> JoinHandle<()> {
    // Series that exist from the start let `increase()` see the first
    // failure, which would otherwise create its series at 1.
    for result in ["success", "failure"] {
        counter!(RELOADS, "result" => result).increment(0);
    }
    counter!(WATCHER_FAILURES).increment(0);
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut reloader = Reloader::new(state.clone(), settings.debounce);
    reloader.record_success(&state.snapshot());
    let watch = WatchSet::new(&state.config_path, &sources);
    let watcher = reloader.establish(&watch, &sender, None);
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::error!(%error, "failed to watch SIGHUP; only file events and the periodic check reload");
            None
        }
    };
    let watching = Watching {
        sender,
        receiver,
        watch,
        watcher,
        hangup,
    };
    tokio::spawn(run(reloader, settings, watching))
}

/// Cause of a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    FileEvent,
    /// SIGHUP: rebuild even when the content hash is unchanged.
    Signal,
    Poll,
    /// A pause after a watcher failure ended, so the watches are tried again.
    /// Files may have changed while nothing watched them, so a restored
    /// watcher is followed by a reload.
    WatchRetry,
}

impl Trigger {
    /// Returns the name of the trigger in logs.
    fn name(self) -> &'static str {
        match self {
            Trigger::FileEvent => "file-event",
            Trigger::Signal => "signal",
            Trigger::Poll => "poll",
            Trigger::WatchRetry => "watch-retry",
        }
    }
}

/// Message from the watcher thread to the reload task.
#[derive(Debug)]
enum WatchMessage {
    Changed,
    Failed(String),
}

/// The sources of reload triggers, set up before the task starts.
struct Watching {
    sender: UnboundedSender<WatchMessage>,
    receiver: UnboundedReceiver<WatchMessage>,
    watch: WatchSet,
    watcher: Option<RecommendedWatcher>,
    hangup: Option<Signal>,
}

async fn run(mut reloader: Reloader, settings: ReloadSettings, watching: Watching) {
    let Watching {
        sender,
        mut receiver,
        mut watch,
        mut watcher,
        mut hangup,
    } = watching;
    let config_path = reloader.state.config_path.clone();
    let start = tokio::time::Instant::now() + settings.poll_interval;
    let mut poll = tokio::time::interval_at(start, settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first_retry = settings.debounce.clamp(MIN_WATCH_RETRY, MAX_WATCH_RETRY);
    let mut retry = first_retry;

    loop {
        let mut trigger = tokio::select! {
            message = receiver.recv() => match message {
                Some(WatchMessage::Changed) => {
                    let debounce_ms = settings.debounce.as_millis();
                    tracing::info!(debounce_ms, "config files changed; reloading once they settle");
                    Trigger::FileEvent
                }
                Some(WatchMessage::Failed(error)) => {
                    reloader.watcher_failed(format!("config watcher failed: {error}"));
                    watcher = None;
                    Trigger::FileEvent
                }
                // The task keeps a sender, so the channel never closes.
                None => continue,
            },
            () = next_hangup(&mut hangup) => {
                tracing::info!(signal = "SIGHUP", "signal received; reloading the config");
                Trigger::Signal
            }
            _ = poll.tick() => Trigger::Poll,
            // A folder that was removed or renamed away cannot be watched
            // until it exists again, and nothing else reports when it does.
            () = tokio::time::sleep(retry), if watcher.is_none() => Trigger::WatchRetry,
        };
        if trigger == Trigger::FileEvent || reloader.writes.pending().is_some() {
            let hangup_seen = debounce(
                &mut receiver,
                &mut hangup,
                settings.debounce,
                &reloader.writes,
            )
            .await;
            // A SIGHUP in the wait joins the reload that follows it.
            if hangup_seen {
                trigger = Trigger::Signal;
            }
        }

        // Watches go up again before the read, so a change made during the
        // read raises a new event. A rename or delete drops inotify watches,
        // so every trigger re-establishes them.
        watcher = reloader.establish(&watch, &sender, watcher);
        if watcher.is_some() {
            retry = first_retry;
        } else if trigger == Trigger::WatchRetry {
            retry = (retry * 2).min(MAX_WATCH_RETRY);
            continue;
        }
        let Some(outcome) = reloader.load(trigger).await else {
            continue;
        };
        // A config that names new list files gets watches on them before its
        // table is installed, so a change right after the swap is not missed.
        let next = WatchSet::new(&config_path, outcome.sources());
        if next != watch {
            watch = next;
            watcher = reloader.establish(&watch, &sender, watcher);
        }
        reloader.finish(outcome, trigger);
    }
}

/// Returns true when a process has `path` open for writing, as far as
/// /proc shows: the descriptors of another user's processes are hidden
/// without privileges, so such a writer counts as closed.
#[cfg(target_os = "linux")]
fn open_for_writing(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    let Ok(file) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    for process in processes.flatten() {
        if !process
            .file_name()
            .as_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            continue;
        }
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            // Sockets, pipes and the like link to no path.
            let is_path = std::fs::read_link(descriptor.path())
                .is_ok_and(|target| target.as_os_str().as_bytes().starts_with(b"/"));
            let same_file = is_path
                && std::fs::metadata(descriptor.path())
                    .is_ok_and(|open| open.dev() == file.dev() && open.ino() == file.ino());
            if !same_file {
                continue;
            }
            let info = process.path().join("fdinfo").join(descriptor.file_name());
            let flags = std::fs::read_to_string(info).ok().and_then(|info| {
                let flags = info.lines().find_map(|line| line.strip_prefix("flags:"))?;
                u32::from_str_radix(flags.trim(), 8).ok()
            });
            // O_WRONLY is 1 and O_RDWR is 2, in the two access mode bits.
            if flags.is_some_and(|flags| flags & 0o3 != 0) {
                return true;
            }
        }
    }
    false
}

/// Other systems show no open descriptors, so a close ends the entry.
#[cfg(not(target_os = "linux"))]
fn open_for_writing(_path: &Path) -> bool {
    false
}

async fn next_hangup(hangup: &mut Option<Signal>) {
    match hangup {
        Some(hangup) => {
            if hangup.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Waits until no event has arrived for `quiet` and no writer has a file
/// open, dropping the burst. Returns whether a SIGHUP arrived meanwhile.
async fn debounce(
    receiver: &mut UnboundedReceiver<WatchMessage>,
    hangup: &mut Option<Signal>,
    quiet: Duration,
    writes: &OpenWrites,
) -> bool {
    let mut waiting_for = None;
    let mut hangup_seen = false;
    // Files whose writer left them unchanged past the limit, and whether a
    // SIGHUP arrived after the warning about them.
    let mut stale = BTreeSet::new();
    let mut hangup_after_warning = false;
    let started = tokio::time::Instant::now();
    let mut bounded = false;
    loop {
        loop {
            tokio::select! {
                message = tokio::time::timeout(quiet, receiver.recv()) => {
                    if !matches!(message, Ok(Some(_))) {
                        break;
                    }
                    // Files that never go quiet would hold off the reload for
                    // good. Past the bound, the first event after which no
                    // writer has a file open starts it.
                    if !bounded && started.elapsed() >= MAX_QUIET_WAIT {
                        bounded = true;
                        tracing::warn!(
                            limit_s = MAX_QUIET_WAIT.as_secs(),
                            "config files kept changing with no quiet period; reloading without one"
                        );
                    }
                    if bounded && writes.pending().is_none() {
                        break;
                    }
                }
                () = next_hangup(hangup) => {
                    tracing::info!(signal = "SIGHUP", "signal received while files settle; the pending reload rebuilds the table");
                    hangup_seen = true;
                    hangup_after_warning = !stale.is_empty();
                }
            }
        }
        let Some((file, idle)) = writes.pending() else {
            return hangup_seen;
        };
        if idle < OPEN_WRITE_LIMIT {
            // A writer such as `sort > list.txt` truncates the file long
            // before it writes, so a quiet file that is still open is not
            // complete.
            if waiting_for.as_ref() != Some(&file) {
                tracing::info!(file = %file.display(), "waiting for the writer to close the file before reloading");
                waiting_for = Some(file);
            }
        } else if hangup_after_warning {
            tracing::warn!(file = %file.display(), "reloading the file as it is, without waiting for its writer, as SIGHUP requested");
            writes.forget(&file);
        } else if stale.insert(file.clone()) {
            // Reloading a file that is still open could serve it half
            // written, such as a carve-out list that is still empty.
            let limit_s = OPEN_WRITE_LIMIT.as_secs();
            tracing::warn!(file = %file.display(), limit_s, "file open for writing but unchanged past the limit; the current table stays until the writer closes the file, or send SIGHUP to reload it as it is");
        }
    }
}

/// Files that a writer changed and has not closed since, as inotify reports
/// them, with the time of the latest change, and the time of the latest
/// relevant event of any kind. A close after writing, a removal or a rename
/// of the file ends its entry.
#[derive(Debug, Clone, Default)]
struct OpenWrites(Arc<Mutex<Writes>>);

/// The state behind [`OpenWrites`].
#[derive(Debug, Default)]
struct Writes {
    files: HashMap<PathBuf, Instant>,
    /// Files whose wait for another writer is logged, so that the close
    /// events of one change, one for each watch, log it once.
    waiting_logged: HashSet<PathBuf>,
    last_event: Option<Instant>,
}

impl OpenWrites {
    fn note(&self, event: &Event) {
        // A close by another process, such as a `touch` during a slow write,
        // leaves the writer's descriptor open, so a close ends the entry only
        // when /proc shows no other. The scan runs outside the lock.
        let closed = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        let still_written: Vec<bool> = event
            .paths
            .iter()
            .map(|path| closed && open_for_writing(path))
            .collect();
        let mut writes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        writes.last_event = Some(Instant::now());
        for (path, still_written) in event.paths.iter().zip(still_written) {
            match event.kind {
                EventKind::Modify(ModifyKind::Data(_)) => {
                    writes.files.insert(path.clone(), Instant::now());
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write)) if still_written => {
                    let first = writes.waiting_logged.insert(path.clone());
                    if first {
                        tracing::info!(file = %path.display(), "file closed after writing, but another process still has it open for writing; waiting for that writer");
                    }
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Name(_)) => {
                    writes.files.remove(path);
                    writes.waiting_logged.remove(path);
                }
                _ => {}
            }
        }
    }

    /// Returns the most recently changed file that a writer still has open,
    /// and the time since that change. An entry ends only with a close after
    /// writing, a removal, a rename or [`OpenWrites::forget`]. A truncate by
    /// path raises no close, so its entry stays until one of those.
    fn pending(&self) -> Option<(PathBuf, Duration)> {
        let writes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        writes
            .files
            .iter()
            .max_by_key(|(_, changed)| **changed)
            .map(|(file, changed)| (file.clone(), changed.elapsed()))
    }

    /// Ends the entry of `file`, so reloads no longer wait for its writer.
    fn forget(&self, file: &Path) {
        let mut writes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        writes.files.remove(file);
        writes.waiting_logged.remove(file);
    }

    /// Blocks until no relevant event has arrived for `quiet`, or for at
    /// most `max_wait` while files keep changing.
    fn wait_quiet(&self, quiet: Duration, max_wait: Duration) {
        let started = Instant::now();
        loop {
            let last_event = self
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_event;
            let since = last_event.map_or(quiet, |at| at.elapsed());
            if since >= quiet {
                return;
            }
            if started.elapsed() >= max_wait {
                let waited_s = max_wait.as_secs_f64();
                tracing::warn!(
                    waited_s,
                    "config files kept changing; reading them as they are"
                );
                return;
            }
            std::thread::sleep(quiet - since);
        }
    }
}

/// The files and folders to watch for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchSet {
    files: BTreeSet<PathBuf>,
    folders: BTreeSet<PathBuf>,
    names: BTreeSet<OsString>,
}

impl WatchSet {
    /// Watches `config` and `sources` and their folders. The config is
    /// always included, even when a failed load named no sources.
    fn new(config: &Path, sources: &[PathBuf]) -> WatchSet {
        let mut watch = WatchSet {
            files: BTreeSet::new(),
            folders: BTreeSet::new(),
            names: BTreeSet::new(),
        };
        for path in std::iter::once(config).chain(sources.iter().map(PathBuf::as_path)) {
            // The event of a watched folder moving names it by its absolute
            // path, which a relative path would never match.
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            let path = path.as_path();
            watch.files.insert(path.to_owned());
            watch.folders.insert(folder_of(path).to_owned());
            if let Some(name) = path.file_name() {
                watch.names.insert(name.to_owned());
            }
        }
        watch
    }

    /// Tells whether `event` may change what the config loads. Editors' swap
    /// and backup files in the same folder do not. Opening and reading a file
    /// do not either, and the reload itself does both.
    fn is_relevant(&self, event: &Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        if matches!(
            event.kind,
            EventKind::Access(AccessKind::Open(_))
                | EventKind::Access(AccessKind::Read)
                | EventKind::Access(AccessKind::Close(AccessMode::Read))
                | EventKind::Access(AccessKind::Close(AccessMode::Execute))
        ) {
            return false;
        }
        event.paths.iter().any(|path| self.is_relevant_path(path))
    }

    fn is_relevant_path(&self, path: &Path) -> bool {
        if self.files.contains(path) || self.folders.contains(path) {
            return true;
        }
        // A Kubernetes ConfigMap volume publishes a new version by replacing
        // the `..data` symlink, and only the folder watch reports that rename.
        // NOTE: a symlinked folder between the config folder and a list file,
        // when swapped under another name, raises no event that passes here,
        // so only the periodic check finds that change.
        path.file_name().is_some_and(|name| {
            self.names.contains(name) || name.to_string_lossy().starts_with("..")
        })
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a watcher over `watch` whose relevant events go to `sender`.
/// A folder that cannot be watched fails the watcher. A missing file does
/// not, because the folder watch reports it when it comes back.
fn start_watcher(
    watch: &WatchSet,
    sender: &UnboundedSender<WatchMessage>,
    writes: &OpenWrites,
) -> Result<RecommendedWatcher, String> {
    let filter = watch.clone();
    let sender = sender.clone();
    let writes = writes.clone();
    let handler = move |result: notify::Result<Event>| {
        let message = match result {
            Ok(event) if filter.is_relevant(&event) => {
                // The write is noted before the message is sent, so the reload
                // task sees it whenever it receives the message.
                writes.note(&event);
                WatchMessage::Changed
            }
            Ok(_) => return,
            Err(error) => WatchMessage::Failed(error.to_string()),
        };
        let _ = sender.send(message);
    };
    let mut watcher = notify::recommended_watcher(handler)
        .map_err(|error| format!("failed to start the config watcher: {error}"))?;
    for folder in &watch.folders {
        watcher
            .watch(folder, RecursiveMode::NonRecursive)
            .map_err(|error| format!("failed to watch folder {}: {error}", folder.display()))?;
    }
    for file in &watch.files {
        if let Err(error) = watcher.watch(file, RecursiveMode::NonRecursive) {
            tracing::debug!(file = %file.display(), %error, "file not watched; its folder is");
        }
    }
    Ok(watcher)
}

/// The result of one reload attempt on the blocking thread.
enum Outcome {
    Built {
        // Boxed because a table is far larger than a list of paths.
        snapshot: Box<Snapshot>,
        loaded_warnings: Vec<String>,
        sources: Vec<PathBuf>,
    },
    Unchanged {
        sources: Vec<PathBuf>,
        content_hash: String,
    },
}

impl Outcome {
    fn sources(&self) -> &[PathBuf] {
        match self {
            Outcome::Built { sources, .. } | Outcome::Unchanged { sources, .. } => sources,
        }
    }

    /// SHA-256 of the files that the outcome was read from.
    fn content_hash(&self) -> &str {
        match self {
            Outcome::Built { snapshot, .. } => &snapshot.content_hash,
            Outcome::Unchanged { content_hash, .. } => content_hash,
        }
    }
}

/// Loads, installs and reports reloads for one service.
struct Reloader {
    state: Arc<AppState>,
    settle: Duration,
    last_failure: Option<String>,
    /// When the latest reload began to read the config.
    reload_started: Instant,
    /// Files that a writer still has open, as the watcher reports them.
    writes: OpenWrites,
}

impl Reloader {
    fn new(state: Arc<AppState>, settle: Duration) -> Reloader {
        Reloader {
            state,
            settle,
            last_failure: None,
            reload_started: Instant::now(),
            writes: OpenWrites::default(),
        }
    }

    /// Returns a running watcher over `watch`, or `None` after logging and
    /// counting why none could start. `previous` stays alive until the new
    /// one watches, so no event falls between them.
    fn establish(
        &self,
        watch: &WatchSet,
        sender: &UnboundedSender<WatchMessage>,
        previous: Option<RecommendedWatcher>,
    ) -> Option<RecommendedWatcher> {
        let was_failed = self.state.reload_status().watcher_error.is_some();
        match start_watcher(watch, sender, &self.writes) {
            Ok(watcher) => {
                drop(previous);
                if was_failed {
                    tracing::info!(config = %self.state.config_path.display(), "config watcher running again");
                }
                self.state.set_watcher_error(None);
                gauge!(WATCHER_UP).set(1.0);
                Some(watcher)
            }
            Err(error) => {
                self.watcher_failed(error);
                None
            }
        }
    }

    fn watcher_failed(&self, error: String) {
        let status = self.state.reload_status();
        // One failure that persists is logged and counted once, although
        // every trigger tries again.
        if status.watcher_error.as_deref() != Some(error.as_str()) {
            tracing::error!(
                config = %self.state.config_path.display(),
                "{error}; retrying the watches, and the periodic check still reloads"
            );
            counter!(WATCHER_FAILURES).increment(1);
        }
        self.state.set_watcher_error(Some(error));
        gauge!(WATCHER_UP).set(0.0);
    }

    /// Reads and builds the config on a blocking thread. Returns `None`
    /// after logging and counting a failure.
    async fn load(&mut self, trigger: Trigger) -> Option<Outcome> {
        let current = self.state.snapshot();
        let path = self.state.config_path.clone();
        let settle = self.settle;
        let generation = current.table.generation() + 1;
        let current_hash = (trigger != Trigger::Signal).then(|| current.content_hash.clone());
        let writes = self.writes.clone();
        self.reload_started = Instant::now();
        let task = tokio::task::spawn_blocking(move || {
            // The parse and build threads start from this one and inherit
            // its slice.
            if let Err(error) = crate::sched::set_thread_slice(None) {
                tracing::debug!(%error, "failed to reset the reload thread's time slice; reloading with the current one");
            }
            build(&path, settle, generation, current_hash.as_deref(), &writes)
        });
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "config reload task failed; keeping the current table");
                return None;
            }
        };
        // A writer opened a file during the read. Its event is queued, and
        // the reload it starts waits for the file to be closed.
        if let Some((file, _)) = self.writes.pending() {
            tracing::info!(file = %file.display(), "file opened for writing during the reload; reloading after it is closed");
            return None;
        }
        match outcome {
            Ok(outcome) => Some(outcome),
            Err(errors) => {
                self.fail(trigger, &errors);
                None
            }
        }
    }

    /// Installs a built table, or records that the config is unchanged.
    fn finish(&mut self, outcome: Outcome, trigger: Trigger) {
        let current = self.state.snapshot();
        match outcome {
            Outcome::Built {
                snapshot,
                loaded_warnings,
                ..
            } => {
                for warning in loaded_warnings {
                    tracing::warn!(config = %self.state.config_path.display(), "{warning}");
                }
                self.install(*snapshot, current.table.generation(), trigger);
            }
            Outcome::Unchanged { .. } => {
                if self.last_failure.is_some() {
                    // The broken files were put back as the served table has
                    // them, so the failure no longer applies.
                    tracing::info!(
                        config = %self.state.config_path.display(),
                        generation = current.table.generation(),
                        "config files match the served table again; the reload error is cleared"
                    );
                } else {
                    tracing::debug!(
                        config = %self.state.config_path.display(),
                        content_hash = %current.content_hash,
                        "config content unchanged; reload skipped"
                    );
                }
                self.clear_failure();
            }
        }
    }

    fn install(&mut self, snapshot: Snapshot, old_generation: u64, trigger: Trigger) {
        let generation = snapshot.table.generation();
        let sets = describe_sets(&snapshot);
        let build_ms = snapshot.build_time.as_secs_f64() * 1000.0;
        let reload_ms = self.reload_started.elapsed().as_secs_f64() * 1000.0;
        let prefixes = snapshot.table.prefix_count();
        let snapshot = Arc::new(snapshot);
        // Cleared before the swap, so no reader sees the new generation
        // beside the error of the reload before it.
        self.clear_failure();
        let old = self.state.replace_shared(snapshot.clone());
        // Freeing a large table takes milliseconds, which would stall the
        // requests queued on this runtime thread. Requests that still hold
        // the old table free it as they finish, wherever they run. If no
        // thread starts, the closure and the table are dropped right here.
        let _ = std::thread::Builder::new()
            .name("ipclass-free-table".into())
            .spawn(move || drop(old));
        counter!(RELOADS, "result" => "success").increment(1);
        self.record_success(&snapshot);
        tracing::info!(
            config = %self.state.config_path.display(),
            old_generation,
            generation,
            prefixes,
            sets,
            build_ms,
            reload_ms,
            trigger = trigger.name(),
            "table reloaded"
        );
    }

    fn clear_failure(&mut self) {
        self.last_failure = None;
        self.state.set_last_reload_error(None);
        gauge!(LAST_RELOAD_SUCCESSFUL).set(1.0);
    }

    fn fail(&mut self, trigger: Trigger, errors: &ConfigErrors) {
        let message = errors.to_string();
        // The periodic check finds a broken config again on every tick, and
        // events that arrive during a read start one more read of the same
        // files. Each failure is logged and counted once, except on SIGHUP.
        if trigger != Trigger::Signal && self.last_failure.as_deref() == Some(message.as_str()) {
            tracing::debug!(config = %self.state.config_path.display(), "config still invalid");
            return;
        }
        tracing::error!(
            config = %self.state.config_path.display(),
            generation = self.state.snapshot().table.generation(),
            "config reload failed; keeping the current table: {message}"
        );
        counter!(RELOADS, "result" => "failure").increment(1);
        gauge!(LAST_RELOAD_SUCCESSFUL).set(0.0);
        self.state
            .set_last_reload_error(Some(errors.without_file_text()));
        self.last_failure = Some(message);
    }

    /// Sets the table gauges for `snapshot`.
    fn record_success(&mut self, snapshot: &Snapshot) {
        let table = &snapshot.table;
        gauge!(TABLE_GENERATION).set(table.generation() as f64);
        gauge!(LAST_RELOAD_SUCCESSFUL).set(1.0);
        let loaded_at = snapshot
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge!(LAST_RELOAD_SUCCESS_TIMESTAMP).set(loaded_at.as_secs_f64());
    }
}

/// Per-set prefix counts for the reload log line, such as
/// `lan: 2 IPv4, 1 IPv6; vpn: 1 IPv4, 0 IPv6`.
fn describe_sets(snapshot: &Snapshot) -> String {
    let table = &snapshot.table;
    let mut text = String::new();
    for (set, (ipv4, ipv6)) in table.sets().iter().zip(table.prefix_counts()) {
        if !text.is_empty() {
            text.push_str("; ");
        }
        let _ = write!(text, "{}: {ipv4} IPv4, {ipv6} IPv6", set.name);
    }
    text
}

/// Reads the config and builds generation `generation` from it, then keeps
/// the result once its files still hash alike `settle` after the last file
/// was read, so a file caught mid-write is read again. Every read starts
/// once no file event has arrived for `settle`, so a state that file events
/// report and that lasts less than twice that is never kept. Skips the build when the content hash
/// equals `current_hash`. Blocks, so it runs on a blocking thread.
fn build(
    path: &Path,
    settle: Duration,
    generation: u64,
    current_hash: Option<&str>,
    writes: &OpenWrites,
) -> Result<Outcome, ConfigErrors> {
    // A poll or a SIGHUP may come right after a file event.
    writes.wait_quiet(settle, MAX_QUIET_WAIT);
    let mut started = Instant::now();
    let (mut result, mut read_end) = config::load_timing_reads(path);
    for _ in 0..MAX_SETTLE_READS {
        let outcome = match result {
            // The table is built during the settle wait, so that wait adds to
            // the reload only where it outlasts the parse and the build.
            Ok(loaded) => outcome_of(loaded, generation, started, current_hash),
            Err(errors) => {
                std::thread::sleep(settle);
                writes.wait_quiet(settle, MAX_QUIET_WAIT);
                started = Instant::now();
                let (next, next_read_end) = config::load_timing_reads(path);
                if matches!(&next, Err(again) if again.to_string() == errors.to_string()) {
                    return Err(errors);
                }
                (result, read_end) = (next, next_read_end);
                continue;
            }
        };
        std::thread::sleep(settle.saturating_sub(read_end.elapsed()));
        // A valid config is stable when its files still hash alike, which
        // costs a read and a hash instead of a second parse.
        let hash = config::hash_sources(outcome.sources());
        if hash.ok().as_deref() == Some(outcome.content_hash()) {
            return Ok(outcome);
        }
        // The files changed during the wait, so more changes may follow,
        // as when an update renames several files one after another.
        std::thread::sleep(settle);
        writes.wait_quiet(settle, MAX_QUIET_WAIT);
        started = Instant::now();
        (result, read_end) = config::load_timing_reads(path);
    }
    // The files kept changing, so the last read is used.
    result.map(|loaded| outcome_of(loaded, generation, started, current_hash))
}

/// Builds the table of `loaded`, unless its content matches `current_hash`.
/// `started` is when the read of `loaded` began.
fn outcome_of(
    loaded: Loaded,
    generation: u64,
    started: Instant,
    current_hash: Option<&str>,
) -> Outcome {
    let sources = loaded.sources.clone();
    if current_hash == Some(loaded.content_hash.as_str()) {
        return Outcome::Unchanged {
            sources,
            content_hash: loaded.content_hash,
        };
    }
    let mut loaded_warnings: Vec<String> =
        loaded.warnings.iter().map(ToString::to_string).collect();
    loaded_warnings.extend(config::more_warnings(loaded.omitted_warnings));
    Outcome::Built {
        snapshot: Box::new(Snapshot::build(loaded, generation, started)),
        loaded_warnings,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString,
    };

    use super::*;
    use crate::config::parse;

    /// A recorder that keeps the last value of each series, keyed as
    /// `name{label=value,...}`.
    #[derive(Default)]
    struct TestRecorder {
        values: Arc<Mutex<HashMap<String, f64>>>,
    }

    struct Series {
        key: String,
        values: Arc<Mutex<HashMap<String, f64>>>,
    }

    impl Series {
        fn update(&self, change: impl FnOnce(&mut f64)) {
            let mut values = self.values.lock().unwrap();
            change(values.entry(self.key.clone()).or_insert(0.0));
        }
    }

    impl CounterFn for Series {
        fn increment(&self, value: u64) {
            self.update(|total| *total += value as f64);
        }

        fn absolute(&self, value: u64) {
            self.update(|total| *total = value as f64);
        }
    }

    impl GaugeFn for Series {
        fn increment(&self, value: f64) {
            self.update(|gauge| *gauge += value);
        }

        fn decrement(&self, value: f64) {
            self.update(|gauge| *gauge -= value);
        }

        fn set(&self, value: f64) {
            self.update(|gauge| *gauge = value);
        }
    }

    impl TestRecorder {
        fn series(&self, key: &Key) -> Arc<Series> {
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let key = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::new(Series {
                key,
                values: self.values.clone(),
            })
        }

        fn value(&self, key: &str) -> Option<f64> {
            self.values.lock().unwrap().get(key).copied()
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.series(key))
        }

        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.series(key))
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn snapshot(text: &str, generation: u64) -> Snapshot {
        let loaded = parse(text, Path::new("c.toml"), &mut |_| {
            Err(std::io::Error::other("no list files in this test"))
        })
        .expect("test config is valid");
        Snapshot::build(loaded, generation, Instant::now())
    }

    const TWO_SETS: &str =
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"fd00::/8\"]\n\
                            [sets.vpn]\ninternal = true\nnetworks = [\"100.64.0.0/10\"]\n";
    const ONE_SET: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

    fn reloader() -> Reloader {
        let state = AppState::new(snapshot(TWO_SETS, 1), "c.toml".into(), 16);
        Reloader::new(Arc::new(state), Duration::ZERO)
    }

    #[test]
    fn reload_metrics_follow_the_table() {
        let recorder = TestRecorder::default();
        let mut reloader = reloader();
        metrics::with_local_recorder(&recorder, || {
            reloader.record_success(&reloader.state.snapshot());
            reloader.install(snapshot(ONE_SET, 2), 1, Trigger::Signal);
        });

        assert_eq!(recorder.value("ipclass_table_generation{}"), Some(2.0));
        assert_eq!(
            recorder.value("ipclass_config_reloads_total{result=success}"),
            Some(1.0)
        );
        assert_eq!(
            recorder.value("ipclass_config_last_reload_successful{}"),
            Some(1.0)
        );
        let timestamp = recorder.value("ipclass_config_last_reload_success_timestamp_seconds{}");
        assert!(timestamp.is_some_and(|seconds| seconds > 1e9));
        assert_eq!(reloader.state.snapshot().table.generation(), 2);
    }

    #[test]
    fn repeated_failure_counts_once() {
        let recorder = TestRecorder::default();
        let mut reloader = reloader();
        let errors = config::load(Path::new("/nonexistent/ipclass.toml")).unwrap_err();
        metrics::with_local_recorder(&recorder, || {
            reloader.fail(Trigger::FileEvent, &errors);
            reloader.fail(Trigger::Poll, &errors);
            reloader.fail(Trigger::FileEvent, &errors);
        });
        let failures = "ipclass_config_reloads_total{result=failure}";
        assert_eq!(recorder.value(failures), Some(1.0));
        assert_eq!(
            recorder.value("ipclass_config_last_reload_successful{}"),
            Some(0.0)
        );
        let last_error = reloader.state.reload_status().last_error.unwrap();
        assert!(
            last_error.contains("/nonexistent/ipclass.toml"),
            "{last_error}"
        );

        metrics::with_local_recorder(&recorder, || reloader.fail(Trigger::Signal, &errors));
        assert_eq!(recorder.value(failures), Some(2.0), "SIGHUP reports again");
    }

    #[test]
    fn watcher_failure_counts_once() {
        let recorder = TestRecorder::default();
        let reloader = reloader();
        metrics::with_local_recorder(&recorder, || {
            reloader.watcher_failed("failed to watch folder /gone".into());
            reloader.watcher_failed("failed to watch folder /gone".into());
        });
        let failures = "ipclass_config_watcher_failures_total{}";
        assert_eq!(recorder.value(failures), Some(1.0));
        assert_eq!(recorder.value("ipclass_config_watcher_up{}"), Some(0.0));
        let status = reloader.state.reload_status();
        assert_eq!(
            status.watcher_error.as_deref(),
            Some("failed to watch folder /gone")
        );
    }

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn quiet_wait_ends_after_its_bound() {
        let writes = OpenWrites::default();
        let quiet = Duration::from_millis(100);
        let started = Instant::now();
        writes.wait_quiet(quiet, Duration::from_secs(5));
        assert!(started.elapsed() < quiet, "no event, so no wait");

        // Events every 20 ms never leave the files quiet for 100 ms.
        let change = || {
            let kind = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
            event(kind, "/c/list.txt")
        };
        writes.note(&change());
        let noisy = writes.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let noise = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                noisy.note(&change());
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        writes.wait_quiet(quiet, Duration::from_millis(300));
        let waited = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        noise.join().unwrap();
        assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    }

    #[test]
    fn open_write_waits_past_limit_until_closed() {
        let writes = OpenWrites::default();
        let list = "/etc/ipclass/lists/guests.txt";
        let modified = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        writes.note(&event(modified, list));
        let (file, idle) = writes.pending().expect("a modified file is pending");
        assert_eq!(file, Path::new(list));
        assert!(idle < OPEN_WRITE_LIMIT);

        // A writer that leaves the file open past the limit keeps it pending.
        let long_ago = Instant::now() - OPEN_WRITE_LIMIT - Duration::from_secs(1);
        writes
            .0
            .lock()
            .unwrap()
            .files
            .insert(PathBuf::from(list), long_ago);
        let (file, idle) = writes
            .pending()
            .expect("a file open past the limit is pending");
        assert_eq!(file, Path::new(list));
        assert!(idle > OPEN_WRITE_LIMIT);

        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        writes.note(&event(closed, list));
        assert_eq!(writes.pending(), None);
    }

    #[test]
    fn forgotten_open_write_is_not_pending() {
        let writes = OpenWrites::default();
        let modified = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        writes.note(&event(modified, "/etc/ipclass/a.txt"));
        writes.note(&event(modified, "/etc/ipclass/b.txt"));
        writes.forget(Path::new("/etc/ipclass/b.txt"));
        let (file, _) = writes.pending().expect("a.txt is still pending");
        assert_eq!(file, Path::new("/etc/ipclass/a.txt"));
        writes.forget(Path::new("/etc/ipclass/a.txt"));
        assert_eq!(writes.pending(), None);
    }

    #[test]
    fn watch_set_covers_config_lists_and_folders() {
        let sources = [
            PathBuf::from("/etc/ipclass/ipclass.toml"),
            PathBuf::from("/srv/lists/vpn.txt"),
        ];
        let watch = WatchSet::new(Path::new("/etc/ipclass/ipclass.toml"), &sources);
        assert_eq!(watch.files.len(), 2);
        assert!(watch.folders.contains(Path::new("/etc/ipclass")));
        assert!(watch.folders.contains(Path::new("/srv/lists")));
    }

    #[test]
    fn relative_config_watches_current_folder() {
        let watch = WatchSet::new(Path::new("ipclass.toml"), &[]);
        let current = std::env::current_dir().unwrap();
        assert!(watch.folders.contains(&current), "{:?}", watch.folders);
        assert!(watch.files.contains(&current.join("ipclass.toml")));
    }

    #[tokio::test(start_paused = true)]
    async fn endless_changes_end_the_wait() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let writes = OpenWrites::default();

        // A writer that writes and closes the file every 100 ms, so the
        // file is open for writing at every other event.
        let feeder_writes = writes.clone();
        let feeder = tokio::spawn(async move {
            let path = "/nonexistent/ipclass/list.txt";
            let written = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
            let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
            for kind in [written, closed].into_iter().cycle() {
                feeder_writes.note(&event(kind, path));
                if sender.send(WatchMessage::Changed).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });

        let started = tokio::time::Instant::now();
        let quiet = Duration::from_millis(250);
        let mut hangup = None;
        let wait = debounce(&mut receiver, &mut hangup, quiet, &writes);
        let hangup_seen = tokio::time::timeout(4 * MAX_QUIET_WAIT, wait)
            .await
            .expect("the wait ends while changes go on");
        let waited = started.elapsed();
        feeder.abort();

        assert!(!hangup_seen);
        assert!(writes.pending().is_none(), "a writer had the file open");
        assert!(waited >= MAX_QUIET_WAIT, "{waited:?}");
        assert!(
            waited < MAX_QUIET_WAIT + Duration::from_secs(1),
            "{waited:?}"
        );
    }

    #[test]
    fn relevant_events_pass_the_filter() {
        let watch = WatchSet::new(Path::new("/cfg/ipclass.toml"), &[]);
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        let create = EventKind::Create(notify::event::CreateKind::File);
        assert!(watch.is_relevant(&event(modify, "/cfg/ipclass.toml")));
        assert!(watch.is_relevant(&event(create, "/cfg/..data")));
        assert!(watch.is_relevant(&event(create, "/elsewhere/ipclass.toml")));
    }

    #[test]
    fn unrelated_events_are_filtered() {
        let watch = WatchSet::new(Path::new("/cfg/ipclass.toml"), &[]);
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let create = EventKind::Create(notify::event::CreateKind::File);
        assert!(!watch.is_relevant(&event(open, "/cfg/ipclass.toml")));
        assert!(!watch.is_relevant(&event(create, "/cfg/.ipclass.toml.swp")));
    }
}
