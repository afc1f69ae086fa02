//! Process-level lockdown used inside the container: descriptor hygiene for pid 1, dropping
//! every capability — bounding and ambient behind locked securebits once in pid 1, effective,
//! permitted and inheritable in each task — and bringing up `lo` in a fresh network namespace
//! (the zygote).

#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Close every descriptor above stderr except `keep`: pid 1 holds nothing of the helper's
/// (cgroup and report directories, the scratch, signalfd, lifeline).
pub fn close_all_but(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = 3u32;
    for &k in &keep {
        let k = k as u32;
        if k > from {
            // SAFETY: closes descriptors this process does not use.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// Bring up `lo` in the current (new, otherwise empty) network namespace: 127.0.0.1 works
/// inside, and reaches nothing outside. Run by the zygote when it creates a namespace.
pub fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket and SIOC[GS]IFFLAGS ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0;
        if ok {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) == 0;
        }
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            return Err(format!("loopback up: {e}"));
        }
    }
    Ok(())
}

const SECBIT_NOROOT: u64 = 1 << 0;
const SECBIT_NOROOT_LOCKED: u64 = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: u64 = 1 << 3;
const SECBIT_NO_CAP_AMBIENT_RAISE: u64 = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: u64 = 1 << 7;

/// Once per container, in pid 1 once it holds its credentials: securebits locked so that uid 0
/// gains nothing on `execve`, the bounding set emptied, no ambient capability. Every task pid 1
/// starts inherits all three (a task then only drops its own sets, [`drop_capabilities`]);
/// pid 1 keeps its effective capabilities, which it needs and never takes through an `execve`.
pub fn lock_privileges() -> Result<(), String> {
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) != 0 {
            return Err(format!("securebits: {}", std::io::Error::last_os_error()));
        }
        // Every capability up to the kernel's last is valid: the first EINVAL is past it.
        for cap in 0..64u64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(format!("drop bounding cap {cap}"));
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
            0,
            0,
            0,
        ) != 0
        {
            return Err(format!("ambient: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Every signal's disposition back to the default, real-time ones included: an `execve` keeps
/// a signal ignored (the helper's runtime ignores SIGPIPE; 32 and 33, glibc's own, arrive
/// ignored too, and glibc's `signal` refuses to touch those). Once per container, in pid 1:
/// the tasks inherit it.
pub fn default_dispositions() {
    // The kernel's `struct sigaction` (handler, flags, restorer, mask), all zero: SIG_DFL.
    let act = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction with a valid, fully initialized kernel sigaction.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    act.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
}

/// In the task process before its `execve`: no effective, permitted or inheritable capability
/// (its bounding and ambient sets and securebits were locked by pid 1: [`lock_privileges`]).
pub fn drop_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data have the kernel's layout for version 3 (two data elements).
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
