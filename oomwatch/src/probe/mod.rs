//! Kernel hooks: the probe table, BTF reader, tracefs format parser, ring-buffer reader.
pub mod attach;
pub mod btf;
pub mod candidates;
pub mod lifecycle;
pub mod loader;
pub mod offsets;
pub mod ringbuf;
pub mod tracefs;
