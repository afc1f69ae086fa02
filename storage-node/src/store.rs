//! The on-disk data store of one storage node.
//!
//! Layout under the node's directory:
//! - `node-id`: this node's identity, created on first start;
//! - `data/<xx>/<id>`: one immutable file per data id (`xx` = first two hex digits of the id);
//! - `tmp/`: files being written. Emptied at start: anything there belongs to a write that was
//!   never acknowledged.
//!
//! Invariant: a file appears under `data/` only after its bytes were fsynced, it was renamed
//! into place and its directory fsynced — so an acknowledged write survives a crash, and a
//! crash never leaves a partial file visible.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Whether `id` is a valid data id (32 lower-case hex digits). Nothing else ever reaches a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random data id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A node's data store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A file being written; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    pub path: PathBuf,
    pub file: tokio::fs::File,
    committed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Store {
    /// Open the store at `root`, creating its layout and removing leftover temp files.
    pub fn open(root: &Path) -> io::Result<Store> {
        fs::create_dir_all(root.join("tmp"))?;
        for i in 0..=255u8 {
            fs::create_dir_all(root.join("data").join(format!("{i:02x}")))?;
        }
        fsync_dir(&root.join("data"))?;
        fsync_dir(root)?;
        for entry in fs::read_dir(root.join("tmp"))? {
            let entry = entry?;
            tracing::info!("removing leftover temp file {}", entry.path().display());
            fs::remove_file(entry.path())?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The node's persistent identity (created on first call).
    pub fn node_id(&self) -> io::Result<String> {
        let p = self.root.join("node-id");
        match fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => {
                let id = format!("node-{}", &new_id()[..12]);
                let tmp = self.root.join("tmp").join("node-id");
                fs::write(&tmp, &id)?;
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &p)?;
                fsync_dir(&self.root)?;
                Ok(id)
            }
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where data `id` lives (the id must be valid).
    pub fn path(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.root.join("data").join(&id[..2]).join(id)
    }

    /// Start writing a new file; it becomes `id` on [`Store::commit`].
    pub async fn create_temp(&self, id: &str) -> io::Result<TempFile> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{id}.{}", &new_id()[..8]));
        let file = tokio::fs::File::create(&path).await?;
        Ok(TempFile {
            path,
            file,
            committed: false,
        })
    }

    /// Make a fully written temp file durable and visible as `id`.
    pub async fn commit(&self, mut tmp: TempFile, id: &str) -> io::Result<()> {
        tmp.file.flush().await?;
        tmp.file.sync_all().await?;
        let dest = self.path(id);
        tokio::fs::rename(&tmp.path, &dest).await?;
        tmp.committed = true;
        let dir = dest
            .parent()
            .expect("data files live in a directory")
            .to_path_buf();
        tokio::task::spawn_blocking(move || fsync_dir(&dir))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }

    /// Delete `id` durably; deleting a missing id is not an error.
    pub async fn delete(&self, id: &str) -> io::Result<()> {
        let p = self.path(id);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let dir = p
            .parent()
            .expect("data files live in a directory")
            .to_path_buf();
        tokio::task::spawn_blocking(move || fsync_dir(&dir))
            .await
            .map_err(io::Error::other)?
    }

    /// Ids of data files last modified more than `age` ago.
    pub fn old_ids(&self, age: std::time::Duration) -> io::Result<Vec<String>> {
        let cutoff = std::time::SystemTime::now() - age;
        let mut out = Vec::new();
        for sub in fs::read_dir(self.root.join("data"))? {
            for f in fs::read_dir(sub?.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                if valid_id(&name) && f.metadata()?.modified()? < cutoff {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    /// Free and total bytes of the filesystem holding the store.
    pub fn space(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(&self.root) {
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

    #[tokio::test]
    async fn uncommitted_temp_files_vanish_and_restart_cleans_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = new_id();
        {
            let mut t = store.create_temp(&id).await.unwrap();
            t.file.write_all(b"partial").await.unwrap();
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        fs::write(dir.path().join("tmp").join("crash.left"), b"x").unwrap();
        Store::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let mut t = store.create_temp(&id).await.unwrap();
        t.file.write_all(b"whole").await.unwrap();
        store.commit(t, &id).await.unwrap();
        assert_eq!(fs::read(store.path(&id)).unwrap(), b"whole");
    }
}
