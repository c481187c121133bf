//! Tests of the `vm-test` checks on a real console log of Debian's 6.1.0-56-cloud-amd64
//! (6.1.192) guest with the three agents (fentry, kprobe, kmsg), as `cargo xtask vm-test`
//! saved it in `target/vm/<release>/console.log`.

use super::*;

pub(crate) const FIXTURE: &str = include_str!("../tests/fixtures/vm-console-6.1.log");

/// `text` with `from` replaced by `to` exactly once.
pub(crate) fn mutate_in(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// `text` with `from` replaced by `to` in the event line of `pid` in section `section` only.
pub(crate) fn mutate_event(text: &str, section: &str, pid: i64, from: &str, to: &str) -> String {
    let tag = format!(r#""host":"oomwatch-vm","pid":{pid},"#);
    let mut current = String::new();
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if let Some(name) = l.strip_prefix("@@OWVM BEGIN ") {
                current = name.trim_end_matches('@').to_string();
            }
            if current == section && l.contains(&tag) {
                assert!(
                    l.contains(from),
                    "{from:?} not in the {section} event of {pid}"
                );
                hits += 1;
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(hits, 1, "one {section} event for pid {pid}");
    out.join("\n")
}

pub(crate) fn agent_checks<'a>(r: &'a Report, agent: &str) -> &'a [Check] {
    r.agents
        .iter()
        .find(|(a, _)| a.name == agent)
        .map(|(_, c)| c.as_slice())
        .unwrap_or_else(|| panic!("no agent {agent}"))
}

pub(crate) fn by_name(checks: &[Check], name: &str) -> Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .clone()
}

/// The check `name` of `agent` ("" for the boot's own).
pub(crate) fn get(r: &Report, agent: &str, name: &str) -> Check {
    match agent {
        "" => by_name(&r.boot, name),
        a => by_name(agent_checks(r, a), name),
    }
}

#[test]
fn every_check_of_every_agent_passes_on_the_real_sample() {
    let r = check_console(FIXTURE);
    assert!(r.failed().is_empty(), "{r:#?}");
    assert_eq!(r.boot.len(), 2);
    assert_eq!(
        r.agents
            .iter()
            .map(|(a, c)| (a.name, c.len()))
            .collect::<Vec<_>>(),
        [("fentry", 9), ("kprobe", 9), ("kmsg", 9)]
    );
    assert!(get(&r, "", "victims killed")
        .detail
        .ends_with("(3 and 4 'Killed process' lines); 4 OOM invocations"));
    for (agent, source) in [
        ("fentry", "fentry:oom_kill_process"),
        ("kprobe", "kprobe:oom_kill_process"),
        ("kmsg", "kmsg:oom_report"),
    ] {
        assert_eq!(
            get(&r, agent, "one event per victim").detail,
            "6 events for 6 victims"
        );
        let mem = get(&r, agent, "memory.events").detail;
        assert!(
            mem.contains("/g oom_kill 4 = 4 kernel lines (3 events + 1 chosen task counted twice)"),
            "{mem}"
        );
        let oom = get(&r, agent, "oom context").detail;
        assert!(
            oom.starts_with(&format!("6 events from {source}: ")),
            "{oom}"
        );
        assert!(
            oom.ends_with("oom_id 1, 2, 3, 4 (shared by 3 victims)"),
            "{oom}"
        );
        let probes = get(&r, agent, "probes attached").detail;
        assert!(probes.contains(&format!("{source} attached")), "{probes}");
        assert!(probes.contains("tp_btf:mark_victim attached"), "{probes}");
        assert!(
            probes.contains("tracepoint:oom/mark_victim attached"),
            "{probes}"
        );
    }
    let probes = get(&r, "kmsg", "probes attached").detail;
    assert!(probes.contains(
        "kmsg:oom_report attached (OOM context (constraint, gfp_mask, order, memcg) from the kernel log)"
    ));
    assert!(probes.contains("kprobe:oom_kill_process unavailable (disabled by --disable-probe)"));
    assert_eq!(
        get(&r, "kmsg", "metrics").detail,
        "oomwatch_oom_kills_all_total 6, probe_attached kmsg:oom_report 1, \
         fentry:oom_kill_process 0, kprobe:oom_kill_process 0"
    );
    assert_eq!(guest_uptime(FIXTURE), Some(9.44));
}

