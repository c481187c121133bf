//! How each kill ended, on the real kernel: the follow-up `oom_kill_lifecycle` record of an OOM
//! victim (kill→exit, checked against the kernel's own trace of the same events in a tracefs
//! instance), the histogram, and userspace killers' SIGKILLs (`killer` set) — a SIGKILL from an
//! unlisted comm gives nothing.
mod common;
mod fuse_stall;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, TestCgroup};
use oomwatch_testkit::oracle::lifecycle;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// A tracefs instance of our own (never the global buffer other tools read), removed on drop.
struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    /// A new instance tracing `events` (with their filters), or why there is none.
    fn new(events: &[(&str, Option<&str>)]) -> Result<TraceInstance, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Mounted at /sys/kernel/tracing when it is not (as the agent does).
        let (root, _) = oomwatch::source::tracefs::ensure_mounted().map_err(|e| e.to_string())?;
        if !root.join("instances").is_dir() {
            return Err(format!("{} has no instances/", root.display()));
        }
        // One per test: the tests of this binary run at the same time.
        let dir = root.join("instances").join(format!(
            "oomwatch-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
        let t = TraceInstance { dir };
        // CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
        let clock = t.dir.join("trace_clock");
        fs::write(&clock, "mono").map_err(|e| io(&clock, e))?;
        for (event, filter) in events {
            let e = t.dir.join("events").join(event);
            if let Some(f) = filter {
                fs::write(e.join("filter"), f).map_err(|err| io(&e.join("filter"), err))?;
            }
            fs::write(e.join("enable"), "1").map_err(|err| io(&e.join("enable"), err))?;
        }
        Ok(t)
    }

    /// (timestamp ns, event name, the rest of the line) for each traced event.
    fn events(&self) -> Vec<(u64, String, String)> {
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                // "  tail-123  [001] d..1.  8042.123456: mark_victim: pid=123 ..."
                let (head, rest) = l.split_once(": ")?;
                let ts = head.split_whitespace().last()?;
                let (s, us) = ts.split_once('.')?;
                let ns = s.parse::<u64>().ok()? * 1_000_000_000 + us.parse::<u64>().ok()? * 1000;
                let (name, args) = rest.split_once(": ").unwrap_or((rest, ""));
                Some((ns, name.to_string(), args.to_string()))
            })
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("events/enable"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

fn pid_arg(args: &str) -> Option<i64> {
    args.split_whitespace()
        .find_map(|kv| kv.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

fn is_lifecycle(v: &Value, pid: i32) -> bool {
    v["type"] == "oom_kill_lifecycle" && v["pid"] == pid
}

#[test]
fn an_oom_victims_exit_is_timed_and_matches_the_kernels_trace() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    for probe in [
        "tracepoint:sched/sched_process_exit",
        "tracepoint:oom/reaper",
    ] {
        assert!(
            agent.log_text().lines().any(|l| l.contains(probe)),
            "no row for {probe}"
        );
    }
    let series = "oomwatch_oom_kill_to_exit_seconds_count{killer=\"kernel\"}";
    let before = metric_value(&agent.get("/metrics"), series).unwrap_or(0.0);
    let trace = TraceInstance::new(&[
        ("oom/mark_victim", None),
        ("sched/sched_process_exit", Some("comm == \"tail\"")),
        ("oom/wake_reaper", None),
        ("oom/start_task_reaping", None),
        ("oom/finish_task_reaping", None),
        ("oom/skip_task_reaping", None),
    ]);
    let cg = TestCgroup::new(64 << 20);
    let pid = cg.oom_kill(0);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid && v["type"].is_null());
    assert_eq!(ev["killer"], "kernel", "{ev}");
    let lc = agent.wait_event(WAIT, |v| is_lifecycle(v, pid));
    eprintln!("lifecycle record: {lc}");
    // `vm-test`'s "kill lifecycle" assertion: one record, not stuck, the event's oom_id and
    // kill time, the killer, a kill→exit time.
    let problems = lifecycle::exit_record(i64::from(pid), Some(&ev), &agent.seen, "kernel");
    assert!(problems.is_empty(), "{}\n{lc}\n{ev}", problems.join("\n"));
    assert_eq!(lc["comm"], "tail");
    let to_exit = lc["kill_to_exit_ns"].as_u64().expect("kill_to_exit_ns");
    assert!(to_exit < 5_000_000_000, "a tail victim exits at once: {lc}");
    assert_eq!(lc["stuck"], false);
    // The reaper runs only for a victim still there 2 s after the kill: a tail exits first.
    assert_eq!(lc["reaper"], "none", "{lc}");
    let after = metric_value(&agent.get("/metrics"), series).unwrap_or(0.0);
    assert!(after >= before + 1.0, "{series}: {before} -> {after}");

    // The kernel's own trace of the same kill, on the same clock.
    let Some(trace) = oomwatch_testkit::host_or_skip(
        "no tracefs instance, so no cross-check against the kernel's trace",
        trace,
    ) else {
        return;
    };
    let events = trace.events();
    let at = |name: &str| {
        events
            .iter()
            .find(|(_, n, a)| n == name && pid_arg(a) == Some(i64::from(pid)))
            .map(|(ts, _, _)| *ts)
    };
    let marked = at("mark_victim").expect("kernel traced no mark_victim");
    let exited = at("sched_process_exit").expect("kernel traced no sched_process_exit");
    let kill_ns = ev["ktime_ns"].as_u64().unwrap();
    let exit_ns = lc["exit_ktime_ns"].as_u64().unwrap();
    let close = |a: u64, b: u64| a.abs_diff(b) < 2_000_000;
    assert!(
        close(marked, kill_ns),
        "mark_victim traced at {marked}, event {kill_ns}"
    );
    assert!(
        close(exited, exit_ns),
        "exit traced at {exited}, record {exit_ns}"
    );
    let reaper: Vec<_> = events
        .iter()
        .filter(|(_, n, a)| n.contains("reap") && pid_arg(a) == Some(i64::from(pid)))
        .collect();
    eprintln!(
        "kernel trace: mark_victim {marked}, exit {exited} (+{} ns), reaper events {reaper:?}",
        exited - marked
    );
    assert!(
        reaper.is_empty(),
        "the kernel traced reaper events the agent did not report"
    );
}

/// Sends SIGKILL to `target` from a root-owned executable named `comm` (a copy of dash in
/// `dir`, which stays up a second after the kill, as a killer daemon does: the agent checks
/// the sender's executable and privilege in `/proc`); returns the sender's pid.
fn kill_from_executable_named(dir: &Path, comm: &str, target: i32) -> u32 {
    let exe = dir.join(comm);
    if !exe.exists() {
        fs::copy("/bin/dash", &exe).expect("copy /bin/dash");
    }
    let mut sender = Command::new(&exe)
        .args(["-c", &format!("kill -9 {target}; sleep 1")])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the killer");
    let pid = sender.id();
    std::thread::spawn(move || sender.wait());
    pid
}

fn sleeper() -> std::process::Child {
    Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn userspace_killers_sigkills_are_events_and_others_are_not() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--userspace-killer", "my-oom-killer"]);
    let log = agent.log_text();
    let row = [
        "tp_btf:signal_generate",
        "tracepoint:signal/signal_generate",
    ]
    .into_iter()
    .find(|p| {
        log.lines()
            .any(|l| l.contains("probe attached") && l.contains(&format!("\"probe\":\"{p}\"")))
    })
    .expect("no signal_generate probe attached");

    let mut listed = sleeper();
    let listed_pid = listed.id() as i32;
    let mut custom = sleeper();
    let custom_pid = custom.id() as i32;
    let mut unlisted = sleeper();
    let unlisted_pid = unlisted.id() as i32;
    let bin = tempfile::tempdir().unwrap();
    let killer = kill_from_executable_named(bin.path(), "earlyoom", listed_pid);
    kill_from_executable_named(bin.path(), "my-oom-killer", custom_pid);
    kill_from_executable_named(bin.path(), "not-a-killer", unlisted_pid);
    for c in [&mut listed, &mut custom, &mut unlisted] {
        c.wait().unwrap();
    }

    let ev = agent.wait_event(WAIT, |v| v["pid"] == listed_pid && v["type"].is_null());
    eprintln!("userspace kill event: {ev}");
    assert_eq!(ev["killer"], "earlyoom", "{ev}");
    assert_eq!(ev["killer_pid"], killer, "{ev}");
    assert_eq!(ev["comm"], "sleep", "{ev}");
    assert_eq!(ev["trigger"]["comm"], "earlyoom", "{ev}");
    assert_eq!(ev["sources"]["killer"], row, "{ev}");
    assert!(ev["oom_id"].is_null() && ev["replayed"] == false, "{ev}");
    if row == "tp_btf:signal_generate" {
        assert_eq!(ev["tgid"], listed_pid, "{ev}");
        assert!(ev["cgroup"].is_string(), "{ev}");
        assert!(ev["killer_cgroup"].is_string(), "{ev}");
    }
    let ev2 = agent.wait_event(WAIT, |v| v["pid"] == custom_pid && v["type"].is_null());
    assert_eq!(ev2["killer"], "my-oom-killer", "{ev2}");
    // Followed to its exit like a kernel kill: `vm-test`'s "userspace killer" and "kill
    // lifecycle" assertions (killer, comm, the killer as trigger, one exit record).
    let lc = agent.wait_event(WAIT, |v| is_lifecycle(v, listed_pid));
    let pid = i64::from(listed_pid);
    let mut problems = lifecycle::userspace_kill("earlyoom", pid, "sleep", &agent.seen);
    problems.extend(lifecycle::exit_record(
        pid,
        Some(&ev),
        &agent.seen,
        "earlyoom",
    ));
    assert!(problems.is_empty(), "{}\n{lc}\n{ev}", problems.join("\n"));

    agent.drain(Duration::from_millis(500));
    assert!(
        !agent.seen.iter().any(|v| v["pid"] == unlisted_pid),
        "a SIGKILL from an unlisted comm was reported: {:?}",
        agent.seen
    );
    let m = agent.get("/metrics");
    assert_eq!(
        metric_value(
            &m,
            "oomwatch_userspace_oom_kills_total{killer=\"earlyoom\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // Not counted as kernel OOM kills.
    assert!(
        !m.lines()
            .any(|l| l.starts_with("oomwatch_oom_kills_total{") && l.contains("comm=\"sleep\"")),
        "{m}"
    );
}

/// Set in the child that [`stuck_victim_helper`] turns into the stuck victim.
const VICTIM_ENV: &str = "OOMWATCH_TEST_STUCK_VICTIM";

/// Not a test of its own: the stuck victim's body, in a child process that re-runs this binary
/// with [`VICTIM_ENV`] set. Without it, does nothing.
#[test]
fn stuck_victim_helper() {
    if let Ok(file) = std::env::var(VICTIM_ENV) {
        fuse_stall::stuck_reader_then_hog(Path::new(&file));
    }
}

#[test]
fn a_victim_stuck_in_d_state_is_flagged_then_reaped_and_timed() {
    if !real_kernel_or_skip() {
        return;
    }
    let Some(fuse) = oomwatch_testkit::host_or_skip(
        "FUSE unavailable, no victim can be made to hang",
        fuse_stall::StalledFuse::mount(),
    ) else {
        return;
    };
    let mut agent = Agent::start(&["--stuck-after-ms", "3000"]);
    let trace = TraceInstance::new(&[
        ("oom/mark_victim", None),
        ("oom/wake_reaper", None),
        ("oom/start_task_reaping", None),
        ("oom/finish_task_reaping", None),
        ("oom/skip_task_reaping", None),
    ]);
    let cg = TestCgroup::new(64 << 20);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "stuck_victim_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(VICTIM_ENV, fuse.file())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    let mut child = cmd.spawn().expect("spawn the victim");
    let pid = child.id() as i32;
    let mut guard = KillOnDrop(Some(pid));
    assert!(fuse.wait_read(WAIT), "the victim never read the FUSE file");

    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid && v["type"].is_null());
    let stuck = agent.wait_event(WAIT, |v| v["type"] == "oom_kill_stuck" && v["pid"] == pid);
    eprintln!("stuck record: {stuck}");
    assert_eq!(stuck["state"], "D", "{stuck}");
    assert_ne!(
        stuck["tid"], pid,
        "the reader thread, not the leader: {stuck}"
    );
    assert_eq!(stuck["oom_id"], ev["oom_id"]);
    assert!(
        stuck["stuck_for_ns"].as_u64().unwrap() >= 3_000_000_000,
        "{stuck}"
    );
    let m = agent.get("/metrics");
    assert!(
        metric_value(&m, "oomwatch_oom_victims_stuck").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(metric_value(&m, "oomwatch_oom_victims_stuck_total").unwrap_or(0.0) >= 1.0);

    fuse.release();
    let status = child.wait().unwrap();
    // Reaped: its pid may be reused from now on.
    guard.0 = None;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let lc = agent.wait_event(WAIT, |v| is_lifecycle(v, pid));
    eprintln!("lifecycle record: {lc}");
    assert_eq!(lc["stuck"], true, "{lc}");
    assert_eq!(lc["reaper"], "reaped", "{lc}");
    let reaped = lc["kill_to_reaped_ns"].as_u64().expect("kill_to_reaped_ns");
    let woken = lc["kill_to_reaper_woken_ns"].as_u64().expect("woken");
    let exited = lc["kill_to_exit_ns"].as_u64().expect("kill_to_exit_ns");
    // The kernel wakes the reaper 2 s (OOM_REAPER_DELAY) after the kill.
    assert!((1_900_000_000..10_000_000_000).contains(&woken), "{lc}");
    assert!(woken <= reaped && reaped < exited, "{lc}");
    let m = agent.get("/metrics");
    let reaped_count = "oomwatch_oom_kill_to_reaped_seconds_count";
    assert!(metric_value(&m, reaped_count).unwrap_or(0.0) >= 1.0, "{m}");

    let Some(trace) = oomwatch_testkit::host_or_skip(
        "no tracefs instance, so no cross-check against the kernel's trace",
        trace,
    ) else {
        return;
    };
    let events = trace.events();
    let at = |name: &str| {
        events
            .iter()
            .find(|(_, n, a)| n == name && pid_arg(a) == Some(i64::from(pid)))
            .map(|(ts, _, _)| *ts)
            .unwrap_or_else(|| panic!("kernel traced no {name} for {pid}: {events:?}"))
    };
    let (mark, wake, start, finish) = (
        at("mark_victim"),
        at("wake_reaper"),
        at("start_task_reaping"),
        at("finish_task_reaping"),
    );
    eprintln!(
        "kernel trace: wake_reaper +{} ns, start +{} ns, finish +{} ns after mark_victim",
        wake - mark,
        start - mark,
        finish - mark
    );
    assert!(mark < wake && wake <= start && start <= finish);
    let close = |a: u64, b: u64| a.abs_diff(b) < 2_000_000;
    assert!(
        close(finish - mark, reaped),
        "kernel {} vs agent {reaped}",
        finish - mark
    );
    assert!(
        close(wake - mark, woken),
        "kernel {} vs agent {woken}",
        wake - mark
    );
}

/// SIGKILLs the victim if the test fails before it is reaped (then it holds `None`).
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill has no memory arguments; the pid is our unreaped child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The real earlyoom (Debian's `earlyoom` package), confined to a PID namespace of its own
/// with its own `/proc`: the only process it can see, and so kill, is the victim. It is told
/// memory is low at once (`-m 99,99`: SIGKILL at or below 99 % available).
#[test]
fn a_real_earlyoom_kill_is_an_event_with_killer_earlyoom() {
    if !real_kernel_or_skip() {
        return;
    }
    // Debian's package unpacked by `cargo xtask vm-test --prepare-only` (never installed, so
    // no earlyoom service runs on the host), else an installed one.
    let unpacked =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vm/earlyoom/usr/bin/earlyoom");
    let Some(earlyoom) = [
        unpacked,
        "/usr/bin/earlyoom".into(),
        "/usr/local/bin/earlyoom".into(),
    ]
    .into_iter()
    .find(|p| p.is_file()) else {
        return oomwatch_testkit::skip(
            "earlyoom is not available: run `cargo xtask vm-test --prepare-only` (unpacks \
             Debian's earlyoom under target/vm/earlyoom) or install Debian's `earlyoom`",
        );
    };
    let mut agent = Agent::start(&[]);
    // A victim with a comm of its own: `sleep` run through a symlink of that name.
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("oomw-eo-victim");
    std::os::unix::fs::symlink("/bin/sleep", &victim).unwrap();
    let script = format!(
        "{} 1000 & v=$!; echo 1000 > /proc/$v/oom_score_adj; sleep 0.5; \
         exec {} -m 99,99 -s 100,100 -r 0",
        victim.display(),
        earlyoom.display()
    );
    let mut ns = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent.wait_event(WAIT, |v| {
            v["type"].is_null() && v["killer"] == "earlyoom" && v["comm"] == "oomw-eo-victim"
        })
    }));
    let _ = ns.kill();
    let out = ns.wait_with_output().unwrap();
    let ev = found.unwrap_or_else(|_| {
        panic!(
            "no earlyoom event; earlyoom said:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("earlyoom kill event: {ev}");
    // earlyoom reports kills on stderr (unbuffered); stdout is lost with its SIGKILL.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let pid = ev["pid"].as_i64().unwrap();
    assert!(
        said.contains("sending SIGKILL") && said.contains("oomw-eo-victim"),
        "earlyoom did not report the kill:\n{said}"
    );
    let earlyoom_pid = ev["killer_pid"].as_i64().unwrap();
    assert_eq!(ev["trigger"]["tgid"], earlyoom_pid, "{ev}");
    let lc = agent.wait_event(WAIT, |v| is_lifecycle(v, pid as i32));
    // `vm-test`'s "userspace killer" and "kill lifecycle" assertions on the same records.
    let mut problems = lifecycle::userspace_kill("earlyoom", pid, "oomw-eo-victim", &agent.seen);
    problems.extend(lifecycle::exit_record(
        pid,
        Some(&ev),
        &agent.seen,
        "earlyoom",
    ));
    assert!(problems.is_empty(), "{}\n{lc}\n{ev}", problems.join("\n"));
}
