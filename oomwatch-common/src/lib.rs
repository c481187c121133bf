//! Types shared by oomwatch's eBPF programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]`, has explicit padding fields and a compile-time size assert,
//! because the same bytes are written by the eBPF side and read by the agent. No kernel offset is
//! written here: offset tables are filled in by the agent at start-up (from tracefs `format` files
//! and `/sys/kernel/btf/vmlinux`) and handed to the programs as globals.
#![no_std]

mod candidate;
mod lifecycle;
mod sigkill;
mod stack;
pub use candidate::*;
pub use lifecycle::*;
pub use sigkill::*;
pub use stack::*;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Marks an offset the agent could not resolve; the eBPF side then leaves the field absent.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Which program produced a [`VictimRecord`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// `tracepoint/oom/mark_victim`: the trace event's own fields.
    MarkVictimTracepoint = 1,
    /// `tp_btf/mark_victim`: fields read from the victim's `task_struct`.
    MarkVictimBtf = 2,
    /// `oom_kill_process()` entry (fentry or kprobe): the OOM invocation's `oom_control`.
    OomKill = 3,
    /// `oom_badness()` return inside `out_of_memory()`, by fexit ([`CandidateRecord`]).
    CandidateFexit = 4,
    /// The same by kretprobe (kprobe on entry for the arguments) ([`CandidateRecord`]).
    CandidateKretprobe = 5,
    /// `sched:sched_process_exit` of a task in the `VICTIMS` map: a killed task exited
    /// ([`LifecycleRecord`]).
    VictimExit = 16,
    /// `oom:wake_reaper`: the OOM reaper was woken for a victim ([`LifecycleRecord`]).
    WakeReaper = 17,
    /// `oom:start_task_reaping` ([`LifecycleRecord`]).
    StartReaping = 18,
    /// `oom:finish_task_reaping`: the victim's memory was reaped ([`LifecycleRecord`]).
    FinishReaping = 19,
    /// `oom:skip_task_reaping`: the reaper gave up on the victim ([`LifecycleRecord`]).
    SkipReaping = 20,
    /// `tracepoint/signal/signal_generate`: a SIGKILL from a listed userspace killer
    /// ([`SignalRecord`]).
    SignalTracepoint = 21,
    /// `tp_btf/signal_generate`: the same, with the target's `task_struct` ([`SignalRecord`]).
    SignalBtf = 22,
    /// The trigger's kernel and user stacks at the first mark of an OOM invocation
    /// ([`StackRecord`], the `STACKS` ring).
    TriggerStack = 23,
    /// `tp_btf/signal_generate`: a SIGKILL to a task in a non-root memory cgroup, with the
    /// target's `task_struct` ([`SigkillRecord`], the `SIGKILLS` ring).
    SigkillBtf = 24,
    /// `tracepoint/signal/signal_generate`: any SIGKILL, from the trace record's fields
    /// ([`SigkillRecord`], the `SIGKILLS` ring).
    SigkillTracepoint = 25,
}

impl RecordKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::MarkVictimTracepoint),
            2 => Some(Self::MarkVictimBtf),
            3 => Some(Self::OomKill),
            4 => Some(Self::CandidateFexit),
            5 => Some(Self::CandidateKretprobe),
            16 => Some(Self::VictimExit),
            17 => Some(Self::WakeReaper),
            18 => Some(Self::StartReaping),
            19 => Some(Self::FinishReaping),
            20 => Some(Self::SkipReaping),
            21 => Some(Self::SignalTracepoint),
            22 => Some(Self::SignalBtf),
            23 => Some(Self::TriggerStack),
            24 => Some(Self::SigkillBtf),
            25 => Some(Self::SigkillTracepoint),
            _ => None,
        }
    }
}

