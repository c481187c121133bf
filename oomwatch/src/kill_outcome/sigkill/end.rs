//! A container's end: its init (pid 1 in its pid namespace) exits after a SIGKILL. The
//! `container_killed` line says who sent it, whether partial OOM kills came before in the same
//! container, and what the runtime will report (`runtime_reason`): containerd's CRI and Docker
//! mark a container `OOMKilled` when its cgroup had an OOM kill at any time in its life, not
//! only when the init was the victim, so an exit 0 or a `kill -9` after a partial OOM kill
//! shows as `OOMKilled`, and an OOM-killed init whose cgroup saw nothing shows as `Error` 137.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::kind::SenderKind;
use super::lines::{ContainerKilledLine, SigkillLine};
use crate::sys::cgroup::MemoryHierarchy;
use crate::sys::clock::wall_clock_of;

/// How long a killed init is followed without its exit (a stuck one is `oom_kill_stuck`'s
/// business; this only bounds the memory).
const FOLLOW: Duration = Duration::from_secs(600);
/// How long an exit waits for its SIGKILL to be decided (that waits at most for its OOM
/// event: `HOLD`).
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Containers whose partial kills are remembered.
const MAX_CONTAINERS: usize = 4096;
/// Exit code the runtimes report for a process killed by SIGKILL (128 + 9).
const SIGKILL_EXIT: i32 = 137;

/// A killed init and its exit, when both are known.
#[derive(Debug)]
pub struct Ended {
    pub kill: SigkillLine,
    pub exit_ktime_ns: u64,
    pub partial_before: u64,
    pub last_partial: Option<u64>,
}

/// Inits killed and not yet exited; partial kills by container cgroup.
#[derive(Debug, Default)]
pub struct Ends {
    killed: HashMap<i32, (SigkillLine, Instant)>,
    /// Exits that came before their SIGKILL was decided (it waited for its OOM event).
    exited_early: HashMap<i32, (u64, Instant)>,
    partials: HashMap<String, (u64, Option<u64>)>,
}

impl Ends {
    /// A partial OOM kill in `cgroup`.
    pub fn partial(&mut self, cgroup: &str, oom_id: Option<u64>) {
        if self.partials.len() >= MAX_CONTAINERS && !self.partials.contains_key(cgroup) {
            self.partials.clear();
        }
        let e = self.partials.entry(cgroup.to_string()).or_default();
        e.0 += 1;
        e.1 = oom_id.or(e.1);
    }

