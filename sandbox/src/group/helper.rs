//! The helper of a group container (after the root is built and pivoted into, as for a single
//! task — see [`crate::helper`]): it clones pid 1 ([`super::init`]) into the container's
//! namespaces, then serves the caller's tasks one at a time until the caller closes its control
//! socket (fd 0), a signal says stop, or a task fails in a way that leaves the container
//! unusable. For each task:
//!
//! 1. note the cgroup's counters ([`Cgroups::mark`]) for the task's own statistics;
//! 2. replace `/manta` in the container's mount namespace: a short-lived child of the helper
//!    enters it (`setns` on pid 1's pidfd), detaches the previous task's `/manta`, mounts a
//!    fresh read-only tmpfs there and attaches the task's inputs — detached read-only mounts
//!    the caller made with `open_tree` and sent along (`sys::move_mount_here`);
//! 3. pass the task (spec and stdio) to pid 1 and wait for its status, pid 1's end, a signal or
//!    the task's wall clock; on timeout or signal pid 1 is killed, which ends the container;
//! 4. answer the caller with the task's [`Report`].

#![allow(unsafe_code)]

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::init::MAX_MESSAGE;
use crate::cgroup::Cgroups;
use crate::child::parse_status;
use crate::helper::{pipe, reap, start_pid1, HelperArgs};
use crate::spec::{Report, TaskSpec};
use crate::sys::{
    move_mount_here, pidfd_open, poll_any, recv_with_fds, send_with_fds, spawn_sharing_memory,
};

/// One task, from the caller to the helper. Attached: stdin, stdout, stderr, then one detached
/// mount per entry of `inputs`, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupTask {
    /// argv, env, cwd, `limits.timeout_ms` and `limits.nofile` are used; binds are `inputs`.
    pub spec: TaskSpec,
    /// Where each input goes (below `/manta`) and whether it is a directory.
    pub inputs: Vec<(String, bool)>,
}

/// Fd 0 of a group's helper: the caller's end of the control socket.
const CTL: RawFd = 0;

