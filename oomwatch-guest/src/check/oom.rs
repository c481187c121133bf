//! The `oom` context check of `vm-test`: each event's `oom_id` and `oom` object against the
//! kernel's own report of the same invocation, by `oomwatch_testkit::oracle::oom` (the host
//! test `tests/oom_kill.rs` runs the same comparison on the host's kernel); here also one
//! `oom_id` per invocation across the boot's events.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use oomwatch_testkit::oracle::{self, oom::Setting, pid_of};

use crate::{
    agent::KMSG,
    check::{check, source::Source, Check},
    console::{Invocation, Victim},
    script::MEMORY_MAX,
};

pub const PAGE_SIZE: i64 = 4096;
/// `totalpages` of the test cgroups' OOMs: their `memory.max` in pages (no swap).
pub const TOTALPAGES: i64 = MEMORY_MAX / PAGE_SIZE;

/// The `oom context` check of one agent's events, whose context must come from `from`.
pub fn check_oom(
    from: &Source,
    events: &[Value],
    victims: &[Victim],
    invocations: &[Invocation],
) -> Check {
    let setting = Setting {
        source: from.probe,
        totalpages: TOTALPAGES,
        page_size: PAGE_SIZE,
    };
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // Invocation index -> oom_ids of its victims' events.
    let mut ids: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for e in events {
        let pid = pid_of(e);
        let Some((index, inv)) = invocations
            .iter()
            .enumerate()
            .find(|(_, i)| i.killed.contains(&pid))
        else {
            problems.push(format!("pid {pid}: no kernel OOM invocation killed it"));
            continue;
        };
        if let Some(id) = e.get("oom_id").and_then(Value::as_i64) {
            ids.entry(index).or_default().insert(id);
        }
        let victim_cg = victims
            .iter()
            .find(|v| v.pid == pid)
            .map(|v| format!("/{}", v.cgroup));
        problems.extend(oracle::oom::context(
            e,
            inv,
            victim_cg.as_deref(),
            &setting,
            &mut notes,
        ));
    }
    problems.extend(oom_id_problems(&ids, invocations));
    let ok_detail = format!(
        "{} events from {}: {}; oom_id {}",
        events.len(),
        from.probe,
        if from.probe == KMSG {
            "constraint gfp_mask order badness chosen oom_memcg group_kill message trigger = \
             kernel, trigger.cgroup = victim's when the victim triggered, totalpages \
             oom_memcg_id null"
        } else {
            "constraint gfp_mask order totalpages badness chosen oom_memcg group_kill message \
             trigger = kernel"
        },
        oom_ids_per_invocation(&ids, invocations)
    );
    let checked = if problems.is_empty() {
        let mut detail = vec![ok_detail];
        detail.extend(notes);
        check("oom context", vec![], detail.join("\n"))
    } else {
        problems.extend(notes.into_iter().map(|n| format!("note: {n}")));
        check("oom context", problems, String::new())
    };
    checked.on(from.fallback.clone())
}

/// One oom_id per invocation, a different one for each invocation.
fn oom_id_problems(
    ids: &BTreeMap<usize, BTreeSet<i64>>,
    invocations: &[Invocation],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (index, set) in ids {
        if set.len() != 1 {
            problems.push(format!(
                "victims of one OOM invocation (killed {:?}) have oom_ids {set:?}",
                invocations[*index].killed
            ));
        }
        for id in set {
            if let Some(other) = seen.insert(*id, *index) {
                if other != *index {
                    problems.push(format!("oom_id {id} is shared by two OOM invocations"));
                }
            }
        }
    }
    problems
}

/// `7, 8 (shared by 3 victims)`: the oom_ids of each invocation.
fn oom_ids_per_invocation(
    ids: &BTreeMap<usize, BTreeSet<i64>>,
    invocations: &[Invocation],
) -> String {
    let per_inv: Vec<String> = ids
        .iter()
        .map(|(i, set)| {
            let n = invocations[*i].killed.iter().collect::<BTreeSet<_>>().len();
            let list: Vec<String> = set.iter().map(i64::to_string).collect();
            match n {
                1 => list.join("/"),
                n => format!("{} (shared by {n} victims)", list.join("/")),
            }
        })
        .collect();
    per_inv.join(", ")
}

#[cfg(test)]
mod tests {
    //! Tests of the `oom` context check on the real console fixture; pids and values come from
    //! the fixture itself (`fixture::sample`), so a refreshed fixture needs no test edits.

    use super::*;
    use crate::{
        check::{
            check_console,
            fixture::{
                event_line, get, mutate_event, mutate_in, mutate_lifecycle, sample, with_oom_id,
                Sample, FIXTURE,
            },
        },
        console::oom_invocations,
        script::{G_VICTIMS, T_VICTIMS},
    };
    use oomwatch_testkit::kernel_log::badness;

