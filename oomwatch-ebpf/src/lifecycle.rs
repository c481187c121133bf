//! How a kill ends: the killed process's exit (`sched:sched_process_exit` of its last thread,
//! only for processes in [`VICTIMS`]) and the OOM reaper's steps (`oom:wake_reaper`, `oom:start_task_reaping`,
//! `oom:finish_task_reaping`, `oom:skip_task_reaping`, which fire only for OOM victims). Plus two
//! near-OOM counters (`oom:reclaim_retry_zone`, `oom:compact_retry`).
//!
//! Every trace-record field is read at the offset the agent found in the event's tracefs
//! `format` file.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
    EbpfContext,
};
use oomwatch_common::{counter, lifecycle_field, LifecycleOffsets, LifecycleRecord, RecordKind};

use crate::{
    globals,
    maps::{count, EVENTS},
    read,
};

/// `pid` field offsets of the lifecycle events (tracefs `format` files); set by the agent.
#[unsafe(no_mangle)]
pub static LIFECYCLE_OFFSETS: LifecycleOffsets = LifecycleOffsets::ABSENT;

/// Killed processes not yet exited: tgid (`task->pid` where only that is known) →
/// `bpf_ktime_get_ns()` of the kill. Filled by the
/// `mark_victim` programs and by SIGKILLs of listed userspace killers; the exit program removes
/// the entry. LRU, so a missed exit can never fill it up.
#[map]
pub static VICTIMS: LruHashMap<i32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Starts tracking a killed task. `keep_first`: do not move an existing entry's kill time (a
/// second SIGKILL to a task already being killed).
#[inline(always)]
pub fn track_victim(tgid: i32, kill_ktime_ns: u64, keep_first: bool) {
    let flags = if keep_first { BPF_NOEXIST } else { BPF_ANY };
    // An error is an existing entry (keep_first) or a full map that could not evict: either
    // way the exit then goes unreported, which the agent notices as a victim that never exited.
    let _ = VICTIMS.insert(tgid, kill_ktime_ns, u64::from(flags));
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn victim_exit(ctx: TracePointContext) -> u32 {
    // The exiting task is the running one.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32 as i32;
    let tgid = (pid_tgid >> 32) as u32 as i32;
    // Every task's exit passes here: one hash lookup, and nothing more for non-victims.
    let Some(kill) = VICTIMS.get_ptr(tgid) else {
        return 0;
    };
    let off = globals::get(&LIFECYCLE_OFFSETS);
    if !group_dead(&ctx, &off, tid, tgid) {
        return 0;
    }
    // SAFETY: the pointer comes from the map lookup just made and points at a u64 value; a
    // concurrent removal could at worst make us read a stale kill time, never invalid memory
    // (LRU hash map elements are preallocated and not freed while the program runs).
    let kill_ktime_ns = unsafe { *kill };
    let _ = VICTIMS.remove(tgid);
    emit(
        RecordKind::VictimExit,
        tgid,
        tid,
        kill_ktime_ns,
        lifecycle_field::KILL_KTIME,
    );
    0
}

/// Whether the exiting thread is its process's last: the record's `group_dead` (6.16+), else
/// `current->signal->live == 0` (decremented before the event on every kernel), else (neither
/// readable) the thread-group leader's exit.
#[inline(always)]
fn group_dead(ctx: &TracePointContext, off: &LifecycleOffsets, tid: i32, tgid: i32) -> bool {
    let base = ctx.as_ptr() as *const u8;
    if let Some(dead) = read::at::<u8, _>(ctx, base, off.exit_group_dead, "group_dead") {
        return dead != 0;
    }
    let task_off = globals::get(&globals::TASK_OFFSETS);
    // SAFETY: bpf_get_current_task has no preconditions; it returns the running task.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let signal = read::at::<*const u8, _>(ctx, current, task_off.task_signal, "task.signal");
    match signal.and_then(|s| read::at::<i32, _>(ctx, s, off.signal_live, "signal.live")) {
        Some(live) => live == 0,
        None => tid == tgid,
    }
}

#[tracepoint(category = "oom", name = "wake_reaper")]
pub fn wake_reaper(ctx: TracePointContext) -> u32 {
    let off = globals::get(&LIFECYCLE_OFFSETS).wake_reaper_pid;
    reaper_step(&ctx, off, RecordKind::WakeReaper)
}

#[tracepoint(category = "oom", name = "start_task_reaping")]
pub fn start_task_reaping(ctx: TracePointContext) -> u32 {
    let off = globals::get(&LIFECYCLE_OFFSETS).start_reaping_pid;
    reaper_step(&ctx, off, RecordKind::StartReaping)
}

#[tracepoint(category = "oom", name = "finish_task_reaping")]
pub fn finish_task_reaping(ctx: TracePointContext) -> u32 {
    let off = globals::get(&LIFECYCLE_OFFSETS).finish_reaping_pid;
    reaper_step(&ctx, off, RecordKind::FinishReaping)
}

#[tracepoint(category = "oom", name = "skip_task_reaping")]
pub fn skip_task_reaping(ctx: TracePointContext) -> u32 {
    let off = globals::get(&LIFECYCLE_OFFSETS).skip_reaping_pid;
    reaper_step(&ctx, off, RecordKind::SkipReaping)
}

#[tracepoint(category = "oom", name = "reclaim_retry_zone")]
pub fn reclaim_retry_zone(_ctx: TracePointContext) -> u32 {
    count(counter::RECLAIM_RETRY_ZONE);
    0
}

#[tracepoint(category = "oom", name = "compact_retry")]
pub fn compact_retry(_ctx: TracePointContext) -> u32 {
    count(counter::COMPACT_RETRY);
    0
}

#[inline(always)]
fn reaper_step(ctx: &TracePointContext, offset: u32, kind: RecordKind) -> u32 {
    let base = ctx.as_ptr() as *const u8;
    match read::at::<i32, _>(ctx, base, offset, "oom reaper pid") {
        Some(pid) => emit(kind, pid, 0, 0, lifecycle_field::PID),
        None => emit(kind, 0, 0, 0, 0),
    }
    0
}

#[inline(always)]
fn emit(kind: RecordKind, pid: i32, tid: i32, kill_ktime_ns: u64, present: u32) {
    let Some(mut entry) = EVENTS.reserve::<LifecycleRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return;
    };
    let rec = entry.write(LifecycleRecord::zeroed());
    rec.kind = kind as u32;
    rec.present = present | if pid != 0 { lifecycle_field::PID } else { 0 };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    rec.ktime_ns = unsafe { bpf_ktime_get_ns() };
    rec.kill_ktime_ns = kill_ktime_ns;
    rec.pid = pid;
    rec.tid = tid;
    entry.submit(0);
}
