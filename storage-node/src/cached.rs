//! Small reads served in place. A small GET's largest cost left was handing its read to the
//! blocking pool and back (waking a thread, two context switches, futexes: ~15% of a 4 KiB
//! GET's server CPU), so a small copy wholly in the kernel's caches is read and verified on
//! the calling thread instead. Nothing here waits for the disk where the kernel can refuse to:
//! the path resolves from the dentry cache alone (`openat2` with `RESOLVE_CACHED`, else
//! `EAGAIN`) and the bytes come from the page cache alone (`preadv2` with `RWF_NOWAIT`, else
//! `EAGAIN` or a short read). The block list is the inode's attribute, which the kernel reads
//! with no such flag; a cached open has the inode in memory, and its attribute is in the
//! inode (ext4) or beside it in the tree (btrfs) — rarely, that can still cost one disk read.
//!
//! Invariant: this path answers only successes. A copy it cannot read whole from the caches,
//! one larger than [`AT_ONCE`], one without its list in the attribute, one whose list
//! disagrees with the file or whose block fails its hash gives `None`, and the caller's
//! ordinary blocking read answers — with the same bytes, or with the error and the bad-copy
//! report it always gave.

use std::fs::File;
use std::io::IoSliceMut;
use std::path::Path;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::ReadWriteFlags;

use crate::blocks::BlockHashes;

/// The most bytes read in place: the blocks a range touches, verified whole, must fit.
pub const AT_ONCE: u64 = 64 << 10;

/// The data file at `data`: its size and the bytes of `range` (inclusive; all when `None`),
/// verified, when every piece was in the kernel's caches; `None` to read it the ordinary way.
/// Five system calls: open, `statx` (so that a whole large copy's list — in a block of its own
/// on ext4 — is never read here), the attribute in one `fgetxattr`, `preadv2`, close.
pub fn read(data: &Path, range: Option<(u64, u64)>) -> Option<(u64, Bytes)> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(CWD, data, flags, Mode::empty(), ResolveFlags::CACHED).ok()?;
    let file = File::from(fd);
    let size = file.metadata().ok()?.len();
    // A whole large copy is never read here: known before its list is read.
    if range.is_none() && size > AT_ONCE {
        return None;
    }
    let hashes = BlockHashes::in_attribute(&file)?;
    if size != hashes.size {
        return None;
    }
    let (start, end) = span(range, size)?;
    // Whole blocks, from the first the range touches to the end of the last.
    let first = start / hashes.block;
    let from = first * hashes.block;
    let to = end
        .div_ceil(hashes.block)
        .saturating_mul(hashes.block)
        .min(size);
    if to - from > AT_ONCE {
        return None;
    }
    let mut buf = vec![0u8; (to - from) as usize];
    if !buf.is_empty() {
        let mut slices = [IoSliceMut::new(&mut buf)];
        let n = rustix::io::preadv2(&file, &mut slices, from, ReadWriteFlags::NOWAIT).ok()?;
        if n != buf.len() {
            return None;
        }
    }
    let mut blocks = buf.chunks(hashes.block as usize).enumerate();
    if !blocks.all(|(i, b)| hashes.verifies(first + i as u64, b)) {
        return None;
    }
    let slice = (start - from) as usize..(end - from) as usize;
    Some((size, Bytes::from(buf).slice(slice)))
}

/// The bytes `start..end` of a copy of `size` that the inclusive `range` asks for (all when
/// `None`); `None` when the range does not fit the copy.
pub(crate) fn span(range: Option<(u64, u64)>, size: u64) -> Option<(u64, u64)> {
    match range {
        None => Some((0, size)),
        Some((a, b)) if a <= b && b < size => Some((a, b + 1)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::BlockHasher;

    /// A data file with its list in the attribute (as nodes write small copies), or `None`
    /// where the filesystem takes no user attributes.
    fn stored(dir: &Path, name: &str, data: &[u8]) -> Option<std::path::PathBuf> {
        let mut h = BlockHasher::new();
        h.update(data);
        let (list, _) = h.finish();
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        list.attach(&File::open(&p).unwrap()).then_some(p)
    }

    #[test]
    fn cached_small_copies_read_whole_and_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let Some(p) = stored(dir.path(), "d", &data) else {
            eprintln!("skipped: the temp dir's filesystem takes no user attributes");
            return;
        };
        // Just written: in the page cache.
        assert_eq!(read(&p, None), Some((4096, Bytes::from(data.clone()))));
        assert_eq!(read(&p, Some((1, 3))).unwrap().1, &data[1..4]);
        assert_eq!(read(&p, Some((4095, 4095))).unwrap().1, &data[4095..]);
        // Past the end: left to the ordinary read, which answers 416.
        assert_eq!(read(&p, Some((10, 4096))), None);
        let empty = stored(dir.path(), "e", b"").unwrap();
        assert_eq!(read(&empty, None), Some((0, Bytes::new())));
    }

    #[test]
    fn anything_but_a_clean_small_cached_copy_is_left_to_the_ordinary_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 4096];
        let Some(p) = stored(dir.path(), "d", &data) else {
            eprintln!("skipped: the temp dir's filesystem takes no user attributes");
            return;
        };
        // A flipped byte fails its block's hash: no answer here (the blocking read reports it).
        let mut bad = data.clone();
        bad[100] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert_eq!(read(&p, None), None);
        // A list that disagrees with the file's size.
        std::fs::write(&p, &data[..100]).unwrap();
        assert_eq!(read(&p, None), None);
        // Longer than its list, too.
        let mut longer = data.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert_eq!(read(&p, None), None);
        assert_eq!(read(&p, Some((0, 9))), None);
        // No list in the attribute (a sidecar's file), and no file at all.
        std::fs::write(dir.path().join("plain"), &data).unwrap();
        assert_eq!(read(&dir.path().join("plain"), None), None);
        assert_eq!(read(&dir.path().join("missing"), None), None);
        // More than AT_ONCE: a small range of a large copy still needs its whole 1 MiB block.
        let big = vec![1u8; (AT_ONCE + 1) as usize];
        let p = stored(dir.path(), "big", &big).unwrap();
        assert_eq!(read(&p, Some((0, 9))), None);
    }

    #[test]
    fn a_copy_not_in_the_page_cache_is_left_to_the_blocking_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![3u8; 4096];
        let Some(p) = stored(dir.path(), "d", &data) else {
            eprintln!("skipped: the temp dir's filesystem takes no user attributes");
            return;
        };
        let f = File::open(&p).unwrap();
        f.sync_all().unwrap();
        // Clean pages of a file on a disk-backed filesystem can be dropped from the cache.
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        use std::os::fd::AsRawFd;
        posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        let fs = nix::sys::statfs::statfs(dir.path()).unwrap();
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("skipped: tmpfs keeps its pages (they are its storage)");
            return;
        }
        assert_eq!(read(&p, None), None, "the bytes had to come from the disk");
        // The ordinary read brings them back; then the cached read answers again.
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(read(&p, None).unwrap().1, data);
    }
}
