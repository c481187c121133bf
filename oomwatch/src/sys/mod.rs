//! The system below every stage: privileges, the memory cgroup tree, `/proc`, the kernel's
//! symbols, clocks, text, the agent's own directory (`owned_dir`: nothing planted there is
//! followed), and the event loop's CPU (`steer`: moved off a CPU the kernel holds).
pub mod caps;
pub mod cgroup;
pub mod clock;
pub mod kallsyms;
pub mod owned_dir;
pub mod procfs;
pub mod seccomp;
pub mod steer;
pub mod text;
pub mod thread;
