//! The `candidates` check of `vm-test`: "why this victim" against the kernel's own task dump
//! of the same invocation, by `oomwatch_testkit::oracle::candidates` (the host test
//! `tests/candidates.rs` runs the same comparison on the host's kernel). For the agents whose candidates come from the `oom_badness` probe
//! (`fexit:oom_badness` for the fentry agent, `kretprobe:oom_badness` for the kprobe agent),
//! `sources.candidates` names the probe, the first candidate is the task the kernel chose
//! (`oom-kill:...,pid=`), the order is the kernel's ranking (points descending, ties by pid)
//! and each candidate's points, rss, swap, page tables and `oom_score_adj` equal the dump row's:
//! points = rss + swapents + pgtables_bytes / 4096 + oom_score_adj * (totalpages / 1000). The
//! probe's points are the kernel's own return values, so this also proves the dump-based
//! formula; the kmsg agent, whose candidates come from that dump (`kmsg:oom_report`), must
//! give the same list.
//!
//! The check applies when the agent's log names the probe rows; a console of an older agent
//! passes with a detail saying so. Where the kernel lacks the fexit hook (the OOM killer of
//! Debian 11's 5.10 calls a split copy, `oom_badness.part.0`, which fexit cannot reach; arm64
//! 6.1 attaches no fexit at all), the fentry agent's log must say so for `fexit:oom_badness`,
//! and its candidates must come from `kretprobe:oom_badness` (`source::candidates`).

use serde_json::Value;

use oomwatch_testkit::oracle::{self, candidates::Setting, pid_of};

use crate::{
    agent::{Agent, KMSG},
    check::oom::{PAGE_SIZE, TOTALPAGES},
    check::{at, check, source, Check},
    console::{key_value, probe_status, Invocation, ProbeStatus, DISABLED},
};

pub const FEXIT: &str = "fexit:oom_badness";
pub const KRETPROBE: &str = "kretprobe:oom_badness";
/// The agent's default `--candidates`.
const TOP: usize = 5;

/// The guest's setting: its cgroups' limit, 4 kB pages, the agent's default `--candidates`.
fn setting(source: &str) -> Setting<'_> {
    Setting {
        source,
        totalpages: TOTALPAGES,
        page_size: PAGE_SIZE,
        top: TOP,
    }
}

pub fn check_candidates(
    agent: &Agent,
    events: &[Value],
    invocations: &[Invocation],
    log: &[String],
    metrics: &[String],
) -> Check {
    let status = probe_status(log);
    if !status.contains_key(FEXIT) && !status.contains_key(KRETPROBE) {
        return check(
            "candidates",
            vec![],
            format!("not applicable: the agent's log names neither {FEXIT} nor {KRETPROBE} (an agent without the oom_badness probe)"),
        );
    }
    let from = source::candidates(agent, &status);
    let expected = from.probe;
    let mut problems = rows_and_metrics(expected, agent, &status, metrics);
    let mut seen = Vec::new();
    let mut notes = Vec::new();
    for e in events {
        let pid = pid_of(e);
        let Some(inv) = invocations.iter().find(|i| i.killed.contains(&pid)) else {
            problems.push(format!("pid {pid}: no kernel OOM invocation killed it"));
            continue;
        };
        if inv.header {
            let setting = setting(expected);
            problems.extend(oracle::candidates::match_dump(e, inv, &setting));
            seen.push(format!("pid {pid}: {:?}", oracle::candidates::of_event(e)));
        } else {
            match without_a_dump(expected, e, pid) {
                Ok(note) => notes.push(note),
                Err(problem) => problems.push(problem),
            }
        }
    }
    let what = match expected != KMSG {
        true => "the kernel's own oom_badness() points",
        false => "points from the dump",
    };
    let ok = format!(
        "{} events: sources.candidates {}, chosen first, order = kernel's ranking, {what} = \
         rss + swapents + pgtables_bytes/{PAGE_SIZE} + adj*({TOTALPAGES}/1000) of the dump \
         rows, rss swap pgtables oom_score_adj = dump\n{}",
        events.len(),
        expected,
        seen.join("\n")
    );
    let checked = if problems.is_empty() {
        let mut detail = vec![ok];
        detail.extend(notes);
        check("candidates", vec![], detail.join("\n"))
    } else {
        check("candidates", problems, String::new())
    };
    checked.on(from.fallback)
}

