//! Who sent every SIGKILL to a task in a non-root memory cgroup (issue 15): one `sigkill` line
//! per signal with the target, the sender, its executable and its kind (`kind`), and one
//! `container_killed` line when a container's init exits after one (`lines`).
//!
//! The kernel's own kills (`SI_KERNEL`) wait, at most [`HOLD`], for the OOM event they belong
//! to (the event waits for its context in the correlator): matched by the trigger (the sender)
//! and the time, or by the victim, they become `oom_kernel` or `oom_group` with its `oom_id`.
//! Everything else is decided when the record arrives.
mod end;
mod kind;
mod lines;
mod metrics;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oomwatch_common::{sigkill_field, RecordKind, SigkillRecord, EXE_NAME_LEN};

use crate::enrich::Enricher;
use crate::record::{OomEvent, KILLER_KERNEL};
use crate::sys::cgroup::{IdResolver, MemoryHierarchy};
use crate::sys::clock::wall_clock_of;
use crate::sys::procfs;
use crate::sys::text::comm_str;

pub use kind::SenderKind;
pub use lines::{ContainerKilledLine, Party, SenderParty, SigkillLine};
pub use metrics::{collector, SigkillStats};

/// How long a kernel-sent SIGKILL waits for its OOM event.
pub const HOLD: Duration = Duration::from_secs(5);
/// A SIGKILL and an OOM event this close (same trigger or victim) belong together.
const LINK_NS: u64 = 1_000_000_000;
/// Kernel OOM kills remembered for linking, SIGKILLs waiting, inits followed.
const MAX_OOMS: usize = 1024;
const MAX_HELD: usize = 4096;
const MAX_INITS: usize = 4096;

/// A kernel OOM kill, as far as linking needs it.
#[derive(Clone, Debug)]
struct OomSeen {
    ktime_ns: u64,
    trigger_pid: Option<i32>,
    victim_tgid: i32,
    oom_id: Option<u64>,
    group: bool,
}

/// A SIGKILL record made into a line, its kind not yet decided.
#[derive(Clone, Debug)]
struct Pending {
    line: SigkillLine,
    /// The sender's `/proc` entry when the record arrived.
    proc: Option<procfs::Executable>,
    exe_name: Option<String>,
    until: Instant,
}

/// SIGKILL attribution; see the module documentation.
pub struct Sigkills {
    host: String,
    proc_root: PathBuf,
    resolver: Option<IdResolver>,
    hierarchy: Option<MemoryHierarchy>,
    next_id: u64,
    ooms: VecDeque<OomSeen>,
    held: Vec<Pending>,
    ends: end::Ends,
    stats: Arc<Mutex<SigkillStats>>,
}

impl Sigkills {
    /// `max_label_sets` caps `oomwatch_container_sigkills_total` like the OOM kill series.
    pub fn new(host: String, proc_root: PathBuf, max_label_sets: usize) -> Self {
        Self {
            host,
            proc_root,
            resolver: None,
            hierarchy: None,
            next_id: 0,
            ooms: VecDeque::new(),
            held: Vec::new(),
            ends: end::Ends::default(),
            stats: Arc::new(Mutex::new(SigkillStats::new(max_label_sets))),
        }
    }

    /// Names cgroups from the kernel's ids with `resolver` (shared with the other trackers),
    /// and reads the containers' OOM counts, in its hierarchy.
    pub fn with_resolver(mut self, resolver: Option<IdResolver>) -> Self {
        self.hierarchy = resolver.as_ref().map(|r| r.hierarchy().clone());
        self.resolver = resolver;
        self
    }