/// Bits of [`VictimRecord::present`]: which fields the program could fill.
pub mod field {
    pub const PID: u32 = 1 << 0;
    pub const COMM: u32 = 1 << 1;
    pub const TOTAL_VM: u32 = 1 << 2;
    pub const ANON_RSS: u32 = 1 << 3;
    pub const FILE_RSS: u32 = 1 << 4;
    pub const SHMEM_RSS: u32 = 1 << 5;
    pub const UID: u32 = 1 << 6;
    pub const PGTABLES: u32 = 1 << 7;
    pub const OOM_SCORE_ADJ: u32 = 1 << 8;
    pub const TGID: u32 = 1 << 9;
    pub const MEMCG_ID: u32 = 1 << 10;
    /// The victim's pending signals were read (then [`SIGKILL_PENDING`] is meaningful).
    pub const SIGNALS: u32 = 1 << 11;
    /// SIGKILL was pending for the victim when it was marked. Informational only: it does not
    /// tell a kill from a mark without one (the victim may take its SIGKILL off the pending
    /// set on another CPU before the mark, and a killed process's other threads have it
    /// pending too); [`KILL_SENT`] does.
    pub const SIGKILL_PENDING: u32 = 1 << 12;
    /// The running task sent the victim SIGKILL just before marking it: the mark is a kill
    /// (`__oom_kill_process()`), not a task already exiting that is only let go first.
    /// Meaningful only while a `signal_generate` program is attached.
    pub const KILL_SENT: u32 = 1 << 13;
    /// The victim's pid namespace was read: [`VictimRecord::ns_level`] and
    /// [`VictimRecord::ns_tgid`].
    pub const PIDNS: u32 = 1 << 14;
    /// The init of that namespace (`pid_namespace.child_reaper`) was read:
    /// [`VictimRecord::init_tgid`], `init_comm` and `init_memcg_id`.
    pub const PIDNS_INIT: u32 = 1 << 15;
    /// At least one kernel read failed (the failure was also logged through aya-log).
    pub const READ_ERROR: u32 = 1 << 31;
}

/// One record per program invocation, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VictimRecord {
    /// A [`RecordKind`] as `u32`.
    pub kind: u32,
    /// Bits from [`field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` when the program ran (CLOCK_MONOTONIC, ns).
    pub ktime_ns: u64,
    /// Victim thread id as the kernel reports it (`task->pid`).
    pub pid: i32,
    /// Victim process id (`task->tgid`).
    pub tgid: i32,
    pub uid: u32,
    pub oom_score_adj: i16,
    pub _pad0: u16,
    /// Memory sizes in kB, as the trace event reports them.
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// Kernfs id (the cgroup directory's inode number) of the victim's memory cgroup.
    pub memcg_id: u64,
    /// The task running when the victim was marked: the one whose allocation invoked the killer.
    pub trigger_pid: i32,
    pub trigger_tgid: i32,
    pub comm: [u8; COMM_LEN],
    pub trigger_comm: [u8; COMM_LEN],
    /// The level of the victim's pid namespace (0: the initial one).
    pub ns_level: u32,
    /// The victim's process id in its own pid namespace (1: it is that namespace's init).
    pub ns_tgid: i32,
    /// That namespace's init (`child_reaper`): process id as the host sees it.
    pub init_tgid: i32,
    pub _pad1: u32,
    /// The init's memory cgroup id.
    pub init_memcg_id: u64,
    pub init_comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<VictimRecord>() == 160);

impl VictimRecord {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            present: 0,
            ktime_ns: 0,
            pid: 0,
            tgid: 0,
            uid: 0,
            oom_score_adj: 0,
            _pad0: 0,
            total_vm_kb: 0,
            anon_rss_kb: 0,
            file_rss_kb: 0,
            shmem_rss_kb: 0,
            pgtables_kb: 0,
            memcg_id: 0,
            trigger_pid: 0,
            trigger_tgid: 0,
            comm: [0; COMM_LEN],
            trigger_comm: [0; COMM_LEN],
            ns_level: 0,
            ns_tgid: 0,
            init_tgid: 0,
            _pad1: 0,
            init_memcg_id: 0,
            init_comm: [0; COMM_LEN],
        }
    }
}

/// Member offsets (BTF) to a task's pid namespace and its init: `task->group_leader->thread_pid`
/// (`struct pid`), its `level` and `numbers[level]` (`struct upid`: `nr`, `ns`), and
/// `pid_namespace.child_reaper`. [`OFFSET_ABSENT`] where this kernel's BTF lacks one (then the
/// fields are left absent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidNsOffsets {
    pub task_group_leader: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`.
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub pidns_child_reaper: u32,
}

const _: () = assert!(core::mem::size_of::<PidNsOffsets>() == 32);

impl PidNsOffsets {
    pub const ABSENT: Self = Self {
        task_group_leader: OFFSET_ABSENT,
        task_thread_pid: OFFSET_ABSENT,
        pid_level: OFFSET_ABSENT,
        pid_numbers: OFFSET_ABSENT,
        upid_size: OFFSET_ABSENT,
        upid_nr: OFFSET_ABSENT,
        upid_ns: OFFSET_ABSENT,
        pidns_child_reaper: OFFSET_ABSENT,
    };
}

/// Deepest pid namespace level the kernel allows (`MAX_PID_NS_LEVEL`).
pub const MAX_PID_NS_LEVEL: u32 = 32;

/// Byte offsets of `oom/mark_victim` fields inside the trace record, from the tracefs `format`
/// file. [`OFFSET_ABSENT`] where this kernel's format lacks the field (kernels 4.13–6.8 have
/// only `pid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkVictimOffsets {
    pub pid: u32,
    /// `__data_loc char[] comm`: a u32 holding (length << 16 | offset).
    pub comm_data_loc: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub pgtables: u32,
    pub oom_score_adj: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<MarkVictimOffsets>() == 40);

