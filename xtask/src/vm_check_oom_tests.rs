use super::super::{
    vm_check::{
        check_console,
        tests::{fixed, get, mutate_event, mutate_in, FIXTURE},
    },
    vm_parse::oom_invocations,
};
use super::*;

/// The `oom context` check of `agent`, asserting that no other check failed.
fn oom_check(text: &str, agent: &str) -> Check {
    let r = check_console(text);
    let want = format!("{agent}: oom context");
    assert!(
        r.failed().iter().all(|f| *f == want),
        "only {want} may fail: {:?}",
        r.failed()
    );
    get(&r, agent, "oom context")
}

#[test]
fn invocations_are_parsed_from_the_kernel_log() {
    let dmesg: Vec<String> = FIXTURE.lines().map(str::to_string).collect();
    let inv = oom_invocations(&dmesg);
    assert_eq!(inv.len(), 4);
    let first = &inv[0];
    assert!(first.header && !first.group);
    assert_eq!(first.invoker, "dd");
    assert_eq!(first.gfp_mask, "0xcc0");
    assert_eq!(first.order, Some(0));
    assert_eq!(first.summary["constraint"], "CONSTRAINT_MEMCG");
    assert_eq!(first.summary["oom_memcg"], "/t");
    assert_eq!(first.summary["pid"], "150");
    assert_eq!(first.message, "Memory cgroup out of memory");
    assert_eq!(first.killed, [150]);
    // 6.1's dump: rss 16734 pages, pgtables_bytes 172032 -> 16734 + 42 = 16776.
    assert_eq!(badness(&first.tasks[&150], 16384), Some(16776));
    // oom_score_adj 500 adds 500 * (16384 / 1000); the kernel log cannot give that term.
    assert_eq!(badness(&inv[2].tasks[&152], 16384), Some(24775));
    assert_eq!(kmsg_points(&inv[2].tasks[&152]), Some(Json::Null));
    assert_eq!(
        kmsg_points(&first.tasks[&150]),
        Some(Json::Num("16776".into()))
    );
    assert!(inv[3].group);
    assert_eq!(inv[3].killed, [159, 155, 154, 159]);
    assert_eq!(inv[3].tasks.len(), 3);
}

#[test]
fn badness_uses_the_dump_header_of_6_12() {
    let dmesg = [
        "[    5.655671] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem \
         pgtables_bytes swapents oom_score_adj name",
        "[    5.655692] [    152]     0   152    26165    16747    16352        0       395   \
         172032        0           500 dd",
    ];
    let mut lines =
        vec!["[ 5.6] dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0,".to_string()];
    lines.extend(dmesg.iter().map(|l| l.to_string()));
    let inv = oom_invocations(&lines);
    // The agent reported 24789 for this kill on 6.12.117: 16747 + 42 + 500 * 16.
    assert_eq!(badness(&inv[0].tasks[&152], 16384), Some(24789));
}

/// The fixture's dmesg without the header, task dump and summary of the invocation that
/// killed 151 (the lines between the kills of 150 and 151), as the kernel prints it when its
/// rate limit (10 reports per 5 s) drops them.
fn without_the_header_of_151() -> String {
    let lines: Vec<&str> = FIXTURE.lines().collect();
    let at = |pid: &str| {
        lines
            .iter()
            .position(|l| l.contains(&format!("Killed process {pid} ")))
            .unwrap()
    };
    let mut text = fixed();
    for line in &lines[at("150") + 1..at("151")] {
        text = mutate_in(&text, &format!("{line}\n"), "");
    }
    text
}

#[test]
fn a_killed_line_without_its_header_is_an_invocation_of_its_own() {
    let text = without_the_header_of_151();
    let dmesg: Vec<String> = text.lines().map(str::to_string).collect();
    let inv = oom_invocations(&dmesg);
    assert_eq!(inv.len(), 4);
    assert_eq!(inv[1].killed, [151]);
    assert!(!inv[1].header);
    assert_eq!(inv[1].message, "Memory cgroup out of memory");
    let r = check_console(&text);
    assert!(get(&r, "", "victims killed")
        .detail
        .ends_with("4 OOM invocations, 1 without header (kernel rate limit)"));
    // The probes read oom_control: only `message` can be compared. The kmsg agent's event
    // still has the whole context of the real report, more than a bare line can give.
    assert_eq!(r.failed(), ["kmsg: oom context"]);
    let fentry = get(&r, "fentry", "oom context");
    assert!(fentry.ok);
    assert!(fentry.detail.ends_with(
        "\npid 151: the kernel suppressed the report header (rate limit); only message compared"
    ));
}

