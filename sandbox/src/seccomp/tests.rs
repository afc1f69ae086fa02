//! The assembled program against the same rules compiled by `seccompiler` (what the filter was
//! built with before), run by a small classic-BPF interpreter on every system call number.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::*;

/// The rules as `seccompiler` compiles them, behind the same ENOSYS prefix.
fn reference() -> BpfProgram {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NS_FLAGS
        .iter()
        .map(|&f| {
            let c = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f);
            SeccompRule::new(vec![c.unwrap()]).unwrap()
        })
        .collect();
    rules.insert(libc::SYS_clone, clone_rules);
    let arch = if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    };
    let deny: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .unwrap()
    .try_into()
    .unwrap();
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let mut out = vec![
        ins(LD_W_ABS, 0, 0, NR),
        ins(JGE_K, 1, 0, X32_SYSCALL_BIT),
        ins(JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ins(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
    ];
    out.extend(deny);
    out
}

/// Run a classic BPF seccomp program on one `seccomp_data`.
fn run(prog: &[sock_filter], nr: u32, arch: u32, arg0: u64) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    data[16..24].copy_from_slice(&arg0.to_le_bytes());
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &prog[pc];
        let cond = |c: bool| pc + 1 + usize::from(if c { i.jt } else { i.jf });
        pc = match i.code {
            0x20 => {
                let k = i.k as usize;
                acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                pc + 1
            }
            0x54 => {
                acc &= i.k;
                pc + 1
            }
            0x05 => pc + 1 + i.k as usize,
            0x15 => cond(acc == i.k),
            0x25 => cond(acc > i.k),
            0x35 => cond(acc >= i.k),
            0x45 => cond(acc & i.k != 0),
            0x06 => return i.k,
            c => panic!("opcode {c:#x} not interpreted"),
        };
    }
}

#[test]
fn the_search_answers_like_the_linear_chain() {
    let (ours, theirs) = (program().unwrap(), reference());
    assert!(
        ours.len() * 3 < theirs.len(),
        "{} vs {}",
        ours.len(),
        theirs.len()
    );
    let mut nrs: Vec<u32> = (0..1024).collect();
    nrs.extend([
        X32_SYSCALL_BIT,
        X32_SYSCALL_BIT | 1,
        X32_SYSCALL_BIT | 56,
        u32::MAX,
    ]);
    let ns = NS_FLAGS.iter().fold(0, |m, f| m | f);
    let mut args = vec![0, u64::MAX, ns, 1 << 40, (1 << 40) | 0x11, 0x4111, !ns];
    args.extend(NS_FLAGS);
    args.extend(NS_FLAGS.iter().map(|f| f | 0x0100_0f00));
    let mut denied = 0;
    for arch in [audit_arch(), audit_arch() ^ 1, 0] {
        for &nr in &nrs {
            for &a in &args {
                let got = run(ours, nr, arch, a);
                assert_eq!(
                    got,
                    run(&theirs, nr, arch, a),
                    "nr {nr} arch {arch:#x} arg {a:#x}"
                );
                denied += usize::from(got == RET_ERRNO | libc::EPERM as u32);
            }
        }
    }
    assert!(denied > 0);
    // The rules themselves, spelled out.
    let native = audit_arch();
    let eperm = RET_ERRNO | libc::EPERM as u32;
    assert_eq!(run(ours, libc::SYS_mount as u32, native, 0), eperm);
    assert_eq!(run(ours, libc::SYS_read as u32, native, 0), RET_ALLOW);
    let clone = libc::SYS_clone as u32;
    assert_eq!(run(ours, clone, native, libc::CLONE_NEWUSER as u64), eperm);
    assert_eq!(run(ours, clone, native, 0x11), RET_ALLOW);
    let clone3 = libc::SYS_clone3 as u32;
    assert_eq!(
        run(ours, clone3, native, 0),
        RET_ERRNO | libc::ENOSYS as u32
    );
    assert_eq!(run(ours, 0, native ^ 1, 0), RET_KILL_PROCESS);
}
