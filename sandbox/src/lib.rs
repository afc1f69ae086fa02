//! The per-task sandbox: an ephemeral, locked-down container started in milliseconds.
//!
//! [`Sandbox::spawn`] is safe to call from a multi-threaded tokio runtime: it only sends a
//! request to the sandbox's [`zygote`] (a small single-threaded process exec'd once), which
//! forks a [`helper`] per task; every namespace, mount and further `fork` happens there and in
//! the helper's children ([`child`]). The caller gets the task's stdout and stderr as async
//! pipes, a pidfd to wait on, and at the end a [`Report`] the helper wrote to a file.
//!
//! Invariants: a task sees only its image (read-only, or copy-on-write for imported images), its
//! binds (read-only), its own `/tmp`, `/proc`, minimal `/dev`, and no network. Whatever way a task
//! ends — exit, timeout, cancel, the helper, the zygote or the caller killed — no process, mount
//! or cgroup of it survives: mounts live only in the helper's mount namespace, processes die with
//! pid 1 of their pid namespace (which dies with the helper, which dies with the zygote, which
//! exits when the caller's socket closes), and cgroup leaves of dead helpers are removed by
//! [`cgroup::sweep`], which [`Sandbox::new`] runs.

pub mod cgroup;
pub mod child;
pub mod group;
pub mod helper;
pub mod image;
pub mod lockdown;
pub mod mounts;
pub mod seccomp;
pub mod spec;
mod sys;
pub mod zygote;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

use crate::image::ImageStore;
pub use spec::{Bind, Limits, Report, TaskSpec};
pub use sys::ZYGOTE_ARG;

/// Host uid/gid range the tasks' ids map to by default (65,536 ids, unused by the host).
pub const DEFAULT_ID_BASE: u32 = 1_300_000_000;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `mobula` binary (exec'd once as the zygote).
    pub helper: PathBuf,
    /// Working directory: mount point, reports.
    pub run_dir: PathBuf,
    /// Image store directory.
    pub images: PathBuf,
    pub id_base: u32,
    /// Set `favordynmods` on the cgroup2 mount ([`cgroup::favor_dynmods`]).
    pub tune_cgroups: bool,
}

impl SandboxConfig {
    /// The current executable as helper, state below `dir`.
    pub fn under(dir: &Path) -> io::Result<SandboxConfig> {
        // Absolute at the edge: the helper and the task's mounts run from other directories.
        let dir = std::path::absolute(dir)?;
        Ok(SandboxConfig {
            helper: std::env::current_exe()?,
            run_dir: dir.join("sandbox"),
            images: dir.join("images"),
            id_base: DEFAULT_ID_BASE,
            tune_cgroups: true,
        })
    }
}

#[derive(Debug)]
pub struct Sandbox {
    cfg: SandboxConfig,
    images: ImageStore,
    seq: AtomicU64,
    zygote: zygote::Zygote,
}

/// Where a task's stdin comes from.
#[derive(Debug)]
pub enum Input {
    Null,
    File(File),
    /// The caller's own stdin.
    Inherit,
    /// A pipe; the write end is [`Running::stdin`].
    Pipe,
}

/// A started task.
#[derive(Debug)]
pub struct Running {
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pidfd: OwnedFd,
    /// EOF once the helper and everything it started have exited.
    lifeline: pipe::Receiver,
    report: PathBuf,
    done: bool,
}

