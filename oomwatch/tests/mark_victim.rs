//! `oom:mark_victim` end to end: real OOM kills in memory cgroups made here, the real agent, and
//! every event compared field by field with the kernel's own "Killed process" line.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{kills_for, real_kernel_or_skip, Agent, KernelKill, Kmsg, TestCgroup};
use oomwatch_testkit::oracle::fields::{self, KillCount};
use serde_json::Value;

const LIMIT: u64 = 64 << 20;
const WAIT: Duration = Duration::from_secs(10);

fn for_pid(pid: i32) -> impl Fn(&Value) -> bool {
    move |v| v["pid"] == pid
}

/// Every field the kernel printed, compared with the agent's event for the same pid, with the
/// assertions `vm-test` runs on its guests' events (`fields = kernel`, `tgid`, the cgroup).
fn assert_matches_kernel(ev: &Value, k: &common::KernelKill, cgroup: &str) {
    let mut diff = fields::match_kernel(ev, Some(&k.record));
    diff.extend(fields::tgid_is_pid(ev));
    diff.extend(fields::cgroup_is(ev, Some(cgroup)));
    assert!(
        diff.is_empty(),
        "event differs from the kernel's record:\n{}\nevent: {ev}",
        diff.join("\n")
    );
}

#[test]
fn kill_matches_kernel_log_and_is_counted() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(0);
    let kernel = kmsg.killed(pid, WAIT);
    let ev = agent.wait_event(WAIT, for_pid(pid));
    assert_matches_kernel(&ev, &kernel, &cg.path);
    assert!(
        kernel.anon_rss_kb > 32 * 1024,
        "the victim held most of the limit: {kernel:?}"
    );
    assert_eq!(ev["sources"]["memory"], "tracepoint:oom/mark_victim");
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    assert!(ev["ktime_ns"].as_u64().unwrap() > 0);
    assert_eq!(
        ev["trigger"]["pid"], pid,
        "tail's own allocation invoked the killer"
    );
    let sysctl = |n: &str| -> i64 {
        let text = std::fs::read_to_string(format!("/proc/sys/vm/{n}")).unwrap();
        text.trim().parse().unwrap()
    };
    assert_eq!(ev["panic_on_oom"], sysctl("panic_on_oom"));
    assert_eq!(
        ev["oom_kill_allocating_task"],
        sysctl("oom_kill_allocating_task")
    );
    assert_eq!(cg.oom_kills(), 1);

    let metrics = agent.get("/metrics");
    assert_eq!(
        kills_for(&metrics, "tail", &cg.path),
        Some(1.0),
        "{metrics}"
    );
    assert!(metrics.contains("oomwatch_probe_attached{probe=\"tracepoint:oom/mark_victim\"} 1"));
    assert!(agent.get("/healthz").ends_with("ok\n"));
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}

#[test]
fn twenty_kills_make_exactly_twenty_events() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    let mut pids = Vec::new();
    for _ in 0..20 {
        let pid = cg.oom_kill(0);
        let kernel = kmsg.killed(pid, WAIT);
        let ev = agent.wait_event(WAIT, for_pid(pid));
        assert_matches_kernel(&ev, &kernel, &cg.path);
        pids.push(pid);
    }
    agent.drain(Duration::from_millis(500));
    let ours: Vec<Value> = agent
        .seen
        .iter()
        // Events only: follow-up lines (`type`, e.g. oom_kill_lifecycle) share the pid.
        .filter(|v| v["type"].is_null() && v["cgroup"] == cg.path.as_str())
        .cloned()
        .collect();
    let victims: Vec<i64> = pids.iter().map(|&p| i64::from(p)).collect();
    // One live event per victim, no duplicates, and the kernel counted 20 kills in the cgroup:
    // `vm-test`'s "one event per victim" and "memory.events" checks.
    let named: Vec<(i64, &str)> = victims.iter().map(|&p| (p, cg.path.as_str())).collect();
    let mut problems = fields::one_event_per_victim(&named, &ours);
    problems.extend(
        KillCount {
            cgroup: &cg.path,
            oom_kill: Some(i64::try_from(cg.oom_kills()).unwrap()),
            killed: &victims,
            events: ours.len(),
        }
        .problems(),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(victims.len(), 20);
    let metrics = agent.get("/metrics");
    assert_eq!(kills_for(&metrics, "tail", &cg.path), Some(20.0));
    report_latency(&agent, &pids);
    assert_eq!(
        agent.stop(libc::SIGINT),
        Some(0),
        "SIGINT detaches and exits 0"
    );
}

#[test]
fn oom_score_adj_500_is_reported() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(500);
    let kernel = kmsg.killed(pid, WAIT);
    assert_eq!(kernel.oom_score_adj, 500);
    let ev = agent.wait_event(WAIT, for_pid(pid));
    assert_matches_kernel(&ev, &kernel, &cg.path);
    assert_eq!(ev["oom_score_adj"], 500);
}