    /// The init `tgid` was sent `kill`; its end if it already exited.
    pub fn killed(&mut self, tgid: i32, kill: SigkillLine, max: usize) -> Option<Ended> {
        if let Some((exit, _)) = self.exited_early.remove(&tgid) {
            return Some(self.ended(kill, exit));
        }
        if self.killed.len() >= max {
            let oldest = self
                .killed
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.killed.remove(&k);
            }
        }
        // A second SIGKILL to a dying init keeps the first (the one that killed it).
        self.killed.entry(tgid).or_insert((kill, Instant::now()));
        None
    }

    /// The process `tgid` exited; its end if it was a killed init.
    pub fn exited(&mut self, tgid: i32, exit_ktime_ns: u64) -> Option<Ended> {
        match self.killed.remove(&tgid) {
            Some((kill, _)) => Some(self.ended(kill, exit_ktime_ns)),
            None => {
                if self.exited_early.len() < 4096 {
                    self.exited_early
                        .insert(tgid, (exit_ktime_ns, Instant::now()));
                }
                None
            }
        }
    }

    fn ended(&mut self, kill: SigkillLine, exit_ktime_ns: u64) -> Ended {
        let (partial_before, last_partial) = kill
            .target
            .cgroup
            .as_deref()
            .and_then(|cg| self.partials.remove(cg))
            .unwrap_or((0, None));
        Ended {
            kill,
            exit_ktime_ns,
            partial_before,
            last_partial,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Forgets inits followed longer than [`FOLLOW`] and exits nobody claimed.
    pub fn expire(&mut self, now: Instant) {
        self.killed
            .retain(|_, (_, t)| now.duration_since(*t) < FOLLOW);
        self.exited_early
            .retain(|_, (_, t)| now.duration_since(*t) < EXIT_WAIT);
    }
}

/// The `container_killed` line of `e`; the cgroup's OOM count read now, in `hierarchy`.
pub fn line(e: Ended, host: &str, hierarchy: Option<&MemoryHierarchy>) -> ContainerKilledLine {
    let cgroup_oom_kills = match (hierarchy, e.kill.target.cgroup.as_deref()) {
        (Some(h), Some(cg)) => crate::host::memcg_events::read_cgroup(&h.dir(cg))
            .ok()
            .flatten()
            .and_then(|(_, c)| c.oom_kill),
        _ => None,
    };
    let oom_kind = matches!(
        e.kill.sender_kind,
        SenderKind::OomKernel | SenderKind::OomGroup
    );
    let oom_seen = cgroup_oom_kills.is_some_and(|n| n > 0) || e.partial_before > 0 || oom_kind;
    let runtime_reason = if oom_seen { "OOMKilled" } else { "Error" };
    let seen = cgroup_oom_kills.unwrap_or(0).max(e.partial_before);
    let explanation = explain(&e, runtime_reason, seen);
    let k = e.kill;
    ContainerKilledLine {
        kind: "container_killed",
        time: humantime::format_rfc3339_nanos(wall_clock_of(e.exit_ktime_ns)).to_string(),
        ktime_ns: e.exit_ktime_ns,
        host: host.to_string(),
        kill_to_exit_ns: e.exit_ktime_ns.checked_sub(k.ktime_ns),
        init: k.target,
        sigkill_id: k.sigkill_id,
        sender_kind: k.sender_kind,
        sender: k.sender,
        oom_id: k.oom_id,
        partial_oom_kills_before: e.partial_before,
        last_partial_oom_id: e.last_partial,
        cgroup_oom_kills,
        runtime_reason,
        exit_code: SIGKILL_EXIT,
        explanation,
    }
}

/// One sentence: who ended the container and why the runtime's status may say otherwise.
fn explain(e: &Ended, reason: &str, oom_kills: u64) -> String {
    let who = match e.kill.sender_kind {
        SenderKind::OomKernel => "the kernel's OOM killer killed the container's init".into(),
        SenderKind::OomGroup => "a memory.oom.group kill took the container's tasks".into(),
        SenderKind::OomUserspace => "a userspace OOM killer killed the container's init".into(),
        SenderKind::Kubelet => "kubelet's own process killed the container's init".into(),
        SenderKind::Runtime => {
            "the container runtime killed the container's init (a stop, a kill, or kubelet's \
             eviction or probe failure through the CRI)"
                .to_string()
        }
        SenderKind::SelfKill => "the container's init was killed from inside the container".into(),
        SenderKind::Other => format!(
            "{} (pid {}) sent SIGKILL to the container's init",
            e.kill
                .sender
                .exe
                .as_deref()
                .or(e.kill.sender.party.comm.as_deref())
                .unwrap_or("a process"),
            e.kill.sender.party.pid
        ),
    };
    let oom = matches!(
        e.kill.sender_kind,
        SenderKind::OomKernel | SenderKind::OomGroup
    );
    match (oom, reason) {
        (false, "OOMKilled") => format!(
            "{who}; the runtime will still report OOMKilled (exit 137) because the container's \
             cgroup had {} earlier OOM kill(s) that left it running",
            oom_kills.max(1)
        ),
        (true, "OOMKilled") => format!("{who}; the runtime reports OOMKilled (exit 137)"),
        _ => format!("{who}; the runtime will report Error with exit code 137, not OOMKilled"),
    }
}
