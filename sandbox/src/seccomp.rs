//! The task's seccomp filter, installed last, after no_new_privs, in the task process just
//! before `execve`.
//!
//! It answers EPERM to system calls a task never needs and that widen the kernel's attack
//! surface or escape the container: namespace creation (`unshare`, `setns`, `clone` with any
//! `CLONE_NEW*` flag), mounts, `pivot_root`/`chroot`, `ptrace`, `bpf`, `perf_event_open`,
//! `userfaultfd`, `io_uring_*`, the key store, module and kexec loading, `reboot`, swap, quotas,
//! `acct`, handle-based opens. A prefix answers ENOSYS to `clone3` (its flags live in memory a
//! filter cannot read, so libc must fall back to `clone`, which is inspected) and to every x32
//! system call number (x86_64 frames with bit 30 set, which would otherwise bypass the list);
//! then a foreign architecture kills the process.
//!
//! The program is assembled here as a binary search over the sorted system call numbers
//! (~70 instructions). The kernel converts, JIT-compiles and then emulates it for every system
//! call number (its allow-cache) on each task's load, so length is paid on every spawn: the
//! linear chain `seccompiler` generates for the same rules (~310 instructions) cost ~0.35 ms of
//! CPU per task. A test runs both programs on every system call number, both architectures
//! and a range of `clone` flags, and requires the same answer. `seccompiler` still installs it.

use seccompiler::{sock_filter, BpfProgram};

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `CLONE_NEW*` flags (and `CLONE_NEWTIME`).
const NS_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

const DENIED: &[i64] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_quotactl,
    libc::SYS_acct,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
];

/// Classic BPF opcodes used here.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
/// `seccomp_data` offsets: syscall number, audit arch, low word of the first argument.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

fn audit_arch() -> u32 {
    // EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    const BITS: u32 = 0x8000_0000 | 0x4000_0000;
    if cfg!(target_arch = "aarch64") {
        183 | BITS
    } else {
        62 | BITS
    }
}

/// Where a jump goes: the next instruction, a subtree placed later, or a shared ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    At(usize),
    Clone,
    Allow,
    Deny,
    Enosys,
    Kill,
}

#[derive(Debug, Clone, Copy)]
struct Ins {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn op(code: u16, k: u32) -> Ins {
    Ins {
        code,
        jt: To::Next,
        jf: To::Next,
        k,
    }
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Ins {
    Ins { code, jt, jf, k }
}

/// A search over the sorted numbers `v` (the syscall number loaded): a few equality tests at
/// the leaves, `>=` splits above them.
fn tree(out: &mut Vec<Ins>, v: &[u32]) {
    if v.len() <= 4 {
        for (i, &n) in v.iter().enumerate() {
            let hit = if n == libc::SYS_clone as u32 {
                To::Clone
            } else {
                To::Deny
            };
            let miss = if i + 1 == v.len() {
                To::Allow
            } else {
                To::Next
            };
            out.push(jump(JEQ_K, n, hit, miss));
        }
        return;
    }
    let mid = v.len() / 2;
    let split = out.len();
    out.push(jump(JGE_K, v[mid], To::Next, To::Next));
    tree(out, &v[..mid]);
    out[split].jt = To::At(out.len());
    tree(out, &v[mid..]);
}

/// The program, built once per process (the zygote builds it before forking helpers).
pub fn program() -> Result<&'static BpfProgram, String> {
    static PROGRAM: std::sync::OnceLock<Result<BpfProgram, String>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<BpfProgram, String> {
    let x32 = if cfg!(target_arch = "x86_64") {
        X32_SYSCALL_BIT
    } else {
        u32::MAX
    };
    let mut nrs: Vec<u32> = DENIED.iter().map(|&n| n as u32).collect();
    nrs.push(libc::SYS_clone as u32);
    nrs.sort_unstable();
    nrs.dedup();
    let ns_mask = NS_FLAGS.iter().fold(0u64, |m, f| m | f);
    let mut p = vec![
        op(LD_W_ABS, NR),
        jump(JGE_K, x32, To::Enosys, To::Next),
        jump(JEQ_K, libc::SYS_clone3 as u32, To::Enosys, To::Next),
        op(LD_W_ABS, ARCH),
        jump(JEQ_K, audit_arch(), To::Next, To::Kill),
        op(LD_W_ABS, NR),
    ];
    tree(&mut p, &nrs);
    let ends = p.len();
    // Every CLONE_NEW* flag lives in the low word of `clone`'s flags.
    p.push(op(LD_W_ABS, ARG0_LOW));
    p.push(jump(JSET_K, ns_mask as u32, To::Deny, To::Allow));
    p.push(op(RET_K, RET_ALLOW));
    p.push(op(RET_K, RET_ERRNO | libc::EPERM as u32));
    p.push(op(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    p.push(op(RET_K, RET_KILL_PROCESS));
    let at = |t: To, i: usize| -> Result<u8, String> {
        let target = match t {
            To::Next => i + 1,
            To::At(n) => n,
            To::Clone => ends,
            To::Allow => ends + 2,
            To::Deny => ends + 3,
            To::Enosys => ends + 4,
            To::Kill => ends + 5,
        };
        u8::try_from(target - (i + 1)).map_err(|_| "seccomp program: jump too far".to_string())
    };
    p.iter()
        .enumerate()
        .map(|(i, ins)| {
            Ok(sock_filter {
                code: ins.code,
                jt: at(ins.jt, i)?,
                jf: at(ins.jf, i)?,
                k: ins.k,
            })
        })
        .collect()
}

/// Install the program in this thread (no_new_privs must already be set).
pub fn install(prog: &BpfProgram) -> Result<(), String> {
    seccompiler::apply_filter(prog).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
