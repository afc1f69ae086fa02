//! The task's file system, built in two stages.
//!
//! Stage 1 ([`build_root`], in the helper: real root, in a private mount namespace of its own,
//! so nothing here is ever visible on the host and everything vanishes with the namespace):
//! a size-capped tmpfs at the run directory holds `/tmp`, `/dev` (null, zero, full, random,
//! urandom, tty, `shm/`) and, for an imported image, the overlay's upper and work dirs; that
//! overlay (image read-only below, the tmpfs above) becomes the new root. The host image, which
//! is read-only, is instead bound as it is, with `/manta` and `/assets` taken from the tmpfs
//! (when a bind needs a mount point it lacks elsewhere, it gets the overlay too). The host
//! image's directories (`/usr`, …), the inputs and the assets are bound read-only. Mount points
//! are created without following symbolic links, so an image cannot point a bind at a host path.
//!
//! Then the helper pivots into the new root and detaches every host mount ([`pivot_into`]).
//!
//! Stage 2 ([`enter_root`], in the task's pid 1, inside the new user and mount namespaces): a
//! fresh `/proc` for the task's pid namespace, sensitive `/proc` files masked, `/proc/sys`
//! read-only. No host path is reachable from the task's mount namespace.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::spec::{check_inside, Bind};

/// Where stage 1 puts things (all below the run directory, inside the helper's namespace).
#[derive(Debug)]
pub struct Layout {
    pub scratch: PathBuf,
    pub root: PathBuf,
}

/// How the helper was asked to build the root.
#[derive(Debug)]
pub struct RootPlan<'a> {
    /// The image's read-only tree (overlay lower layer).
    pub image: &'a Path,
    /// Host directories bound read-only at the same path (the host image: `/usr`, …).
    pub host_dirs: &'a [String],
    /// Keep `/` read-only (the host image) instead of a writable copy-on-write root.
    pub read_only_root: bool,
    /// Host uid/gid that the task's root maps to (owner of the writable parts).
    pub owner: u32,
    pub disk_mib: u64,
    pub binds: &'a [Bind],
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn mnt(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| err(format!("mount {}", dst.display()), e))
}

fn bind_ro(src: &Path, dst: &Path, writable: bool) -> io::Result<()> {
    mnt(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if !writable {
        f |= MsFlags::MS_RDONLY;
    }
    mnt(None, dst, None, f, None)
}

/// Create every missing directory of `rel` below `root`, refusing symbolic links on the way.
pub(crate) fn mkdirs_nofollow(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(p.display(), "is a symbolic link in the image"))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(err(p.display(), "is not a directory")),
            Err(_) => fs::DirBuilder::new().mode(0o755).create(&p)?,
        }
    }
    Ok(p)
}

/// Reserved in every task for a host-provided tool (the node's job agent puts its in-task tools
/// there): the directory of its links (first on a task's `PATH`), the executable, and its
/// socket. The host image's skeleton holds their mount points.
pub const TOOLS_BIN: &str = "/opt/mobula/bin";
pub const TOOLS_EXE: &str = "/opt/mobula/exe/mobula";
pub const TOOLS_SOCKET: &str = "/run/mobula/sock";

/// Directories of the root every task has something mounted on (an image may lack them; the
/// host image's skeleton has them).
pub const MOUNT_POINTS: [&str; 5] = ["proc", "dev", "tmp", "manta", "assets"];

/// The working directory, set back when dropped.
struct Cwd(PathBuf);

impl Cwd {
    fn enter(dir: &Path) -> io::Result<Cwd> {
        let back = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        std::env::set_current_dir(dir)?;
        Ok(Cwd(back))
    }
}

impl Drop for Cwd {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.0);
    }
}

/// Stage 1. Requires a private mount namespace (the helper unshared one).
pub fn build_root(run_dir: &Path, plan: &RootPlan) -> io::Result<Layout> {
    let scratch = run_dir.to_path_buf();
    let opts = format!("size={}m,mode=0755", plan.disk_mib.max(1));
    mnt(
        Some(Path::new("mobula-scratch")),
        &scratch,
        Some("tmpfs"),
        // Not nodev: `dev/` below holds the task's device nodes; every other part is mounted
        // nodev where it is used (the root overlay, /tmp).
        MsFlags::MS_NOSUID,
        Some(&opts),
    )?;
    let (root, tmp) = (scratch.join("root"), scratch.join("tmp"));
    for d in [&root, &tmp] {
        fs::create_dir(d)?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    let bare = bare_root(plan);
    // The scratch-backed directories this task's binds need (bare root only).
    let backed: Vec<&str> = SCRATCH_BACKED
        .into_iter()
        .filter(|d| bare && plan.binds.iter().any(|b| under(&b.inside, d)))
        .collect();
    if bare {
        // Nothing is ever written to the image's directory: the binds below land on mount
        // points it has or under the scratch-backed directories.
        mnt(Some(plan.image), &root, None, MsFlags::MS_BIND, None)?;
    } else {
        overlay(&scratch, &root, plan)?;
    }
    // Paths inside the new root are walked from it, not again from `/` through the run
    // directory for every component (those walks were a tenth of a spawn's CPU).
    let _back = Cwd::enter(&root)?;
    let inside = Path::new(".");
    for d in &backed {
        let src = scratch.join(d);
        fs::create_dir(&src)?;
        // Writable while the mount points are made; read-only with the root, below.
        mnt(Some(&src), &inside.join(d), None, MsFlags::MS_BIND, None)?;
    }
    for d in plan.host_dirs {
        let target = mkdirs_nofollow(inside, d)?;
        bind_ro(Path::new(d), &target, false)?;
    }
    for d in MOUNT_POINTS {
        mkdirs_nofollow(inside, d)?;
    }
    bind_ro(&tmp, &inside.join("tmp"), true)?;
    build_dev(&scratch, &inside.join("dev"))?;
    for b in plan.binds {
        check_inside(&b.inside).map_err(io::Error::other)?;
        let (parent, name) = b.inside.rsplit_once('/').unwrap_or(("", &b.inside));
        let dir = mkdirs_nofollow(inside, parent)?;
        let target = dir.join(name);
        let src = Path::new(&b.host);
        let meta = fs::metadata(src).map_err(|e| err(&b.host, e))?;
        match fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(&b.inside, "is a symbolic link in the image"))
            }
            Ok(_) => {}
            Err(_) if meta.is_dir() => fs::create_dir(&target)?,
            Err(_) => drop(fs::File::create(&target)?),
        }
        bind_ro(src, &target, b.writable)?;
    }
    if plan.read_only_root {
        let ro = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        for d in &backed {
            mnt(None, &inside.join(d), None, ro, None)?;
        }
        mnt(None, &root, None, ro, None)?;
    }
    Ok(Layout { scratch, root })
}

