//! Which `mark_victim` calls are kills. The kernel's OOM killer sends SIGKILL to its victim and
//! marks it right after, in the same task (`__oom_kill_process()`: `do_send_sig_info(SIGKILL,
//! ..., victim, PIDTYPE_TGID)`, then `mark_oom_victim(victim)`). The kernel also marks tasks it
//! does not kill: a task already exiting (`task_will_free_mem()` in `out_of_memory()` and
//! `oom_kill_process()`), which includes every other thread of a process just killed that
//! allocates again before it exits. Those get no SIGKILL of their own just before the mark.
//!
//! So the `signal_generate` programs remember each SIGKILL as (sender thread, target thread) →
//! time, and a `mark_victim` program calls a mark a kill when the running thread sent SIGKILL
//! to the marked thread just before: within [`KERNEL_KILL_TO_MARK_NS`] for a kernel-sent one
//! (`SEND_SIG_PRIV`, as the OOM killer sends it), within [`KILL_TO_MARK_NS`] for any other (a
//! task that `kill -9`s another, then allocates and has the exiting one marked, is no kill).
//! The value is the time with its lowest bit set for a kernel-sent SIGKILL.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
};

/// The longest a kill's SIGKILL may come before its mark: both happen back to back under
/// `oom_lock`; the margin covers preemption between the two calls.
const KILL_TO_MARK_NS: u64 = 100_000_000;
/// The same for a kernel-sent SIGKILL (the OOM killer's own): also a virtual CPU the
/// hypervisor left unscheduled between the two calls (a kill missed here is recorded when its
/// kernel log line comes, where the agent reads the log).
const KERNEL_KILL_TO_MARK_NS: u64 = 1_000_000_000;

/// SIGKILLs sent: `sender tid << 32 | target tid` → `bpf_ktime_get_ns()`. LRU: entries of
/// SIGKILLs that were not OOM kills age out.
#[map]
static KILLS_SENT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn key(target_tid: i32) -> u64 {
    let sender_tid = bpf_get_current_pid_tgid() as u32;
    (u64::from(sender_tid) << 32) | u64::from(target_tid as u32)
}

/// The running thread sends SIGKILL to thread `target_tid`; `kernel`: as the kernel's own
/// (`SEND_SIG_PRIV`, `si_code` `SI_KERNEL`).
#[inline(always)]
pub fn sigkill_sent(target_tid: i32, kernel: bool) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = (unsafe { bpf_ktime_get_ns() } & !1) | u64::from(kernel);
    // A failed insert only makes a later mark look like no kill (until its kill line proves
    // it one, where the agent reads the kernel log).
    let _ = KILLS_SENT.insert(key(target_tid), now, 0);
}

/// Whether the running thread sent SIGKILL to thread `victim_tid` just before marking it.
#[inline(always)]
pub fn killed_by_current(victim_tid: i32, mark_ktime_ns: u64) -> bool {
    // SAFETY: the value is a plain u64 copied out at once; LRU elements are preallocated and
    // never freed while the program runs.
    match unsafe { KILLS_SENT.get(key(victim_tid)) } {
        Some(&sent) => {
            let window = if sent & 1 == 1 {
                KERNEL_KILL_TO_MARK_NS
            } else {
                KILL_TO_MARK_NS
            };
            mark_ktime_ns.wrapping_sub(sent) <= window
        }
        None => false,
    }
}
