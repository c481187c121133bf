//! Warning before the OOM: the memory cgroups closest to their own limit, with their
//! headroom, pressure, limit hits and the process the memcg OOM killer would pick next.
//!
//! At each scrape the memory hierarchy is walked breadth-first from its root, children in
//! name order, reading at most [`MAX_DIRS`] directories (a walk that stops there counts in
//! `oomwatch_memcg_headroom_scans_truncated_total`; the deepest levels are the ones left out).
//! Of every cgroup with a limit of its own (v1 `memory.limit_in_bytes` below the kernel's "no
//! limit", v2 `memory.max` other than `max`), only the K with the highest usage ratio are
//! exposed (`--headroom-cgroups`, default [`DEFAULT_CGROUPS`]; ties: less headroom first).
//!
//! * **Own limit only.** A cgroup without a limit of its own is left out even when an
//!   ancestor's limit bounds it: the ancestor is the one listed (its usage includes the
//!   child's). The root cgroup never has a limit.
//! * **Series come and go.** A cgroup that drops out of the top K, or is removed, loses all
//!   its series at the next scrape; one that enters starts its counters at the kernel's value.
//!   There are at most K series per family (6K for the pressure ratio).
//! * **Labels.** `cgroup` is the path below the controller's mount, as `/proc/<pid>/cgroup`
//!   prints it; `namespace`, `pod`, `container` come from the runtime's bundle files when the
//!   path is a Kubernetes container (a pod-level cgroup gets the names of one of its
//!   containers, `container` empty), `pod_uid` from the path. They are always present, empty
//!   when unknown, so a scrape with `honor_labels` never fills in the agent pod's own.
//! * **Next victim.** For each of the K, the process the OOM killer would kill if that cgroup
//!   hit its limit now, ranked as `oomwatch top --cgroup` ranks ([`crate::commands::top`]):
//!   one pass over `/proc`, reading the files of the processes inside the K subtrees only.
//!   Its `oom_score` label is the kernel's `/proc/<pid>/oom_score` (the host-wide scale that
//!   file always uses); the ranking itself is against the cgroup's limit.
//!
//! Per cgroup (v2 | v1): limit `memory.max` | `memory.limit_in_bytes`; usage `memory.current`
//! | `memory.usage_in_bytes`; working set = usage − `inactive_file` | `total_inactive_file` of
//! `memory.stat` (as the kubelet and cAdvisor compute it); limit hits `memory.events` `max` |
//! `memory.failcnt`; `memory.events` `high` (v2 only); pressure `memory.pressure` (v2 only).
//! A cgroup removed during the walk, or a file that vanished or is garbled, only leaves that
//! value (or cgroup) out; the collector fails only when the hierarchy's root is unreadable.
//! No memory hierarchy at all is not a failure: nothing is listed.
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use prometheus::proto::{Metric, MetricFamily, MetricType};

use super::memcg_events;
use super::psi::{self, Psi};
use super::read::{read_optional, HostError};
use crate::enrich::bundle::{BundleConfig, BundleReader};
use crate::explain::domain;
use crate::sink::metrics::prom::{counter, f, family, gauge};
use crate::sys::cgroup::{MemoryHierarchy, Version};

mod who;
pub use who::{next_victims, who, Victim, Who};

/// Default number of cgroups exposed (`--headroom-cgroups`).
pub const DEFAULT_CGROUPS: usize = 20;
/// Most directories one walk reads.
pub const MAX_DIRS: usize = 10_000;

/// What a limit file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Bytes(u64),
}

/// Parses `memory.max` / `memory.limit_in_bytes`: `max`, or a byte count where anything at
/// or above `PAGE_COUNTER_MAX` pages (v1's "no limit", 9223372036854771712 with 4 KiB pages)
/// is no limit. `None` for anything else.
pub fn parse_limit(text: &str, page_size: u64) -> Option<Limit> {
    let t = text.trim();
    if t == "max" {
        return Some(Limit::Unlimited);
    }
    let ps = page_size.max(1);
    let unlimited = domain::page_counter_max(ps).saturating_mul(ps);
    t.parse::<u64>().ok().map(|b| {
        if b >= unlimited {
            Limit::Unlimited
        } else {
            Limit::Bytes(b)
        }
    })
}