/// A finished task's output, captured up to a cap.
#[derive(Debug)]
pub struct Captured {
    pub report: Report,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Stdout went past the cap; the task was stopped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// The descriptor a task's stdin is, and the write end the caller keeps for [`Input::Pipe`].
fn stdin_fds(stdin: Input) -> io::Result<(OwnedFd, Option<OwnedFd>)> {
    Ok(match stdin {
        Input::Null => (File::open("/dev/null")?.into(), None),
        Input::File(f) => (f.into(), None),
        Input::Inherit => (std::io::stdin().as_fd().try_clone_to_owned()?, None),
        Input::Pipe => {
            let (r, w) = pipe_pair()?;
            (r, Some(w))
        }
    })
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

impl Sandbox {
    /// Prepare directories and the host image, clean up after any crashed helper, start the
    /// zygote.
    pub fn new(cfg: SandboxConfig) -> io::Result<Sandbox> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the sandbox needs root (namespaces, cgroups, mounts)",
            ));
        }
        std::fs::create_dir_all(cfg.run_dir.join("mnt"))?;
        std::fs::create_dir_all(cfg.run_dir.join("reports"))?;
        if cfg.tune_cgroups {
            if let Err(e) = cgroup::favor_dynmods() {
                tracing::warn!("sandbox: {e}; moving tasks into cgroups may be slow");
            }
        }
        cgroup::sweep()?;
        sweep_reports(&cfg.run_dir.join("reports"));
        let images = ImageStore::open(&cfg.images, cfg.id_base)?;
        let zygote = zygote::Zygote::start(&cfg.helper)?;
        Ok(Sandbox {
            cfg,
            images,
            seq: AtomicU64::new(0),
            zygote,
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The helper's arguments for `spec` (checked), as JSON.
    fn helper_args(
        &self,
        spec: &TaskSpec,
        name: String,
        report: PathBuf,
        group: bool,
    ) -> io::Result<Vec<u8>> {
        for b in &spec.binds {
            spec::check_inside(&b.inside).map_err(io::Error::other)?;
        }
        let image = self.images.resolve(&spec.image)?;
        let args = helper::HelperArgs {
            spec: spec.clone(),
            name,
            image_root: image.root,
            host_dirs: image.host_dirs,
            read_only_root: image.read_only_root,
            mount_dir: self.cfg.run_dir.join("mnt"),
            report,
            id_base: self.cfg.id_base,
            group,
        };
        serde_json::to_vec(&args).map_err(io::Error::other)
    }

    /// Start a task.
    pub fn spawn(&self, spec: &TaskSpec, stdin: Input) -> io::Result<Running> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let report = helper::report_path(&self.cfg.run_dir.join("reports"), &name);
        let json = self.helper_args(spec, name, report.clone(), false)?;
        let (stdin_fd, stdin_tx) = stdin_fds(stdin)?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let (life_r, life_w) = pipe_pair()?;
        let pidfd = self
            .zygote
            .spawn(&json, [&stdin_fd, &out_w, &err_w, &life_w])?;
        drop((stdin_fd, out_w, err_w, life_w));
        Ok(Running {
            stdin: stdin_tx.map(pipe::Sender::from_owned_fd).transpose()?,
            stdout: Some(pipe::Receiver::from_owned_fd(out_r)?),
            stderr: Some(pipe::Receiver::from_owned_fd(err_r)?),
            pidfd,
            lifeline: pipe::Receiver::from_owned_fd(life_r)?,
            report,
            done: false,
        })
    }

    /// Run a task to the end, keeping at most `cap` bytes of stdout (more stops the task) and of
    /// stderr (more is dropped).
    pub async fn run(&self, spec: &TaskSpec, stdin: Input, cap: usize) -> io::Result<Captured> {
        let mut t = self.spawn(spec, stdin)?;
        let (out, err) = (t.stdout.take(), t.stderr.take());
        let (o, e) = tokio::join!(
            async {
                let r = read_capped(out, cap).await;
                if r.1 {
                    t.cancel();
                }
                r
            },
            read_capped(err, cap)
        );
        let report = t.wait().await?;
        Ok(Captured {
            report,
            stdout: o.0,
            stderr: e.0,
            stdout_truncated: o.1,
            stderr_truncated: e.1,
        })
    }
}

async fn read_capped(r: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    truncated = true;
                    break;
                }
            }
        }
    }
    (out, truncated)
}

/// The pid behind a pidfd.
fn pid_of(pidfd: &OwnedFd) -> Option<u32> {
    let fd = pidfd.as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:")?.trim().parse().ok())
}

fn sweep_reports(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Running {
    /// Ask the helper to stop the task (it kills the tree, cleans up and still reports).
    pub fn cancel(&self) {
        sys::pidfd_signal(&self.pidfd, libc::SIGTERM);
    }

    /// The helper's pid (for tests that kill it).
    pub fn helper_pid(&self) -> Option<u32> {
        pid_of(&self.pidfd)
    }

    /// Wait for the end and read the report.
    pub async fn wait(mut self) -> io::Result<Report> {
        let mut buf = [0u8; 16];
        while self.lifeline.read(&mut buf).await? > 0 {}
        self.done = true;
        let report = match std::fs::read(&self.report) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(_) => Report {
                error: Some("sandbox helper ended without a report".into()),
                ..Default::default()
            },
        };
        let _ = std::fs::remove_file(&self.report);
        Ok(report)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}
