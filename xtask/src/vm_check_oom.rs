//! The `oom` context check of `vm-test`: each event's `oom_id` and `oom` object (read by the
//! agent's `oom_kill_process` probe, fentry or kprobe) against the kernel's own report of the
//! same invocation: "invoked oom-killer" header, task dump, "oom-kill:" summary.

use std::collections::{BTreeMap, BTreeSet};

use super::{
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

pub fn check_oom(events: &[Json], victims: &[Victim], invocations: &[Invocation]) -> Check {
    let totalpages = MEMORY_MAX / PAGE_SIZE;
    let mut problems = Vec::new();
    let mut sources = BTreeSet::new();
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
        let oom = e.get("oom").unwrap_or(&Json::Null);
        if *oom == Json::Null {
            problems.push(format!(
                "pid {pid}: oom is {} (oom_id {})",
                oom.render(),
                e.get("oom_id").map_or("absent".into(), Json::render)
            ));
            continue;
        }
        match e.get("oom_id").and_then(Json::as_i64) {
            Some(id) => {
                ids.entry(index).or_default().insert(id);
            }
            None => problems.push(format!("pid {pid}: oom_id is not a number")),
        }
        let source = e.get("sources").and_then(|s| s.get("oom"));
        sources.insert(
            source
                .and_then(Json::as_str)
                .unwrap_or("no source")
                .to_string(),
        );
        let chosen: i64 = inv
            .summary
            .get("pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1);
        let victim_cg = victims
            .iter()
            .find(|v| v.pid == pid)
            .map(|v| format!("/{}", v.cgroup));
        let s = |v: &str| Some(Json::Str(v.to_string()));
        let n = |v: i64| Some(Json::Num(v.to_string()));
        let str_of = |v: Option<&String>| v.map_or(Some(Json::Null), |v| s(v));
        let expected: Vec<(&str, Option<Json>, Option<&Json>)> = vec![
            (
                "constraint",
                str_of(inv.summary.get("constraint")),
                oom.get("constraint"),
            ),
            ("gfp_mask", s(&inv.gfp_mask), oom.get("gfp_mask")),
            (
                "order",
                inv.order.map(|o| Json::Num(o.to_string())),
                oom.get("order"),
            ),
            ("totalpages", n(totalpages), oom.get("totalpages")),
            (
                "points",
                inv.tasks
                    .get(&chosen)
                    .and_then(|row| badness(row, totalpages))
                    .map(|b| Json::Num(b.to_string())),
                oom.get("points"),
            ),
            (
                "chosen.pid",
                n(chosen),
                oom.get("chosen").and_then(|c| c.get("pid")),
            ),
            (
                "chosen.comm",
                str_of(inv.summary.get("task")),
                oom.get("chosen").and_then(|c| c.get("comm")),
            ),
            (
                "memcg",
                str_of(inv.summary.get("oom_memcg")),
                oom.get("memcg"),
            ),
            ("memcg_id", e.get("cgroup_id").cloned(), oom.get("memcg_id")),
            ("message", s(&inv.message), oom.get("message")),
            (
                "trigger_cgroup",
                victim_cg.as_deref().and_then(s),
                oom.get("trigger_cgroup"),
            ),
            (
                "trigger.comm",
                s(&inv.invoker),
                e.get("trigger").and_then(|t| t.get("comm")),
            ),
        ];
        for (field, want, got) in expected {
            if want.is_none() || want.as_ref() != got {
                problems.push(format!(
                    "pid {pid} oom.{field}: agent {} kernel {}",
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
    check(
        "oom context",
        problems,
        format!(
            "{} events from {}: constraint gfp_mask order totalpages points chosen memcg \
             message trigger = kernel; oom_id {}",
            events.len(),
            sources.into_iter().collect::<Vec<_>>().join(", "),
            per_inv.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{vm_check::check_console, vm_parse::oom_invocations};
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/vm-console-6.1.log");

    /// The fixture with `from` replaced by `to` in the event line of `pid` only.
    fn mutate_event(pid: i64, from: &str, to: &str) -> String {
        let tag = format!(r#""host":"oomwatch-vm","pid":{pid},"#);
        FIXTURE
            .lines()
            .map(|l| {
                if l.contains(&tag) {
                    assert!(l.contains(from), "{from:?} not in the event of {pid}");
                    l.replacen(from, to, 1)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn oom_check(text: &str) -> Check {
        let checks = check_console(text);
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let oom = checks
            .into_iter()
            .find(|c| c.name == "oom context")
            .unwrap();
        if !oom.ok {
            assert_eq!(failed, ["oom context"], "only the oom context should fail");
        }
        oom
    }

    #[test]
    fn invocations_are_parsed_from_the_kernel_log() {
        let dmesg: Vec<String> = FIXTURE.lines().map(str::to_string).collect();
        let inv = oom_invocations(&dmesg);
        assert_eq!(inv.len(), 4);
        let first = &inv[0];
        assert_eq!(first.invoker, "dd");
        assert_eq!(first.gfp_mask, "0xcc0");
        assert_eq!(first.order, Some(0));
        assert_eq!(first.summary["constraint"], "CONSTRAINT_MEMCG");
        assert_eq!(first.summary["oom_memcg"], "/t");
        assert_eq!(first.summary["pid"], "94");
        assert_eq!(first.message, "Memory cgroup out of memory");
        assert_eq!(first.killed, [94]);
        // 6.1's dump: rss 16734 pages, pgtables_bytes 176128 -> 16734 + 43 = 16777.
        assert_eq!(badness(&first.tasks[&94], 16384), Some(16777));
        assert_eq!(inv[3].killed, [103, 98, 99, 103]);
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

    #[test]
    fn a_wrong_points_value_is_diffed() {
        let text = mutate_event(94, r#""points":16777"#, r#""points":16778"#);
        assert_eq!(
            oom_check(&text).detail,
            "pid 94 oom.points: agent 16778 kernel 16777"
        );
    }

    #[test]
    fn a_null_context_is_reported() {
        let from = r#""oom_id":2,"oom":{"#;
        let line = FIXTURE.lines().find(|l| l.contains(from)).unwrap();
        let start = line.find(from).unwrap();
        let end = line[start..].find("},\"sources\"").unwrap() + start + 1;
        let text = FIXTURE.replacen(&line[start..end], r#""oom_id":null,"oom":null"#, 1);
        assert_eq!(oom_check(&text).detail, "pid 95: oom is null (oom_id null)");
    }

    #[test]
    fn oom_ids_must_group_victims_by_invocation() {
        let text = mutate_event(98, r#""oom_id":4"#, r#""oom_id":5"#);
        assert_eq!(
            oom_check(&text).detail,
            "victims of one OOM invocation (killed [103, 98, 99, 103]) have oom_ids {4, 5}"
        );
        let text = mutate_event(95, r#""oom_id":2"#, r#""oom_id":1"#);
        assert_eq!(
            oom_check(&text).detail,
            "oom_id 1 is shared by two OOM invocations"
        );
    }
}
