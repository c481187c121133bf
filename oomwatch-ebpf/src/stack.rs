//! The trigger's stacks (issue 18): the `mark_victim` programs run in the allocating task's
//! context, so its kernel and user stacks are the allocation that invoked the OOM killer. Taken
//! once per OOM invocation (the first mark of a trigger within
//! `STACK_INVOCATION_WINDOW_NS`), into the `STACKS` ring of their own: a full ring drops the
//! stack, counted, and never a victim record.
use aya_ebpf::{
    bindings::{BPF_F_USER_BUILD_ID, BPF_F_USER_STACK},
    helpers::bpf_get_stack,
    macros::map,
    maps::{LruHashMap, RingBuf},
    EbpfContext,
};
use oomwatch_common::{
    counter, stack_field, stack_mode, ExeOffsets, RecordKind, StackRecord, EXE_PATH_DEPTH,
    MAX_STACK_DEPTH, STACK_INVOCATION_WINDOW_NS,
};

use crate::{maps::count, read};

/// `task->mm->exe_file` to its dentry chain (BTF), written by the agent before loading.
#[unsafe(no_mangle)]
pub static EXE_OFFSETS: ExeOffsets = ExeOffsets::ABSENT;

/// `--stacks`: `stack_mode::NONE`, `KERNEL` or `ALL`, written by the agent before loading.
#[unsafe(no_mangle)]
pub static STACK_MODE: u32 = stack_mode::ALL;

/// ~3 KiB a record: 512 KiB holds ~160 invocations' stacks between two wake-ups of the agent.
#[map]
pub static STACKS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// Trigger pid → when it last captured a stack: the marks of one invocation share one stack.
#[map]
static LAST_STACK: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Captures the running task's stacks unless this invocation already has them.
#[inline(always)]
pub fn capture<C: EbpfContext>(ctx: &C, ktime_ns: u64, trigger_pid: i32, trigger_tgid: i32) {
    let mode = crate::globals::get(&STACK_MODE);
    if mode == stack_mode::NONE {
        return;
    }
    let key = trigger_pid as u32;
    // SAFETY: the value is copied out at once; the LRU map's memory is valid during the run.
    if let Some(last) = unsafe { LAST_STACK.get(key) } {
        if ktime_ns.wrapping_sub(*last) < STACK_INVOCATION_WINDOW_NS {
            return;
        }
    }
    let _ = LAST_STACK.insert(key, ktime_ns, 0);
    let Some(mut entry) = STACKS.reserve::<StackRecord>(0) else {
        count(counter::STACK_DROPS);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved ring-buffer slot of `size_of::<StackRecord>()` bytes,
    // ours until submit; the header is written field by field (the record is too large for the
    // eBPF stack) and every array is filled by bpf_get_stack, which zeroes what it does not write.
    unsafe {
        (*rec).kind = RecordKind::TriggerStack as u32;
        (*rec).ktime_ns = ktime_ns;
        (*rec).trigger_pid = trigger_pid;
        (*rec).trigger_tgid = trigger_tgid;
        let ctx_ptr = ctx.as_ptr();
        let mut present = 0;
        let k = bpf_get_stack(
            ctx_ptr,
            (*rec).kernel.as_mut_ptr().cast(),
            (MAX_STACK_DEPTH * 8) as u32,
            0,
        );
        (*rec).kernel_bytes = k as i32;
        if k > 0 {
            present |= stack_field::KERNEL;
        }
        (*rec).user_bytes = 0;
        (*rec).build_id_bytes = 0;
        if mode == stack_mode::ALL {
            let u = bpf_get_stack(
                ctx_ptr,
                (*rec).user.as_mut_ptr().cast(),
                (MAX_STACK_DEPTH * 8) as u32,
                BPF_F_USER_STACK as u64,
            );
            (*rec).user_bytes = u as i32;
            if u > 0 {
                present |= stack_field::USER;
            }
            let b = bpf_get_stack(
                ctx_ptr,
                (*rec).user_build_ids.as_mut_ptr().cast(),
                (MAX_STACK_DEPTH * 32) as u32,
                (BPF_F_USER_STACK | BPF_F_USER_BUILD_ID) as u64,
            );
            (*rec).build_id_bytes = b as i32;
            if b > 0 {
                present |= stack_field::USER_BUILD_ID;
            }
        } else {
            core::ptr::write_bytes((*rec).user.as_mut_ptr(), 0, MAX_STACK_DEPTH);
            core::ptr::write_bytes((*rec).user_build_ids.as_mut_ptr(), 0, MAX_STACK_DEPTH);
        }
        (*rec).present = present;
        (*rec).exe_depth = 0;
        (*rec).start_code = 0;
        (*rec).end_code = 0;
        if mode == stack_mode::ALL {
            (*rec).exe_depth = exe_path(ctx, &mut (*rec).exe_path);
            let (start, end) = code_range(ctx);
            (*rec).start_code = start;
            (*rec).end_code = end;
        }
    }
    entry.submit(0);
}

/// The running task's executable path components, innermost first, up to its mount's root;
/// returns how many were read.
#[inline(always)]
fn exe_path<C: EbpfContext>(
    ctx: &C,
    out: &mut [[u8; oomwatch_common::EXE_NAME_LEN]; EXE_PATH_DEPTH],
) -> u32 {
    // SAFETY: bpf_get_current_task has no preconditions; the pointer is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    exe_components(ctx, task, out)
}

/// The running task's `mm->start_code` and `mm->end_code` (0, 0 when unreadable): where its
/// program's code is mapped, for a position-independent program's frames once it is gone.
#[inline(always)]
fn code_range<C: EbpfContext>(ctx: &C) -> (u64, u64) {
    let off = crate::globals::get(&EXE_OFFSETS);
    // SAFETY: bpf_get_current_task has no preconditions; the pointer is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    let Some(mm) = read::at::<*const u8, _>(ctx, task, off.task_mm, "task_struct.mm") else {
        return (0, 0);
    };
    let start = read::at::<u64, _>(ctx, mm, off.mm_start_code, "mm_struct.start_code");
    let end = read::at::<u64, _>(ctx, mm, off.mm_end_code, "mm_struct.end_code");
    match (start, end) {
        (Some(s), Some(e)) if s < e => (s, e),
        _ => (0, 0),
    }
}

