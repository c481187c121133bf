//! How a kill ended: the victim's `oom_kill_lifecycle` follow-up record (kill→exit time, the
//! same `oom_id` and kill time as its event, the killer), and a userspace killer's SIGKILL as
//! an event of its own (`killer` set, the killer as the trigger).

use serde_json::Value;

use super::render;

fn num(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The records of `pid` of one `type` (`oom_kill_lifecycle`, `oom_kill_stuck`).
pub fn records_of<'a>(records: &'a [Value], pid: i64, kind: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|l| num(l, "pid") == Some(pid) && text(l, "type") == Some(kind))
        .collect()
}

/// The exit of victim `pid` killed by `killer` (`kernel`, `earlyoom`): among `records` (the
/// agent's lines) exactly one `oom_kill_lifecycle` record and no `oom_kill_stuck` one; with its
/// `event`, the record's kill time and `oom_id` are the event's and its kill→exit time is
/// between 0 and 60 s.
pub fn exit_record(
    pid: i64,
    event: Option<&Value>,
    records: &[Value],
    killer: &str,
) -> Vec<String> {
    let lines = records_of(records, pid, "oom_kill_lifecycle");
    let [line] = lines.as_slice() else {
        return vec![format!(
            "pid {pid}: {} oom_kill_lifecycle lines",
            lines.len()
        )];
    };
    let mut problems = Vec::new();
    if let Some(stuck) = records_of(records, pid, "oom_kill_stuck").first() {
        problems.push(format!("pid {pid}: reported stuck: {}", render(stuck)));
    }
    let Some(ev) = event else {
        return problems;
    };
    let to_exit = num(line, "kill_to_exit_ns");
    if !to_exit.is_some_and(|n| n > 0 && n < 60_000_000_000) {
        problems.push(format!("pid {pid}: kill_to_exit_ns {to_exit:?}"));
    }
    for (l, e) in [("kill_ktime_ns", "ktime_ns"), ("oom_id", "oom_id")] {
        let (a, b) = (line.get(l), ev.get(e));
        if a != b {
            problems.push(format!(
                "pid {pid}: lifecycle {l} {} != event {e} {}",
                a.map_or("absent".into(), render),
                b.map_or("absent".into(), render)
            ));
        }
    }
    if text(line, "killer") != Some(killer) {
        problems.push(format!("pid {pid}: killer {:?}", text(line, "killer")));
    }
    problems
}

/// A userspace killer's SIGKILL of `pid` (`comm`): among `records` exactly one event (no
/// `type`) with `killer` and `comm` as given, the killer as its trigger, and a lifecycle record
/// with a kill→exit time.
pub fn userspace_kill(killer: &str, pid: i64, comm: &str, records: &[Value]) -> Vec<String> {
    let evs: Vec<&Value> = records
        .iter()
        .filter(|e| num(e, "pid") == Some(pid) && e.get("type").is_none())
        .collect();
    let [ev] = evs.as_slice() else {
        return vec![format!("{killer} kill of {pid}: {} events", evs.len())];
    };
    let mut problems = Vec::new();
    for (key, want) in [("killer", killer), ("comm", comm)] {
        if text(ev, key) != Some(want) {
            problems.push(format!("{pid}: {key} {:?}, expected {want}", text(ev, key)));
        }
    }
    let trigger = ev.get("trigger").and_then(|t| text(t, "comm"));
    if trigger != Some(killer) {
        problems.push(format!(
            "{pid}: trigger.comm {trigger:?}, expected {killer}"
        ));
    }
    let lc = records_of(records, pid, "oom_kill_lifecycle");
    match lc.first().and_then(|l| num(l, "kill_to_exit_ns")) {
        Some(n) if n > 0 => {}
        other => problems.push(format!("{pid}: lifecycle kill_to_exit_ns {other:?}")),
    }
    problems
}

#[cfg(test)]
mod tests {
    //! On hand-written records; `vm-test`'s lifecycle tests (oomwatch-guest/src/check/lifecycle.rs)
    //! run the checks on a real guest's console.
    use super::*;
    use serde_json::json;

    fn lifecycle(pid: i64, killer: &str) -> Value {
        json!({"type": "oom_kill_lifecycle", "pid": pid, "oom_id": 3, "kill_ktime_ns": 100,
               "kill_to_exit_ns": 5000, "killer": killer})
    }

    #[test]
    fn an_exit_record_must_match_its_event_and_be_alone() {
        let ev = json!({"pid": 7, "oom_id": 3, "ktime_ns": 100});
        let mut records = vec![ev.clone(), lifecycle(7, "kernel")];
        assert_eq!(
            exit_record(7, Some(&ev), &records, "kernel"),
            [] as [String; 0]
        );
        assert_eq!(
            exit_record(7, Some(&ev), &records, "earlyoom"),
            ["pid 7: killer Some(\"kernel\")"]
        );
        let other = json!({"pid": 7, "oom_id": 4, "ktime_ns": 100});
        assert_eq!(
            exit_record(7, Some(&other), &records, "kernel"),
            ["pid 7: lifecycle oom_id 3 != event oom_id 4"]
        );
        records.push(json!({"type": "oom_kill_stuck", "pid": 7}));
        assert_eq!(
            exit_record(7, None, &records, "kernel"),
            ["pid 7: reported stuck: {2 keys}"]
        );
        records.push(lifecycle(7, "kernel"));
        assert_eq!(
            exit_record(7, Some(&ev), &records, "kernel"),
            ["pid 7: 2 oom_kill_lifecycle lines"]
        );
    }

    #[test]
    fn a_userspace_kill_is_one_event_triggered_by_the_killer() {
        let ev = json!({"pid": 9, "killer": "earlyoom", "comm": "hog",
                        "trigger": {"comm": "earlyoom"}});
        let records = [ev, lifecycle(9, "earlyoom")];
        assert_eq!(
            userspace_kill("earlyoom", 9, "hog", &records),
            [] as [String; 0]
        );
        assert_eq!(
            userspace_kill("my-killer", 9, "hog", &records),
            [
                "9: killer Some(\"earlyoom\"), expected my-killer",
                "9: trigger.comm Some(\"earlyoom\"), expected my-killer",
            ]
        );
        assert_eq!(
            userspace_kill("earlyoom", 9, "hog", &records[1..]),
            ["earlyoom kill of 9: 0 events"]
        );
    }
}