/// Serve the group's tasks (see the module doc).
pub(crate) fn serve(
    a: &HelperArgs,
    report: &mut Report,
    cg: &mut Cgroups,
    sigfd: &SignalFd,
    prog: &seccompiler::BpfProgram,
    scratch: &fs::File,
) -> Result<(), String> {
    let (sync_r, sync_w) = pipe()?;
    let (ours, theirs) = crate::sys::seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (sync_fd, ctl_fd) = (sync_r.as_raw_fd(), theirs.as_raw_fd());
    // A task's OOM kill (memory.oom.group kills the cgroup) leaves pid 1 to report it.
    let pid1 = start_pid1(
        Box::new(move || super::init::pid1(sync_fd, ctl_fd, prog)),
        a.id_base,
        cg,
        sync_w,
        true,
    )?;
    drop((sync_r, theirs));
    let pidfd = match pidfd_open(pid1) {
        Ok(p) => p,
        Err(e) => {
            let _ = kill(pid1, Signal::SIGKILL);
            reap(pid1);
            return Err(e);
        }
    };
    let mut g = Served {
        pid1,
        pidfd,
        sock: ours,
        cg,
        sigfd,
        scratch,
        manta: false,
    };
    let result = g.serve_all();
    report.cancelled = matches!(result, Err(End::Signal));
    let _ = kill(pid1, Signal::SIGKILL);
    reap(pid1);
    match result {
        Err(End::Failed(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Why serving stopped (other than the caller closing, which is `Ok`).
enum End {
    /// A signal (or the caller gone mid-task): cancelled.
    Signal,
    /// The sandbox itself failed.
    Failed(String),
    /// The task ended the container (timeout, OOM): reported, no more tasks.
    Over,
}

struct Served<'a> {
    pid1: Pid,
    pidfd: OwnedFd,
    /// The helper's end of pid 1's socket.
    sock: OwnedFd,
    cg: &'a Cgroups,
    sigfd: &'a SignalFd,
    scratch: &'a fs::File,
    /// A tmpfs of ours is mounted on the container's `/manta`.
    manta: bool,
}

impl Served<'_> {
    fn serve_all(&mut self) -> Result<(), End> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let ready = self.poll(&[CTL], -1)?;
            if !ready[0] {
                continue;
            }
            let (n, fds) = match recv_with_fds(CTL, &mut buf) {
                Ok((0, _)) | Err(_) => return Ok(()),
                Ok(r) => r,
            };
            let mut r = Report::default();
            let go_on = match serde_json::from_slice::<GroupTask>(&buf[..n]) {
                Ok(t) => self.run(&t, fds, &mut r),
                Err(e) => Err(End::Failed(format!("bad task: {e}"))),
            };
            if let Err(End::Failed(e)) = &go_on {
                r.error = Some(e.clone());
            }
            r.cancelled |= matches!(go_on, Err(End::Signal));
            let body = serde_json::to_vec(&r).unwrap_or_default();
            if send_with_fds(CTL, &body, &[]).is_err() {
                return Ok(());
            }
            go_on?;
        }
    }

    /// Poll `fds` plus pid 1's pidfd and the signalfd: a signal or pid 1's end is an `End`.
    fn poll(&self, fds: &[RawFd], timeout_ms: i32) -> Result<Vec<bool>, End> {
        let mut all = fds.to_vec();
        all.extend([self.pidfd.as_raw_fd(), self.sigfd.as_raw_fd()]);
        let ready = match poll_any(&all, timeout_ms) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => vec![false; all.len()],
            Err(e) => return Err(End::Failed(format!("poll: {e}"))),
        };
        if ready[fds.len() + 1] {
            return Err(End::Signal);
        }
        if ready[fds.len()] && !ready[..fds.len()].iter().any(|&r| r) {
            return Err(End::Failed("the container's init ended".into()));
        }
        Ok(ready[..fds.len()].to_vec())
    }

    /// One task. `Ok` when the container may take another.
    fn run(&mut self, t: &GroupTask, fds: Vec<OwnedFd>, r: &mut Report) -> Result<(), End> {
        let t0 = Instant::now();
        if fds.len() != 3 + t.inputs.len() {
            return Err(End::Failed("wrong number of descriptors".into()));
        }
        let mark = self.cg.mark();
        let (stdio, mounts) = fds.split_at(3);
        self.mount_inputs(&t.inputs, mounts).map_err(End::Failed)?;
        let mut spec = t.spec.clone();
        spec.binds.clear();
        let msg = serde_json::to_vec(&spec).map_err(|e| End::Failed(e.to_string()))?;
        let raw: Vec<RawFd> = stdio.iter().map(|f| f.as_raw_fd()).collect();
        send_with_fds(self.sock.as_raw_fd(), &msg, &raw)
            .map_err(|e| End::Failed(format!("to pid 1: {e}")))?;
        drop(fds);
        r.setup_us = t0.elapsed().as_micros() as u64;
        let t_run = Instant::now();
        let deadline = (spec.limits.timeout_ms > 0)
            .then(|| t_run + Duration::from_millis(spec.limits.timeout_ms));
        let line = loop {
            let wait_ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        r.timed_out = true;
                        break None;
                    }
                    (left.as_millis().min(i32::MAX as u128) as i32).max(1)
                }
                None => -1,
            };
            // The caller never writes during a task: its socket readable means it has gone.
            match self.poll(&[self.sock.as_raw_fd(), CTL], wait_ms) {
                Ok(ready) if ready[1] && !ready[0] => {
                    r.cancelled = true;
                    break None;
                }
                Ok(ready) if ready[0] => {
                    let mut b = [0u8; 256];
                    let n = nix::unistd::read(self.sock.as_raw_fd(), &mut b).unwrap_or(0);
                    break Some(String::from_utf8_lossy(&b[..n]).into_owned());
                }
                Ok(_) => {}
                Err(End::Signal) => {
                    r.cancelled = true;
                    break None;
                }
                Err(_) => break None,
            }
        };
        r.run_us = t_run.elapsed().as_micros() as u64;
        let stats = self.cg.stats_since(&mark);
        r.memory_peak = stats.memory_peak;
        r.oom_killed = stats.oom_killed;
        r.pids_limit_hit = stats.pids_limit_hit;
        if let Ok(s) = nix::sys::statvfs::fstatvfs(self.scratch) {
            r.disk_full = s.blocks_available() == 0;
        }
        let Some(line) = line else {
            // Timeout, cancel, or pid 1 gone (an OOM kill can take it too): the container ends.
            let _ = kill(self.pid1, Signal::SIGKILL);
            if r.oom_killed && !r.timed_out && !r.cancelled {
                r.signal = Some(libc::SIGKILL);
            } else {
                parse_status("", r).map_err(End::Failed)?;
            }
            return Err(if r.cancelled { End::Signal } else { End::Over });
        };
        parse_status(&line, r).map_err(End::Failed)?;
        Ok(())
    }

    /// Step 2 of the module doc, in a child sharing the helper's memory
    /// ([`crate::sys::spawn_sharing_memory`]; `setns` changes the caller's mounts, so not the
    /// helper itself, and needs the child's own `fs_struct`, which it has). A forked copy of the
    /// helper's address space cost a page-table copy, copy-on-write faults and its tear-down
    /// at exit on every task — ~6% of all CPU in a job of tiny tasks.
    fn mount_inputs(
        &mut self,
        inputs: &[(String, bool)],
        mounts: &[OwnedFd],
    ) -> Result<(), String> {
        for (inside, _) in inputs {
            crate::spec::check_inside(inside)?;
            if !inside.starts_with("/manta/") {
                return Err(format!("{inside}: a group task's inputs go below /manta"));
            }
        }
        let (err_r, err_w) = pipe()?;
        let replace = self.manta;
        let pidfd = &self.pidfd;
        let child = spawn_sharing_memory(|| {
            let code = match place(pidfd, replace, inputs, mounts) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = nix::unistd::write(&err_w, e.as_bytes());
                    1
                }
            };
            // SAFETY: leave at once: the helper's destructors are the helper's to run.
            unsafe { libc::_exit(code) }
        })
        .map_err(|e| format!("clone: {e}"))?;
        drop(err_w);
        reap(child);
        let mut msg = String::new();
        let _ = std::io::Read::read_to_string(&mut fs::File::from(err_r), &mut msg);
        self.manta = true;
        if msg.is_empty() {
            Ok(())
        } else {
            Err(format!("inputs: {msg}"))
        }
    }
}

