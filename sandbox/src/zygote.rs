//! The zygote: one small single-threaded process per [`super::Sandbox`] (`mobula
//! __sandbox-zygote`, exec'd once), which forks a helper per task on request. Forking a warm,
//! single-threaded process costs a fraction of exec'ing the binary again, and no Rust code of
//! the caller's multi-threaded process ever runs after a `fork`.
//!
//! Protocol over a socketpair (the zygote's stdin): the caller sends `u32 length + JSON`
//! ([`super::helper::HelperArgs`]) with the task's stdin, stdout, stderr and a lifeline attached
//! (`SCM_RIGHTS`); the zygote forks, answers with a pidfd of the helper (`SCM_RIGHTS`, one byte
//! of payload: 1 ok, 0 failed) and closes its copies of the descriptors. The zygote reaps its
//! children (SIGCHLD via signalfd) and exits when the caller's end closes; helpers die with it
//! (`PDEATHSIG`), and their tasks with them.
//!
//! Network namespaces are pooled here: creating and (asynchronously) destroying one costs about
//! 2 ms of CPU, the largest single item of a spawn. Each helper gets a namespace no running task
//! uses; it comes back to the pool when the helper has been reaped, i.e. when every process of
//! the task is gone — and with them every socket the task had, which is all an unprivileged
//! task can put in a namespace: the pool's namespaces belong to the host's user namespace, so a
//! task holds no capability over them (no addresses, routes, sysctls or firewall rules). Each
//! holds only `lo`, up.

#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

pub use super::sys::ZYGOTE_ARG;
use super::sys::{recv_with_fds, send_with_fds};

const MAX_REQUEST: usize = 1 << 20;

/// The caller's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    sock: Mutex<UnixStream>,
    child: std::process::Child,
}

impl Zygote {
    /// Start the zygote from the `mobula` binary at `bin`.
    pub fn start(bin: &Path) -> io::Result<Zygote> {
        let (ours, theirs) = UnixStream::pair()?;
        let child = Command::new(bin)
            .arg(ZYGOTE_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .env_clear()
            .spawn()?;
        Ok(Zygote {
            sock: Mutex::new(ours),
            child,
        })
    }

    /// Fork a helper running `args` with the given stdin, stdout, stderr and lifeline (fd 3: its
    /// write end closes when the helper and everything it started are gone); returns its pidfd.
    pub fn spawn(&self, args: &[u8], stdio: [&OwnedFd; 4]) -> io::Result<OwnedFd> {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let mut msg = (args.len() as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(args);
        let fds = stdio.map(|f| f.as_raw_fd());
        send_with_fds(sock.as_raw_fd(), &msg[..4], &fds)?;
        (&*sock).write_all(&msg[4..])?;
        let mut ok = [0u8; 1];
        let (n, mut fds) = recv_with_fds(sock.as_raw_fd(), &mut ok)?;
        match (n, ok[0], fds.pop()) {
            (1, 1, Some(pidfd)) => Ok(pidfd),
            (0, _, _) => Err(io::Error::other("the sandbox zygote exited")),
            _ => Err(io::Error::other("the sandbox zygote could not fork")),
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing our end makes the zygote exit; reap it so no zombie stays behind.
        if let Ok(s) = self.sock.get_mut() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let _ = self.child.wait();
    }
}

/// The zygote process's main loop. Returns its exit code.
pub fn main() -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if mask.thread_block().is_err() {
        return 2;
    }
    // SAFETY: drop whatever descriptors the caller leaked to us (keep stdin = socket, stderr).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let flags =
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK;
    let Ok(sigfd) = SignalFd::with_flags(&mask, flags) else {
        return 2;
    };
    // SAFETY: fd 0 is the socketpair end the caller gave us.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    let mut pool = NetPool::default();
    // Work every helper would repeat, done once here and inherited through fork.
    super::cgroup::warm();
    let _ = super::seccomp::program();
    loop {
        let Ok(ready) = super::sys::poll2([0, sigfd.as_raw_fd()], -1) else {
            continue;
        };
        if ready[1] {
            while sigfd.read_signal().ok().flatten().is_some() {}
            pool.reap();
        }
        if ready[0] && !serve_one(&sock, &mut pool) {
            return 0;
        }
    }
}

/// Empty network namespaces: free ones, and the ones lent to live helpers.
#[derive(Default)]
struct NetPool {
    free: Vec<OwnedFd>,
    lent: std::collections::HashMap<i32, OwnedFd>,
}

impl NetPool {
    fn take(&mut self) -> io::Result<OwnedFd> {
        if let Some(ns) = self.free.pop() {
            return Ok(ns);
        }
        let home = std::fs::File::open("/proc/self/ns/net")?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let made = super::lockdown::loopback_up()
            .map_err(io::Error::other)
            .and_then(|()| std::fs::File::open("/proc/self/ns/net"));
        nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(made?.into())
    }

    fn reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let Some(pid) = s.pid() else { break };
            if s == WaitStatus::StillAlive {
                break;
            }
            if let Some(ns) = self.lent.remove(&pid.as_raw()) {
                self.free.push(ns);
            }
        }
    }
}

/// Handle one request. False when the caller has gone.
fn serve_one(sock: &UnixStream, pool: &mut NetPool) -> bool {
    let mut len = [0u8; 4];
    let (n, stdio) = match recv_with_fds(sock.as_raw_fd(), &mut len) {
        Ok(r) => r,
        Err(_) => return false,
    };
    if n == 0 {
        return false;
    }
    let len = u32::from_le_bytes(len) as usize;
    let mut args = vec![0u8; len.min(MAX_REQUEST)];
    if n != 4 || len > MAX_REQUEST || (&*sock).read_exact(&mut args).is_err() || stdio.len() != 4 {
        return false;
    }
    let zygote = std::process::id() as i32;
    let Ok(netns) = pool.take() else {
        return send_with_fds(sock.as_raw_fd(), &[0], &[]).is_ok();
    };
    // SAFETY: this process is single-threaded; the child runs the helper and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            for (i, fd) in stdio.iter().enumerate() {
                let _ = nix::unistd::dup2(fd.as_raw_fd(), i as RawFd);
            }
            let _ = nix::unistd::dup2(netns.as_raw_fd(), 4);
            // SAFETY: closes everything above the lifeline and the namespace (socket, signalfd,
            // received copies, the pool's other namespaces).
            unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) };
            std::mem::forget(netns);
            // SAFETY: fd 4 is the namespace descriptor just duplicated there.
            let netns = unsafe { OwnedFd::from_raw_fd(4) };
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGCHLD);
            let _ = mask.thread_unblock();
            let code = super::helper::main(&String::from_utf8_lossy(&args), zygote, netns);
            // SAFETY: leave without running the zygote's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(stdio);
            pool.lent.insert(child.as_raw(), netns);
            let reply = super::sys::pidfd_open(child);
            match reply {
                Ok(pidfd) => send_with_fds(sock.as_raw_fd(), &[1], &[pidfd.as_raw_fd()]).is_ok(),
                Err(_) => send_with_fds(sock.as_raw_fd(), &[0], &[]).is_ok(),
            }
        }
        Err(_) => {
            pool.free.push(netns);
            send_with_fds(sock.as_raw_fd(), &[0], &[]).is_ok()
        }
    }
}
