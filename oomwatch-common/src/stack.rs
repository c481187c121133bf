//! The trigger's stacks at the OOM kill (issue 18): one [`StackRecord`] per OOM invocation, sent
//! through the `STACKS` ring buffer of its own (a full ring drops stacks, counted in
//! [`crate::counter::STACK_DROPS`], never victim records). Same rules as the crate root.

/// Deepest stack kept, kernel and user each.
pub const MAX_STACK_DEPTH: usize = 64;

/// Path components of the trigger's executable kept (innermost first), and their length.
pub const EXE_PATH_DEPTH: usize = 16;
pub const EXE_NAME_LEN: usize = 48;

/// Member offsets (BTF) from a task to its executable's dentry chain: `task->mm->exe_file`,
/// `file.f_path.dentry`, `dentry.d_parent`, `dentry.d_name.name`. With them the agent can find
/// the trigger's program file after the trigger has exited (a self-killed allocator is gone
/// before its `/proc/<pid>/maps` can be read). [`crate::OFFSET_ABSENT`] where BTF lacks one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExeOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    /// `mm_struct.start_code` and `end_code`: where the program's code is mapped, so that a
    /// position-independent program's addresses map back to its file once it has exited.
    pub mm_start_code: u32,
    pub mm_end_code: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<ExeOffsets>() == 32);

impl ExeOffsets {
    pub const ABSENT: Self = Self {
        task_mm: crate::OFFSET_ABSENT,
        mm_exe_file: crate::OFFSET_ABSENT,
        file_dentry: crate::OFFSET_ABSENT,
        dentry_parent: crate::OFFSET_ABSENT,
        dentry_name: crate::OFFSET_ABSENT,
        mm_start_code: crate::OFFSET_ABSENT,
        mm_end_code: crate::OFFSET_ABSENT,
        _pad0: 0,
    };
}

/// Marks within this window by the same trigger belong to one OOM invocation (a group kill marks
/// every victim inside one `out_of_memory()` call): only the first captures a stack.
pub const STACK_INVOCATION_WINDOW_NS: u64 = 10_000_000;

/// Values of the `STACK_MODE` global (`--stacks`).
pub mod stack_mode {
    pub const NONE: u32 = 0;
    pub const KERNEL: u32 = 1;
    pub const ALL: u32 = 2;
}

/// Bits of [`StackRecord::present`].
pub mod stack_field {
    /// `kernel` holds `kernel_bytes / 8` return addresses.
    pub const KERNEL: u32 = 1 << 0;
    /// `user` holds `user_bytes / 8` return addresses.
    pub const USER: u32 = 1 << 1;
    /// `user_build_ids` holds `build_id_bytes / 32` entries.
    pub const USER_BUILD_ID: u32 = 1 << 2;
}

/// `struct bpf_stack_build_id`: one user frame as its ELF build id and file offset
/// ([`BUILD_ID_VALID`]), or as a bare address ([`BUILD_ID_IP`]) where the kernel could not read
/// the build id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildIdFrame {
    pub status: i32,
    pub build_id: [u8; 20],
    /// File offset (`BUILD_ID_VALID`) or address (`BUILD_ID_IP`).
    pub offset_or_ip: u64,
}

const _: () = assert!(core::mem::size_of::<BuildIdFrame>() == 32);

pub const BUILD_ID_EMPTY: i32 = 0;
pub const BUILD_ID_VALID: i32 = 1;
pub const BUILD_ID_IP: i32 = 2;

/// The running task's kernel and user stacks when the first victim of an OOM invocation was
/// marked: the allocation that invoked the killer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackRecord {
    /// [`crate::RecordKind::TriggerStack`] as `u32`.
    pub kind: u32,
    /// Bits from [`stack_field`].
    pub present: u32,
    /// `bpf_ktime_get_ns()` at the mark.
    pub ktime_ns: u64,
    pub trigger_pid: i32,
    pub trigger_tgid: i32,
    /// Bytes `bpf_get_stack` wrote, or its negative error.
    pub kernel_bytes: i32,
    pub user_bytes: i32,
    pub build_id_bytes: i32,
    /// Components of the executable's path in `exe_path` (0: unknown), innermost first, up to
    /// its mount's root (the path as seen inside the trigger's mount namespace root when it is
    /// on the root file system).
    pub exe_depth: u32,
    /// The trigger's `mm->start_code` and `mm->end_code` (0 when not read): the program's
    /// code at `start_code` is its file's first executable segment.
    pub start_code: u64,
    pub end_code: u64,
    pub kernel: [u64; MAX_STACK_DEPTH],
    pub user: [u64; MAX_STACK_DEPTH],
    pub user_build_ids: [BuildIdFrame; MAX_STACK_DEPTH],
    /// NUL-terminated path components, innermost (the file's name) first.
    pub exe_path: [[u8; EXE_NAME_LEN]; EXE_PATH_DEPTH],
}

const _: () = assert!(
    core::mem::size_of::<StackRecord>()
        == 56 + 64 * 8 * 2 + 64 * 32 + EXE_PATH_DEPTH * EXE_NAME_LEN
);

impl StackRecord {
    /// Return addresses of the kernel stack, innermost first.
    pub fn kernel_frames(&self) -> &[u64] {
        frames(
            &self.kernel,
            self.present & stack_field::KERNEL,
            self.kernel_bytes,
            8,
        )
    }

    /// Return addresses of the user stack, innermost first.
    pub fn user_frames(&self) -> &[u64] {
        frames(
            &self.user,
            self.present & stack_field::USER,
            self.user_bytes,
            8,
        )
    }

    /// The user stack as build id + file offset, innermost first.
    pub fn build_id_frames(&self) -> &[BuildIdFrame] {
        let bit = self.present & stack_field::USER_BUILD_ID;
        frames(&self.user_build_ids, bit, self.build_id_bytes, 32)
    }
}

impl StackRecord {
    /// The executable's path (`/dir/.../name`), when the program could read it.
    pub fn exe_path(&self) -> Option<[&[u8]; EXE_PATH_DEPTH]> {
        let depth = (self.exe_depth as usize).min(EXE_PATH_DEPTH);
        if depth == 0 {
            return None;
        }
        let mut parts: [&[u8]; EXE_PATH_DEPTH] = [&[]; EXE_PATH_DEPTH];
        for (i, c) in self.exe_path[..depth].iter().enumerate() {
            let len = c.iter().position(|b| *b == 0).unwrap_or(c.len());
            parts[depth - 1 - i] = &c[..len];
        }
        Some(parts)
    }
}

fn frames<T>(all: &[T], present: u32, bytes: i32, size: usize) -> &[T] {
    if present == 0 || bytes <= 0 {
        return &[];
    }
    let n = (bytes as usize / size).min(all.len());
    &all[..n]
}
