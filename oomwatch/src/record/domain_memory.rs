//! Where the memory of the OOM domain was when the killer ran ([`DomainMemory`]), and how the
//! kernel's own report describes it ([`from_report`], [`from_report_meminfo`]). Reading the
//! limiting cgroup's files right after a kill is `enrich::domain_memory`.
use std::collections::BTreeMap;

use serde::Serialize;

use super::source::ProbeId;

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

/// v2 `memory.stat` keys that are counts of events or pages, not bytes.
pub(crate) fn is_v2_byte_key(k: &str) -> bool {
    !(k.starts_with("pg")
        || k.starts_with("workingset_")
        || k.starts_with("thp_")
        || k.starts_with("numa_")
        || k.starts_with("zswpin")
        || k.starts_with("zswpout")
        || k.starts_with("zswpwb")
        || k.ends_with("_count"))
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
        source: ProbeId::KmsgOomReport.name(),
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
        source: ProbeId::KmsgOomReport.name(),
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
