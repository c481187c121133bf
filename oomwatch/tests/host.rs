//! Host collectors, node_exporter style: fixture trees under `tests/fixtures/host/<name>/`
//! (a fake `/proc` and `/sys`) rendered with `prometheus::TextEncoder`, minus the
//! non-deterministic duration gauges, and compared with `tests/golden/host-<name>.prom`
//! (regenerate with `UPDATE_GOLDEN=1`). Each golden file is also linted with
//! `promtool check metrics`. A last test reads this machine's real files.
mod common;

use std::path::PathBuf;

use oomwatch::host::{kernel_oom_kills, HostCollectors, HostSnapshot};
use prometheus::proto::MetricFamily;

const DURATION: &str = "oomwatch_host_collector_duration_seconds";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/host")
        .join(name)
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/host-{name}.prom"))
}

/// `basic`: one NUMA node, 8 GiB, PSI, THP madvise, sane sysctls, two v2 memory cgroups
/// watched (plus one whose directory is gone).
fn basic() -> HostCollectors {
    let h = HostCollectors::new(fixture("basic")).with_page_size(4096);
    h.watch_memcg(
        "sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/pod-a".into(),
        "/kubepods.slice/kubepods-burstable.slice/pod-a".into(),
    );
    h.watch_memcg(
        "sys/fs/cgroup/system.slice/app.service".into(),
        "/system.slice/app.service".into(),
    );
    h.watch_memcg(
        "sys/fs/cgroup/kubepods.slice/pod-gone".into(),
        "/kubepods.slice/pod-gone".into(),
    );
    h
}

/// `numa-risky`: two NUMA nodes, 64 GiB, no PSI, THP never, panic_on_oom=2,
/// oom_kill_allocating_task=1, oom_dump_tasks=0, overcommit_memory=2 at 96% of CommitLimit,
/// min_free_kbytes 4 GiB; one v1 memory cgroup watched with capacity 1 (one eviction).
fn numa_risky() -> HostCollectors {
    let root = fixture("numa-risky");
    let h = HostCollectors::new(&root)
        .with_page_size(4096)
        .with_memcg_capacity(1);
    h.watch_memcg("sys/fs/cgroup/memory/old".into(), "/old".into());
    // Absolute: used as given.
    h.watch_memcg(
        root.join("sys/fs/cgroup/memory/batch/job-7"),
        "/batch/job-7".into(),
    );
    h
}

fn encode(fams: &[MetricFamily]) -> String {
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(fams, &mut out)
        .expect("encode");
    out
}

/// The deterministic part of a scrape.
fn render(h: &HostCollectors) -> String {
    let mut fams = h.collect();
    fams.retain(|f| f.name() != DURATION);
    encode(&fams)
}

fn check_golden(name: &str, got: &str) {
    common::check_golden(&golden_path(name), got, "host");
}

#[test]
fn collectors_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HostCollectors>();
}

#[test]
fn basic_matches_golden_file() {
    check_golden("basic", &render(&basic()));
}

#[test]
fn numa_risky_matches_golden_file() {
    check_golden("numa-risky", &render(&numa_risky()));
}

#[test]
fn every_collector_succeeds_on_the_fixtures_and_reports_duration() {
    for h in [basic(), numa_risky()] {
        let fams = h.collect();
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "families sorted by name");
        for fam in ["oomwatch_host_collector_success", DURATION] {
            let f = fams.iter().find(|f| f.name() == fam).unwrap();
            let collectors: Vec<&str> = f
                .get_metric()
                .iter()
                .map(|m| m.get_label()[0].value())
                .collect();
            assert_eq!(collectors, oomwatch::host::COLLECTORS);
            if fam != DURATION {
                assert!(f
                    .get_metric()
                    .iter()
                    .all(|m| m.get_gauge().get_value() == 1.0));
            }
        }
        assert!(h.snapshot().collector_errors.is_empty());
    }
}

fn codes(s: &HostSnapshot) -> Vec<&'static str> {
    s.warnings().iter().map(|w| w.code).collect()
}

