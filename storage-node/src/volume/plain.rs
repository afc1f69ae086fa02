//! The plain backend: any filesystem. Snapshots are hard-link farms of the immutable data files,
//! built under a temporary name and renamed into place, so a snapshot is complete or absent.
//!
//! A plain volume on ext4 with a journal commits a new file with one fsync (see
//! [`journaled_ext4`]); on anything else it keeps the portable sequence (fsync the file, link it,
//! fsync the directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{check_name, fsync_dir, list_dir_snapshots, Snapshot, Volume};

/// A volume on an ordinary directory.
#[derive(Debug)]
pub struct Plain {
    root: PathBuf,
    snapshots: PathBuf,
    /// [`ext4_journal`] of the root, found at open.
    journal: Option<u64>,
}

/// Whether `path` is on ext4 with a journal. There an fsync of a regular file commits (jbd2) the
/// journal transaction holding the inode's last change and every transaction before it; linking
/// a file into a directory changes the inode (its link count) in the transaction that adds the
/// directory entry, so an fsync of the file after its link makes the new name durable with its
/// bytes (`ext4_sync_file` writes the data first, then completes the inode's transaction — with
/// fast commits too, which log the link with the inode). Without a journal ext4 syncs the inode
/// alone, so this is false there, as it is for every other file system and wherever the journal
/// cannot be seen (`/proc/fs/jbd2/<device>-8` names each mounted ext4's internal journal).
pub fn journaled_ext4(path: &Path) -> bool {
    ext4_journal(path).is_some()
}

/// The device number of `path`'s file system when it is ext4 with a journal
/// ([`journaled_ext4`]): what names the journal its files are committed through.
pub fn ext4_journal(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let ext4 = nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC);
    let journal_of = |dev: u64| {
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        let device = fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        let name = device.file_name()?.to_string_lossy().into_owned();
        Some(PathBuf::from(format!("/proc/fs/jbd2/{name}-8")))
    };
    if !ext4 {
        return None;
    }
    let dev = fs::metadata(path).ok()?.dev();
    journal_of(dev)?.exists().then_some(dev)
}

impl Plain {
    pub fn open(node_dir: &Path) -> io::Result<Plain> {
        let root = node_dir.join("volume");
        let snapshots = node_dir.join("snapshots");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&snapshots)?;
        // Half-built snapshots or restores from a crash.
        for e in fs::read_dir(&snapshots)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_dir_all(e.path())?;
            }
        }
        let old = node_dir.join(".volume-old");
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        let journal = ext4_journal(&root);
        Ok(Plain {
            root,
            snapshots,
            journal,
        })
    }
}

/// Recreate the tree `src` at `dst` with hard links to its files.
fn link_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            link_tree(&e.path(), &to)?;
        } else {
            fs::hard_link(e.path(), &to)?;
        }
    }
    fsync_dir(dst)
}

impl Volume for Plain {
    fn kind(&self) -> &'static str {
        "plain"
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn file_fsync_keeps_its_name(&self) -> bool {
        self.journal.is_some()
    }

    fn shared_journal(&self) -> Option<u64> {
        self.journal
    }

    fn clone_file(&self, src: &Path, dst: &Path) -> io::Result<()> {
        fs::copy(src, dst)?;
        fs::File::open(dst)?.sync_all()
    }

    fn snapshot_create(&self, name: &str) -> io::Result<Snapshot> {
        check_name(name)?;
        let dst = self.snapshots.join(name);
        if dst.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("snapshot {name} exists"),
            ));
        }
        let tmp = self.snapshots.join(format!(".tmp-{name}"));
        link_tree(&self.root, &tmp)?;
        fail::fail_point!("snapshot-before-rename");
        fs::rename(&tmp, &dst)?;
        fsync_dir(&self.snapshots)?;
        Ok(Snapshot {
            name: name.to_string(),
            created: super::created_secs(&dst),
            path: dst,
        })
    }

    fn snapshot_list(&self) -> io::Result<Vec<Snapshot>> {
        list_dir_snapshots(&self.snapshots)
    }

    fn snapshot_delete(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        fs::remove_dir_all(self.snapshots.join(name))?;
        fsync_dir(&self.snapshots)
    }

    fn snapshot_restore(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let snap = self.snapshots.join(name);
        if !snap.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no snapshot {name}"),
            ));
        }
        let parent = self.root.parent().expect("volume has a parent");
        let fresh = self.snapshots.join(format!(".tmp-restore-{name}"));
        link_tree(&snap, &fresh)?;
        let old = parent.join(".volume-old");
        fs::rename(&self.root, &old)?;
        fs::rename(&fresh, &self.root)?;
        fsync_dir(parent)?;
        fs::remove_dir_all(&old)
    }
}
