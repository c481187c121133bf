//! The pieces of an OOM report the parser ([`super::oom`]) recognises, one type per kind of
//! line; shared by the line parsers ([`super::lines`], [`super::dump`]) below the parser.
use super::meminfo::Counter;

/// `"<comm> invoked oom-killer: …"`: the allocation that invoked the killer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoked {
    /// The allocating task's command name.
    pub comm: String,
    pub gfp_mask: u32,
    /// The decoded flags, e.g. `GFP_KERNEL` (4.5+).
    pub gfp_flags: Option<String>,
    /// The allocation's node mask, printed in this line by 4.9–4.19 (`(null)` when none).
    pub nodemask: Option<String>,
    /// Allocation order; -1 for a sysrq-triggered kill.
    pub order: i32,
    /// The allocating task's `oom_score_adj`.
    pub oom_score_adj: i16,
}

/// The constraint under which the killer ran, as the kernel names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintKind {
    /// `CONSTRAINT_NONE`: the whole machine was out of memory.
    None,
    /// `CONSTRAINT_CPUSET`.
    Cpuset,
    /// `CONSTRAINT_MEMORY_POLICY`.
    MemoryPolicy,
    /// `CONSTRAINT_MEMCG`: a memory cgroup hit its limit.
    Memcg,
    /// A name this parser does not know.
    Other(String),
}

impl ConstraintKind {
    /// From the kernel's `oom_constraint_text[]` name.
    pub fn from_kernel(name: &str) -> Self {
        match name {
            "CONSTRAINT_NONE" => Self::None,
            "CONSTRAINT_CPUSET" => Self::Cpuset,
            "CONSTRAINT_MEMORY_POLICY" => Self::MemoryPolicy,
            "CONSTRAINT_MEMCG" => Self::Memcg,
            other => Self::Other(other.to_string()),
        }
    }
}

/// `"oom-kill:constraint=…"` (5.0+): the one-line summary naming the victim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub constraint: ConstraintKind,
    /// Node list, or `(null)`.
    pub nodemask: String,
    /// The allocating task's cpuset name and allowed nodes (absent without `CONFIG_CPUSETS`).
    pub cpuset: Option<String>,
    pub mems_allowed: Option<String>,
    /// The memory cgroup that hit its limit; `None` for a global OOM (`global_oom`).
    pub oom_memcg: Option<String>,
    /// The victim's memory cgroup (absent without `CONFIG_MEMCG`).
    pub task_memcg: Option<String>,
    /// The victim.
    pub comm: String,
    pub pid: i32,
    pub uid: u32,
}

/// One row of the task table; memory values are in pages except `pgtables_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRow {
    pub pid: i32,
    pub uid: u32,
    pub tgid: i32,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    /// 6.8+.
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
    /// 4.15+.
    pub pgtables_bytes: Option<u64>,
    /// Before 4.15: page-table pages.
    pub nr_ptes: Option<u64>,
    pub nr_pmds: Option<u64>,
    pub swapents: Option<u64>,
    pub oom_score_adj: Option<i16>,
    pub name: String,
}

/// The task table, emitted when the first non-row line after it arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDump {
    pub rows: Vec<DumpRow>,
    /// Rows beyond [`dump::MAX_DUMP_ROWS`], counted and dropped.
    pub dropped_rows: u64,
    /// Row-shaped lines that did not parse.
    pub malformed_rows: u64,
}

/// `"…: Killed process N (comm) total-vm:…"`: the victim and its memory at the kill, in kB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Killed {
    /// A memory cgroup OOM (`Memory cgroup out of memory: …`) rather than a global one.
    pub memcg: bool,
    /// The text before `": Killed process"` (`Out of memory`, `Memory cgroup out of memory`,
    /// `Out of memory (oom_kill_allocating_task)`); absent before 5.1.
    pub reason: Option<String>,
    pub pid: i32,
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    /// 4.6+.
    pub shmem_rss_kb: Option<u64>,
    /// 5.3+ (and some distribution kernels).
    pub uid: Option<u32>,
    /// 5.9+.
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i16>,
}

/// `"oom_reaper: reaped process N (comm), now …"`: what was left after the reaper ran, in kB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    pub comm: String,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
}

/// One recognised piece of an OOM report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomItem {
    Invoked(Invoked),
    /// Before 5.0: `"<comm> cpuset=<name> mems_allowed=<nodes>"` (also printed by allocation
    /// failure warnings).
    CpusetContext {
        comm: String,
        cpuset: String,
        mems_allowed: String,
    },
    /// Before 5.0: `"Task in <task_memcg> killed as a result of limit of <oom_memcg>"`.
    MemcgContext {
        task_memcg: Option<String>,
        oom_memcg: String,
    },
    TaskDump(TaskDump),
    Constraint(Constraint),
    /// Before 5.1: `"…: Kill process N (comm) score S or sacrifice child"`; a `Killed` line for
    /// this task or one of its children follows.
    Selected {
        memcg: bool,
        pid: i32,
        comm: String,
        score: u64,
    },
    Killed(Killed),
    /// 4.19+: `"Tasks in <memcg> are going to be killed due to memory.oom.group set"`; one
    /// `Killed` line per further member follows.
    GroupKill {
        memcg: String,
    },
    /// 5.1+: the selected victim exited before it could be killed.
    VictimExiting {
        memcg: bool,
        pid: i32,
        comm: String,
    },
    Reaped(Reaped),
    /// `"oom_kill_process: N callbacks suppressed"`: N report headers were rate limited away.
    Suppressed {
        callbacks: u64,
    },
    /// A memcg OOM's page counter: `memory: usage NkB, limit NkB, failcnt N` (also `swap`,
    /// `memory+swap`, `kmem`).
    Counter(Counter),
    /// `Memory cgroup stats for <cgroup>:` and its `key value` lines (bytes).
    MemcgStats {
        cgroup: String,
        stats: Vec<(String, u64)>,
    },
    /// A global OOM's `Mem-Info:` `key:value` pairs (pages).
    GlobalMemInfo {
        pages: Vec<(String, u64)>,
    },
}
