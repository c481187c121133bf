//! The victim's pid namespace and that namespace's init, read at the kill from the victim's
//! `task_struct` (for `partial_kill`): `task->group_leader->thread_pid` is the process's
//! `struct pid`; `numbers[level]` its id (`nr`) and namespace (`ns`) at its own level; the
//! namespace's `child_reaper` is its init (pid 1 there).
use aya_ebpf::{helpers::bpf_probe_read_kernel_buf, EbpfContext};
use oomwatch_common::{
    counter, field, PidNsOffsets, TaskOffsets, VictimRecord, MAX_PID_NS_LEVEL, OFFSET_ABSENT,
};

use crate::{cgroup, maps::count, read};

/// Offsets of the pid-namespace chain (BTF); set by the agent.
#[unsafe(no_mangle)]
pub static PIDNS_OFFSETS: PidNsOffsets = PidNsOffsets::ABSENT;

/// The process of `task` in its own pid namespace: the level, its id there (`nr`, 1 for the
/// namespace's init) and the `struct upid` at that level.
#[inline(always)]
pub fn process_ns<C: EbpfContext>(ctx: &C, task: *const u8) -> Option<(u32, i32, *const u8)> {
    let p = crate::globals::get(&PIDNS_OFFSETS);
    if p.upid_size == OFFSET_ABSENT {
        return None;
    }
    let leader = read::at::<*const u8, _>(ctx, task, p.task_group_leader, "group_leader")?;
    let pid = read::at::<*const u8, _>(ctx, leader, p.task_thread_pid, "thread_pid")?;
    let level = read::at::<u32, _>(ctx, pid, p.pid_level, "pid.level")?;
    if level > MAX_PID_NS_LEVEL {
        return None;
    }
    let at = p.pid_numbers as u64 + level as u64 * p.upid_size as u64;
    let upid = pid.wrapping_add(at as usize);
    let nr = read::at::<i32, _>(ctx, upid, p.upid_nr, "upid.nr")?;
    Some((level, nr, upid))
}

/// Fills `ns_level`, `ns_tgid` and the init's fields of `rec` for the victim `task`.
#[inline(always)]
pub fn fill<C: EbpfContext>(ctx: &C, task: *const u8, off: &TaskOffsets, rec: &mut VictimRecord) {
    let Some((level, nr, upid)) = process_ns(ctx, task) else {
        return;
    };
    let p = crate::globals::get(&PIDNS_OFFSETS);
    rec.ns_level = level;
    rec.ns_tgid = nr;
    rec.present |= field::PIDNS;
    let Some(ns) = read::at::<*const u8, _>(ctx, upid, p.upid_ns, "upid.ns") else {
        return;
    };
    let Some(init) = read::at::<*const u8, _>(ctx, ns, p.pidns_child_reaper, "child_reaper") else {
        return;
    };
    let Some(tgid) = read::at::<i32, _>(ctx, init, off.task_tgid, "child_reaper.tgid") else {
        return;
    };
    let Some(memcg) = cgroup::task_memcg_id(ctx, init, off) else {
        return;
    };
    if off.task_comm == OFFSET_ABSENT || init.is_null() {
        return;
    }
    // SAFETY: the helper checks the address; the copy is bounded by the buffer's length.
    match unsafe {
        bpf_probe_read_kernel_buf(
            init.wrapping_add(off.task_comm as usize),
            &mut rec.init_comm,
        )
    } {
        Ok(()) => {
            rec.init_tgid = tgid;
            rec.init_memcg_id = memcg;
            rec.present |= field::PIDNS_INIT;
        }
        Err(_) => count(counter::READ_ERRORS),
    }
}
