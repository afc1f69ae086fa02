//! The node's image store: `<images>/<name>/rootfs`, one read-only tree per image, a btrfs
//! subvolume when the store is on btrfs. Tasks never write here: each instantiates its image as
//! the lower layer of a per-task overlay.
//!
//! `host` is built in: the node's own userland. Its tree is a skeleton (`/etc` synthesised: a
//! passwd with root and nobody, hosts, the loader cache; symbolic links for merged-/usr hosts)
//! and the host's `/usr` (and `/etc/alternatives`, and real `/bin`… on split-/usr hosts) are bound
//! read-only on top, so the root stays read-only and nothing else of the host is visible.
//!
//! [`ImageStore::import`] takes a rootfs tarball, a `docker save` tarball or an OCI image layout
//! tarball ([`layers`]), applies the layers in order with whiteouts, shifts file owners into the
//! tasks' id range (so the image's root owns its files inside the task), and swaps the finished
//! tree in under its name atomically.

pub mod layers;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a task needs to instantiate an image.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub root: PathBuf,
    pub host_dirs: Vec<String>,
    pub read_only_root: bool,
}

#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    id_base: u32,
    host_dirs: Vec<String>,
}

/// What an import found.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// `rootfs`, `docker` or `oci`.
    pub format: &'static str,
    pub layers: usize,
}

pub const HOST: &str = "host";

/// An image name: 1 to 64 of `[A-Za-z0-9._-]`, not starting with a dot (never a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_btrfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

fn btrfs(args: &[&std::ffi::OsStr]) -> io::Result<()> {
    let out = std::process::Command::new("btrfs").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "btrfs {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl ImageStore {
    pub fn open(dir: &Path, id_base: u32) -> io::Result<ImageStore> {
        fs::create_dir_all(dir)?;
        let host_dirs = build_host_skeleton(&dir.join(HOST).join("rootfs"))?;
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".import-") {
                let _ = remove_tree(&e.path());
            }
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
            id_base,
            host_dirs,
        })
    }

    pub fn resolve(&self, name: &str) -> io::Result<Resolved> {
        if name == HOST {
            return Ok(Resolved {
                root: self.dir.join(HOST).join("rootfs"),
                host_dirs: self.host_dirs.clone(),
                read_only_root: true,
            });
        }
        let root = self.dir.join(name).join("rootfs");
        if !valid_name(name) || !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no image named {name:?} on this node"),
            ));
        }
        Ok(Resolved {
            root,
            host_dirs: Vec::new(),
            read_only_root: false,
        })
    }

    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| valid_name(n))
            .collect();
        v.sort();
        v
    }

    /// Import (or replace) image `name` from a tarball.
    pub fn import(&self, name: &str, tarball: &Path) -> io::Result<Imported> {
        if !valid_name(name) || name == HOST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad image name {name:?} (letters, digits, . _ -; not \"host\")"),
            ));
        }
        let tmp = self
            .dir
            .join(format!(".import-{name}-{}", std::process::id()));
        let _ = remove_tree(&tmp);
        if is_btrfs(&self.dir) {
            btrfs(&["subvolume".as_ref(), "create".as_ref(), tmp.as_os_str()])?;
        } else {
            fs::create_dir(&tmp)?;
        }
        let result = (|| {
            let rootfs = tmp.join("rootfs");
            fs::create_dir(&rootfs)?;
            let info = layers::import(tarball, &rootfs, self.id_base)?;
            let dst = self.dir.join(name);
            if dst.exists() {
                let old = self.dir.join(format!(".import-old-{name}"));
                fs::rename(&dst, &old)?;
                fs::rename(&tmp, &dst)?;
                remove_tree(&old)?;
            } else {
                fs::rename(&tmp, &dst)?;
            }
            Ok(info)
        })();
        if result.is_err() {
            let _ = remove_tree(&tmp);
        }
        result
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        if !valid_name(name) || name == HOST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad image name",
            ));
        }
        remove_tree(&self.dir.join(name))
    }
}

