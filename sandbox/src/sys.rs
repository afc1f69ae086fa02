//! Small system-call wrappers shared by the zygote, the helper and the sandbox handle: pidfds
//! and a two-descriptor poll. They depend on nothing else in the crate, so the zygote, helper
//! and cgroup modules need not import each other for them.

#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use nix::unistd::Pid;

/// The argument that turns the `mobula` binary into a zygote.
pub const ZYGOTE_ARG: &str = "__sandbox-zygote";

/// Run `body` in a child process that shares the caller's memory until it execs or exits
/// (`clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does): no page tables copied, no copied
/// address space torn down after. The child has its own fd table, cwd and root (`fs_struct`),
/// signal handlers and credentials (no `CLONE_FILES`/`CLONE_FS`/`CLONE_SIGHAND`), so what
/// `body` changes there is its own. The caller must be single-threaded: it stays suspended until
/// the child has exec'd or exited, so even the child's allocations keep the shared heap
/// consistent. `body` must exec or `_exit`, never return into the caller's destructors.
/// The child's stack is the calling thread's own, kept from one spawn to the next (the caller
/// is suspended while the child runs on it, so one spawn at a time uses it): not a fresh 256 KiB
/// zeroed — and so written — on each of a task group's spawns.
pub fn spawn_sharing_memory(body: impl FnMut() -> isize) -> nix::Result<Pid> {
    thread_local! {
        static STACK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        if stack.is_empty() {
            *stack = vec![0u8; 256 << 10];
        }
        let flags = nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK;
        // SAFETY: as documented above; the caller promises a single thread and a `body` that
        // only makes system calls (and allocations the suspended caller does not race), then
        // execs or exits. `CLONE_VFORK` returns only once the child no longer runs on `stack`.
        unsafe { nix::sched::clone(Box::new(body), &mut stack, flags, Some(libc::SIGCHLD)) }
    })
}

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

/// A detached, read-only (also nosuid, nodev, noexec) copy of the mount of `path` — a file or
/// a directory of the caller's mount namespace — ready to be attached in another namespace with
/// [`move_mount_here`] (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr`).
pub fn open_tree_ro(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: plain system call with a NUL-terminated path; the result is a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC
    let attr = MountAttr {
        set: 0x1 | 0x2 | 0x4 | 0x8,
        clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `attr` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Attach the detached mount `fd` at `target` in the current mount namespace.
pub fn move_mount_here(fd: RawFd, target: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let t = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: plain system call with NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Send `data` with descriptors attached (`SCM_RIGHTS`) in one message.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(sock, &[IoSlice::new(data)], cmsgs, MsgFlags::empty(), None)?;
    if n != data.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// Receive up to `buf.len()` bytes and any descriptors sent with them.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: descriptors just received are ours to own.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// Wait until any of `fds` is readable (or hung up), at most `timeout_ms` (-1: forever).
pub fn poll_any(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a valid array of pollfd for the duration of the call.
    if unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

/// A `SOCK_SEQPACKET` socket pair (close-on-exec): message boundaries and `SCM_RIGHTS`, and a
/// read of 0 bytes when the other end has closed.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}
