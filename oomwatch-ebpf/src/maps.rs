//! Maps shared by every program, and the per-CPU counters the agent exports.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use oomwatch_common::counter;

/// Victim records for the agent. 256 KiB holds ~2000 records: far more than any OOM storm
/// produces between two wake-ups of the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU counters, indexed by `oomwatch_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Adds one to a per-CPU counter. Per-CPU, so no atomic is needed.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map lookup of this CPU's slot, valid for the whole
        // program run, and no other program touches this CPU's slot concurrently.
        unsafe { *slot += 1 };
    }
}