    /// The `oom context` check of `agent`, asserting that no other check failed (but its
    /// `candidates` check, when the mutation removed the candidates with the rest of the context,
    /// and its `sigkill attribution`, whose lines keep the `oom_id` a mutation changed).
    fn oom_check(text: &str, agent: &str) -> Check {
        let r = check_console(text);
        let want = format!("{agent}: oom context");
        let candidates = format!("{agent}: candidates");
        let sigkill = format!("{agent}: sigkill attribution");
        assert!(
            r.failed()
                .iter()
                .all(|f| *f == want || *f == candidates || *f == sigkill),
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
        let inv = oom_invocations(crate::check::threads::before_phase(&dmesg));
        assert_eq!(inv, s.invocations);
        assert_eq!(inv.len(), T_VICTIMS + 1);
        let headers: Vec<&String> = crate::check::threads::before_phase(&dmesg)
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
                assert_eq!(
                    badness(row, totalpages, PAGE_SIZE),
                    Some(points),
                    "{chosen}"
                );
            }
            // 6.1's dump: rss + swapents + pgtables_bytes / 4096, plus adj * (16384 / 1000).
            let adj = row["oom_score_adj"];
            assert_eq!(
                badness(row, totalpages, PAGE_SIZE),
                Some(row["rss"] + row["swapents"] + row["pgtables_bytes"] / 4096 + adj * 16)
            );
        }
        let adjusted = s.row(s.adjusted_victim());
        assert_ne!(adjusted["oom_score_adj"], 0);
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
        let context =
            &line[line.find(r#""oom_id":"#).unwrap()..line.rfind(r#","namespace""#).unwrap()];
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

    mod diff {
        //! Mutations of one event's `oom` context on the real console fixture: each must fail the
        //! `oom context` check with a per-field diff; pids and values come from the fixture itself.

        use super::*;

        #[test]
        fn a_wrong_badness_value_is_diffed() {
            let s = sample();
            let pid = s.victims_in("t")[0];
            let points = s.number("events", pid, "badness");
            let text = mutate_event(
                FIXTURE,
                "events",
                pid,
                &format!(r#""badness":{points},"#),
                &format!(r#""badness":{},"#, points + 1),
            );
            assert_eq!(
                oom_check(&text, "fentry").detail,
                format!(
                    "pid {pid} oom.badness: agent {} kernel {points}",
                    points + 1
                )
            );
            // kmsg: the chosen task's oom_score_adj is not 0. The agent takes totalpages from the
            // report's memcg limit and must give the probes' points, the oom_score_adj term included:
            // neither null (its former behaviour) nor the points without that term.
            let pid = s.adjusted_victim();
            let points = s.number("events", pid, "badness");
            assert_eq!(s.number("events-kmsg", pid, "badness"), points);
            let adj_term = s.row(pid)["oom_score_adj"] * (MEMORY_MAX / PAGE_SIZE / 1000);
            assert_ne!(adj_term, 0);
            for wrong in ["null".to_string(), (points - adj_term).to_string()] {
                let text = mutate_event(
                    FIXTURE,
                    "events-kmsg",
                    pid,
                    &format!(r#""badness":{points},"#),
                    &format!(r#""badness":{wrong},"#),
                );
                assert_eq!(
                    oom_check(&text, "kmsg").detail,
                    format!("pid {pid} oom.badness: agent {wrong} kernel {points}")
                );
            }
            // kmsg: a group-kill member gets the chosen task's badness (it used to be left null).
            let pid = s.group_members()[0];
            let points = s.number("events-kmsg", s.group_chosen(), "badness");
            let text = mutate_event(
                FIXTURE,
                "events-kmsg",
                pid,
                &format!(r#""badness":{points},"#),
                r#""badness":null,"#,
            );
            assert_eq!(
                oom_check(&text, "kmsg").detail,
                format!("pid {pid} oom.badness: agent null kernel {points}")
            );
        }

        #[test]
        fn group_kill_is_true_only_for_the_members_the_chosen_task_took_along() {
            let s = sample();
            let (chosen, members) = (s.group_chosen(), s.group_members());
            let flip = |section: &str, pid: i64, from: &str, to: &str| {
                let f = format!(r#""group_kill":{from}"#);
                mutate_event(FIXTURE, section, pid, &f, &format!(r#""group_kill":{to}"#))
            };
            for (section, agent) in [("events", "fentry"), ("events-kmsg", "kmsg")] {
                let m = members[0];
                assert_eq!(
                    oom_check(&flip(section, m, "true", "false"), agent).detail,
                    format!("pid {m} oom.group_kill: agent false kernel true")
                );
                assert_eq!(
                    oom_check(&flip(section, chosen, "false", "true"), agent).detail,
                    format!("pid {chosen} oom.group_kill: agent true kernel false")
                );
            }
            let m = members[members.len() - 1];
            assert_eq!(
                oom_check(&flip("events-kprobe", m, "true", "null"), "kprobe").detail,
                format!("pid {m} oom.group_kill: agent null kernel true")
            );
            // Not a group kill: the only victim of its invocation.
            let pid = s.victims_in("t")[1];
            assert_eq!(
                oom_check(&flip("events", pid, "false", "true"), "fentry").detail,
                format!("pid {pid} oom.group_kill: agent true kernel false")
            );
        }

        #[test]
        fn the_kmsg_agent_must_leave_what_the_report_lacks_null_and_fill_what_it_knows() {
            let s = sample();
            let pid = s.victims_in("t")[0];
            let cg = s.cgroup_of(pid);
            let id = s.number("events-kmsg", pid, "cgroup_id");
            let comm = s.comm_of(pid);
            // What the probes read.
            let totalpages = s.number("events", pid, "totalpages");
            for (from, to, detail) in [
                (
                    r#""totalpages":null"#.to_string(),
                    format!(r#""totalpages":{totalpages}"#),
                    format!("pid {pid} oom.totalpages: agent {totalpages} kernel null"),
                ),
                (
                    r#""oom_memcg_id":null"#.to_string(),
                    format!(r#""oom_memcg_id":{id}"#),
                    format!("pid {pid} oom.oom_memcg_id: agent {id} kernel null"),
                ),
                // The victim triggered its own OOM: its cgroup is the trigger's, which the agent must
                // not leave out.
                (
                    format!(
                        r#""trigger":{{"pid":{pid},"tgid":{pid},"comm":"{comm}","cgroup":"{cg}","cgroup_id":{id},"#
                    ),
                    format!(
                        r#""trigger":{{"pid":{pid},"tgid":{pid},"comm":"{comm}","cgroup":null,"cgroup_id":null,"#
                    ),
                    format!(
                        "pid {pid} oom.trigger.cgroup: agent null kernel \"{cg}\"\n\
                 pid {pid} oom.trigger.cgroup_id: agent null kernel {id}"
                    ),
                ),
            ] {
                let text = mutate_event(FIXTURE, "events-kmsg", pid, &from, &to);
                assert_eq!(oom_check(&text, "kmsg").detail, detail);
            }
        }

        #[test]
        fn the_probes_must_give_the_trigger_and_memcg_of_oom_control() {
            let s = sample();
            let (chosen, members) = (s.group_chosen(), s.group_members());
            let pid = members[members.len() - 1];
            let g = s.cgroup_of(pid);
            let gid = s.number("events-kprobe", pid, "cgroup_id");
            let t = s.victims_in("t")[0];
            let (tcg, tid) = (s.cgroup_of(t), s.number("events-kprobe", t, "cgroup_id"));
            assert_ne!(gid, tid);
            let totalpages = s.number("events-kprobe", pid, "totalpages");
            // The trigger object: `"trigger":{"pid":..,"cgroup":"/g","cgroup_id":56}`.
            let line = event_line(FIXTURE, "events-kprobe", pid);
            let start = line.find(r#""trigger":{"#).unwrap();
            let trigger = &line[start..=start + line[start..].find('}').unwrap()];
            let in_g = format!(r#""cgroup":"{g}","cgroup_id":{gid}"#);
            assert!(trigger.contains(&in_g), "{trigger}");
            let retrigger = |to: &str| trigger.replace(&in_g, to);
            for (from, to, detail) in [
                (
                    trigger.to_string(),
                    retrigger(&format!(r#""cgroup":"{tcg}","cgroup_id":{tid}"#)),
                    format!(
                        "pid {pid} oom.trigger.cgroup: agent \"{tcg}\" kernel \"{g}\"\n\
                 pid {pid} oom.trigger.cgroup_id: agent {tid} kernel {gid}"
                    ),
                ),
                (
                    trigger.to_string(),
                    retrigger(&format!(r#""cgroup":null,"cgroup_id":{gid}"#)),
                    format!("pid {pid} oom.trigger.cgroup: agent null kernel \"{g}\""),
                ),
                (
                    format!(r#""totalpages":{totalpages}"#),
                    r#""totalpages":null"#.to_string(),
                    format!("pid {pid} oom.totalpages: agent null kernel {totalpages}"),
                ),
                (
                    format!(r#""oom_memcg":"{g}","oom_memcg_id":{gid}"#),
                    r#""oom_memcg":"/","oom_memcg_id":1"#.to_string(),
                    format!(
                        "pid {pid} oom.oom_memcg: agent \"/\" kernel \"{g}\"\n\
                 pid {pid} oom.oom_memcg_id: agent 1 kernel {gid}"
                    ),
                ),
                (
                    format!(r#""chosen":{{"pid":{chosen},"#),
                    format!(r#""chosen":{{"pid":{pid},"#),
                    format!("pid {pid} oom.chosen.pid: agent {pid} kernel {chosen}"),
                ),
            ] {
                let text = mutate_event(FIXTURE, "events-kprobe", pid, &from, &to);
                assert_eq!(oom_check(&text, "kprobe").detail, detail);
            }
        }

        #[test]
        fn the_source_must_be_the_agents_own() {
            let pid = sample().victims_in("t")[1];
            let text = mutate_event(
                FIXTURE,
                "events-kprobe",
                pid,
                r#""oom":"kprobe:oom_kill_process""#,
                r#""oom":"fentry:oom_kill_process""#,
            );
            assert_eq!(
                oom_check(&text, "kprobe").detail,
                format!(
                    "pid {pid} sources.oom: agent \"fentry:oom_kill_process\" expected \
             \"kprobe:oom_kill_process\""
                )
            );
        }

        #[test]
        fn a_null_context_is_reported() {
            let s = sample();
            let pid = s.victims_in("t")[1];
            let id = s.value("events-kprobe", pid, "oom_id");
            let text = mutate_event(
                FIXTURE,
                "events-kprobe",
                pid,
                context_of(FIXTURE, "events-kprobe", pid),
                &only_message("null", "null"),
            );
            // Its lifecycle line has no oom_id either.
            let text = mutate_lifecycle(
                &text,
                "events-kprobe",
                pid,
                &format!(r#""oom_id":{id},"#),
                r#""oom_id":null,"#,
            );
            assert_eq!(
                oom_check(&text, "kprobe").detail,
                format!("pid {pid}: oom_id is null: no invocation context")
            );
        }

        #[test]
        fn oom_ids_must_group_victims_by_invocation() {
            let s = sample();
            let members = s.group_members();
            let pid = members[members.len() - 1];
            let id = s.number("events-kmsg", pid, "oom_id");
            let ids = s.invocations.iter().map(|i| i.killed[0]);
            let unused = ids
                .map(|p| s.number("events-kmsg", p, "oom_id"))
                .max()
                .unwrap()
                + 1;
            let text = with_oom_id(
                FIXTURE,
                "events-kmsg",
                pid,
                &id.to_string(),
                &unused.to_string(),
            );
            assert_eq!(
                oom_check(&text, "kmsg").detail,
                format!(
                    "victims of one OOM invocation (killed {:?}) have oom_ids {{{id}, {unused}}}",
                    s.group().killed
                )
            );
            let t = s.victims_in("t");
            let (first, second) = (
                s.number("events", t[0], "oom_id"),
                s.number("events", t[1], "oom_id"),
            );
            let text = with_oom_id(
                FIXTURE,
                "events",
                t[1],
                &second.to_string(),
                &first.to_string(),
            );
            assert_eq!(
                oom_check(&text, "fentry").detail,
                format!("oom_id {first} is shared by two OOM invocations")
            );
        }

        #[test]
        fn gfp_flags_must_be_the_kernels_decoding_of_the_mask() {
            let s = sample();
            let victims = [
                ("fentry", "events", s.victims_in("t")[0]),
                ("kprobe", "events-kprobe", s.group_chosen()),
                ("kmsg", "events-kmsg", s.group_members()[0]),
            ];
            for (agent, section, pid) in victims {
                let flags = &s.invocation_of(pid).gfp_flags;
                assert!(!flags.contains(&"GFP_ATOMIC".to_string()), "{flags:?}");
                let quoted: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
                let from = format!(r#""gfp_flags":[{}]"#, quoted.join(","));
                let kernel = format!("[{}]", quoted.join(","));
                let with_nowarn = format!("[{},\"__GFP_NOWARN\"]", quoted.join(","));
                for (to, got) in [
                    (
                        r#""gfp_flags":["GFP_ATOMIC"]"#.to_string(),
                        r#"["GFP_ATOMIC"]"#.to_string(),
                    ),
                    (r#""gfp_flags":null"#.into(), "null".into()),
                    (
                        from.replace(']', r#","__GFP_NOWARN"]"#),
                        with_nowarn.clone(),
                    ),
                ] {
                    let text = mutate_event(FIXTURE, section, pid, &from, &to);
                    assert_eq!(
                        oom_check(&text, agent).detail,
                        format!("pid {pid} oom.gfp_flags: agent {got} kernel {kernel}"),
                        "{agent} {to}"
                    );
                }
            }
        }
    }
}
