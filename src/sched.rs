//! The Linux scheduler time slice of the server's threads.
//!
//! Runtime threads get a short EEVDF slice (Linux 6.12 and later), so a
//! thread woken by a request preempts its callers sooner when they share the
//! cores. A reload sets its own thread back to the kernel's default slice
//! before it parses and builds, because reloads under load took longer with
//! the short one (`docs/benchmark-history.md`). Threads inherit the slice of the thread
//! that starts them.

use std::io;
use std::time::Duration;

/// Attributes of `sched_setattr(2)`, as in `linux/sched/types.h`, without the
/// utilization clamps of later versions.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Sets the time slice of the calling thread to `slice`, or back to the
/// kernel's default with `None`. The thread keeps its policy, nice value and
/// flags. A thread under a real-time or deadline policy is left as it is,
/// because real-time threads have no slice and the same field is a deadline
/// thread's runtime budget.
/// NOTE: kernels before 6.12 are expected to ignore the field for normal
/// threads; no test ran there.
#[cfg(target_os = "linux")]
pub fn set_thread_slice(slice: Option<Duration>) -> io::Result<()> {
    let mut attr = SchedAttr::default();
    let size = size_of::<SchedAttr>() as u32;
    // SAFETY: `attr` is writable for the `size` bytes passed, and thread id
    // 0 names the calling thread.
    let fetched = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if fetched != 0 {
        return Err(io::Error::last_os_error());
    }
    let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    if !fair.iter().any(|&policy| attr.policy == policy as u32) {
        return Ok(());
    }
    attr.size = size;
    attr.runtime = slice.map_or(0, |slice| {
        u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX)
    });
    // SAFETY: `attr` is a valid `sched_attr` of the size it declares, and it
    // outlives the call. Thread id 0 names the calling thread.
    let applied = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if applied != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Other systems keep their scheduler's default.
#[cfg(not(target_os = "linux"))]
pub fn set_thread_slice(_slice: Option<Duration>) -> io::Result<()> {
    Ok(())
}
