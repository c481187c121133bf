//! The guest `cargo xtask vm-test` boots on each kernel, and the checks of what it printed.
//! The harness (`xtask/src/vm/`) downloads the kernels, builds the initramfs around
//! [`script::init_script`] and boots it under qemu; everything the guest does and everything
//! its serial console must show is here:
//!
//! - [`script`]: the guest's `/init` (`init.sh`) and the numbers of its phases (victims,
//!   threads, limits);
//! - [`agent`]: the three agents it runs side by side (OOM context from fentry, from the kprobe
//!   fallback, from the kernel log), and the checks of one agent's output;
//! - [`console`]: the console split into the sections `/init` prints, its kernel lines parsed;
//! - [`check`]: the boot's checks and each phase's (candidates, lifecycle, SIGKILL attribution,
//!   threads, stacks, the global, manual, cpuset and mempolicy OOMs), on the assertions
//!   `oomwatch_testkit::oracle` shares with the host's tests;
//! - [`report`]: the per-run and summary tables.

pub mod agent;
pub mod check;
pub mod console;
pub mod report;
pub mod script;
