//! Where the memory of the OOM domain was when the killer ran: the limiting memory cgroup's
//! `memory.stat`, limit, usage, `memory.high` and swap, or `/proc/meminfo` for a global OOM.
//!
//! This is what explains a kill whose victim's RSS is far below the limit: the rest of the
//! domain was page cache, tmpfs (`shmem`), kernel memory or other tasks. Read right after the
//! kill (the victim's own memory may already be partly freed by then: the OOM reaper works
//! fast), so it describes the domain as the kill left it, to within milliseconds.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::{MemoryHierarchy, Version};

/// Bound on what is read from one file (these files are a few KiB).
const MAX_FILE: u64 = 64 * 1024;

/// The domain's memory, bytes. Fields a source does not give are `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DomainMemory {
    /// `kmsg:oom_report` (the kernel's report, at the kill), else read right after the kill:
    /// `cgroupfs` (the limiting cgroup's files) or `procfs:meminfo` (global OOM).
    pub source: &'static str,
    /// The cgroup read, for `memcg`.
    pub cgroup: Option<String>,
    /// The limit: `memory.max` / `memory.limit_in_bytes`, or `MemTotal`.
    pub limit: Option<u64>,
    /// `memory.current` / `memory.usage_in_bytes`, or `MemTotal - MemAvailable`.
    pub usage: Option<u64>,
    /// `memory.high` (v2; `null` when unlimited or v1).
    pub high: Option<u64>,
    pub swap_limit: Option<u64>,
    pub swap_usage: Option<u64>,
    /// Anonymous memory (v2 `anon`, v1 `total_rss`, `AnonPages`).
    pub anon: Option<u64>,
    /// Page cache (v2 `file`, v1 `total_cache`, `Cached + Buffers`).
    pub file: Option<u64>,
    /// tmpfs / shared memory (part of `file`): `shmem`, `Shmem`.
    pub shmem: Option<u64>,
    /// Kernel memory (v2 `kernel`, v1 `memory.kmem.usage_in_bytes`, else `null`).
    pub kernel: Option<u64>,
    /// Slab (v2 `slab`, `Slab`).
    pub slab: Option<u64>,
    /// Network buffers (v2 `sock`).
    pub sock: Option<u64>,
    /// Page tables (v2 `pagetables`, `PageTables`).
    pub pagetables: Option<u64>,
    /// Per-CPU allocations (v2 `percpu`, `Percpu`).
    pub percpu: Option<u64>,
    /// Every byte-valued line of `memory.stat` as the kernel names it (v1: the `total_*`
    /// hierarchical lines), for anything the fields above leave out.
    pub stat: BTreeMap<String, u64>,
}

fn read(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// A single-number file; `max` (unlimited) and the v1 "unlimited" value give `None`.
fn number(path: &Path) -> Option<u64> {
    let v: u64 = read(path)?.trim().parse().ok()?;
    // cgroup v1 reports "unlimited" as PAGE_COUNTER_MAX pages, rounded: ~2^63.
    (v < (1u64 << 62)).then_some(v)
}

/// `key value` lines.
pub fn parse_stat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .take(256)
        .collect()
}

/// v2 `memory.stat` keys that are counts of events or pages, not bytes.
fn is_v2_byte_key(k: &str) -> bool {
    !(k.starts_with("pg")
        || k.starts_with("workingset_")
        || k.starts_with("thp_")
        || k.starts_with("numa_")
        || k.starts_with("zswpin")
        || k.starts_with("zswpout")
        || k.starts_with("zswpwb")
        || k.ends_with("_count"))
}

