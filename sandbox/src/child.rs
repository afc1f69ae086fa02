//! Inside the container: the task's pid 1 ([`pid1`]) and the task process it forks.
//!
//! pid 1 waits until the helper has written its uid/gid maps and cgroup membership, becomes the
//! namespace's root (mapped to the dedicated host range), re-arms `PDEATHSIG` (a credential
//! change clears it), enters a cgroup namespace rooted at its leaf, names the host `task`, mounts
//! its own `/proc` ([`super::mounts::enter_root`]; it starts inside the root the helper pivoted into).
//! It then forks the task and reaps
//! every process until the task itself exits; whatever the task left running is SIGKILLed
//! (`kill(-1)` from pid 1 reaches the whole namespace) and reaped. One status line goes back to
//! the helper: `ok <wait status> <user µs> <sys µs>` or `err <message>`.
//!
//! The task process: own session, fds above 2 closed, rlimits (no core files, open files),
//! every capability dropped from the effective, permitted and inheritable sets (pid 1 locked
//! the securebits, so that uid 0 gains nothing on `execve`, and emptied the bounding and ambient
//! sets the task inherits), no_new_privs, then the seccomp filters — last, because they forbid
//! what the steps before them use — and `execve`.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

use super::lockdown::{close_all_but, default_dispositions, drop_capabilities, lock_privileges};
use super::mounts::enter_root;
use super::spec::{Report, TaskSpec, DEFAULT_PATH};

fn write_all(fd: RawFd, msg: &[u8]) {
    // SAFETY: fd is a descriptor this process owns for its whole life.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
    }
}

/// Body of the cloned child. Returns its exit code.
pub fn pid1(
    spec: &TaskSpec,
    sync_fd: RawFd,
    status_fd: RawFd,
    prog: &seccompiler::BpfProgram,
) -> isize {
    close_all_but(&[sync_fd, status_fd]);
    match setup_and_run(spec, sync_fd, prog) {
        Ok((status, utime, stime)) => {
            write_all(
                status_fd,
                format!("ok {status} {utime} {stime}\n").as_bytes(),
            );
            0
        }
        Err(e) => {
            write_all(status_fd, format!("err {e}\n").as_bytes());
            1
        }
    }
}

fn setup_and_run(
    spec: &TaskSpec,
    sync_fd: RawFd,
    prog: &seccompiler::BpfProgram,
) -> Result<(i32, u64, u64), String> {
    enter(sync_fd)?;
    let prepared = Prepared::new(spec, None)?;
    let task = start(&prepared, prog)?;
    null_stdio();
    reap_all(task)
}

/// pid 1's own set-up, once the helper says go: root of the new namespaces, `PDEATHSIG`, not
/// dumpable, its cgroup namespace and host name, its `/proc`; then what every task inherits
/// from it: locked securebits, empty bounding and ambient sets
/// ([`super::lockdown::lock_privileges`]), default signal dispositions.
pub(crate) fn enter(sync_fd: RawFd) -> Result<(), String> {
    let mut go = [0u8; 1];
    // SAFETY: reading one byte into a local buffer from an fd we own.
    if unsafe { libc::read(sync_fd, go.as_mut_ptr().cast(), 1) } != 1 {
        return Err("helper went away".into());
    }
    let (zu, zg) = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(zg, zg, zg).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(zu, zu, zu).map_err(|e| format!("setresuid: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    // Not dumpable: the task (same uid) can neither ptrace pid 1 nor open /proc/1/fd, environ…
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("dumpable: {e}"))?;
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("cgroup ns: {e}"))?;
    nix::unistd::sethostname("task").map_err(|e| format!("hostname: {e}"))?;
    enter_root().map_err(|e| e.to_string())?;
    lock_privileges()?;
    // The tasks inherit these; the mask is cleared in each task.
    default_dispositions();
    Ok(())
}

/// pid 1 keeps no pipe open: stdout/stderr end when the task's tree closes them.
pub(crate) fn null_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
}

/// Start the task process; returns its pid. It shares pid 1's memory until its execve
/// ([`crate::sys::spawn_sharing_memory`]), and takes the changes made in `task` on its own fd
/// table, cwd, signal handlers and credentials.
pub(crate) fn start(prepared: &Prepared, prog: &seccompiler::BpfProgram) -> Result<i32, String> {
    let task = crate::sys::spawn_sharing_memory(|| task(prepared, prog))
        .map_err(|e| format!("clone task: {e}"))?;
    Ok(task.as_raw())
}

/// Reap until no child is left; kill the rest of the namespace once the task has exited.
pub(crate) fn reap_all(task: i32) -> Result<(i32, u64, u64), String> {
    let (mut utime, mut stime, mut status_of_task) = (0u64, 0u64, None);
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data, fully written by the kernel on success.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut ru) };
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => break,
            }
        }
        utime += ru.ru_utime.tv_sec as u64 * 1_000_000 + ru.ru_utime.tv_usec as u64;
        stime += ru.ru_stime.tv_sec as u64 * 1_000_000 + ru.ru_stime.tv_usec as u64;
        if pid == task {
            status_of_task = Some(status);
            // SAFETY: signals every process in this pid namespace except pid 1.
            unsafe { libc::kill(-1, libc::SIGKILL) };
        }
    }
    status_of_task
        .map(|s| (s, utime, stime))
        .ok_or_else(|| "task was never reaped".into())
}

