//! Offsets the agent resolves at start-up and writes into these read-only globals before the
//! programs are loaded (`EbpfLoader::override_global`). Read them only through [`get`].
use oomwatch_common::{MarkVictimOffsets, OomControlOffsets, TaskOffsets};

/// Field offsets of the `oom/mark_victim` trace record (tracefs `format` file).
#[unsafe(no_mangle)]
pub static MARK_VICTIM_OFFSETS: MarkVictimOffsets = MarkVictimOffsets::ABSENT;

/// `task_struct` and cgroup member offsets (BTF).
#[unsafe(no_mangle)]
pub static TASK_OFFSETS: TaskOffsets = TaskOffsets::ABSENT;

/// `struct oom_control` / `struct mem_cgroup` member offsets (BTF).
#[unsafe(no_mangle)]
pub static OOM_CONTROL_OFFSETS: OomControlOffsets = OomControlOffsets::ABSENT;

/// Reads a global without letting the compiler fold in its default value.
#[inline(always)]
pub fn get<T: Copy>(global: &'static T) -> T {
    // SAFETY: the reference is valid for 'static; read_volatile only prevents constant
    // folding, since the loader rewrites the value behind the compiler's back.
    unsafe { core::ptr::read_volatile(global) }
}