/// Delete a tree, subvolume or not.
fn remove_tree(p: &Path) -> io::Result<()> {
    if !p.exists() {
        return Ok(());
    }
    if is_btrfs(p) && btrfs(&["subvolume".as_ref(), "delete".as_ref(), p.as_os_str()]).is_ok() {
        return Ok(());
    }
    fs::remove_dir_all(p)
}

/// Bump when the skeleton's contents change.
const SKELETON_VERSION: &str = "3";

/// Build the host image's skeleton at `root` unless this version is there (a live skeleton is
/// never touched: running tasks use it as their overlay's lower layer). Returns the host dirs
/// to bind.
fn build_host_skeleton(root: &Path) -> io::Result<Vec<String>> {
    let mut binds = vec!["/usr".to_string()];
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            binds.push(format!("/{top}"));
        }
    }
    if Path::new("/etc/alternatives").is_dir() {
        binds.push("/etc/alternatives".into());
    }
    let marker = root.with_file_name("version");
    // Current, and with a mount point for every host directory bound today (the host may have
    // gained one since it was built): tasks bind it as their root without creating anything.
    let complete = || {
        binds
            .iter()
            .all(|d| root.join(d.trim_start_matches('/')).is_dir())
    };
    if fs::read_to_string(&marker).is_ok_and(|v| v == SKELETON_VERSION) && complete() {
        return Ok(binds);
    }
    let tmp = root.with_file_name(format!("rootfs.new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    for d in [
        "usr",
        "etc/alternatives",
        "root",
        "home",
        "run",
        "var",
        "opt",
        "srv",
        "mnt",
    ] {
        fs::create_dir_all(tmp.join(d))?;
    }
    // Mount points every task has, made here once rather than in each task's overlay (where a
    // directory costs a copy-up): the sandbox's, and the agent's tools (a directory, two files).
    for d in crate::mounts::MOUNT_POINTS {
        fs::create_dir_all(tmp.join(d))?;
    }
    let inside = |p: &str| tmp.join(p.trim_start_matches('/'));
    fs::create_dir_all(inside(crate::mounts::TOOLS_BIN))?;
    for f in [crate::mounts::TOOLS_EXE, crate::mounts::TOOLS_SOCKET] {
        let f = inside(f);
        fs::create_dir_all(f.parent().unwrap_or(&tmp))?;
        fs::write(f, "")?;
    }
    std::os::unix::fs::symlink("/tmp", tmp.join("var/tmp"))?;
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                std::os::unix::fs::symlink(fs::read_link(&host)?, tmp.join(top))?
            }
            Ok(m) if m.is_dir() => fs::create_dir(tmp.join(top))?,
            _ => {}
        }
    }
    let etc = tmp.join("etc");
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/tmp:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(
        etc.join("hosts"),
        "127.0.0.1 localhost task\n::1 localhost\n",
    )?;
    fs::write(etc.join("hostname"), "task\n")?;
    fs::write(
        etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files\n",
    )?;
    for f in ["ld.so.cache", "ld.so.conf"] {
        let _ = fs::copy(Path::new("/etc").join(f), etc.join(f));
    }
    if let Ok(t) = fs::read_link("/etc/localtime") {
        let _ = std::os::unix::fs::symlink(t, etc.join("localtime"));
    }
    if root.is_dir() {
        // Another process built it meanwhile, or an older version: keep the old one in place
        // only if it is the current version.
        if fs::read_to_string(&marker).is_ok_and(|v| v == SKELETON_VERSION) {
            fs::remove_dir_all(&tmp)?;
            return Ok(binds);
        }
        let old = root.with_file_name(format!("rootfs.old-{}", std::process::id()));
        fs::rename(root, &old)?;
        let _ = fs::remove_dir_all(&old);
    }
    fs::rename(&tmp, root)?;
    fs::write(&marker, SKELETON_VERSION)?;
    Ok(binds)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["alpine", "busybox-1.36", "a_b.c"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
