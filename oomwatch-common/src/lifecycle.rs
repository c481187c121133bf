//! Records and globals of the kill-lifecycle programs (victim exit, OOM reaper) and of the
//! userspace-killer program (`signal_generate`). Same rules as the crate root: `#[repr(C)]`,
//! explicit padding, size asserts.
use crate::{COMM_LEN, OFFSET_ABSENT};

/// Bits of [`LifecycleRecord::present`].
pub mod lifecycle_field {
    /// `kill_ktime_ns` was found in the `VICTIMS` map (exits).
    pub const KILL_KTIME: u32 = 1 << 0;
    /// `pid` was read from the trace record.
    pub const PID: u32 = 1 << 1;
}

/// One killed process's exit, or one step of the OOM reaper (`oom:*_reaping`, `oom:wake_reaper`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LifecycleRecord {
    /// [`crate::RecordKind::VictimExit`], [`crate::RecordKind::WakeReaper`],
    /// [`crate::RecordKind::StartReaping`], [`crate::RecordKind::FinishReaping`] or
    /// [`crate::RecordKind::SkipReaping`] as `u32`.
    pub kind: u32,
    /// Bits from [`lifecycle_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` when the program ran.
    pub ktime_ns: u64,
    /// For an exit: when the process was marked as an OOM victim or sent the SIGKILL (the
    /// `VICTIMS` map's value).
    pub kill_ktime_ns: u64,
    /// For an exit: the process (tgid) whose last thread exits. For a reaper step: the victim
    /// task (`pid` field of the trace record: `task->pid`).
    pub pid: i32,
    /// For an exit: the exiting thread; 0 otherwise.
    pub tid: i32,
}

const _: () = assert!(core::mem::size_of::<LifecycleRecord>() == 32);

impl LifecycleRecord {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            present: 0,
            ktime_ns: 0,
            kill_ktime_ns: 0,
            pid: 0,
            tid: 0,
        }
    }
}

/// Where the lifecycle programs find what they read: `pid` fields of the OOM reaper's trace
/// records and `group_dead` of `sched_process_exit` (tracefs `format` files), and
/// `signal_struct.live` (BTF) for kernels whose exit record lacks `group_dead`.
/// [`OFFSET_ABSENT`] where the kernel lacks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleOffsets {
    /// `sched/sched_process_exit`'s `bool group_dead` (6.16+).
    pub exit_group_dead: u32,
    /// `signal_struct.live`: threads not yet exited (0 when the last one exits).
    pub signal_live: u32,
    /// `oom/wake_reaper`, `oom/start_task_reaping`, `oom/finish_task_reaping`,
    /// `oom/skip_task_reaping`.
    pub wake_reaper_pid: u32,
    pub start_reaping_pid: u32,
    pub finish_reaping_pid: u32,
    pub skip_reaping_pid: u32,
}

const _: () = assert!(core::mem::size_of::<LifecycleOffsets>() == 24);

impl LifecycleOffsets {
    pub const ABSENT: Self = Self {
        exit_group_dead: OFFSET_ABSENT,
        signal_live: OFFSET_ABSENT,
        wake_reaper_pid: OFFSET_ABSENT,
        start_reaping_pid: OFFSET_ABSENT,
        finish_reaping_pid: OFFSET_ABSENT,
        skip_reaping_pid: OFFSET_ABSENT,
    };
}

/// Bits of [`SignalRecord::present`].
pub mod signal_field {
    pub const CODE: u32 = 1 << 0;
    pub const RESULT: u32 = 1 << 1;
    pub const TARGET_PID: u32 = 1 << 2;
    pub const TARGET_TGID: u32 = 1 << 3;
    pub const TARGET_COMM: u32 = 1 << 4;
    pub const TARGET_MEMCG_ID: u32 = 1 << 5;
    pub const SENDER_MEMCG_ID: u32 = 1 << 6;
    pub const GROUP: u32 = 1 << 7;
}

