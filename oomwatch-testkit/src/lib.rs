//! Test helpers shared by `oomwatch`'s unit tests (`oomwatch/src`) and integration tests
//! (`oomwatch/tests`). It does not depend on `oomwatch`: what it checks is written out here,
//! independently of the code under test.
//!
//! - [`skip`]: the one way a test that needs the host (root, BTF, tracefs, `/dev/kmsg`,
//!   `/dev/fuse`, a trace instance, a tool) leaves early. Under
//!   `OOMWATCH_REQUIRE_REAL_KERNEL=1` it fails instead; otherwise the skip is printed and
//!   counted (see [`skip::SKIP_LOG_ENV`]).
//! - [`cgroup`]: memory cgroups of a test's own, removed on drop.
//! - [`mem`]: the page size and helper processes that hold touched memory.
//! - [`pidns`]: kubelet-style container cgroups and a process tree whose init is pid 1 of its
//!   own pid namespace, as a runtime starts a container.
//! - [`rng`]: the seeded generator of the property tests.
pub mod cgroup;
pub mod mem;
pub mod pidns;
pub mod rng;
pub mod skip;

pub use cgroup::TestCgroup;
pub use mem::{page_size, MemoryHolder};
pub use pidns::{ContainerCgroup, NsInit};
pub use rng::XorShift;
pub use skip::{host_or_skip, is_root, require_real_kernel, root_or_skip, skip};
