//! Every SIGKILL to a task in a non-root memory cgroup, for the agent's `sigkill` records
//! (issue 15): the target, the sender and the sender's executable, into the `SIGKILLS` ring of
//! their own. Two programs of their own on `signal_generate` (the agent attaches the first that
//! loads): `sigkill_btf` (tp_btf: the target's `task_struct`) and `sigkill_tp` (the trace
//! record's fields).
//!
//! A sender's SIGKILLs are rate-limited here (a generic cell-rate algorithm: one `u64` per
//! sender), so a tight kill loop costs one map update per signal and fills neither the ring
//! nor the agent; the kernel's own kills (`SI_KERNEL`) always pass. What is dropped is
//! counted ([`counter::SIGKILL_RATE_DROPS`], [`counter::SIGKILL_RING_DROPS`]).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{LruHashMap, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use oomwatch_common::{
    counter, sigkill_field, RecordKind, SigkillFilter, SigkillRecord, OFFSET_ABSENT, SIGKILL_BURST,
    SIGKILL_PER_SECOND,
};

use crate::signal::{SIGNAL_OFFSETS, SI_KERNEL, SI_USER};
use crate::{cgroup, globals, lifecycle::track_victim, maps::count, pidns, read, stack};
/// Between two of a sender's records, once its burst is spent.
const INTERVAL_NS: u64 = 1_000_000_000 / SIGKILL_PER_SECOND;
/// How far ahead of now a sender's schedule may run: its burst.
const TOLERANCE_NS: u64 = INTERVAL_NS * (SIGKILL_BURST - 1);

/// The root memory cgroup's id and the on/off switch; set by the agent.
#[unsafe(no_mangle)]
pub static SIGKILL_FILTER: SigkillFilter = SigkillFilter::OFF;

/// ~300 bytes a record: 512 KiB holds ~1,700 SIGKILLs between two wake-ups of the agent.
#[map]
pub static SIGKILLS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// Sender tgid → its theoretical arrival time (GCRA): when its next record is due.
#[map]
static SENDER_SCHEDULE: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Whether SIGKILLs are recorded and `memcg_id` is not the root's.
#[inline(always)]
fn wanted(memcg_id: Option<u64>) -> bool {
    let f = globals::get(&SIGKILL_FILTER);
    if f.enabled == 0 {
        return false;
    }
    match memcg_id {
        Some(id) => f.root_memcg_id == 0 || id != f.root_memcg_id,
        // Unknown: the agent filters by the target's cgroup in /proc.
        None => true,
    }
}

/// Whether the running sender may have one more record now (always for the kernel's kills).
#[inline(always)]
fn admit(kernel: bool, now: u64) -> bool {
    if kernel {
        return true;
    }
    let sender = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once; LRU elements stay valid while the program runs.
    let tat = match unsafe { SENDER_SCHEDULE.get(sender) } {
        Some(&t) if t > now => t,
        _ => now,
    };
    if tat - now > TOLERANCE_NS {
        count(counter::SIGKILL_RATE_DROPS);
        return false;
    }
    let _ = SENDER_SCHEDULE.insert(sender, tat + INTERVAL_NS, 0);
    true
}

/// `tp_btf:signal_generate`, for SIGKILL attribution only.
#[btf_tracepoint(function = "signal_generate")]
pub fn sigkill_btf(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
    // int result); the agent checked these parameter types in BTF before loading.
    let sig: i32 = ctx.arg(0);
    if sig != SIGKILL {
        return 0;
    }
    let task: *const u8 = ctx.arg(2);
    let off = globals::get(&globals::TASK_OFFSETS);
    if let Some(pid) = read::at::<i32, _>(&ctx, task, off.task_pid, "task_struct.pid") {
        record_btf(&ctx, task, pid);
    }
    0
}

/// `tracepoint:signal/signal_generate`, for SIGKILL attribution only.
#[tracepoint(category = "signal", name = "signal_generate")]
pub fn sigkill_tp(ctx: TracePointContext) -> u32 {
    let off = globals::get(&SIGNAL_OFFSETS);
    let base = ctx.as_ptr() as *const u8;
    if read::at::<i32, _>(&ctx, base, off.sig, "signal_generate.sig") != Some(SIGKILL) {
        return 0;
    }
    if let Some(pid) = read::at::<i32, _>(&ctx, base, off.pid, "signal_generate.pid") {
        record_tp(&ctx, base, pid);
    }
    0
}

/// Signal number of SIGKILL (uapi).
const SIGKILL: i32 = 9;

