//! Task groups (SPEC §5): one container serves successive tasks of one job phase on a node.
//!
//! [`Sandbox::group`] starts a container from a [`TaskSpec`] that gives its image, the binds
//! shared by every task (assets, tools) and its limits; [`Group::spawn`] then runs one task in
//! it at a time, with its own argv, environment, stdin/stdout/stderr, wall clock and inputs.
//!
//! What carries over between the tasks of a group: `/tmp` and whatever else the task may write
//! in the container's root (scratch space), nothing else. Before a task starts, every process
//! of the previous one is gone (pid 1 kills and reaps the whole pid namespace — see [`init`])
//! and `/manta` holds only the new task's inputs (a fresh tmpfs with them attached — see
//! [`helper`]). The container's cgroup limits every task; statistics (peak memory, CPU, limit
//! events) are per task. A timeout, a cancel or an OOM kill ends the container with its task;
//! the caller must not reuse a group whose task failed ([`Group::spawn`] does not stop it).
//! Dropping a [`Group`] (or [`Group::close`]) ends it: no process, mount or cgroup survives.

#![allow(unsafe_code)]

pub mod helper;
pub mod init;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::spec::{self, Report, TaskSpec};
use crate::sys::{self, open_tree_ro, recv_with_fds, send_with_fds};
use crate::{pipe_pair, stdin_fds, Input, Sandbox};
pub use helper::GroupTask;

/// A live group container.
#[derive(Debug)]
pub struct Group {
    ctl: AsyncFd<OwnedFd>,
    pidfd: OwnedFd,
    lifeline: pipe::Receiver,
    /// A task was spawned and its report not read yet.
    busy: bool,
    /// The helper said it ends (or is gone).
    over: bool,
    /// [`Group::cancel`] was called.
    cancelled: bool,
    /// Tasks run so far.
    pub tasks: u64,
}

/// The streams of a task running in a group.
#[derive(Debug)]
pub struct Streams {
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Sandbox {
    /// Start a group container for `spec`'s image, binds and limits (its argv is not run).
    pub fn group(&self, spec: &TaskSpec) -> io::Result<Group> {
        let name = format!(
            "{}-g{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let report = crate::helper::report_path(&self.cfg.run_dir.join("reports"), &name);
        let json = self.helper_args(spec, name, report, true)?;
        let (ours, theirs) = sys::seqpacket_pair()?;
        let null: OwnedFd = File::open("/dev/null")?.into();
        let (life_r, life_w) = pipe_pair()?;
        let pidfd = self.zygote.spawn(&json, [&theirs, &null, &null, &life_w])?;
        drop((theirs, null, life_w));
        nix::fcntl::fcntl(
            ours.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the OwnedFd moved in owns the socket; it is closed only when the AsyncFd,
        // and with it the registration, is dropped.
        let ctl = unsafe { AsyncFd::register(ours) }.map_err(|e| e.into_parts().1)?;
        Ok(Group {
            ctl,
            pidfd,
            lifeline: pipe::Receiver::from_owned_fd(life_r)?,
            busy: false,
            over: false,
            cancelled: false,
            tasks: 0,
        })
    }
}

impl Group {
    /// Run the next task: `spec`'s argv, env, cwd, `limits.timeout_ms` and `limits.nofile`; its
    /// binds are its inputs and must lie below `/manta` (the group's own binds were given at
    /// [`Sandbox::group`]). Then [`Group::wait`] for its report.
    pub fn spawn(&mut self, spec: &TaskSpec, stdin: Input) -> io::Result<Streams> {
        if self.busy || self.over {
            return Err(io::Error::other("this group is busy or over"));
        }
        let mut inputs = Vec::new();
        let mut mounts = Vec::new();
        for b in &spec.binds {
            spec::check_inside(&b.inside).map_err(io::Error::other)?;
            if !b.inside.starts_with("/manta/") || b.writable {
                return Err(io::Error::other(format!(
                    "{}: a group task's binds are read-only inputs below /manta",
                    b.inside
                )));
            }
            let host = std::path::Path::new(&b.host);
            inputs.push((b.inside.clone(), std::fs::metadata(host)?.is_dir()));
            mounts.push(open_tree_ro(host)?);
        }
        let task = GroupTask {
            spec: spec.clone(),
            inputs,
        };
        let json = serde_json::to_vec(&task).map_err(io::Error::other)?;
        let (stdin_fd, stdin_tx) = stdin_fds(stdin)?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let mut fds = vec![stdin_fd.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        fds.extend(mounts.iter().map(|m| m.as_raw_fd()));
        send_with_fds(self.ctl.get_ref().as_raw_fd(), &json, &fds)?;
        self.busy = true;
        self.tasks += 1;
        Ok(Streams {
            stdin: stdin_tx.map(pipe::Sender::from_owned_fd).transpose()?,
            stdout: Some(pipe::Receiver::from_owned_fd(out_r)?),
            stderr: Some(pipe::Receiver::from_owned_fd(err_r)?),
        })
    }

    /// The report of the task last spawned. After a report with an error, a timeout, a cancel
    /// or an OOM kill, the group is over ([`Group::is_over`]).
    pub async fn wait(&mut self) -> io::Result<Report> {
        if !self.busy {
            return Err(io::Error::other("no task is running in this group"));
        }
        let mut buf = vec![0u8; 64 << 10];
        let n = loop {
            let mut guard = self.ctl.readable().await?;
            match guard
                .try_io(|fd| recv_with_fds(fd.get_ref().as_raw_fd(), &mut buf).map(|(n, _)| n))
            {
                Ok(r) => break r,
                Err(_would_block) => continue,
            }
        };
        self.busy = false;
        let report = match n {
            Ok(n) if n > 0 => serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?,
            // Cancelled before the helper took the task: it never ran.
            _ if self.cancelled => Report {
                cancelled: true,
                ..Default::default()
            },
            _ => Report {
                error: Some("the group's helper ended without a report".into()),
                ..Default::default()
            },
        };
        let r: &Report = &report;
        if r.error.is_some() || r.timed_out || r.cancelled || r.oom_killed {
            self.over = true;
        }
        Ok(report)
    }

    /// True once the container cannot take another task.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Stop the running task and end the container (its report says cancelled).
    pub fn cancel(&mut self) {
        self.over = true;
        self.cancelled = true;
        sys::pidfd_signal(&self.pidfd, libc::SIGTERM);
    }

    /// The helper's pid (for tests).
    pub fn helper_pid(&self) -> Option<u32> {
        crate::pid_of(&self.pidfd)
    }

    /// End the container and wait until every process of it is gone.
    pub async fn close(mut self) {
        let _ = nix::sys::socket::shutdown(
            self.ctl.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        let mut buf = [0u8; 16];
        while matches!(self.lifeline.read(&mut buf).await, Ok(n) if n > 0) {}
    }
}
