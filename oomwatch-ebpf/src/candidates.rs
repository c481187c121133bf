//! Why this victim: every task the OOM killer scores in one invocation, with the points
//! `oom_badness(p, totalpages)` returned for it.
//!
//! `oom_badness()` is also called for each read of `/proc/<pid>/oom_score`, so a task is
//! reported only while the running task is inside `out_of_memory()` ([`OOM_SCOPE`], filled on
//! entry and cleared on return). The kernel serialises invocations under `oom_lock`; the scope
//! is keyed by pid_tgid anyway. Two sets of programs with one body; the agent loads the first
//! set that fully attaches:
//! - fentry/fexit on `out_of_memory`, fexit on `oom_badness` (arguments and return value);
//! - kprobe/kretprobe on `out_of_memory`, kprobe on `oom_badness` (its arguments, saved in
//!   [`BADNESS_ARGS`]) and kretprobe (the return value).
//!
//! Records go to a ring of their own ([`CANDIDATES`]): a global OOM scores every process, and
//! those records must never crowd victims out of `EVENTS`.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use oomwatch_common::{
    candidate_field, counter, CandidateOffsets, CandidateRecord, OomScope, RecordKind,
    MAX_CANDIDATES_PER_INVOCATION, OFFSET_ABSENT,
};

use crate::{globals, maps::count, read};

/// `task_struct.mm` and the `mm_struct` counters `oom_badness()` reads (BTF); set by the agent.
#[unsafe(no_mangle)]
pub static CANDIDATE_OFFSETS: CandidateOffsets = CandidateOffsets::ABSENT;

/// Tasks inside `out_of_memory()`: pid_tgid → entry time and tasks scored so far. LRU, so an
/// entry whose return was missed (kretprobe instances exhausted) can never fill it.
#[map]
pub static OOM_SCOPE: LruHashMap<u64, OomScope> = LruHashMap::with_max_entries(1024, 0);

/// `oom_badness()`'s arguments (task, totalpages) between its kprobe and kretprobe.
#[map]
static BADNESS_ARGS: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

/// Scored tasks for the agent: 4096 records of 104 bytes (+ 8 of header) fit, one whole
/// invocation at [`MAX_CANDIDATES_PER_INVOCATION`]. The agent shrinks it to one page when no
/// `oom_badness` row can attach.
#[map]
pub static CANDIDATES: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// When the running task entered `out_of_memory()`, if it is inside it (for `oom_kill_process`).
#[inline(always)]
pub fn invocation_ktime() -> Option<u64> {
    let scope = OOM_SCOPE.get_ptr(bpf_get_current_pid_tgid())?;
    // SAFETY: the pointer comes from the lookup just made; LRU elements are preallocated and
    // stay valid for the program run. Only this task writes its own entry.
    Some(unsafe { (*scope).ktime_ns })
}

#[inline(always)]
fn enter() {
    let scope = OomScope {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        scored: 0,
        _pad0: 0,
    };
    // A failed insert leaves this invocation unreported: its tasks are not scoped.
    let _ = OOM_SCOPE.insert(bpf_get_current_pid_tgid(), scope, 0);
}

#[inline(always)]
fn leave() {
    let _ = OOM_SCOPE.remove(bpf_get_current_pid_tgid());
}

#[fentry(function = "out_of_memory")]
pub fn oom_scope_fentry(_ctx: FEntryContext) -> i32 {
    enter();
    0
}

#[fexit(function = "out_of_memory")]
pub fn oom_scope_fexit(_ctx: FExitContext) -> i32 {
    leave();
    0
}

#[kprobe(function = "out_of_memory")]
pub fn oom_scope_kprobe(_ctx: ProbeContext) -> u32 {
    enter();
    0
}

#[kretprobe(function = "out_of_memory")]
pub fn oom_scope_kretprobe(_ctx: RetProbeContext) -> u32 {
    leave();
    0
}

/// `long oom_badness(struct task_struct *p, unsigned long totalpages)`; the agent checked this
/// signature in BTF. The return value follows the two arguments in the context.
#[fexit(function = "oom_badness")]
pub fn oom_badness_fexit(ctx: FExitContext) -> i32 {
    let p: *const u8 = ctx.arg(0);
    let totalpages: u64 = ctx.arg(1);
    let points: i64 = ctx.arg(2);
    score(&ctx, RecordKind::CandidateFexit, p, totalpages, points);
    0
}

#[kprobe(function = "oom_badness")]
pub fn oom_badness_kprobe(ctx: ProbeContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // A /proc/<pid>/oom_score read: nothing to keep.
    if OOM_SCOPE.get_ptr(key).is_none() {
        return 0;
    }
    let p: u64 = ctx.arg(0).unwrap_or(0);
    let totalpages: u64 = ctx.arg(1).unwrap_or(0);
    let _ = BADNESS_ARGS.insert(key, [p, totalpages], 0);
    0
}

