//! The per-task sandbox: an ephemeral, locked-down container started in milliseconds.
//!
//! [`Sandbox::spawn`] is safe to call from a multi-threaded tokio runtime: it only `exec`s the
//! helper (`mobula __sandbox-helper`, see [`helper`]); every `fork`, namespace and mount happens
//! in that fresh single-threaded process and its children ([`child`]). The caller gets the task's
//! stdout and stderr as streams and, at the end, a [`Report`] the helper wrote to a file.
//!
//! Invariants: a task sees only its image (read-only, or copy-on-write for imported images), its
//! binds (read-only), its own `/tmp`, `/proc`, minimal `/dev`, and no network. Whatever way a task
//! ends — exit, timeout, cancel, the helper or the node killed — no process, mount or cgroup of
//! it survives: mounts live only in the helper's mount namespace, processes die with pid 1 of
//! their pid namespace (which dies with the helper), and cgroup leaves of dead helpers are
//! removed by [`cgroup::sweep`], which [`Sandbox::new`] runs.

pub mod cgroup;
pub mod child;
pub mod helper;
pub mod mounts;
pub mod seccomp;
pub mod spec;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::image::ImageStore;
pub use spec::{Bind, Limits, Report, TaskSpec};

/// The argument that turns the `mobula` binary into a sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-helper";

/// Host uid/gid range the tasks' ids map to by default (65,536 ids, unused by the host).
pub const DEFAULT_ID_BASE: u32 = 1_300_000_000;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `mobula` binary (re-executed as the helper).
    pub helper: PathBuf,
    /// Working directory: mount point, reports.
    pub run_dir: PathBuf,
    /// Image store directory.
    pub images: PathBuf,
    pub id_base: u32,
}

impl SandboxConfig {
    /// The current executable as helper, state below `dir`.
    pub fn under(dir: &Path) -> io::Result<SandboxConfig> {
        Ok(SandboxConfig {
            helper: std::env::current_exe()?,
            run_dir: dir.join("sandbox"),
            images: dir.join("images"),
            id_base: DEFAULT_ID_BASE,
        })
    }
}

#[derive(Debug)]
pub struct Sandbox {
    cfg: SandboxConfig,
    images: ImageStore,
    seq: AtomicU64,
}

/// A started task.
#[derive(Debug)]
pub struct Running {
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    child: Child,
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

impl Sandbox {
    /// Prepare directories and the host image, and clean up after any crashed helper.
    pub fn new(cfg: SandboxConfig) -> io::Result<Sandbox> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the sandbox needs root (namespaces, cgroups, mounts)",
            ));
        }
        std::fs::create_dir_all(cfg.run_dir.join("mnt"))?;
        std::fs::create_dir_all(cfg.run_dir.join("reports"))?;
        cgroup::sweep()?;
        sweep_reports(&cfg.run_dir.join("reports"));
        let images = ImageStore::open(&cfg.images, cfg.id_base)?;
        Ok(Sandbox {
            cfg,
            images,
            seq: AtomicU64::new(0),
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Start a task. `stdin` is a file, a pipe or null.
    pub fn spawn(&self, spec: &TaskSpec, stdin: Stdio) -> io::Result<Running> {
        for b in &spec.binds {
            spec::check_inside(&b.inside).map_err(io::Error::other)?;
        }
        let image = self.images.resolve(&spec.image)?;
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let report = helper::report_path(&self.cfg.run_dir.join("reports"), &name);
        let args = helper::HelperArgs {
            spec: spec.clone(),
            name,
            image_root: image.root,
            host_dirs: image.host_dirs,
            read_only_root: image.read_only_root,
            mount_dir: self.cfg.run_dir.join("mnt"),
            report: report.clone(),
            id_base: self.cfg.id_base,
            parent_pid: std::process::id() as i32,
        };
        let json = serde_json::to_string(&args).map_err(io::Error::other)?;
        let child = Command::new(&self.cfg.helper)
            .arg(HELPER_ARG)
            .arg(json)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_clear()
            .spawn()?;
        let mut r = Running {
            stdout: None,
            stderr: None,
            child,
            report,
            done: false,
        };
        r.stdout = r.child.stdout.take();
        r.stderr = r.child.stderr.take();
        Ok(r)
    }

    /// Run a task to the end, keeping at most `cap` bytes of stdout (more stops the task) and of
    /// stderr (more is dropped).
    pub async fn run(&self, spec: &TaskSpec, stdin: Stdio, cap: usize) -> io::Result<Captured> {
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
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// The helper's pid (for tests that kill it).
    pub fn helper_pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Wait for the end and read the report.
    pub async fn wait(mut self) -> io::Result<Report> {
        let status = self.child.wait().await?;
        self.done = true;
        let report = match std::fs::read(&self.report) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(_) => Report {
                error: Some(format!("sandbox helper ended without a report ({status})")),
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
