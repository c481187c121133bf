//! `oom_kill_process(struct oom_control *oc, const char *message)`: called once per OOM
//! invocation that kills, with the killer's whole context. Two programs with one body: fentry
//! where the kernel allows BTF trampolines, else a kprobe; the agent loads the first that works.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use oomwatch_common::{counter, oom_field, OomKillRecord, RecordKind, OFFSET_ABSENT};

use crate::{
    globals,
    maps::{count, EVENTS},
    read,
};

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> i32 {
    let oc: *const u8 = ctx.arg(0);
    let message: *const u8 = ctx.arg(1);
    record(&ctx, oc, message);
    0
}

#[kprobe(function = "oom_kill_process")]
pub fn oom_kill_kprobe(ctx: ProbeContext) -> u32 {
    let oc: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let message: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    record(&ctx, oc, message);
    0
}

#[inline(always)]
fn record<C: EbpfContext>(ctx: &C, oc: *const u8, message: *const u8) {
    let off = globals::get(&globals::OOM_CONTROL_OFFSETS);
    let task_off = globals::get(&globals::TASK_OFFSETS);
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return;
    };
    let rec = entry.write(OomKillRecord::zeroed());
    rec.kind = RecordKind::OomKill as u32;
    crate::header::fill(
        &mut rec.ktime_ns,
        &mut rec.trigger_pid,
        &mut rec.trigger_tgid,
        &mut rec.trigger_comm,
    );

    if let Some(v) = read::at::<u32, _>(ctx, oc, off.gfp_mask, "oom_control.gfp_mask") {
        rec.gfp_mask = v;
        rec.present |= oom_field::GFP_MASK;
    }
    if let Some(v) = read::at::<i32, _>(ctx, oc, off.order, "oom_control.order") {
        rec.order = v;
        rec.present |= oom_field::ORDER;
    }
    if let Some(v) = read::at::<u64, _>(ctx, oc, off.totalpages, "oom_control.totalpages") {
        rec.totalpages = v;
        rec.present |= oom_field::TOTALPAGES;
    }
    if let Some(v) = read::at::<i64, _>(ctx, oc, off.chosen_points, "oom_control.chosen_points") {
        rec.chosen_points = v;
        rec.present |= oom_field::CHOSEN_POINTS;
    }
    if let Some(v) = read::at::<u32, _>(ctx, oc, off.constraint, "oom_control.constraint") {
        rec.constraint = v;
        rec.present |= oom_field::CONSTRAINT;
    }
    let chosen = read::at::<*const u8, _>(ctx, oc, off.chosen, "oom_control.chosen");
    if let Some(task) = chosen.filter(|t| !t.is_null()) {
        let pid = read::at::<i32, _>(ctx, task, task_off.task_pid, "task_struct.pid");
        let tgid = read::at::<i32, _>(ctx, task, task_off.task_tgid, "task_struct.tgid");
        if let (Some(pid), Some(tgid)) = (pid, tgid) {
            rec.chosen_pid = pid;
            rec.chosen_tgid = tgid;
            rec.present |= oom_field::CHOSEN;
        }
        if task_off.task_comm != OFFSET_ABSENT {
            let src = task.wrapping_add(task_off.task_comm as usize);
            // SAFETY: the helper checks the address; the copy is bounded by the buffer.
            if unsafe { bpf_probe_read_kernel_buf(src, &mut rec.chosen_comm) }.is_ok() {
                rec.present |= oom_field::CHOSEN_COMM;
            }
        }
    }
    match read::at::<*const u8, _>(ctx, oc, off.memcg, "oom_control.memcg") {
        Some(memcg) if memcg.is_null() => rec.present |= oom_field::MEMCG_NULL,
        Some(memcg) if off.memcg_css != OFFSET_ABSENT => {
            let css = memcg.wrapping_add(off.memcg_css as usize);
            if let Some(id) = crate::cgroup::css_cgroup_id(ctx, css, &task_off) {
                rec.memcg_id = id;
                rec.present |= oom_field::MEMCG_ID;
            }
        }
        _ => {}
    }
    // SAFETY: bpf_get_current_task has no preconditions; it returns the running task.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    if let Some(id) = crate::cgroup::task_memcg_id(ctx, current, &task_off) {
        rec.trigger_memcg_id = id;
        rec.present |= oom_field::TRIGGER_MEMCG_ID;
    }
    // The invocation's key for the scored candidates, when a scope program is attached.
    if let Some(t) = crate::candidates::invocation_ktime() {
        rec.invocation_ktime_ns = t;
        rec.present |= oom_field::INVOCATION;
    }
    if !message.is_null() {
        // SAFETY: the helper checks the address and bounds the copy by the buffer's length.
        match unsafe { bpf_probe_read_kernel_str_bytes(message, &mut rec.message) } {
            Ok(_) => rec.present |= oom_field::MESSAGE,
            Err(e) => {
                count(counter::READ_ERRORS);
                debug!(ctx, "oomwatch: oom_kill_process message read failed: {}", e);
            }
        }
    }
    entry.submit(0);
}