/// `task`'s executable path components, innermost first, up to its mount's root (at most `N`);
/// returns how many were read.
#[inline(always)]
pub fn exe_components<C: EbpfContext, const N: usize>(
    ctx: &C,
    task: *const u8,
    out: &mut [[u8; oomwatch_common::EXE_NAME_LEN]; N],
) -> u32 {
    let off = crate::globals::get(&EXE_OFFSETS);
    let Some(mm) = read::at::<*const u8, _>(ctx, task, off.task_mm, "task_struct.mm") else {
        return 0;
    };
    let Some(file) = read::at::<*const u8, _>(ctx, mm, off.mm_exe_file, "mm_struct.exe_file")
    else {
        return 0;
    };
    let Some(mut d) = read::at::<*const u8, _>(ctx, file, off.file_dentry, "file.f_path.dentry")
    else {
        return 0;
    };
    let mut depth = 0u32;
    let mut i = 0;
    while i < N {
        let Some(parent) = read::at::<*const u8, _>(ctx, d, off.dentry_parent, "dentry.d_parent")
        else {
            break;
        };
        if parent.is_null() || parent == d {
            break;
        }
        let Some(name) = read::at::<*const u8, _>(ctx, d, off.dentry_name, "dentry.d_name") else {
            break;
        };
        // SAFETY: the helper checks the address and bounds the copy by the buffer's length.
        if unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, &mut out[i]) }.is_err()
        {
            break;
        }
        depth = i as u32 + 1;
        d = parent;
        i += 1;
    }
    depth
}
