//! The system below every stage: privileges, the memory cgroup tree, `/proc`, clocks and text.
pub mod caps;
pub mod cgroup;
pub mod clock;
pub mod procfs;
pub mod text;