/// Everything the task process needs, allocated before `fork`.
pub(crate) struct Prepared {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    nofile: u64,
    /// Descriptors to become the task's stdin, stdout and stderr (a group's tasks); else it
    /// keeps pid 1's.
    stdio: Option<[RawFd; 3]>,
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

impl Prepared {
    pub(crate) fn new(spec: &TaskSpec, stdio: Option<[RawFd; 3]>) -> Result<Prepared, String> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOME".into(), "/tmp".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        for (k, v) in &spec.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let search = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let argv0 = spec.argv.first().ok_or("empty command")?;
        let path = if argv0.contains('/') {
            argv0.clone()
        } else {
            search
                .split(':')
                .map(|d| Path::new(d).join(argv0))
                .find(|p| is_executable(p))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| argv0.clone())
        };
        Ok(Prepared {
            path: cstr(&path)?,
            argv: spec
                .argv
                .iter()
                .map(|a| cstr(a))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            cwd: cstr(&spec.cwd)?,
            nofile: spec.limits.nofile,
            stdio,
        })
    }
}

/// A regular file we may execute (a PATH search skips directories, as bash's does).
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
        && CString::new(p.as_os_str().as_bytes())
            // SAFETY: valid NUL-terminated path.
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            .unwrap_or(false)
}

/// The task process: lock down, then exec. Never returns.
fn task(p: &Prepared, prog: &seccompiler::BpfProgram) -> ! {
    let fail = |what: &str, e: String| -> ! {
        write_all(2, format!("mobula sandbox: {what}: {e}\n").as_bytes());
        // SAFETY: immediate exit without running destructors (we are a forked child).
        unsafe { libc::_exit(127) }
    };
    // The helper blocks SIGTERM & co. (pid 1 keeps them blocked), and execve keeps the mask:
    // clear it. (pid 1 set every disposition to the default: [`enter`].)
    // SAFETY: plain signal-state system calls.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    let _ = nix::unistd::setsid();
    if let Some(fds) = p.stdio {
        for (to, from) in fds.into_iter().enumerate() {
            // SAFETY: duplicating descriptors pid 1 received for this task onto 0..2.
            if unsafe { libc::dup2(from, to as i32) } < 0 {
                fail("dup2", std::io::Error::last_os_error().to_string());
            }
        }
    }
    // SAFETY: closes every descriptor above stderr; nothing here uses them.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: chdir to a NUL-terminated path.
    if unsafe { libc::chdir(p.cwd.as_ptr()) } != 0 {
        fail("chdir", std::io::Error::last_os_error().to_string());
    }
    use nix::sys::resource::{setrlimit, Resource};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .and_then(|()| setrlimit(Resource::RLIMIT_NOFILE, p.nofile, p.nofile))
    {
        fail("rlimit", e.to_string());
    }
    if let Err(e) = drop_capabilities() {
        fail("capabilities", e);
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        fail("no_new_privs", e.to_string());
    }
    if let Err(e) = super::seccomp::install(prog) {
        fail("seccomp", e);
    }
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env: Vec<*const libc::c_char> = p
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated arrays of pointers to live CStrings.
    unsafe { libc::execve(p.path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let name = p.path.to_string_lossy();
    let msg = if e.kind() == std::io::ErrorKind::NotFound && !name.contains('/') {
        // Not on PATH: say it as bash would.
        format!("{name}: command not found\n")
    } else {
        format!("mobula sandbox: exec {name}: {e}\n")
    };
    write_all(2, msg.as_bytes());
    // SAFETY: as above.
    unsafe {
        libc::_exit(if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        })
    }
}

/// Turn pid 1's status line into the report's fields.
pub fn parse_status(line: &str, r: &mut Report) -> Result<(), String> {
    let line = line.trim();
    if let Some(msg) = line.strip_prefix("err ") {
        return Err(format!("container setup: {msg}"));
    }
    let mut it = line.strip_prefix("ok ").unwrap_or_default().split(' ');
    let mut num = || it.next().and_then(|v| v.parse::<i64>().ok());
    let (Some(status), Some(utime), Some(stime)) = (num(), num(), num()) else {
        // pid 1 was killed (timeout, cancel, node shutdown) before it could say anything.
        if r.timed_out || r.cancelled {
            r.signal = Some(libc::SIGKILL);
            return Ok(());
        }
        return Err("container ended without a status".into());
    };
    let status = status as i32;
    if libc::WIFEXITED(status) {
        r.exit_code = Some(libc::WEXITSTATUS(status));
    } else if libc::WIFSIGNALED(status) {
        r.signal = Some(libc::WTERMSIG(status));
        r.core_dumped = libc::WCOREDUMP(status);
    }
    r.cpu_user_ms = utime as u64 / 1000;
    r.cpu_sys_ms = stime as u64 / 1000;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_finds_programs_not_directories() {
        assert!(is_executable(Path::new("/bin/sh")));
        assert!(!is_executable(Path::new("/usr/bin/..")));
        let plain = std::env::temp_dir().join(format!("mobula-plain-{}", std::process::id()));
        std::fs::write(&plain, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!is_executable(&plain));
        std::fs::remove_file(&plain).unwrap();
        assert!(!is_executable(Path::new("/no/such/file")));
    }

    #[test]
    fn status_lines() {
        let mut r = Report::default();
        parse_status("ok 256 1500 2500\n", &mut r).unwrap();
        assert_eq!(r.exit_code, Some(1));
        assert_eq!((r.cpu_user_ms, r.cpu_sys_ms), (1, 2));
        let mut r = Report::default();
        parse_status("ok 9 0 0", &mut r).unwrap();
        assert_eq!(r.signal, Some(9));
        assert!(parse_status("err mount: EPERM", &mut Report::default()).is_err());
        assert!(parse_status("", &mut Report::default()).is_err());
        let mut r = Report {
            timed_out: true,
            ..Default::default()
        };
        parse_status("", &mut r).unwrap();
        assert_eq!(r.status_code(), 137);
    }
}