#[test]
fn basic_snapshot_and_warnings() {
    let s = basic().snapshot();
    assert_eq!(codes(&s), Vec::<&str>::new(), "{:#?}", s.warnings());
    assert_eq!(s.min_free_kbytes, Some(67_584));
    // lowmem = (3840-38) + (772915-8109) + (1280000-14000) pages of 4 KiB = 8138432 kB.
    assert_eq!(s.min_free_default_kbytes, Some(11_411));
    assert_eq!(s.min_free_thp_recommended_kbytes, Some(67_584));
    assert_eq!(s.thp_enabled, Some(true));
    assert_eq!(s.mem_total_bytes, Some(8_227_020 * 1024));
    assert_eq!(s.psi_supported, Some(true));
    assert_eq!(s.psi_some.map(|p| p.avg10_percent), Some(1.25));
    assert_eq!(s.numa_nodes.len(), 1);
    assert_eq!(s.kernel_oom_kills, Some(3));
    // The vanished cgroup was dropped at the first read.
    let h = basic();
    h.collect();
    assert_eq!(h.with_memcg(|m| m.len()), 2);
}

#[test]
fn numa_risky_snapshot_and_warnings() {
    let s = numa_risky().snapshot();
    assert_eq!(
        codes(&s),
        [
            "panic_on_oom_always",
            "oom_kill_allocating_task",
            "overcommit_near_limit",
            "min_free_kbytes_high",
            "oom_dump_tasks_off",
        ],
        "{:#?}",
        s.warnings()
    );
    let w = s.warnings();
    for w in &w {
        println!("{}: {}", w.code, w.message);
    }
    assert!(
        w[2].message.contains("96% of CommitLimit"),
        "{}",
        w[2].message
    );
    assert!(
        w[3].message.contains("vm.min_free_kbytes=4194304"),
        "{}",
        w[3].message
    );
    assert_eq!(s.psi_supported, Some(false));
    assert_eq!(s.psi_some, None);
    assert_eq!(s.thp_enabled, Some(false));
    assert_eq!(s.min_free_thp_recommended_kbytes, None);
    let nodes: Vec<(u32, Option<u64>)> = s
        .numa_nodes
        .iter()
        .map(|(n, m)| (*n, m.free_bytes))
        .collect();
    assert_eq!(
        nodes,
        [(0, Some(500_000 * 1024)), (1, Some(700_000 * 1024))]
    );
    assert_eq!(kernel_oom_kills(&fixture("numa-risky")).unwrap(), 42);
}

#[test]
fn a_failing_collector_reports_zero_and_leaves_its_metrics_out() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("proc/sys/vm/panic_on_oom", "two\n"); // garbled: sysctl fails
    write("proc/sys/vm/oom_dump_tasks", "1\n");
    write("proc/meminfo", "MemFree: 1 kB\n"); // no MemTotal: meminfo fails
    write(
        "proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
    );
    write("proc/vmstat", "oom_kill 9\n");
    write("cg/ok/memory.events", "oom 1\noom_kill 1\n");
    std::fs::create_dir_all(dir.path().join("cg/not-memcg")).unwrap();
    let h = HostCollectors::new(dir.path());
    h.watch_memcg("cg/ok".into(), "/ok".into());
    h.watch_memcg("cg/not-memcg".into(), "/not-memcg".into());

    let fams = h.collect();
    let success: Vec<(String, f64)> = fams
        .iter()
        .find(|f| f.name() == "oomwatch_host_collector_success")
        .unwrap()
        .get_metric()
        .iter()
        .map(|m| {
            (
                m.get_label()[0].value().to_owned(),
                m.get_gauge().get_value(),
            )
        })
        .collect();
    let want: Vec<(String, f64)> = [
        ("memcg_events", 0.0),
        ("memcg_headroom", 1.0),
        ("meminfo", 0.0),
        ("psi", 1.0),
        ("sysctl", 0.0),
        ("vmstat", 1.0),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    assert_eq!(success, want);
    let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("oomwatch_vm_")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("oomwatch_memory_total")));
    assert!(names.contains(&"oomwatch_kernel_oom_kills_total"));
    // memcg_events is partial: the readable cgroup is still exposed.
    let kills = fams
        .iter()
        .find(|f| f.name() == "oomwatch_memcg_oom_kill_events_total")
        .unwrap();
    assert_eq!(kills.get_metric().len(), 1);

    let s = h.snapshot();
    let failed: Vec<&str> = s.collector_errors.keys().copied().collect();
    assert_eq!(failed, ["meminfo", "sysctl"], "snapshot leaves memcg out");
    assert!(s.collector_errors["sysctl"].contains("panic_on_oom"));
    assert_eq!(s.oom_dump_tasks, None, "a failed collector fills nothing");
    assert_eq!(s.kernel_oom_kills, Some(9));
}

