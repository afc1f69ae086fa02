//! The task's seccomp filters, compiled with `seccompiler` and installed last, after
//! no_new_privs, in the task process just before `execve`.
//!
//! Filter 1 answers EPERM to system calls a task never needs and that widen the kernel's attack
//! surface or escape the container: namespace creation (`unshare`, `setns`, `clone` with any
//! `CLONE_NEW*` flag), mounts, `pivot_root`/`chroot`, `ptrace`, `bpf`, `perf_event_open`,
//! `userfaultfd`, `io_uring_*`, the key store, module and kexec loading, `reboot`, swap, quotas,
//! `acct`, handle-based opens. Filter 2 answers ENOSYS to `clone3` (its flags live in memory a
//! filter cannot read, so libc must fall back to `clone`, which filter 1 inspects) and to every
//! x32 system call number (x86_64 frames with bit 30 set, which would otherwise bypass filter 1).

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

/// Build both programs (done before `fork`, so the task only installs them).
pub fn programs() -> Result<[BpfProgram; 2], String> {
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

    let nosys: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .and_then(TryInto::try_into)
    .map_err(|e| e.to_string())?;
    Ok([deny, with_x32_guard(nosys)])
}

/// Prefix a program with: `if nr >= X32_SYSCALL_BIT { return ERRNO(ENOSYS) }`. Jumps in BPF are
/// relative, so the original program is unchanged after the prefix.
fn with_x32_guard(prog: BpfProgram) -> BpfProgram {
    use seccompiler::sock_filter;
    if cfg!(not(target_arch = "x86_64")) {
        return prog;
    }
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let mut out = vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0, // seccomp_data.nr
        },
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ];
    out.extend(prog);
    out
}

/// Install both programs in this thread (no_new_privs must already be set).
pub fn install(progs: &[BpfProgram; 2]) -> Result<(), String> {
    for p in progs {
        seccompiler::apply_filter(p).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn programs_compile() {
        let [a, b] = super::programs().unwrap();
        assert!(a.len() > super::DENIED.len());
        assert_eq!(b[1].k, super::X32_SYSCALL_BIT);
    }
}