/// In the container's mount namespace: a fresh read-only `/manta` holding only `inputs`.
fn place(
    pid1: &OwnedFd,
    replace: bool,
    inputs: &[(String, bool)],
    mounts: &[OwnedFd],
) -> Result<(), String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::setns(pid1, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns: {e}"))?;
    let manta = Path::new("/manta");
    if replace {
        umount2(manta, MntFlags::MNT_DETACH).map_err(|e| format!("detach /manta: {e}"))?;
    }
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("mobula-inputs"),
        manta,
        Some("tmpfs"),
        base,
        Some("size=64k,nr_inodes=1024,mode=0755"),
    )
    .map_err(|e| format!("mount /manta: {e}"))?;
    for ((inside, dir), fd) in inputs.iter().zip(mounts) {
        let (parent, _) = inside.rsplit_once('/').unwrap_or(("", inside));
        crate::mounts::mkdirs_nofollow(Path::new("/"), parent).map_err(|e| e.to_string())?;
        let target = Path::new(inside);
        if *dir {
            fs::create_dir(target)
        } else {
            fs::File::create(target).map(drop)
        }
        .map_err(|e| format!("{inside}: {e}"))?;
        move_mount_here(fd.as_raw_fd(), target).map_err(|e| format!("{inside}: {e}"))?;
    }
    mount(
        None::<&str>,
        manta,
        None::<&str>,
        base | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("read-only /manta: {e}"))
}