/// The kernel suppressed the report (rate limit): no dump to compare with. The probe still
/// scores, the chosen task first; the dump source has nothing. A note when it is so.
fn without_a_dump(expected: &str, e: &Value, pid: i64) -> Result<String, String> {
    let source = at(e, "sources.candidates").and_then(Value::as_str);
    let pids: Vec<i64> = oracle::candidates::of_event(e)
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| *p != i64::MIN)
        .collect();
    let chosen = at(e, "chosen.pid").and_then(Value::as_i64);
    match expected != KMSG {
        true if source != Some(expected) || pids.first() != chosen.as_ref() => Err(format!(
            "pid {pid} (no report header): sources.candidates {source:?}, candidates \
             {pids:?}, expected {expected} with chosen {chosen:?} first"
        )),
        false if e.get("candidates") != Some(&Value::Null) => Err(format!(
            "pid {pid} (no report header): candidates {pids:?}, expected null"
        )),
        _ => Ok(format!(
            "pid {pid}: report header suppressed, points not compared"
        )),
    }
}

/// The agent's candidates row attached, the rows it disabled unavailable, in its log and its
/// `oomwatch_probe_attached`; nothing dropped.
fn rows_and_metrics(
    expected: &str,
    agent: &Agent,
    status: &ProbeStatus,
    metrics: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    let attached = |p: &str| format!("oomwatch_probe_attached{{probe=\"{p}\"}}");
    if expected != KMSG {
        match status.get(expected) {
            Some((true, _)) => {}
            other => problems.push(format!(
                "{expected}: {other:?} in the log, expected attached"
            )),
        }
        let got = key_value(metrics, &attached(expected));
        if got != Some(1) {
            problems.push(format!("{} {got:?}, expected 1", attached(expected)));
        }
        let dropped = key_value(metrics, "oomwatch_candidates_dropped_total");
        if dropped != Some(0) {
            problems.push(format!(
                "oomwatch_candidates_dropped_total {dropped:?}, expected 0"
            ));
        }
    }
    for p in agent.candidates_disabled {
        match status.get(*p) {
            Some((false, reason)) if reason == DISABLED => {}
            other => problems.push(format!(
                "{p}: {other:?} in the log, expected unavailable ({DISABLED})"
            )),
        }
        let got = key_value(metrics, &attached(p));
        if got != Some(0) {
            problems.push(format!("{} {got:?}, expected 0", attached(p)));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AGENTS;

    /// The /g invocation: a hog (chosen), a sleeper with oom_score_adj 500, a plain sleeper.
    fn invocation() -> Invocation {
        let row = |rss: i64, pgt: i64, adj: i64| {
            [
                ("rss", rss),
                ("swapents", 0),
                ("pgtables_bytes", pgt),
                ("oom_score_adj", adj),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .collect()
        };
        Invocation {
            header: true,
            summary: [("pid".to_string(), "10".to_string())].into(),
            tasks: [
                (10, row(16668, 167936, 0)),
                (11, row(1, 28672, 500)),
                (12, row(1, 28672, 0)),
                (13, row(900, 4096, -1000)),
            ]
            .into(),
            killed: vec![10, 11, 12],
            ..Invocation::default()
        }
    }

    fn candidate(pid: i64, points: i64, rss: i64, pgt: i64, adj: i64) -> String {
        format!(
            r#"{{"pid":{pid},"points":{points},"rss":{},"swap":0,"pgtables":{pgt},"oom_score_adj":{adj}}}"#,
            rss * PAGE_SIZE
        )
    }

    fn event(pid: i64, source: &str, list: &[String]) -> Value {
        serde_json::from_str(&format!(
            r#"{{"pid":{pid},"chosen":{{"pid":10}},"candidates":[{}],"sources":{{"candidates":"{source}"}}}}"#,
            list.join(",")
        ))
        .unwrap()
    }

    fn log(lines: &[(&str, bool)]) -> Vec<String> {
        lines
            .iter()
            .map(|(p, ok)| match ok {
                true => format!(
                    r#"{{"level":"INFO","fields":{{"message":"probe attached","probe":"{p}","reads":"x"}}}}"#
                ),
                false => format!(
                    r#"{{"level":"WARN","fields":{{"message":"probe unavailable","probe":"{p}","reason":"{DISABLED}"}}}}"#
                ),
            })
            .collect()
    }

    fn right() -> Vec<String> {
        let adj_term = 500 * (TOTALPAGES / 1000);
        vec![
            candidate(10, 16668 + 41, 16668, 167936, 0),
            candidate(11, 1 + 7 + adj_term, 1, 28672, 500),
            candidate(12, 1 + 7, 1, 28672, 0),
        ]
    }

    #[test]
    fn probe_candidates_must_equal_the_kernels_dump() {
        let fentry = &AGENTS[0];
        let log = log(&[(FEXIT, true)]);
        let metrics = [
            r#"oomwatch_probe_attached{probe="fexit:oom_badness"} 1"#.to_string(),
            "oomwatch_candidates_dropped_total 0".to_string(),
        ];
        let inv = [invocation()];
        let run = |events: &[Value]| check_candidates(fentry, events, &inv, &log, &metrics);
        let ok = run(&[event(10, FEXIT, &right()), event(11, FEXIT, &right())]);
        assert!(ok.ok, "{}", ok.detail);
        assert!(ok
            .detail
            .starts_with("2 events: sources.candidates fexit:oom_badness"));

        let mut swapped = right();
        swapped.swap(1, 2);
        let bad = run(&[event(10, FEXIT, &swapped)]);
        assert!(
            !bad.ok && bad.detail.contains("candidates (pid, points)"),
            "{}",
            bad.detail
        );
        let mut off = right();
        off[1] = off[1].replace(r#""points":8008"#, r#""points":8009"#);
        assert!(!run(&[event(10, FEXIT, &off)]).ok);
        let mut rss = right();
        rss[2] = rss[2].replace(r#""rss":4096"#, r#""rss":8192"#);
        let bad = run(&[event(10, FEXIT, &rss)]);
        assert_eq!(
            bad.detail,
            "pid 10 candidate 12 rss: agent Some(8192), kernel Some(4096)"
        );
        let bad = run(&[event(10, "kmsg:oom_report", &right())]);
        assert!(bad.detail.contains("sources.candidates"), "{}", bad.detail);
        let bad = check_candidates(fentry, &[], &inv, &log, &metrics[..1]);
        assert_eq!(
            bad.detail,
            "oomwatch_candidates_dropped_total None, expected 0"
        );
    }

    #[test]
    fn the_kmsg_agent_disables_both_rows_and_an_old_agent_is_not_checked() {
        let kmsg = &AGENTS[2];
        let inv = [invocation()];
        let log = log(&[(FEXIT, false), (KRETPROBE, false)]);
        let metrics = [
            r#"oomwatch_probe_attached{probe="fexit:oom_badness"} 0"#.to_string(),
            r#"oomwatch_probe_attached{probe="kretprobe:oom_badness"} 0"#.to_string(),
        ];
        let ok = check_candidates(kmsg, &[event(12, KMSG, &right())], &inv, &log, &metrics);
        assert!(ok.ok, "{}", ok.detail);
        let bad = check_candidates(kmsg, &[], &inv, &log, &metrics[..1]);
        assert!(!bad.ok && bad.detail.contains("kretprobe:oom_badness"));
        let old = check_candidates(kmsg, &[], &inv, &[], &[]);
        assert!(
            old.ok && old.detail.starts_with("not applicable"),
            "{}",
            old.detail
        );
    }
}
