//! Tests of one agent's probe and metrics checks on the real console fixture.

use super::super::vm_check::{
    check_console,
    tests::{get, mutate_in, FIXTURE},
};
use super::*;

/// The `probe` line of `probe` in the log section of `agent`, replaced.
fn replace_probe_line(agent_log: &str, probe: &str, new_fields: &str) -> String {
    let text = FIXTURE.to_string();
    let c = Console::parse(&text);
    let line = c.sections[agent_log]
        .iter()
        .find(|l| l.contains(&format!(r#""probe":"{probe}""#)) && l.contains("\"probe "))
        .unwrap();
    let start = line.find(r#""fields":{"#).unwrap() + r#""fields":{"#.len();
    let end = line.find(r#"},"target""#).unwrap();
    mutate_in(
        &text,
        line,
        &format!("{}{new_fields}{}", &line[..start], &line[end..]),
    )
}

#[test]
fn probe_problems_are_reported_with_what_the_log_said() {
    let unavailable = |p: &str, why: &str| {
        format!(r#""message":"probe unavailable","probe":"{p}","reason":"{why}""#)
    };
    let cases = [
        ("kmsg", "tp_btf:mark_victim", unavailable("tp_btf:mark_victim", "no BTF"),
         "tp_btf:mark_victim: unavailable: no BTF"),
        ("fentry", "fentry:oom_kill_process", unavailable("fentry:oom_kill_process", "EPERM"),
         "fentry:oom_kill_process: unavailable: EPERM"),
        ("kmsg", "kmsg:oom_report",
         r#""message":"probe unavailable: events carry no OOM context","probe":"kmsg:oom_report","reason":"EACCES""#.to_string(),
         "kmsg:oom_report: unavailable: EACCES"),
        ("kprobe", "fentry:oom_kill_process",
         r#""message":"probe attached","probe":"fentry:oom_kill_process","reads":"all""#.to_string(),
         "fentry:oom_kill_process: attached (all), expected unavailable (disabled by --disable-probe)"),
    ];
    for (agent, probe, fields, detail) in cases {
        let section = AGENTS
            .iter()
            .find(|a| a.name == agent)
            .unwrap()
            .section("agent-log");
        let r = check_console(&replace_probe_line(&section, probe, &fields));
        assert_eq!(r.failed(), [format!("{agent}: probes attached")], "{probe}");
        assert_eq!(get(&r, agent, "probes attached").detail, detail);
    }
}

#[test]
fn probe_attached_metrics_must_match_the_agent() {
    let from = "oomwatch_probe_attached{probe=\"kmsg:oom_report\"} 1\n";
    let r = check_console(&mutate_in(FIXTURE, from, &from.replace(" 1", " 0")));
    assert_eq!(r.failed(), ["kmsg: metrics"]);
    assert_eq!(
        get(&r, "kmsg", "metrics").detail,
        "oomwatch_probe_attached{probe=\"kmsg:oom_report\"} Some(0), expected 1"
    );
}

#[test]
fn agent_problems_lists_warnings_and_plain_text_but_not_disabled_probes() {
    let log = [
        r#"{"level":"INFO","fields":{"message":"ok"}}"#.to_string(),
        r#"{"level":"WARN","fields":{"message":"could not"}}"#.to_string(),
        "Error: no probe could attach".to_string(),
        String::new(),
        r#"{"level":"WARN","fields":{"message":"probe unavailable","probe":"kprobe:oom_kill_process","reason":"disabled by --disable-probe"}}"#.to_string(),
    ];
    assert_eq!(agent_problems(&log), log[1..3]);
    let c = Console::parse(FIXTURE);
    for a in &AGENTS {
        assert_eq!(
            agent_problems(c.section(&a.section("agent-log"))),
            [] as [String; 0]
        );
    }
}
