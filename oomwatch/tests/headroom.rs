//! Headroom of a real memory cgroup, as the running agent exposes it: a 64 MiB cgroup holding a
//! helper process that touched 56 MiB, checked against the kernel's own files
//! (`memory.limit_in_bytes`/`memory.max`, `memory.usage_in_bytes`/`memory.current`,
//! `/proc/<pid>/oom_score`).
//!
//! The helper is this test binary re-run (`alloc_helper`); it joins the cgroup before it execs,
//! so every page it touches is charged there (cgroup v1 does not move charges with a task).
mod common;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::{real_kernel_or_skip, Agent, TestCgroup};
use oomwatch_testkit::MemoryHolder;

const LIMIT: u64 = 64 << 20;
const HELD_MIB: usize = 56;

/// Not a test of its own: the body of the helper (does nothing unless asked).
#[test]
fn alloc_helper() {
    oomwatch_testkit::mem::hold_memory_if_asked();
}

/// The sample line of `family` whose `cgroup` label is `cgroup`: its labels and value.
fn sample(metrics: &str, family: &str, cgroup: &str) -> Option<(Vec<(String, String)>, f64)> {
    let want = format!("cgroup=\"{cgroup}\"");
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(family)?.strip_prefix('{')?;
        let (labels, value) = rest.rsplit_once("} ")?;
        let pairs: Vec<(String, String)> = labels
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.to_string(), v.trim_end_matches('"').to_string()))
            })
            .collect();
        if !labels.split(',').any(|x| x == want) {
            return None;
        }
        Some((pairs, value.trim().parse().ok()?))
    })
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn a_cgroup_near_its_limit_is_exposed_with_its_next_victim() {
    if !real_kernel_or_skip() {
        return;
    }
    let cg = TestCgroup::new(LIMIT);
    // Declared after the cgroup: killed before the cgroup is removed.
    let helper = MemoryHolder::start(HELD_MIB, 0, Some(&cg));
    // Walked in the background every 500 ms (the default is 30 s).
    let agent = Agent::start(&[
        "--headroom-cgroups",
        "1000",
        "--headroom-interval-ms",
        "500",
    ]);

    // The kernel's usage moves a little (per-CPU charge batches): retry until the scrape and
    // the files read around it agree, within a bound.
    let end = Instant::now() + Duration::from_secs(30);
    let (metrics, usage_before, usage_after) = loop {
        let before = cg.read_u64("memory.usage_in_bytes", "memory.current");
        let m = agent.get("/metrics");
        let after = cg.read_u64("memory.usage_in_bytes", "memory.current");
        if sample(&m, "oomwatch_memcg_usage_bytes", &cg.path).is_some() || Instant::now() > end {
            break (m, before, after);
        }
        thread::sleep(Duration::from_millis(500));
    };
    let get = |family: &str| {
        sample(&metrics, family, &cg.path)
            .unwrap_or_else(|| panic!("no {family} for {} in\n{metrics}", cg.path))
    };

    let (labels, limit) = get("oomwatch_memcg_limit_bytes");
    assert_eq!(limit, LIMIT as f64);
    assert_eq!(
        limit as u64,
        cg.read_u64("memory.limit_in_bytes", "memory.max")
    );
    // Outside Kubernetes the identity labels are present and empty.
    for l in ["namespace", "pod", "container", "pod_uid"] {
        assert!(
            labels.iter().any(|(k, v)| k == l && v.is_empty()),
            "{l}: {labels:?}"
        );
    }
    let (_, usage) = get("oomwatch_memcg_usage_bytes");
    let (lo, hi) = (usage_before.min(usage_after), usage_before.max(usage_after));
    assert!(
        usage >= lo as f64 * 0.9 && usage <= hi as f64 * 1.1,
        "usage {usage} vs the kernel's {usage_before}..{usage_after}"
    );
    assert!(usage >= (HELD_MIB << 20) as f64, "usage {usage}");
    let (_, headroom) = get("oomwatch_memcg_headroom_bytes");
    assert_eq!(headroom, limit - usage);
    let (_, ratio) = get("oomwatch_memcg_usage_ratio");
    assert!(ratio > 0.8 && ratio <= 1.0, "ratio {ratio}");
    assert!((ratio - usage / limit).abs() < 1e-12, "ratio {ratio}");
    let (_, ws) = get("oomwatch_memcg_working_set_bytes");
    assert!(
        ws <= usage && ws >= (HELD_MIB << 20) as f64 * 0.9,
        "working set {ws}"
    );

    let (victim, one) = get("oomwatch_memcg_next_victim_info");
    assert_eq!(one, 1.0);
    assert_eq!(label(&victim, "pid"), helper.pid.to_string(), "{victim:?}");
    let comm = fs::read_to_string(format!("/proc/{}/comm", helper.pid)).unwrap();
    assert_eq!(label(&victim, "comm"), comm.trim());
    let score = fs::read_to_string(format!("/proc/{}/oom_score", helper.pid)).unwrap();
    assert_eq!(label(&victim, "oom_score"), score.trim(), "{victim:?}");

    for series in [
        "oomwatch_host_collector_success{collector=\"memcg_headroom\"} 1",
        "oomwatch_memcg_headroom_scans_truncated_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "no {series}");
    }
    drop(agent);
}
