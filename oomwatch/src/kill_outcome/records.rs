//! The follow-up JSON records (`docs/events.md`, "Kill lifecycle records").
use std::path::Path;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::tracked::{Reaper, Tracked};
use crate::sys::clock::wall_clock_of;

/// `{"type":"oom_kill_lifecycle", ...}`: written once per followed kill, when the task exited.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LifecycleLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Wall-clock time of the exit (of the kill when the exit was not observed).
    #[serde(serialize_with = "rfc3339_nanos")]
    pub time: SystemTime,
    pub host: String,
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub oom_id: Option<u64>,
    pub killer: String,
    /// The main event's `ktime_ns`.
    pub kill_ktime_ns: u64,
    pub exit_ktime_ns: Option<u64>,
    pub kill_to_exit_ns: Option<u64>,
    pub reaper: Reaper,
    pub kill_to_reaper_woken_ns: Option<u64>,
    pub kill_to_reaped_ns: Option<u64>,
    /// It had been reported stuck (`oom_kill_stuck`) before it exited.
    pub stuck: bool,
}

impl LifecycleLine {
    /// `exit_seen`: false for a task found gone without an exit record.
    pub(super) fn of(t: &Tracked, host: &str, exit_seen: bool) -> Self {
        let since = |ns: Option<u64>| ns.map(|n| n.saturating_sub(t.kill_ns));
        let exit = t.exit_ns.filter(|_| exit_seen);
        LifecycleLine {
            kind: "oom_kill_lifecycle",
            time: wall_clock_of(exit.unwrap_or(t.kill_ns)),
            host: host.to_string(),
            pid: t.pid,
            tgid: t.tgid,
            comm: t.comm.clone(),
            cgroup: t.cgroup.clone(),
            oom_id: t.oom_id,
            killer: t.killer.clone(),
            kill_ktime_ns: t.kill_ns,
            exit_ktime_ns: exit,
            kill_to_exit_ns: since(exit),
            reaper: t.reaper(),
            kill_to_reaper_woken_ns: since(t.woken_ns),
            kill_to_reaped_ns: since(t.reaped_ns),
            stuck: t.stuck,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// `{"type":"oom_kill_stuck", ...}`: a killed task still there `--stuck-after-ms` after the kill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StuckLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Wall-clock time of the check.
    #[serde(serialize_with = "rfc3339_nanos")]
    pub time: SystemTime,
    pub host: String,
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub oom_id: Option<u64>,
    pub killer: String,
    pub kill_ktime_ns: u64,
    /// Time since the kill, ns.
    pub stuck_for_ns: u64,
    /// The scheduler state of its most telling thread (`/proc/<pid>/task/*/stat`): `D`
    /// (uninterruptible sleep, the usual cause: blocked in the kernel, e.g. on I/O, a lock or a
    /// FUSE server), `R`, `S`, ...
    pub state: String,
    /// The thread in that state.
    pub tid: i32,
    /// The kernel function that thread sleeps in (`/proc/<pid>/task/<tid>/wchan`), when the
    /// kernel tells.
    pub wchan: Option<String>,
    pub reaper: Reaper,
    pub kill_to_reaped_ns: Option<u64>,
}

impl StuckLine {
    pub(super) fn of(t: &Tracked, host: &str, (state, tid): (char, i32), proc_root: &Path) -> Self {
        let now = crate::sys::clock::monotonic_ns();
        let task = proc_root
            .join(t.key.to_string())
            .join("task")
            .join(tid.to_string());
        let wchan = std::fs::read_to_string(task.join("wchan"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "0");
        StuckLine {
            kind: "oom_kill_stuck",
            time: SystemTime::now(),
            host: host.to_string(),
            pid: t.pid,
            tgid: t.tgid,
            comm: t.comm.clone(),
            cgroup: t.cgroup.clone(),
            oom_id: t.oom_id,
            killer: t.killer.clone(),
            kill_ktime_ns: t.kill_ns,
            stuck_for_ns: now.saturating_sub(t.kill_ns),
            state: state.to_string(),
            tid,
            wchan,
            reaper: t.reaper(),
            kill_to_reaped_ns: t.reaped_ns.map(|n| n.saturating_sub(t.kill_ns)),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The most telling state of a process's threads (`/proc/<pid>/task/*/stat`: `D` before `R`
/// before other live states before `Z`/`X`) and the thread in it; `None` when it is gone.
pub fn task_state(proc_root: &Path, pid: i32) -> Option<(char, i32)> {
    let rank = |c: char| match c {
        'D' => 4,
        'R' => 3,
        'Z' | 'X' | 'x' => 1,
        _ => 2,
    };
    let tasks = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")).ok()?;
    tasks
        .flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = crate::sys::procfs::read_text(&e.path().join("stat"))?;
            Some((parse_state(&stat)?, tid))
        })
        .max_by_key(|&(c, tid)| (rank(c), -tid))
}

/// The field after the command (which may itself hold `)` and spaces: take the last `)`).
pub fn parse_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

fn rfc3339_nanos<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*t))
}
