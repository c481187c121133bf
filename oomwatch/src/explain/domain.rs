//! The OOM domain `oomwatch top` ranks in, and its size in pages as the kernel computes it.
//!
//! A global OOM (`out_of_memory()` → `constrained_alloc()`) weighs tasks against
//! `totalram_pages() + total_swap_pages`, i.e. `MemTotal + SwapTotal` of `/proc/meminfo`. A memcg
//! OOM weighs them against `mem_cgroup_get_max(memcg) ?: 1`:
//!
//! ```text
//! max = memory.max
//! v1 (memsw accounting): if swappiness: max += min(memsw.max - max, total_swap_pages)
//! v2 (or v1 without it): if swappiness: max += min(swap.max, total_swap_pages)
//! ```
//!
//! where swappiness is the cgroup's `memory.swappiness` on v1 and `vm.swappiness` on v2.
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::RankError;
use crate::sys::cgroup::{MemoryHierarchy, Version};

/// `PAGE_COUNTER_MAX`, the kernel's "no limit": `LONG_MAX / PAGE_SIZE`.
pub fn page_counter_max(page_size: u64) -> u64 {
    i64::MAX.unsigned_abs() / page_size.max(1)
}

/// `/proc/meminfo` in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMemory {
    /// `MemTotal` (the kernel's `totalram_pages()`).
    pub ram_pages: u64,
    /// `SwapTotal` (the kernel's `total_swap_pages`).
    pub swap_pages: u64,
}

impl HostMemory {
    /// The global OOM's `totalpages`.
    pub fn total_pages(&self) -> u64 {
        self.ram_pages.saturating_add(self.swap_pages).max(1)
    }
}

/// Parses `/proc/meminfo`; `None` without a `MemTotal` line. A missing `SwapTotal` is 0.
pub fn parse_meminfo(text: &str, page_size: u64) -> Option<HostMemory> {
    let kb = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    let pages = |kb: u64| kb.saturating_mul(1024) / page_size.max(1);
    Some(HostMemory {
        ram_pages: pages(kb("MemTotal")?),
        swap_pages: kb("SwapTotal").map_or(0, pages),
    })
}

/// One memory cgroup taken as the OOM domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memcg {
    /// As `/proc/<pid>/cgroup` names it: `/kubepods/pod1`.
    pub path: String,
    pub dir: PathBuf,
    pub version: Version,
    /// `memory.max` / `memory.limit_in_bytes`, in pages.
    pub limit_pages: u64,
    /// What `mem_cgroup_get_max()` adds for swap, in pages.
    pub swap_pages: u64,
}

impl Memcg {
    /// True when the cgroup has no memory limit of its own (its OOMs come from above).
    pub fn unlimited(&self, page_size: u64) -> bool {
        self.limit_pages >= page_counter_max(page_size)
    }
}

/// Where the OOM killer would look, and the `totalpages` it would weigh tasks against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub page_size: u64,
    pub host: HostMemory,
    /// `None` for the host (global OOM).
    pub memcg: Option<Memcg>,
}

impl Domain {
    /// The `totalpages` of `oom_badness()` in this domain.
    pub fn total_pages(&self) -> u64 {
        match &self.memcg {
            None => self.host.total_pages(),
            Some(m) => m.limit_pages.saturating_add(m.swap_pages).max(1),
        }
    }

    /// The memory cgroup path whose subtree is ranked; `None` ranks every process.
    pub fn filter(&self) -> Option<&str> {
        self.memcg.as_ref().map(|m| m.path.as_str())
    }
}

/// True when `cgroup` is `root` or below it (both `/`-rooted paths without trailing `/`).
pub fn in_subtree(cgroup: &str, root: &str) -> bool {
    if root == "/" {
        return true;
    }
    cgroup
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The memory hierarchy under `root`: the mounted one when `root` is `/`, else
/// `<root>/sys/fs/cgroup/memory` (v1) or `<root>/sys/fs/cgroup` listing `memory` (v2).
pub fn hierarchy(root: &Path) -> Option<MemoryHierarchy> {
    if root == Path::new("/") {
        return MemoryHierarchy::find();
    }
    let v1 = root.join("sys/fs/cgroup/memory");
    if v1.is_dir() {
        return Some(MemoryHierarchy {
            version: Version::V1,
            mount: v1,
        });
    }
    let v2 = root.join("sys/fs/cgroup");
    let has_memory = fs::read_to_string(v2.join("cgroup.controllers"))
        .map(|c| c.split_whitespace().any(|w| w == "memory"))
        .unwrap_or(false);
    has_memory.then_some(MemoryHierarchy {
        version: Version::V2,
        mount: v2,
    })
}

/// Turns `--cgroup` (a path relative to the mount, or a directory under it) into the cgroup path
/// `/a/b` and its directory, which must exist.
pub fn resolve(h: &MemoryHierarchy, arg: &str) -> Result<(String, PathBuf), RankError> {
    let p = Path::new(arg);
    let rel = match p.strip_prefix(&h.mount) {
        Ok(rest) if p.is_absolute() => rest,
        _ => p,
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RankError::BadCgroupPath(arg.to_string()))
            }
        }
    }
    let path = format!("/{}", parts.join("/"));
    let dir = h.dir(&path);
    if !dir.is_dir() {
        return Err(RankError::NoSuchCgroup {
            cgroup: arg.to_string(),
            mount: h.mount.clone(),
        });
    }
    Ok((path, dir))
}

/// Reads a limit file in bytes (`max` = no limit) as pages; `None` if absent.
fn read_limit(file: &Path, page_size: u64) -> Result<Option<u64>, RankError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RankError::Limit {
                path: file.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let t = text.trim();
    if t == "max" {
        return Ok(Some(page_counter_max(page_size)));
    }
    t.parse::<u64>()
        .map(|b| Some(b / page_size.max(1)))
        .map_err(|_| RankError::Limit {
            path: file.to_path_buf(),
            reason: format!("unexpected content {t:?}"),
        })
}

fn read_swappiness(file: &Path) -> u64 {
    // The kernel default, when the file cannot be read.
    fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(60)
}

/// The memcg domain of cgroup `path` (directory `dir`), as `mem_cgroup_get_max()` sizes it.
/// `root` is the host root (for `vm.swappiness` on v2).
pub fn memcg(
    version: Version,
    path: String,
    dir: PathBuf,
    host: HostMemory,
    root: &Path,
    page_size: u64,
) -> Result<Memcg, RankError> {
    let unlimited = page_counter_max(page_size);
    let (limit_file, swappiness) = match version {
        Version::V1 => (
            dir.join("memory.limit_in_bytes"),
            read_swappiness(&dir.join("memory.swappiness")),
        ),
        Version::V2 => (
            dir.join("memory.max"),
            read_swappiness(&root.join("proc/sys/vm/swappiness")),
        ),
    };
    let limit_pages = read_limit(&limit_file, page_size)?.ok_or_else(|| RankError::Limit {
        path: limit_file.clone(),
        reason: "no such file".into(),
    })?;
    let swap_room = match version {
        // memsw.max counts memory + swap: the excess over memory.max is the swap room.
        Version::V1 => read_limit(&dir.join("memory.memsw.limit_in_bytes"), page_size)?
            .map_or(unlimited, |memsw| memsw.saturating_sub(limit_pages)),
        Version::V2 => read_limit(&dir.join("memory.swap.max"), page_size)?.unwrap_or(unlimited),
    };
    let swap_pages = if swappiness == 0 {
        0
    } else {
        swap_room.min(host.swap_pages)
    };
    Ok(Memcg {
        path,
        dir,
        version,
        limit_pages,
        swap_pages,
    })
}
