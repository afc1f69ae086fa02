//! The sandbox helper: a single-threaded process forked by the [`super::zygote`] for one task,
//! never by the caller's multi-threaded runtime. It owns the task from start to end:
//!
//! 1. dies with its parent (`PR_SET_PDEATHSIG`), blocks SIGTERM/SIGINT/SIGHUP into a signalfd;
//! 2. creates the task's cgroups and writes the limits;
//! 3. unshares a private mount namespace (real root), builds the root ([`super::mounts::build_root`])
//!    and pivots into it, dropping every host mount ([`super::mounts::pivot_into`]); the host paths it
//!    still needs (cgroup files, the report directory) are kept as open descriptors;
//! 4. enters the empty network namespace the zygote handed it, `clone`s pid 1 of the task into
//!    new user, mount, pid, ipc and uts namespaces, writes
//!    its uid/gid maps (task root = the dedicated host range), puts it in the cgroups, then lets
//!    it go ([`super::child`]);
//! 5. waits on a pidfd, the signalfd and the wall clock; on timeout or signal kills pid 1 (the
//!    kernel then kills everything in the pid namespace) and the cgroups;
//! 6. reads the cgroup statistics, removes the cgroups, writes the [`Report`] file, exits. Its
//!    mounts vanish with its mount namespace; no host directory was created for the task.

#![allow(unsafe_code)]

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sched::{clone, unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{getppid, Pid};
use serde::{Deserialize, Serialize};

use super::cgroup::Cgroups;
use super::mounts::{build_root, pivot_into, RootPlan};
use super::spec::{Report, TaskSpec};
use super::sys::{pidfd_open, poll2};
use super::{child, seccomp};

/// Everything the helper needs, passed as one JSON argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperArgs {
    pub spec: TaskSpec,
    /// Unique task name (cgroup leaf suffix).
    pub name: String,
    pub image_root: PathBuf,
    pub host_dirs: Vec<String>,
    pub read_only_root: bool,
    /// Mount point for the scratch tmpfs (shared by all helpers, each in its own namespace).
    pub mount_dir: PathBuf,
    /// Where the report is written (atomically) before the helper exits.
    pub report: PathBuf,
    /// First host uid/gid of the range the task's ids map to (65,536 ids).
    pub id_base: u32,
    /// A group container ([`crate::group`]): fd 0 is the caller's control socket, and tasks
    /// come over it; `spec` gives the image, the group's binds and limits, not a program.
    #[serde(default)]
    pub group: bool,
}

/// Entry point, in a fresh fork of the zygote (pid `zygote`). Returns the exit code.
pub fn main(json: &str, zygote: i32, netns: OwnedFd) -> i32 {
    let args: HelperArgs = match serde_json::from_str(json) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mobula sandbox helper: bad arguments: {e}");
            return 2;
        }
    };
    let t0 = Instant::now();
    // The report directory, reachable after the pivot through this descriptor.
    let (Some(dir), Some(file)) = (args.report.parent(), args.report.file_name()) else {
        return 2;
    };
    let Ok(dir) = fs::File::open(dir) else {
        return 3;
    };
    let report_path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(file);
    let mut report = Report::default();
    if let Err(e) = run(&args, &mut report, t0, zygote, netns) {
        report.error = Some(e);
    }
    if args.group {
        // A group's tasks were reported over its control socket; no one reads a file (and one
        // written after the caller dropped the group would be left behind).
        return 0;
    }
    let tmp = report_path.with_extension("tmp");
    let body = serde_json::to_vec(&report).unwrap_or_default();
    if fs::write(&tmp, body)
        .and_then(|()| fs::rename(&tmp, &report_path))
        .is_err()
    {
        return 3;
    }
    0
}

fn set_pdeathsig() -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn run(
    a: &HelperArgs,
    report: &mut Report,
    t0: Instant,
    zygote: i32,
    netns: OwnedFd,
) -> Result<(), String> {
    set_pdeathsig()?;
    if getppid().as_raw() != zygote {
        return Err("the zygote exited before the helper started".into());
    }
    // The task's empty network namespace (pooled by the zygote; see there).
    nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns net: {e}"))?;
    drop(netns);
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| format!("sigmask: {e}"))?;
    let sigfd = SignalFd::new(&mask).map_err(|e| format!("signalfd: {e}"))?;
    let prog = seccomp::program()?;

    let name = format!("h{}-{}", std::process::id(), a.name);
    let mut cg = Cgroups::create(&name, &a.spec.limits).map_err(|e| format!("cgroups: {e}"))?;
    let result = run_in_cgroup(a, report, t0, &mut cg, &sigfd, prog);
    let t_down = Instant::now();
    let stats = cg.stats();
    report.memory_peak = stats.memory_peak;
    report.oom_killed = stats.oom_killed;
    report.pids_limit_hit = stats.pids_limit_hit;
    let destroyed = cg.destroy().map_err(|e| format!("cgroup teardown: {e}"));
    report.teardown_us += t_down.elapsed().as_micros() as u64;
    result.and(destroyed)
}

