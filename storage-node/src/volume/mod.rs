//! The volume seam: where a node's data files live, and the copy-on-write operations on them.
//!
//! Two backends with one API (and one conformance suite, `tests` below, run against both):
//! - [`btrfs::Btrfs`]: the live data is a btrfs subvolume `<node>/volume`; clones are reflinks
//!   (`FICLONE`); snapshots are read-only btrfs snapshots under `<node>/snapshots/<name>`,
//!   created in constant time whatever the number of files.
//! - [`plain::Plain`]: any other filesystem; `<node>/volume` is a directory, clones are copies,
//!   snapshots are hard-link farms of the (immutable) data files.
//!
//! Invariant both rely on: a data file becomes visible under `volume/` only once it is complete
//! (written as an unnamed `O_TMPFILE` inode, then linked into place; fsynced before the link,
//! or on btrfs and journaled ext4 right after it — see [`Volume::file_fsync_keeps_its_name`]), and is never
//! modified afterwards. A snapshot therefore only ever holds whole files, and a hard link is as
//! good as a copy.

pub mod btrfs;
pub mod loopback;
pub mod plain;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A snapshot of a node's volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Where its files can be read (read-only).
    pub path: PathBuf,
}

/// Operations every volume backend provides.
pub trait Volume: Send + Sync + std::fmt::Debug {
    /// `btrfs` or `plain`.
    fn kind(&self) -> &'static str;
    /// The live volume root; data files live below it.
    fn root(&self) -> &Path;
    /// Make `dst` a copy of `src` (same volume), sharing blocks where the filesystem can.
    fn clone_file(&self, src: &Path, dst: &Path) -> io::Result<()>;
    /// Take a consistent, read-only snapshot of the whole volume.
    fn snapshot_create(&self, name: &str) -> io::Result<Snapshot>;
    /// Snapshots, oldest first.
    fn snapshot_list(&self) -> io::Result<Vec<Snapshot>>;
    /// Delete a snapshot.
    fn snapshot_delete(&self, name: &str) -> io::Result<()>;
    /// Replace the live volume's contents with a snapshot's (the node must not be serving).
    fn snapshot_restore(&self, name: &str) -> io::Result<()>;
    /// Whether an fsync of a file created in the current transaction also makes its new name
    /// durable, so a new data file needs one fsync rather than two (file, then directory).
    /// POSIX promises nothing of the kind; btrfs does it by design (see [`btrfs::Btrfs`]), ext4
    /// with a journal by its commit order (see [`plain::journaled_ext4`]).
    fn file_fsync_keeps_its_name(&self) -> bool {
        false
    }
    /// The journal that commits this volume's new files, when one journal serves its whole
    /// file system (journaled ext4: the device's number): copies linked first on volumes of
    /// one journal become durable in the one commit their first fsync waits for, so they can
    /// be fsync'd one after another on one thread ([`crate::local::LocalFirst`]). `None` where
    /// fsyncs do not share a commit that way (btrfs logs each subvolume on its own; others
    /// need the portable sequence).
    fn shared_journal(&self) -> Option<u64> {
        None
    }
}

/// Snapshot names: 1..=64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_snapshot_name(name: &str) -> bool {
    mobula_metadata::api::plain_name(name, 64)
}

fn check_name(name: &str) -> io::Result<()> {
    if valid_snapshot_name(name) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad snapshot name {name:?}"),
        ))
    }
}

fn created_secs(p: &Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn list_dir_snapshots(dir: &Path) -> io::Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if valid_snapshot_name(&name) {
            out.push(Snapshot {
                created: created_secs(&e.path()),
                path: e.path(),
                name,
            });
        }
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// fsync a directory.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Open the volume of the node directory `node_dir`: btrfs when it is on btrfs, plain otherwise.
pub fn open(node_dir: &Path) -> io::Result<Box<dyn Volume>> {
    std::fs::create_dir_all(node_dir)?;
    if btrfs::is_btrfs(node_dir) {
        Ok(Box::new(btrfs::Btrfs::open(node_dir)?))
    } else {
        Ok(Box::new(plain::Plain::open(node_dir)?))
    }
}

#[cfg(test)]
pub mod tests;
