//! OOM events of individual memory cgroups, read from the kernel's own per-cgroup counters:
//!
//! * cgroup v2 `memory.events` (hierarchical: includes descendants):
//!   `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill` (5.17+);
//! * cgroup v1 `memory.oom_control`: `oom_kill_disable`, `under_oom`, `oom_kill` (4.13+).
//!
//! Only a bounded set of cgroups is watched: the agent adds the cgroups that had kills
//! ([`MemcgEvents::watch`]). When the set is full, the least recently watched cgroup is dropped
//! and `oomwatch_memcg_watch_evicted_total` goes up. A watched cgroup whose directory is gone
//! (a pod deleted after its OOM) is dropped at the next read.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prometheus::proto::{Metric, MetricFamily, MetricType};

use super::{read_optional, HostError};
use crate::sink::metrics::prom::{counter, f, family, gauge};
use crate::sys::cgroup::Version;

/// Default number of cgroups watched at most.
pub const DEFAULT_CAPACITY: usize = 256;

/// A cgroup's OOM-related counters; `None` when its version or kernel does not report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgCounts {
    /// v2 `oom`: times the cgroup hit its limit and the OOM killer was about to run.
    pub oom: Option<u64>,
    /// `oom_kill`: processes killed by the OOM killer in the cgroup.
    pub oom_kill: Option<u64>,
    /// v2 `oom_group_kill`: `memory.oom.group` kills.
    pub oom_group_kill: Option<u64>,
    /// v2 `max`: times usage was about to go over `memory.max`.
    pub max: Option<u64>,
    /// v2 `high`: times usage went over `memory.high` (the cgroup was throttled).
    pub high: Option<u64>,
    /// v1 `under_oom`: 1 while the cgroup is in OOM (tasks waiting, with the killer disabled).
    pub under_oom: Option<u64>,
    /// v1 `oom_kill_disable`: 1 when the OOM killer is disabled for the cgroup.
    pub oom_kill_disable: Option<u64>,
}

/// `key value` lines; the first valid occurrence of each key wins.
fn parse_pairs(text: &str, mut set: impl FnMut(&str, u64)) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(k), Some(v), None) = (words.next(), words.next(), words.next()) {
            if let Ok(v) = v.parse::<u64>() {
                set(k, v);
            }
        }
    }
}

/// Parses a v2 `memory.events`; unknown keys are ignored.
pub fn parse_memory_events(text: &str) -> MemcgCounts {
    let mut c = MemcgCounts::default();
    parse_pairs(text, |k, v| {
        let slot = match k {
            "oom" => &mut c.oom,
            "oom_kill" => &mut c.oom_kill,
            "oom_group_kill" => &mut c.oom_group_kill,
            "max" => &mut c.max,
            "high" => &mut c.high,
            _ => return,
        };
        slot.get_or_insert(v);
    });
    c
}

/// Parses a v1 `memory.oom_control`; unknown keys are ignored.
pub fn parse_oom_control(text: &str) -> MemcgCounts {
    let mut c = MemcgCounts::default();
    parse_pairs(text, |k, v| {
        let slot = match k {
            "oom_kill" => &mut c.oom_kill,
            "under_oom" => &mut c.under_oom,
            "oom_kill_disable" => &mut c.oom_kill_disable,
            _ => return,
        };
        slot.get_or_insert(v);
    });
    c
}

/// Reads one cgroup directory: `Ok(None)` when the directory no longer exists; an error
/// when a file cannot be read or the directory is not a memory cgroup.
pub fn read_cgroup(dir: &Path) -> Result<Option<(Version, MemcgCounts)>, HostError> {
    if let Some(text) = read_optional(&dir.join("memory.events"))? {
        return Ok(Some((Version::V2, parse_memory_events(&text))));
    }
    if let Some(text) = read_optional(&dir.join("memory.oom_control"))? {
        return Ok(Some((Version::V1, parse_oom_control(&text))));
    }
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: dir.to_owned(),
            source,
        }),
        Ok(_) => Err(HostError::parse(
            dir,
            "neither memory.events nor memory.oom_control: not a memory cgroup",
        )),
    }
}

/// One watched cgroup as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgRow {
    pub label: String,
    pub version: Version,
    pub counts: MemcgCounts,
}

/// The result of [`MemcgEvents::read`]: rows sorted by label, and the cgroups that could not
/// be read (left out of the rows).
#[derive(Debug, Default)]
pub struct MemcgRead {
    pub rows: Vec<MemcgRow>,
    pub errors: Vec<(String, HostError)>,
}

#[derive(Clone, Debug)]
struct Watched {
    dir: PathBuf,
    tick: u64,
}

/// The bounded, least-recently-watched-first set of memory cgroups being watched.
#[derive(Debug)]
pub struct MemcgEvents {
    root: PathBuf,
    cap: usize,
    /// By label (the `cgroup` label value), so two series never share a label.
    watched: HashMap<String, Watched>,
    /// tick of last `watch` → label; the first entry is the least recent.
    lru: BTreeMap<u64, String>,
    next_tick: u64,
    evicted: u64,
}

impl MemcgEvents {
    /// An empty set holding at most `capacity` cgroups (0 is treated as 1). Relative cgroup
    /// directories are resolved under `root`.
    pub fn new(root: impl Into<PathBuf>, capacity: usize) -> Self {
        MemcgEvents {
            root: root.into(),
            cap: capacity.max(1),
            watched: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            evicted: 0,
        }
    }

