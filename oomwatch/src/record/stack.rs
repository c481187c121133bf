//! The trigger's stacks at the kill (`trigger.stack`, issue 18): the allocation that invoked the
//! OOM killer, symbolized.
use serde::Serialize;

/// `--stacks`: which of the trigger's stacks the `mark_victim` programs capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StackMode {
    /// No stacks (`trigger.stack` is `null`).
    None,
    /// The kernel stack only.
    Kernel,
    /// Kernel and user stacks.
    #[default]
    All,
}

impl StackMode {
    /// The value of the eBPF side's `STACK_MODE` global.
    pub fn ebpf_value(self) -> u32 {
        match self {
            StackMode::None => oomwatch_common::stack_mode::NONE,
            StackMode::Kernel => oomwatch_common::stack_mode::KERNEL,
            StackMode::All => oomwatch_common::stack_mode::ALL,
        }
    }
}

/// One frame, innermost first. With a `symbol`, `offset` is the return address's offset into
/// that symbol; without one, into `module` (the file offset for user frames), so the frame
/// reads `module+0xoffset`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub symbol: Option<String>,
    /// The kernel module (`vmlinux` for the kernel image), the ELF file's name for user frames,
    /// or `buildid:<hex>` when only the build id is known.
    pub module: Option<String>,
    pub offset: u64,
    /// The source file and line, from the file's DWARF when it has some (user frames only;
    /// left out otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Frame {
    /// `symbol+0xoffset`, or `module+0xoffset` for a frame without a symbol.
    pub fn display(&self) -> String {
        match (&self.symbol, &self.module) {
            (Some(s), _) => format!("{s}+{:#x}", self.offset),
            (None, Some(m)) => format!("{m}+{:#x}", self.offset),
            (None, None) => format!("{:#x}", self.offset),
        }
    }
}

/// The trigger's stacks (`trigger.stack`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TriggerStack {
    /// Kernel frames, innermost first (empty when not captured).
    pub kernel: Vec<Frame>,
    /// User frames, innermost first (empty for a kernel thread or `--stacks kernel`).
    pub user: Vec<Frame>,
    /// The innermost named user frames that are not allocator internals, innermost first,
    /// joined by ` <- ` (`leaky_cache_insert <- serve_request <- main`); `null` when none.
    pub summary: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_display_as_symbol_or_module_plus_offset() {
        let named = Frame {
            symbol: Some("out_of_memory".into()),
            module: Some("vmlinux".into()),
            offset: 0x1f,
            ..Frame::default()
        };
        assert_eq!(named.display(), "out_of_memory+0x1f");
        let bare = Frame {
            symbol: None,
            module: Some("leaky".into()),
            offset: 0x1234,
            ..Frame::default()
        };
        assert_eq!(bare.display(), "leaky+0x1234");
        assert_eq!(StackMode::default().ebpf_value(), 2);
    }
}
