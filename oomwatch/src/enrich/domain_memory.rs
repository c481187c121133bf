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

use crate::record::domain_memory::{is_v2_byte_key, DomainMemory};

use crate::sys::cgroup::{MemoryHierarchy, Version};

/// Bound on what is read from one file (these files are a few KiB).
const MAX_FILE: u64 = 64 * 1024;

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
