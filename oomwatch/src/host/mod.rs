//! Host memory telemetry: one collector per concern, each read through a configurable root so
//! a DaemonSet reads the host's `/proc` and `/sys`.
//!
//! | Collector      | Reads (under the root)                                   | Module            |
//! |----------------|----------------------------------------------------------|-------------------|
//! | `sysctl`       | `proc/sys/vm/*`, `proc/zoneinfo`, `sys/kernel/mm/transparent_hugepage/*` | [`sysctl`] |
//! | `meminfo`      | `proc/meminfo`, `sys/devices/system/node/node*/meminfo`  | [`meminfo`]       |
//! | `psi`          | `proc/pressure/memory`                                   | [`psi`]           |
//! | `vmstat`       | `proc/vmstat`                                            | [`vmstat`]        |
//! | `memcg_events` | `memory.events` (v2) / `memory.oom_control` (v1) of watched cgroups | [`memcg_events`] |
//! | `memcg_headroom` | limit, usage, `memory.stat`, events, pressure of the K cgroups closest to their limit; `/proc/<pid>` of their processes | [`memcg_headroom`] |
//!
//! Every collector has pure parse functions over `&str` (no panic on any input, unknown lines
//! ignored) and a read wrapper. [`HostCollectors::collect`] runs them all at scrape time: a
//! collector that fails sets `oomwatch_host_collector_success{collector}` to 0, leaves its
//! metrics out and logs at debug level; the scrape itself never fails.
//!
//! What counts as a failure: a file the collector needs is missing, unreadable or unparsable.
//! A file that is absent because the kernel lacks the feature is not a failure: the
//! corresponding values are left out (PSI disabled, no NUMA sysfs, a sysctl newer than the
//! kernel, no `oom_kill` line before 4.13). `memcg_events` is the one partial collector: a
//! cgroup it cannot read is left out and the collector reports 0, the others are still exposed.
//! `memcg_headroom` leaves out a cgroup removed or unreadable during its walk and still reports
//! 1; it fails only when the hierarchy's root cannot be listed (no hierarchy: nothing listed).
use crate::sink::metrics::prom;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use prometheus::proto::{MetricFamily, MetricType};

pub mod memcg_events;
pub mod memcg_headroom;
pub mod meminfo;
pub mod psi;
pub mod snapshot;
pub mod sysctl;
pub mod vmstat;
pub mod zoneinfo;

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz_tests;

pub use memcg_events::MemcgEvents;
pub use snapshot::{HostSnapshot, NumaNode, PsiAverages, Warning};
pub use vmstat::kernel_oom_kills;

/// The collectors' names, as in the `collector` label, sorted.
pub const COLLECTORS: [&str; 6] = [
    "memcg_events",
    "memcg_headroom",
    "meminfo",
    "psi",
    "sysctl",
    "vmstat",
];

