//! Tests of the `vm-test` checks on a real console log of Debian's 6.1.0-56-cloud-amd64
//! (6.1.192) guest, trimmed: the agent's aya relocation DEBUG lines were dropped.

use super::*;

const FIXTURE: &str = include_str!("../tests/fixtures/vm-console-6.1.log");

/// The fixture with `from` replaced by `to` exactly once.
fn mutate(from: &str, to: &str) -> String {
    assert_eq!(FIXTURE.matches(from).count(), 1, "{from:?} must occur once");
    FIXTURE.replacen(from, to, 1)
}

fn by_name(checks: &[Check], name: &str) -> Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .clone()
}

fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
}

#[test]
fn the_real_sample_passes_every_check() {
    let checks = check_console(FIXTURE);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert_eq!(checks.len(), 11);
    assert_eq!(
        by_name(&checks, "one event per victim").detail,
        "6 events for 6 victims"
    );
    let mem = by_name(&checks, "memory.events").detail;
    assert!(
        mem.contains("/g oom_kill 4 = 4 kernel lines (3 events + 1 chosen task counted twice)"),
        "{mem}"
    );
    let probes = by_name(&checks, "probes attached").detail;
    assert!(
        probes.contains("fentry:oom_kill_process attached"),
        "{probes}"
    );
    assert!(probes.contains("tp_btf:mark_victim attached"), "{probes}");
    assert!(
        probes.contains("tracepoint:oom/mark_victim attached"),
        "{probes}"
    );
    assert!(
        by_name(&checks, "oom context")
            .detail
            .ends_with("oom_id 1, 2, 3, 4 (shared by 3 victims)"),
        "{checks:#?}"
    );
    assert_eq!(guest_uptime(FIXTURE), Some(6.61));
}

#[test]
fn sections_and_kernel_lines_are_parsed() {
    let c = Console::parse(FIXTURE);
    assert!(c.done);
    for s in SECTIONS {
        assert!(c.sections.contains_key(s), "section {s}");
    }
    assert_eq!(c.section("events").len(), 6);
    let kills = kernel_kills(c.section("dmesg"));
    // 3 in /t; in /g the chosen dd (103) is printed twice, plus two sleepers.
    let pids: Vec<(i64, &str)> = kills.iter().map(|k| (k.pid, k.phase.as_str())).collect();
    assert_eq!(
        pids,
        [
            (94, "t"),
            (95, "t"),
            (96, "t"),
            (103, "g"),
            (98, "g"),
            (99, "g"),
            (103, "g")
        ]
    );
    let k = &kills[0];
    assert_eq!(k.comm, "dd");
    assert_eq!(k.numbers["total-vm"], 104660);
    assert_eq!(k.numbers["anon-rss"], 65352);
    assert_eq!(k.numbers["file-rss"], 4);
    assert_eq!(k.numbers["shmem-rss"], 1580);
    assert_eq!(k.numbers["UID"], 0);
    assert_eq!(k.numbers["pgtables"], 172);
    assert_eq!(kills[2].numbers["oom_score_adj"], 500);
}

#[test]
fn comm_with_spaces_and_parentheses_is_kept_whole() {
    let k = parse_killed(
        "[ 1.0] Memory cgroup out of memory: Killed process 7 (my (odd) cmd) total-vm:10kB, \
         anon-rss:1kB, file-rss:2kB, shmem-rss:3kB, UID:1000 pgtables:4kB oom_score_adj:-5",
    )
    .unwrap();
    assert_eq!(k.pid, 7);
    assert_eq!(k.comm, "my (odd) cmd");
    assert_eq!(k.numbers["UID"], 1000);
    assert_eq!(k.numbers["oom_score_adj"], -5);
    assert_eq!(parse_killed("oom_reaper: reaped process 7 (dd)"), None);
}

#[test]
fn a_wrong_number_gives_a_per_field_diff() {
    let text = mutate(
        r#""pid":94,"tgid":94,"comm":"dd","uid":0,"total_vm":107171840,"anon_rss":66920448"#,
        r#""pid":94,"tgid":94,"comm":"dd","uid":0,"total_vm":107171840,"anon_rss":66920449"#,
    );
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["fields = kernel"]);
    assert_eq!(
        by_name(&checks, "fields = kernel").detail,
        "pid 94 anon_rss: agent 66920449 kernel 66920448"
    );
}

#[test]
fn null_fields_and_wrong_comm_are_reported() {
    let text = mutate(
        r#""pid":94,"tgid":94,"comm":"dd","uid":0,"#,
        r#""pid":94,"tgid":null,"comm":"d","uid":null,"#,
    );
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["fields = kernel", "tgid"]);
    let detail = by_name(&checks, "fields = kernel").detail;
    assert_eq!(
        detail,
        "pid 94 comm: agent \"d\" kernel \"dd\"\npid 94 uid: agent null kernel 0"
    );
    assert_eq!(
        by_name(&checks, "tgid").detail,
        "pid 94 tgid: agent null expected 94"
    );
}

