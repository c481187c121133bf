//! A probe that attaches but stays silent is detected, on the real kernel: the test knob
//! `--drop-probe-records` drops one row's records right after decoding (a kernel where the hook
//! fires nowhere useful), then real OOM kills in a test memory cgroup. The agent logs the row
//! once, counts it in `oomwatch_probe_silent_total{probe}`, `oomwatch check` reports it, and the
//! event still comes out with the fallback's data, checked against the kernel's "Killed process"
//! line. A run without the knob has the metric at 0 for every row.
//!
//! An agent sees every OOM kill of the host, also those of the other tests: the tests of this
//! file run one at a time, and the counts are checked as at least this test's kills.
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, KernelKill, Kmsg, TestCgroup};
use serde_json::Value;

/// One test of this file at a time (each one's agent would count the others' kills).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const BTF: &str = "tp_btf:mark_victim";
const TP: &str = "tracepoint:oom/mark_victim";
const EXIT: &str = "tracepoint:sched/sched_process_exit";

fn silent(metrics: &str, probe: &str) -> Option<f64> {
    metric_value(
        metrics,
        &format!("oomwatch_probe_silent_total{{probe=\"{probe}\"}}"),
    )
}

/// How many log lines say `probe` is attached but silent.
/// How many "probe attached but silent" lines the agent logged for `probe`. The log arrives
/// through a reader thread: give it a moment to catch up with the metric before counting.
fn silent_lines(agent: &Agent, probe: &str) -> usize {
    let count = || {
        agent
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.contains("probe attached but silent") && l.contains(&format!("\"{probe}\""))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    count()
}

/// One OOM kill in `cg`: its event (a kill, not a lifecycle record) and the kernel's line.
fn kill(agent: &mut Agent, cg: &TestCgroup, timeout: Duration) -> (Value, KernelKill) {
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(0);
    let line = kmsg.killed(pid, Duration::from_secs(10));
    let ev = agent.wait_event(timeout, |v| v["pid"] == pid && v["type"].is_null());
    (ev, line)
}

/// The event's victim figures are the kernel's own line's.
fn assert_kernel_figures(ev: &Value, k: &KernelKill) {
    assert_eq!(ev["comm"], k.comm.as_str(), "{ev}");
    assert_eq!(ev["anon_rss"], k.anon_rss_kb * 1024, "{ev}");
    assert_eq!(ev["file_rss"], k.file_rss_kb * 1024, "{ev}");
    assert_eq!(ev["shmem_rss"], k.shmem_rss_kb * 1024, "{ev}");
    assert_eq!(ev["total_vm"], k.total_vm_kb * 1024, "{ev}");
    assert_eq!(ev["uid"], k.uid, "{ev}");
    assert_eq!(ev["oom_score_adj"], k.oom_score_adj, "{ev}");
}

/// `oomwatch check --no-probes --json` against the agent's state directory: its Run time items.
fn check_run_time(state: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["check", "--no-probes", "--json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let sections = report["sections"].as_array().unwrap();
    let run = sections.iter().find(|s| s["name"] == "run_time").unwrap();
    run["items"].as_array().unwrap().clone()
}

#[test]
fn a_silent_mark_victim_row_and_exit_row_are_logged_once_counted_and_fall_back() {
    if !real_kernel_or_skip() {
        return;
    }
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let mut agent = Agent::start(&[
        "--state-dir",
        state_dir,
        "--drop-probe-records",
        BTF,
        "--drop-probe-records",
        EXIT,
        "--stuck-after-ms",
        "500",
    ]);
    let m = agent.get("/metrics");
    assert_eq!(silent(&m, BTF), Some(0.0), "{m}");
    let cg = TestCgroup::new(64 << 20);
    for n in 1..=2u32 {
        let (ev, line) = kill(&mut agent, &cg, Duration::from_secs(10));
        // The fallback: the tracepoint's own record, which is the kernel's line.
        assert_kernel_figures(&ev, &line);
        assert_eq!(ev["sources"]["memory"], TP, "{ev}");
        assert_ne!(ev["sources"]["tgid"], BTF, "{ev}");
        assert_eq!(ev["replayed"], false, "a live record: {ev}");
        // The exit row's fallback: the lifecycle record without kill_to_exit_ns.
        let pid = ev["pid"].clone();
        let lc = agent.wait_event(Duration::from_secs(10), |v| {
            v["type"] == "oom_kill_lifecycle" && v["pid"] == pid
        });
        assert!(lc["kill_to_exit_ns"].is_null(), "{lc}");
        let m = agent.get("/metrics");
        assert!(silent(&m, BTF) >= Some(f64::from(n)), "{m}");
        assert!(silent(&m, EXIT) >= Some(f64::from(n)), "{m}");
        assert_eq!(silent(&m, TP), Some(0.0), "{m}");
    }
    assert_eq!(cg.oom_kills(), 2, "the kernel's own count");
    // Every live kill record the agent wrote (this test's and any other on the host) lacked the
    // dropped row's record.
    agent.drain(Duration::from_millis(300));
    let live = agent
        .seen
        .iter()
        .filter(|v| v["type"].is_null() && v["replayed"] == false)
        .count();
    let m = agent.get("/metrics");
    assert_eq!(silent(&m, BTF), Some(live as f64), "{m}");
    assert_eq!(silent_lines(&agent, BTF), 1, "{}", agent.log_text());
    assert_eq!(silent_lines(&agent, EXIT), 1, "{}", agent.log_text());
    let items = check_run_time(state.path());
    let text: Vec<&str> = items
        .iter()
        .map(|i| i["message"].as_str().unwrap())
        .collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().all(|i| i["status"] == "warn"), "{items:?}");
    assert!(
        text.iter().any(|t| t.starts_with(&format!(
            "{BTF}: attached but silent after 2 OOM kill(s), per the running agent"
        ))),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.starts_with(EXIT)), "{text:?}");
}

