//! Kernel sources: where every fact about an OOM kill comes from.
//!
//! - [`probe`]: the eBPF probe table (typed rows with fallbacks), loader, attach, ring buffers.
//! - [`kmsg`]: the kernel log (`/dev/kmsg`) reader and the OOM report parser.
//! - [`gfp`]: GFP flag names from the running kernel (BTF or tracefs).
//! - [`btf`], [`tracefs`]: readers of the running kernel's type information and event formats,
//!   shared by the others.
pub mod btf;
pub mod gfp;
pub mod kmsg;
pub mod probe;
pub mod tracefs;
