//! The `oom` context check of `vm-test`: each event's `oom_id` and `oom` object against the
//! kernel's own report of the same invocation ("invoked oom-killer" header, task dump,
//! "oom-kill:" summary, "Killed process" lines). The `oom_kill_process` probes (fentry or
//! kprobe) read `struct oom_control`; the kernel-log source `kmsg:oom_report` has only what the
//! report prints, so `totalpages` and the cgroup ids are null, and its `badness` (from the
//! report's memcg limit) must be the same points as the probes'.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    vm_agent::{Agent, KMSG},
    vm_check::{check, Check},
    vm_initramfs::MEMORY_MAX,
    vm_json::Json,
    vm_parse::{Invocation, Victim},
};

const PAGE_SIZE: i64 = 4096;

/// `oom_badness()` of a task-dump row: rss + swapents + pgtables_bytes / PAGE_SIZE, plus
/// `oom_score_adj * (totalpages / 1000)` (integer division first, as the kernel does).
pub fn badness(row: &BTreeMap<String, i64>, totalpages: i64) -> Option<i64> {
    let adj = row.get("oom_score_adj")?;
    Some(
        row.get("rss")?
            + row.get("swapents")?
            + row.get("pgtables_bytes")? / PAGE_SIZE
            + adj * (totalpages / 1000),
    )
}

/// `a.b` inside `v`.
fn at<'a>(v: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