/// The limiting cgroup `cgroup` (a path below the hierarchy's root).
pub fn memcg(h: &MemoryHierarchy, cgroup: &str) -> Option<DomainMemory> {
    let dir = h.dir(cgroup);
    let stat = parse_stat(&read(&dir.join("memory.stat"))?);
    let mut d = DomainMemory {
        source: "cgroupfs",
        cgroup: Some(cgroup.to_string()),
        ..DomainMemory::default()
    };
    match h.version {
        Version::V2 => {
            d.limit = number(&dir.join("memory.max"));
            d.usage = number(&dir.join("memory.current"));
            d.high = number(&dir.join("memory.high"));
            d.swap_limit = number(&dir.join("memory.swap.max"));
            d.swap_usage = number(&dir.join("memory.swap.current"));
            let g = |k: &str| stat.get(k).copied();
            d.anon = g("anon");
            d.file = g("file");
            d.shmem = g("shmem");
            d.kernel = g("kernel");
            d.slab = g("slab");
            d.sock = g("sock");
            d.pagetables = g("pagetables");
            d.percpu = g("percpu");
            d.stat = stat
                .into_iter()
                .filter(|(k, _)| is_v2_byte_key(k))
                .collect();
        }
        Version::V1 => {
            d.limit = number(&dir.join("memory.limit_in_bytes"));
            d.usage = number(&dir.join("memory.usage_in_bytes"));
            let memsw_limit = number(&dir.join("memory.memsw.limit_in_bytes"));
            let memsw_usage = number(&dir.join("memory.memsw.usage_in_bytes"));
            d.swap_limit = memsw_limit.zip(d.limit).map(|(m, l)| m.saturating_sub(l));
            d.swap_usage = memsw_usage.zip(d.usage).map(|(m, u)| m.saturating_sub(u));
            d.kernel = number(&dir.join("memory.kmem.usage_in_bytes"));
            let g = |k: &str| stat.get(k).copied();
            d.anon = g("total_rss");
            d.file = g("total_cache");
            d.shmem = g("total_shmem");
            d.stat = stat
                .into_iter()
                .filter(|(k, _)| {
                    k.starts_with("total_") && !k.starts_with("total_pg") && !k.ends_with("_count")
                })
                .collect();
        }
    }
    Some(d)
}

/// Fills the fields from `memory.stat` keys, v2 names or v1 `total_*` ones, whichever are there.
fn split_from_stat(d: &mut DomainMemory, stat: &BTreeMap<String, u64>) {
    let g = |k: &str| stat.get(k).copied();
    if stat.contains_key("anon") {
        d.anon = g("anon");
        d.file = g("file");
        d.shmem = g("shmem");
        d.kernel = d.kernel.or(g("kernel"));
        d.slab = g("slab");
        d.sock = g("sock");
        d.pagetables = g("pagetables");
        d.percpu = g("percpu");
    } else {
        d.anon = g("total_rss");
        d.file = g("total_cache");
        d.shmem = g("total_shmem");
    }
}

/// A memcg OOM as the kernel's report describes it at the kill: its page counters
/// (`memory`, `swap` or `memory+swap`, `kmem`; kB) and `Memory cgroup stats` (bytes).
pub fn from_report(
    cgroup: Option<&str>,
    counters: &[(String, u64, Option<u64>)],
    stats: &[(String, u64)],
) -> DomainMemory {
    let kb = |v: u64| v.checked_mul(1024);
    let mut d = DomainMemory {
        source: "kmsg:oom_report",
        cgroup: cgroup.map(str::to_string),
        ..DomainMemory::default()
    };
    let find = |n: &str| counters.iter().find(|(name, _, _)| name == n);
    if let Some((_, usage, limit)) = find("memory") {
        d.usage = kb(*usage);
        d.limit = limit.and_then(kb);
    }
    if let Some((_, usage, limit)) = find("swap") {
        d.swap_usage = kb(*usage);
        d.swap_limit = limit.and_then(kb);
    } else if let Some((_, usage, limit)) = find("memory+swap") {
        d.swap_usage = kb(*usage).zip(d.usage).map(|(m, u)| m.saturating_sub(u));
        d.swap_limit = limit
            .and_then(kb)
            .zip(d.limit)
            .map(|(m, l)| m.saturating_sub(l));
    }
    if let Some((_, usage, _)) = find("kmem") {
        d.kernel = kb(*usage);
    }
    let stat: BTreeMap<String, u64> = stats.iter().cloned().collect();
    split_from_stat(&mut d, &stat);
    let v1 = stat.contains_key("total_rss");
    d.stat = stat
        .into_iter()
        .filter(|(k, _)| {
            if v1 {
                k.starts_with("total_") && !k.starts_with("total_pg") && !k.ends_with("_count")
            } else {
                is_v2_byte_key(k)
            }
        })
        .collect();
    d
}