#[test]
fn without_its_header_the_kmsg_context_has_only_message_and_that_is_accepted() {
    let text = without_the_header_of_151();
    let c = super::super::vm_parse::Console::parse(&text);
    let line = c.sections["events-kmsg"]
        .iter()
        .find(|l| l.contains(r#""pid":151,"#))
        .unwrap();
    let start = line.find(r#""oom":{"#).unwrap();
    let end = line.find(r#"},"sources""#).unwrap() + 1;
    let only_message = r#""oom":{"constraint":null,"gfp_mask":null,"order":null,"totalpages":null,"points":null,"chosen":null,"memcg":null,"memcg_id":null,"message":"Memory cgroup out of memory","trigger_cgroup":null,"trigger_cgroup_id":null}"#;
    let documented = mutate_in(&text, &line[start..end], only_message);
    let kmsg = oom_check(&documented, "kmsg");
    assert!(kmsg.ok, "{}", kmsg.detail);
    assert!(kmsg.detail.ends_with(
        "\npid 151: the kernel suppressed the report header (rate limit); the context has only \
         message, as documented: accepted"
    ));
    // What the agent's kmsg_context.rs does instead: it treats the bare line as one more
    // victim of the previous report (a group kill) and hands out that report's id and context.
    let previous = c.sections["events-kmsg"]
        .iter()
        .find(|l| l.contains(r#""pid":150,"#))
        .unwrap();
    let p_start = previous.find(r#""oom":{"#).unwrap();
    let p_end = previous.find(r#"},"sources""#).unwrap() + 1;
    let reused = previous[p_start..p_end].replace(r#""points":16776"#, r#""points":null"#);
    let actual = mutate_in(&documented, only_message, &reused);
    let actual = mutate_event(
        &actual,
        "events-kmsg",
        151,
        r#""oom_id":2"#,
        r#""oom_id":1"#,
    );
    let kmsg = oom_check(&actual, "kmsg");
    assert!(!kmsg.ok);
    let detail = kmsg.detail;
    for want in [
        "pid 151 oom.constraint: agent \"CONSTRAINT_MEMCG\" kernel null",
        "pid 151 oom.chosen: agent {3 keys} kernel null",
        "oom_id 1 is shared by two OOM invocations",
        "note: pid 151: the kernel suppressed the report header",
    ] {
        assert!(detail.contains(want), "{want:?} not in {detail}");
    }
}

#[test]
fn a_wrong_points_value_is_diffed() {
    let text = mutate_event(
        &fixed(),
        "events",
        150,
        r#""points":16776"#,
        r#""points":16777"#,
    );
    assert_eq!(
        oom_check(&text, "fentry").detail,
        "pid 150 oom.points: agent 16777 kernel 16776"
    );
    // kmsg: the chosen task's oom_score_adj is 500, so the report cannot give its points.
    let text = mutate_event(
        &fixed(),
        "events-kmsg",
        152,
        r#""points":null"#,
        r#""points":24775"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "pid 152 oom.points: agent 24775 kernel null"
    );
}

#[test]
fn the_kmsg_agent_must_leave_what_the_report_lacks_null() {
    let text = mutate_event(
        &fixed(),
        "events-kmsg",
        150,
        r#""totalpages":null"#,
        r#""totalpages":16384"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "pid 150 oom.totalpages: agent 16384 kernel null"
    );
}

#[test]
fn the_source_must_be_the_agents_own() {
    let text = mutate_event(
        &fixed(),
        "events-kprobe",
        151,
        r#""oom":"kprobe:oom_kill_process""#,
        r#""oom":"fentry:oom_kill_process""#,
    );
    assert_eq!(
        oom_check(&text, "kprobe").detail,
        "pid 151 sources.oom: agent \"fentry:oom_kill_process\" expected \"kprobe:oom_kill_process\""
    );
}

#[test]
fn a_null_context_is_reported() {
    let c = super::super::vm_parse::Console::parse(FIXTURE);
    let line = c.sections["events-kprobe"]
        .iter()
        .find(|l| l.contains(r#""pid":151,"#))
        .unwrap();
    let start = line.find(r#""oom_id":2,"oom":{"#).unwrap();
    let end = line.find(r#"},"sources""#).unwrap() + 1;
    let from = &line[start..end];
    let text = mutate_event(
        &fixed(),
        "events-kprobe",
        151,
        from,
        r#""oom_id":null,"oom":null"#,
    );
    assert_eq!(
        oom_check(&text, "kprobe").detail,
        "pid 151: oom is null (oom_id null)"
    );
}

#[test]
fn oom_ids_must_group_victims_by_invocation() {
    let text = mutate_event(
        &fixed(),
        "events-kmsg",
        155,
        r#""oom_id":4"#,
        r#""oom_id":5"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "victims of one OOM invocation (killed [159, 155, 154, 159]) have oom_ids {4, 5}"
    );
    let text = mutate_event(&fixed(), "events", 151, r#""oom_id":2"#, r#""oom_id":1"#);
    assert_eq!(
        oom_check(&text, "fentry").detail,
        "oom_id 1 is shared by two OOM invocations"
    );
}
