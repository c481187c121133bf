//! One record per victim: merges the records that different programs wrote for the same
//! `mark_victim` call, then fills what the kernel did not give from `/proc` and the cgroup tree.
//!
//! Both `mark_victim` programs run inside the same kernel call, so their records normally arrive
//! together. A record whose partner has not arrived within [`Correlator::window`] is emitted with
//! what is known (the rest absent): partial data never delays a record beyond that bound.
pub mod invocation;
pub mod kmsg_context;
pub mod marks;
pub mod scored;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oomwatch_common::{field, CandidateRecord, RecordKind, VictimRecord};

use crate::record::{OomContext, OomEvent, Source, Trigger, Victim};
use crate::source::gfp::GfpDecoder;
use crate::source::kmsg::KmsgRecord;
use crate::source::probe::ringbuf::Record;
use crate::sys::cgroup::IdResolver;
use crate::sys::clock::wall_clock_of;
use crate::sys::procfs;
use crate::sys::text::comm_str;
use invocation::Invocations;
use kmsg_context::KmsgContexts;
use marks::KillVerdict;
use scored::Scored;

/// Default bound on waiting for a victim's second record.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);
/// Bound on holding a victim for its kernel-log context (when the kernel log is the source).
pub const KMSG_WAIT: Duration = Duration::from_millis(250);

struct Pending {
    pid: i32,
    tp: Option<VictimRecord>,
    btf: Option<VictimRecord>,
    deadline: Instant,
}

/// Merges probe records into [`OomEvent`]s.
pub struct Correlator {
    expect_tp: bool,
    expect_btf: bool,
    window: Duration,
    host: String,
    proc_root: PathBuf,
    resolver: Option<IdResolver>,
    pending: Vec<Pending>,
    invocations: Invocations,
    /// Which `oom_kill_process` program is attached, if any.
    oom_source: Option<Source>,
    /// The kernel log as the source of invocation context, when no probe is.
    kmsg: Option<KmsgContexts>,
    /// Victims waiting (until the deadline) for their kernel-log context.
    held: Vec<(OomEvent, Instant)>,
    /// Names for GFP masks the probes report.
    gfp: Option<GfpDecoder>,
    /// Tasks the `oom_badness` probe reported, by invocation.
    scored: Scored,
    /// Which marks are kills (the others get no event).
    verdict: KillVerdict,
}

impl Correlator {
    /// `expect_*`: which `mark_victim` programs are attached (a victim is complete when each
    /// attached one has reported).
    pub fn new(
        expect_tp: bool,
        expect_btf: bool,
        window: Duration,
        host: String,
        resolver: Option<IdResolver>,
    ) -> Self {
        Self {
            expect_tp,
            expect_btf,
            window,
            host,
            proc_root: PathBuf::from("/proc"),
            resolver,
            pending: Vec::new(),
            invocations: Invocations::default(),
            oom_source: None,
            kmsg: None,
            held: Vec::new(),
            gfp: None,
            scored: Scored::new(crate::explain::candidates::DEFAULT_TOP),
            verdict: KillVerdict::default(),
        }
    }

    /// A `signal_generate` program is attached since `ktime_ns`: from then on a mark is a kill
    /// only if its SIGKILL was seen (see [`crate::correlate::marks`]).
    pub fn with_kill_signals_since(mut self, ktime_ns: u64) -> Self {
        self.verdict = std::mem::take(&mut self.verdict).with_signals_since(ktime_ns);
        self
    }

    /// Marks that were not kills (no event), so far.
    pub fn marks_without_kill(&self) -> u64 {
        self.verdict.without_kill()
    }

    /// Builds and finishes the event of a complete mark, unless the mark was not a kill.
    fn complete(&mut self, p: Pending, now: Instant, out: &mut Vec<OomEvent>) {
        if let Some(ev) = self.build_kill(p) {
            self.finish(ev, now, out);
        }
    }

    /// The event of a mark that was a kill.
    fn build_kill(&mut self, p: Pending) -> Option<OomEvent> {
        let recs: Vec<&VictimRecord> = p.tp.iter().chain(p.btf.iter()).collect();
        let tgid = recs
            .iter()
            .find(|r| r.present & field::TGID != 0)
            .map(|r| r.tgid);
        let ktime = recs.iter().map(|r| r.ktime_ns).min().unwrap_or_default();
        if !self.verdict.is_kill(&recs, tgid, ktime) {
            tracing::debug!(
                pid = p.pid,
                ?tgid,
                "task marked as OOM victim without a kill (already exiting): no record"
            );
            return None;
        }
        Some(self.build(p))
    }

