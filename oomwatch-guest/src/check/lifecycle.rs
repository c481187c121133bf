//! `vm-test` checks of how each kill ended and of userspace killers: every victim's
//! `oom_kill_lifecycle` line (kill→exit time, same `oom_id` and kill time as its event), and,
//! when the guest ran its earlyoom phase, the event of the real earlyoom's SIGKILL
//! (`killer: "earlyoom"`).
//!
//! The assertions on the records are `oomwatch_testkit::oracle::lifecycle`'s, which the host
//! test `tests/lifecycle.rs` runs too. Both are required: every kernel of the matrix has the `sched_process_exit` tracepoint, so the
//! exit row must attach (unless this agent disabled it with `--disable-probe`), and the guest
//! always has earlyoom (`vm-test` puts Debian's in the initramfs), so its phase must have run.

use oomwatch_testkit::oracle::lifecycle;
use serde_json::Value;

use crate::{
    agent::Kernel,
    check::{check, Check},
    console::probe_status,
};

/// The exit probe's row in the probe table.
const EXIT_PROBE: &str = "tracepoint:sched/sched_process_exit";
/// Console section of the earlyoom phase: `earlyoom PID STATUS COMM` lines.
pub const USERSPACE_SECTION: &str = "userspace-victims";

/// Lines of the events section that are not kernel OOM events: follow-up records (with a
/// `type`) and userspace killers' kills (`killer` other than `kernel`).
pub fn not_a_kernel_event(v: &Value) -> bool {
    v.get("type").is_some()
        || v.get("killer")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "kernel")
}

