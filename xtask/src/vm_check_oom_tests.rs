use super::super::{
    vm_check::{
        check_console,
        tests::{get, mutate_event, mutate_in, FIXTURE},
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
    // oom_score_adj 300 adds 300 * (16384 / 1000); the kernel log cannot give that term.
    assert_eq!(badness(&inv[2].tasks[&152], 16384), Some(21575));
    assert_eq!(kmsg_points(&inv[2].tasks[&152]), Some(Json::Null));
    assert_eq!(
        kmsg_points(&first.tasks[&150]),
        Some(Json::Num("16776".into()))
    );
    assert!(inv[3].group);
    assert_eq!(inv[3].killed, [159, 154, 155, 159]);
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
    let mut text = FIXTURE.to_string();
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

/// The invocation context of `pid`'s event in `section`: from `"oom_id":` up to the comma
/// before `"sources"` (`..."group_kill":false`).
fn context_of<'a>(text: &'a str, section: &str, pid: i64) -> &'a str {
    let tag = format!(r#""host":"oomwatch-vm","pid":{pid},"#);
    let mut current = "";
    let line = text
        .lines()
        .find(|l| {
            if let Some(name) = l.strip_prefix("@@OWVM BEGIN ") {
                current = name.trim_end_matches('@');
            }
            current == section && l.contains(&tag)
        })
        .unwrap_or_else(|| panic!("no {section} event for pid {pid}"));
    &line[line.find(r#""oom_id":"#).unwrap()..line.find(r#","sources""#).unwrap()]
}

/// What an event without any invocation context (oom_id `id`) carries.
fn only_message(id: &str, message: &str) -> String {
    format!(
        r#""oom_id":{id},"constraint":null,"gfp_mask":null,"gfp_flags":null,"order":null,"totalpages":null,"badness":null,"chosen":null,"oom_memcg":null,"oom_memcg_id":null,"message":{message},"group_kill":null"#
    )
}

#[test]
fn without_its_header_the_kmsg_context_has_only_message_and_that_is_accepted() {
    let text = without_the_header_of_151();
    // What the kmsg agent writes: a new invocation (oom_id 2) with only `message`.
    let bare = only_message("2", r#""Memory cgroup out of memory""#);
    let documented = mutate_in(&text, context_of(&text, "events-kmsg", 151), &bare);
    let kmsg = oom_check(&documented, "kmsg");
    assert!(kmsg.ok, "{}", kmsg.detail);
    assert!(kmsg.detail.ends_with(
        "\npid 151: the kernel suppressed the report header (rate limit); the context has only \
         message, as documented: accepted"
    ));
    // Its former behaviour: the bare line taken for one more victim of the previous report
    // (a group kill), with that report's id and context.
    let reused = context_of(&text, "events-kmsg", 150)
        .replace(r#""group_kill":false"#, r#""group_kill":true"#);
    let kmsg = oom_check(&mutate_in(&documented, &bare, &reused), "kmsg");
    assert!(!kmsg.ok);
    for want in [
        "pid 151 oom.constraint: agent \"CONSTRAINT_MEMCG\" kernel null",
        "pid 151 oom.badness: agent 16776 kernel null",
        "pid 151 oom.chosen: agent {3 keys} kernel null",
        "oom_id 1 is shared by two OOM invocations",
        "note: pid 151: the kernel suppressed the report header",
    ] {
        assert!(
            kmsg.detail.contains(want),
            "{want:?} not in {}",
            kmsg.detail
        );
    }
}

#[test]
fn a_wrong_badness_value_is_diffed() {
    let text = mutate_event(
        FIXTURE,
        "events",
        150,
        r#""badness":16776"#,
        r#""badness":16777"#,
    );
    assert_eq!(
        oom_check(&text, "fentry").detail,
        "pid 150 oom.badness: agent 16777 kernel 16776"
    );
    // kmsg: the chosen task's oom_score_adj is 300, so the report cannot give its badness.
    let text = mutate_event(
        FIXTURE,
        "events-kmsg",
        152,
        r#""badness":null"#,
        r#""badness":21575"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "pid 152 oom.badness: agent 21575 kernel null"
    );
    // kmsg: a group-kill member gets the chosen task's badness (it used to be left null).
    let text = mutate_event(
        FIXTURE,
        "events-kmsg",
        155,
        r#""badness":16709"#,
        r#""badness":null"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "pid 155 oom.badness: agent null kernel 16709"
    );
}

#[test]
fn group_kill_is_true_only_for_the_members_the_chosen_task_took_along() {
    for (section, agent) in [("events", "fentry"), ("events-kmsg", "kmsg")] {
        let text = mutate_event(
            FIXTURE,
            section,
            154,
            r#""group_kill":true"#,
            r#""group_kill":false"#,
        );
        assert_eq!(
            oom_check(&text, agent).detail,
            "pid 154 oom.group_kill: agent false kernel true"
        );
        let text = mutate_event(
            FIXTURE,
            section,
            159,
            r#""group_kill":false"#,
            r#""group_kill":true"#,
        );
        assert_eq!(
            oom_check(&text, agent).detail,
            "pid 159 oom.group_kill: agent true kernel false"
        );
    }
    let text = mutate_event(
        FIXTURE,
        "events-kprobe",
        155,
        r#""group_kill":true"#,
        r#""group_kill":null"#,
    );
    assert_eq!(
        oom_check(&text, "kprobe").detail,
        "pid 155 oom.group_kill: agent null kernel true"
    );
    // Not a group kill: the only victim of its invocation.
    let text = mutate_event(
        FIXTURE,
        "events",
        151,
        r#""group_kill":false"#,
        r#""group_kill":true"#,
    );
    assert_eq!(
        oom_check(&text, "fentry").detail,
        "pid 151 oom.group_kill: agent true kernel false"
    );
}

#[test]
fn the_kmsg_agent_must_leave_what_the_report_lacks_null() {
    for (from, to, detail) in [
        (
            r#""totalpages":null"#,
            r#""totalpages":16384"#,
            "pid 150 oom.totalpages: agent 16384 kernel null",
        ),
        (
            r#""oom_memcg_id":null"#,
            r#""oom_memcg_id":23"#,
            "pid 150 oom.oom_memcg_id: agent 23 kernel null",
        ),
        (
            r#""cgroup":null,"cgroup_id":null"#,
            r#""cgroup":"/t","cgroup_id":23"#,
            "pid 150 oom.trigger.cgroup: agent \"/t\" kernel null\n\
             pid 150 oom.trigger.cgroup_id: agent 23 kernel null",
        ),
    ] {
        let text = mutate_event(FIXTURE, "events-kmsg", 150, from, to);
        assert_eq!(oom_check(&text, "kmsg").detail, detail);
    }
}

#[test]
fn the_probes_must_give_the_trigger_and_memcg_of_oom_control() {
    let trigger = r#""cgroup":"/g","cgroup_id":56},"already_exiting""#;
    for (from, to, detail) in [
        (
            trigger,
            r#""cgroup":"/t","cgroup_id":23},"oom_id""#,
            "pid 155 oom.trigger.cgroup: agent \"/t\" kernel \"/g\"\n\
             pid 155 oom.trigger.cgroup_id: agent 23 kernel 56",
        ),
        (
            trigger,
            r#""cgroup":null,"cgroup_id":56},"already_exiting""#,
            "pid 155 oom.trigger.cgroup: agent null kernel \"/g\"",
        ),
        (
            r#""totalpages":16384"#,
            r#""totalpages":null"#,
            "pid 155 oom.totalpages: agent null kernel 16384",
        ),
        (
            r#""oom_memcg":"/g","oom_memcg_id":56"#,
            r#""oom_memcg":"/","oom_memcg_id":1"#,
            "pid 155 oom.oom_memcg: agent \"/\" kernel \"/g\"\n\
             pid 155 oom.oom_memcg_id: agent 1 kernel 56",
        ),
        (
            r#""chosen":{"pid":159,"#,
            r#""chosen":{"pid":155,"#,
            "pid 155 oom.chosen.pid: agent 155 kernel 159",
        ),
    ] {
        let text = mutate_event(FIXTURE, "events-kprobe", 155, from, to);
        assert_eq!(oom_check(&text, "kprobe").detail, detail);
    }
}

#[test]
fn the_source_must_be_the_agents_own() {
    let text = mutate_event(
        FIXTURE,
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
    let text = mutate_event(
        FIXTURE,
        "events-kprobe",
        151,
        context_of(FIXTURE, "events-kprobe", 151),
        &only_message("null", "null"),
    );
    assert_eq!(
        oom_check(&text, "kprobe").detail,
        "pid 151: oom_id is null: no invocation context"
    );
}

#[test]
fn oom_ids_must_group_victims_by_invocation() {
    let text = mutate_event(
        FIXTURE,
        "events-kmsg",
        155,
        r#""oom_id":4"#,
        r#""oom_id":5"#,
    );
    assert_eq!(
        oom_check(&text, "kmsg").detail,
        "victims of one OOM invocation (killed [159, 154, 155, 159]) have oom_ids {4, 5}"
    );
    let text = mutate_event(FIXTURE, "events", 151, r#""oom_id":2"#, r#""oom_id":1"#);
    assert_eq!(
        oom_check(&text, "fentry").detail,
        "oom_id 1 is shared by two OOM invocations"
    );
}

#[test]
fn a_wrong_gfp_flags_decoding_is_diffed() {
    let text = mutate_event(
        FIXTURE,
        "events-kprobe",
        151,
        r#""gfp_flags":["GFP_KERNEL"]"#,
        r#""gfp_flags":["GFP_ATOMIC"]"#,
    );
    let detail = oom_check(&text, "kprobe").detail;
    assert!(detail.contains("pid 151 oom.gfp_flags"), "{detail}");
}
