//! The agent's seccomp filter, installed once its probes are attached and its capabilities
//! dropped: an allow-list of what the running agent does (files, memory, threads and futexes,
//! epoll, the ring buffers' and maps' `bpf(2)`, its listening socket's connections, clocks,
//! `syslog(2)` for the kernel-log fallback). Everything else fails with `EPERM` and is logged
//! by the kernel (`SECCOMP_FILTER_FLAG_LOG`: an `audit: type=1326 ... syscall=N` line in the
//! kernel log), so a denial is visible, never silent. Among what is refused: `execve`,
//! `ptrace`, `mount`, module loading, `kexec`, namespaces (`setns`, `unshare`), new sockets,
//! `kill` (the agent signals nobody; `tgkill` only to its own threads), `perf_event_open`,
//! `sched_setaffinity` on another process (allowed on the main thread only: `sys::steer`
//! moves the event loop off a CPU the kernel holds).
//! All threads get the filter (`SECCOMP_FILTER_FLAG_TSYNC`).
use std::io;

/// `SECCOMP_RET_*` actions and `SECCOMP_FILTER_FLAG_*` (uapi linux/seccomp.h).
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const FLAG_TSYNC: libc::c_ulong = 1;
const FLAG_LOG: libc::c_ulong = 2;

/// classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Allowed on every architecture.
const ALLOWED: &[libc::c_long] = &[
    // Files (the state directory, /proc, /sys, the runtimes' bundles).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads (tokio's blocking pool starts them on demand), futexes, signals.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getcpu,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_set_tid_address,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_prctl,
    // Waiting: epoll (tokio), the ring buffers' and the kernel log's readiness.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    // The listening socket's connections.
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    // Clocks and the rest.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_memfd_create,
    // Map lookups (per-CPU counters at each scrape); loading needs capabilities the agent
    // no longer has.
    libc::SYS_bpf,
    // The kernel log through syslog(2) where /dev/kmsg is refused.
    libc::SYS_syslog,
];

/// The legacy calls x86-64's C library still makes.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_unlink,
    libc::SYS_mkdir,
    libc::SYS_rename,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[libc::c_long] = &[];

/// What an unlisted call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `EPERM`, logged by the kernel.
    Enforce,
    /// Allowed, logged by the kernel (tests: find what the allow-list misses).
    Log,
}

/// The calls allowed, on this architecture.
pub fn allowed() -> Vec<libc::c_long> {
    let mut v: Vec<_> = ALLOWED.iter().chain(ALLOWED_ARCH).copied().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The calls allowed only when their first argument is this process's id: `tgkill` to one of
/// its own threads; `sched_setaffinity` of its main thread (the event loop, `sys::steer`).
const OWN_PROCESS: &[libc::c_long] = &[libc::SYS_tgkill, libc::SYS_sched_setaffinity];

/// The filter: another architecture's calls are refused; each of [`OWN_PROCESS`] is allowed
/// with this process's id (`pid`) only; each listed call is allowed; the rest gets `deny`.
fn program(pid: u32, deny: u32) -> Vec<Insn> {
    let calls = allowed();
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        Insn {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        },
        stmt(RET_K, deny),
        stmt(LD_W_ABS, NR),
    ];
    for &nr in OWN_PROCESS {
        // Not this call: on to the next block (the accumulator still holds its number).
        p.extend([
            Insn {
                code: JEQ_K,
                jt: 0,
                jf: 4,
                k: nr as u32,
            },
            stmt(LD_W_ABS, ARG0_LOW),
            Insn {
                code: JEQ_K,
                jt: 0,
                jf: 1,
                k: pid,
            },
            stmt(RET_K, RET_ALLOW),
            stmt(RET_K, deny),
        ]);
    }
    // Each listed call jumps to the final ALLOW, the rest falls through to `deny`.
    let n = calls.len();
    for (i, nr) in calls.iter().enumerate() {
        p.push(Insn {
            code: JEQ_K,
            jt: u8::try_from(n - i).expect("fewer than 256 calls"),
            jf: 0,
            k: *nr as u32,
        });
    }
    p.push(stmt(RET_K, deny));
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

#[repr(C)]
struct Fprog {
    len: libc::c_ushort,
    filter: *const Insn,
}

/// Installs the filter on every thread of the process (no_new_privs must be set, as
/// `caps::drop_all` does). Returns how many calls it allows.
pub fn install(mode: Mode) -> io::Result<usize> {
    let deny = match mode {
        Mode::Enforce => RET_ERRNO | libc::EPERM as u32,
        Mode::Log => RET_LOG,
    };
    let prog = program(std::process::id(), deny);
    let fprog = Fprog {
        len: libc::c_ushort::try_from(prog.len()).map_err(io::Error::other)?,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, valid and unchanged for the call; the kernel copies
    // the program before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            FLAG_TSYNC | FLAG_LOG,
            &fprog as *const Fprog,
        )
    };
    match rc {
        0 => Ok(allowed().len() + OWN_PROCESS.len()),
        // With TSYNC, a positive value is the id of a thread that could not be synchronized.
        r if r > 0 => Err(io::Error::other(format!(
            "thread {r} could not take the seccomp filter"
        ))),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_call_jumps_to_allow_and_the_rest_to_deny() {
        let p = program(42, 7);
        let calls = allowed();
        let first = p.len() - calls.len() - 2;
        for (i, nr) in calls.iter().enumerate() {
            let insn = p[first + i];
            assert_eq!((insn.code, insn.k), (JEQ_K, *nr as u32));
            let target = first + i + 1 + usize::from(insn.jt);
            assert_eq!(p[target], stmt(RET_K, RET_ALLOW), "call {nr}");
        }
        assert_eq!(p[p.len() - 2], stmt(RET_K, 7));
        // Dangerous calls are not listed.
        for nr in [
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_kill,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_socket,
            libc::SYS_perf_event_open,
            libc::SYS_init_module,
        ] {
            assert!(!calls.contains(&nr), "{nr} must not be allowed");
        }
        // tgkill and sched_setaffinity are checked against our pid before the list.
        for (block, nr) in OWN_PROCESS.iter().enumerate() {
            let at = 4 + 5 * block;
            assert_eq!((p[at].code, p[at].k, p[at].jf), (JEQ_K, *nr as u32, 4));
            assert_eq!(p[at + 1], stmt(LD_W_ABS, ARG0_LOW));
            assert_eq!(
                (p[at + 2].k, p[at + 3], p[at + 4]),
                (42, stmt(RET_K, RET_ALLOW), stmt(RET_K, 7))
            );
            assert!(!calls.contains(nr), "{nr} is allowed with our pid only");
        }
    }
}
