//! The task's seccomp filter, compiled with `seccompiler` and installed last, after
//! no_new_privs, in the task process just before `execve`.
//!
//! It answers EPERM to system calls a task never needs and that widen the kernel's attack
//! surface or escape the container: namespace creation (`unshare`, `setns`, `clone` with any
//! `CLONE_NEW*` flag), mounts, `pivot_root`/`chroot`, `ptrace`, `bpf`, `perf_event_open`,
//! `userfaultfd`, `io_uring_*`, the key store, module and kexec loading, `reboot`, swap, quotas,
//! `acct`, handle-based opens. A prefix answers ENOSYS to `clone3` (its flags live in memory a
//! filter cannot read, so libc must fall back to `clone`, which is inspected) and to every x32
//! system call number (x86_64 frames with bit 30 set, which would otherwise bypass the list).
//! One program, so the kernel compiles one filter per task.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

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

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    TargetArch::x86_64
}

/// The program, built once per process (the zygote builds it before forking helpers).
pub fn program() -> Result<&'static BpfProgram, String> {
    static PROGRAM: std::sync::OnceLock<Result<BpfProgram, String>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NS_FLAGS
        .iter()
        .map(|&f| {
            SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch(),
    )
    .and_then(TryInto::try_into)
    .map_err(|e| e.to_string())?;

    Ok(with_enosys_guard(deny))
}

/// Prefix a program with `if nr >= X32_SYSCALL_BIT || nr == clone3 { return ERRNO(ENOSYS) }`.
/// BPF jumps are relative, so the original program is unchanged after the prefix; it still
/// checks the architecture first thing (this prefix only ever answers ENOSYS).
fn with_enosys_guard(prog: BpfProgram) -> BpfProgram {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let x32 = if cfg!(target_arch = "x86_64") {
        X32_SYSCALL_BIT
    } else {
        u32::MAX
    };
    let mut out = vec![
        ins(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(BPF_JGE_K, 1, 0, x32),
        ins(BPF_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    out.extend(prog);
    out
}

/// Install the program in this thread (no_new_privs must already be set).
pub fn install(prog: &BpfProgram) -> Result<(), String> {
    seccompiler::apply_filter(prog).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_compiles() {
        let p = super::program().unwrap();
        assert!(p.len() > super::DENIED.len());
        assert_eq!(p[1].k, super::X32_SYSCALL_BIT);
    }
}
