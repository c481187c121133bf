//! Every SIGKILL to a task in a non-root memory cgroup (issue 15): one [`SigkillRecord`] per
//! signal, through the `SIGKILLS` ring of its own, so a kill storm never displaces a victim
//! record. The eBPF side rate-limits each sender ([`SIGKILL_BURST`], [`SIGKILL_PER_SECOND`]);
//! the kernel's own kills (`si_code` `SI_KERNEL`: the OOM killer, a group sweep, a pid
//! namespace torn down) are never rate-limited. Same rules as the crate root.
use crate::{COMM_LEN, EXE_NAME_LEN};

/// Path components of the sender's executable kept, innermost first.
pub const SIGKILL_EXE_DEPTH: usize = 4;

/// SIGKILLs one sender (thread group) may have recorded at once.
pub const SIGKILL_BURST: u64 = 64;
/// SIGKILLs a sender may have recorded a second after its burst.
pub const SIGKILL_PER_SECOND: u64 = 32;

/// Bits of [`SigkillRecord::present`].
pub mod sigkill_field {
    pub const CODE: u32 = 1 << 0;
    pub const RESULT: u32 = 1 << 1;
    pub const TARGET_TGID: u32 = 1 << 2;
    pub const TARGET_COMM: u32 = 1 << 3;
    pub const TARGET_MEMCG_ID: u32 = 1 << 4;
    pub const SENDER_MEMCG_ID: u32 = 1 << 5;
    /// `target_ns_level` and `target_ns_tgid`: the target's process in its own pid namespace.
    pub const TARGET_PIDNS: u32 = 1 << 6;
    pub const GROUP: u32 = 1 << 7;
    /// `sender_exe` holds `exe_depth` components.
    pub const SENDER_EXE: u32 = 1 << 8;
}

/// One SIGKILL sent to a task in a non-root memory cgroup (the tracepoint program, which has no
/// `task_struct`, sends every SIGKILL and leaves the filter to the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigkillRecord {
    /// [`crate::RecordKind::SigkillBtf`] or [`crate::RecordKind::SigkillTracepoint`] as `u32`.
    pub kind: u32,
    /// Bits from [`sigkill_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` when the signal was generated.
    pub ktime_ns: u64,
    /// `si_code` (`SI_USER` 0 for kill(2), `SI_KERNEL` 0x80 for the kernel's own kills).
    pub code: i32,
    /// `enum trace_signal_result` (0 delivered, 2 already pending, ...).
    pub result: i32,
    /// Sent to the whole thread group.
    pub group: i32,
    /// The sender: the running task.
    pub sender_pid: i32,
    pub sender_tgid: i32,
    /// The target task and its process.
    pub target_pid: i32,
    pub target_tgid: i32,
    /// The target's pid-namespace level and its process's id there (1: the namespace's init,
    /// a container's main process).
    pub target_ns_level: u32,
    pub target_ns_tgid: i32,
    /// Components in `sender_exe`.
    pub exe_depth: u32,
    /// Kernfs ids of the sender's and the target's memory cgroups.
    pub sender_memcg_id: u64,
    pub target_memcg_id: u64,
    pub sender_comm: [u8; COMM_LEN],
    pub target_comm: [u8; COMM_LEN],
    /// The sender's executable (`task->mm->exe_file`), innermost component first: read at the
    /// signal, so a sender that exits at once (`/bin/kill`) is still named by its file.
    pub sender_exe: [[u8; EXE_NAME_LEN]; SIGKILL_EXE_DEPTH],
}

const _: () =
    assert!(core::mem::size_of::<SigkillRecord>() == 104 + EXE_NAME_LEN * SIGKILL_EXE_DEPTH);

/// What the `signal_generate` programs need besides [`crate::SignalOffsets`]: the root memory
/// cgroup's id (its SIGKILLs are not recorded; 0 when unknown: every SIGKILL is).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigkillFilter {
    pub root_memcg_id: u64,
    /// 1: record SIGKILLs; 0: the `SIGKILLS` ring stays empty (`--sigkills off`).
    pub enabled: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<SigkillFilter>() == 16);

impl SigkillFilter {
    pub const OFF: Self = Self {
        root_memcg_id: 0,
        enabled: 0,
        _pad0: 0,
    };
}
