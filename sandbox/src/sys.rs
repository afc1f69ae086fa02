//! Small system-call wrappers shared by the zygote, the helper and the sandbox handle: pidfds
//! and a two-descriptor poll. They depend on nothing else in the crate, so the zygote, helper
//! and cgroup modules need not import each other for them.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

/// The argument that turns the `mobula` binary into a zygote.
pub const ZYGOTE_ARG: &str = "__sandbox-zygote";

/// A pidfd for `pid`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    // SAFETY: plain system call; the returned descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Wait until either descriptor is readable (or hung up), at most `timeout_ms` (-1: forever).
pub fn poll2(fds: [RawFd; 2], timeout_ms: i32) -> std::io::Result<[bool; 2]> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `p` is a valid array of two pollfd for the duration of the call.
    if unsafe { libc::poll(p.as_mut_ptr(), 2, timeout_ms) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok([p[0].revents != 0, p[1].revents != 0])
}

/// Send `sig` to the process behind `pidfd` (never a recycled pid).
pub fn pidfd_signal(pidfd: &OwnedFd, sig: i32) {
    // SAFETY: plain system call on a descriptor we own.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}