    /// Watches the memory cgroup at `cgroup_dir`, exposed with `cgroup="<label>"`.
    ///
    /// `cgroup_dir` is used as given when absolute (the caller knows where the hierarchy is
    /// mounted, e.g. `/host/sys/fs/cgroup/kubepods.slice/...`) and resolved under the root
    /// when relative (`sys/fs/cgroup/kubepods.slice/...`). Watching a label again refreshes
    /// it (and takes the new directory); a new label beyond the capacity evicts the least
    /// recently watched one.
    pub fn watch(&mut self, cgroup_dir: PathBuf, label: String) {
        let dir = if cgroup_dir.is_absolute() {
            cgroup_dir
        } else {
            self.root.join(cgroup_dir)
        };
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(w) = self.watched.get_mut(&label) {
            self.lru.remove(&w.tick);
            w.tick = tick;
            w.dir = dir;
        } else {
            while self.watched.len() >= self.cap {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.watched.remove(&oldest);
                self.evicted += 1;
            }
            self.watched.insert(label.clone(), Watched { dir, tick });
        }
        self.lru.insert(tick, label);
    }

    /// Stops watching a label; false if it was not watched.
    pub fn unwatch(&mut self, label: &str) -> bool {
        match self.watched.remove(label) {
            Some(w) => {
                self.lru.remove(&w.tick);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Cgroups dropped to stay within the capacity, since creation.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The watched labels with their directories, sorted by label.
    pub fn watched(&self) -> Vec<(&str, &Path)> {
        let mut v: Vec<(&str, &Path)> = self
            .watched
            .iter()
            .map(|(l, w)| (l.as_str(), w.dir.as_path()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Reads every watched cgroup; drops those whose directory is gone.
    pub fn read(&mut self) -> MemcgRead {
        let mut out = MemcgRead::default();
        let mut gone = Vec::new();
        for (label, w) in &self.watched {
            match read_cgroup(&w.dir) {
                Ok(Some((version, counts))) => out.rows.push(MemcgRow {
                    label: label.clone(),
                    version,
                    counts,
                }),
                Ok(None) => gone.push(label.clone()),
                Err(e) => out.errors.push((label.clone(), e)),
            }
        }
        for label in gone {
            tracing::debug!(cgroup = %label, "watched memory cgroup is gone; no longer watched");
            self.unwatch(&label);
        }
        out.rows.sort_unstable_by(|a, b| a.label.cmp(&b.label));
        out.errors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The metric families of a read (plus the watch-set gauges), empty families included.
    pub fn families(&self, read: &MemcgRead) -> Vec<MetricFamily> {
        let (c, g) = (MetricType::COUNTER, MetricType::GAUGE);
        let mut fams: Vec<MetricFamily> = PER_CGROUP
            .iter()
            .map(|&(name, help, as_counter, pick)| {
                let kind = if as_counter { c } else { g };
                family(name, help, kind, series(read, pick, as_counter))
            })
            .collect();
        fams.push(family(
            "oomwatch_memcg_watched_cgroups",
            "Memory cgroups whose events are watched now.",
            g,
            vec![gauge(&[], f(self.watched.len() as u64))],
        ));
        fams.push(family(
            "oomwatch_memcg_watch_evicted_total",
            "Memory cgroups dropped from the watch set to stay within its capacity.",
            c,
            vec![counter(&[], f(self.evicted))],
        ));
        fams
    }
}

/// One sample per watched cgroup that has the value `pick` reads.
fn series(
    read: &MemcgRead,
    pick: fn(&MemcgCounts) -> Option<u64>,
    as_counter: bool,
) -> Vec<Metric> {
    read.rows
        .iter()
        .filter_map(|r| {
            let l = [("cgroup", r.label.as_str())];
            pick(&r.counts).map(|v| {
                if as_counter {
                    counter(&l, f(v))
                } else {
                    gauge(&l, f(v))
                }
            })
        })
        .collect()
}

/// The per-cgroup families: name, help, whether a counter (else a gauge), and the value.
type PerCgroup = (
    &'static str,
    &'static str,
    bool,
    fn(&MemcgCounts) -> Option<u64>,
);

const PER_CGROUP: [PerCgroup; 7] = [
    (
        "oomwatch_memcg_oom_events_total",
        "Times the watched memory cgroup reached its limit and the OOM killer was to \
         run (cgroup v2 memory.events oom).",
        true,
        |c| c.oom,
    ),
    (
        "oomwatch_memcg_oom_kill_events_total",
        "Processes the OOM killer killed in the watched memory cgroup (memory.events \
         oom_kill on v2, memory.oom_control oom_kill on v1).",
        true,
        |c| c.oom_kill,
    ),
    (
        "oomwatch_memcg_oom_group_kill_events_total",
        "memory.oom.group kills in the watched memory cgroup (v2 memory.events \
         oom_group_kill, Linux 5.17+).",
        true,
        |c| c.oom_group_kill,
    ),
    (
        "oomwatch_memcg_max_events_total",
        "Times usage of the watched memory cgroup was about to exceed memory.max (v2 \
         memory.events max).",
        true,
        |c| c.max,
    ),
    (
        "oomwatch_memcg_high_events_total",
        "Times usage of the watched memory cgroup exceeded memory.high and was \
         throttled (v2 memory.events high).",
        true,
        |c| c.high,
    ),
    (
        "oomwatch_memcg_under_oom",
        "Whether the watched v1 memory cgroup is under OOM now (memory.oom_control \
         under_oom).",
        false,
        |c| c.under_oom,
    ),
    (
        "oomwatch_memcg_oom_kill_disabled",
        "Whether the OOM killer is disabled for the watched v1 memory cgroup \
         (memory.oom_control oom_kill_disable): its tasks hang instead of being killed.",
        false,
        |c| c.oom_kill_disable,
    ),
];

#[cfg(test)]
#[path = "memcg_events_tests.rs"]
mod tests;
