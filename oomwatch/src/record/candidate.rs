//! One task the OOM killer scored, as an event lists it (`candidates`).
use serde::Serialize;

/// One scored task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    /// Badness points (higher is killed first).
    pub points: i64,
    /// Resident memory, bytes.
    pub rss: Option<u64>,
    /// Swapped-out memory, bytes.
    pub swap: Option<u64>,
    /// Page tables, bytes.
    pub pgtables: Option<u64>,
    pub oom_score_adj: Option<i16>,
    /// Its memory cgroup and pod, when it was still alive to ask (`/proc/<pid>/cgroup`).
    pub cgroup: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}