/// Parses a file holding one byte count (`memory.current`, `memory.usage_in_bytes`,
/// `memory.failcnt`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `inactive_file` of `memory.stat`: v1 `total_inactive_file` (hierarchical, as
/// `memory.usage_in_bytes` is), else `inactive_file`. First valid line of each wins.
pub fn parse_inactive_file(stat: &str) -> Option<u64> {
    let (mut total, mut local) = (None, None);
    for line in stat.lines() {
        let mut w = line.split_whitespace();
        let (Some(k), Some(v), None) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let slot = match k {
            "total_inactive_file" => &mut total,
            "inactive_file" => &mut local,
            _ => continue,
        };
        if slot.is_none() {
            *slot = v.parse::<u64>().ok();
        }
    }
    total.or(local)
}

/// A cgroup with a limit of its own, as the walk read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `/kubepods/burstable/pod…`, relative to the mount.
    pub path: String,
    pub dir: PathBuf,
    pub limit: u64,
    pub usage: u64,
}

impl Candidate {
    /// usage / limit; a zero limit counts as full (1).
    pub fn ratio(&self) -> f64 {
        if self.limit == 0 {
            1.0
        } else {
            f(self.usage) / f(self.limit)
        }
    }

    /// limit − usage; negative when a limit was lowered below the usage.
    pub fn headroom(&self) -> f64 {
        f(self.limit) - f(self.usage)
    }

    /// Closest to its limit first: highest ratio, then least headroom, then path.
    fn closer(&self, other: &Self) -> Ordering {
        other
            .ratio()
            .total_cmp(&self.ratio())
            .then(self.headroom().total_cmp(&other.headroom()))
            .then_with(|| self.path.cmp(&other.path))
    }
}

/// The result of one walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// At most K, closest to the limit first.
    pub selected: Vec<Candidate>,
    /// Directories read.
    pub scanned: usize,
    /// Cgroups with a limit of their own among them.
    pub limited: usize,
    /// The walk stopped at the bound.
    pub truncated: bool,
}

/// Reads one cgroup: `None` without a limit of its own or when its files cannot be read.
fn candidate(h: &MemoryHierarchy, dir: &Path, path: &str, page_size: u64) -> Option<Candidate> {
    let (limit_file, usage_file) = match h.version {
        Version::V1 => ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        Version::V2 => ("memory.max", "memory.current"),
    };
    let text = read_optional(&dir.join(limit_file)).ok()??;
    let Limit::Bytes(limit) = parse_limit(&text, page_size)? else {
        return None;
    };
    let usage = parse_u64(&read_optional(&dir.join(usage_file)).ok()??)?;
    Some(Candidate {
        path: path.to_owned(),
        dir: dir.to_owned(),
        limit,
        usage,
    })
}

/// Walks the hierarchy breadth-first (children in name order), reading at most `max_dirs`
/// directories, and keeps the `k` cgroups closest to their own limit. Fails only when the
/// hierarchy's root cannot be listed.
pub fn walk(
    h: &MemoryHierarchy,
    k: usize,
    max_dirs: usize,
    page_size: u64,
) -> Result<Walk, HostError> {
    let mut out = Walk::default();
    let mut all = Vec::new();
    let mut queue = VecDeque::from([(h.mount.clone(), String::from("/"))]);
    while let Some((dir, path)) = queue.pop_front() {
        if out.scanned >= max_dirs {
            out.truncated = true;
            break;
        }
        out.scanned += 1;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(source) if path == "/" => return Err(HostError::Read { path: dir, source }),
            // Removed meanwhile, or unreadable: its subtree is left out.
            Err(_) => continue,
        };
        if path != "/" {
            all.extend(candidate(h, &dir, &path, page_size));
        }
        let mut children: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        children.sort_unstable();
        for name in children {
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            queue.push_back((dir.join(&name), child));
        }
    }
    out.limited = all.len();
    all.sort_by(Candidate::closer);
    all.truncate(k);
    out.selected = all;
    Ok(out)
}

/// The values read for a selected cgroup beyond limit and usage; `None` where unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Detail {
    pub inactive_file: Option<u64>,
    /// v2 `memory.events` `max`, v1 `memory.failcnt`.
    pub max_events: Option<u64>,
    /// v2 `memory.events` `high`.
    pub high_events: Option<u64>,
    /// v2 `memory.pressure`, when PSI is enabled.
    pub psi: Option<Psi>,
}

fn read_file(dir: &Path, name: &str) -> Option<String> {
    read_optional(&dir.join(name)).ok().flatten()
}