impl MarkVictimOffsets {
    pub const ABSENT: Self = Self {
        pid: OFFSET_ABSENT,
        comm_data_loc: OFFSET_ABSENT,
        total_vm: OFFSET_ABSENT,
        anon_rss: OFFSET_ABSENT,
        file_rss: OFFSET_ABSENT,
        shmem_rss: OFFSET_ABSENT,
        uid: OFFSET_ABSENT,
        pgtables: OFFSET_ABSENT,
        oom_score_adj: OFFSET_ABSENT,
        _pad0: 0,
    };
}

/// Kernel struct member offsets (bytes) from BTF, used by the `tp_btf` programs to read a
/// `task_struct`. [`OFFSET_ABSENT`] where this kernel's BTF lacks the member.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `signal_struct.oom_score_adj`
    pub signal_oom_score_adj: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `css_set.subsys` plus `memory_cgrp_id * sizeof(pointer)`: the memory controller's css.
    pub css_set_memory_subsys: u32,
    /// `cgroup_subsys_state.cgroup`
    pub css_cgroup: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`
    pub kernfs_node_id: u32,
    /// `task_struct.pending.signal.sig`: the first word of the task's pending-signal set.
    pub task_pending_signal: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 48);

impl TaskOffsets {
    pub const ABSENT: Self = Self {
        task_pid: OFFSET_ABSENT,
        task_tgid: OFFSET_ABSENT,
        task_comm: OFFSET_ABSENT,
        task_signal: OFFSET_ABSENT,
        signal_oom_score_adj: OFFSET_ABSENT,
        task_cgroups: OFFSET_ABSENT,
        css_set_memory_subsys: OFFSET_ABSENT,
        css_cgroup: OFFSET_ABSENT,
        cgroup_kn: OFFSET_ABSENT,
        kernfs_node_id: OFFSET_ABSENT,
        task_pending_signal: OFFSET_ABSENT,
        _pad0: 0,
    };
}

/// SIGKILL's bit in a `sigset_t` word (signal numbers are 1-based; SIGKILL is 9 on every
/// architecture Linux supports).
pub const SIGKILL_BIT: u64 = 1 << (9 - 1);

/// Length of the `message` argument kept from `oom_kill_process()`.
pub const MESSAGE_LEN: usize = 64;

/// Bits of [`OomKillRecord::present`].
pub mod oom_field {
    pub const GFP_MASK: u32 = 1 << 0;
    pub const ORDER: u32 = 1 << 1;
    pub const TOTALPAGES: u32 = 1 << 2;
    pub const CHOSEN_POINTS: u32 = 1 << 3;
    pub const CONSTRAINT: u32 = 1 << 4;
    pub const CHOSEN: u32 = 1 << 5;
    pub const CHOSEN_COMM: u32 = 1 << 6;
    /// `oc->memcg` was non-null (a memcg OOM) and its cgroup id was read.
    pub const MEMCG_ID: u32 = 1 << 7;
    pub const TRIGGER_MEMCG_ID: u32 = 1 << 8;
    pub const MESSAGE: u32 = 1 << 9;
    /// `oc->memcg` was null: a global (or cpuset/mempolicy) OOM.
    pub const MEMCG_NULL: u32 = 1 << 10;
    /// `invocation_ktime_ns` was found: an `out_of_memory()` scope program is attached.
    pub const INVOCATION: u32 = 1 << 11;
    pub const READ_ERROR: u32 = 1 << 31;
}

/// One per OOM invocation that kills: what `oom_kill_process(oc, message)` saw on entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomKillRecord {
    /// [`RecordKind::OomKill`] as `u32`.
    pub kind: u32,
    /// Bits from [`oom_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` at entry.
    pub ktime_ns: u64,
    /// `oc->gfp_mask`.
    pub gfp_mask: u32,
    /// `oc->order` (-1 for a sysrq-forced or memcg-charge OOM without an allocation order).
    pub order: i32,
    /// `oc->totalpages`: the size of the OOM domain in pages.
    pub totalpages: u64,
    /// `oc->chosen_points`: the chosen task's badness.
    pub chosen_points: i64,
    /// `oc->constraint`: `enum oom_constraint` value.
    pub constraint: u32,
    /// `oc->chosen->pid` and `->tgid`.
    pub chosen_pid: i32,
    pub chosen_tgid: i32,
    /// The running task (the allocation that invoked the killer).
    pub trigger_pid: i32,
    pub trigger_tgid: i32,
    pub _pad0: u32,
    /// Kernfs id of `oc->memcg`'s cgroup (the memcg that hit its limit).
    pub memcg_id: u64,
    /// Kernfs id of the triggering task's memory cgroup.
    pub trigger_memcg_id: u64,
    pub chosen_comm: [u8; COMM_LEN],
    pub trigger_comm: [u8; COMM_LEN],
    /// The `message` argument ("Out of memory", "Memory cgroup out of memory", ...).
    pub message: [u8; MESSAGE_LEN],
    /// When the running task entered `out_of_memory()` (the `OOM_SCOPE` map): the key of the
    /// invocation's [`CandidateRecord`]s.
    pub invocation_ktime_ns: u64,
}

const _: () = assert!(core::mem::size_of::<OomKillRecord>() == 184);

impl OomKillRecord {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            present: 0,
            ktime_ns: 0,
            gfp_mask: 0,
            order: 0,
            totalpages: 0,
            chosen_points: 0,
            constraint: 0,
            chosen_pid: 0,
            chosen_tgid: 0,
            trigger_pid: 0,
            trigger_tgid: 0,
            _pad0: 0,
            memcg_id: 0,
            trigger_memcg_id: 0,
            chosen_comm: [0; COMM_LEN],
            trigger_comm: [0; COMM_LEN],
            message: [0; MESSAGE_LEN],
            invocation_ktime_ns: 0,
        }
    }
}

/// `struct oom_control` and `struct mem_cgroup` member offsets (bytes) from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomControlOffsets {
    pub memcg: u32,
    pub gfp_mask: u32,
    pub order: u32,
    pub totalpages: u32,
    pub chosen: u32,
    pub chosen_points: u32,
    pub constraint: u32,
    /// `mem_cgroup.css`: the embedded `cgroup_subsys_state`.
    pub memcg_css: u32,
}

const _: () = assert!(core::mem::size_of::<OomControlOffsets>() == 32);

impl OomControlOffsets {
    pub const ABSENT: Self = Self {
        memcg: OFFSET_ABSENT,
        gfp_mask: OFFSET_ABSENT,
        order: OFFSET_ABSENT,
        totalpages: OFFSET_ABSENT,
        chosen: OFFSET_ABSENT,
        chosen_points: OFFSET_ABSENT,
        constraint: OFFSET_ABSENT,
        memcg_css: OFFSET_ABSENT,
    };
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer reservations that failed (a record was lost).
    pub const RINGBUF_DROPS: u32 = 0;
    /// Kernel memory reads that failed.
    pub const READ_ERRORS: u32 = 1;
    /// `oom:reclaim_retry_zone` events: the page allocator retrying reclaim on a zone (near-OOM).
    pub const RECLAIM_RETRY_ZONE: u32 = 2;
    /// `oom:compact_retry` events: the page allocator retrying compaction (near-OOM).
    pub const COMPACT_RETRY: u32 = 3;
    /// Tasks the OOM killer scored that were not reported: over
    /// [`crate::MAX_CANDIDATES_PER_INVOCATION`] in one invocation, or the `CANDIDATES` ring full.
    pub const CANDIDATE_DROPS: u32 = 4;
    /// Trigger stacks lost because the `STACKS` ring was full (victim records are never
    /// displaced: they have their own ring).
    pub const STACK_DROPS: u32 = 5;
    /// SIGKILL records not written because their sender was over its rate
    /// ([`crate::SIGKILL_BURST`], [`crate::SIGKILL_PER_SECOND`]).
    pub const SIGKILL_RATE_DROPS: u32 = 6;
    /// SIGKILL records lost because the `SIGKILLS` ring was full.
    pub const SIGKILL_RING_DROPS: u32 = 7;
    pub const LEN: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with every padding
    // byte spelled out as a field, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::VictimRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MarkVictimOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PidNsOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomKillRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomControlOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExeOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SigkillRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SigkillFilter {}
}