    pub fn stats(&self) -> Arc<Mutex<SigkillStats>> {
        Arc::clone(&self.stats)
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, SigkillStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One record of the `SIGKILLS` ring; returns the lines to write now.
    pub fn push(&mut self, rec: &SigkillRecord, now: Instant, en: &mut Enricher) -> Vec<String> {
        let Some(p) = self.pending(rec, now, en) else {
            self.stats_mut().filtered += 1;
            return Vec::new();
        };
        if p.line.si_code == Some(kind::SI_KERNEL) {
            let oom = self.link(&p.line);
            if oom.is_none() {
                if self.held.len() >= MAX_HELD {
                    let old = self.held.remove(0);
                    let mut out = Vec::new();
                    self.decide(old, None, &mut out);
                    self.held.push(p);
                    return out;
                }
                self.held.push(p);
                return Vec::new();
            }
            let mut out = Vec::new();
            self.decide(p, oom, &mut out);
            return out;
        }
        let mut out = Vec::new();
        self.decide(p, None, &mut out);
        out
    }

    /// The line of a record, without its kind; `None` for a target in the root cgroup (the
    /// tracepoint program cannot tell) or one whose cgroup is unknown.
    fn pending(&mut self, rec: &SigkillRecord, now: Instant, en: &mut Enricher) -> Option<Pending> {
        let has = |bit: u32| rec.present & bit != 0;
        let proc_root = &self.proc_root;
        // The task's cgroup in /proc, checked by inode, spares a walk of the hierarchy.
        let mut resolve = |bit: u32, id: u64, pid: i32| {
            let r = self.resolver.as_mut().filter(|_| has(bit))?;
            r.resolve_for_task(id, proc_root, pid)
        };
        let target_cg = resolve(
            sigkill_field::TARGET_MEMCG_ID,
            rec.target_memcg_id,
            rec.target_pid,
        );
        let sender_cg = resolve(
            sigkill_field::SENDER_MEMCG_ID,
            rec.sender_memcg_id,
            rec.sender_pid,
        );
        let btf = RecordKind::from_u32(rec.kind) == Some(RecordKind::SigkillBtf);
        let src = if btf {
            "signal_btf"
        } else {
            "signal_tracepoint"
        };
        let mut sources = std::collections::BTreeMap::new();
        sources.insert("target", src);
        sources.insert("sender", src);
        let (target_cg, from_proc) = match target_cg {
            Some(cg) => (cg, false),
            None => (procfs::read(&self.proc_root, rec.target_pid).cgroup?, true),
        };
        if target_cg == "/" {
            return None;
        }
        if from_proc {
            sources.insert("target_cgroup", "proc_cgroup");
        }
        let target = self.target(rec, target_cg, en);
        let sender = self.sender(rec, sender_cg, en, &mut sources);
        let exe_name = exe_components(rec).first().cloned();
        let code = has(sigkill_field::CODE).then_some(rec.code);
        let proc = kind::proc_matters(code, exe_name.as_deref())
            .then(|| procfs::executable(&self.proc_root, rec.sender_tgid))
            .flatten();
        let container_init = has(sigkill_field::TARGET_PIDNS)
            .then_some(rec.target_ns_level > 0 && rec.target_ns_tgid == 1);
        if container_init.is_some() {
            sources.insert("container_init", "signal_btf");
        }
        let line = SigkillLine {
            kind: "sigkill",
            time: humantime::format_rfc3339_nanos(wall_clock_of(rec.ktime_ns)).to_string(),
            ktime_ns: rec.ktime_ns,
            host: self.host.clone(),
            sigkill_id: 0,
            target,
            container_init,
            sender,
            sender_kind: SenderKind::Other,
            oom_id: None,
            si_code: has(sigkill_field::CODE).then_some(rec.code),
            delivered: has(sigkill_field::RESULT).then_some(rec.result == 0),
            sources,
        };
        Some(Pending {
            line,
            proc,
            exe_name,
            until: now + HOLD,
        })
    }

    fn target(&mut self, rec: &SigkillRecord, cgroup: String, en: &mut Enricher) -> Party {
        let has = |bit: u32| rec.present & bit != 0;
        let mut p = Party {
            pid: rec.target_pid,
            tgid: has(sigkill_field::TARGET_TGID).then_some(rec.target_tgid),
            comm: has(sigkill_field::TARGET_COMM).then(|| comm_str(&rec.target_comm)),
            ..Party::default()
        };
        p.set_workload(en.workload_of(&cgroup));
        p.cgroup = Some(cgroup);
        p
    }

    fn sender(
        &mut self,
        rec: &SigkillRecord,
        cgroup: Option<String>,
        en: &mut Enricher,
        sources: &mut std::collections::BTreeMap<&'static str, &'static str>,
    ) -> SenderParty {
        let mut p = Party {
            pid: rec.sender_pid,
            tgid: Some(rec.sender_tgid),
            comm: Some(comm_str(&rec.sender_comm)),
            ..Party::default()
        };
        let cgroup = cgroup.or_else(|| procfs::read(&self.proc_root, rec.sender_pid).cgroup);
        if let Some(cg) = cgroup {
            p.set_workload(en.workload_of(&cg));
            p.cgroup = Some(cg);
        }
        let parts = exe_components(rec);
        let exe = (!parts.is_empty()).then(|| {
            sources.insert("sender_exe", "task_exe_file");
            let mut v: Vec<&str> = parts.iter().map(String::as_str).rev().collect();
            v.insert(0, "");
            v.join("/")
        });
        SenderParty { party: p, exe }
    }

    /// The OOM kill a kernel-sent SIGKILL belongs to: `Some(group)` when found.
    fn link(&self, line: &SigkillLine) -> Option<(Option<u64>, bool)> {
        let target = line.target.tgid.unwrap_or(line.target.pid);
        self.ooms
            .iter()
            .find(|o| {
                let near = o.ktime_ns.abs_diff(line.ktime_ns) <= LINK_NS;
                near && (o.trigger_pid == Some(line.sender.party.pid) || o.victim_tgid == target)
            })
            .map(|o| (o.oom_id, o.group))
    }

    /// Decides the kind of `p` (`oom` from [`link`](Self::link)), numbers and writes it.
    fn decide(&mut self, mut p: Pending, oom: Option<(Option<u64>, bool)>, out: &mut Vec<String>) {
        let s = kind::Sender {
            code: p.line.si_code,
            tgid: p.line.sender.party.tgid.unwrap_or(p.line.sender.party.pid),
            target_tgid: Some(p.line.target.tgid.unwrap_or(p.line.target.pid)),
            cgroup: p.line.sender.party.cgroup.as_deref(),
            target_cgroup: p.line.target.cgroup.as_deref(),
            exe_name: p.exe_name.as_deref(),
            proc: p.proc.as_ref(),
        };
        p.line.sender_kind = kind::classify(&s, oom.map(|o| o.1));
        p.line.oom_id = oom.and_then(|o| o.0);
        let how = if oom.is_some() {
            "oom_event"
        } else {
            "sender_exe"
        };
        p.line.sources.insert("sender_kind", how);
        p.line.sigkill_id = self.next_id;
        self.next_id += 1;
        self.stats_mut().observe(&p.line);
        if let Ok(json) = serde_json::to_string(&p.line) {
            out.push(json);
        }
        if p.line.container_init == Some(true) && p.line.delivered != Some(false) {
            let tgid = p.line.target.tgid.unwrap_or(p.line.target.pid);
            let end = self.ends.killed(tgid, p.line, MAX_INITS);
            out.extend(end.map(|e| self.finish_end(e)));
        }
    }

    /// A written OOM event: kernel kills link the SIGKILLs waiting for them; partial kills are
    /// remembered for their container's end.
    pub fn on_event(&mut self, ev: &OomEvent) -> Vec<String> {
        if ev.replayed || ev.killer.as_deref() != Some(KILLER_KERNEL) {
            return Vec::new();
        }
        if ev.container_kill.partial_kill == Some(true) {
            if let Some(cg) = ev.cgroup.as_deref() {
                self.ends.partial(cg, ev.oom_id);
            }
        }
        if self.ooms.len() >= MAX_OOMS {
            self.ooms.pop_front();
        }
        self.ooms.push_back(OomSeen {
            ktime_ns: ev.ktime_ns,
            trigger_pid: ev.trigger.as_ref().map(|t| t.pid),
            victim_tgid: ev.tgid.unwrap_or(ev.pid),
            oom_id: ev.oom_id,
            group: ev.oom.group_kill == Some(true) || ev.container_kill.oom_group == Some(true),
        });
        let (linked, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|p| self.link(&p.line).is_some());
        self.held = rest;
        let mut out = Vec::new();
        for p in linked {
            let oom = self.link(&p.line);
            self.decide(p, oom, &mut out);
        }
        out
    }

    /// A followed process exited (`sched_process_exit` of the `VICTIMS` map): a container's
    /// init ends its container.
    pub fn on_exit(&mut self, tgid: i32, exit_ktime_ns: u64) -> Vec<String> {
        self.ends
            .exited(tgid, exit_ktime_ns)
            .map(|e| self.finish_end(e))
            .into_iter()
            .collect()
    }

    fn finish_end(&mut self, e: end::Ended) -> String {
        let line = end::line(e, &self.host, self.hierarchy.as_ref());
        self.stats_mut().container_ended(&line);
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// The earliest time [`due`](Self::due) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self.held.iter().map(|p| p.until).min();
        [held, self.ends.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Kernel-sent SIGKILLs that found no OOM event in time; inits that never exited.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let (late, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|p| p.until <= now);
        self.held = rest;
        let mut out = Vec::new();
        for p in late {
            self.decide(p, None, &mut out);
        }
        self.ends.expire(now);
        out
    }
}

/// The sender's executable path components from the record, innermost first.
fn exe_components(rec: &SigkillRecord) -> Vec<String> {
    if rec.present & sigkill_field::SENDER_EXE == 0 {
        return Vec::new();
    }
    let depth = (rec.exe_depth as usize).min(rec.sender_exe.len());
    rec.sender_exe[..depth]
        .iter()
        .map(|c| {
            let end = c.iter().position(|&b| b == 0).unwrap_or(EXE_NAME_LEN);
            String::from_utf8_lossy(&c[..end]).into_owned()
        })
        .collect()
}
