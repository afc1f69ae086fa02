//! A btrfs filesystem in an image file, loop-mounted (for `mobula up --btrfs-image` and tests).
//! Needs root, `mkfs.btrfs` (btrfs-progs) and loop devices.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> io::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {cmd}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Why btrfs loop mounts cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to loop-mount a btrfs image".into());
    }
    if Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("mkfs.btrfs not found (install btrfs-progs)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control)".into());
    }
    None
}

/// Create (if missing) a btrfs image of `size` bytes at `image` and mount it on `mountpoint`
/// (already mounted there: nothing to do). `compress` enables zstd compression at rest.
pub fn mount(image: &Path, size: u64, mountpoint: &Path, compress: bool) -> io::Result<()> {
    if let Some(why) = unavailable() {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    }
    std::fs::create_dir_all(mountpoint)?;
    if super::btrfs::is_btrfs(mountpoint) {
        return Ok(());
    }
    if !image.exists() {
        if let Some(dir) = image.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(image)?.set_len(size)?;
        run("mkfs.btrfs", &["-q".as_ref(), image.as_os_str()])?;
    }
    let opts = if compress {
        "loop,compress=zstd"
    } else {
        "loop"
    };
    run(
        "mount",
        &[
            "-o".as_ref(),
            opts.as_ref(),
            image.as_os_str(),
            mountpoint.as_os_str(),
        ],
    )
}

/// Unmount `mountpoint` (lazily, so open files do not block it).
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    run("umount", &["-l".as_ref(), mountpoint.as_os_str()])
}

/// A loop-mounted btrfs that is unmounted (and its image deleted) on drop.
#[derive(Debug)]
pub struct TempBtrfs {
    pub dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
}

impl TempBtrfs {
    /// A fresh `size`-byte btrfs, or why it cannot be made here.
    pub fn new(size: u64) -> Result<TempBtrfs, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let dir = tempfile::Builder::new()
            .prefix("mobula-btrfs")
            .tempdir_in("/var/tmp")
            .map_err(|e| e.to_string())?;
        let mountpoint = dir.path().join("mnt");
        mount(&dir.path().join("image"), size, &mountpoint, true).map_err(|e| e.to_string())?;
        Ok(TempBtrfs { dir, mountpoint })
    }
}

impl Drop for TempBtrfs {
    fn drop(&mut self) {
        let _ = unmount(&self.mountpoint);
    }
}

/// For tests that need btrfs: the filesystem, or `None` after printing why it is skipped.
/// With `MOBULA_REQUIRE_PRIVILEGED=1` (CI) a skip is a failure.
pub fn for_test(size: u64) -> Option<TempBtrfs> {
    TempBtrfs::new(size).map_or_else(skipped, Some)
}

/// A privileged test cannot run here, for `why`: `None` after printing it — or, with
/// `MOBULA_REQUIRE_PRIVILEGED=1` (CI), a failure.
pub fn skipped<T>(why: String) -> Option<T> {
    if std::env::var("MOBULA_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("privileged test cannot run and MOBULA_REQUIRE_PRIVILEGED=1: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// A 2 GiB loop-mounted ext4 made with `features` (`mkfs.ext4 -O`), unmounted on drop.
#[derive(Debug)]
pub struct TempExt4 {
    _dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
}

impl TempExt4 {
    /// For tests that need it: the filesystem, or `None` after printing why it is skipped
    /// (with `MOBULA_REQUIRE_PRIVILEGED=1` a failure).
    pub fn for_test(features: &str) -> Option<TempExt4> {
        if let Some(why) = unavailable() {
            return skipped(why);
        }
        let dir = tempfile::Builder::new()
            .prefix("mobula-ext4")
            .tempdir_in("/var/tmp")
            .unwrap();
        let (image, mountpoint) = (dir.path().join("image"), dir.path().join("mnt"));
        std::fs::File::create(&image)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        std::fs::create_dir(&mountpoint).unwrap();
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-O".as_ref(),
                features.as_ref(),
                image.as_os_str(),
            ],
        )
        .unwrap();
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mountpoint.as_os_str(),
            ],
        )
        .unwrap();
        Some(TempExt4 {
            _dir: dir,
            mountpoint,
        })
    }
}

impl Drop for TempExt4 {
    fn drop(&mut self) {
        let _ = unmount(&self.mountpoint);
    }
}
