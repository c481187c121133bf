//! `oom_kill_process`: the invocation's context on each event, compared with the kernel's own
//! "invoked oom-killer" and "oom-kill:" lines, from fentry, kprobe or (where neither may attach,
//! as on this project's CI host) the kernel's report in `/dev/kmsg`; and, with every source
//! off, each row explained and no context invented.
mod common;

use std::time::Duration;

use common::{attached, real_kernel_or_skip, Agent, KernelInvocation, Kmsg, TestCgroup};
use oomwatch_testkit::oracle::oom::{self, Setting};

const WAIT: Duration = Duration::from_secs(10);
/// The test cgroup's memory limit (`totalpages` of its OOMs).
const LIMIT: u64 = 64 << 20;

const CONTEXT_PROBES: [&str; 3] = [
    "fentry:oom_kill_process",
    "kprobe:oom_kill_process",
    "kmsg:oom_report",
];

/// One OOM kill in `cg` whose report header the kernel printed (it rate-limits the header, 10
/// per 5 s host-wide, so under other tests' kills it can be missing: try again after the
/// window): the victim's pid and the kernel's lines.
fn kill_with_report(cg: &TestCgroup) -> (i32, KernelInvocation) {
    for attempt in 1..=4 {
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (kernel, _) = kmsg.invocation_of(pid, WAIT);
        if !kernel.constraint.is_empty() {
            return (pid, kernel);
        }
        eprintln!("attempt {attempt}: kernel report header rate-limited; retrying in 5.5 s");
        std::thread::sleep(Duration::from_millis(5500));
    }
    panic!("the kernel printed no report header in 4 tries");
}

/// The context comes from the first source that attached. `/dev/kmsg` is readable here (this
/// test reads it), so `kmsg:oom_report` must be attached whatever fentry and kprobe do: on a
/// host where it is the only source (no fentry, no kprobes) the context still comes.
#[test]
fn oom_context_matches_the_kernel_or_its_absence_is_explained() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let log = agent.log_text();
    assert!(
        attached(&log, "kmsg:oom_report"),
        "/dev/kmsg is readable, but kmsg:oom_report did not attach:\n{log}"
    );
    let source = CONTEXT_PROBES
        .into_iter()
        .find(|p| attached(&log, p))
        .unwrap();

    let cg = TestCgroup::new(LIMIT);
    let (pid, kernel) = kill_with_report(&cg);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    // The probe reads the trigger's memcg; from the kernel log it is known only because the
    // victim itself allocated (the trigger is the victim's process).
    assert_eq!(ev["trigger"]["pid"], pid, "{ev}");
    let report = kernel.report(pid).expect("the kernel's report of the kill");
    assert!(report.header && !report.tasks.is_empty(), "{report:?}");
    // The comparison `vm-test` runs on its guests' events: every context field against the
    // kernel's report (badness and candidates from its task dump, no swap here).
    let page_size = i64::try_from(oomwatch_testkit::page_size()).unwrap();
    let setting = Setting {
        source,
        totalpages: i64::try_from(LIMIT).unwrap() / page_size,
        page_size,
    };
    let mut notes = Vec::new();
    let problems = oom::context(&ev, &report, Some(&cg.path), &setting, &mut notes);
    assert!(
        problems.is_empty(),
        "{}\nnotes: {notes:?}\nevent: {ev}",
        problems.join("\n")
    );
    assert!(ev["oom_id"].as_u64().unwrap() >= 1);
    assert_eq!(ev["message"], "Memory cgroup out of memory", "{ev}");
    assert_eq!(ev["chosen"]["pid"], pid, "{ev}");
    assert_eq!(ev["trigger"]["cgroup"], kernel.task_memcg.as_str(), "{ev}");
}

/// With every context source off, each row says why and the event invents no context.
#[test]
fn without_a_context_source_each_row_says_why_and_nothing_is_invented() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut args = Vec::new();
    for probe in CONTEXT_PROBES {
        args.extend(["--disable-probe", probe]);
    }
    let mut agent = Agent::start(&args);
    let log = agent.log_text();
    let cg = TestCgroup::new(LIMIT);
    let (pid, _) = kill_with_report(&cg);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    for probe in CONTEXT_PROBES {
        assert!(
            log.lines().any(|l| l.contains("probe unavailable")
                && l.contains(&format!("\"probe\":\"{probe}\""))
                && l.contains("\"reason\":")),
            "{probe} neither attached nor explained:\n{log}"
        );
    }
    for f in [
        "oom_id",
        "constraint",
        "gfp_mask",
        "order",
        "badness",
        "oom_memcg",
    ] {
        assert!(ev[f].is_null(), "{f} without a source: {ev}");
    }
    assert!(ev["sources"]["oom"].is_null(), "{ev}");
}