/// Reads a selected cgroup's `memory.stat`, events and pressure.
pub fn read_detail(version: Version, dir: &Path) -> Detail {
    let mut d = Detail {
        inactive_file: read_file(dir, "memory.stat").and_then(|s| parse_inactive_file(&s)),
        ..Detail::default()
    };
    match version {
        Version::V1 => d.max_events = read_file(dir, "memory.failcnt").and_then(|s| parse_u64(&s)),
        Version::V2 => {
            if let Some(text) = read_file(dir, "memory.events") {
                let c = memcg_events::parse_memory_events(&text);
                (d.max_events, d.high_events) = (c.max, c.high);
            }
            // EOPNOTSUPP (PSI disabled) and garbage alike: no pressure values.
            d.psi = read_file(dir, "memory.pressure")
                .map(|t| psi::parse(&t))
                .filter(|p| p.some.is_some());
        }
    }
    d
}

/// One exposed cgroup.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub cgroup: Candidate,
    pub who: Who,
    pub detail: Detail,
    pub victim: Option<Victim>,
}

/// The collector's state: the bound, the names cache and the truncation count.
#[derive(Debug)]
pub struct MemcgHeadroom {
    root: PathBuf,
    k: usize,
    max_dirs: usize,
    hierarchy: Option<MemoryHierarchy>,
    bundles: BundleReader,
    truncated: u64,
}

impl MemcgHeadroom {
    /// Exposes the `k` cgroups closest to their limit (0: none, and no walk) of the memory
    /// hierarchy under `root` (found at each read, see [`MemoryHierarchy::find_under`]).
    pub fn new(root: impl Into<PathBuf>, k: usize) -> Self {
        let root = root.into();
        MemcgHeadroom {
            bundles: BundleReader::new(BundleConfig {
                host_root: root.clone(),
                ..BundleConfig::default()
            }),
            root,
            k,
            max_dirs: MAX_DIRS,
            hierarchy: None,
            truncated: 0,
        }
    }

    /// Names containers from these runtimes' state directories (`--docker-root`,
    /// `--podman-root`, `--containerd-state`), as the events do.
    pub fn with_bundles(mut self, config: BundleConfig) -> Self {
        // The events' reader logs what is missing, once per cause.
        self.bundles = BundleReader::new(config).quiet();
        self
    }

    /// Uses this hierarchy instead of looking for one (fixtures).
    pub fn with_hierarchy(mut self, h: MemoryHierarchy) -> Self {
        self.hierarchy = Some(h);
        self
    }

    /// Reads at most `n` directories per walk.
    pub fn with_max_dirs(mut self, n: usize) -> Self {
        self.max_dirs = n;
        self
    }

    pub fn cgroups(&self) -> usize {
        self.k
    }

    /// Walks and reads the selected cgroups; `Ok(None)` without a memory hierarchy.
    pub fn read(&mut self, page_size: u64) -> Result<Option<(Walk, Vec<Row>)>, HostError> {
        let h = match &self.hierarchy {
            Some(h) => h.clone(),
            None => match MemoryHierarchy::find_under(&self.root) {
                Some(h) => h,
                None => return Ok(None),
            },
        };
        if self.k == 0 {
            return Ok(Some((Walk::default(), Vec::new())));
        }
        let w = walk(&h, self.k, self.max_dirs, page_size)?;
        if w.truncated {
            self.truncated += 1;
        }
        let targets: Vec<(&str, &Path)> = w
            .selected
            .iter()
            .map(|c| (c.path.as_str(), c.dir.as_path()))
            .collect();
        let victims = next_victims(&self.root, h.version, &targets, page_size);
        let mut rows: Vec<Row> = w
            .selected
            .iter()
            .zip(victims)
            .map(|(c, victim)| Row {
                who: who(&c.path, &c.dir, &mut self.bundles),
                detail: read_detail(h.version, &c.dir),
                cgroup: c.clone(),
                victim,
            })
            .collect();
        rows.sort_by(|a, b| a.cgroup.path.cmp(&b.cgroup.path));
        Ok(Some((w, rows)))
    }

    /// Reads and renders (empty families included).
    pub fn collect(&mut self, page_size: u64) -> Result<Vec<MetricFamily>, HostError> {
        let (w, rows) = self.read(page_size)?.unwrap_or_default();
        Ok(families(&w, &rows, self.truncated))
    }
}

type Pick = fn(&Row) -> Option<f64>;

