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

use super::read::{read_optional, HostError};
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
mod tests {
    use super::*;

    #[test]
    fn parses_v2_memory_events() {
        let c = parse_memory_events(
            "low 0\nhigh 12\nmax 40\noom 2\noom_kill 3\noom_group_kill 1\nsock_throttled 0\n",
        );
        assert_eq!(
            c,
            MemcgCounts {
                oom: Some(2),
                oom_kill: Some(3),
                oom_group_kill: Some(1),
                max: Some(40),
                high: Some(12),
                under_oom: None,
                oom_kill_disable: None,
            }
        );
    }

    #[test]
    fn parses_v1_oom_control() {
        let c = parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 5\n");
        assert_eq!(c.oom_kill, Some(5));
        assert_eq!(c.under_oom, Some(1));
        assert_eq!(c.oom_kill_disable, Some(0));
        assert_eq!(c.oom, None);
    }

    #[test]
    fn malformed_lines_are_ignored_and_first_wins() {
        let c = parse_memory_events("oom x\noom 1 2\noom\noom 4\noom 5\n\u{0}\n");
        assert_eq!(c.oom, Some(4));
    }

    #[test]
    fn lru_evicts_least_recently_watched() {
        let mut m = MemcgEvents::new("/", 2);
        m.watch("/a".into(), "a".into());
        m.watch("/b".into(), "b".into());
        m.watch("/a2".into(), "a".into()); // refresh a (new dir)
        m.watch("/c".into(), "c".into()); // evicts b
        assert_eq!(m.evicted(), 1);
        let w = m.watched();
        assert_eq!(
            w,
            vec![("a", Path::new("/a2")), ("c", Path::new("/c"))],
            "b was least recent"
        );
        assert!(m.unwatch("a"));
        assert!(!m.unwatch("a"));
        assert_eq!(m.len(), 1);
        assert_eq!(MemcgEvents::new("/", 0).capacity(), 1);
    }

    #[test]
    fn relative_dirs_resolve_under_root_and_gone_cgroups_are_dropped() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("sys/fs/cgroup/pod");
        fs::create_dir_all(&v2).unwrap();
        fs::write(v2.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        let v1 = root.path().join("v1/job");
        fs::create_dir_all(&v1).unwrap();
        fs::write(v1.join("memory.oom_control"), "under_oom 0\noom_kill 2\n").unwrap();
        let not_memcg = root.path().join("sys/fs/cgroup/cpu-only");
        fs::create_dir_all(&not_memcg).unwrap();

        let mut m = MemcgEvents::new(root.path(), 8);
        m.watch("sys/fs/cgroup/pod".into(), "/pod".into());
        m.watch(v1.clone(), "/job".into());
        m.watch("sys/fs/cgroup/gone".into(), "/gone".into());
        m.watch(not_memcg, "/cpu-only".into());
        let r = m.read();
        let labels: Vec<_> = r
            .rows
            .iter()
            .map(|r| (r.label.as_str(), r.version))
            .collect();
        assert_eq!(labels, vec![("/job", Version::V1), ("/pod", Version::V2)]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].0, "/cpu-only");
        assert_eq!(m.len(), 3, "/gone is no longer watched");

        let fams = m.families(&r);
        let kills = fams
            .iter()
            .find(|f| f.name() == "oomwatch_memcg_oom_kill_events_total")
            .unwrap();
        assert_eq!(kills.get_metric().len(), 2);
        assert_eq!(kills.get_metric()[0].get_counter().get_value(), 2.0);
    }
}
