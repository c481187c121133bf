//! Kernel hooks: the probe table, loader, attach, ring-buffer reader.
pub mod attach;
pub mod candidates;
pub mod lifecycle;
pub mod loader;
pub mod offsets;
pub mod ringbuf;
pub mod sigkills;
pub mod silence;
pub mod stacks;
pub mod table;
