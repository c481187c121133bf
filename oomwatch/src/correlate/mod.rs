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

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oomwatch_common::{field, CandidateRecord, RecordKind, VictimRecord};

use crate::record::{
    ContainerKill, NsInit, OomContext, OomEvent, PidNsAtKill, ProbeId, Source, Trigger,
};
use crate::source::gfp::GfpDecoder;
use crate::source::kmsg::oom::Killed;
use crate::source::kmsg::KmsgRecord;
use crate::source::probe::ringbuf::Record;
use crate::source::probe::silence::Silence;
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
/// How long a mark judged no kill waits for the kernel's "Killed process" line that would prove
/// it one (the line follows the mark at once; recovery waits as long for a line's record).
pub const DOUBT: Duration = Duration::from_secs(3);
/// Marks judged no kill kept at once (the oldest is counted as no kill when full).
const DOUBTFUL: usize = 256;

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
    /// Marks judged no kill, until their deadline: a kill line may still prove them kills.
    doubtful: VecDeque<(Pending, Instant)>,
    /// Rows that attached but gave nothing an OOM kill must have made them give.
    silence: Silence,
    /// The attached `oom_badness` row, if any.
    badness: Option<ProbeId>,
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
            doubtful: VecDeque::new(),
            silence: Silence::new(),
            badness: None,
        }
    }

    /// Reports attached rows that stay silent to `silence`; `badness` is the attached
    /// `oom_badness` row, if any.
    pub fn with_silence(mut self, silence: Silence, badness: Option<ProbeId>) -> Self {
        self.silence = silence;
        self.badness = badness;
        self
    }

    /// A `signal_generate` program is attached since `ktime_ns`: from then on a mark is a kill
    /// only if its SIGKILL was seen (see [`crate::correlate::marks`]).
    pub fn with_kill_signals_since(mut self, ktime_ns: u64) -> Self {
        self.verdict = std::mem::take(&mut self.verdict).with_signals_since(ktime_ns);
        self
    }

    /// Marks that were not kills (no event), so far: judged so, and no kill line came for them.
    pub fn marks_without_kill(&self) -> u64 {
        self.verdict.without_kill()
    }

    /// Builds and finishes the event of a complete mark, unless the mark was not a kill.
    fn complete(&mut self, p: Pending, now: Instant, out: &mut Vec<OomEvent>) {
        if let Some(ev) = self.build_kill(p, now) {
            self.finish(ev, now, out);
        }
    }

    /// The event of a mark that was a kill; a mark judged no kill waits (until [`DOUBT`]) for
    /// a kill line that would prove it one.
    fn build_kill(&mut self, p: Pending, now: Instant) -> Option<OomEvent> {
        let (tgid, ktime) = mark_of(&p);
        let recs: Vec<&VictimRecord> = p.tp.iter().chain(p.btf.iter()).collect();
        if !self.verdict.is_kill(&recs, tgid, ktime) {
            tracing::debug!(
                pid = p.pid,
                ?tgid,
                "task marked as OOM victim without a kill (already exiting): no record \
                 unless the kernel logs its kill"
            );
            if self.doubtful.len() == DOUBTFUL {
                self.doubtful.pop_front();
                self.verdict.not_a_kill();
            }
            self.doubtful.push_back((p, now + DOUBT));
            return None;
        }
        Some(self.build(p))
    }

    /// Whether a mark judged no kill still waits for a kill line.
    pub fn has_doubtful(&self) -> bool {
        !self.doubtful.is_empty()
    }

    /// The marks judged no kill for whose pid and comm `logged` (the kernel logged "Killed
    /// process" for them) were kills after all: their events, finished like any other.
    pub fn confirm_kills(
        &mut self,
        logged: impl Fn(i32, Option<&str>) -> bool,
        now: Instant,
    ) -> Vec<OomEvent> {
        let mut out = Vec::new();
        let (proved, still): (VecDeque<_>, VecDeque<_>) = self
            .doubtful
            .drain(..)
            .partition(|(p, _)| logged(p.pid, mark_comm(p).as_deref()));
        self.doubtful = still;
        for (p, _) in proved {
            let (tgid, ktime) = mark_of(&p);
            tracing::info!(
                pid = p.pid,
                ?tgid,
                "a mark judged no kill was a kill: the kernel logged it (its SIGKILL was not \
                 seen just before the mark)"
            );
            self.verdict.confirmed(tgid, ktime);
            let ev = self.build(p);
            self.finish(ev, now, &mut out);
        }
        out
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
        for (ev, deadline) in done {
            let held_us = (now + KMSG_WAIT)
                .saturating_duration_since(deadline)
                .as_micros() as u64;
            tracing::trace!(pid = ev.pid, held_us, "kernel-log report came");
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
        // A probe's context knows the domain's size, which scores what the dump alone cannot.
        let totalpages = ev.oom_id.and(ev.oom.totalpages);
        if let Some((id, ctx, line)) = k.take_with_line(ev.pid, totalpages) {
            kernel_memory(&mut ev, &line);
            cgroup_from_report(&mut ev, &ctx);
            if ev.oom_id.is_some() {
                self.check_badness(&ev, &ctx);
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

    /// The `oom_badness` row attached but reported no task of an invocation whose report lists
    /// scored tasks (the kernel scores every task it dumps, unless `oom_kill_allocating_task`
    /// chose the allocating task without scoring): silent. Counted once per invocation (at
    /// its chosen victim, not at the other members of a group kill).
    fn check_badness(&self, ev: &OomEvent, ctx: &OomContext) {
        let Some(row) = self.badness else {
            return;
        };
        let dumped = ctx.candidates.as_ref().is_some_and(|c| !c.is_empty());
        let allocating = ev.allocating_task_kill == Some(true)
            || ctx
                .message
                .as_deref()
                .is_some_and(|m| m.contains("oom_kill_allocating_task"));
        if dumped && !allocating && ev.oom.candidates.is_none() && ev.oom.group_kill != Some(true) {
            self.silence.observe(
                row,
                "the tasks scored by an OOM invocation whose report lists tasks",
                "candidates from the kernel's task dump (kmsg:oom_report)",
            );
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
        tracing::trace!(
            pid = rec.pid,
            kind = rec.kind,
            age_us = crate::sys::clock::monotonic_ns().saturating_sub(rec.ktime_ns) / 1000,
            "victim record"
        );
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

    /// Whether a victim's wait for its partner record ends at or before `now`.
    pub fn partner_wait_due(&self, now: Instant) -> bool {
        self.pending.iter().any(|p| p.deadline <= now)
    }

    /// The earliest time [`flush_expired`](Self::flush_expired) has work, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.deadline);
        let doubtful = self.doubtful.iter().map(|(_, d)| *d);
        pending
            .chain(self.held.iter().map(|(_, d)| *d))
            .chain(doubtful)
            .min()
    }

    /// Emits, with what is known, every victim whose partner record or kernel-log context did
    /// not come in time.
    pub fn flush_expired(&mut self, now: Instant) -> Vec<OomEvent> {
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|p| p.deadline <= now);
        self.pending = kept;
        let (late, held): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(_, d)| *d <= now);
        self.held = held;
        for _ in &late {
            self.silence.observe(
                ProbeId::KmsgOomReport,
                "the kernel's OOM report of each victim the probes reported",
                "the event without the report's context",
            );
        }
        let mut out: Vec<OomEvent> = late.into_iter().map(|(ev, _)| ev).collect();
        let before = self.doubtful.len();
        self.doubtful.retain(|(_, d)| *d > now);
        for _ in self.doubtful.len()..before {
            self.verdict.not_a_kill();
        }
        for p in expired {
            let missing = [
                (self.expect_tp && p.tp.is_none(), ProbeId::MarkVictimTp),
                (self.expect_btf && p.btf.is_none(), ProbeId::MarkVictimBtf),
            ];
            if let Some(ev) = self.build_kill(p, now) {
                self.partner_silent(missing);
                self.finish(ev, now, &mut out);
            }
        }
        out
    }

    /// A kill whose window ran out with an attached `mark_victim` row's record missing: that
    /// row is silent (the other row's fields are the event's). Marks that were not kills are
    /// not judged (they too have both records, but one alone cannot tell).
    fn partner_silent(&self, missing: [(bool, ProbeId); 2]) {
        for (_, row) in missing.into_iter().filter(|(m, _)| *m) {
            self.silence.observe(
                row,
                "a record for each victim the other mark_victim row reported",
                "the other mark_victim row's fields (and /proc)",
            );
        }
    }

    /// Emits everything pending or held (at shutdown).
    pub fn flush_all(&mut self) -> Vec<OomEvent> {
        let all: Vec<_> = self.pending.drain(..).collect();
        let mut out: Vec<OomEvent> = self.held.drain(..).map(|(ev, _)| ev).collect();
        let now = Instant::now();
        out.extend(all.into_iter().filter_map(|p| self.build_kill(p, now)));
        for _ in self.doubtful.drain(..) {
            self.verdict.not_a_kill();
        }
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
        ev.sync_victim();
        ev.panic_on_oom = sysctl("panic_on_oom");
        ev.oom_kill_allocating_task = sysctl("oom_kill_allocating_task");
        ev
    }

    /// The OOM invocation that chose this victim: its id and context.
    fn add_invocation(&mut self, ev: &mut OomEvent) {
        let Some(inv) = self
            .invocations
            .match_victim(ev.pid, ev.tgid, ev.ktime_ns)
            .cloned()
        else {
            if let Some(row) = self.oom_source.and_then(Source::probe) {
                self.silence.observe(
                    row,
                    "an oom_kill_process record before each killed victim",
                    "the OOM context from the kernel's report (kmsg:oom_report)",
                );
            }
            return;
        };
        // The OOM domain is the victim's cgroup or an ancestor; the trigger's, often the same.
        let (resolver, near) = (&mut self.resolver, &ev.cgroup);
        let mut ctx = self.invocations.context(&inv, |id| {
            resolver
                .as_mut()
                .and_then(|r| r.resolve_near(id, || near.clone()))
        });
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
            if let Some(path) = r.resolve_for_task(id, &self.proc_root, ev.pid) {
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

/// The victim's memory as the kernel's "Killed process" line printed it, where the trace
/// record's figures differ from it. They are not always one reading: `mark_victim` records
/// `get_mm_counter()` (6.2+: a per-CPU counter's shared part only), while the line prints what
/// `__oom_kill_process()` read, which on newer kernels (Debian's 7.2) is `get_mm_counter_sum()`,
/// the per-CPU parts summed in: a few pages apart. The line is the kernel's own report of the
/// kill; `sources.memory` (and `sources.pgtables`) then say `kmsg:oom_report`.
fn kernel_memory(ev: &mut OomEvent, line: &Killed) {
    if line.pid != ev.pid {
        return;
    }
    let kb = |v: u64| v.saturating_mul(1024);
    let anon = Some(kb(line.anon_rss_kb));
    let file = Some(kb(line.file_rss_kb));
    let shmem = line.shmem_rss_kb.map(kb).or(ev.shmem_rss);
    let pgtables = line.pgtables_kb.map(kb).or(ev.pgtables);
    let total_vm = Some(kb(line.total_vm_kb));
    let now = (
        ev.total_vm,
        ev.anon_rss,
        ev.file_rss,
        ev.shmem_rss,
        ev.pgtables,
    );
    if now == (total_vm, anon, file, shmem, pgtables) {
        return;
    }
    (ev.total_vm, ev.anon_rss, ev.file_rss, ev.shmem_rss) = (total_vm, anon, file, shmem);
    ev.sources.insert("memory", Source::Kmsg);
    if ev.pgtables != pgtables {
        ev.pgtables = pgtables;
        ev.sources.insert("pgtables", Source::Kmsg);
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
        ev.oom.unscored = ctx.unscored;
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

/// The victim's comm, if a record of the mark has it.
fn mark_comm(p: &Pending) -> Option<String> {
    let mut recs = p.tp.iter().chain(p.btf.iter());
    recs.find(|r| r.present & field::COMM != 0)
        .map(|r| comm_str(&r.comm))
}

/// The tgid (if a record knows it) and kernel time of a mark.
fn mark_of(p: &Pending) -> (Option<i32>, u64) {
    let recs = || p.tp.iter().chain(p.btf.iter());
    let tgid = recs()
        .find(|r| r.present & field::TGID != 0)
        .map(|r| r.tgid);
    let ktime = recs().map(|r| r.ktime_ns).min().unwrap_or_default();
    (tgid, ktime)
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
    let at_kill = has(&p.btf, field::PIDNS).map(|r| PidNsAtKill {
        level: r.ns_level,
        ns_tgid: r.ns_tgid,
        init: (r.present & field::PIDNS_INIT != 0).then(|| NsInit {
            tgid: r.init_tgid,
            comm: comm_str(&r.init_comm),
            memcg_id: r.init_memcg_id,
        }),
    });
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
                ..Trigger::default()
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
        container_kill: ContainerKill {
            at_kill,
            ..ContainerKill::default()
        },
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
mod tests {
    use super::*;
    use crate::sys::clock::monotonic_ns;
    use invocation::GROUP_WINDOW_NS;
    use oomwatch_common::COMM_LEN;

    fn rec(kind: RecordKind, pid: i32, present: u32) -> VictimRecord {
        let mut r = VictimRecord::zeroed();
        r.kind = kind as u32;
        r.pid = pid;
        r.present = present | field::PID;
        r.ktime_ns = monotonic_ns();
        r.comm[..4].copy_from_slice(b"hog\0");
        r.trigger_pid = 9;
        r.trigger_tgid = 9;
        r.trigger_comm[..3].copy_from_slice(b"sh\0");
        r
    }

    fn tp(pid: i32) -> VictimRecord {
        let mut r = rec(
            RecordKind::MarkVictimTracepoint,
            pid,
            field::COMM
                | field::TOTAL_VM
                | field::ANON_RSS
                | field::FILE_RSS
                | field::SHMEM_RSS
                | field::UID
                | field::PGTABLES
                | field::OOM_SCORE_ADJ,
        );
        r.total_vm_kb = 100;
        r.anon_rss_kb = 64;
        r.file_rss_kb = 2;
        r.shmem_rss_kb = 1;
        r.pgtables_kb = 8;
        r.uid = 1000;
        r.oom_score_adj = 500;
        r
    }

    fn btf(pid: i32) -> VictimRecord {
        let mut r = rec(
            RecordKind::MarkVictimBtf,
            pid,
            field::TGID | field::COMM | field::OOM_SCORE_ADJ | field::MEMCG_ID,
        );
        r.tgid = pid - 1;
        r.oom_score_adj = 499; // the tracepoint's value must win
        r.memcg_id = 12345;
        r
    }

    // A pid that cannot exist (above pid_max), so the /proc fill finds nothing.
    const GONE: i32 = 1 << 30;

    fn correlator(tp: bool, btf: bool) -> Correlator {
        Correlator::new(tp, btf, DEFAULT_WINDOW, "h".into(), None)
    }

    #[test]
    fn pair_merges_into_one_event_with_sources() {
        let mut c = correlator(true, true);
        let now = Instant::now();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        let evs = c.push_victim(btf(GONE), now);
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(e.pid, GONE);
        assert_eq!(e.tgid, Some(GONE - 1));
        assert_eq!(e.comm.as_deref(), Some("hog"));
        assert_eq!(e.total_vm, Some(100 * 1024));
        assert_eq!(e.anon_rss, Some(64 * 1024));
        assert_eq!(e.file_rss, Some(2 * 1024));
        assert_eq!(e.shmem_rss, Some(1024));
        assert_eq!(e.pgtables, Some(8 * 1024));
        assert_eq!(e.uid, Some(1000));
        assert_eq!(e.oom_score_adj, Some(500));
        assert_eq!(e.cgroup_id, Some(12345));
        assert_eq!(
            e.cgroup, None,
            "no resolver and no /proc entry: absent, not invented"
        );
        assert_eq!(e.trigger.as_ref().unwrap().comm, "sh");
        assert_eq!(e.sources["memory"], Source::MarkVictimTracepoint);
        assert_eq!(e.sources["tgid"], Source::MarkVictimBtf);
        assert_eq!(e.sources["oom_score_adj"], Source::MarkVictimTracepoint);
        assert!(c.next_deadline().is_none());
    }

    #[test]
    fn a_partner_wait_is_due_only_once_its_window_ends() {
        let mut c = correlator(true, true);
        let now = Instant::now();
        assert!(!c.partner_wait_due(now + DEFAULT_WINDOW), "nothing waits");
        assert!(c.push_victim(tp(GONE), now).is_empty());
        assert!(!c.partner_wait_due(now));
        assert!(c.partner_wait_due(now + DEFAULT_WINDOW));
        assert_eq!(c.push_victim(btf(GONE), now).len(), 1);
        assert!(
            !c.partner_wait_due(now + DEFAULT_WINDOW),
            "merged: nothing waits"
        );
    }

    #[test]
    fn lone_record_waits_then_is_emitted_with_the_rest_absent() {
        let mut c = correlator(true, true);
        let now = Instant::now();
        assert!(c.push_victim(btf(GONE), now).is_empty());
        let deadline = c.next_deadline().unwrap();
        assert_eq!(deadline, now + DEFAULT_WINDOW);
        assert!(c.flush_expired(now).is_empty());
        let evs = c.flush_expired(deadline);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].anon_rss, None);
        assert_eq!(evs[0].uid, None);
        assert!(!evs[0].sources.contains_key("memory"));
    }

    #[test]
    fn only_tracepoint_attached_completes_at_once() {
        let mut c = correlator(true, false);
        let evs = c.push_victim(tp(GONE), Instant::now());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].tgid, None);
    }

    #[test]
    fn two_kills_of_one_pid_are_never_merged() {
        let mut c = correlator(true, true);
        let now = Instant::now();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        let evs = c.push_victim(tp(GONE), now);
        assert_eq!(
            evs.len(),
            1,
            "the first kill is emitted when a second one arrives"
        );
        assert_eq!(c.flush_all().len(), 1);
    }

    #[test]
    fn interleaved_victims_pair_by_pid() {
        let mut c = correlator(true, true);
        let now = Instant::now();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        assert!(c.push_victim(tp(GONE + 1), now).is_empty());
        let a = c.push_victim(btf(GONE + 1), now);
        let b = c.push_victim(btf(GONE), now);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a[0].pid, GONE + 1);
        assert_eq!(a[0].tgid, Some(GONE));
        assert_eq!(b[0].tgid, Some(GONE - 1));
    }

    #[test]
    fn pid_only_kernel_fills_from_proc_when_the_process_is_there() {
        let me = std::process::id() as i32;
        let mut c = correlator(true, false);
        let evs = c.push_victim(rec(RecordKind::MarkVictimTracepoint, me, 0), Instant::now());
        let e = &evs[0];
        assert_eq!(e.tgid, Some(me));
        assert!(e.anon_rss.is_some());
        assert!(e.cgroup.is_some());
        assert_eq!(e.sources["memory"], Source::Procfs);
        assert_eq!(e.sources["cgroup"], Source::ProcCgroup);
        assert_eq!(e.sources["pid"], Source::MarkVictimTracepoint);
    }

    #[test]
    fn unknown_kinds_are_ignored() {
        let mut c = correlator(true, true);
        let mut r = tp(GONE);
        r.kind = 99;
        assert!(c.push_victim(r, Instant::now()).is_empty());
        assert!(c.next_deadline().is_none());
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0u8; COMM_LEN];
        c[..5].copy_from_slice(b"abc\0d");
        assert_eq!(comm_str(&c), "abc");
        assert_eq!(comm_str(&[b'x'; COMM_LEN]), "x".repeat(16));
    }

    fn kmsg(line: &str) -> crate::source::kmsg::KmsgRecord {
        crate::source::kmsg::parse_record(line.as_bytes()).unwrap()
    }

    fn killed_line(pid: i32) -> String {
        format!("3,9,100,-;Memory cgroup out of memory: Killed process {pid} (hog) total-vm:100kB, anon-rss:64kB, file-rss:2kB, shmem-rss:1kB, UID:1000 pgtables:8kB oom_score_adj:500")
    }

    #[test]
    fn kernel_log_context_is_attached_whichever_arrives_first() {
        let now = Instant::now();
        // Event first, then the kernel's lines.
        let mut c = correlator(true, false).with_kmsg();
        assert!(
            c.push_victim(tp(GONE), now).is_empty(),
            "held for its context"
        );
        assert_eq!(c.next_deadline(), Some(now + KMSG_WAIT));
        let inv =
        "4,7,90,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500";
        assert!(c.push_kmsg(&kmsg(inv), now).is_empty());
        let evs = c.push_kmsg(&kmsg(&killed_line(GONE)), now);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].sources["oom"], Source::Kmsg);
        assert_eq!(evs[0].oom.gfp_mask.as_deref(), Some("0xcc0"));
        assert_eq!(evs[0].oom_id, Some(1));
        // The kernel's lines first, then the event.
        let mut c = correlator(true, false).with_kmsg();
        assert!(c.push_kmsg(&kmsg(&killed_line(GONE)), now).is_empty());
        let evs = c.push_victim(tp(GONE), now);
        assert_eq!(evs.len(), 1);
        assert!(evs[0].oom_id.is_some() && evs[0].oom.message.is_some());
    }

    #[test]
    fn without_kernel_log_context_the_event_goes_out_after_the_bound() {
        let now = Instant::now();
        let mut c = correlator(true, false).with_kmsg();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        assert!(c.flush_expired(now + KMSG_WAIT / 2).is_empty());
        let evs = c.flush_expired(now + KMSG_WAIT);
        assert_eq!(evs.len(), 1);
        assert!(evs[0].oom == OomContext::default() && evs[0].oom_id.is_none());
        assert!(c.next_deadline().is_none());
    }

    #[test]
    fn a_task_marked_without_a_kill_gets_no_event() {
        // Without a signal_generate program: the first mark of a process is its kill.
        let mut c = correlator(false, true);
        let now = Instant::now();
        let mut killed = btf(GONE - 10);
        killed.tgid = GONE - 10;
        killed.present |= field::SIGNALS | field::SIGKILL_PENDING;
        assert_eq!(c.push_victim(killed, now).len(), 1);
        // Another thread of the process just killed, marked when it allocated again.
        let mut thread = killed;
        thread.pid = GONE - 9;
        thread.ktime_ns += 1_000_000;
        assert!(c.push_victim(thread, now).is_empty(), "same process");
        // Counted once no kill line proved it a kill.
        assert_eq!(c.marks_without_kill(), 0);
        assert_eq!(c.next_deadline(), Some(now + DOUBT));
        assert!(c.flush_expired(now + DOUBT).is_empty());
        assert_eq!(c.marks_without_kill(), 1);
        assert!(!c.has_doubtful());

        // With one: only a mark right after its SIGKILL is a kill.
        let mut c = correlator(false, true).with_kill_signals_since(0);
        let mut thread = btf(GONE);
        thread.present |= field::SIGNALS | field::SIGKILL_PENDING;
        assert!(c.push_victim(thread, now).is_empty());
        thread.present |= field::KILL_SENT;
        assert_eq!(c.push_victim(thread, now).len(), 1);
        assert!(c.flush_all().is_empty());
        assert_eq!(c.marks_without_kill(), 1);
    }

    #[test]
    fn a_mark_judged_no_kill_is_recorded_when_the_kernel_logs_its_kill() {
        let mut c = correlator(false, true).with_kill_signals_since(0);
        let now = Instant::now();
        // Its SIGKILL was not seen just before the mark (a CPU stalled between the two).
        let mut killed = btf(GONE);
        killed.tgid = GONE;
        killed.present |= field::SIGNALS | field::SIGKILL_PENDING;
        let mut thread = btf(GONE - 1);
        thread.tgid = GONE - 5;
        assert!(c.push_victim(killed, now).is_empty());
        assert!(c.push_victim(thread, now).is_empty());
        assert!(c.has_doubtful());
        assert!(c.confirm_kills(|_, _| false, now).is_empty(), "no line yet");
        // A line of the same pid naming another task (a reused pid) proves nothing.
        let other = |pid: i32, comm: Option<&str>| pid == GONE && comm == Some("tail");
        assert!(c.confirm_kills(other, now).is_empty());
        let line = |pid: i32, comm: Option<&str>| pid == GONE && comm == Some("hog");
        let evs = c.confirm_kills(line, now + Duration::from_millis(5));
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].pid, evs[0].tgid), (GONE, Some(GONE)));
        assert_eq!(evs[0].sources["tgid"], Source::MarkVictimBtf);
        // The other mark's line never comes: counted as no kill at its deadline, no event.
        assert_eq!(c.marks_without_kill(), 0);
        assert!(c.flush_expired(now + DOUBT).is_empty());
        assert_eq!(c.marks_without_kill(), 1);
        assert!(!c.has_doubtful());
        assert!(c.confirm_kills(|_, _| true, now + DOUBT).is_empty());
    }

    #[test]
    fn allocating_task_kills_are_flagged_from_the_kernels_message() {
        let now = Instant::now();
        let mut c = correlator(true, false).with_kmsg();
        let line = format!("3,9,100,-;Out of memory (oom_kill_allocating_task): Killed process {GONE} (hog) total-vm:100kB, anon-rss:64kB, file-rss:2kB, shmem-rss:1kB, UID:1000 pgtables:8kB oom_score_adj:0");
        assert!(c.push_kmsg(&kmsg(&line), now).is_empty());
        let ev = c.push_victim(tp(GONE), now).remove(0);
        assert_eq!(ev.allocating_task_kill, Some(true), "{:?}", ev.oom.message);
        let ev = {
            let mut c = correlator(true, false).with_kmsg();
            c.push_kmsg(&kmsg(&killed_line(GONE)), now);
            c.push_victim(tp(GONE), now).remove(0)
        };
        assert_eq!(ev.allocating_task_kill, Some(false));
        let mut plain = correlator(true, false);
        assert_eq!(
            plain.push_victim(tp(GONE), now)[0].allocating_task_kill,
            None
        );
    }

    #[test]
    fn the_oom_badness_probes_tasks_are_the_invocations_candidates() {
        use oomwatch_common::{candidate_field, oom_field, CandidateRecord, OomKillRecord};
        let now = Instant::now();
        let victim = tp(GONE);
        let scored = |seq: u32, pid: i32, points: i64| {
            let mut r = CandidateRecord::zeroed();
            r.kind = RecordKind::CandidateKretprobe as u32;
            r.invocation_ktime_ns = victim.ktime_ns - 10;
            r.trigger_pid = 9;
            r.seq = seq;
            r.pid = pid;
            r.tgid = pid;
            r.points = points;
            r.present = candidate_field::PID;
            r
        };
        let mut k = OomKillRecord::zeroed();
        k.kind = RecordKind::OomKill as u32;
        k.ktime_ns = victim.ktime_ns - 5;
        k.invocation_ktime_ns = victim.ktime_ns - 10;
        k.trigger_pid = 9;
        k.chosen_pid = GONE;
        k.present = oom_field::CHOSEN | oom_field::INVOCATION;
        let mut c = correlator(true, false)
            .with_oom_kill(Source::OomKillKprobe, vec![])
            .with_candidates(2);
        c.push_candidate(scored(0, 77, 10));
        c.push_candidate(scored(1, GONE, 900));
        c.push_candidate(scored(2, 78, 50));
        assert!(c.push(Record::OomKill(k), now).is_empty());
        let ev = c.push_victim(victim, now).remove(0);
        let got: Vec<(i32, i64)> = ev
            .oom
            .candidates
            .iter()
            .flatten()
            .map(|c| (c.pid, c.points))
            .collect();
        assert_eq!(got, [(GONE, 900), (78, 50)]);
        assert_eq!(ev.sources["candidates"], Source::CandidatesKretprobe);
        // The kernel log's dump then only fills what the probe could not read.
        let mut dump = ev.clone();
        let mut from_dump = dump.oom.candidates.clone().unwrap();
        from_dump[1].rss = Some(4096);
        supplement(
            &mut dump,
            OomContext {
                candidates: Some(from_dump),
                ..OomContext::default()
            },
        );
        let list = dump.oom.candidates.unwrap();
        assert_eq!((list[1].rss, list[1].points), (Some(4096), 50));
        assert_eq!(dump.sources["candidates"], Source::CandidatesKretprobe);
    }

    /// Debian's 7.2 in `vm-test`: the trace record's anon-rss (`get_mm_counter()`) is 12 pages
    /// short of the "Killed process" line's (`get_mm_counter_sum()`); the event carries the
    /// line's figures and says so. Where both agree (6.1 to 6.18) the trace record stays.
    #[test]
    fn the_kill_lines_figures_win_where_the_trace_record_reads_otherwise() {
        let line = Killed {
            memcg: true,
            reason: None,
            pid: 195,
            comm: "dd".into(),
            total_vm_kb: 104_928,
            anon_rss_kb: 65_456,
            file_rss_kb: 4,
            shmem_rss_kb: Some(0),
            uid: Some(0),
            pgtables_kb: Some(176),
            oom_score_adj: Some(0),
        };
        let p = Pending {
            pid: 195,
            tp: Some(tp(195)),
            btf: None,
            deadline: Instant::now(),
        };
        let mut ev = merge(&p, "h");
        (ev.total_vm, ev.anon_rss, ev.file_rss) =
            (Some(104_928 * 1024), Some(65_408 * 1024), Some(0));
        (ev.shmem_rss, ev.pgtables) = (Some(0), Some(176 * 1024));
        let same = {
            let mut e = ev.clone();
            (e.anon_rss, e.file_rss) = (Some(65_456 * 1024), Some(4096));
            e
        };
        kernel_memory(&mut ev, &line);
        assert_eq!(
            (ev.anon_rss, ev.file_rss),
            (Some(65_456 * 1024), Some(4096))
        );
        assert_eq!(ev.sources["memory"], Source::Kmsg);
        assert_eq!(
            ev.sources["pgtables"],
            Source::MarkVictimTracepoint,
            "pgtables agreed"
        );
        let mut agreed = same.clone();
        kernel_memory(&mut agreed, &line);
        assert_eq!(agreed.sources["memory"], Source::MarkVictimTracepoint);
        let mut other = same;
        kernel_memory(
            &mut other,
            &Killed {
                pid: 7,
                anon_rss_kb: 1,
                ..line
            },
        );
        assert_eq!(other.anon_rss, Some(65_456 * 1024), "another victim's line");
    }

    #[test]
    fn a_victim_whose_cgroup_is_gone_takes_it_from_the_report() {
        // The victim is gone from /proc and has no cgroup id to look up (its directory was removed
        // right after the kill, as a runtime does for an exited container): the report names it.
        let now = Instant::now();
        let mut c = correlator(true, false).with_kmsg();
        let inv =
        "4,7,90,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500";
        let summary = format!("6,8,95,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/pod,task_memcg=/pod/gone,task=hog,pid={GONE},uid=1000");
        for line in [inv, &summary, &killed_line(GONE)] {
            c.push_kmsg(&kmsg(line), now);
        }
        let ev = c.push_victim(tp(GONE), now).remove(0);
        assert_eq!(ev.cgroup.as_deref(), Some("/pod/gone"));
        assert_eq!(ev.victim.cgroup.as_deref(), Some("/pod/gone"));
        assert_eq!(ev.sources["cgroup"], Source::Kmsg);
        // Another victim of the invocation (a memory.oom.group member) is not the chosen task:
        // the report's path is not its own.
        let mut c = correlator(true, false).with_kmsg();
        let summary = summary.replace(&format!("pid={GONE}"), &format!("pid={}", GONE - 5));
        for line in [inv, &summary, &killed_line(GONE)] {
            c.push_kmsg(&kmsg(line), now);
        }
        let ev = c.push_victim(tp(GONE), now).remove(0);
        assert_eq!(ev.cgroup, None);
    }
    /// An `oom_kill_process` record choosing `pid`, of the invocation keyed `inv_ktime`.
    fn invocation(pid: i32, ktime_ns: u64, inv_ktime: u64) -> oomwatch_common::OomKillRecord {
        use oomwatch_common::{oom_field, OomKillRecord};
        let mut k = OomKillRecord::zeroed();
        k.kind = RecordKind::OomKill as u32;
        k.ktime_ns = ktime_ns;
        k.invocation_ktime_ns = inv_ktime;
        k.trigger_pid = 9;
        k.chosen_pid = pid;
        k.present = oom_field::CHOSEN | oom_field::INVOCATION;
        k
    }

    #[test]
    fn a_mark_victim_row_whose_partner_never_comes_is_silent() {
        let silence = Silence::new();
        let mut c = correlator(true, true).with_silence(silence.clone(), None);
        let now = Instant::now();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        let evs = c.flush_expired(now + DEFAULT_WINDOW);
        assert_eq!(
            evs.len(),
            1,
            "the event goes out with the tracepoint's fields"
        );
        assert_eq!(evs[0].anon_rss, Some(64 * 1024));
        assert_eq!(silence.count(ProbeId::MarkVictimBtf), 1);
        assert_eq!(silence.count(ProbeId::MarkVictimTp), 0);
        // A complete pair counts nothing; shutdown's flush does not judge.
        c.push_victim(tp(GONE + 1), now);
        c.push_victim(btf(GONE + 1), now);
        c.push_victim(btf(GONE + 2), now);
        c.flush_all();
        assert_eq!(silence.count(ProbeId::MarkVictimBtf), 1);
        assert_eq!(silence.count(ProbeId::MarkVictimTp), 0);
    }

    #[test]
    fn a_kill_without_its_invocation_record_makes_the_oom_kill_row_silent() {
        let silence = Silence::new();
        let mut c = correlator(true, false)
            .with_oom_kill(Source::OomKillFentry, vec![])
            .with_silence(silence.clone(), None);
        let now = Instant::now();
        let v = tp(GONE);
        c.push(
            Record::OomKill(invocation(GONE, v.ktime_ns - 5, v.ktime_ns - 10)),
            now,
        );
        assert_eq!(c.push_victim(v, now)[0].oom_id, Some(1));
        assert_eq!(silence.count(ProbeId::OomKillFentry), 0);
        let mut later = tp(GONE + 1);
        later.ktime_ns = v.ktime_ns + 10 * GROUP_WINDOW_NS;
        assert_eq!(c.push_victim(later, now)[0].oom_id, None);
        assert_eq!(silence.count(ProbeId::OomKillFentry), 1);
    }

    #[test]
    fn an_invocation_with_a_task_dump_but_no_scored_tasks_makes_the_badness_row_silent() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kmsg/oom-memcg-v6.18-host-tail.kmsg"
        ));
        let pid = 12531;
        let run = |scored: bool| {
            let silence = Silence::new();
            let mut c = correlator(true, false)
                .with_oom_kill(Source::OomKillFentry, vec![])
                .with_kmsg()
                .with_candidates(5)
                .with_silence(silence.clone(), Some(ProbeId::BadnessFexit));
            let now = Instant::now();
            let v = tp(pid);
            if scored {
                let mut r = CandidateRecord::zeroed();
                r.kind = RecordKind::CandidateFexit as u32;
                r.invocation_ktime_ns = v.ktime_ns - 10;
                r.trigger_pid = 9;
                (r.pid, r.tgid, r.points) = (pid, pid, 900);
                r.present = oomwatch_common::candidate_field::PID;
                c.push_candidate(r);
            }
            c.push(
                Record::OomKill(invocation(pid, v.ktime_ns - 5, v.ktime_ns - 10)),
                now,
            );
            assert!(c.push_victim(v, now).is_empty(), "held for the report");
            let mut evs = Vec::new();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                evs.extend(c.push_kmsg(&kmsg(line), now));
            }
            (silence.count(ProbeId::BadnessFexit), evs.remove(0))
        };
        let (silent, ev) = run(false);
        assert_eq!(silent, 1);
        assert_eq!(
            ev.sources["candidates"],
            Source::Kmsg,
            "the dump is the fallback"
        );
        assert_eq!(ev.oom.candidates.as_ref().unwrap()[0].pid, pid);
        let (silent, ev) = run(true);
        assert_eq!(silent, 0);
        assert_eq!(ev.sources["candidates"], Source::CandidatesFexit);
    }

    #[test]
    fn a_victim_whose_report_never_comes_makes_the_kernel_log_row_silent() {
        let silence = Silence::new();
        let mut c = correlator(true, false)
            .with_kmsg()
            .with_silence(silence.clone(), None);
        let now = Instant::now();
        assert!(c.push_victim(tp(GONE), now).is_empty());
        assert_eq!(c.flush_expired(now + KMSG_WAIT).len(), 1);
        assert_eq!(silence.count(ProbeId::KmsgOomReport), 1);
    }
}