/// tp_btf: the signal's arguments and the target's `task_struct`. Every field is written
/// straight into the reserved record (ring memory, which the verifier does not track: no
/// state per combination of fields present).
#[inline(always)]
fn record_btf(ctx: &BtfTracePointContext, task: *const u8, target_pid: i32) {
    let off = globals::get(&globals::TASK_OFFSETS);
    if !wanted(cgroup::task_memcg_id(ctx, task, &off)) {
        return;
    }
    let info: usize = ctx.arg(1);
    let code = match info {
        0 => Some(SI_USER),
        1 => Some(SI_KERNEL),
        p => {
            let at = globals::get(&SIGNAL_OFFSETS).si_code;
            read::at::<i32, _>(ctx, p as *const u8, at, "kernel_siginfo.si_code")
        }
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !admit(code == Some(SI_KERNEL), now) {
        return;
    }
    let Some(mut entry) = SIGKILLS.reserve::<SigkillRecord>(0) else {
        count(counter::SIGKILL_RING_DROPS);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved ring-buffer slot of `size_of::<SigkillRecord>()`
    // bytes, ours until submit; every field is written before submit.
    unsafe {
        header(rec, RecordKind::SigkillBtf, now, target_pid);
        set_i32(
            &mut (*rec).code,
            &mut (*rec).present,
            code,
            sigkill_field::CODE,
        );
        (*rec).result = ctx.arg(4);
        (*rec).group = ctx.arg(3);
        (*rec).present |= sigkill_field::RESULT | sigkill_field::GROUP;
        let tgid = read::at::<i32, _>(ctx, task, off.task_tgid, "task_struct.tgid");
        set_i32(
            &mut (*rec).target_tgid,
            &mut (*rec).present,
            tgid,
            sigkill_field::TARGET_TGID,
        );
        if let Some(id) = cgroup::task_memcg_id(ctx, task, &off) {
            (*rec).target_memcg_id = id;
            (*rec).present |= sigkill_field::TARGET_MEMCG_ID;
        }
        if off.task_comm != OFFSET_ABSENT && !task.is_null() {
            let src = task.wrapping_add(off.task_comm as usize);
            if bpf_probe_read_kernel_buf(src, &mut (*rec).target_comm).is_ok() {
                (*rec).present |= sigkill_field::TARGET_COMM;
            }
        }
        if let Some((level, nr, _)) = pidns::process_ns(ctx, task) {
            (*rec).target_ns_level = level;
            (*rec).target_ns_tgid = nr;
            (*rec).present |= sigkill_field::TARGET_PIDNS;
        }
        fill_sender(ctx, &mut *rec);
        follow_init(&*rec);
    }
    entry.submit(0);
}

/// tracepoint: the trace record's fields (no `task_struct`: no tgid, memory cgroup or pid
/// namespace of the target; the agent reads its cgroup in /proc).
#[inline(always)]
fn record_tp(ctx: &TracePointContext, base: *const u8, target_pid: i32) {
    if !wanted(None) {
        return;
    }
    let off = globals::get(&SIGNAL_OFFSETS);
    let code = read::at::<i32, _>(ctx, base, off.code, "signal_generate.code");
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !admit(code == Some(SI_KERNEL), now) {
        return;
    }
    let Some(mut entry) = SIGKILLS.reserve::<SigkillRecord>(0) else {
        count(counter::SIGKILL_RING_DROPS);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: as in `record_btf`.
    unsafe {
        header(rec, RecordKind::SigkillTracepoint, now, target_pid);
        set_i32(
            &mut (*rec).code,
            &mut (*rec).present,
            code,
            sigkill_field::CODE,
        );
        let result = read::at::<i32, _>(ctx, base, off.result, "signal_generate.result");
        set_i32(
            &mut (*rec).result,
            &mut (*rec).present,
            result,
            sigkill_field::RESULT,
        );
        let group = read::at::<i32, _>(ctx, base, off.group, "signal_generate.group");
        set_i32(
            &mut (*rec).group,
            &mut (*rec).present,
            group,
            sigkill_field::GROUP,
        );
        let comm = base.wrapping_add(off.comm as usize);
        if off.comm != OFFSET_ABSENT
            && bpf_probe_read_kernel_buf(comm, &mut (*rec).target_comm).is_ok()
        {
            (*rec).present |= sigkill_field::TARGET_COMM;
        }
        fill_sender(ctx, &mut *rec);
    }
    entry.submit(0);
}

/// Kind, time, target pid; every other field zero and absent.
///
/// # Safety
/// `rec` points at a reserved, writable record.
#[inline(always)]
unsafe fn header(rec: *mut SigkillRecord, kind: RecordKind, now: u64, target_pid: i32) {
    // SAFETY: the caller's contract; zeroing first makes every field defined.
    unsafe {
        core::ptr::write_bytes(rec.cast::<u8>(), 0, core::mem::size_of::<SigkillRecord>());
        (*rec).kind = kind as u32;
        (*rec).ktime_ns = now;
        (*rec).target_pid = target_pid;
    }
}

#[inline(always)]
fn set_i32(slot: &mut i32, present: &mut u32, v: Option<i32>, bit: u32) {
    if let Some(v) = v {
        *slot = v;
        *present |= bit;
    }
}

/// A container's main process (pid 1 in a pid namespace below the host's), sent the signal:
/// its exit ends the container (`container_killed`), so it is followed like a victim.
#[inline(always)]
fn follow_init(rec: &SigkillRecord) {
    let delivered = rec.result == 0;
    let pidns = rec.present & sigkill_field::TARGET_PIDNS != 0;
    if delivered && pidns && rec.target_ns_level > 0 && rec.target_ns_tgid == 1 {
        let tgid = if rec.present & sigkill_field::TARGET_TGID != 0 {
            rec.target_tgid
        } else {
            rec.target_pid
        };
        track_victim(tgid, rec.ktime_ns, true);
    }
}

/// The running task (the sender): ids, comm, memory cgroup and executable.
#[inline(always)]
fn fill_sender<C: EbpfContext>(ctx: &C, rec: &mut SigkillRecord) {
    let pid_tgid = bpf_get_current_pid_tgid();
    rec.sender_pid = pid_tgid as u32 as i32;
    rec.sender_tgid = (pid_tgid >> 32) as u32 as i32;
    if let Ok(c) = bpf_get_current_comm() {
        rec.sender_comm = c;
    }
    // SAFETY: bpf_get_current_task has no preconditions; the pointer is only read through
    // bpf_probe_read_kernel.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let off = globals::get(&globals::TASK_OFFSETS);
    if let Some(id) = cgroup::task_memcg_id(ctx, current, &off) {
        rec.sender_memcg_id = id;
        rec.present |= sigkill_field::SENDER_MEMCG_ID;
    }
    rec.exe_depth = stack::exe_components(ctx, current, &mut rec.sender_exe);
    if rec.exe_depth > 0 {
        rec.present |= sigkill_field::SENDER_EXE;
    }
}