#[test]
fn both_mark_victim_rows_silent_fall_back_to_the_kernel_log_line() {
    if !real_kernel_or_skip() {
        return;
    }
    let _serial = serial();
    let mut agent = Agent::start(&["--drop-probe-records", BTF, "--drop-probe-records", TP]);
    let cg = TestCgroup::new(64 << 20);
    // Recorded from the kill line after recovery's 3 s wait for a live record.
    let (ev, line) = kill(&mut agent, &cg, Duration::from_secs(15));
    assert_eq!(ev["replayed"], true, "{ev}");
    assert_kernel_figures(&ev, &line);
    let m = agent.get("/metrics");
    assert!(silent(&m, BTF) >= Some(1.0), "{m}");
    assert!(silent(&m, TP) >= Some(1.0), "{m}");
    assert_eq!(silent_lines(&agent, TP), 1, "{}", agent.log_text());
}

#[test]
fn a_normal_run_has_every_row_at_zero() {
    if !real_kernel_or_skip() {
        return;
    }
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&["--state-dir", state.path().to_str().unwrap()]);
    let cg = TestCgroup::new(64 << 20);
    let (ev, line) = kill(&mut agent, &cg, Duration::from_secs(10));
    assert_kernel_figures(&ev, &line);
    let pid = ev["pid"].clone();
    let lc = agent.wait_event(Duration::from_secs(15), |v| {
        v["type"] == "oom_kill_lifecycle" && v["pid"] == pid
    });
    assert!(lc["kill_to_exit_ns"].is_u64(), "{lc}");
    let m = agent.get("/metrics");
    let attached: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("oomwatch_probe_attached{") && l.ends_with(" 1"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(attached.contains(&BTF) && attached.contains(&TP), "{m}");
    for probe in &attached {
        assert_eq!(silent(&m, probe), Some(0.0), "{probe}: {m}");
    }
    let silent_series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("oomwatch_probe_silent_total{"))
        .collect();
    assert!(
        silent_series.iter().all(|l| l.ends_with(" 0")),
        "{silent_series:?}"
    );
    assert!(!agent.log_text().contains("probe attached but silent"));
    let items = check_run_time(state.path());
    assert_eq!(
        (items.len(), &items[0]["status"]),
        (1, &Value::from("info"))
    );
}