/// A SIGKILL sent by a task whose comm is in [`KillerComms`]: a userspace OOM killer's kill.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalRecord {
    /// [`crate::RecordKind::SignalTracepoint`] or [`crate::RecordKind::SignalBtf`] as `u32`.
    pub kind: u32,
    /// Bits from [`signal_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` when the signal was generated.
    pub ktime_ns: u64,
    pub sig: i32,
    /// `si_code` (`SI_USER` 0 for kill(2), `SI_KERNEL` 0x80 for the kernel's own kills).
    pub code: i32,
    /// `enum trace_signal_result` (0 delivered, 2 already pending, ...).
    pub result: i32,
    /// Sent to the whole thread group.
    pub group: i32,
    /// The sender: the running task.
    pub sender_pid: i32,
    pub sender_tgid: i32,
    /// The target task.
    pub target_pid: i32,
    pub target_tgid: i32,
    /// Kernfs ids of the sender's and the target's memory cgroups.
    pub sender_memcg_id: u64,
    pub target_memcg_id: u64,
    pub sender_comm: [u8; COMM_LEN],
    pub target_comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<SignalRecord>() == 96);

impl SignalRecord {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            present: 0,
            ktime_ns: 0,
            sig: 0,
            code: 0,
            result: 0,
            group: 0,
            sender_pid: 0,
            sender_tgid: 0,
            target_pid: 0,
            target_tgid: 0,
            sender_memcg_id: 0,
            target_memcg_id: 0,
            sender_comm: [0; COMM_LEN],
            target_comm: [0; COMM_LEN],
        }
    }
}

/// Offsets for the `signal_generate` programs: the trace record's fields (tracefs `format`) and
/// `kernel_siginfo.si_code` (BTF, for the tp_btf program).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalOffsets {
    pub sig: u32,
    pub code: u32,
    /// `char comm[16]`: the target's comm.
    pub comm: u32,
    /// The target's pid.
    pub pid: u32,
    pub group: u32,
    pub result: u32,
    /// `kernel_siginfo.si_code` (BTF).
    pub si_code: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<SignalOffsets>() == 32);

impl SignalOffsets {
    pub const ABSENT: Self = Self {
        sig: OFFSET_ABSENT,
        code: OFFSET_ABSENT,
        comm: OFFSET_ABSENT,
        pid: OFFSET_ABSENT,
        group: OFFSET_ABSENT,
        result: OFFSET_ABSENT,
        si_code: OFFSET_ABSENT,
        _pad0: 0,
    };
}

/// Most userspace killers the `signal_generate` programs recognise.
pub const MAX_KILLERS: usize = 16;

/// The comms of userspace OOM killers whose SIGKILLs are reported. Entry `i < count` matches a
/// sender comm `c` (16 bytes, NUL-padded, as two native-endian words `w`) when
/// `w[j] & entries[i][2 + j] == entries[i][j]` for `j` in 0..2: the mask covers the name and
/// its NUL (an exact match), or only the first 15 bytes for a name the kernel truncates.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillerComms {
    pub count: u32,
    pub _pad0: u32,
    pub entries: [[u64; 4]; MAX_KILLERS],
}

const _: () = assert!(core::mem::size_of::<KillerComms>() == 8 + 32 * MAX_KILLERS);

impl KillerComms {
    pub const EMPTY: Self = Self {
        count: 0,
        _pad0: 0,
        entries: [[0; 4]; MAX_KILLERS],
    };

    /// Whether a NUL-padded comm matches an entry (the same test the eBPF side makes).
    pub fn matches(&self, comm: &[u8; COMM_LEN]) -> bool {
        let (w0, w1) = comm_words(comm);
        let mut i = 0;
        while i < MAX_KILLERS && i < self.count as usize {
            let e = self.entries[i];
            if w0 & e[2] == e[0] && w1 & e[3] == e[1] {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// A comm as two native-endian words.
#[inline(always)]
pub fn comm_words(comm: &[u8; COMM_LEN]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&comm[..8]);
    b.copy_from_slice(&comm[8..]);
    (u64::from_ne_bytes(a), u64::from_ne_bytes(b))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and arrays of integers, with
    // every padding byte spelled out as a field, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::LifecycleRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LifecycleOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SignalRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SignalOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KillerComms {}
}