/// Files larger than this are refused: every file read here is a few kB to a few MB
/// (`/proc/zoneinfo` on a large machine); a bigger one means the root points somewhere wrong.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a collector (or [`kernel_oom_kills`]) could not produce its values.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl HostError {
    pub(crate) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        HostError::Parse {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads a whole file (at most [`MAX_FILE_BYTES`]), replacing invalid UTF-8.
pub(crate) fn read_text_io(path: &Path) -> io::Result<Result<String, HostError>> {
    let file = File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Ok(Err(HostError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        }));
    }
    Ok(Ok(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads a file the collector needs.
pub(crate) fn read_text(path: &Path) -> Result<String, HostError> {
    read_text_io(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })?
}

/// Reads a file that may legitimately be absent (`None` when it does not exist).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, HostError> {
    match read_text_io(path) {
        Ok(r) => r.map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Locks, ignoring poisoning (the memcg state is valid after any partial update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The page size of the running kernel (the host's: containers share it).
fn system_page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// One collector's run.
#[derive(Clone, Debug)]
struct Status {
    name: &'static str,
    ok: bool,
    seconds: f64,
}

/// Where [`HostCollectors::gather`] puts each collector's results.
struct Gathered<'a> {
    snap: &'a mut HostSnapshot,
    fams: &'a mut Vec<MetricFamily>,
    statuses: &'a mut Vec<Status>,
}

impl Gathered<'_> {
    /// Runs one collector, timing it; a failure is logged and recorded, never propagated.
    fn run(
        &mut self,
        name: &'static str,
        collector: impl FnOnce(&mut HostSnapshot) -> Result<Vec<MetricFamily>, HostError>,
    ) {
        let start = Instant::now();
        let result = collector(self.snap);
        let seconds = start.elapsed().as_secs_f64();
        let ok = match result {
            Ok(mut v) => {
                self.fams.append(&mut v);
                true
            }
            Err(e) => {
                tracing::debug!(collector = name, error = %e, "host collector failed");
                self.snap.collector_errors.insert(name, e.to_string());
                false
            }
        };
        self.statuses.push(Status { name, ok, seconds });
    }
}

/// All host collectors, reading under one root. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct HostCollectors {
    root: PathBuf,
    page_size: u64,
    memcg: Mutex<MemcgEvents>,
    headroom: Mutex<memcg_headroom::MemcgHeadroom>,
}

impl HostCollectors {
    /// Collectors reading under `root`: `"/"` on the host, `"/host"` in a pod that mounts the
    /// host's `/` there (or at least its `/proc` and `/sys`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        HostCollectors {
            memcg: Mutex::new(MemcgEvents::new(
                root.clone(),
                memcg_events::DEFAULT_CAPACITY,
            )),
            headroom: Mutex::new(memcg_headroom::MemcgHeadroom::new(
                root.clone(),
                memcg_headroom::DEFAULT_CGROUPS,
            )),
            root,
            page_size: system_page_size(),
        }
    }

    /// Overrides the page size used to turn `/proc/zoneinfo` page counts into bytes (by
    /// default the running kernel's); for fixtures recorded on another machine.
    pub fn with_page_size(mut self, bytes: u64) -> Self {
        self.page_size = bytes.max(1);
        self
    }

    /// Replaces the memcg watch set by an empty one holding at most `capacity` cgroups.
    pub fn with_memcg_capacity(self, capacity: usize) -> Self {
        *lock(&self.memcg) = MemcgEvents::new(self.root.clone(), capacity);
        self
    }

    /// Exposes the `k` memory cgroups closest to their limit (0: none); see [`memcg_headroom`].
    pub fn with_headroom(self, k: usize) -> Self {
        *lock(&self.headroom) = memcg_headroom::MemcgHeadroom::new(self.root.clone(), k);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Starts (or refreshes) watching a memory cgroup; see [`MemcgEvents::watch`].
    pub fn watch_memcg(&self, cgroup_dir: PathBuf, label: String) {
        lock(&self.memcg).watch(cgroup_dir, label);
    }

    /// Direct access to the memcg watch set.
    pub fn with_memcg<R>(&self, f: impl FnOnce(&mut MemcgEvents) -> R) -> R {
        f(&mut lock(&self.memcg))
    }

    /// Reads everything now; returns the metric families sorted by name (empty ones left out),
    /// including `oomwatch_host_collector_success{collector}` and
    /// `oomwatch_host_collector_duration_seconds{collector}`.
    pub fn collect(&self) -> Vec<MetricFamily> {
        let (_, mut fams, mut statuses) = self.gather(true);
        statuses.sort_unstable_by_key(|s| s.name);
        let success = statuses
            .iter()
            .map(|s| prom::gauge(&[("collector", s.name)], if s.ok { 1.0 } else { 0.0 }))
            .collect();
        fams.push(prom::family(
            "oomwatch_host_collector_success",
            "Whether the host collector read its files (1) or failed (0); a failed collector's \
             metrics are left out.",
            MetricType::GAUGE,
            success,
        ));
        let durations = statuses
            .iter()
            .map(|s| prom::gauge(&[("collector", s.name)], s.seconds))
            .collect();
        fams.push(prom::family(
            "oomwatch_host_collector_duration_seconds",
            "Time the host collector took at this scrape.",
            MetricType::GAUGE,
            durations,
        ));
        fams.retain(|f| !f.get_metric().is_empty());
        fams.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        fams
    }

    /// The same values as a typed snapshot (memcg events excluded), for `oomwatch check` and
    /// the web page.
    pub fn snapshot(&self) -> HostSnapshot {
        self.gather(false).0
    }

    fn gather(&self, with_memcg: bool) -> (HostSnapshot, Vec<MetricFamily>, Vec<Status>) {
        let mut snap = HostSnapshot::default();
        let mut fams = Vec::with_capacity(40);
        let mut statuses = Vec::with_capacity(COLLECTORS.len());
        let root = self.root.as_path();

        let mut out = Gathered {
            snap: &mut snap,
            fams: &mut fams,
            statuses: &mut statuses,
        };
        out.run("sysctl", |s| {
            let d = sysctl::read(root, self.page_size)?;
            d.fill(s);
            Ok(d.families())
        });
        out.run("meminfo", |s| {
            let d = meminfo::read(root)?;
            d.fill(s);
            Ok(d.families())
        });
        out.run("psi", |s| {
            let d = psi::read(root)?;
            d.fill(s);
            Ok(d.families())
        });
        out.run("vmstat", |s| {
            let d = vmstat::read(root)?;
            s.kernel_oom_kills = d;
            Ok(vmstat::families(d))
        });
        if with_memcg {
            out.run("memcg_headroom", |_| {
                lock(&self.headroom).collect(self.page_size)
            });
        }

        if with_memcg {
            let start = Instant::now();
            let mut memcg = lock(&self.memcg);
            let read = memcg.read();
            let ok = read.errors.is_empty();
            for (label, e) in &read.errors {
                tracing::debug!(collector = "memcg_events", cgroup = %label, error = %e,
                    "cannot read memory cgroup events");
            }
            if let Some((_, e)) = read.errors.first() {
                snap.collector_errors.insert("memcg_events", e.to_string());
            }
            fams.extend(memcg.families(&read));
            statuses.push(Status {
                name: "memcg_events",
                ok,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        (snap, fams, statuses)
    }
}
