//! What every record starts with: the kernel timestamp and the running (triggering) task.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use oomwatch_common::COMM_LEN;

#[inline(always)]
pub fn fill(ktime_ns: &mut u64, pid: &mut i32, tgid: &mut i32, comm: &mut [u8; COMM_LEN]) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    *ktime_ns = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    *pid = pid_tgid as u32 as i32;
    *tgid = (pid_tgid >> 32) as u32 as i32;
    if let Ok(c) = bpf_get_current_comm() {
        *comm = c;
    }
}
