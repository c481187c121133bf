//! `signal:signal_generate`: SIGKILLs sent by userspace OOM killers (earlyoom, systemd-oomd,
//! ...). A record is written only when the signal is SIGKILL *and* the sender's comm is in
//! [`KILLER_COMMS`]: every other signal costs one compare and no record. Every SIGKILL is also
//! remembered for [`kill_signal`] (one map update), which tells the kernel's OOM kills from
//! the tasks it only marks.
//!
//! Every SIGKILL to a task in a non-root memory cgroup is recorded by programs of their own on
//! the same tracepoint (`crate::sigkill`): each program is verified on its own, within its own
//! budget, and one the kernel refuses takes nothing from the others.
//!
//! Two programs with one purpose; the agent loads the first that works:
//! - `signal_generate_btf` (tp_btf): the target's `task_struct` (tgid, comm, memory cgroup) and
//!   `info->si_code`, through BTF-resolved offsets;
//! - `signal_generate_tp` (tracepoint): the trace record's fields (target pid and comm, code,
//!   group, result) at their tracefs `format` offsets.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use oomwatch_common::{
    comm_words, counter, signal_field, KillerComms, RecordKind, SignalOffsets, SignalRecord,
    COMM_LEN, MAX_KILLERS, OFFSET_ABSENT,
};

use crate::{
    cgroup, globals, kill_signal,
    lifecycle::track_victim,
    maps::{count, EVENTS},
    read,
};

/// Signal number of SIGKILL (the same on every architecture Linux supports; uapi).
const SIGKILL: i32 = 9;
/// `si_code` the kernel reports for `SEND_SIG_NOINFO` (uapi `SI_USER`) and `SEND_SIG_PRIV`
/// (uapi `SI_KERNEL`), the two special `info` pointer values 0 and 1.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;

/// Trace-record offsets (tracefs) and `kernel_siginfo.si_code` (BTF); set by the agent.
#[unsafe(no_mangle)]
pub static SIGNAL_OFFSETS: SignalOffsets = SignalOffsets::ABSENT;

/// The userspace killers whose SIGKILLs are reported; set by the agent.
#[unsafe(no_mangle)]
pub static KILLER_COMMS: KillerComms = KillerComms::EMPTY;

#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
    // int result); the agent checked these parameter types in BTF before loading.
    let sig: i32 = ctx.arg(0);
    if sig != SIGKILL {
        return 0;
    }
    let task: *const u8 = ctx.arg(2);
    let off = globals::get(&globals::TASK_OFFSETS);
    let target_pid = read::at::<i32, _>(&ctx, task, off.task_pid, "task_struct.pid");
    let info: usize = ctx.arg(1);
    if let Some(pid) = target_pid {
        // SEND_SIG_PRIV, the special `info` pointer value 1: how the OOM killer sends it.
        kill_signal::sigkill_sent(pid, info == 1);
    }
    let Some(sender_comm) = listed_sender() else {
        return 0;
    };
    let group: i32 = ctx.arg(3);
    let result: i32 = ctx.arg(4);
    let Some(mut entry) = EVENTS.reserve::<SignalRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return 0;
    };
    let rec = entry.write(SignalRecord::zeroed());
    fill_common(&ctx, rec, RecordKind::SignalBtf, sig, sender_comm);
    rec.group = group;
    rec.result = result;
    rec.present |= signal_field::GROUP | signal_field::RESULT;
    let code = match info {
        0 => Some(SI_USER),
        1 => Some(SI_KERNEL),
        p => {
            let off = globals::get(&SIGNAL_OFFSETS).si_code;
            read::at::<i32, _>(&ctx, p as *const u8, off, "kernel_siginfo.si_code")
        }
    };
    if let Some(code) = code {
        rec.code = code;
        rec.present |= signal_field::CODE;
    }
    if let Some(pid) = target_pid {
        rec.target_pid = pid;
        rec.present |= signal_field::TARGET_PID;
    }
    if let Some(tgid) = read::at::<i32, _>(&ctx, task, off.task_tgid, "task_struct.tgid") {
        rec.target_tgid = tgid;
        rec.present |= signal_field::TARGET_TGID;
    }
    if off.task_comm != OFFSET_ABSENT && !task.is_null() {
        let src = task.wrapping_add(off.task_comm as usize);
        // SAFETY: the helper checks the address; the copy is bounded by the buffer's length.
        match unsafe { bpf_probe_read_kernel_buf(src, &mut rec.target_comm) } {
            Ok(()) => rec.present |= signal_field::TARGET_COMM,
            Err(_) => count(counter::READ_ERRORS),
        }
    }
    if let Some(id) = cgroup::task_memcg_id(&ctx, task, &off) {
        rec.target_memcg_id = id;
        rec.present |= signal_field::TARGET_MEMCG_ID;
    }
    track(rec);
    entry.submit(0);
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate_tp(ctx: TracePointContext) -> u32 {
    let off = globals::get(&SIGNAL_OFFSETS);
    let base = ctx.as_ptr() as *const u8;
    let Some(sig) = read::at::<i32, _>(&ctx, base, off.sig, "signal_generate.sig") else {
        return 0;
    };
    if sig != SIGKILL {
        return 0;
    }
    if let Some(pid) = read::at::<i32, _>(&ctx, base, off.pid, "signal_generate.pid") {
        let code = read::at::<i32, _>(&ctx, base, off.code, "signal_generate.code");
        kill_signal::sigkill_sent(pid, code == Some(SI_KERNEL));
    }
    let Some(sender_comm) = listed_sender() else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<SignalRecord>(0) else {
        count(counter::RINGBUF_DROPS);
        return 0;
    };
    let rec = entry.write(SignalRecord::zeroed());
    fill_common(&ctx, rec, RecordKind::SignalTracepoint, sig, sender_comm);
    let ints = [
        (off.code, signal_field::CODE),
        (off.pid, signal_field::TARGET_PID),
        (off.group, signal_field::GROUP),
        (off.result, signal_field::RESULT),
    ];
    let mut i = 0;
    while i < ints.len() {
        let (offset, bit) = ints[i];
        if let Some(v) = read::at::<i32, _>(&ctx, base, offset, "signal_generate field") {
            match bit {
                signal_field::CODE => rec.code = v,
                signal_field::TARGET_PID => rec.target_pid = v,
                signal_field::GROUP => rec.group = v,
                _ => rec.result = v,
            }
            rec.present |= bit;
        }
        i += 1;
    }
    if let Some(c) = read::at::<[u8; COMM_LEN], _>(&ctx, base, off.comm, "signal_generate.comm") {
        rec.target_comm = c;
        rec.present |= signal_field::TARGET_COMM;
    }
    track(rec);
    entry.submit(0);
    0
}

