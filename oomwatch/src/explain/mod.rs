//! Why this victim: the kernel's `oom_badness()` written once ([`badness`]), the candidates the
//! killer scored ([`candidates`]), live processes ranked as the killer would ([`rank`], over the
//! domain of [`domain`]), and the explanation sentence ([`sentence`]).
pub mod badness;
pub mod candidates;
pub mod domain;
pub mod rank;
pub mod sentence;

use std::io;
use std::path::PathBuf;

/// Why live processes could not be ranked (`oomwatch top`, the headroom collector). Each message names the problem, then the fix.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("cannot read {}: {source}: pass --host-root a directory holding the host's /proc", .path.display())]
    Proc { path: PathBuf, source: io::Error },
    #[error("{} has no MemTotal line: pass --host-root a directory holding the host's /proc", .path.display())]
    Meminfo { path: PathBuf },
    #[error("no memory cgroup hierarchy under {}: mount cgroupfs with the memory controller there, or drop --cgroup", .root.display())]
    NoHierarchy { root: PathBuf },
    #[error("cgroup {cgroup} does not exist under {}: pass a path relative to the memory controller mount, as /proc/<pid>/cgroup shows it, or a directory under the mount", .mount.display())]
    NoSuchCgroup { cgroup: String, mount: PathBuf },
    #[error("cgroup path {0:?} leaves the hierarchy: pass a path without '..'")]
    BadCgroupPath(String),
    #[error("cannot read the limit {}: {reason}: check that --cgroup names a memory cgroup", .path.display())]
    Limit { path: PathBuf, reason: String },
    #[error("writing to stdout failed: {0}: check where the output goes")]
    Stdout(io::Error),
}