/// A global OOM as the kernel's report describes it (`Mem-Info:` pairs, in pages).
pub fn from_report_meminfo(pages: &[(String, u64)], page_size: u64) -> DomainMemory {
    let g = |k: &str| {
        pages
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.checked_mul(page_size))
    };
    let sum = |a: &str, b: &str| g(a).zip(g(b)).map(|(x, y)| x + y);
    DomainMemory {
        source: "kmsg:oom_report",
        anon: sum("active_anon", "inactive_anon"),
        file: sum("active_file", "inactive_file"),
        shmem: g("shmem"),
        slab: sum("slab_reclaimable", "slab_unreclaimable"),
        pagetables: g("pagetables"),
        stat: pages
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.checked_mul(page_size)?)))
            .collect(),
        ..DomainMemory::default()
    }
}

/// A global OOM: `/proc/meminfo` under `proc_root`.
pub fn meminfo(proc_root: &Path) -> Option<DomainMemory> {
    let text = read(&proc_root.join("meminfo"))?;
    let kb: BTreeMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
            Some((k, n.checked_mul(1024)?))
        })
        .collect();
    let g = |k: &str| kb.get(k).copied();
    let total = g("MemTotal");
    Some(DomainMemory {
        source: "procfs:meminfo",
        cgroup: None,
        limit: total,
        usage: total
            .zip(g("MemAvailable"))
            .map(|(t, a)| t.saturating_sub(a)),
        high: None,
        swap_limit: g("SwapTotal"),
        swap_usage: g("SwapTotal")
            .zip(g("SwapFree"))
            .map(|(t, f)| t.saturating_sub(f)),
        anon: g("AnonPages"),
        file: g("Cached").zip(g("Buffers")).map(|(c, b)| c + b),
        shmem: g("Shmem"),
        kernel: None,
        slab: g("Slab"),
        sock: None,
        pagetables: g("PageTables"),
        percpu: g("Percpu"),
        stat: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn v2_files_give_limit_usage_and_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("app");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("memory.max"), "67108864\n").unwrap();
        fs::write(cg.join("memory.current"), "67100000\n").unwrap();
        fs::write(cg.join("memory.high"), "max\n").unwrap();
        fs::write(cg.join("memory.swap.max"), "0\n").unwrap();
        fs::write(
            cg.join("memory.stat"),
            "anon 1048576\nfile 60000000\nkernel 3000000\nshmem 58000000\npgfault 77\n",
        )
        .unwrap();
        let h = MemoryHierarchy {
            version: Version::V2,
            mount: dir.path().to_path_buf(),
        };
        let d = memcg(&h, "/app").unwrap();
        assert_eq!(d.limit, Some(64 << 20));
        assert_eq!(d.high, None);
        assert_eq!(d.swap_limit, Some(0));
        assert_eq!((d.anon, d.shmem), (Some(1 << 20), Some(58_000_000)));
        assert!(!d.stat.contains_key("pgfault"), "counts are not bytes");
        assert_eq!(memcg(&h, "/missing"), None);
    }

    #[test]
    fn v1_uses_the_hierarchical_totals() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("memory.limit_in_bytes"), "33554432").unwrap();
        fs::write(dir.path().join("memory.usage_in_bytes"), "33000000").unwrap();
        fs::write(
            dir.path().join("memory.stat"),
            "rss 1\ncache 2\ntotal_rss 30000000\ntotal_cache 3000000\ntotal_shmem 0\ntotal_pgpgin 9\n",
        )
        .unwrap();
        let h = MemoryHierarchy {
            version: Version::V1,
            mount: dir.path().to_path_buf(),
        };
        let d = memcg(&h, "/").unwrap();
        assert_eq!(
            (d.limit, d.anon, d.file),
            (Some(32 << 20), Some(30_000_000), Some(3_000_000))
        );
        assert_eq!(
            d.stat.keys().collect::<Vec<_>>(),
            ["total_cache", "total_rss", "total_shmem"]
        );
        // Unlimited (v1's huge value) is no limit.
        fs::write(
            dir.path().join("memory.limit_in_bytes"),
            "9223372036854771712",
        )
        .unwrap();
        assert_eq!(memcg(&h, "/").unwrap().limit, None);
    }

    #[test]
    fn this_hosts_meminfo_is_consistent() {
        let d = meminfo(&PathBuf::from("/proc")).unwrap();
        assert!(d.limit.unwrap() > d.usage.unwrap());
        assert!(d.anon.is_some() && d.file.is_some());
    }
}
