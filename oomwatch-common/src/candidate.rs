//! Records and globals of the `oom_badness` programs: every task the OOM killer scores inside
//! one `out_of_memory()` invocation, with its points. Same rules as the crate root:
//! `#[repr(C)]`, explicit padding, size asserts.
use crate::{COMM_LEN, OFFSET_ABSENT};

/// At most this many tasks are reported per OOM invocation; the rest are counted in
/// [`crate::counter::CANDIDATE_DROPS`]. One invocation's records fit the `CANDIDATES` ring.
pub const MAX_CANDIDATES_PER_INVOCATION: u32 = 4096;

/// Bits of [`CandidateRecord::present`].
pub mod candidate_field {
    /// `pid` and `tgid` were read from the task.
    pub const PID: u32 = 1 << 0;
    pub const COMM: u32 = 1 << 1;
    /// `rss_pages` (file + anon + shmem counters of the task's mm) was read.
    pub const RSS: u32 = 1 << 2;
    pub const SWAP: u32 = 1 << 3;
    pub const PGTABLES: u32 = 1 << 4;
    pub const OOM_SCORE_ADJ: u32 = 1 << 5;
}

/// One task scored by `oom_badness(p, totalpages)` while the running task was inside
/// `out_of_memory()`: the kernel's own points for it, in the kernel's own units.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CandidateRecord {
    /// [`crate::RecordKind::CandidateFexit`] or [`crate::RecordKind::CandidateKretprobe`].
    pub kind: u32,
    /// Bits from [`candidate_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` when the running task entered `out_of_memory()`: with
    /// `trigger_pid`, the invocation's key (also in `OomKillRecord::invocation_ktime_ns`).
    pub invocation_ktime_ns: u64,
    /// `bpf_ktime_get_ns()` when the task was scored.
    pub ktime_ns: u64,
    /// The running task: the one whose allocation invoked the killer.
    pub trigger_pid: i32,
    pub trigger_tgid: i32,
    /// The scored task (`p->pid`, `p->tgid`).
    pub pid: i32,
    pub tgid: i32,
    /// `oom_badness()`'s return value (never `LONG_MIN`: skipped tasks are not reported).
    pub points: i64,
    /// Its `totalpages` argument: the OOM domain's size in pages.
    pub totalpages: u64,
    /// `get_mm_rss(p->mm)`, `get_mm_counter(p->mm, MM_SWAPENTS)` (pages) and
    /// `mm_pgtables_bytes(p->mm)`, read when the task was scored (absent when `p->mm` is null).
    pub rss_pages: u64,
    pub swap_pages: u64,
    pub pgtables_bytes: u64,
    /// 0-based index of this task among those scored in the invocation: a gap means lost
    /// records.
    pub seq: u32,
    /// `p->signal->oom_score_adj`.
    pub oom_score_adj: i16,
    pub _pad0: u16,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<CandidateRecord>() == 104);

impl CandidateRecord {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            present: 0,
            invocation_ktime_ns: 0,
            ktime_ns: 0,
            trigger_pid: 0,
            trigger_tgid: 0,
            pid: 0,
            tgid: 0,
            points: 0,
            totalpages: 0,
            rss_pages: 0,
            swap_pages: 0,
            pgtables_bytes: 0,
            seq: 0,
            oom_score_adj: 0,
            _pad0: 0,
            comm: [0; COMM_LEN],
        }
    }
}

/// Offsets (BTF) of what `oom_badness()` reads from the task's `mm_struct`. Each counter offset
/// points at the `long` holding that counter's value (`atomic_long_t` in `mm_rss_stat`, or a
/// `percpu_counter`'s `count`, whose approximate value `get_mm_counter()` also reads).
/// [`OFFSET_ABSENT`] where this kernel's BTF lacks it; the field is then left absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateOffsets {
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`, `MM_SWAPENTS` in `mm_struct.rss_stat`.
    pub mm_file: u32,
    pub mm_anon: u32,
    pub mm_shmem: u32,
    pub mm_swap: u32,
    /// `mm_struct.pgtables_bytes`
    pub mm_pgtables_bytes: u32,
}

const _: () = assert!(core::mem::size_of::<CandidateOffsets>() == 24);

impl CandidateOffsets {
    pub const ABSENT: Self = Self {
        task_mm: OFFSET_ABSENT,
        mm_file: OFFSET_ABSENT,
        mm_anon: OFFSET_ABSENT,
        mm_shmem: OFFSET_ABSENT,
        mm_swap: OFFSET_ABSENT,
        mm_pgtables_bytes: OFFSET_ABSENT,
    };
}

/// What `OOM_SCOPE` holds for a task inside `out_of_memory()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomScope {
    /// `bpf_ktime_get_ns()` at entry.
    pub ktime_ns: u64,
    /// Tasks scored so far in this invocation (reported or dropped).
    pub scored: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<OomScope>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], only integers and byte arrays, every padding byte a named field: any
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::CandidateRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CandidateOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomScope {}
}
