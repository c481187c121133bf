//! `oom:mark_victim`: fired once per OOM victim, from `mark_oom_victim()`.
//!
//! Two programs on the same kernel event, each filling what it can reach; the agent merges the two
//! records of one victim:
//! - `mark_victim_tp` (tracepoint): the trace record's own fields. Their offsets come from the
//!   tracefs `format` file (kernels 4.13–6.8 without the 2024 backport only have `pid`).
//! - `mark_victim_btf` (tp_btf): the victim's `task_struct`: tgid, comm, memory cgroup id and
//!   `signal->oom_score_adj`, its pid namespace and that namespace's init (`pidns`), through
//!   BTF-resolved offsets. Loaded only where the tracepoint's
//!   first argument is a `struct task_struct *`.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use oomwatch_common::{counter, field, RecordKind, VictimRecord, OFFSET_ABSENT, SIGKILL_BIT};

use crate::{
    cgroup, globals, header, kill_signal,
    maps::{count, EVENTS},
    read,
};

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    let off = globals::get(&globals::MARK_VICTIM_OFFSETS);
    let Some(mut entry) = EVENTS.reserve::<VictimRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return 0;
    };
    let rec = entry.write(VictimRecord::zeroed());
    fill_header(rec, RecordKind::MarkVictimTracepoint);
    crate::stack::capture(&ctx, rec.ktime_ns, rec.trigger_pid, rec.trigger_tgid);
    let base = ctx.as_ptr() as *const u8;

    if let Some(pid) = read::at::<i32, _>(&ctx, base, off.pid, "pid") {
        rec.pid = pid;
        rec.present |= field::PID;
        if kill_signal::killed_by_current(pid, rec.ktime_ns) {
            rec.present |= field::KILL_SENT;
        }
    }
    if let Some(loc) = read::at::<u32, _>(&ctx, base, off.comm_data_loc, "comm") {
        // __data_loc: low 16 bits are the offset of the string in the record, high 16 its length.
        let src = base.wrapping_add((loc & 0xffff) as usize);
        // SAFETY: the helper checks the address and bounds the copy by the buffer's length.
        match unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.comm) } {
            Ok(_) => rec.present |= field::COMM,
            Err(e) => {
                count(counter::READ_ERRORS);
                debug!(&ctx, "oomwatch: mark_victim comm read failed: {}", e);
            }
        }
    }
    let kb = [
        (off.total_vm, field::TOTAL_VM),
        (off.anon_rss, field::ANON_RSS),
        (off.file_rss, field::FILE_RSS),
        (off.shmem_rss, field::SHMEM_RSS),
        (off.pgtables, field::PGTABLES),
    ];
    let mut i = 0;
    while i < kb.len() {
        let (offset, bit) = kb[i];
        if let Some(v) = read::at::<u64, _>(&ctx, base, offset, "rss") {
            match bit {
                field::TOTAL_VM => rec.total_vm_kb = v,
                field::ANON_RSS => rec.anon_rss_kb = v,
                field::FILE_RSS => rec.file_rss_kb = v,
                field::SHMEM_RSS => rec.shmem_rss_kb = v,
                _ => rec.pgtables_kb = v,
            }
            rec.present |= bit;
        }
        i += 1;
    }
    if let Some(uid) = read::at::<u32, _>(&ctx, base, off.uid, "uid") {
        rec.uid = uid;
        rec.present |= field::UID;
    }
    if let Some(adj) = read::at::<i16, _>(&ctx, base, off.oom_score_adj, "oom_score_adj") {
        rec.oom_score_adj = adj;
        rec.present |= field::OOM_SCORE_ADJ;
    }
    track(rec);
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    let off = globals::get(&globals::TASK_OFFSETS);
    let task: *const u8 = ctx.arg(0);
    let Some(mut entry) = EVENTS.reserve::<VictimRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return 0;
    };
    let rec = entry.write(VictimRecord::zeroed());
    fill_header(rec, RecordKind::MarkVictimBtf);
    crate::stack::capture(&ctx, rec.ktime_ns, rec.trigger_pid, rec.trigger_tgid);

    if let Some(pid) = read::at::<i32, _>(&ctx, task, off.task_pid, "task_struct.pid") {
        rec.pid = pid;
        rec.present |= field::PID;
        if kill_signal::killed_by_current(pid, rec.ktime_ns) {
            rec.present |= field::KILL_SENT;
        }
    }
    if let Some(tgid) = read::at::<i32, _>(&ctx, task, off.task_tgid, "task_struct.tgid") {
        rec.tgid = tgid;
        rec.present |= field::TGID;
    }
    if off.task_comm != OFFSET_ABSENT {
        // SAFETY: the helper checks the address; the copy is bounded by the buffer's length.
        match unsafe {
            bpf_probe_read_kernel_buf(task.wrapping_add(off.task_comm as usize), &mut rec.comm)
        } {
            Ok(()) => rec.present |= field::COMM,
            Err(e) => {
                count(counter::READ_ERRORS);
                debug!(&ctx, "oomwatch: task_struct.comm read failed: {}", e);
            }
        }
    }
    let signal = read::at::<*const u8, _>(&ctx, task, off.task_signal, "task_struct.signal");
    if let Some(adj) = signal.and_then(|s| {
        read::at::<i16, _>(
            &ctx,
            s,
            off.signal_oom_score_adj,
            "signal_struct.oom_score_adj",
        )
    }) {
        rec.oom_score_adj = adj;
        rec.present |= field::OOM_SCORE_ADJ;
    }
    if let Some(pending) =
        read::at::<u64, _>(&ctx, task, off.task_pending_signal, "task_struct.pending")
    {
        rec.present |= field::SIGNALS;
        if pending & SIGKILL_BIT != 0 {
            rec.present |= field::SIGKILL_PENDING;
        }
    }
    let id = cgroup::task_memcg_id(&ctx, task, &off);
    if let Some(id) = id {
        rec.memcg_id = id;
        rec.present |= field::MEMCG_ID;
    }
    crate::pidns::fill(&ctx, task, &off, rec);
    track(rec);
    entry.submit(0);
    0
}

/// Times the victim's exit (`lifecycle::victim_exit`): by tgid, else by pid (the victim task is
/// normally its process's leader, whose pid is the tgid). A kill restarts the clock; a mark
/// without one (another thread of a process already killed) keeps the kill's time.
#[inline(always)]
fn track(rec: &VictimRecord) {
    let keep_first = rec.present & field::KILL_SENT == 0;
    if rec.present & field::TGID != 0 {
        crate::lifecycle::track_victim(rec.tgid, rec.ktime_ns, keep_first);
    } else if rec.present & field::PID != 0 {
        crate::lifecycle::track_victim(rec.pid, rec.ktime_ns, keep_first);
    }
}

/// Kind, kernel timestamp and the running (triggering) task.
#[inline(always)]
fn fill_header(rec: &mut VictimRecord, kind: RecordKind) {
    rec.kind = kind as u32;
    header::fill(
        &mut rec.ktime_ns,
        &mut rec.trigger_pid,
        &mut rec.trigger_tgid,
        &mut rec.trigger_comm,
    );
}