fn run_in_cgroup(
    a: &HelperArgs,
    report: &mut Report,
    t0: Instant,
    cg: &mut Cgroups,
    sigfd: &SignalFd,
    prog: &seccompiler::BpfProgram,
) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare mount ns: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    let plan = RootPlan {
        image: &a.image_root,
        host_dirs: &a.host_dirs,
        read_only_root: a.read_only_root,
        owner: a.id_base,
        disk_mib: a.spec.limits.disk_mib,
        binds: &a.spec.binds,
    };
    let layout = build_root(&a.mount_dir, &plan).map_err(|e| format!("root: {e}"))?;
    // Host paths the helper still needs are reached through descriptors once it has pivoted.
    let scratch = fs::File::open(&layout.scratch).map_err(|e| format!("scratch: {e}"))?;
    cg.pin().map_err(|e| format!("cgroups: {e}"))?;
    pivot_into(&layout.root).map_err(|e| format!("pivot: {e}"))?;
    if a.group {
        return crate::group::helper::serve(a, report, cg, sigfd, prog, &scratch);
    }

    let (sync_r, sync_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (sync_fd, status_fd) = (sync_r.as_raw_fd(), status_w.as_raw_fd());
    let started = start_pid1(
        Box::new(move || child::pid1(&a.spec, sync_fd, status_fd, prog)),
        a.id_base,
        cg,
        sync_w,
        false,
    );
    drop(sync_r);
    drop(status_w);
    report.setup_us = t0.elapsed().as_micros() as u64;
    let t_run = Instant::now();
    let pid1 = started?;
    let ended = wait(pid1, sigfd, a.spec.limits.timeout_ms, report)?;
    report.run_us = t_run.elapsed().as_micros() as u64;
    let t_down = Instant::now();
    if !ended {
        let _ = kill(pid1, Signal::SIGKILL);
    }
    reap(pid1);
    let mut status = String::new();
    let mut f = fs::File::from(status_r);
    let _ = f.read_to_string(&mut status);
    child::parse_status(&status, report)?;
    if let Ok(s) = nix::sys::statvfs::fstatvfs(&scratch) {
        report.disk_full = s.blocks_available() == 0;
    }
    report.teardown_us = t_down.elapsed().as_micros() as u64;
    Ok(())
}

/// Clone pid 1 of a container running `body` into new user, mount, pid, ipc and uts
/// namespaces, map its ids to the dedicated range from `id_base`, put it in the cgroups, and
/// release it (a byte on `sync_w`, which `body` waits for). `oom_protect`: the OOM killer spares
/// pid 1 (a task group's, which must report its task's OOM kill). A failure after the clone
/// kills and reaps pid 1.
pub(crate) fn start_pid1(
    body: nix::sched::CloneCb<'_>,
    id_base: u32,
    cg: &Cgroups,
    sync_w: OwnedFd,
    oom_protect: bool,
) -> Result<Pid, String> {
    let mut stack = vec![0u8; 1 << 20];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // SAFETY: the helper is single-threaded, so the child (a copy of this process, no shared
    // memory) cannot inherit a lock held by another thread; it runs `body` only.
    let pid1 = unsafe { clone(body, &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| format!("clone: {e}"))?;
    let released = (|| {
        let map = format!("0 {id_base} 65536\n");
        fs::write(format!("/proc/{pid1}/uid_map"), &map).map_err(|e| format!("uid_map: {e}"))?;
        fs::write(format!("/proc/{pid1}/gid_map"), &map).map_err(|e| format!("gid_map: {e}"))?;
        if oom_protect {
            let _ = fs::write(format!("/proc/{pid1}/oom_score_adj"), "-1000");
        }
        cg.add(pid1.as_raw())
            .map_err(|e| format!("join cgroups: {e}"))?;
        nix::unistd::write(&sync_w, b"g").map_err(|e| format!("release pid 1: {e}"))
    })();
    if let Err(e) = released {
        let _ = kill(pid1, Signal::SIGKILL);
        reap(pid1);
        return Err(e);
    }
    Ok(pid1)
}

pub(crate) fn reap(pid: Pid) {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// Wait until pid 1 exits (true), or the clock or a signal says stop (false; flags set).
fn wait(pid1: Pid, sigfd: &SignalFd, timeout_ms: u64, report: &mut Report) -> Result<bool, String> {
    let pidfd = pidfd_open(pid1)?;
    let deadline =
        (timeout_ms > 0).then(|| Instant::now() + std::time::Duration::from_millis(timeout_ms));
    loop {
        let wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    report.timed_out = true;
                    return Ok(false);
                }
                (left.as_millis().min(i32::MAX as u128) as i32).max(1)
            }
            None => -1,
        };
        let ready = match poll2([pidfd.as_raw_fd(), sigfd.as_raw_fd()], wait_ms) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        };
        if ready[0] {
            return Ok(true);
        }
        if ready[1] {
            report.cancelled = true;
            return Ok(false);
        }
    }
}

/// Where a helper's report goes for task `name`.
pub fn report_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}