#[test]
fn a_missing_or_wrong_cgroup_path_fails() {
    let text = mutate(
        r#""oom_score_adj":0,"cgroup":"/t","cgroup_id":23,"trigger":{"pid":94"#,
        r#""oom_score_adj":0,"cgroup":null,"cgroup_id":23,"trigger":{"pid":94"#,
    );
    let checks = check_console(&text);
    assert!(failed(&checks).contains(&"cgroup v2 path"));
    assert_eq!(
        by_name(&checks, "cgroup v2 path").detail,
        r#"pid 94 cgroup: agent null expected /t (source "cgroupfs")"#
    );
    let text = mutate(
        r#""oom_score_adj":0,"cgroup":"/t","cgroup_id":23,"trigger":{"pid":94"#,
        r#""oom_score_adj":0,"cgroup":"/sys/fs/cgroup/t","cgroup_id":23,"trigger":{"pid":94"#,
    );
    let checks = check_console(&text);
    assert!(failed(&checks).contains(&"cgroup v2 path"));
    assert_eq!(
        by_name(&checks, "cgroup v2 path").detail,
        r#"pid 94 cgroup: agent "/sys/fs/cgroup/t" expected /t (source "cgroupfs")"#
    );
}

#[test]
fn a_missing_or_duplicated_event_fails() {
    let c = Console::parse(FIXTURE);
    let line98 = c.sections["events"]
        .iter()
        .find(|l| l.contains(r#""pid":98,"#))
        .unwrap()
        .clone();
    let missing = mutate(&format!("{line98}\n"), "");
    let checks = check_console(&missing);
    assert_eq!(
        failed(&checks),
        ["one event per victim", "memory.events", "metrics"]
    );
    assert_eq!(
        by_name(&checks, "one event per victim").detail,
        "pid 98 (/g): 0 events"
    );
    let doubled = mutate(&format!("{line98}\n"), &format!("{line98}\n{line98}\n"));
    let checks = check_console(&doubled);
    assert!(failed(&checks).contains(&"one event per victim"));
    assert_eq!(
        by_name(&checks, "one event per victim").detail,
        "pid 98 (/g): 2 events"
    );
}

#[test]
fn memory_events_must_match_the_kernel_lines() {
    let text = mutate("oom_kill 3\n", "oom_kill 2\n");
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["memory.events"]);
    assert_eq!(
        by_name(&checks, "memory.events").detail,
        "/t: memory.events oom_kill 2, kernel 'Killed process' lines 3 (3 distinct pids), \
         agent events with cgroup /t: 3"
    );
}

#[test]
fn an_unavailable_probe_is_reported_with_its_reason() {
    let text = mutate(
        r#""message":"probe attached","probe":"tp_btf:mark_victim","reads":"tgid, memory cgroup, oom_score_adj""#,
        r#""message":"probe unavailable","probe":"tp_btf:mark_victim","reason":"no BTF""#,
    );
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["probes attached"]);
    assert_eq!(
        by_name(&checks, "probes attached").detail,
        "tp_btf:mark_victim: unavailable: no BTF"
    );
}

#[test]
fn no_oom_kill_process_probe_fails_with_what_the_log_said() {
    let text = mutate(
        r#""message":"probe attached","probe":"fentry:oom_kill_process","reads":"constraint, gfp_mask, order, totalpages, badness, chosen task, OOM memcg, trigger""#,
        r#""message":"probe unavailable","probe":"fentry:oom_kill_process","reason":"EPERM""#,
    );
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["probes attached"]);
    assert_eq!(
        by_name(&checks, "probes attached").detail,
        "no oom_kill_process probe attached (fentry:oom_kill_process: unavailable: EPERM)"
    );
}

#[test]
fn a_bad_exit_status_fails() {
    let text = mutate(
        "@@OWVM BEGIN agent-exit@@\n0\n",
        "@@OWVM BEGIN agent-exit@@\n1\n",
    );
    let checks = check_console(&text);
    assert_eq!(failed(&checks), ["agent exit 0"]);
}

#[test]
fn a_truncated_console_fails_without_panicking() {
    let cut = &FIXTURE[..FIXTURE.find("@@OWVM BEGIN dmesg@@").unwrap()];
    let checks = check_console(cut);
    let bad = failed(&checks);
    for name in ["guest finished", "victims killed", "agent exit 0"] {
        assert!(bad.contains(&name), "{name} should fail: {bad:?}");
    }
    assert!(by_name(&checks, "guest finished")
        .detail
        .contains("section dmesg missing"));
    assert_eq!(guest_uptime(cut), None);
}

#[test]
fn agent_problems_lists_warnings_and_plain_text() {
    let log = [
        r#"{"level":"INFO","fields":{"message":"ok"}}"#.to_string(),
        r#"{"level":"WARN","fields":{"message":"could not"}}"#.to_string(),
        "Error: no probe could attach".to_string(),
        String::new(),
    ];
    assert_eq!(agent_problems(&log), log[1..3]);
}
