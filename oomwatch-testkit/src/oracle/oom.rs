//! An event's invocation context (`oom_id`, `sources.oom` and the flattened `oom` fields)
//! against the kernel's own report of the same invocation ("invoked oom-killer" header, task
//! dump, "oom-kill:" summary, "Killed process" lines). The `oom_kill_process` probes (fentry or
//! kprobe) read `struct oom_control`; the kernel-log source `kmsg:oom_report` has only what the
//! report prints, so `totalpages` and the cgroup ids are null, and its `badness` (from the
//! report's memcg limit) must be the same points as the probes'.

use serde_json::Value;

use super::{at, pid_of, render};
use crate::kernel_log::{badness, Invocation};

/// The kernel-log source of OOM context.
pub const KMSG: &str = "kmsg:oom_report";

/// What the test knows of the kill's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<'a> {
    /// The probe the agent must take the context from (`sources.oom`).
    pub source: &'a str,
    /// `totalpages` of the OOM: the memory cgroup's limit in pages (no swap).
    pub totalpages: i64,
    /// The kernel's page size (the task dump's `pgtables_bytes` to pages).
    pub page_size: i64,
}

impl Setting<'_> {
    fn kmsg(&self) -> bool {
        self.source == KMSG
    }
}

/// The problems of `e`'s context against `inv`, the invocation whose "Killed process" lines
/// name its pid; `victim_cg` is the cgroup the test put the victim in. What the check could not
/// compare is said in `notes`.
pub fn context(
    e: &Value,
    inv: &Invocation,
    victim_cg: Option<&str>,
    setting: &Setting,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let pid = pid_of(e);
    let mut problems = Vec::new();
    match e.get("oom_id") {
        None | Some(Value::Null) => {
            return vec![format!("pid {pid}: oom_id is null: no invocation context")]
        }
        Some(id) if id.as_i64().is_none() => {
            problems.push(format!("pid {pid}: oom_id is not a number"))
        }
        Some(_) => {}
    }
    let source = at(e, "sources.oom");
    if source.and_then(Value::as_str) != Some(setting.source) {
        problems.push(format!(
            "pid {pid} sources.oom: agent {} expected {:?}",
            source.map_or("absent".into(), render),
            setting.source
        ));
    }
    let expected = expected(e, inv, victim_cg, setting, notes);
    problems.extend(diff(e, expected));
    problems
}

/// What the kernel's report says each context field of `e` must be: (field, expected); fields
/// are the event's own (`oom` fields are flattened into it), `event.` names one that is not
/// part of the context. A report without its header gives only `message`.
fn expected(
    e: &Value,
    inv: &Invocation,
    victim_cg: Option<&str>,
    setting: &Setting,
    notes: &mut Vec<String>,
) -> Vec<(&'static str, Option<Value>)> {
    let pid = pid_of(e);
    let s = |v: &str| Some(Value::String(v.to_string()));
    let n = |v: i64| Some(Value::from(v));
    let str_of = |v: Option<&String>| v.map_or(Some(Value::Null), |v| s(v));
    let mut expected: Vec<(&str, Option<Value>)> = vec![("message", s(&inv.message))];
    if !inv.header {
        let what = if setting.kmsg() {
            expected.extend(NOT_IN_A_BARE_KILLED_LINE.map(|f| (f, Some(Value::Null))));
            expected.extend(kmsg_trigger_cgroup(e, victim_cg));
            "the context has only message, as documented: accepted"
        } else {
            "only message compared"
        };
        notes.push(format!(
            "pid {pid}: the kernel suppressed the report header (rate limit); {what}"
        ));
        return expected;
    }
    let chosen = inv.chosen();
    let points = inv
        .tasks
        .get(&chosen)
        .and_then(|r| badness(r, setting.totalpages, setting.page_size))
        .and_then(n);
    let flags = inv.gfp_flags.iter().map(|f| Value::String(f.clone()));
    expected.extend([
        ("constraint", str_of(inv.summary.get("constraint"))),
        ("gfp_mask", s(&inv.gfp_mask)),
        ("gfp_flags", Some(Value::Array(flags.collect()))),
        ("order", inv.order.and_then(n)),
        ("chosen.pid", n(chosen)),
        ("chosen.comm", str_of(inv.summary.get("task"))),
        ("oom_memcg", str_of(inv.summary.get("oom_memcg"))),
        ("group_kill", Some(Value::Bool(pid != chosen))),
        // Why this victim: the chosen task heads the candidates, with its points.
        ("candidates.0.pid", n(chosen)),
        ("candidates.0.points", points.clone()),
        ("event.trigger.comm", s(&inv.invoker)),
        // For kmsg too: the kernel log has no totalpages; the agent takes the memcg limit from
        // the report's `memory: usage …, limit …` line (no swap here): the same points as the
        // kernel's.
        ("badness", points),
    ]);
    if setting.kmsg() {
        expected.extend([
            ("totalpages", Some(Value::Null)),
            ("oom_memcg_id", Some(Value::Null)),
        ]);
        expected.extend(kmsg_trigger_cgroup(e, victim_cg));
    } else {
        let cgroup_id = e.get("cgroup_id").cloned();
        expected.extend([
            ("totalpages", n(setting.totalpages)),
            ("oom_memcg_id", cgroup_id.clone()),
            ("trigger.cgroup", victim_cg.and_then(s)),
            ("trigger.cgroup_id", cgroup_id),
        ]);
    }
    expected
}