/// The running task's comm, if it is one of [`KILLER_COMMS`].
#[inline(always)]
fn listed_sender() -> Option<[u8; COMM_LEN]> {
    let comm = bpf_get_current_comm().ok()?;
    let (w0, w1) = comm_words(&comm);
    // SAFETY: a read of a 'static global; read_volatile only keeps the compiler from folding
    // in the default (the loader rewrites it). Entries are read one at a time: the whole
    // table is larger than the eBPF stack.
    let n = unsafe { core::ptr::read_volatile(&KILLER_COMMS.count) } as usize;
    let mut i = 0;
    while i < MAX_KILLERS {
        if i >= n {
            return None;
        }
        // SAFETY: as above; `i < MAX_KILLERS` keeps the index in bounds.
        let e = unsafe { core::ptr::read_volatile(&KILLER_COMMS.entries[i]) };
        if w0 & e[2] == e[0] && w1 & e[3] == e[1] {
            return Some(comm);
        }
        i += 1;
    }
    None
}

/// Kind, time, signal, and the sender (the running task) with its memory cgroup.
#[inline(always)]
fn fill_common<C: EbpfContext>(
    ctx: &C,
    rec: &mut SignalRecord,
    kind: RecordKind,
    sig: i32,
    comm: [u8; COMM_LEN],
) {
    rec.kind = kind as u32;
    rec.sig = sig;
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    rec.ktime_ns = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    rec.sender_pid = pid_tgid as u32 as i32;
    rec.sender_tgid = (pid_tgid >> 32) as u32 as i32;
    rec.sender_comm = comm;
    // SAFETY: bpf_get_current_task has no preconditions; it returns the running task.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let off = globals::get(&globals::TASK_OFFSETS);
    if let Some(id) = cgroup::task_memcg_id(ctx, current, &off) {
        rec.sender_memcg_id = id;
        rec.present |= signal_field::SENDER_MEMCG_ID;
    }
}

/// A userspace kill that got through: time the target's exit like an OOM victim's.
#[inline(always)]
fn track(rec: &SignalRecord) {
    let delivered = rec.present & signal_field::RESULT == 0 || rec.result == 0;
    let userspace = rec.present & signal_field::CODE == 0 || rec.code != SI_KERNEL;
    if !(delivered && userspace) {
        return;
    }
    if rec.present & signal_field::TARGET_TGID != 0 {
        track_victim(rec.target_tgid, rec.ktime_ns, true);
    } else if rec.present & signal_field::TARGET_PID != 0 {
        track_victim(rec.target_pid, rec.ktime_ns, true);
    }
}
