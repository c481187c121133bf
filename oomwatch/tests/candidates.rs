//! Why this victim: the candidates the kernel scored, from its own task dump, ranked and
//! scored as the kernel does, checked against the dump the kernel printed for a real OOM kill.
mod common;

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{attached, real_kernel_or_skip, Agent, Kmsg, TestCgroup};
use oomwatch_testkit::oracle::{self, candidates::Setting};
use oomwatch_testkit::page_size;

/// A shell in `cg` holding about `mib` MiB in a variable, then sleeping.
fn holder(cg: &TestCgroup, mib: u32) -> Child {
    let script = format!(
        "echo $$ > {}/cgroup.procs && x=$(head -c {}000000 /dev/zero | tr '\\0' a) && echo ready && sleep 60; echo ${{#x}}",
        cg.dir.display(),
        mib
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Where the agent's candidates come from: the first `oom_badness` row that attached, else
/// the kernel's report.
fn candidates_source(log: &str) -> &'static str {
    ["fexit:oom_badness", "kretprobe:oom_badness"]
        .into_iter()
        .find(|p| attached(log, p))
        .unwrap_or(oracle::oom::KMSG)
}

#[test]
fn candidates_are_the_kernels_dump_ranked_by_its_points() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--candidates", "5"]);
    let cg = TestCgroup::new(96 << 20);
    let mut holders: Vec<Child> = [4, 12].iter().map(|m| holder(&cg, *m)).collect();
    for h in &mut holders {
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(h.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    // The kernel rate-limits its report header; retry until one has a task dump.
    let mut attempt = 0;
    let (ev, report) = loop {
        attempt += 1;
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (kernel, _) = kmsg.invocation_of(pid, Duration::from_secs(10));
        let ev = agent.wait_event(Duration::from_secs(10), |v| v["pid"] == pid);
        let report = kernel.report(pid).expect("the kernel's report of the kill");
        if report.header || attempt == 4 {
            break (ev, report);
        }
        eprintln!("kernel report header rate-limited (attempt {attempt}); retrying in 5.5 s");
        thread::sleep(Duration::from_millis(5500));
    };
    assert!(report.header && !report.tasks.is_empty(), "{report:?}");
    let cands = ev["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("{ev}"));
    let pids: Vec<i32> = cands
        .iter()
        .map(|c| c["pid"].as_i64().unwrap() as i32)
        .collect();
    let holder_pids: Vec<i32> = holders.iter().map(|h| h.id() as i32).collect();
    // The victim first, then the two holders, the bigger one before the smaller.
    assert_eq!(pids[0], ev["pid"].as_i64().unwrap() as i32, "{ev}");
    assert_eq!(&pids[1..3], &[holder_pids[1], holder_pids[0]], "{ev}");
    // The comparison `vm-test` runs on its guests' events: the kernel's ranking of its dump,
    // each candidate's points (rss + swap + pgtables pages + adj term), rss, swap, page tables
    // and oom_score_adj equal to its row.
    let page = i64::try_from(page_size()).unwrap();
    let setting = Setting {
        source: candidates_source(&agent.log_text()),
        totalpages: (96 << 20) / page,
        page_size: page,
        top: 5,
    };
    let problems = oracle::candidates::match_dump(&ev, &report, &setting);
    assert!(problems.is_empty(), "{}\nevent: {ev}", problems.join("\n"));
    for c in cands {
        assert_eq!(c["oom_score_adj"], 0, "{c}");
        assert_eq!(c["cgroup"], cg.path.as_str(), "{c}");
    }
    assert_eq!(ev["badness"], cands[0]["points"]);
    let why = ev["explanation"].as_str().unwrap();
    assert!(
        why.contains(&format!("next: sh (pid {})", holder_pids[1])),
        "{why}"
    );
    assert!(why.contains(&format!("memcg {}", cg.path)), "{why}");
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
}
