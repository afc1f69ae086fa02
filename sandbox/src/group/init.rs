//! pid 1 of a group container: the container's init for its whole life. After the same set-up
//! as a single task's pid 1 (`child::enter`) it serves one task at a time from the
//! helper, over a `SOCK_SEQPACKET` socket: a message is the task's [`TaskSpec`] (JSON; argv,
//! env, cwd, open-file limit) with its stdin, stdout and stderr attached; pid 1 starts the task
//! on those descriptors (closing its own copies at once), reaps until the task has exited,
//! SIGKILLs everything else in the pid namespace (`kill(-1)`: a task's background processes)
//! and reaps until no process but itself is left, and only then answers with the status line
//! of [`crate::child::parse_status`]. The socket's end (the helper gone) ends pid 1, and with
//! it the namespace.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::child::{enter, null_stdio, reap_all, start, Prepared};
use crate::lockdown::close_all_but;
use crate::spec::TaskSpec;
use crate::sys::{recv_with_fds, send_with_fds};

/// Largest task message (a [`TaskSpec`] as JSON).
pub(crate) const MAX_MESSAGE: usize = 256 << 10;

/// Body of the cloned pid 1 of a group. Returns its exit code.
pub fn pid1(sync_fd: RawFd, ctl: RawFd, prog: &seccompiler::BpfProgram) -> isize {
    close_all_but(&[sync_fd, ctl]);
    // fds 0..2 are copies of the helper's (its control socket among them): never the tasks'.
    null_stdio();
    if let Err(e) = enter(sync_fd) {
        let _ = send_with_fds(ctl, format!("err {e}\n").as_bytes(), &[]);
        return 1;
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, fds) = match recv_with_fds(ctl, &mut buf) {
            Ok((0, _)) | Err(_) => return 0,
            Ok(r) => r,
        };
        let line = match run_one(&buf[..n], fds, prog) {
            Ok((status, utime, stime)) => format!("ok {status} {utime} {stime}\n"),
            Err(e) => format!("err {e}\n"),
        };
        if send_with_fds(ctl, line.as_bytes(), &[]).is_err() {
            return 0;
        }
    }
}

fn run_one(
    msg: &[u8],
    fds: Vec<OwnedFd>,
    prog: &seccompiler::BpfProgram,
) -> Result<(i32, u64, u64), String> {
    let spec: TaskSpec = serde_json::from_slice(msg).map_err(|e| format!("bad task: {e}"))?;
    let [i, o, e] = fds.as_slice() else {
        return Err("a task needs stdin, stdout and stderr".into());
    };
    let prepared = Prepared::new(&spec, Some([i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()]))?;
    let task = start(&prepared, prog)?;
    // Only the task's tree holds its streams from here on.
    drop(fds);
    reap_all(task)
}