#[test]
fn pid_only_kernels_fill_from_proc_or_leave_absent() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--force-pid-only"]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    // Not reaped until the agent has reported it: `/proc/<pid>` stays (a zombie at worst), so
    // what the pid-only path reads from it is there to read.
    let mut victim = cg.command_hog(250).spawn().expect("spawn tail");
    let pid = i32::try_from(victim.id()).unwrap();
    let kernel = kmsg.killed(pid, WAIT);
    let ev = agent.wait_event(WAIT, for_pid(pid));
    let status = victim.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    // Of the victim, the trace record gave the pid and nothing else; the tp_btf row is off.
    assert_eq!(ev["sources"]["pid"], "tracepoint:oom/mark_victim", "{ev}");
    for group in [
        "tgid",
        "comm",
        "uid",
        "memory",
        "pgtables",
        "oom_score_adj",
        "cgroup",
    ] {
        let src = ev["sources"][group].as_str().unwrap_or("");
        assert!(
            !src.contains("mark_victim"),
            "{group} from {src} on the pid-only path: {ev}"
        );
    }
    // What `/proc/<pid>/status` and `oom_score_adj` hold while the task is not reaped, alive or
    // zombie: filled from procfs, equal to the kernel's record.
    for (field, group, want) in [
        ("tgid", "tgid", Value::from(kernel.pid)),
        ("comm", "comm", Value::from(kernel.comm.as_str())),
        ("uid", "uid", Value::from(kernel.uid)),
        (
            "oom_score_adj",
            "oom_score_adj",
            Value::from(kernel.oom_score_adj),
        ),
    ] {
        assert_eq!(ev[field], want, "{field}: {ev}");
        assert_eq!(ev["sources"][group], "procfs", "{field}: {ev}");
    }
    assert_eq!(kernel.oom_score_adj, 250);
    // Memory: the kernel's own "Killed process" line (the agent reads the kernel log), else
    // `/proc` if it still showed the task's memory when the agent read it; never a wrong value.
    memory_from_the_line_or_proc(&ev, &kernel);
    if ev["cgroup"].is_null() {
        assert!(ev["sources"]["cgroup"].is_null(), "{ev}");
    } else {
        assert_eq!(ev["cgroup"], cg.path.as_str(), "{ev}");
        let src = ev["sources"]["cgroup"].as_str().unwrap();
        assert!(["procfs:cgroup", "kmsg:oom_report"].contains(&src), "{ev}");
    }
    let log = agent.log_text();
    assert!(log.contains("pid-only format"), "{log}");
    assert!(log.contains("disabled by --force-pid-only"), "{log}");
}

#[test]
fn failed_kernel_reads_are_counted_and_logged_at_debug() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--inject-read-fault"]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(0);
    let kernel = kmsg.killed(pid, WAIT);
    let ev = agent.wait_event(WAIT, for_pid(pid));
    // The faulting read only loses the BTF copy of oom_score_adj; the trace record still has it.
    assert_matches_kernel(&ev, &kernel, &cg.path);
    let metrics = agent.get("/metrics");
    let errors = common::metric_value(&metrics, "oomwatch_ebpf_read_errors_total").unwrap();
    assert!(errors >= 1.0, "{metrics}");
    std::thread::sleep(Duration::from_millis(200));
    let log = agent.log_text();
    assert!(
        log.contains("kernel read of signal_struct.oom_score_adj failed"),
        "aya-log message from the eBPF side missing:\n{log}"
    );
}

/// Prints kernel→JSON latency (from `bpf_ktime_get_ns` in the record to the line being written)
/// as the agent logged it at debug level. A measurement for the reader, not an assertion.
fn report_latency(agent: &Agent, pids: &[i32]) {
    let mut us: Vec<u64> = agent
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "event written")
        .filter(|v| pids.iter().any(|&p| v["fields"]["pid"] == p))
        .filter_map(|v| v["fields"]["latency_us"].as_u64())
        .collect();
    us.sort_unstable();
    if let (Some(min), Some(max)) = (us.first(), us.last()) {
        eprintln!(
            "kernel->JSON latency over {} kills: min {min} us, p50 {} us, max {max} us",
            us.len(),
            us[us.len() / 2]
        );
    }
}

#[test]
fn tp_btf_alone_still_reports_every_victim() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--disable-probe", "tracepoint:oom/mark_victim"]);
    let cg = TestCgroup::new(LIMIT);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(300);
    let kernel = kmsg.killed(pid, WAIT);
    let ev = agent.wait_event(WAIT, for_pid(pid));
    // Identity, oom_score_adj and cgroup come from the task_struct at the kill.
    assert_eq!(ev["sources"]["pid"], "tp_btf:mark_victim", "{ev}");
    assert_eq!(ev["tgid"], pid);
    assert_eq!(ev["comm"], kernel.comm.as_str());
    assert_eq!(ev["oom_score_adj"], 300);
    assert_eq!(ev["sources"]["oom_score_adj"], "tp_btf:mark_victim");
    assert_eq!(ev["cgroup"], cg.path.as_str());
    assert_eq!(ev["sources"]["cgroup"], "cgroupfs");
    // Memory is not in the task read: from the kernel's line, or /proc while the victim was
    // there, or absent.
    memory_from_the_line_or_proc(&ev, &kernel);
}

/// Without the trace record's memory: the "Killed process" line's figures, equal to the
/// kernel's; else `/proc`'s (non-zero); else none.
fn memory_from_the_line_or_proc(ev: &Value, kernel: &KernelKill) {
    match ev["sources"]["memory"].as_str() {
        Some("kmsg:oom_report") => {
            assert_eq!(ev["anon_rss"], kernel.anon_rss_kb * 1024, "{ev}");
            assert_eq!(ev["file_rss"], kernel.file_rss_kb * 1024, "{ev}");
        }
        Some("procfs") => assert!(ev["anon_rss"].as_u64().unwrap() > 0, "{ev}"),
        None => assert!(ev["anon_rss"].is_null(), "{ev}"),
        Some(other) => panic!("memory from {other}: {ev}"),
    }
}
