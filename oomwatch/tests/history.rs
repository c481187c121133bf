//! `oomwatch history`: kills still in the kernel log, in the live events' schema, checked
//! against the kernel's own "Killed process" line of a real kill.
mod common;

use std::process::Command;
use std::time::Duration;

use common::{real_kernel_or_skip, Kmsg, TestCgroup};
use serde_json::Value;

fn history(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .arg("history")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_real_kill_is_listed_with_the_kernels_values() {
    if !real_kernel_or_skip() {
        return;
    }
    let cg = TestCgroup::new(32 << 20);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(0);
    let kernel = kmsg.killed(pid, Duration::from_secs(10));

    let (code, out, err) = history(&["--json", "--since", "10m"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ev = events
        .iter()
        .find(|v| v["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not listed:\n{out}"));
    assert_eq!(ev["replayed"], true);
    assert_eq!(ev["comm"], kernel.comm.as_str());
    assert_eq!(ev["anon_rss"], kernel.anon_rss_kb * 1024);
    assert_eq!(ev["file_rss"], kernel.file_rss_kb * 1024);
    assert_eq!(ev["pgtables"], kernel.pgtables_kb * 1024);
    assert_eq!(ev["oom_score_adj"], kernel.oom_score_adj);
    assert_eq!(ev["message"], "Memory cgroup out of memory");
    assert_eq!(ev["sources"]["memory"], "kmsg:oom_report");
    // Oldest first, and only since the cut-off.
    let times: Vec<&str> = events.iter().filter_map(|v| v["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The table lists it too; a cut-off in the future lists nothing.
    let (code, table, _) = history(&[]);
    assert_eq!(code, 0);
    assert!(table.lines().next().unwrap().starts_with("TIME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string())),
        "{table}"
    );
    let (_, none, _) = history(&["--json", "--since", "2999-01-01T00:00:00Z"]);
    assert!(none.is_empty(), "{none}");
}

#[test]
fn a_bad_since_is_a_usage_error_naming_the_forms() {
    let (code, _, err) = history(&["--since", "yesterday-ish"]);
    assert_eq!(code, 2);
    assert!(err.contains("neither a duration"), "{err}");
}
