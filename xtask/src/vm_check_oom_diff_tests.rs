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
            format!(r#""cgroup":"{cg}","cgroup_id":{id},"namespace":null,"pod":null,"pod_uid":null}},"victim""#),
            r#""cgroup":null,"cgroup_id":null,"namespace":null,"pod":null,"pod_uid":null},"victim""#.to_string(),
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