    /// Reads `/proc` (victims' status, sysctls) under this directory instead: `/host/proc` for
    /// an agent in a pod with the host's `/proc` mounted there.
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// Decodes probe-reported GFP masks with this kernel's flag layout.
    pub fn with_gfp(mut self, gfp: Option<GfpDecoder>) -> Self {
        self.gfp = gfp;
        self
    }

    /// Keeps at most `top` scored candidates per victim, from the `oom_badness` probe and from
    /// the kernel's task dump (call after [`with_kmsg`](Self::with_kmsg) too; 0: none).
    pub fn with_candidates(mut self, top: usize) -> Self {
        self.kmsg = self.kmsg.take().map(|k| k.with_candidates(top));
        self.scored.set_top(top);
        self
    }

    /// Adds a task the `oom_badness` probe reported (before its invocation's kill records).
    pub fn push_candidate(&mut self, rec: CandidateRecord) {
        self.scored.push(rec);
    }

    /// Takes invocation context from the kernel's OOM report (`/dev/kmsg`) instead of a probe.
    pub fn with_kmsg(mut self) -> Self {
        self.kmsg = Some(KmsgContexts::new());
        self
    }

    /// Whether a victim is waiting for its kernel-log report.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Adds a kernel-log record; returns the held victims it completed.
    pub fn push_kmsg(&mut self, rec: &KmsgRecord, now: Instant) -> Vec<OomEvent> {
        let Some(k) = self.kmsg.as_mut() else {
            return Vec::new();
        };
        let ready = k.push_record(rec, now);
        if ready.is_empty() {
            return Vec::new();
        }
        let (done, held): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|(ev, _)| ready.contains(&ev.pid));
        self.held = held;
        let mut out = Vec::new();
        for (ev, _) in done {
            self.finish(ev, now, &mut out);
        }
        out
    }

    /// Attaches kernel-log context if there is one, or holds the event for it (bounded). An
    /// event whose invocation context came from a probe takes only what the probe cannot
    /// give from the report: the scored candidates and the domain's memory at the kill.
    fn finish(&mut self, mut ev: OomEvent, now: Instant, out: &mut Vec<OomEvent>) {
        let Some(k) = self.kmsg.as_mut() else {
            out.push(ev);
            return;
        };
        if let Some((id, ctx)) = k.take(ev.pid) {
            cgroup_from_report(&mut ev, &ctx);
            if ev.oom_id.is_some() {
                supplement(&mut ev, ctx);
            } else {
                set_context(&mut ev, id, ctx);
                ev.sources.insert("oom", Source::Kmsg);
                if ev.oom.candidates.is_some() {
                    ev.sources.insert("candidates", Source::Kmsg);
                }
            }
            out.push(ev);
        } else {
            self.held.push((ev, now + KMSG_WAIT));
        }
    }

    /// Enables invocation context from an attached `oom_kill_process` program; `constraints`
    /// names `enum oom_constraint` values as this kernel's BTF does.
    pub fn with_oom_kill(mut self, source: Source, constraints: Vec<(i64, String)>) -> Self {
        self.oom_source = Some(source);
        self.invocations = Invocations::new(constraints);
        self
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adds a record; returns the events it completed.
    pub fn push(&mut self, rec: Record, now: Instant) -> Vec<OomEvent> {
        match rec {
            Record::Victim(v) => self.push_victim(v, now),
            Record::OomKill(k) => {
                let source = self.oom_source.unwrap_or(Source::OomKillFentry);
                self.invocations.push(k, source);
                Vec::new()
            }
            // Exits, reaper steps and userspace kills: `crate::kill_outcome` takes those.
            Record::Lifecycle(_) | Record::Signal(_) => Vec::new(),
        }
    }

    /// Adds a `mark_victim` record; returns the events it completed.
    pub fn push_victim(&mut self, rec: VictimRecord, now: Instant) -> Vec<OomEvent> {
        let mut out = Vec::new();
        let Some(kind) = RecordKind::from_u32(rec.kind) else {
            return out;
        };
        let idx = match self.pending.iter().position(|p| p.pid == rec.pid) {
            // A second record of the same kind for this pid is a new kill (pid reuse or a
            // second mark): emit the older one first, never merge two kills.
            Some(i) if slot(&mut self.pending[i], kind).is_some() => {
                let old = self.pending.remove(i);
                self.complete(old, now, &mut out);
                None
            }
            other => other,
        };
        let idx = idx.unwrap_or_else(|| {
            self.pending.push(Pending {
                pid: rec.pid,
                tp: None,
                btf: None,
                deadline: now + self.window,
            });
            self.pending.len() - 1
        });
        *slot(&mut self.pending[idx], kind) = Some(rec);
        let p = &self.pending[idx];
        if (p.tp.is_some() || !self.expect_tp) && (p.btf.is_some() || !self.expect_btf) {
            let done = self.pending.remove(idx);
            self.complete(done, now, &mut out);
        }
        out
    }

    /// The earliest time [`flush_expired`](Self::flush_expired) has work, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.deadline);
        pending.chain(self.held.iter().map(|(_, d)| *d)).min()
    }

    /// Emits, with what is known, every victim whose partner record or kernel-log context did
    /// not come in time.
    pub fn flush_expired(&mut self, now: Instant) -> Vec<OomEvent> {
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|p| p.deadline <= now);
        self.pending = kept;
        let (late, held): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(_, d)| *d <= now);
        self.held = held;
        let mut out: Vec<OomEvent> = late.into_iter().map(|(ev, _)| ev).collect();
        for p in expired {
            self.complete(p, now, &mut out);
        }
        out
    }

    /// Emits everything pending or held (at shutdown).
    pub fn flush_all(&mut self) -> Vec<OomEvent> {
        let all: Vec<_> = self.pending.drain(..).collect();
        let mut out: Vec<OomEvent> = self.held.drain(..).map(|(ev, _)| ev).collect();
        out.extend(all.into_iter().filter_map(|p| self.build_kill(p)));
        out
    }

    fn build(&mut self, p: Pending) -> OomEvent {
        let mut ev = merge(&p, &self.host);
        self.fill_missing(&mut ev);
        self.add_invocation(&mut ev);
        let sysctl = |name: &str| {
            std::fs::read_to_string(self.proc_root.join("sys/vm").join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        ev.victim = Victim {
            pid: ev.pid,
            tgid: ev.tgid,
            comm: ev.comm.clone(),
            cgroup: ev.cgroup.clone(),
            cgroup_id: ev.cgroup_id,
            ..Victim::default()
        };
        ev.panic_on_oom = sysctl("panic_on_oom");
        ev.oom_kill_allocating_task = sysctl("oom_kill_allocating_task");
        ev
    }

    /// The OOM invocation that chose this victim: its id and context.
    fn add_invocation(&mut self, ev: &mut OomEvent) {
        let Some(inv) = self.invocations.match_victim(ev.pid, ev.ktime_ns).cloned() else {
            return;
        };
        let resolver = &mut self.resolver;
        let mut ctx = self
            .invocations
            .context(&inv, |id| resolver.as_mut().and_then(|r| r.resolve(id)));
        if let (Some(gfp), Some(_)) = (&self.gfp, &ctx.gfp_mask) {
            ctx.gfp_flags = Some(gfp.decode(inv.rec.gfp_mask));
        }
        if let Some((list, source)) = self.scored.for_invocation(&inv.rec) {
            ctx.candidates = Some(list);
            ev.sources.insert("candidates", source);
        }
        set_context(ev, inv.id, ctx);
        ev.sources.insert("oom", inv.source);
    }

    /// Fills fields the kernel records lacked: the cgroup id → path, then `/proc/<pid>`.
    fn fill_missing(&mut self, ev: &mut OomEvent) {
        if let (Some(id), Some(r)) = (ev.cgroup_id, self.resolver.as_mut()) {
            if let Some(path) = r.resolve(id) {
                ev.cgroup = Some(path);
                ev.sources.insert("cgroup", Source::Cgroupfs);
            }
        }
        let needs_proc = ev.tgid.is_none()
            || ev.comm.is_none()
            || ev.uid.is_none()
            || ev.anon_rss.is_none()
            || ev.oom_score_adj.is_none()
            || ev.cgroup.is_none();
        if !needs_proc {
            return;
        }
        let info = procfs::read(&self.proc_root, ev.pid);
        let mut fill = |group: &'static str, src: Source, present: bool| {
            if present {
                ev.sources.entry(group).or_insert(src);
            }
        };
        fill(
            "tgid",
            Source::Procfs,
            ev.tgid.is_none() && info.tgid.is_some(),
        );
        fill(
            "comm",
            Source::Procfs,
            ev.comm.is_none() && info.comm.is_some(),
        );
        fill(
            "uid",
            Source::Procfs,
            ev.uid.is_none() && info.uid.is_some(),
        );
        fill(
            "memory",
            Source::Procfs,
            ev.anon_rss.is_none() && info.anon_rss.is_some(),
        );
        fill(
            "pgtables",
            Source::Procfs,
            ev.pgtables.is_none() && info.pgtables.is_some(),
        );
        let adj_missing = ev.oom_score_adj.is_none() && info.oom_score_adj.is_some();
        fill("oom_score_adj", Source::Procfs, adj_missing);
        fill(
            "cgroup",
            Source::ProcCgroup,
            ev.cgroup.is_none() && info.cgroup.is_some(),
        );
        ev.tgid = ev.tgid.or(info.tgid);
        ev.comm = ev.comm.take().or(info.comm);
        ev.uid = ev.uid.or(info.uid);
        if ev.anon_rss.is_none() {
            ev.total_vm = info.total_vm;
            ev.anon_rss = info.anon_rss;
            ev.file_rss = info.file_rss;
            ev.shmem_rss = info.shmem_rss;
        }
        ev.pgtables = ev.pgtables.or(info.pgtables);
        ev.oom_score_adj = ev.oom_score_adj.or(info.oom_score_adj);
        ev.cgroup = ev.cgroup.take().or(info.cgroup);
    }
}

