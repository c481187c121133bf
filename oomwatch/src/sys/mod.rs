//! The system below every stage: privileges, the memory cgroup tree, `/proc`, the kernel's
//! symbols, clocks and text.
pub mod caps;
pub mod cgroup;
pub mod clock;
pub mod kallsyms;
pub mod procfs;
pub mod text;