fn num(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The checks of one agent; `events` are its kernel events, `others` the rest of its lines.
pub fn checks(k: &Kernel, log: &[String], events: &[Value], others: &[Value]) -> Vec<Check> {
    vec![lifecycle(k, log, events, others), earlyoom(k, others)]
}

fn lifecycle(k: &Kernel, log: &[String], events: &[Value], others: &[Value]) -> Check {
    let status = probe_status(log);
    match status.get(EXIT_PROBE) {
        Some((true, _)) => {}
        Some((false, why)) if why.contains("disabled by --disable-probe") => {
            return check(
                "kill lifecycle",
                Vec::new(),
                format!("not applicable: {EXIT_PROBE} disabled for this agent"),
            )
        }
        other => {
            let why = other.map_or("no such row in the agent's log", |(_, why)| why.as_str());
            return check(
                "kill lifecycle",
                vec![format!("{EXIT_PROBE} did not attach: {why}")],
                String::new(),
            );
        }
    }
    let mut problems = Vec::new();
    let mut times = Vec::new();
    for v in k.victims {
        let event = events.iter().find(|e| num(e, "pid") == Some(v.pid));
        let found = lifecycle::exit_record(v.pid, event, others, "kernel");
        let lines = lifecycle::records_of(others, v.pid, "oom_kill_lifecycle");
        if let ([line], Some(_)) = (lines.as_slice(), event) {
            times.push(format!(
                "{} {}µs reaper {}",
                v.pid,
                num(line, "kill_to_exit_ns").unwrap_or(0) / 1000,
                text(line, "reaper").unwrap_or("?")
            ));
        }
        problems.extend(found);
    }
    check(
        "kill lifecycle",
        problems,
        format!("kill→exit per victim: {}", times.join(", ")),
    )
}

fn earlyoom(k: &Kernel, others: &[Value]) -> Check {
    let phase = k.console.section(USERSPACE_SECTION);
    if !k.console.sections.contains_key(USERSPACE_SECTION) {
        return check(
            "userspace killer",
            vec!["the guest ran no earlyoom phase (earlyoom missing from the initramfs?)".into()],
            String::new(),
        );
    }
    let mut problems = Vec::new();
    let mut said = Vec::new();
    let rows: Vec<Vec<&str>> = phase
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    if rows.is_empty() {
        problems.push("the earlyoom phase recorded no victim".into());
    }
    for row in rows {
        let [killer, pid, status, comm] = row.as_slice() else {
            problems.push(format!("malformed line {row:?}"));
            continue;
        };
        let pid: i64 = pid.parse().unwrap_or(-1);
        if *status != "137" {
            problems.push(format!("{comm} {pid} exited {status}, not 137 (SIGKILL)"));
        }
        let found = lifecycle::userspace_kill(killer, pid, comm, others);
        if found.is_empty() {
            let lc = lifecycle::records_of(others, pid, "oom_kill_lifecycle");
            let n = lc
                .first()
                .and_then(|l| num(l, "kill_to_exit_ns"))
                .unwrap_or(0);
            said.push(format!(
                "{killer} killed {comm} {pid}, exit after {}µs",
                n / 1000
            ));
        }
        problems.extend(found);
    }
    check("userspace killer", problems, said.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{Console, Victim};

    const LOG: &str = r#"{"level":"INFO","fields":{"message":"probe attached","probe":"tracepoint:sched/sched_process_exit","reads":"x"}}"#;

    fn run(text: &str, lines: &[&str]) -> Vec<Check> {
        let console = Console::parse(text);
        let victims = [Victim {
            cgroup: "t".into(),
            pid: 187,
            status: 137,
        }];
        let k = Kernel {
            console: &console,
            victims: &victims,
            kills: &[],
            invocations: &[],
        };
        let all: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        let (others, events): (Vec<Value>, Vec<Value>) =
            all.into_iter().partition(not_a_kernel_event);
        checks(&k, &[LOG.to_string()], &events, &others)
    }

    const EVENT: &str = r#"{"pid":187,"ktime_ns":100,"oom_id":1,"killer":"kernel"}"#;
    const LIFECYCLE: &str = r#"{"type":"oom_kill_lifecycle","pid":187,"kill_ktime_ns":100,"oom_id":1,"killer":"kernel","kill_to_exit_ns":5000,"reaper":"none"}"#;
    const PHASE: &str =
        "@@OWVM BEGIN userspace-victims@@\nearlyoom 200 137 dd\n@@OWVM END userspace-victims@@\n";
    const EO_EVENT: &str =
        r#"{"pid":200,"comm":"dd","killer":"earlyoom","trigger":{"comm":"earlyoom"}}"#;
    const EO_LIFECYCLE: &str =
        r#"{"type":"oom_kill_lifecycle","pid":200,"killer":"earlyoom","kill_to_exit_ns":900}"#;

    #[test]
    fn lifecycle_lines_and_the_earlyoom_kill_pass() {
        let c = run(PHASE, &[EVENT, LIFECYCLE, EO_EVENT, EO_LIFECYCLE]);
        assert!(c.iter().all(|c| c.ok), "{c:#?}");
        assert!(c[1].detail.contains("earlyoom killed dd 200"), "{c:#?}");
    }

    #[test]
    fn a_missing_or_wrong_lifecycle_line_fails() {
        let c = run("", &[EVENT]);
        assert!(
            !c[0].ok && c[0].detail.contains("0 oom_kill_lifecycle lines"),
            "{c:#?}"
        );
        let wrong = LIFECYCLE.replace(r#""oom_id":1"#, r#""oom_id":2"#);
        let c = run("", &[EVENT, &wrong]);
        assert!(!c[0].ok && c[0].detail.contains("oom_id"), "{c:#?}");
        // Without the earlyoom phase that check fails: the guest always has earlyoom.
        assert!(
            !c[1].ok && c[1].detail.contains("no earlyoom phase"),
            "{c:#?}"
        );
    }

    #[test]
    fn an_exit_row_that_did_not_attach_fails_unless_disabled() {
        let console = Console::parse(PHASE);
        let k = Kernel {
            console: &console,
            victims: &[],
            kills: &[],
            invocations: &[],
        };
        let row = |attached: &str| {
            let (message, key, why) = match attached {
                "disabled" => ("probe unavailable", "reason", "disabled by --disable-probe"),
                _ => ("probe unavailable", "reason", "tracefs: no such event"),
            };
            format!(
                r#"{{"level":"WARN","fields":{{"message":"{message}","probe":"{EXIT_PROBE}","{key}":"{why}"}}}}"#
            )
        };
        let failed = checks(&k, &[row("failed")], &[], &[]);
        assert!(
            !failed[0].ok && failed[0].detail.contains("did not attach"),
            "{failed:#?}"
        );
        let disabled = checks(&k, &[row("disabled")], &[], &[]);
        assert!(
            disabled[0].ok && disabled[0].detail.contains("not applicable"),
            "{disabled:#?}"
        );
        let absent = checks(&k, &[], &[], &[]);
        assert!(!absent[0].ok, "{absent:#?}");
    }

    #[test]
    fn a_missing_or_misattributed_earlyoom_event_fails() {
        let c = run(PHASE, &[EVENT, LIFECYCLE]);
        assert!(!c[1].ok && c[1].detail.contains("0 events"), "{c:#?}");
        let other = EO_EVENT.replace(r#""killer":"earlyoom""#, r#""killer":"oomd""#);
        let c = run(PHASE, &[EVENT, LIFECYCLE, &other, EO_LIFECYCLE]);
        assert!(!c[1].ok && c[1].detail.contains("killer"), "{c:#?}");
    }
}