/// The victim's cgroup from the report when neither its id nor `/proc` gave it (its directory
/// was removed, and the victim gone, before the agent looked): the report names the chosen
/// task's memory cgroup, which is the victim's unless this is another member of its
/// `memory.oom.group`.
fn cgroup_from_report(ev: &mut OomEvent, ctx: &OomContext) {
    if ev.cgroup.is_some() {
        return;
    }
    if let Some((pid, path)) = &ctx.chosen_memcg {
        if crate::explain::candidates::same_process((*pid, None), (ev.pid, ev.tgid)) {
            ev.cgroup = Some(path.clone());
            ev.victim.cgroup = Some(path.clone());
            ev.sources.insert("cgroup", Source::Kmsg);
        }
    }
}

/// Puts an invocation's context on a victim's event: flags a group member, hands the trigger's
/// cgroup to `trigger`.
/// From the kernel's report, what a probe's context lacks: the candidates when the
/// `oom_badness` probe gave none (points recomputed with the probe's exact `totalpages` would
/// differ only for tasks with an `oom_score_adj`), and the domain's memory at the kill.
fn supplement(ev: &mut OomEvent, mut ctx: OomContext) {
    if let Some(list) = ev.oom.candidates.as_mut() {
        scored::fill_from(list, ctx.candidates.as_deref());
    } else {
        ev.oom.candidates = ctx.candidates.take();
        if ev.oom.candidates.is_some() {
            ev.sources.insert("candidates", Source::Kmsg);
        }
    }
    if ev.domain_memory.is_none() {
        ev.domain_memory = ctx.domain_memory.take();
    }
}

