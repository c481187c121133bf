//! Test helpers shared by `oomwatch`'s unit tests (`oomwatch/src`), its integration tests
//! (`oomwatch/tests`) and `cargo xtask vm-test`'s checks. It does not depend on `oomwatch`:
//! what it checks is written out here, independently of the code under test.
//!
//! - [`skip`]: the one way a test that needs the host (root, BTF, tracefs, `/dev/kmsg`,
//!   `/dev/fuse`, a trace instance, a tool) leaves early. Under
//!   `OOMWATCH_REQUIRE_REAL_KERNEL=1` it fails instead; otherwise the skip is printed and
//!   counted (see [`skip::SKIP_LOG_ENV`]).
//! - [`command`]: a command described as a shell line, and outputs pinned in fixture files
//!   (the harnesses `xtask` and `oomwatch-bench`).
//! - [`cgroup`]: memory cgroups of a test's own, removed on drop.
//! - [`mem`]: the page size and helper processes that hold touched memory.
//! - [`pidns`]: kubelet-style container cgroups and a process tree whose init is pid 1 of its
//!   own pid namespace, as a runtime starts a container.
//! - [`rng`]: the seeded generator of the property tests.
//! - [`kernel_log`]: the kernel's own lines of an OOM kill, parsed.
//! - [`oracle`]: the assertions on an agent's events that the host tests and the `vm-test`
//!   guest checks share (one implementation, a list of problems each).
pub mod cgroup;
pub mod command;
pub mod cpus;
pub mod kernel_log;
pub mod mem;
pub mod oracle;
pub mod pidns;
pub mod rng;
pub mod skip;

pub use cgroup::TestCgroup;
pub use mem::{page_size, MemoryHolder};
pub use pidns::{ContainerCgroup, NsInit};
pub use rng::XorShift;
pub use skip::{host_or_skip, is_root, require_real_kernel, root_or_skip, skip};
