//! Tests of the `oom` context check on the real console fixture; pids and values come from
//! the fixture itself (`fixture::sample`), so a refreshed fixture needs no test edits.

use super::super::{
    vm_check::{
        check_console,
        tests::{
            fixture::{event_line, sample, Sample},
            get, mutate_event, mutate_in, mutate_lifecycle, with_oom_id, FIXTURE,
        },
    },
    vm_initramfs::{G_VICTIMS, T_VICTIMS},
    vm_parse::oom_invocations,
};
use super::*;

/// The `oom context` check of `agent`, asserting that no other check failed (but its
/// `candidates` check, when the mutation removed the candidates with the rest of the context).
fn oom_check(text: &str, agent: &str) -> Check {
    let r = check_console(text);
    let want = format!("{agent}: oom context");
    let candidates = format!("{agent}: candidates");
    assert!(
        r.failed().iter().all(|f| *f == want || *f == candidates),
        "only {want} may fail: {:?}",
        r.failed()
    );
    get(&r, agent, "oom context")
}

#[test]
fn invocations_are_parsed_from_the_kernel_log() {
    let s = sample();
    // The whole console gives the same as its dmesg section: other lines are ignored.
    let dmesg: Vec<String> = FIXTURE.lines().map(str::to_string).collect();
    let inv = oom_invocations(crate::vm::vm_check_threads::before_phase(&dmesg));
    assert_eq!(inv, s.invocations);
    assert_eq!(inv.len(), T_VICTIMS + 1);
    let headers: Vec<&String> = crate::vm::vm_check_threads::before_phase(&dmesg)
        .iter()
        .filter(|l| l.contains(" invoked oom-killer: "))
        .collect();
    assert_eq!(headers.len(), inv.len());
    for (i, (inv, header)) in inv.iter().zip(&headers).enumerate() {
        assert!(inv.header);
        assert_eq!(inv.group, i == T_VICTIMS, "only /g's is a group kill");
        // The mask and the kernel's names for it: `gfp_mask=0xcc0(GFP_KERNEL), order=0`.
        assert!(!inv.gfp_flags.is_empty() && inv.gfp_mask.starts_with("0x"));
        let gfp = format!(
            "] {} invoked oom-killer: gfp_mask={}({}), order={},",
            inv.invoker,
            inv.gfp_mask,
            inv.gfp_flags.join("|"),
            inv.order.expect("an order")
        );
        assert!(header.contains(&gfp), "{gfp:?} not in {header:?}");
        assert_eq!(inv.summary["constraint"], "CONSTRAINT_MEMCG");
        assert_eq!(inv.message, "Memory cgroup out of memory");
    }
    // One invocation per /t victim, in order, each killing the task it chose.
    for (inv, pid) in inv.iter().zip(s.victims_in("t")) {
        assert_eq!(inv.killed, [pid]);
        assert_eq!(Sample::chosen(inv), pid);
        assert_eq!(inv.summary["oom_memcg"], "/t");
        assert_eq!(inv.tasks.keys().collect::<Vec<_>>(), [&pid]);
    }
    // /g: the chosen task, the others of its dump, then the chosen task again.
    let group = &inv[T_VICTIMS];
    let chosen = Sample::chosen(group);
    assert_eq!(group.summary["oom_memcg"], "/g");
    assert_eq!(group.killed.len(), G_VICTIMS + 1);
    assert_eq!(group.killed.first(), Some(&chosen));
    assert_eq!(group.killed.last(), Some(&chosen));
    assert_eq!(
        group.tasks.keys().collect::<BTreeSet<_>>(),
        s.victims_in("g").iter().collect()
    );
}

#[test]
fn badness_of_the_task_dump_is_the_points_the_kernel_chose_by() {
    let s = sample();
    let totalpages = MEMORY_MAX / PAGE_SIZE;
    for inv in &s.invocations {
        let chosen = Sample::chosen(inv);
        let row = &inv.tasks[&chosen];
        // The probes read the kernel's own `oom_control.chosen_points`.
        for section in ["events", "events-kprobe"] {
            let points = s.number(section, chosen, "badness");
            assert_eq!(badness(row, totalpages), Some(points), "{chosen}");
        }
        // 6.1's dump: rss + swapents + pgtables_bytes / 4096, plus adj * (16384 / 1000).
        let adj = row["oom_score_adj"];
        assert_eq!(
            badness(row, totalpages),
            Some(row["rss"] + row["swapents"] + row["pgtables_bytes"] / 4096 + adj * 16)
        );
    }
    let adjusted = s.row(s.adjusted_victim());
    assert_ne!(adjusted["oom_score_adj"], 0);
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
    assert_eq!(inv[0].gfp_flags, ["GFP_KERNEL"]);
    // The agent reported 24789 for this kill on 6.12.117: 16747 + 42 + 500 * 16.
    assert_eq!(badness(&inv[0].tasks[&152], 16384), Some(24789));
}