/// One problem per field of `e` that is not as `expected` (or expected without a value).
fn diff(e: &Value, expected: Vec<(&str, Option<Value>)>) -> Vec<String> {
    let pid = pid_of(e);
    let mut problems = Vec::new();
    for (field, want) in expected {
        let (name, got) = match field.strip_prefix("event.") {
            Some(path) => (path.to_string(), at(e, path)),
            None => (format!("oom.{field}"), at(e, field)),
        };
        if want.is_none() || want.as_ref() != got {
            problems.push(format!(
                "pid {pid} {name}: agent {} kernel {}",
                got.map_or("absent".into(), render),
                want.map_or("not in the log".into(), |w| render(&w))
            ));
        }
    }
    problems
}

/// The trigger's cgroup a kmsg-only agent must give: the report names the victim's memcg, not
/// the trigger's, so the agent knows the trigger's only when the trigger is the victim itself
/// (its own allocation). For another task it reads /proc, which the dying task may have left
/// already: that case is not compared.
fn kmsg_trigger_cgroup(e: &Value, victim_cg: Option<&str>) -> Vec<(&'static str, Option<Value>)> {
    let trigger_pid = at(e, "trigger.pid").and_then(Value::as_i64);
    if trigger_pid != Some(pid_of(e)) {
        return Vec::new();
    }
    vec![
        (
            "trigger.cgroup",
            victim_cg.map(|c| Value::String(c.to_string())),
        ),
        ("trigger.cgroup_id", e.get("cgroup_id").cloned()),
    ]
}

/// Context fields a "Killed process" line without its report header cannot give.
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
mod tests {
    //! The check on one hand-written report; `vm-test`'s fixture tests (oomwatch-guest/src/check/oom.rs)
    //! mutate a real guest's events field by field.
    use super::*;
    use crate::kernel_log::oom_invocations;
    use serde_json::json;

    const REPORT: [&str; 5] = [
        "dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes \
         swapents oom_score_adj name",
        "[    152]     0   152    26165    16747    16352        0       395   172032        0 \
                     0 dd",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
         oom_memcg=/t,task_memcg=/t,task=dd,pid=152,uid=0",
        "Memory cgroup out of memory: Killed process 152 (dd) total-vm:104660kB, \
         anon-rss:65408kB, file-rss:0kB, shmem-rss:1580kB, UID:0 pgtables:168kB oom_score_adj:0",
    ];

    fn kmsg_event() -> Value {
        json!({"pid": 152, "cgroup_id": 9, "oom_id": 1, "sources": {"oom": KMSG},
            "constraint": "CONSTRAINT_MEMCG", "gfp_mask": "0xcc0", "gfp_flags": ["GFP_KERNEL"],
            "order": 0, "totalpages": null, "badness": 16789, "oom_memcg": "/t",
            "oom_memcg_id": null, "message": "Memory cgroup out of memory", "group_kill": false,
            "chosen": {"pid": 152, "comm": "dd"}, "candidates": [{"pid": 152, "points": 16789}],
            "trigger": {"pid": 152, "comm": "dd", "cgroup": "/t", "cgroup_id": 9}})
    }

    #[test]
    fn a_kmsg_context_equal_to_the_report_passes_and_a_wrong_field_is_diffed() {
        let inv = &oom_invocations(&REPORT)[0];
        let setting = Setting {
            source: KMSG,
            totalpages: 16384,
            page_size: 4096,
        };
        let mut notes = Vec::new();
        let e = kmsg_event();
        assert_eq!(
            context(&e, inv, Some("/t"), &setting, &mut notes),
            [] as [String; 0]
        );
        let mut bad = e.clone();
        bad["badness"] = json!(1);
        bad["trigger"]["cgroup"] = json!("/g");
        assert_eq!(
            context(&bad, inv, Some("/t"), &setting, &mut notes),
            [
                "pid 152 oom.badness: agent 1 kernel 16789",
                "pid 152 oom.trigger.cgroup: agent \"/g\" kernel \"/t\"",
            ]
        );
        bad["oom_id"] = Value::Null;
        assert_eq!(
            context(&bad, inv, Some("/t"), &setting, &mut notes),
            ["pid 152: oom_id is null: no invocation context"]
        );
        // A probe source: totalpages and the ids are oom_control's.
        let probe = Setting {
            source: "fentry:oom_kill_process",
            ..setting
        };
        let problems = context(&e, inv, Some("/t"), &probe, &mut notes);
        assert_eq!(
            problems[0],
            "pid 152 sources.oom: agent \"kmsg:oom_report\" expected \"fentry:oom_kill_process\""
        );
        assert!(problems.contains(&"pid 152 oom.totalpages: agent null kernel 16384".into()));
        assert!(notes.is_empty(), "{notes:?}");
    }
}
