//! Why this victim: the candidates the kernel scored, from its own task dump, ranked and
//! scored as the kernel does, checked against the dump the kernel printed for a real OOM kill.
mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};
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

/// The rows of the kernel's last task dump for these pids: pid -> (rss, swapents, pgtables_bytes,
/// oom_score_adj), from `dmesg`.
fn dump_rows(pids: &[i32]) -> HashMap<i32, (i64, i64, i64, i64)> {
    let out = Command::new("dmesg").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = HashMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("] [") else {
            continue;
        };
        let Some((pid, cols)) = rest.split_once(']') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        // uid tgid total_vm rss rss_anon rss_file rss_shmem pgtables_bytes swapents adj name
        let n: Vec<i64> = cols
            .split_whitespace()
            .take(10)
            .filter_map(|c| c.parse().ok())
            .collect();
        if n.len() == 10 {
            rows.insert(pid, (n[3], n[8], n[7], n[9]));
        }
    }
    rows
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
    let ev = loop {
        attempt += 1;
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        kmsg.killed(pid, Duration::from_secs(10));
        let ev = agent.wait_event(Duration::from_secs(10), |v| v["pid"] == pid);
        if !ev["candidates"].is_null() || attempt == 4 {
            break ev;
        }
        eprintln!("kernel report header rate-limited (attempt {attempt}); retrying in 5.5 s");
        thread::sleep(Duration::from_millis(5500));
    };
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
    // Points equal the kernel's own numbers from its dump: rss + swap + pgtables pages.
    let rows = dump_rows(&pids);
    let page = i64::try_from(page_size()).unwrap();
    for c in cands {
        let pid = c["pid"].as_i64().unwrap() as i32;
        let (rss, swap, pgt, adj) = rows[&pid];
        assert_eq!(adj, 0);
        assert_eq!(
            c["points"].as_i64().unwrap(),
            rss + swap + pgt / page,
            "{c}"
        );
        assert_eq!(c["rss"].as_i64().unwrap(), rss * page);
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
