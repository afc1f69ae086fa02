//! What a task asks for ([`TaskSpec`], [`Limits`], [`Bind`]) and what it is told afterwards
//! ([`Report`]). Plain data, serialised as JSON between the caller and the sandbox helper process.

use serde::{Deserialize, Serialize};

/// `PATH` inside every sandbox unless the spec sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One task to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Program and arguments; `argv[0]` is looked up on the task's `PATH` inside the image.
    pub argv: Vec<String>,
    /// Extra environment (on top of `PATH`, `HOME`, `TMPDIR`, `LANG`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[serde(default = "default_cwd")]
    pub cwd: String,
    /// Image name; `host` is the node's own userland, read-only.
    #[serde(default = "default_image")]
    pub image: String,
    /// Host files or directories made visible read-only inside (inputs, assets, sockets).
    #[serde(default)]
    pub binds: Vec<Bind>,
    #[serde(default)]
    pub limits: Limits,
}

fn default_cwd() -> String {
    "/tmp".into()
}

fn default_image() -> String {
    "host".into()
}

impl TaskSpec {
    /// A task running `argv` in the host image with default limits.
    pub fn new(argv: Vec<String>) -> TaskSpec {
        TaskSpec {
            argv,
            env: Vec::new(),
            cwd: default_cwd(),
            image: default_image(),
            binds: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// A task running `bash -c CMD` (`sh -c` in images without bash is the caller's choice).
    pub fn shell(cmd: &str) -> TaskSpec {
        TaskSpec::new(vec!["bash".into(), "-c".into(), cmd.into()])
    }
}

/// A host path bound read-only at `inside`. A bind may be writable only when `writable` is set
/// (used for nothing a user controls).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub host: String,
    pub inside: String,
    #[serde(default)]
    pub writable: bool,
}

/// Resource limits of one task. Every one is enforced by the kernel, not by polling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (RSS + page cache + scratch, which is memory-backed), MiB; swap is not allowed.
    pub memory_mib: u64,
    /// Scratch space (the root's upper layer, `/tmp`, `/dev/shm`), MiB; beyond it writes get ENOSPC.
    pub disk_mib: u64,
    /// Most processes and threads alive at once.
    pub pids: u64,
    /// CPU time per wall-clock second, in cores (0.5 = half a core); 0 = no cap.
    pub cpu: f64,
    /// Wall clock, milliseconds; 0 = none.
    pub timeout_ms: u64,
    /// Open files per process.
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_mib: 1024,
            disk_mib: 1024,
            pids: 512,
            cpu: 0.0,
            timeout_ms: 0,
            nofile: 4096,
        }
    }
}

/// What happened to a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Exit status when the program exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    pub core_dumped: bool,
    /// The kernel's OOM killer acted inside the task's memory cgroup.
    pub oom_killed: bool,
    /// The wall-clock limit ran out and the task's tree was killed.
    pub timed_out: bool,
    /// Stopped from outside (cancel, shutdown).
    pub cancelled: bool,
    /// The process limit refused at least one fork.
    pub pids_limit_hit: bool,
    /// Scratch space was full when the task ended.
    pub disk_full: bool,
    /// CPU time of the whole tree, milliseconds.
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    /// Peak memory charged to the task's cgroup, bytes.
    pub memory_peak: u64,
    /// Microseconds: building the container; running the program; tearing down.
    pub setup_us: u64,
    pub run_us: u64,
    pub teardown_us: u64,
    /// Set when the sandbox itself failed (the task may not have run).
    pub error: Option<String>,
}

impl Report {
    /// True when the program ran and exited 0 with no limit hit.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.killed()
    }

    /// True when a limit, a timeout or a cancel ended the task (not the program itself).
    pub fn killed(&self) -> bool {
        self.oom_killed || self.timed_out || self.cancelled
    }

    /// The shell-style status: exit code, or 128 + signal.
    pub fn status_code(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 255,
        }
    }
}

/// Check an inside path: absolute, normal components only, not under `/proc` or `/dev`.
pub fn check_inside(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!(
            "{path:?}: bind targets must be absolute paths below /"
        ));
    }
    for c in path[1..].split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(format!("{path:?}: bad path component {c:?}"));
        }
    }
    let top = path[1..].split('/').next().unwrap_or_default();
    if matches!(top, "proc" | "dev" | "tmp") {
        return Err(format!("{path:?}: cannot bind over /{top}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_paths() {
        assert!(check_inside("/manta/a/stor/x.txt").is_ok());
        for bad in [
            "manta/x", "/", "/a//b", "/a/../b", "/./a", "/proc/x", "/dev/x", "/tmp", "/a\0b",
        ] {
            assert!(check_inside(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_codes() {
        let r = Report {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(r.status_code(), 137);
        assert!(!r.success());
    }
}
