//! Resilience under load, on the real kernel:
//!
//! * The agent inside a memory cgroup of its own with a tight limit survives a storm of OOM kills
//!   in other cgroups, records every one exactly once, and stays below its limit.
//! * `kill -9` of the agent in the middle of a storm, then a restart with the same `--state-dir`:
//!   the replay from the kernel log covers exactly the kills the first agent did not record, none
//!   lost, none twice (but for the one record a kill can catch between its write and the save of
//!   the position: see below); a further restart replays nothing.
//!
//! Both tests are heavy (about a hundred kills); they take a lock so they never run at once.
mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    kill_pid, metric_value, parse_killed, real_kernel_or_skip, Agent, KernelKill, TestCgroup,
};

const WAIT: Duration = Duration::from_secs(10);

/// The agent's own cgroup limit. The debug build the tests run charges 38-41 MiB at its start-up
/// peak (VmHWM about 37 MB, of it ~18 MiB kernel memory for BTF, maps and the verifier) and
/// idles at 3-6 MiB; it cannot start under 32 MiB. 48 MiB leaves it some 8 MiB.
const AGENT_LIMIT: u64 = 48 << 20;

/// How much a storm of 100 kills may add to the agent's charge (measured: under 1 MiB).
const STORM_GROWTH: u64 = 8 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn agent_in_a_tight_memory_cgroup_survives_a_storm() {
    if !real_kernel_or_skip() {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let own = TestCgroup::new(AGENT_LIMIT);
    let klog = KillLog::start();
    let mut agent = Agent::start_in_cgroup(&own, &[]);
    let pid = agent.pid() as i32;
    let start_peak = peak_usage(&own);
    // From here on the peak is the storm's (v1 resets it on write; v2 cannot).
    let reset = fs::write(own.dir.join("memory.max_usage_in_bytes"), "0").is_ok();
    let idle = usage(&own);

    let cgroups: Vec<TestCgroup> = (0..4).map(|_| TestCgroup::new(32 << 20)).collect();
    let storm_start = Instant::now();
    let pids: Vec<i32> = thread::scope(|s| {
        let handles: Vec<_> = cgroups
            .iter()
            .map(|cg| s.spawn(move || (0..25).map(|_| cg.oom_kill(0)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let storm_time = storm_start.elapsed();
    let kernel: u64 = cgroups.iter().map(|c| c.oom_kills()).sum();
    assert_eq!(kernel, 100, "kernel's memcg counts");

    // One record per victim, none twice.
    let mut want: HashSet<i32> = pids.iter().copied().collect();
    while !want.is_empty() {
        let ev = agent.wait_event(WAIT, |v| kill_pid(v).is_some_and(|p| want.contains(&p)));
        want.remove(&kill_pid(&ev).unwrap_or_default());
    }
    agent.drain(Duration::from_millis(500));
    let per_pid = counts(&agent.seen, &pids);
    assert!(
        per_pid.values().all(|&n| n == 1) && per_pid.len() == pids.len(),
        "records per victim: {per_pid:?}"
    );

    // Nothing missed, nothing dropped, once the kernel's count has settled.
    thread::sleep(Duration::from_millis(2500));
    let m = agent.get("/metrics");
    assert_eq!(
        metric_value(&m, "oomwatch_oom_kills_missed_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "oomwatch_events_dropped_total"),
        Some(0.0),
        "{m}"
    );

    // Alive, never OOM-killed itself, below its limit.
    let health = agent.get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.trim_end().ends_with("ok"),
        "agent not healthy: {health}"
    );
    assert!(
        !fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ"),
        "agent exited"
    );
    assert_eq!(own.oom_kills(), 0, "the agent's own cgroup saw an OOM kill");
    let logged = klog.wait_for(&pids, WAIT);
    assert!(!logged.contains_key(&pid), "kernel log: agent {pid} killed");
    let hwm = vm_hwm_kb(pid);
    let storm_peak = peak_usage(&own);
    let after = usage(&own);
    println!(
        "agent {pid} in {} (limit {} MiB): start-up peak {} MiB, idle {} MiB, storm peak {} MiB, \
         after storm {} MiB, VmHWM {} kB; 100 kills in {:.1?} (test {:.1?})",
        own.path,
        AGENT_LIMIT >> 20,
        mib(start_peak),
        mib(idle),
        mib(storm_peak),
        mib(after),
        hwm.unwrap_or_default(),
        storm_time,
        t0.elapsed()
    );
    assert!(
        start_peak.is_some_and(|p| p < AGENT_LIMIT),
        "{start_peak:?}"
    );
    assert!(
        storm_peak.is_some_and(|p| p < AGENT_LIMIT),
        "{storm_peak:?}"
    );
    // Bounded queues and caches: a hundred kills cost well under STORM_GROWTH.
    if let (true, Some(peak), Some(idle)) = (reset, storm_peak, idle) {
        assert!(
            peak.saturating_sub(idle) < STORM_GROWTH,
            "the storm grew the agent by {} MiB",
            mib(Some(peak.saturating_sub(idle)))
        );
    }
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}

#[test]
fn kill_9_mid_storm_then_restart_replays_exactly_the_missed_kills() {
    if !real_kernel_or_skip() {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_string();
    let args = ["--state-dir", dir.as_str()];
    let klog = KillLog::start();
    let mut a1 = Agent::start(&args);
    let cgroups: Vec<TestCgroup> = (0..3).map(|_| TestCgroup::new(32 << 20)).collect();
    let paths: HashSet<String> = cgroups.iter().map(|c| c.path.clone()).collect();

    // The storm runs until stopped; agent 1 is killed after recording 12 of its kills, and
    // the storm goes on for 8 more.
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (pids, at_kill) = thread::scope(|s| {
        let _stop_on_exit = SetOnDrop(&stop);
        let handles: Vec<_> = cgroups
            .iter()
            .map(|cg| {
                let (stop, done) = (&stop, &done);
                s.spawn(move || {
                    let mut pids = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        pids.push(cg.oom_kill(0));
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    pids
                })
            })
            .collect();
        let mut live = HashSet::new();
        while live.len() < 12 {
            let ev = a1.wait_event(WAIT, |v| {
                v["cgroup"].as_str().is_some_and(|c| paths.contains(c))
                    && kill_pid(v).is_some_and(|p| !live.contains(&p))
            });
            live.insert(kill_pid(&ev).unwrap_or_default());
        }
        // SAFETY: kill with the pid of our own, not yet reaped, child.
        unsafe { libc::kill(a1.pid() as i32, libc::SIGKILL) };
        let at_kill = done.load(Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < at_kill + 8 && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        let pids: Vec<i32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (pids, at_kill)
    });
    let storm_time = t0.elapsed();
    // Everything agent 1 wrote before it died is still in the pipe.
    a1.drain(Duration::from_millis(300));
    let live = counts(&a1.seen, &pids);
    // Lines after a kill record (lifecycle follow-ups, other kills) are written after its
    // position was saved: only the last kill record can be in flight.
    let a1_last = a1.seen.iter().rev().find_map(kill_pid);
    drop(a1);
    assert!(
        live.values().all(|&n| n == 1),
        "agent 1 recorded a kill twice: {live:?}"
    );
    let kernel = klog.wait_for(&pids, WAIT);
    assert_eq!(klog.overwritten(), 0, "the kernel log overwrote records");
    let missing: HashSet<i32> = pids
        .iter()
        .copied()
        .filter(|p| !live.contains_key(p))
        .collect();
    assert!(
        pids.len() >= at_kill + 8 && !missing.is_empty(),
        "{} kills, {at_kill} before kill -9, {} missing",
        pids.len(),
        missing.len()
    );
    let saved = fs::read_to_string(state.path().join("kmsg-position.json")).unwrap_or_default();

    // Agent 2: exactly the kills agent 1 did not record, replayed, once each.
    let mut a2 = Agent::start(&args);
    let mut got = HashSet::new();
    while got.len() < missing.len() {
        let ev = a2.wait_event(WAIT, |v| {
            v["replayed"] == true
                && kill_pid(v).is_some_and(|p| missing.contains(&p) && !got.contains(&p))
        });
        got.insert(kill_pid(&ev).unwrap_or_default());
    }
    a2.drain(Duration::from_millis(1500));
    let ours: Vec<&Value> = a2
        .seen
        .iter()
        .filter(|v| kill_pid(v).is_some_and(|p| pids.contains(&p)))
        .collect();
    let twice: Vec<i32> = ours
        .iter()
        .filter_map(|v| kill_pid(v))
        .filter(|p| live.contains_key(p))
        .collect();
    // The one exception, inherent to a line written before its position is saved: the record
    // agent 1 wrote last, if the kill came between its write and the save (the saved `recent`
    // lacks it). Replayed, it is marked `replayed: true`. Nothing earlier may repeat.
    let last = a1_last.filter(|p| !saved_recent(&saved).contains(p));
    assert!(
        twice.is_empty() || (twice.len() == 1 && Some(twice[0]) == last),
        "recorded by agent 1 and replayed by agent 2: {twice:?}; agent 1's last record: \
         {a1_last:?}; state file: {saved}"
    );
    let replayed = counts(&a2.seen, &pids);
    let expected: HashSet<i32> = missing.iter().chain(&twice).copied().collect();
    assert_eq!(
        replayed.keys().copied().collect::<HashSet<_>>(),
        expected,
        "replayed vs missed; state file: {saved}"
    );
    assert!(replayed.values().all(|&n| n == 1), "{replayed:?}");
    for ev in &ours {
        let k = &kernel[&kill_pid(ev).unwrap_or_default()];
        assert_eq!(ev["replayed"], true, "{ev}");
        assert_eq!(ev["comm"], k.comm.as_str(), "{ev}");
        assert_eq!(ev["anon_rss"], k.anon_rss_kb * 1024, "{ev}\n{k:?}");
        assert_eq!(ev["total_vm"], k.total_vm_kb * 1024, "{ev}\n{k:?}");
        assert_eq!(ev["file_rss"], k.file_rss_kb * 1024, "{ev}\n{k:?}");
    }
    // Kills in other cgroups (another test run on this host) may be replayed too; the counter
    // matches the replayed records, of which ours are exactly the missed ones.
    let all_replayed = a2
        .seen
        .iter()
        .filter(|v| kill_pid(v).is_some() && v["replayed"] == true)
        .count();
    let m = a2.get("/metrics");
    assert_eq!(
        metric_value(&m, "oomwatch_oom_kills_replayed_total"),
        Some(all_replayed as f64),
        "{m}"
    );
    assert_eq!(a2.stop(libc::SIGTERM), Some(0));

    // Agent 3: nothing of ours left to replay.
    let mut a3 = Agent::start(&args);
    a3.drain(Duration::from_millis(1500));
    let again = counts(&a3.seen, &pids);
    assert!(again.is_empty(), "replayed again: {again:?}");
    assert_eq!(a3.stop(libc::SIGTERM), Some(0));
    println!(
        "{} kills in {:.1?}: agent 1 recorded {} (kill -9 after {at_kill}), agent 2 replayed {} \
         ({all_replayed} in all; in flight at the kill, so repeated: {twice:?}); test {:.1?}",
        pids.len(),
        storm_time,
        live.len(),
        missing.len(),
        t0.elapsed()
    );
}

/// The pids a state file holds as recorded live (`recent`).
fn saved_recent(state: &str) -> Vec<i32> {
    let v: Value = serde_json::from_str(state).unwrap_or_default();
    v["recent"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// Records per pid of `pids` among `events`.
fn counts(events: &[Value], pids: &[i32]) -> HashMap<i32, usize> {
    let mut out = HashMap::new();
    for p in events
        .iter()
        .filter_map(kill_pid)
        .filter(|p| pids.contains(p))
    {
        *out.entry(p).or_insert(0) += 1;
    }
    out
}

/// Sets the flag when dropped, so a panicking test stops its storm threads.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Current charge of a memory cgroup, in bytes.
fn usage(cg: &TestCgroup) -> Option<u64> {
    ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| fs::read_to_string(cg.dir.join(f)).ok()?.trim().parse().ok())
}

/// Peak charge of a memory cgroup (v1 `max_usage_in_bytes`, v2 `memory.peak`), in bytes.
fn peak_usage(cg: &TestCgroup) -> Option<u64> {
    ["memory.max_usage_in_bytes", "memory.peak"]
        .iter()
        .find_map(|f| fs::read_to_string(cg.dir.join(f)).ok()?.trim().parse().ok())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

/// A process's peak resident set (`VmHWM`), in kB.
fn vm_hwm_kb(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Every "Killed process" line the kernel logs from now on, read by a thread of its own as the
/// lines come (a storm's reports can overrun the log buffer before a late reader gets there).
struct KillLog {
    kills: Arc<Mutex<HashMap<i32, KernelKill>>>,
    overwritten: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KillLog {
    fn start() -> KillLog {
        // SAFETY: valid NUL-terminated path; the fd is checked and owned below.
        let fd = unsafe { libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
        assert!(
            fd >= 0,
            "open /dev/kmsg: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: lseek on our own fd.
        unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        let kills = Arc::new(Mutex::new(HashMap::new()));
        let overwritten = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (k, o, s) = (kills.clone(), overwritten.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !s.load(Ordering::SeqCst) {
                // SAFETY: buf is a valid writable buffer of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE) {
                        o.fetch_add(1, Ordering::SeqCst);
                    } else {
                        thread::sleep(Duration::from_millis(5));
                    }
                    continue;
                }
                let rec = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
                let msg = rec.split_once(';').map_or(rec.as_str(), |(_, m)| m);
                let msg = msg.lines().next().unwrap_or("");
                if let Some(kill) = msg
                    .find("Killed process ")
                    .and_then(|i| parse_killed(&msg[i..]))
                {
                    k.lock().unwrap().insert(kill.pid, kill);
                }
            }
        });
        KillLog {
            kills,
            overwritten,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until every pid of `pids` has its line; returns all lines seen so far.
    fn wait_for(&self, pids: &[i32], timeout: Duration) -> HashMap<i32, KernelKill> {
        let end = Instant::now() + timeout;
        loop {
            {
                let kills = self.kills.lock().unwrap();
                let missing: Vec<_> = pids.iter().filter(|p| !kills.contains_key(p)).collect();
                if missing.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "no 'Killed process' line for {missing:?} within {timeout:?}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        std::mem::take(&mut *self.kills.lock().unwrap())
    }

    /// Times the kernel overwrote records before this reader got to them.
    fn overwritten(&self) -> usize {
        self.overwritten.load(Ordering::SeqCst)
    }
}

impl Drop for KillLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