#[test]
fn promtool_check_metrics_reports_nothing() {
    // The rendered text (identical to the golden files when those tests pass), and a real
    // scrape of this machine with its duration gauges.
    let real = encode(&HostCollectors::new("/").collect());
    for (name, text) in [
        ("basic", render(&basic())),
        ("numa-risky", render(&numa_risky())),
        ("real /", real),
    ] {
        if let Some(report) = common::promtool_report(&text) {
            panic!("promtool check metrics ({name}): {report}\n--- input ---\n{text}");
        }
    }
}

/// This machine's real files. Every collector must succeed on any Linux: a file that is
/// absent because the kernel lacks the feature (no `/proc/pressure` when PSI is off, no
/// `/sys/devices/system/node` without NUMA sysfs, a sysctl newer than the kernel, no
/// `oom_kill` line before 4.13) only leaves its values out. Only an unreadable or garbled
/// file, or a missing `/proc/meminfo`, `/proc/vmstat` or `/proc/sys/vm`, fails a collector.
/// No memory cgroup is watched, so `memcg_events` has nothing to fail on.
#[test]
fn real_host_files_are_read_and_consistent() {
    let host = HostCollectors::new("/");
    let before = real_vmstat_oom_kills();
    let fams = host.collect();
    let s = host.snapshot();
    let after = real_vmstat_oom_kills();

    let success = fams
        .iter()
        .find(|f| f.name() == "oomwatch_host_collector_success")
        .expect("success family");
    for m in success.get_metric() {
        assert_eq!(
            m.get_gauge().get_value(),
            1.0,
            "collector {} failed: {:?}",
            m.get_label()[0].value(),
            s.collector_errors
        );
    }
    assert!(s.collector_errors.is_empty(), "{:?}", s.collector_errors);

    let total = s.mem_total_bytes.expect("MemTotal");
    let available = s.mem_available_bytes.expect("MemAvailable (Linux 3.14+)");
    assert!(
        available <= total,
        "MemAvailable {available} > MemTotal {total}"
    );
    assert!(s.commit_limit_bytes.expect("CommitLimit") > 0);
    assert!(s.committed_as_bytes.is_some());
    for (node, n) in &s.numa_nodes {
        if let (Some(free), Some(t)) = (n.free_bytes, n.total_bytes) {
            assert!(free <= t, "node {node}: MemFree {free} > MemTotal {t}");
        }
    }

    // The kernel's count can move between the reads (other tests cause real OOM kills).
    match (before, s.kernel_oom_kills, after) {
        (Some(b), Some(k), Some(a)) => assert!(b <= k && k <= a, "{b} <= {k} <= {a}"),
        (None, None, None) => println!("no oom_kill line in /proc/vmstat (kernel < 4.13)"),
        other => panic!("inconsistent oom_kill reads: {other:?}"),
    }

    let psi_file = std::path::Path::new("/proc/pressure/memory").exists();
    assert_eq!(s.psi_supported, Some(psi_file));
    if psi_file {
        assert!(s.psi_some.is_some());
    }

    let default = s
        .min_free_default_kbytes
        .expect("/proc/zoneinfo has lowmem zones");
    assert!(
        (128..=262_144).contains(&default),
        "min_free default {default} kB"
    );
    assert!(s.min_free_kbytes.is_some());
    println!(
        "min_free_kbytes {:?}, kernel default {default}, THP recommendation {:?}",
        s.min_free_kbytes, s.min_free_thp_recommended_kbytes
    );
    for w in s.warnings() {
        println!("warning {}: {}", w.code, w.message);
    }
}

fn real_vmstat_oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map(|v| v.trim().parse().expect("oom_kill value"))
}