#[test]
fn sections_and_kernel_lines_are_parsed() {
    let c = Console::parse(FIXTURE);
    assert!(c.done);
    for a in &AGENTS {
        for s in AGENT_SECTIONS {
            assert!(c.sections.contains_key(&a.section(s)), "section {s}");
        }
        assert_eq!(c.section(&a.section("events")).len(), 6);
    }
    let kills = kernel_kills(c.section("dmesg"));
    // 3 in /t; in /g the chosen dd (159) is printed twice, plus two sleepers.
    let pids: Vec<(i64, &str)> = kills.iter().map(|k| (k.pid, k.phase.as_str())).collect();
    assert_eq!(
        pids,
        [
            (150, "t"),
            (151, "t"),
            (152, "t"),
            (159, "g"),
            (154, "g"),
            (155, "g"),
            (159, "g")
        ]
    );
    let k = &kills[0];
    assert_eq!(k.comm, "dd");
    assert_eq!(k.numbers["total-vm"], 104660);
    assert_eq!(k.numbers["anon-rss"], 65352);
    assert_eq!(k.numbers["file-rss"], 4);
    assert_eq!(k.numbers["shmem-rss"], 1580);
    assert_eq!(k.numbers["UID"], 0);
    assert_eq!(k.numbers["pgtables"], 168);
    assert_eq!(kills[2].numbers["oom_score_adj"], 300);
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
fn a_wrong_number_gives_a_per_field_diff_for_that_agent_only() {
    let from = r#""total_vm":107171840,"anon_rss":66920448"#;
    let text = mutate_event(
        FIXTURE,
        "events-kprobe",
        150,
        from,
        &from.replace("448", "449"),
    );
    let r = check_console(&text);
    assert_eq!(r.failed(), ["kprobe: fields = kernel"]);
    assert_eq!(
        get(&r, "kprobe", "fields = kernel").detail,
        "pid 150 anon_rss: agent 66920449 kernel 66920448"
    );
}

#[test]
fn null_fields_and_wrong_comm_are_reported() {
    let text = mutate_event(
        FIXTURE,
        "events",
        150,
        r#""pid":150,"tgid":150,"comm":"dd","uid":0,"#,
        r#""pid":150,"tgid":null,"comm":"d","uid":null,"#,
    );
    let r = check_console(&text);
    assert_eq!(r.failed(), ["fentry: fields = kernel", "fentry: tgid"]);
    assert_eq!(
        get(&r, "fentry", "fields = kernel").detail,
        "pid 150 comm: agent \"d\" kernel \"dd\"\npid 150 uid: agent null kernel 0"
    );
    assert_eq!(
        get(&r, "fentry", "tgid").detail,
        "pid 150 tgid: agent null expected 150"
    );
}

#[test]
fn a_missing_or_wrong_cgroup_path_fails() {
    let from = r#""cgroup":"/t","cgroup_id":23"#;
    for (to, detail) in [
        (r#""cgroup":null,"cgroup_id":23"#, "agent null"),
        (
            r#""cgroup":"/sys/fs/cgroup/t","cgroup_id":23"#,
            r#"agent "/sys/fs/cgroup/t""#,
        ),
    ] {
        let text = mutate_event(FIXTURE, "events-kmsg", 151, from, to);
        let r = check_console(&text);
        assert!(r.failed().contains(&"kmsg: cgroup v2 path".to_string()));
        assert_eq!(
            get(&r, "kmsg", "cgroup v2 path").detail,
            format!(r#"pid 151 cgroup: {detail} expected /t (source "cgroupfs")"#)
        );
    }
}

#[test]
fn a_missing_or_duplicated_event_fails() {
    let c = Console::parse(FIXTURE);
    let line = c.sections["events-kprobe"]
        .iter()
        .find(|l| l.contains(r#""pid":154,"#))
        .unwrap()
        .clone();
    let missing = mutate_in(FIXTURE, &format!("{line}\n"), "");
    let r = check_console(&missing);
    assert_eq!(
        r.failed(),
        [
            "kprobe: one event per victim",
            "kprobe: memory.events",
            "kprobe: metrics"
        ]
    );
    assert_eq!(
        get(&r, "kprobe", "one event per victim").detail,
        "pid 154 (/g): 0 events"
    );
    let doubled = mutate_in(FIXTURE, &format!("{line}\n"), &format!("{line}\n{line}\n"));
    let r = check_console(&doubled);
    assert!(r
        .failed()
        .contains(&"kprobe: one event per victim".to_string()));
    assert_eq!(
        get(&r, "kprobe", "one event per victim").detail,
        "pid 154 (/g): 2 events"
    );
}

#[test]
fn memory_events_must_match_the_kernel_lines_for_every_agent() {
    let text = mutate_in(FIXTURE, "oom_kill 3\n", "oom_kill 2\n");
    let r = check_console(&text);
    assert_eq!(
        r.failed(),
        [
            "fentry: memory.events",
            "kprobe: memory.events",
            "kmsg: memory.events"
        ]
    );
    assert_eq!(
        get(&r, "kmsg", "memory.events").detail,
        "/t: memory.events oom_kill 2, kernel 'Killed process' lines 3 (3 distinct pids), \
         agent events with cgroup /t: 3"
    );
}

#[test]
fn a_bad_exit_status_fails() {
    let text = mutate_in(
        FIXTURE,
        "@@OWVM BEGIN agent-exit-kmsg@@\n0\n",
        "@@OWVM BEGIN agent-exit-kmsg@@\n143\n",
    );
    assert_eq!(check_console(&text).failed(), ["kmsg: agent exit 0"]);
}

#[test]
fn a_truncated_console_fails_without_panicking() {
    let cut = &FIXTURE[..FIXTURE.find("@@OWVM BEGIN events-kprobe@@").unwrap()];
    let r = check_console(cut);
    let bad = r.failed();
    for name in [
        "guest finished",
        "kprobe: one event per victim",
        "kmsg: agent exit 0",
    ] {
        assert!(
            bad.contains(&name.to_string()),
            "{name} should fail: {bad:?}"
        );
    }
    assert!(
        !bad.contains(&"fentry: one event per victim".to_string()),
        "{bad:?}"
    );
    assert!(get(&r, "", "guest finished")
        .detail
        .contains("section events-kprobe missing"));
    assert_eq!(guest_uptime(cut), None);
}
