//! Copies of large lookup arrays into memory that the kernel may back with
//! 2 MiB transparent huge pages.
//!
//! Random lookups in a table of tens of megabytes miss the TLB on most
//! accesses with 4 KiB pages, while 2 MiB pages cover such a table with a few
//! dozen TLB entries. Where transparent huge pages are in `madvise` mode, the
//! Linux default on many distributions, only memory advised with
//! `MADV_HUGEPAGE` gets them.
//!
//! NOTE: the advice takes effect on pages that are not yet backed. A copy
//! that glibc places in freed heap memory, which can happen once a reload
//! has freed an earlier table, keeps 4 KiB pages until khugepaged merges
//! them.

/// Size of a transparent huge page on x86_64 and on aarch64 with 4 KiB base
/// pages.
const HUGE_PAGE: usize = 2 << 20;

/// Smallest array worth copying: rounding inward to whole huge pages leaves
/// at least one of them only from twice the huge page size up.
const MIN_BYTES: usize = 2 * HUGE_PAGE;

/// Returns `items` in a fresh allocation advised for huge pages before its
/// first write, or `items` itself when it is small or the platform has no
/// such advice. The copy costs one pass over the array.
pub(super) fn into_huge_pages<T: Copy>(items: Vec<T>) -> Vec<T> {
    let bytes = size_of_val(items.as_slice());
    if bytes < MIN_BYTES || !cfg!(target_os = "linux") {
        return items;
    }
    let mut copy: Vec<T> = Vec::with_capacity(items.len());
    advise_huge_pages(copy.as_mut_ptr().cast::<u8>(), bytes);
    copy.extend_from_slice(&items);
    copy
}

/// Advises the whole huge pages inside `bytes` bytes from `start`.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: *mut u8, bytes: usize) {
    let begin = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= begin {
        return;
    }
    // SAFETY: `begin..end` lies inside an allocation that the caller owns and
    // has not yet written. MADV_HUGEPAGE changes only how the kernel backs
    // those pages, never their contents, and a failure leaves them as they
    // were, so the result can be ignored.
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: *mut u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_every_item() {
        let items: Vec<u32> = (0..3_000_000).collect();
        let copy = into_huge_pages(items.clone());
        assert_eq!(copy, items);
    }

    #[test]
    fn small_array_is_returned_as_is() {
        let items: Vec<u32> = (0..1000).collect();
        let pointer = items.as_ptr();
        let copy = into_huge_pages(items);
        assert_eq!(copy.as_ptr(), pointer);
    }
}
