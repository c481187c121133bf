use super::*;

const GIB: u64 = 1 << 30;

/// A sane 16 GiB machine: no warnings.
fn sane() -> HostSnapshot {
    HostSnapshot {
        panic_on_oom: Some(0),
        oom_kill_allocating_task: Some(0),
        oom_dump_tasks: Some(1),
        overcommit_memory: Some(0),
        min_free_kbytes: Some(16_384),
        min_free_default_kbytes: Some(16_384),
        mem_total_bytes: Some(16 * GIB),
        commit_limit_bytes: Some(8 * GIB),
        committed_as_bytes: Some(15 * GIB),
        ..HostSnapshot::default()
    }
}

fn codes(s: &HostSnapshot) -> Vec<&'static str> {
    s.warnings().iter().map(|w| w.code).collect()
}

#[test]
fn sane_machine_and_empty_snapshot_have_no_warnings() {
    assert!(codes(&sane()).is_empty(), "{:?}", sane().warnings());
    assert!(codes(&HostSnapshot::default()).is_empty());
}

#[test]
fn panic_on_oom() {
    let s = HostSnapshot {
        panic_on_oom: Some(2),
        ..sane()
    };
    assert_eq!(codes(&s), ["panic_on_oom_always"]);
    assert!(s.warnings()[0].message.contains("memory cgroup"));
    let s = HostSnapshot {
        panic_on_oom: Some(1),
        ..sane()
    };
    assert_eq!(codes(&s), ["panic_on_oom"]);
}

#[test]
fn allocating_task_and_dump_tasks() {
    let s = HostSnapshot {
        oom_kill_allocating_task: Some(1),
        oom_dump_tasks: Some(0),
        ..sane()
    };
    assert_eq!(
        codes(&s),
        ["oom_kill_allocating_task", "oom_dump_tasks_off"]
    );
}

#[test]
fn strict_overcommit_warns_only_near_the_limit() {
    let mut s = HostSnapshot {
        overcommit_memory: Some(2),
        commit_limit_bytes: Some(10 * GIB),
        committed_as_bytes: Some(9 * GIB - 1),
        ..sane()
    };
    assert!(codes(&s).is_empty());
    s.committed_as_bytes = Some(9 * GIB);
    assert_eq!(codes(&s), ["overcommit_near_limit"]);
    assert!(
        s.warnings()[0].message.contains("90% of CommitLimit"),
        "{:?}",
        s.warnings()
    );
    s.commit_limit_bytes = Some(0);
    assert_eq!(
        codes(&s),
        ["overcommit_near_limit"],
        "zero limit: no division"
    );
    s.committed_as_bytes = None;
    assert!(codes(&s).is_empty());
}

#[test]
fn always_overcommit() {
    let s = HostSnapshot {
        overcommit_memory: Some(1),
        ..sane()
    };
    assert_eq!(codes(&s), ["overcommit_always"]);
}

#[test]
fn min_free_far_above_default() {
    // 5% of 16 GiB is 838860.8 kB.
    let mut s = HostSnapshot {
        min_free_kbytes: Some(16_384 + 838_860),
        ..sane()
    };
    assert!(codes(&s).is_empty());
    s.min_free_kbytes = Some(16_384 + 838_861);
    assert_eq!(codes(&s), ["min_free_kbytes_high"]);
    s.mem_total_bytes = None;
    assert!(codes(&s).is_empty(), "no MemTotal, no rule");
}

#[test]
fn min_free_far_below_default() {
    let mut s = HostSnapshot {
        min_free_kbytes: Some(8192),
        ..sane()
    };
    assert!(codes(&s).is_empty());
    s.min_free_kbytes = Some(8191);
    assert_eq!(codes(&s), ["min_free_kbytes_low"]);
}

#[test]
fn thp_recommendation_is_the_expected_value() {
    let mut s = HostSnapshot {
        min_free_kbytes: Some(67_584),
        min_free_default_kbytes: Some(12_367),
        min_free_thp_recommended_kbytes: Some(67_584),
        mem_total_bytes: Some(GIB),
        ..sane()
    };
    assert_eq!(s.min_free_expected_kbytes(), Some(67_584));
    assert!(codes(&s).is_empty());
    // Without THP the same value is 55 MB above the default, over 5% of 1 GiB.
    s.min_free_thp_recommended_kbytes = None;
    assert_eq!(codes(&s), ["min_free_kbytes_high"]);
}

#[test]
fn human_sizes() {
    assert_eq!(human(512), "512 B");
    assert_eq!(human(1536), "1.5 KiB");
    assert_eq!(human(9 * GIB), "9.0 GiB");
    assert_eq!(human(u64::MAX), "16777216.0 TiB");
}
