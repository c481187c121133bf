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
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus::proto::{MetricFamily, MetricType};

pub mod memcg_events;
pub mod memcg_headroom;
pub mod meminfo;
pub mod psi;
mod read;
pub mod snapshot;
pub mod sysctl;
pub mod vmstat;
pub mod zoneinfo;

pub use memcg_events::MemcgEvents;
pub use read::{HostError, MAX_FILE_BYTES};
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

/// The headroom walk's last result.
#[derive(Debug)]
struct HeadroomCache {
    families: Vec<MetricFamily>,
    error: Option<String>,
    seconds: f64,
}

/// All host collectors, reading under one root. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct HostCollectors {
    root: PathBuf,
    page_size: u64,
    memcg: Mutex<MemcgEvents>,
    /// Watches the event loop asked for while a scrape held `memcg` (reading its files): the
    /// loop never waits for a scrape's reads ([`Self::watch_memcg`]); the next holder of
    /// `memcg` applies them, in order.
    memcg_pending: Mutex<VecDeque<(PathBuf, String)>>,
    /// The watch set's capacity (the queue's too).
    memcg_cap: usize,
    headroom: Mutex<memcg_headroom::MemcgHeadroom>,
    /// The headroom walk's last result, when a background thread refreshes it
    /// ([`HostCollectors::spawn_headroom_refresh`]); scrapes then never wait for a walk.
    headroom_cache: Mutex<Option<HeadroomCache>>,
    headroom_background: std::sync::atomic::AtomicBool,
    /// The last collection and when it finished, shared by scrapes that waited for it.
    last: Mutex<Option<(Instant, Arc<Vec<MetricFamily>>)>>,
    /// Collections run (for tests).
    runs: std::sync::atomic::AtomicU64,
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
            memcg_pending: Mutex::new(VecDeque::new()),
            memcg_cap: memcg_events::DEFAULT_CAPACITY,
            headroom: Mutex::new(memcg_headroom::MemcgHeadroom::new(
                root.clone(),
                memcg_headroom::DEFAULT_CGROUPS,
            )),
            root,
            page_size: system_page_size(),
            headroom_cache: Mutex::new(None),
            headroom_background: std::sync::atomic::AtomicBool::new(false),
            last: Mutex::new(None),
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Overrides the page size used to turn `/proc/zoneinfo` page counts into bytes (by
    /// default the running kernel's); for fixtures recorded on another machine.
    pub fn with_page_size(mut self, bytes: u64) -> Self {
        self.page_size = bytes.max(1);
        self
    }

    /// Replaces the memcg watch set by an empty one holding at most `capacity` cgroups.
    pub fn with_memcg_capacity(mut self, capacity: usize) -> Self {
        *lock(&self.memcg) = MemcgEvents::new(self.root.clone(), capacity);
        self.memcg_cap = capacity.max(1);
        self
    }

    /// Exposes the `k` memory cgroups closest to their limit (0: none); see [`memcg_headroom`].
    pub fn with_headroom(self, k: usize) -> Self {
        *lock(&self.headroom) = memcg_headroom::MemcgHeadroom::new(self.root.clone(), k);
        self
    }

    /// Names the headroom rows' containers from these runtimes' state directories.
    pub fn with_headroom_bundles(self, config: crate::enrich::bundle::BundleConfig) -> Self {
        let h = std::mem::replace(
            &mut *lock(&self.headroom),
            memcg_headroom::MemcgHeadroom::new(self.root.clone(), 0),
        );
        *lock(&self.headroom) = h.with_bundles(config);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Starts (or refreshes) watching a memory cgroup; see [`MemcgEvents::watch`]. Never waits
    /// for a scrape: the event loop calls it for each kill, and a scrape holds the watch set
    /// while it reads every watched cgroup's files, on a renderer thread that the node's
    /// busiest tasks can keep off a CPU for a scheduler slice. The watch then waits in a queue
    /// (as long as the watch set's capacity; beyond it the oldest goes, as the set would evict
    /// it) for whoever takes the set next.
    pub fn watch_memcg(&self, cgroup_dir: PathBuf, label: String) {
        let mut memcg = match self.memcg.try_lock() {
            Ok(m) => m,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut pending = lock(&self.memcg_pending);
                if pending.len() >= self.memcg_cap {
                    pending.pop_front();
                }
                pending.push_back((cgroup_dir, label));
                return;
            }
        };
        self.apply_pending(&mut memcg);
        memcg.watch(cgroup_dir, label);
    }

    /// Direct access to the memcg watch set (queued watches applied first).
    pub fn with_memcg<R>(&self, f: impl FnOnce(&mut MemcgEvents) -> R) -> R {
        f(&mut self.memcg())
    }

    /// The watch set, with the watches queued while it was held applied.
    fn memcg(&self) -> MutexGuard<'_, MemcgEvents> {
        let mut memcg = lock(&self.memcg);
        self.apply_pending(&mut memcg);
        memcg
    }

    fn apply_pending(&self, memcg: &mut MemcgEvents) {
        let pending = std::mem::take(&mut *lock(&self.memcg_pending));
        for (dir, label) in pending {
            memcg.watch(dir, label);
        }
    }

    /// Reads everything now; returns the metric families sorted by name (empty ones left out),
    /// including `oomwatch_host_collector_success{collector}` and
    /// `oomwatch_host_collector_duration_seconds{collector}`.
    ///
    /// Scrapes arriving together share one walk (up to 10,000 cgroups and `/proc`): a scrape
    /// that waited while another collected takes that result, which finished after it
    /// arrived, so nothing older than the scrape is ever served and a flood of scrapes costs
    /// one walk per walk's duration, not one each.
    pub fn collect(&self) -> Vec<MetricFamily> {
        let arrived = Instant::now();
        let mut last = lock(&self.last);
        if let Some((_, fams)) = last.as_ref().filter(|(done, _)| *done >= arrived) {
            return fams.as_ref().clone();
        }
        let fams = Arc::new(self.collect_now());
        *last = Some((Instant::now(), Arc::clone(&fams)));
        Arc::unwrap_or_clone(fams)
    }

    /// Walks the memory cgroups for the headroom families now and keeps the result for the
    /// scrapes.
    pub fn refresh_headroom(&self) {
        let start = Instant::now();
        let read = lock(&self.headroom).collect(self.page_size);
        let seconds = start.elapsed().as_secs_f64();
        let (families, error) = match read {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        *lock(&self.headroom_cache) = Some(HeadroomCache {
            families,
            error,
            seconds,
        });
    }

    /// Refreshes the headroom families every `every` in a thread of their own (without
    /// capabilities from its first instruction), so that no scrape waits for a walk of every
    /// memory cgroup and `/proc`: on a large node that walk takes hundreds of milliseconds.
    pub fn spawn_headroom_refresh(
        self: &Arc<Self>,
        every: std::time::Duration,
        prelude: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let me = Arc::clone(self);
        crate::sys::thread::spawn_after("oomwatch-headroom", prelude, move || loop {
            me.refresh_headroom();
            std::thread::sleep(every);
        })?;
        self.headroom_background
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Collections run since start.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn collect_now(&self) -> Vec<MetricFamily> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        if with_memcg
            && self
                .headroom_background
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            // The background walk's last result (none before its first walk ends).
            if let Some(c) = lock(&self.headroom_cache).as_ref() {
                out.fams.extend(c.families.iter().cloned());
                if let Some(e) = &c.error {
                    out.snap
                        .collector_errors
                        .insert("memcg_headroom", e.clone());
                }
                out.statuses.push(Status {
                    name: "memcg_headroom",
                    ok: c.error.is_none(),
                    seconds: c.seconds,
                });
            }
        } else if with_memcg {
            out.run("memcg_headroom", |_| {
                lock(&self.headroom).collect(self.page_size)
            });
        }

        if with_memcg {
            let start = Instant::now();
            let mut memcg = self.memcg();
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

#[cfg(test)]
mod tests {
    //! Property tests with a seeded xorshift generator: random bytes, mutated real files and
    //! random numbers never panic a host parser, the risk rules or a whole collection.
    use super::*;

    #[test]
    fn a_watch_asked_while_a_scrape_holds_the_set_waits_for_no_one_and_is_kept() {
        let hc = HostCollectors::new("/nonexistent").with_memcg_capacity(2);
        let held = lock(&hc.memcg);
        // The event loop's call returns at once, though the set is held (on this thread,
        // a blocking lock would never return).
        for (i, label) in ["a", "b", "c", "a"].iter().enumerate() {
            hc.watch_memcg(PathBuf::from(format!("/cg/{i}")), label.to_string());
        }
        assert_eq!(held.len(), 0, "nothing applied while held");
        drop(held);
        let memcg = hc.memcg();
        let mut got = memcg.watched();
        got.sort();
        // Applied in order: "c" then the refreshed "a" (capacity 2 evicted "b").
        assert_eq!(
            got,
            vec![("a", Path::new("/cg/3")), ("c", Path::new("/cg/2"))]
        );
        drop(memcg);
        assert!(lock(&hc.memcg_pending).is_empty());
        // Free again: the watch goes straight to the set.
        hc.watch_memcg(PathBuf::from("/cg/9"), "d".into());
        assert!(lock(&hc.memcg_pending).is_empty());
        assert_eq!(lock(&hc.memcg).len(), 2);
    }

    #[test]
    fn scrapes_that_wait_for_a_collection_share_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/basic");
        let hc = Arc::new(HostCollectors::new(root).with_page_size(4096));
        let held = lock(&hc.last);
        let scrapes: Vec<_> = (0..4)
            .map(|_| {
                let hc = Arc::clone(&hc);
                std::thread::spawn(move || hc.collect())
            })
            .collect();
        // Let all four arrive and wait behind the lock.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
        let results: Vec<_> = scrapes.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(hc.runs(), 1, "four waiting scrapes, one walk");
        assert!(results.iter().all(|r| r == &results[0] && !r.is_empty()));
        // A scrape arriving after it finished walks again: never older than the scrape.
        hc.collect();
        assert_eq!(hc.runs(), 2);
    }

    use oomwatch_testkit::XorShift;

    /// Bytes biased towards the characters the parsers care about.
    fn random_text(rng: &mut XorShift, max_len: usize) -> String {
        const INTERESTING: &[u8] = b" \t\n:,=[]-+.0123456789kBNodezonesomefullavgtotal";
        let len = rng.below(max_len + 1);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.below(3) {
                0 => INTERESTING[rng.below(INTERESTING.len())],
                1 => b'a' + rng.below(26) as u8,
                _ => rng.next_u64() as u8,
            })
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A real file with random edits: truncation, deletion, replacement, duplication.
    fn mutate(rng: &mut XorShift, text: &str) -> String {
        let mut b = text.as_bytes().to_vec();
        for _ in 0..=rng.below(6) {
            let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
            match rng.below(5) {
                0 => b.truncate(at),
                1 if !b.is_empty() => {
                    b.remove(at);
                }
                2 if !b.is_empty() => b[at] = rng.next_u64() as u8,
                3 => {
                    let piece = b[at..].to_vec();
                    b.extend_from_slice(&piece);
                }
                _ => b.insert(at, b"\n :=[]0"[rng.below(7)]),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    const SAMPLES: &[&str] = &[
    "Node 0, zone      DMA\n  pages free     3840\n        min      26\n        low      32\n        \
     high     38\n        spanned  4095\n        present  3998\n        managed  3840\n  \
     pagesets\n    cpu: 0\n              count: 45\n              high:  378\n",
    "MemTotal:       24684084 kB\nMemFree:        24014760 kB\nMemAvailable:   24231200 kB\n\
     SwapTotal:             0 kB\nCommitLimit:    12342040 kB\nCommitted_AS:      63640 kB\n",
    "Node 0 MemTotal:        9660620 kB\nNode 0 MemFree:         8991348 kB\n",
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=967314\n\
     full avg10=0.00 avg60=0.00 avg300=0.00 total=349368\n",
    "nr_free_pages 2085177\noom_kill 955\n",
    "low 0\nhigh 12\nmax 40\noom 2\noom_kill 2\noom_group_kill 0\n",
    "oom_kill_disable 0\nunder_oom 1\noom_kill 5\n",
    "always [madvise] never\n",
    "67584\n",
];

    fn run_parsers(text: &str) {
        let zones = zoneinfo::parse(text);
        let _ = zoneinfo::lowmem_pages(&zones);
        let _ = zoneinfo::populated_lowmem_zones(&zones);
        let _ = sysctl::parse_int::<i64>(text);
        let _ = sysctl::parse_int::<u64>(text);
        let _ = sysctl::parse_bracketed(text);
        let _ = meminfo::parse_meminfo(text);
        let _ = meminfo::parse_node_meminfo(text);
        let _ = meminfo::node_number(text);
        for line in text.lines() {
            let _ = meminfo::parse_line(line);
            let _ = psi::parse_line(line);
        }
        let _ = psi::parse(text);
        let _ = vmstat::parse_oom_kill(text);
        let _ = memcg_events::parse_memory_events(text);
        let _ = memcg_events::parse_oom_control(text);
    }

    #[test]
    fn parsers_survive_random_bytes() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            run_parsers(&random_text(&mut rng, 300));
        }
    }

    #[test]
    fn parsers_survive_mutated_real_files() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for _ in 0..5_000 {
            for sample in SAMPLES {
                run_parsers(&mutate(&mut rng, sample));
                // Every prefix, i.e. a read cut short anywhere.
                let cut = rng.below(sample.len() + 1);
                run_parsers(&String::from_utf8_lossy(&sample.as_bytes()[..cut]));
            }
        }
    }

    #[test]
    fn arithmetic_and_rules_survive_any_numbers() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..20_000 {
            let x = rng.number();
            let r = sysctl::int_sqrt(x);
            assert!(u128::from(r) * u128::from(r) <= u128::from(x));
            assert!(u128::from(r + 1) * u128::from(r + 1) > u128::from(x));
            let d = sysctl::kernel_min_free_kbytes(x);
            assert!((sysctl::MIN_FREE_KBYTES_FLOOR..=sysctl::MIN_FREE_KBYTES_CEILING).contains(&d));
            let _ = sysctl::thp_recommended_min_free_kbytes(
                rng.number(),
                rng.number(),
                rng.number(),
                rng.number(),
            );
            let opt = |rng: &mut XorShift| (rng.below(4) != 0).then(|| rng.number());
            let small = |rng: &mut XorShift| (rng.below(4) != 0).then(|| rng.below(4) as i64 - 1);
            let s = HostSnapshot {
                panic_on_oom: small(&mut rng),
                oom_kill_allocating_task: small(&mut rng),
                oom_dump_tasks: small(&mut rng),
                overcommit_memory: small(&mut rng),
                min_free_kbytes: opt(&mut rng),
                min_free_default_kbytes: opt(&mut rng),
                min_free_thp_recommended_kbytes: opt(&mut rng),
                mem_total_bytes: opt(&mut rng),
                commit_limit_bytes: opt(&mut rng),
                committed_as_bytes: opt(&mut rng),
                console_loglevel: small(&mut rng).map(|l| l + 4),
                consoles: crate::host::sysctl::parse_consoles(&format!(
                    "ttyS{}",
                    random_text(&mut rng, 80)
                )),
                ..HostSnapshot::default()
            };
            for w in s.warnings() {
                assert!(!w.message.contains('\n'));
            }
        }
    }

    #[test]
    fn whole_collection_survives_random_files() {
        let files = [
            "proc/sys/vm/panic_on_oom",
            "proc/sys/vm/min_free_kbytes",
            "proc/zoneinfo",
            "proc/meminfo",
            "sys/devices/system/node/node0/meminfo",
            "proc/pressure/memory",
            "proc/vmstat",
            "sys/kernel/mm/transparent_hugepage/enabled",
            "sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
            "cg/memory.events",
            "proc/sys/kernel/printk",
            "proc/consoles",
        ];
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        let dir = tempfile::tempdir().unwrap();
        for (i, f) in files.iter().enumerate() {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, SAMPLES[i % SAMPLES.len()]).unwrap();
        }
        let host = HostCollectors::new(dir.path()).with_page_size(1 + rng.below(1 << 16) as u64);
        host.watch_memcg("cg".into(), "/cg".into());
        for round in 0..200 {
            for f in files {
                let p = dir.path().join(f);
                let old = std::fs::read_to_string(&p).unwrap_or_default();
                let new = if round % 3 == 0 {
                    random_text(&mut rng, 200)
                } else {
                    mutate(&mut rng, &old)
                };
                std::fs::write(p, new).unwrap();
            }
            let fams = host.collect();
            let mut out = String::new();
            prometheus::TextEncoder::new()
                .encode_utf8(&fams, &mut out)
                .expect("families always encode");
            let _ = host.snapshot().warnings();
        }
    }
}