/// The per-cgroup families with one value each: name, help, counter, value.
const PER_CGROUP: [(&str, &str, bool, Pick); 7] = [
    (
        "oomwatch_memcg_limit_bytes",
        "Memory limit of the cgroup itself (v2 memory.max, v1 memory.limit_in_bytes), for the \
      --headroom-cgroups cgroups closest to their limit.",
        false,
        |r| Some(f(r.cgroup.limit)),
    ),
    (
        "oomwatch_memcg_usage_bytes",
        "Memory charged to the cgroup and its descendants, page cache included (v2 \
      memory.current, v1 memory.usage_in_bytes).",
        false,
        |r| Some(f(r.cgroup.usage)),
    ),
    (
        "oomwatch_memcg_working_set_bytes",
        "Usage minus inactive page cache (memory.stat inactive_file, v1 total_inactive_file), \
      as the kubelet computes the working set.",
        false,
        |r| {
            r.detail
                .inactive_file
                .map(|i| f(r.cgroup.usage.saturating_sub(i)))
        },
    ),
    (
        "oomwatch_memcg_headroom_bytes",
        "Limit minus usage: what the cgroup can still charge before reclaim at its limit, then \
      the OOM killer; negative if the limit was lowered below the usage.",
        false,
        |r| Some(r.cgroup.headroom()),
    ),
    (
        "oomwatch_memcg_usage_ratio",
        "Usage divided by the limit (1 for a zero limit).",
        false,
        |r| Some(r.cgroup.ratio()),
    ),
    (
        "oomwatch_memcg_headroom_max_events_total",
        "Times the cgroup's usage reached its limit and reclaim ran (v2 memory.events max, v1 \
      memory.failcnt).",
        true,
        |r| r.detail.max_events.map(f),
    ),
    (
        "oomwatch_memcg_headroom_high_events_total",
        "Times the cgroup's usage went over memory.high and it was throttled (v2 memory.events \
      high).",
        true,
        |r| r.detail.high_events.map(f),
    ),
];

/// The metric families of one read (empty ones included), `rows` sorted by path.
pub fn families(w: &Walk, rows: &[Row], truncated: u64) -> Vec<MetricFamily> {
    let mut per: Vec<Vec<Metric>> = vec![Vec::new(); PER_CGROUP.len()];
    let (mut pressure, mut victims) = (Vec::new(), Vec::new());
    for r in rows {
        let base = [
            ("cgroup", r.cgroup.path.as_str()),
            ("container", r.who.container.as_str()),
            ("namespace", r.who.namespace.as_str()),
            ("pod", r.who.pod.as_str()),
            ("pod_uid", r.who.pod_uid.as_str()),
        ];
        for (out, (_, _, is_counter, pick)) in per.iter_mut().zip(PER_CGROUP) {
            if let Some(v) = pick(r) {
                out.push(if is_counter {
                    counter(&base, v)
                } else {
                    gauge(&base, v)
                });
            }
        }
        pressure_metrics(&base, r, &mut pressure);
        victims.extend(victim_metric(&base, r));
    }
    let (g, c) = (MetricType::GAUGE, MetricType::COUNTER);
    let mut fams: Vec<MetricFamily> = per
        .into_iter()
        .zip(PER_CGROUP)
        .map(|(m, (name, help, is_counter, _))| {
            family(name, help, if is_counter { c } else { g }, m)
        })
        .collect();
    fams.push(family(
        "oomwatch_memcg_pressure_ratio",
        "Share of wall time the cgroup's tasks stalled on memory, averaged over the window \
         (cgroup v2 memory.pressure avgN / 100).",
        g,
        pressure,
    ));
    fams.push(family(
        "oomwatch_memcg_next_victim_info",
        "Always 1: the process the OOM killer would kill if the cgroup hit its limit now (as \
         oomwatch top --cgroup ranks), with its /proc/<pid>/oom_score.",
        g,
        victims,
    ));
    fams.extend(walk_families(w, truncated));
    fams
}

/// One cgroup's `oomwatch_memcg_pressure_ratio` samples; `base` are its labels.
fn pressure_metrics(base: &[(&str, &str); 5], r: &Row, pressure: &mut Vec<Metric>) {
    // Labels sorted by name: cgroup, container, kind, namespace, pod, pod_uid, window.
    let Some(p) = &r.detail.psi else { return };
    for (kind, line) in [("full", p.full), ("some", p.some)] {
        let Some(l) = line else { continue };
        for (window, avg) in [("10s", l.avg10), ("300s", l.avg300), ("60s", l.avg60)] {
            let mut lv = base.to_vec();
            lv.insert(2, ("kind", kind));
            lv.push(("window", window));
            pressure.push(gauge(&lv, avg / 100.0));
        }
    }
}