#[kretprobe(function = "oom_badness")]
pub fn oom_badness_kretprobe(ctx: RetProbeContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(args) = BADNESS_ARGS.get_ptr(key) else {
        return 0;
    };
    // SAFETY: the pointer comes from the lookup just made and points at a [u64; 2]; LRU
    // elements stay valid for the program run.
    let [p, totalpages] = unsafe { *args };
    let _ = BADNESS_ARGS.remove(key);
    let points: i64 = ctx.ret();
    score(
        &ctx,
        RecordKind::CandidateKretprobe,
        p as *const u8,
        totalpages,
        points,
    );
    0
}

/// Reports task `p` scored `points` if the running task is inside `out_of_memory()`.
#[inline(always)]
fn score<C: EbpfContext>(ctx: &C, kind: RecordKind, p: *const u8, totalpages: u64, points: i64) {
    // LONG_MIN: a task the killer skips (oom_score_adj -1000, MMF_OOM_SKIP, in vfork).
    if points == i64::MIN || p.is_null() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(scope) = OOM_SCOPE.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: the pointer comes from the lookup just made; LRU elements are preallocated and
    // stay valid for the program run; only this task's programs touch its entry.
    let (invocation, seq) = unsafe { ((*scope).ktime_ns, (*scope).scored) };
    // SAFETY: as above.
    unsafe { (*scope).scored = seq.wrapping_add(1) };
    if seq >= MAX_CANDIDATES_PER_INVOCATION {
        count(counter::CANDIDATE_DROPS);
        return;
    }
    let Some(mut entry) = CANDIDATES.reserve::<CandidateRecord>(0) else {
        count(counter::CANDIDATE_DROPS);
        return;
    };
    let rec = entry.write(CandidateRecord::zeroed());
    rec.kind = kind as u32;
    rec.invocation_ktime_ns = invocation;
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    rec.ktime_ns = unsafe { bpf_ktime_get_ns() };
    rec.trigger_pid = pid_tgid as u32 as i32;
    rec.trigger_tgid = (pid_tgid >> 32) as u32 as i32;
    rec.points = points;
    rec.totalpages = totalpages;
    rec.seq = seq;
    task_fields(ctx, rec, p);
    entry.submit(0);
}

/// The scored task's identity, `oom_score_adj` and the memory `oom_badness()` counted.
#[inline(always)]
fn task_fields<C: EbpfContext>(ctx: &C, rec: &mut CandidateRecord, p: *const u8) {
    let t = globals::get(&globals::TASK_OFFSETS);
    let pid = read::at::<i32, _>(ctx, p, t.task_pid, "task_struct.pid");
    let tgid = read::at::<i32, _>(ctx, p, t.task_tgid, "task_struct.tgid");
    if let (Some(pid), Some(tgid)) = (pid, tgid) {
        rec.pid = pid;
        rec.tgid = tgid;
        rec.present |= candidate_field::PID;
    }
    if t.task_comm != OFFSET_ABSENT {
        let src = p.wrapping_add(t.task_comm as usize);
        // SAFETY: the helper checks the address; the copy is bounded by the buffer's length.
        match unsafe { bpf_probe_read_kernel_buf(src, &mut rec.comm) } {
            Ok(()) => rec.present |= candidate_field::COMM,
            Err(_) => count(counter::READ_ERRORS),
        }
    }
    let signal = read::at::<*const u8, _>(ctx, p, t.task_signal, "task_struct.signal");
    let adj = signal
        .and_then(|s| read::at::<i16, _>(ctx, s, t.signal_oom_score_adj, "signal.oom_score_adj"));
    if let Some(adj) = adj {
        rec.oom_score_adj = adj;
        rec.present |= candidate_field::OOM_SCORE_ADJ;
    }
    let off = globals::get(&CANDIDATE_OFFSETS);
    // A task whose leader has exited has no mm here (the kernel then scored another of its
    // threads): its memory stays absent.
    let Some(mm) = read::at::<*const u8, _>(ctx, p, off.task_mm, "task_struct.mm") else {
        return;
    };
    if mm.is_null() {
        return;
    }
    // Counters are read as get_mm_counter() does: a negative transient value is 0.
    let counter = |offset: u32| read::at::<i64, _>(ctx, mm, offset, "mm counter").map(|v| v.max(0));
    if let (Some(file), Some(anon), Some(shmem)) = (
        counter(off.mm_file),
        counter(off.mm_anon),
        counter(off.mm_shmem),
    ) {
        rec.rss_pages = (file + anon + shmem) as u64;
        rec.present |= candidate_field::RSS;
    }
    if let Some(swap) = counter(off.mm_swap) {
        rec.swap_pages = swap as u64;
        rec.present |= candidate_field::SWAP;
    }
    if let Some(bytes) = counter(off.mm_pgtables_bytes) {
        rec.pgtables_bytes = bytes as u64;
        rec.present |= candidate_field::PGTABLES;
    }
}
