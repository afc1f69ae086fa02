//! The binary's allocator: mimalloc for every role but the task sandbox's zygote (and the
//! helpers it forks), which keep glibc's malloc.
//!
//! mimalloc saves ~10% of a small request's CPU in the servers (glibc's malloc and free were
//! ~9% of a 4 KiB GET), but in the zygote — forked once per task, its children run a few
//! allocations and exec or exit — it doubled a short job's latency (no-op job p50 ~15 → ~31 ms
//! over HTTP). Invariant: the choice is made once, at the process's first allocation (before
//! any thread exists), from `/proc/self/cmdline` read without allocating, and never changes —
//! so every block is freed by the allocator that gave it.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// The allocator of this process (see the module doc).
pub struct Alloc;

const UNKNOWN: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNKNOWN => {
            let c = if zygote() { SYSTEM } else { MIMALLOC };
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// Whether this process is the sandbox's zygote: its first argument is the zygote's.
fn zygote() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: plain system calls on a stack buffer of the length passed; no allocation.
    let n = unsafe {
        let fd = nix::libc::open(
            c"/proc/self/cmdline".as_ptr(),
            nix::libc::O_RDONLY | nix::libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let n = nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        nix::libc::close(fd);
        n
    };
    usize::try_from(n).is_ok_and(|n| zygote_cmdline(&buf[..n]))
}

/// Whether a `/proc/<pid>/cmdline` (arguments, each ended by a NUL) is the zygote's.
fn zygote_cmdline(cmdline: &[u8]) -> bool {
    cmdline.split(|&b| b == 0).nth(1) == Some(mobula_sandbox::ZYGOTE_ARG.as_bytes())
}

// SAFETY: each call goes to one allocator, the same for the whole life of the process
// (`choice` is fixed at the first call), so every block is freed and resized by the
// allocator that gave it; both allocators uphold `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for Alloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match choice() {
            SYSTEM => System.alloc(layout),
            _ => MiMalloc.alloc(layout),
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match choice() {
            SYSTEM => System.alloc_zeroed(layout),
            _ => MiMalloc.alloc_zeroed(layout),
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match choice() {
            SYSTEM => System.dealloc(ptr, layout),
            _ => MiMalloc.dealloc(ptr, layout),
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match choice() {
            SYSTEM => System.realloc(ptr, layout, new_size),
            _ => MiMalloc.realloc(ptr, layout, new_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::zygote_cmdline;

    #[test]
    fn only_the_zygote_is_the_zygote() {
        assert!(zygote_cmdline(b"/usr/bin/mobula\0__sandbox-zygote\0"));
        assert!(!zygote_cmdline(b"/usr/bin/mobula\0up\0"));
        assert!(!zygote_cmdline(b"/usr/bin/mobula\0"));
        assert!(!zygote_cmdline(b"__sandbox-zygote\0"));
        assert!(!zygote_cmdline(b""));
    }

    /// This process (the test binary) allocates with mimalloc, and its choice is fixed.
    #[test]
    fn a_server_process_keeps_mimalloc() {
        let v: Vec<u8> = std::iter::repeat_n(1, 100).collect();
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 100);
        assert_eq!(super::choice(), super::MIMALLOC);
    }
}
