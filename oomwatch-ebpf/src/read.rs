//! Kernel memory reads at agent-given offsets. A failed read is counted, logged through aya-log
//! at debug level, and leaves its field absent: never a guessed value.
use aya_ebpf::{helpers::bpf_probe_read_kernel, EbpfContext};
use aya_log_ebpf::debug;
use oomwatch_common::{counter, OFFSET_ABSENT};

use crate::maps::count;

/// Reads a `T` at `base + offset`, or `None` when the offset is absent, the base is null or the
/// kernel refuses the read.
#[inline(always)]
pub fn at<T, C: EbpfContext>(ctx: &C, base: *const u8, offset: u32, what: &str) -> Option<T> {
    if offset == OFFSET_ABSENT || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and returns an error for any
    // address it cannot read; `wrapping_add` never dereferences.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) } {
        Ok(v) => Some(v),
        Err(e) => {
            count(counter::READ_ERRORS);
            debug!(ctx, "oomwatch: kernel read of {} failed: {}", what, e);
            None
        }
    }
}
