//! The data store of one storage node, on its [`Volume`].
//!
//! Layout under the node's directory:
//! - `node-id`: this node's identity, created on first start;
//! - `volume/` (btrfs subvolume or plain directory): `data/<xx>/<id>` one immutable file per data
//!   id (`xx` = its first two hex digits) with its block hashes ([`crate::blocks`]) in an
//!   extended attribute, or for a file over 64 MiB in `data/<xx>/<id>.blk`; `quarantine/`
//!   copies that failed verification;
//! - `snapshots/<name>/`: snapshots of `volume/`.
//!
//! Writes go to an unnamed `O_TMPFILE` inode in the target directory, get their hash list
//! attached, are fsynced, and are then linked into place (a sidecar hash file first, when one
//! is needed; data last) and the directory fsynced — all before the write is acknowledged. A
//! crash at any point leaves no partial file visible and no temp file behind (an unlinked inode
//! vanishes with the process); a `.blk` whose data never got linked is removed by the orphan
//! sweep. On a volume whose file fsync also makes the file's new name durable (btrfs, journaled
//! ext4: [`Volume::file_fsync_keeps_its_name`]) a file without a sidecar is linked first and fsynced
//! once ([`Writer::link`], then [`Pending::sync`]; several copies may be linked before any is
//! fsynced) — one log sync instead of two; it is whole when linked, nothing refers to it before the
//! ack, and a power cut before its fsync leaves at worst an unacknowledged short copy that
//! verification refuses and the orphan sweep removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use md5::Digest;

use crate::api::{new_id, valid_id};
use crate::blocks::{BlockHasher, VerifiedReader};
use crate::volume::{self, fsync_dir, Volume};

/// A node's data store.
#[derive(Debug, Clone)]
pub struct Store {
    node_dir: PathBuf,
    volume: Arc<dyn Volume>,
    verify_reads: bool,
    /// `mobula_copies_written_total{node}` and `mobula_node_copies{node}` once
    /// [`Store::counted_as`] names the node.
    written: metrics::Counter,
    copies: metrics::Gauge,
}

/// What a committed write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub size: u64,
    /// Hex blake3 of the whole file.
    pub blake3: String,
    /// Base64 MD5, when asked for.
    pub md5: Option<String>,
}

/// The most a [`Writer`] gathers before writing to its file.
const WRITE_BUFFER: usize = 1 << 20;

/// A file being written: an unnamed inode until [`Writer::commit`].
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    file: io::BufWriter<File>,
    hasher: BlockHasher,
    md5: Option<md5::Md5>,
    /// The volume's [`Volume::file_fsync_keeps_its_name`].
    fsync_keeps_name: bool,
    written: metrics::Counter,
    copies: metrics::Gauge,
}

/// A copy between [`Writer::link`] and [`Pending::sync`]: linked into place and awaiting its
/// one fsync, or already durable (the portable commit). Dropped unsynced, a linked copy stays
/// as an unacknowledged file for the orphan sweep.
#[derive(Debug)]
pub struct Pending {
    linked: Option<(File, PathBuf)>,
    committed: Committed,
    written: metrics::Counter,
    copies: metrics::Gauge,
}

impl Pending {
    /// Start writing the copy's bytes back without waiting, so that the fsyncs of copies
    /// linked together find their data on its way and their names in one journal commit.
    pub fn start_writeback(&self) {
        if let Some((f, _)) = &self.linked {
            start_writeback(f);
        }
    }