/// Whether the scored tasks show `victim_pid` as a thread of process `chosen_pid` (the kernel's
/// task dump lists each process by the thread it would kill, with its tgid).
pub(crate) fn victim_row_of(
    candidates: Option<&[crate::record::Candidate]>,
    victim_pid: i32,
    chosen_pid: i32,
) -> bool {
    candidates.is_some_and(|list| {
        list.iter()
            .any(|c| c.pid == victim_pid && c.tgid == chosen_pid)
    })
}

fn set_context(ev: &mut OomEvent, id: u64, mut ctx: OomContext) {
    // Killed without being the chosen process: a member of a memory.oom.group kill. The
    // chosen process may be named by its leader while the victim is another of its threads.
    ctx.group_kill = ctx.chosen.as_ref().map(|c| {
        !crate::explain::candidates::same_process((c.pid, Some(c.tgid)), (ev.pid, ev.tgid))
            && !victim_row_of(ctx.candidates.as_deref(), ev.pid, c.pid)
    });
    if let Some(t) = ev.trigger.as_mut() {
        t.cgroup = ctx.trigger_cgroup.take();
        t.cgroup_id = ctx.trigger_cgroup_id.take();
    }
    ev.allocating_task_kill = ctx.settle_allocating_task_kill();
    ev.oom_id = Some(id);
    if let Some(d) = ctx.domain_memory.take() {
        ev.domain_memory = Some(d);
    }
    ev.oom = ctx;
}