/// The fixture without the header, task dump and summary of the invocation that killed `pid`
/// (the lines since the previous "Killed process" line), as the kernel prints it when its
/// rate limit (10 reports per 5 s) drops them.
fn without_the_header_of(pid: i64) -> String {
    let lines: Vec<&str> = FIXTURE.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("Killed process {pid} ")))
        .unwrap();
    let previous = lines[..at]
        .iter()
        .rposition(|l| l.contains("Killed process "))
        .expect("a kill before");
    let mut text = FIXTURE.to_string();
    for line in &lines[previous + 1..at] {
        text = mutate_in(&text, &format!("{line}\n"), "");
    }
    text
}

#[test]
fn a_killed_line_without_its_header_is_an_invocation_of_its_own() {
    let s = sample();
    let t = s.victims_in("t");
    let text = without_the_header_of(t[1]);
    let inv = Sample::of(&text).invocations;
    assert_eq!(inv.len(), T_VICTIMS + 1);
    assert_eq!(inv[0], s.invocations[0]);
    assert_eq!(inv[1].killed, [t[1]]);
    assert!(!inv[1].header);
    assert_eq!(inv[1].message, "Memory cgroup out of memory");
    let r = check_console(&text);
    let victims = get(&r, "", "victims killed").detail;
    assert!(
        victims.ends_with(&format!(
            "{} OOM invocations, 1 without header (kernel rate limit)",
            T_VICTIMS + 1
        )),
        "{victims}"
    );
    // The probes read oom_control: only `message` can be compared. The kmsg agent's event
    // still has the whole context (and the candidates) of the real report, more than a bare
    // line can give.
    assert_eq!(r.failed(), ["kmsg: oom context", "kmsg: candidates"]);
    let fentry = get(&r, "fentry", "oom context");
    assert!(fentry.ok);
    assert!(fentry.detail.ends_with(&format!(
        "\npid {}: the kernel suppressed the report header (rate limit); only message compared",
        t[1]
    )));
}

/// The invocation context of `pid`'s event in `section`: from `"oom_id":` up to the comma
/// before the event's own `"namespace"` (the last one: the trigger, victim and candidates
/// come before), `..."group_kill":false,"candidates":[..],"explanation":..,"domain_memory":{..}`.
fn context_of<'a>(text: &'a str, section: &str, pid: i64) -> &'a str {
    let line = event_line(text, section, pid);
    let context = &line[line.find(r#""oom_id":"#).unwrap()..line.rfind(r#","namespace""#).unwrap()];
    assert!(context.contains(r#","domain_memory":"#), "{context}");
    context
}

/// What an event without any invocation context (oom_id `id`) carries: no candidates, no
/// explanation (neither badness nor domain) and no domain memory (no memcg to read).
fn only_message(id: &str, message: &str) -> String {
    format!(
        r#""oom_id":{id},"constraint":null,"gfp_mask":null,"gfp_flags":null,"order":null,"totalpages":null,"badness":null,"chosen":null,"oom_memcg":null,"oom_memcg_id":null,"message":{message},"group_kill":null,"candidates":null,"explanation":null,"domain_memory":null"#
    )
}

#[test]
fn without_its_header_the_kmsg_context_has_only_message_and_that_is_accepted() {
    let s = sample();
    let t = s.victims_in("t");
    let text = without_the_header_of(t[1]);
    // What the kmsg agent writes: a new invocation (its own oom_id) with only `message`.
    let id = s.value("events-kmsg", t[1], "oom_id");
    let bare = only_message(&id, r#""Memory cgroup out of memory""#);
    let context = context_of(&text, "events-kmsg", t[1]);
    let documented = mutate_event(&text, "events-kmsg", t[1], context, &bare);
    let kmsg = oom_check(&documented, "kmsg");
    assert!(kmsg.ok, "{}", kmsg.detail);
    assert!(kmsg.detail.ends_with(&format!(
        "\npid {}: the kernel suppressed the report header (rate limit); the context has only \
         message, as documented: accepted",
        t[1]
    )));
    // Its former behaviour: the bare line taken for one more victim of the previous report
    // (a group kill), with that report's id and context.
    let reused = context_of(&text, "events-kmsg", t[0])
        .replace(r#""group_kill":false"#, r#""group_kill":true"#);
    let v = |path: &str| s.value("events-kmsg", t[0], path);
    // Its lifecycle line has that id too.
    let former = mutate_lifecycle(
        &mutate_event(&documented, "events-kmsg", t[1], &bare, &reused),
        "events-kmsg",
        t[1],
        &format!(r#""oom_id":{id},"#),
        &format!(r#""oom_id":{},"#, v("oom_id")),
    );
    let kmsg = oom_check(&former, "kmsg");
    assert!(!kmsg.ok);
    let points = s.number("events-kmsg", t[0], "badness");
    for want in [
        format!(
            "pid {} oom.constraint: agent {} kernel null",
            t[1],
            v("constraint")
        ),
        format!("pid {} oom.badness: agent {points} kernel null", t[1]),
        format!("pid {} oom.chosen: agent {} kernel null", t[1], v("chosen")),
        format!("oom_id {} is shared by two OOM invocations", v("oom_id")),
        format!(
            "note: pid {}: the kernel suppressed the report header",
            t[1]
        ),
    ] {
        assert!(
            kmsg.detail.contains(&want),
            "{want:?} not in {}",
            kmsg.detail
        );
    }
}

#[path = "vm_check_oom_diff_tests.rs"]
mod diff;