/// One cgroup's `oomwatch_memcg_next_victim_info` sample; `base` are its labels.
fn victim_metric(base: &[(&str, &str); 5], r: &Row) -> Option<Metric> {
    let v = r.victim.as_ref()?;
    let (pid, score) = (v.pid.to_string(), v.oom_score.to_string());
    // cgroup, comm, container, namespace, oom_score, pid, pod, pod_uid.
    let mut lv = base.to_vec();
    lv.insert(1, ("comm", v.comm.as_str()));
    lv.insert(4, ("oom_score", score.as_str()));
    lv.insert(5, ("pid", pid.as_str()));
    Some(gauge(&lv, 1.0))
}

/// The walk itself: cgroups scanned and limited at this scrape, walks cut short.
fn walk_families(w: &Walk, truncated: u64) -> [MetricFamily; 3] {
    let (g, c) = (MetricType::GAUGE, MetricType::COUNTER);
    [
        family(
            "oomwatch_memcg_headroom_cgroups_scanned",
            "Memory cgroup directories the headroom walk read at this scrape.",
            g,
            vec![gauge(&[], w.scanned as f64)],
        ),
        family(
            "oomwatch_memcg_headroom_cgroups_limited",
            "Memory cgroups with a limit of their own the headroom walk found at this scrape.",
            g,
            vec![gauge(&[], w.limited as f64)],
        ),
        family(
            "oomwatch_memcg_headroom_scans_truncated_total",
            "Headroom walks that stopped at the directory bound before reading the whole \
             hierarchy.",
            c,
            vec![counter(&[], f(truncated))],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const MIB: u64 = 1 << 20;
    const UNLIMITED_4K: &str = "9223372036854771712";
    const POD_UID: &str = "7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n", 4096), Some(Limit::Unlimited));
        assert_eq!(parse_limit(UNLIMITED_4K, 4096), Some(Limit::Unlimited));
        assert_eq!(
            parse_limit(&u64::MAX.to_string(), 4096),
            Some(Limit::Unlimited)
        );
        assert_eq!(
            parse_limit("67108864\n", 4096),
            Some(Limit::Bytes(64 * MIB))
        );
        assert_eq!(parse_limit("0", 0), Some(Limit::Bytes(0)));
        for bad in ["", "-1", "12 kB", "max max", "\u{0}"] {
            assert_eq!(parse_limit(bad, 4096), None, "{bad:?}");
        }
    }

    #[test]
    fn inactive_file_prefers_the_hierarchical_v1_total() {
        let v1 = "cache 10\ninactive_file 5\ntotal_cache 30\ntotal_inactive_file 20\n";
        assert_eq!(parse_inactive_file(v1), Some(20));
        assert_eq!(parse_inactive_file("anon 1\ninactive_file 7\n"), Some(7));
        assert_eq!(
            parse_inactive_file("inactive_file x\ninactive_file 3\n"),
            Some(3)
        );
        assert_eq!(parse_inactive_file("inactive_file 1 2\nanon 3"), None);
    }

    #[test]
    fn ratio_and_headroom() {
        let c = |limit, usage| Candidate {
            path: "/a".into(),
            dir: "/a".into(),
            limit,
            usage,
        };
        assert_eq!(c(100, 90).ratio(), 0.9);
        assert_eq!(c(100, 90).headroom(), 10.0);
        assert_eq!(c(100, 120).headroom(), -20.0);
        assert_eq!(c(0, 0).ratio(), 1.0);
    }

    /// A v1 tree under `<root>/sys/fs/cgroup/memory`.
    struct Tree {
        root: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Tree {
            let t = Tree {
                root: tempfile::tempdir().unwrap(),
            };
            t.cgroup("/", None, 0);
            t
        }

        fn mount(&self) -> PathBuf {
            self.root.path().join("sys/fs/cgroup/memory")
        }

        fn hierarchy(&self, version: Version) -> MemoryHierarchy {
            MemoryHierarchy {
                version,
                mount: self.mount(),
            }
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.root.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        /// A v1 cgroup: `None` = unlimited.
        fn cgroup(&self, path: &str, limit: Option<u64>, usage: u64) -> PathBuf {
            let dir = self.mount().join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            let limit = limit.map_or(UNLIMITED_4K.to_string(), |l| l.to_string());
            fs::write(dir.join("memory.limit_in_bytes"), limit).unwrap();
            fs::write(dir.join("memory.usage_in_bytes"), format!("{usage}\n")).unwrap();
            dir
        }

        /// A process: memory in kB, in cgroup `cg`.
        fn process(&self, pid: i32, comm: &str, anon_kb: u64, adj: i16, cg: &str, score: u32) {
            let d = format!("proc/{pid}");
            self.write(
                &format!("{d}/status"),
                &format!(
                    "Name:\t{comm}\nRssAnon:\t{anon_kb} kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n\
                 VmPTE:\t0 kB\nVmSwap:\t0 kB\n"
                ),
            );
            self.write(&format!("{d}/oom_score_adj"), &format!("{adj}\n"));
            self.write(&format!("{d}/oom_score"), &format!("{score}\n"));
            self.write(
                &format!("{d}/stat"),
                &format!("{pid} ({comm}) S 1 1 1 0 -1 4194560 0"),
            );
            self.write(&format!("{d}/cgroup"), &format!("4:memory:{cg}\n0::/\n"));
        }
    }

    #[test]
    fn walk_keeps_the_k_closest_and_counts_everything() {
        let t = Tree::new();
        t.cgroup("/a", Some(100 * MIB), 50 * MIB);
        t.cgroup("/a/near", Some(10 * MIB), 9 * MIB);
        t.cgroup("/b", None, 500 * MIB);
        t.cgroup("/b/full", Some(MIB), MIB);
        t.cgroup("/b/same-ratio", Some(2 * MIB), 2 * MIB);
        t.cgroup("/c", Some(MIB), 0);
        fs::create_dir_all(t.mount().join("not-memcg")).unwrap();
        let w = walk(&t.hierarchy(Version::V1), 3, MAX_DIRS, 4096).unwrap();
        let paths: Vec<&str> = w.selected.iter().map(|c| c.path.as_str()).collect();
        // Same ratio: less headroom first (both 0 here: then by path).
        assert_eq!(paths, ["/b/full", "/b/same-ratio", "/a/near"]);
        assert_eq!((w.scanned, w.limited, w.truncated), (8, 5, false));
        assert_eq!(w.selected[2].limit, 10 * MIB);
        assert_eq!(w.selected[2].usage, 9 * MIB);

        // Breadth first: the bound leaves out the deepest level.
        let w = walk(&t.hierarchy(Version::V1), 10, 5, 4096).unwrap();
        let paths: Vec<&str> = w.selected.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/c"]);
        assert_eq!((w.scanned, w.truncated), (5, true));
    }

    #[test]
    fn unreadable_root_fails_and_missing_hierarchy_does_not() {
        let t = Tree::new();
        let gone = MemoryHierarchy {
            version: Version::V2,
            mount: t.root.path().join("nope"),
        };
        assert!(matches!(
            walk(&gone, 3, 10, 4096),
            Err(HostError::Read { .. })
        ));
        let mut m = MemcgHeadroom::new(t.root.path().join("empty"), 5);
        let fams = m.collect(4096).unwrap();
        let scanned = fams
            .iter()
            .find(|f| f.name() == "oomwatch_memcg_headroom_cgroups_scanned")
            .unwrap();
        assert_eq!(scanned.get_metric()[0].get_gauge().get_value(), 0.0);
    }

    #[test]
    fn v2_detail_and_pressure() {
        let t = Tree::new();
        let dir = t.mount().join("x");
        t.write(
            "sys/fs/cgroup/memory/x/memory.events",
            "low 0\nhigh 4\nmax 7\noom 1\noom_kill 1\n",
        );
        t.write(
            "sys/fs/cgroup/memory/x/memory.pressure",
            "some avg10=12.50 avg60=2.00 avg300=0.50 total=99\n\
         full avg10=1.00 avg60=0.00 avg300=0.00 total=9\n",
        );
        t.write(
            "sys/fs/cgroup/memory/x/memory.stat",
            "anon 5\ninactive_file 3\n",
        );
        let d = read_detail(Version::V2, &dir);
        assert_eq!(
            (d.max_events, d.high_events, d.inactive_file),
            (Some(7), Some(4), Some(3))
        );
        assert_eq!(d.psi.unwrap().some.unwrap().avg10, 12.5);
        // PSI disabled (or garbage): no pressure; v1 reads failcnt.
        t.write("sys/fs/cgroup/memory/x/memory.pressure", "");
        t.write("sys/fs/cgroup/memory/x/memory.failcnt", "3\n");
        assert_eq!(read_detail(Version::V2, &dir).psi, None);
        let d = read_detail(Version::V1, &dir);
        assert_eq!((d.max_events, d.high_events, d.psi), (Some(3), None, None));
        assert_eq!(
            read_detail(Version::V1, &t.mount().join("gone")),
            Detail::default()
        );
    }

    #[test]
    fn next_victim_is_ranked_against_the_cgroup_limit() {
        let t = Tree::new();
        t.write("proc/meminfo", "MemTotal: 8388608 kB\nSwapTotal: 0 kB\n");
        let a = t.cgroup("/a", Some(256 * MIB), 200 * MIB);
        let b = t.cgroup("/b", Some(64 * MIB), 0);
        t.cgroup("/a/c", None, 0);
        fs::write(a.join("memory.swappiness"), "0").unwrap();
        // In /a's subtree: 48 MiB at adj 0 vs 8 MiB at adj 500 (+32768 points of 65536 pages):
        // the small one wins, as in `oomwatch top --cgroup`.
        t.process(10, "big", 48 * 1024, 0, "/a", 40);
        t.process(11, "small", 8 * 1024, 500, "/a/c", 700);
        t.process(12, "protected", 100 * 1024, -1000, "/a", 0);
        t.process(13, "outside", 900 * 1024, 1000, "/", 1900);
        let got = next_victims(
            t.root.path(),
            Version::V1,
            &[("/a", &a), ("/b", &b), ("/a/c", &t.mount().join("a/c"))],
            4096,
        );
        let small = Victim {
            pid: 11,
            comm: "small".into(),
            oom_score: 700,
        };
        // /a/c has no limit of its own: its limit file says unlimited, and it is still ranked.
        assert_eq!(got, [Some(small.clone()), None, Some(small)]);
        // Without /proc/meminfo nothing is ranked.
        fs::remove_file(t.root.path().join("proc/meminfo")).unwrap();
        assert_eq!(
            next_victims(t.root.path(), Version::V1, &[("/a", &a)], 4096),
            [None]
        );
    }

    #[test]
    fn kubernetes_labels_from_the_path_and_bundle() {
        let t = Tree::new();
        let pod = format!("/kubepods/burstable/pod{POD_UID}");
        let pod_dir = t.cgroup(&pod, Some(128 * MIB), 100 * MIB);
        let ctr = format!("{pod}/{CID}");
        let ctr_dir = t.cgroup(&ctr, Some(64 * MIB), 60 * MIB);
        // containerd's bundle of the container.
        t.write(
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0",
            "io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{POD_UID}"}}}}"#
        ),
    );
        let mut bundles = BundleReader::new(BundleConfig {
            host_root: t.root.path().to_owned(),
            ..BundleConfig::default()
        });
        let c = who(&ctr, &ctr_dir, &mut bundles);
        assert_eq!(
            c,
            Who {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: "app".into(),
                pod_uid: POD_UID.into(),
            }
        );
        let p = who(&pod, &pod_dir, &mut bundles);
        assert_eq!((p.pod.as_str(), p.container.as_str()), ("web-0", ""));
        assert_eq!(
            who("/system.slice/x.service", &t.mount(), &mut bundles),
            Who::default()
        );
    }

    /// As `HostCollectors::collect` renders: empty families left out.
    fn text(fams: &[MetricFamily]) -> String {
        let fams: Vec<MetricFamily> = fams
            .iter()
            .filter(|f| !f.get_metric().is_empty())
            .cloned()
            .collect();
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&fams, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn families_of_a_v1_tree() {
        let t = Tree::new();
        t.write("proc/meminfo", "MemTotal: 8388608 kB\nSwapTotal: 0 kB\n");
        let a = t.cgroup("/a", Some(64 * MIB), 56 * MIB);
        fs::write(a.join("memory.failcnt"), "5\n").unwrap();
        fs::write(a.join("memory.stat"), "total_inactive_file 1048576\n").unwrap();
        t.cgroup("/b", Some(64 * MIB), 0);
        t.process(7, "helper", 56 * 1024, 0, "/a", 12);
        let mut m = MemcgHeadroom::new(t.root.path(), 20).with_hierarchy(t.hierarchy(Version::V1));
        let fams = m.collect(4096).unwrap();
        let out = text(&fams);
        let l = r#"cgroup="/a",container="",namespace="",pod="",pod_uid="""#;
        for want in [
        format!("oomwatch_memcg_limit_bytes{{{l}}} 67108864"),
        format!("oomwatch_memcg_usage_bytes{{{l}}} 58720256"),
        format!("oomwatch_memcg_working_set_bytes{{{l}}} 57671680"),
        format!("oomwatch_memcg_headroom_bytes{{{l}}} 8388608"),
        format!("oomwatch_memcg_usage_ratio{{{l}}} 0.875"),
        format!("oomwatch_memcg_headroom_max_events_total{{{l}}} 5"),
        r#"oomwatch_memcg_next_victim_info{cgroup="/a",comm="helper",container="",namespace="",oom_score="12",pid="7",pod="",pod_uid=""} 1"#.into(),
        r#"oomwatch_memcg_usage_ratio{cgroup="/b",container="",namespace="",pod="",pod_uid=""} 0"#.into(),
        "oomwatch_memcg_headroom_cgroups_scanned 3".into(),
        "oomwatch_memcg_headroom_cgroups_limited 2".into(),
        "oomwatch_memcg_headroom_scans_truncated_total 0".into(),
    ] {
        assert!(out.lines().any(|x| x == want), "no {want:?} in\n{out}");
    }
        assert!(!out.contains("oomwatch_memcg_pressure_ratio{"), "{out}");
        // K = 1 keeps /a only; a truncated walk counts.
        let mut m = MemcgHeadroom::new(t.root.path(), 1)
            .with_hierarchy(t.hierarchy(Version::V1))
            .with_max_dirs(2);
        m.collect(4096).unwrap();
        let out = text(&m.collect(4096).unwrap());
        assert!(
            out.contains("oomwatch_memcg_headroom_scans_truncated_total 2"),
            "{out}"
        );
        assert!(!out.contains("cgroup=\"/b\""), "{out}");
        // K = 0: no walk at all.
        let mut m = MemcgHeadroom::new(t.root.path(), 0).with_hierarchy(t.hierarchy(Version::V1));
        let out = text(&m.collect(4096).unwrap());
        assert!(
            out.contains("oomwatch_memcg_headroom_cgroups_scanned 0"),
            "{out}"
        );
    }

    #[test]
    fn v2_pressure_series_are_sorted_and_scaled() {
        let t = Tree::new();
        let x = t.mount().join("x");
        fs::create_dir_all(&x).unwrap();
        fs::write(x.join("memory.max"), "1000\n").unwrap();
        fs::write(x.join("memory.current"), "999\n").unwrap();
        fs::write(
            x.join("memory.pressure"),
            "some avg10=12.50 avg60=2.00 avg300=0.50 total=99\n",
        )
        .unwrap();
        let mut m = MemcgHeadroom::new(t.root.path(), 5).with_hierarchy(t.hierarchy(Version::V2));
        let fams = m.collect(4096).unwrap();
        let p = fams
            .iter()
            .find(|f| f.name() == "oomwatch_memcg_pressure_ratio")
            .unwrap();
        let got: Vec<(String, f64)> = p
            .get_metric()
            .iter()
            .map(|m| {
                let l: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
                assert_eq!(
                    l,
                    [
                        "cgroup",
                        "container",
                        "kind",
                        "namespace",
                        "pod",
                        "pod_uid",
                        "window"
                    ]
                );
                (
                    m.get_label()[6].value().to_owned(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10s".into(), 0.125),
                ("300s".into(), 0.005),
                ("60s".into(), 0.02)
            ]
        );
    }

    #[test]
    fn random_files_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const CHARS: &[u8] = b"0123456789 \nmaxsomefullavg10=.total_inactive_file-";
        for _ in 0..300 {
            let len = (next() % 80) as usize;
            let s: String = (0..len)
                .map(|_| CHARS[(next() % CHARS.len() as u64) as usize] as char)
                .collect();
            let _ = parse_limit(&s, next() % 70_000);
            let _ = parse_u64(&s);
            let _ = parse_inactive_file(&s);
            let _ = who(
                &s,
                Path::new("/nonexistent"),
                &mut BundleReader::new(BundleConfig::default()),
            );
        }
    }
}