fn slot(p: &mut Pending, kind: RecordKind) -> &mut Option<VictimRecord> {
    match kind {
        RecordKind::MarkVictimTracepoint => &mut p.tp,
        // Never stored as pending: `push` routes these to the invocation tracker.
        _ => &mut p.btf,
    }
}

/// Merges the kernel records of one victim. The trace record is preferred for the fields it
/// carries (the kernel computed them at the kill); the task read fills the rest.
fn merge(p: &Pending, host: &str) -> OomEvent {
    let mut sources = BTreeMap::new();
    let has = |r: &Option<VictimRecord>, bit: u32| r.filter(|r| r.present & bit != 0);
    let tp_src = Source::MarkVictimTracepoint;
    let btf_src = Source::MarkVictimBtf;
    let pick = |bit: u32| {
        has(&p.tp, bit)
            .map(|r| (r, tp_src))
            .or_else(|| has(&p.btf, bit).map(|r| (r, btf_src)))
    };
    let mut take = |group: &'static str, bit: u32| {
        pick(bit).map(|(r, s)| {
            sources.insert(group, s);
            r
        })
    };
    let pid_rec = take("pid", field::PID);
    let tgid = take("tgid", field::TGID).map(|r| r.tgid);
    let comm = take("comm", field::COMM).map(|r| comm_str(&r.comm));
    let uid = take("uid", field::UID).map(|r| r.uid);
    let mem = take("memory", field::ANON_RSS);
    let total_vm = pick(field::TOTAL_VM).map(|(r, _)| r.total_vm_kb * 1024);
    let file_rss = pick(field::FILE_RSS).map(|(r, _)| r.file_rss_kb * 1024);
    let shmem_rss = pick(field::SHMEM_RSS).map(|(r, _)| r.shmem_rss_kb * 1024);
    let pgtables = take("pgtables", field::PGTABLES).map(|r| r.pgtables_kb * 1024);
    let oom_score_adj = take("oom_score_adj", field::OOM_SCORE_ADJ).map(|r| r.oom_score_adj);
    let cgroup_id = take("cgroup", field::MEMCG_ID).map(|r| r.memcg_id);
    // Any record carries the kernel timestamp and the triggering task; take the earliest.
    let first = [p.tp, p.btf]
        .into_iter()
        .flatten()
        .min_by_key(|r| r.ktime_ns)
        .or(pid_rec);
    let (ktime_ns, trigger) = match first {
        Some(r) => {
            sources.insert("trigger", Source::from_kind(r.kind));
            let t = Trigger {
                pid: r.trigger_pid,
                tgid: r.trigger_tgid,
                comm: comm_str(&r.trigger_comm),
                cgroup: None,
                cgroup_id: None,
                namespace: None,
                pod: None,
                pod_uid: None,
            };
            (r.ktime_ns, Some(t))
        }
        None => (0, None),
    };
    OomEvent {
        tgid,
        comm,
        uid,
        total_vm,
        anon_rss: mem.map(|r| r.anon_rss_kb * 1024),
        file_rss,
        shmem_rss,
        pgtables,
        oom_score_adj,
        cgroup_id,
        trigger,
        sources,
        ..OomEvent::new(p.pid, ktime_ns, wall_clock_of(ktime_ns), host.to_string())
    }
}

impl Source {
    fn from_kind(kind: u32) -> Self {
        match RecordKind::from_u32(kind) {
            Some(RecordKind::MarkVictimBtf) => Source::MarkVictimBtf,
            _ => Source::MarkVictimTracepoint,
        }
    }
}

#[cfg(test)]
#[path = "correlate_tests.rs"]
mod tests;