pub fn check_oom(
    agent: &Agent,
    events: &[Json],
    victims: &[Victim],
    invocations: &[Invocation],
) -> Check {
    let kmsg = agent.oom_probe == KMSG;
    let totalpages = MEMORY_MAX / PAGE_SIZE;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // Invocation index -> oom_ids of its victims' events.
    let mut ids: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for e in events {
        let pid = e.get("pid").and_then(Json::as_i64).unwrap_or(-1);
        let Some((index, inv)) = invocations
            .iter()
            .enumerate()
            .find(|(_, i)| i.killed.contains(&pid))
        else {
            problems.push(format!("pid {pid}: no kernel OOM invocation killed it"));
            continue;
        };
        // The invocation's fields are flattened into the event.
        let oom = e;
        if matches!(e.get("oom_id"), None | Some(Json::Null)) {
            problems.push(format!("pid {pid}: oom_id is null: no invocation context"));
            continue;
        }
        match e.get("oom_id").and_then(Json::as_i64) {
            Some(id) => {
                ids.entry(index).or_default().insert(id);
            }
            None => problems.push(format!("pid {pid}: oom_id is not a number")),
        }
        let source = at(e, "sources.oom");
        if source.and_then(Json::as_str) != Some(agent.oom_probe) {
            problems.push(format!(
                "pid {pid} sources.oom: agent {} expected {:?}",
                source.map_or("absent".into(), Json::render),
                agent.oom_probe
            ));
        }
        let s = |v: &str| Some(Json::Str(v.to_string()));
        let n = |v: i64| Some(Json::Num(v.to_string()));
        let null = Some(Json::Null);
        let str_of = |v: Option<&String>| v.map_or(Some(Json::Null), |v| s(v));
        // (field, expected, actual); `oom.` fields unless named `event.`.
        let mut expected: Vec<(&str, Option<Json>)> = vec![("message", s(&inv.message))];
        if !inv.header {
            if kmsg {
                for f in NOT_IN_A_BARE_KILLED_LINE {
                    expected.push((f, null.clone()));
                }
                let victim_cg = victims
                    .iter()
                    .find(|v| v.pid == pid)
                    .map(|v| format!("/{}", v.cgroup));
                expected.extend(kmsg_trigger_cgroup(e, pid, victim_cg.as_deref()));
                notes.push(format!(
                    "pid {pid}: the kernel suppressed the report header (rate limit); the \
                     context has only message, as documented: accepted"
                ));
            } else {
                notes.push(format!(
                    "pid {pid}: the kernel suppressed the report header (rate limit); only \
                     message compared"
                ));
            }
        } else {
            let chosen: i64 = inv
                .summary
                .get("pid")
                .and_then(|p| p.parse().ok())
                .unwrap_or(-1);
            let row = inv.tasks.get(&chosen);
            let victim_cg = victims
                .iter()
                .find(|v| v.pid == pid)
                .map(|v| format!("/{}", v.cgroup));
            expected.extend([
                ("constraint", str_of(inv.summary.get("constraint"))),
                ("gfp_mask", s(&inv.gfp_mask)),
                (
                    "gfp_flags",
                    Some(Json::Arr(
                        inv.gfp_flags.iter().map(|f| Json::Str(f.clone())).collect(),
                    )),
                ),
                ("order", inv.order.and_then(n)),
                ("chosen.pid", n(chosen)),
                ("chosen.comm", str_of(inv.summary.get("task"))),
                ("oom_memcg", str_of(inv.summary.get("oom_memcg"))),
                ("group_kill", Some(Json::Bool(pid != chosen))),
                // Why this victim: the chosen task heads the candidates, with its points.
                ("candidates.0.pid", n(chosen)),
                (
                    "candidates.0.points",
                    row.and_then(|r| badness(r, totalpages)).and_then(n),
                ),
                ("event.trigger.comm", s(&inv.invoker)),
            ]);
            if kmsg {
                expected.extend([
                    // The kernel log has no totalpages; the agent takes the memcg limit from
                    // the report's `memory: usage …, limit …` line (no swap here): the same
                    // points as the kernel's.
                    (
                        "badness",
                        row.and_then(|r| badness(r, totalpages)).and_then(n),
                    ),
                    ("totalpages", null.clone()),
                    ("oom_memcg_id", null.clone()),
                ]);
                expected.extend(kmsg_trigger_cgroup(e, pid, victim_cg.as_deref()));
            } else {
                let cgroup_id = e.get("cgroup_id").cloned();
                expected.extend([
                    (
                        "badness",
                        row.and_then(|r| badness(r, totalpages)).and_then(n),
                    ),
                    ("totalpages", n(totalpages)),
                    ("oom_memcg_id", cgroup_id.clone()),
                    ("trigger.cgroup", victim_cg.as_deref().and_then(s)),
                    ("trigger.cgroup_id", cgroup_id),
                ]);
            }
        }
        for (field, want) in expected {
            let got = match field.strip_prefix("event.") {
                Some(path) => at(e, path),
                None => at(oom, field),
            };
            if want.is_none() || want.as_ref() != got {
                problems.push(format!(
                    "pid {pid} {}: agent {} kernel {}",
                    field
                        .strip_prefix("event.")
                        .map_or(format!("oom.{field}"), String::from),
                    got.map_or("absent".into(), Json::render),
                    want.map_or("not in the log".into(), |w| w.render())
                ));
            }
        }
    }
    // One oom_id per invocation, a different one for each invocation.
    let mut seen = BTreeMap::new();
    for (index, set) in &ids {
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
    let compared = if kmsg {
        "constraint gfp_mask order badness chosen oom_memcg group_kill message trigger = kernel, \
         trigger.cgroup = victim's when the victim triggered, totalpages oom_memcg_id null"
    } else {
        "constraint gfp_mask order totalpages badness chosen oom_memcg group_kill message trigger = kernel"
    };
    let ok_detail = format!(
        "{} events from {}: {compared}; oom_id {}",
        events.len(),
        agent.oom_probe,
        per_inv.join(", ")
    );
    if problems.is_empty() {
        let mut detail = vec![ok_detail];
        detail.extend(notes);
        check("oom context", vec![], detail.join("\n"))
    } else {
        problems.extend(notes.into_iter().map(|n| format!("note: {n}")));
        check("oom context", problems, String::new())
    }
}

/// Context fields a "Killed process" line without its report header cannot give.
/// The trigger's cgroup a kmsg-only agent must give: the report names the victim's memcg, not
/// the trigger's, so the agent knows the trigger's only when the trigger is the victim itself
/// (its own allocation). For another task it reads /proc, which the dying task may have left
/// already: that case is not compared.
fn kmsg_trigger_cgroup(
    e: &Json,
    pid: i64,
    victim_cg: Option<&str>,
) -> Vec<(&'static str, Option<Json>)> {
    let trigger_pid = at(e, "trigger.pid").and_then(|j| match j {
        Json::Num(n) => n.parse::<i64>().ok(),
        _ => None,
    });
    if trigger_pid != Some(pid) {
        return Vec::new();
    }
    vec![
        (
            "trigger.cgroup",
            victim_cg.map(|c| Json::Str(c.to_string())),
        ),
        ("trigger.cgroup_id", e.get("cgroup_id").cloned()),
    ]
}

const NOT_IN_A_BARE_KILLED_LINE: [&str; 9] = [
    "constraint",
    "gfp_mask",
    "gfp_flags",
    "order",
    "totalpages",
    "badness",
    "chosen",
    "oom_memcg",
    "oom_memcg_id",
];

#[cfg(test)]
#[path = "vm_check_oom_tests.rs"]
mod tests;