/// Root directories whose contents a read-only root gets from the scratch space (the inputs'
/// and assets' mount points are made there).
const SCRATCH_BACKED: [&str; 2] = ["manta", "assets"];

/// Whether `path` (absolute, inside the task) lies below the root directory `top`.
fn under(path: &str, top: &str) -> bool {
    path.trim_start_matches('/')
        .strip_prefix(top)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// A read-only image can be bound as the root as it is — no overlay to mount, to look paths up
/// through cold, and to tear down — when nothing would have to be created in it. The host
/// image's skeleton has every host directory's and the sandbox's mount point (the image store
/// keeps it so); a bind must land under [`SCRATCH_BACKED`] or on a target already there (not a
/// symbolic link). Else the overlay takes whatever has to be made, as for any image.
fn bare_root(plan: &RootPlan) -> bool {
    plan.read_only_root
        && plan.binds.iter().all(|b| {
            SCRATCH_BACKED.iter().any(|d| under(&b.inside, d))
                || fs::symlink_metadata(plan.image.join(b.inside.trim_start_matches('/')))
                    .is_ok_and(|m| !m.file_type().is_symlink())
        })
}

/// A writable copy-on-write root: the image below, the scratch space above.
fn overlay(scratch: &Path, root: &Path, plan: &RootPlan) -> io::Result<()> {
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    for d in [&upper, &work] {
        fs::create_dir(d)?;
    }
    if !plan.read_only_root {
        // The root directory of the overlay takes the upper dir's owner: the task's root.
        nix::unistd::chown(&upper, Some(plan.owner.into()), Some(plan.owner.into()))?;
    }
    let ovl = format!(
        "lowerdir={},upperdir={},workdir={}",
        plan.image.display(),
        upper.display(),
        work.display()
    );
    mnt(
        Some(Path::new("overlay")),
        root,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&ovl),
    )
}

/// Character devices of the task's `/dev`: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A minimal `/dev`, made on the scratch tmpfs (device nodes created here by the helper, which
/// may; the task may not) and bound at `dev` in one mount; `shm` is a sticky world-writable
/// directory on the same scratch space.
fn build_dev(scratch: &Path, dev: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let src = scratch.join("dev");
    fs::create_dir(&src)?;
    for (name, major, minor) in DEVICES {
        mknod(
            &src.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| err(format!("mknod {name}"), e))?;
        // mknod honours the umask; the nodes must be 0666.
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(0o666))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, src.join(name))?;
    }
    fs::create_dir(src.join("shm"))?;
    fs::set_permissions(src.join("shm"), fs::Permissions::from_mode(0o1777))?;
    mnt(Some(&src), dev, None, MsFlags::MS_BIND, None)?;
    mnt(
        None,
        dev,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None,
    )
}

/// `/proc` files that reveal or change host state; masked with `/dev/null`.
const PROC_MASKED: [&str; 8] = [
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "kallsyms",
    "latency_stats",
    "sysrq-trigger",
];
/// Read-only below `/proc`. (`irq`, `bus`, `fs`, `acpi` need host root to write, which a task
/// never is; `/proc/sys` also holds the namespaced sysctls, so it is made read-only outright.)
const PROC_READ_ONLY: [&str; 1] = ["sys"];

/// End of stage 1, in the helper: make the new root the root of the helper's mount namespace
/// and drop every host mount from it. The task's mount namespace is then a copy of only the
/// task's own mounts (fewer to copy and to tear down), all of them locked, and the task starts
/// inside its root — no `pivot_root` of its own, no host path left behind. A proc instance of
/// the helper's pid namespace stays mounted at `/proc` for now: the kernel lets a user namespace
/// mount a new proc only where a fully visible one exists; the task's own proc covers it.
pub fn pivot_into(root: &Path) -> io::Result<()> {
    mnt(
        Some(Path::new("proc")),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    std::env::set_current_dir(root)?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detach old root", e))?;
    std::env::set_current_dir("/")
}

/// Stage 2, in the task's pid 1 (new user, mount and pid namespaces, already inside the root):
/// a fresh `/proc` for the task's pid namespace over the helper's, sensitive files masked,
/// `/proc/sys` read-only.
pub fn enter_root() -> io::Result<()> {
    let proc_ = Path::new("/proc");
    mnt(
        Some(Path::new("proc")),
        proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let null = Path::new("/dev/null");
    for f in PROC_MASKED {
        let t = proc_.join(f);
        if t.exists() {
            mnt(Some(null), &t, None, MsFlags::MS_BIND, None)?;
        }
    }
    for d in PROC_READ_ONLY {
        let t = proc_.join(d);
        if t.exists() {
            bind_ro(&t, &t, false)?;
        }
    }
    Ok(())
}
