//! Start-up code and data out of RSS once sidegate is ready.
//!
//! Config parsing, key loading, IdP discovery, TLS set-up and the SAML libraries'
//! initialisers run once, but their code pages stay mapped and count in the process's RSS
//! (and in a container's working set) for as long as it lives. So do the read-only data the
//! dynamic linker went through once (symbol and relocation tables of every library) and
//! unwind tables only a panic reads. Once ready, sidegate asks the kernel to page out its
//! read-only file mappings, code and data: the pages the request path uses come back on
//! their first use, the others stay out.
//!
//! `MADV_PAGEOUT` (Linux 5.4+) is reclaim, not discard: contents are preserved on any
//! mapping, and the kernel skips pages other processes map too (the shared libc). On
//! another OS, or an older kernel, this does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the binary: a test process running many sidegates in one binary keeps its code.
static WHEN_READY: AtomicBool = AtomicBool::new(false);

/// Lets `run` page out the start-up code once ready (the binary's `run` and `dev` call it).
pub fn page_out_when_ready() {
    WHEN_READY.store(true, Ordering::Relaxed);
}

/// Whether `page_out_when_ready` was called in this process.
pub fn pages_out_when_ready() -> bool {
    WHEN_READY.load(Ordering::Relaxed)
}

/// What `page_out_read_only` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PagedOut {
    /// Read-only file mappings advised.
    pub mappings: usize,
    /// Their total size in bytes (mapped, not necessarily resident before).
    pub bytes: usize,
}

/// Advises the kernel to page out every read-only file mapping (code and data) of this
/// process. Idempotent and harmless: a page in use faults back in.
#[cfg(target_os = "linux")]
pub fn page_out_read_only() -> PagedOut {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return PagedOut::default();
    };
    let mut done = PagedOut::default();
    for (start, end) in maps.lines().filter_map(read_only_file_mapping) {
        let len = end - start;
        // SAFETY: the range is a whole mapping of this process as /proc/self/maps lists it,
        // and MADV_PAGEOUT only reclaims: no page's contents change, so no reference into
        // the range (this function's own code included) is invalidated.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if rc == 0 {
            done.mappings += 1;
            done.bytes += len;
        }
    }
    done
}

/// Does nothing outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn page_out_read_only() -> PagedOut {
    PagedOut::default()
}

/// The address range of a `/proc/self/maps` line if it maps a file read-only (`r--` data or
/// `r-x` code). Writable mappings are left alone: their pages are the process's own.
fn read_only_file_mapping(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    if !(perms.starts_with("r--") || perms.starts_with("r-x")) || !path.starts_with('/') {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    let start = usize::from_str_radix(a, 16).ok()?;
    let end = usize::from_str_radix(b, 16).ok()?;
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::read_only_file_mapping;

    #[test]
    fn only_read_only_file_mappings_are_chosen() {
        for (line, range) in [
            (
                "7f0000000000-7f0000021000 r-xp 00001000 08:01 123 /usr/lib/libc.so.6",
                (0x7f00_0000_0000, 0x7f00_0002_1000),
            ),
            (
                "7f0000021000-7f0000030000 r--p 00021000 08:01 123 /usr/lib/libc.so.6",
                (0x7f00_0002_1000, 0x7f00_0003_0000),
            ),
        ] {
            assert_eq!(read_only_file_mapping(line), Some(range), "{line}");
        }
        for other in [
            "7f0000000000-7f0000021000 rw-p 00000000 08:01 123 /usr/lib/libc.so.6",
            "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ",
            "7f0000000000-7f0000021000 r--p 00000000 00:00 0 [vvar]",
            "7f0000000000-7f0000021000 r-xp 00000000 00:00 0 ",
            "7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]",
            "garbage",
        ] {
            assert_eq!(read_only_file_mapping(other), None, "{other}");
        }
    }
}
