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

use super::psi::{self, Psi};
use super::{memcg_events, read_optional, HostError};
use crate::enrich::bundle::{BundleConfig, BundleReader};
use crate::explain::domain;
use crate::sink::metrics::prom::{counter, f, family, gauge};
use crate::sys::cgroup::{MemoryHierarchy, Version};

#[path = "memcg_headroom_who.rs"]
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
#[path = "memcg_headroom_tests.rs"]
mod tests;