    /// Make the copy durable (its one fsync, when linked first); on failure its name is removed.
    pub fn sync(self) -> io::Result<Committed> {
        if let Some((file, path)) = &self.linked {
            fail::fail_point!("put-before-fsync");
            if let Err(e) = file.sync_all() {
                let _ = fs::remove_file(path);
                return Err(e);
            }
            fail::fail_point!("put-before-dir-fsync");
        }
        self.written.increment(1);
        self.copies.increment(1.0);
        Ok(self.committed)
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` of the whole file: queue its dirty pages for
/// writeback and return (a hint; durability still comes from fsync). Neither nix nor rustix
/// wraps it.
#[allow(unsafe_code)]
fn start_writeback(f: &File) {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

fn tmpfile(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
        .mode(0o644)
        .open(dir)
}

/// Give the unnamed inode `f` the name `dest`.
fn link_into_place(f: &File, dest: &Path) -> io::Result<()> {
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    nix::unistd::linkat(
        None,
        proc_path.as_path(),
        None,
        dest,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

impl Writer {
    /// Append bytes.
    pub fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        if let Some(m) = self.md5.as_mut() {
            m.update(b);
        }
        self.file.write_all(b)
    }

    /// Base64 MD5 of the bytes so far (when asked for at creation).
    pub fn md5(&self) -> Option<String> {
        self.md5
            .as_ref()
            .map(|m| base64::engine::general_purpose::STANDARD.encode(m.clone().finalize()))
    }

    /// Hex blake3 of the bytes so far.
    pub fn blake3(&self) -> String {
        self.hasher.whole_hex()
    }

    /// Make the bytes durable and visible as `id`.
    pub fn commit(self, id: &str) -> io::Result<Committed> {
        self.link(id)?.sync()
    }

    /// The first half of [`Writer::commit`]: where the volume's file fsync keeps the file's
    /// name ([`Volume::file_fsync_keeps_its_name`]) and no sidecar is needed, link the file into
    /// place and leave its one fsync to [`Pending::sync`] — so that several copies can be linked
    /// first and their fsyncs share one journal commit; elsewhere the whole portable commit.
    pub fn link(self, id: &str) -> io::Result<Pending> {
        let Writer {
            dir,
            file,
            hasher,
            md5,
            fsync_keeps_name,
            written,
            copies,
        } = self;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        let (hashes, blake3) = hasher.finish();
        let committed = Committed {
            size: hashes.size,
            blake3,
            md5: md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m.finalize())),
        };
        // Small lists go in the file's own attribute: durable with its bytes, one fsync.
        let sidecar = !hashes.attach(&file);
        let linked = if fsync_keeps_name && !sidecar {
            // One fsync makes bytes, hashes and name durable together. Until it returns the
            // file may be visible but not yet durable: nothing refers to it before the ack,
            // and a power cut in between leaves at worst a short copy that verified reads
            // refuse and the orphan sweep removes.
            let path = dir.join(id);
            link_into_place(&file, &path)?;
            Some((file, path))
        } else {
            Self::fsync_then_link(&file, &dir, id, sidecar, &hashes)?;
            None
        };
        Ok(Pending {
            linked,
            committed,
            written,
            copies,
        })
    }

    /// The portable commit: fsync the unnamed file (and its sidecar), link them into place,
    /// fsync the directory.
    fn fsync_then_link(
        file: &File,
        dir: &Path,
        id: &str,
        sidecar: bool,
        hashes: &crate::blocks::BlockHashes,
    ) -> io::Result<()> {
        fail::fail_point!("put-before-fsync");
        file.sync_all()?;
        let blk_path = dir.join(format!("{id}.blk"));
        if sidecar {
            let mut blk = tmpfile(dir)?;
            blk.write_all(&hashes.encode())?;
            blk.sync_all()?;
            link_into_place(&blk, &blk_path)?;
        }
        fail::fail_point!("put-between-links");
        if let Err(e) = link_into_place(file, &dir.join(id)) {
            if sidecar {
                let _ = fs::remove_file(&blk_path);
            }
            return Err(e);
        }
        fail::fail_point!("put-before-dir-fsync");
        fsync_dir(dir)
    }
}

impl Store {
    /// Open the store in `node_dir` (detecting its volume backend), creating its layout.
    pub fn open(node_dir: &Path) -> io::Result<Store> {
        let volume: Arc<dyn Volume> = Arc::from(volume::open(node_dir)?);
        let data = volume.root().join("data");
        for i in 0..=255u8 {
            fs::create_dir_all(data.join(format!("{i:02x}")))?;
        }
        fs::create_dir_all(volume.root().join("quarantine"))?;
        fsync_dir(&data)?;
        fsync_dir(volume.root())?;
        Ok(Store {
            node_dir: node_dir.to_path_buf(),
            volume,
            verify_reads: true,
            written: metrics::Counter::noop(),
            copies: metrics::Gauge::noop(),
        })
    }

    /// This store, counting the copies it commits and holds as node `id`'s in the metrics (the
    /// copies held are counted now, by a walk of the data directory, then kept up to date).
    pub fn counted_as(mut self, id: &str) -> Store {
        self.written = metrics::counter!("mobula_copies_written_total", "node" => id.to_string());
        self.copies = metrics::gauge!("mobula_node_copies", "node" => id.to_string());
        if mobula_http::telemetry::enabled() {
            self.copies
                .set(self.ids().map_or(0, |ids| ids.len()) as f64);
        }
        self
    }

    /// The node's persistent identity (created on first call).
    pub fn node_id(&self) -> io::Result<String> {
        let p = self.node_dir.join("node-id");
        match fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => {
                let id = format!("node-{}", &new_id()[..12]);
                let f = tmpfile(&self.node_dir)?;
                (&f).write_all(id.as_bytes())?;
                f.sync_all()?;
                link_into_place(&f, &p)?;
                fsync_dir(&self.node_dir)?;
                Ok(id)
            }
        }
    }

    /// The volume backend.
    pub fn volume(&self) -> &dyn Volume {
        &*self.volume
    }

    /// The node's directory.
    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }

    /// Where data `id` lives (the id must be valid).
    pub fn path(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.volume.root().join("data").join(&id[..2]).join(id)
    }

    /// Where the block hashes of `id` live.
    pub fn blk_path(&self, id: &str) -> PathBuf {
        self.volume
            .root()
            .join("data")
            .join(&id[..2])
            .join(format!("{id}.blk"))
    }

    /// Start writing data `id` (also computing its MD5 when `md5`) of any length: writes
    /// reach the file 1 MiB at a time.
    pub fn writer(&self, id: &str, md5: bool) -> io::Result<Writer> {
        self.writer_sized(id, md5, WRITE_BUFFER)
    }

    /// [`Store::writer`] for about `len` bytes: its write buffer is no larger than that (at
    /// most 1 MiB). A small copy's buffer then comes from the allocator's small pages; a
    /// 1 MiB one, allocated and freed per copy, cost ~3% of a 4 KiB PUT's CPU.
    pub fn writer_sized(&self, id: &str, md5: bool, len: usize) -> io::Result<Writer> {
        let dir = self.volume.root().join("data").join(&id[..2]);
        Ok(Writer {
            file: io::BufWriter::with_capacity(len.clamp(1, WRITE_BUFFER), tmpfile(&dir)?),
            dir,
            hasher: BlockHasher::new(),
            md5: md5.then(md5::Md5::new),
            fsync_keeps_name: self.volume.file_fsync_keeps_its_name(),
            written: self.written.clone(),
            copies: self.copies.clone(),
        })
    }

    /// Read bytes `start..end` of `id`, verifying every block touched.
    pub fn reader(&self, id: &str, start: u64, end: u64) -> io::Result<VerifiedReader> {
        let r = VerifiedReader::open(&self.path(id), &self.blk_path(id), start, end)?;
        Ok(if self.verify_reads { r } else { r.unverified() })
    }

    /// `id`'s size and the verified bytes of `range` (inclusive; all when `None`), read on the
    /// calling thread because the copy is small and wholly in the kernel's caches; `None`:
    /// read it with [`Store::reader`] on a blocking thread (see `cached.rs`).
    pub fn read_cached(&self, id: &str, range: Option<(u64, u64)>) -> Option<(u64, bytes::Bytes)> {
        if !self.verify_reads {
            return None;
        }
        crate::cached::read(&self.path(id), range)
    }

    /// Turn read verification off (benchmark baseline only; never in service).
    pub fn without_read_verification(mut self) -> Self {
        self.verify_reads = false;
        self
    }

    /// Size of `id`.
    pub fn size(&self, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(id))?.len())
    }

    /// Delete `id` durably; deleting a missing id is not an error.
    pub fn delete(&self, id: &str) -> io::Result<()> {
        let mut removed = false;
        for p in [self.path(id), self.blk_path(id)] {
            if removed {
                fail::fail_point!("delete-between-unlinks");
            }
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed {
            self.copies.decrement(1.0);
            fsync_dir(
                self.path(id)
                    .parent()
                    .expect("data files live in a directory"),
            )?;
        }
        Ok(())
    }

    /// Move a bad copy of `id` out of service, into `quarantine/`.
    pub fn quarantine(&self, id: &str) -> io::Result<()> {
        let q = self.volume.root().join("quarantine");
        for (p, name) in [
            (self.path(id), id.to_string()),
            (self.blk_path(id), format!("{id}.blk")),
        ] {
            match fs::rename(&p, q.join(&name)) {
                Ok(()) if name == id => self.copies.decrement(1.0),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fsync_dir(&q)?;
        fsync_dir(
            self.path(id)
                .parent()
                .expect("data files live in a directory"),
        )
    }

    /// Ids in quarantine.
    pub fn quarantined(&self) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = fs::read_dir(self.volume.root().join("quarantine"))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| valid_id(n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every data id on this node with its modification time.
    pub fn ids(&self) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut out = Vec::new();
        for sub in fs::read_dir(self.volume.root().join("data"))? {
            for f in fs::read_dir(sub?.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                if valid_id(&name) {
                    out.push((name, f.metadata()?.modified()?));
                } else if let Some(id) = name.strip_suffix(".blk") {
                    // Hashes whose data never got linked (a crash between the two links).
                    if valid_id(id) && !f.path().with_file_name(id).exists() {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ids of data files last modified more than `age` ago.
    pub fn old_ids(&self, age: std::time::Duration) -> io::Result<Vec<String>> {
        let cutoff = std::time::SystemTime::now() - age;
        Ok(self
            .ids()?
            .into_iter()
            .filter(|(_, t)| *t < cutoff)
            .map(|(id, _)| id)
            .collect())
    }

    /// Free and total bytes of the filesystem holding the store.
    pub fn space(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(self.volume.root()) {
            Ok(s) => {
                let f = s.fragment_size();
                (s.blocks_available() * f, s.blocks() * f)
            }
            Err(_) => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        assert!(valid_id(&new_id()));
        for bad in [
            "",
            "../../etc/passwd",
            "ABCDEF0123456789abcdef0123456789",
            "0123",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn uncommitted_writes_leave_nothing_and_commits_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = new_id();
        {
            let mut w = store.writer(&id, false).unwrap();
            w.write(b"partial").unwrap();
        }
        assert!(store.ids().unwrap().is_empty());
        let mut w = store.writer(&id, true).unwrap();
        w.write(b"whole").unwrap();
        let c = w.commit(&id).unwrap();
        assert_eq!(c.size, 5);
        assert_eq!(c.blake3, blake3::hash(b"whole").to_hex().to_string());
        let mut r = store.reader(&id, 0, 5).unwrap();
        assert_eq!(r.next_chunk().unwrap().unwrap(), &b"whole"[..]);
        // The same id cannot be written twice.
        let w = store.writer(&id, false).unwrap();
        assert_eq!(
            w.commit(&id).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        store.quarantine(&id).unwrap();
        assert_eq!(store.quarantined().unwrap(), vec![id.clone()]);
        assert!(store.ids().unwrap().is_empty());
    }

    fn put(store: &Store, bytes: &[u8]) -> String {
        let id = new_id();
        let mut w = store.writer(&id, false).unwrap();
        for chunk in bytes.chunks(1 << 20) {
            w.write(chunk).unwrap();
        }
        w.commit(&id).unwrap();
        id
    }

    fn read_all(store: &Store, id: &str, size: u64) -> io::Result<Vec<u8>> {
        let mut r = store.reader(id, 0, size)?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk() {
            out.extend(c?);
        }
        Ok(out)
    }

    #[test]
    fn small_files_carry_their_hashes_and_large_ones_have_a_sidecar() {
        use crate::blocks::{BlockHashes, BLOCK, XATTR};
        use xattr::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let small: Vec<u8> = (0..3 * BLOCK + 5).map(|i| (i % 251) as u8).collect();
        let id = put(&store, &small);
        assert!(!store.blk_path(&id).exists(), "no sidecar for a small file");
        let f = File::open(store.path(&id)).unwrap();
        let attr = f
            .get_xattr(XATTR)
            .unwrap()
            .expect("hashes in the attribute");
        assert_eq!(BlockHashes::decode(&attr).unwrap().hashes.len(), 4);
        assert_eq!(read_all(&store, &id, small.len() as u64).unwrap(), small);

        // A corrupt byte is still caught through the attribute's hashes.
        let mut bad = small.clone();
        bad[BLOCK as usize + 7] ^= 1;
        fs::write(store.path(&id), &bad).unwrap();
        let e = read_all(&store, &id, small.len() as u64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        // Over 64 blocks: the list goes to `<id>.blk`, the file has no attribute.
        let large = vec![7u8; (65 * BLOCK) as usize];
        let id = put(&store, &large);
        assert!(store.blk_path(&id).exists(), "a sidecar for a large file");
        let f = File::open(store.path(&id)).unwrap();
        assert_eq!(f.get_xattr(XATTR).unwrap(), None);
        assert_eq!(
            BlockHashes::stored(&store.path(&id)).unwrap().hashes.len(),
            65
        );
        assert_eq!(read_all(&store, &id, large.len() as u64).unwrap(), large);
        store.delete(&id).unwrap();
        assert!(!store.blk_path(&id).exists() && !store.path(&id).exists());
    }
}
