//! The `sigkill attribution` check of `vm-test` (issue 15): every SIGKILL to a task in a
//! non-root memory cgroup gives a `{"type":"sigkill"}` line naming its sender's kind.
//!
//! For each kernel-killed victim the agent reported (`/t`, `/g`): exactly one `sigkill` line
//! whose signal was delivered, with `target.pid` (or `target.tgid`) the victim, `si_code` 128
//! (`SI_KERNEL`), `target.cgroup` its cgroup, `sender_kind` `oom_group` for the members of the
//! `memory.oom.group` invocation and `oom_kernel` for the others, and the `oom_id` of the
//! victim's event. The kernel's group sweep signals the task it chose a second time (it prints
//! "Killed process" twice): that second SIGKILL finds the task already dying, so its line says
//! `delivered: false`, and it must be attributed like the first. For each victim of the
//! earlyoom phase: a `sigkill` line from `oom_userspace` whose `sender.exe` ends in `earlyoom`.
//! `oomwatch_sigkills_dropped_total` is scraped, 0 for both reasons.
//!
//! Every kernel of the matrix has the `signal_generate` tracepoint: unless this agent disabled
//! both rows with `--disable-probe`, one of them must attach.

use serde_json::Value;
use std::collections::BTreeMap;

use oomwatch_testkit::oracle::pid_of;

use crate::{
    agent::Kernel,
    check::{check, lifecycle::USERSPACE_SECTION, Check},
    console::{key_value, probe_status, reason_summary, DISABLED},
};

/// The rows that load the SIGKILL program, in the agent's order (the tracepoint is tried only
/// when the BTF row did not attach).
pub const BTF_ROW: &str = "tp_btf:signal_generate:sigkill";
pub const TP_ROW: &str = "tracepoint:signal/signal_generate:sigkill";
const NAME: &str = "sigkill attribution";
/// uapi `SI_KERNEL`: the kernel's own kills.
const SI_KERNEL: i64 = 0x80;
const DROPPED: &str = "oomwatch_sigkills_dropped_total";

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn num(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

/// The check of one agent: `events` are its kernel OOM events of `/t` and `/g`, `others` its
/// other lines (the `sigkill` lines among them), `metrics` its scrape.
pub fn check_sigkills(
    k: &Kernel,
    log: &[String],
    metrics: &[String],
    events: &[Value],
    others: &[Value],
) -> Check {
    let row = match attached_row(log) {
        Ok(Some(row)) => row,
        Ok(None) => {
            return check(
                NAME,
                Vec::new(),
                format!("not applicable: {BTF_ROW} and {TP_ROW} disabled for this agent"),
            )
        }
        Err(why) => {
            return check(
                NAME,
                vec![format!("no signal_generate row: {why}")],
                "".into(),
            )
        }
    };
    let lines: Vec<&Value> = others
        .iter()
        .filter(|v| text(v, &["type"]) == Some("sigkill"))
        .collect();
    let mut problems = Vec::new();
    let mut said = kernel_victims(k, events, &lines, &mut problems);
    said.extend(userspace_victims(k, &lines, &mut problems));
    said.push(dropped(metrics, &mut problems));
    check(
        NAME,
        problems,
        format!("{row}, {} sigkill lines: {}", lines.len(), said.join("; ")),
    )
}

/// The `signal_generate` row that attached (with why the BTF row did not, when the tracepoint
/// is its fallback); `Ok(None)` when both were disabled with `--disable-probe`; else what the
/// log said of each.
fn attached_row(log: &[String]) -> Result<Option<String>, String> {
    let status = probe_status(log);
    let mut why = Vec::new();
    for row in [BTF_ROW, TP_ROW] {
        match status.get(row) {
            Some((true, _)) if why.is_empty() => return Ok(Some(row.to_string())),
            Some((true, _)) => return Ok(Some(format!("{row} (fallback: {})", why.join("; ")))),
            Some((false, d)) if d == DISABLED => {}
            Some((false, d)) => why.push(format!("{row} unavailable: {}", reason_summary(d))),
            None => why.push(format!("{row}: no such row in the agent's log")),
        }
    }
    if why.is_empty() {
        Ok(None)
    } else {
        Err(why.join("; "))
    }
}

/// The `sigkill` lines whose target is `pid` (as a thread or a thread group).
fn of_target<'a>(lines: &[&'a Value], pid: i64) -> Vec<&'a Value> {
    lines
        .iter()
        .copied()
        .filter(|l| {
            num(l, &["target", "pid"]) == Some(pid) || num(l, &["target", "tgid"]) == Some(pid)
        })
        .collect()
}

/// What the line of the kernel's SIGKILL to `pid` says that it should not.
fn kernel_line(pid: i64, l: &Value, cgroup: &str, kind: &str, oom_id: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let got = |path: &[&str]| path.iter().try_fold(l, |v, k| v.get(k)).cloned();
    let want = [
        (&["si_code"][..], Value::from(SI_KERNEL)),
        (&["sender_kind"][..], Value::from(kind)),
        (&["oom_id"][..], oom_id.clone()),
        (&["target", "cgroup"][..], Value::from(cgroup)),
    ];
    for (path, want) in want {
        let got = got(path).unwrap_or(Value::Null);
        if got != want {
            problems.push(format!(
                "pid {pid} sigkill {}: {got}, expected {want}",
                path.join(".")
            ));
        }
    }
    problems
}

/// Every kernel-killed victim of `/t` and `/g` the agent reported; returns the detail per
/// cgroup and kind: `/t oom_kernel 3/3 (pid 187 oom_id 1, ...)`.
fn kernel_victims(
    k: &Kernel,
    events: &[Value],
    lines: &[&Value],
    problems: &mut Vec<String>,
) -> Vec<String> {
    // (cgroup, kind) -> (victims with their line, victims expected, "pid P oom_id N").
    let mut per: BTreeMap<(String, &str), (usize, usize, Vec<String>)> = BTreeMap::new();
    for e in events {
        let pid = pid_of(e);
        let Some(v) = k.victims.iter().find(|v| v.pid == pid) else {
            continue;
        };
        let cgroup = format!("/{}", v.cgroup);
        let group = k
            .invocations
            .iter()
            .any(|i| i.group && i.killed.contains(&pid));
        let kind = if group { "oom_group" } else { "oom_kernel" };
        let oom_id = e.get("oom_id").cloned().unwrap_or(Value::Null);
        if oom_id.is_null() {
            problems.push(format!("pid {pid}: its event has no oom_id to compare"));
        }
        let mine = of_target(lines, pid);
        let delivered = mine
            .iter()
            .filter(|l| l.get("delivered") == Some(&Value::Bool(true)))
            .count();
        let entry = per.entry((cgroup.clone(), kind)).or_default();
        entry.1 += 1;
        if delivered != 1 {
            problems.push(format!(
                "pid {pid} ({cgroup}): {delivered} delivered sigkill lines ({} in all), expected 1",
                mine.len()
            ));
        } else {
            entry.0 += 1;
            entry.2.push(format!("pid {pid} oom_id {oom_id}"));
        }
        for l in mine {
            problems.extend(kernel_line(pid, l, &cgroup, kind, &oom_id));
        }
    }
    per.into_iter()
        .map(|((cg, kind), (found, want, ids))| {
            format!("{cg} {kind} {found}/{want} ({})", ids.join(", "))
        })
        .collect()
}

/// Each victim of the earlyoom phase: its SIGKILL attributed to `oom_userspace` by the
/// sender's executable. Returns `earlyoom: dd 200 oom_userspace by /usr/bin/earlyoom (si_code 0)`.
fn userspace_victims(k: &Kernel, lines: &[&Value], problems: &mut Vec<String>) -> Vec<String> {
    if !k.console.sections.contains_key(USERSPACE_SECTION) {
        problems.push("the guest ran no earlyoom phase".into());
        return Vec::new();
    }
    let mut said = Vec::new();
    for row in k.console.section(USERSPACE_SECTION) {
        let w: Vec<&str> = row.split_whitespace().collect();
        let [killer, pid, _, comm] = w.as_slice() else {
            problems.push(format!("malformed {USERSPACE_SECTION} line {row:?}"));
            continue;
        };
        let pid: i64 = pid.parse().unwrap_or(-1);
        let mine = of_target(lines, pid);
        if mine.is_empty() {
            problems.push(format!("{killer} kill of {comm} {pid}: no sigkill line"));
        }
        for l in &mine {
            let kind = text(l, &["sender_kind"]);
            let exe = text(l, &["sender", "exe"]);
            if kind != Some("oom_userspace") || !exe.is_some_and(|e| e.ends_with(*killer)) {
                problems.push(format!(
                    "{killer} kill of {comm} {pid}: sender_kind {kind:?} sender.exe {exe:?}, \
                     expected oom_userspace by .../{killer}"
                ));
            } else {
                said.push(format!(
                    "{killer}: {comm} {pid} oom_userspace by {} (si_code {})",
                    exe.unwrap_or_default(),
                    num(l, &["si_code"]).map_or("null".into(), |c| c.to_string())
                ));
            }
        }
    }
    said
}

/// `oomwatch_sigkills_dropped_total` is scraped, 0 for both reasons (no storm in the guest).
fn dropped(metrics: &[String], problems: &mut Vec<String>) -> String {
    let mut said = Vec::new();
    for reason in ["rate_limited", "ring_full"] {
        let key = format!("{DROPPED}{{reason=\"{reason}\"}}");
        match key_value(metrics, &key) {
            Some(0) => said.push(format!("{reason} 0")),
            got => problems.push(format!("{key} {got:?}, expected 0")),
        }
    }
    format!("{DROPPED} {}", said.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{Console, Invocation, Victim};

    const ATTACHED: &str = r#"{"level":"INFO","fields":{"message":"probe attached","probe":"tp_btf:signal_generate:sigkill","reads":"SIGKILLs"}}"#;
    const METRICS: [&str; 2] = [
        r#"oomwatch_sigkills_dropped_total{reason="rate_limited"} 0"#,
        r#"oomwatch_sigkills_dropped_total{reason="ring_full"} 0"#,
    ];
    const PHASE: &str =
        "@@OWVM BEGIN userspace-victims@@\nearlyoom 200 137 dd\n@@OWVM END userspace-victims@@\n";
    /// /t 187 (oom_id 1), /g 190 chosen and 191 swept along (oom_id 2).
    const EVENTS: [&str; 3] = [
        r#"{"pid":187,"cgroup":"/t","oom_id":1}"#,
        r#"{"pid":190,"cgroup":"/g","oom_id":2}"#,
        r#"{"pid":191,"cgroup":"/g","oom_id":2}"#,
    ];

    fn sigkill(pid: i64, cg: &str, kind: &str, oom_id: i64, delivered: bool) -> String {
        format!(
            r#"{{"type":"sigkill","target":{{"pid":{pid},"tgid":{pid},"cgroup":"{cg}"}},"sender":{{"pid":9,"exe":"/usr/bin/dd"}},"sender_kind":"{kind}","oom_id":{oom_id},"si_code":128,"delivered":{delivered}}}"#
        )
    }

    fn good_lines() -> Vec<String> {
        vec![
            sigkill(187, "/t", "oom_kernel", 1, true),
            sigkill(190, "/g", "oom_group", 2, true),
            sigkill(191, "/g", "oom_group", 2, true),
            sigkill(190, "/g", "oom_group", 2, false),
            r#"{"type":"sigkill","target":{"pid":200,"tgid":200,"cgroup":"/e"},"sender":{"pid":210,"exe":"/usr/bin/earlyoom"},"sender_kind":"oom_userspace","oom_id":null,"si_code":0,"delivered":true}"#.into(),
        ]
    }

    fn run(console: &str, log: &[&str], lines: &[String]) -> Check {
        let console = Console::parse(console);
        let victims: Vec<Victim> = [("t", 187), ("g", 190), ("g", 191)]
            .map(|(cg, pid)| Victim {
                cgroup: cg.into(),
                pid,
                status: 137,
            })
            .into();
        let invocations = [
            Invocation {
                killed: vec![187],
                ..Invocation::default()
            },
            Invocation {
                killed: vec![190, 191, 190],
                group: true,
                ..Invocation::default()
            },
        ];
        let k = Kernel {
            console: &console,
            victims: &victims,
            kills: &[],
            invocations: &invocations,
        };
        let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap();
        let events: Vec<Value> = EVENTS.iter().map(|l| parse(l)).collect();
        let others: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
        let log: Vec<String> = log.iter().map(|l| l.to_string()).collect();
        let metrics = METRICS.map(String::from);
        check_sigkills(&k, &log, &metrics, &events, &others)
    }

    #[test]
    fn attributed_lines_pass() {
        let c = run(PHASE, &[ATTACHED], &good_lines());
        assert!(c.ok, "{c:#?}");
        assert_eq!(
            c.detail,
            "tp_btf:signal_generate:sigkill, 5 sigkill lines: /g oom_group 2/2 (pid 190 oom_id 2, \
             pid 191 oom_id 2); /t oom_kernel 1/1 (pid 187 oom_id 1); earlyoom: dd 200 \
             oom_userspace by /usr/bin/earlyoom (si_code 0); oomwatch_sigkills_dropped_total \
             rate_limited 0, ring_full 0"
        );
    }

    #[test]
    fn a_missing_or_doubled_line_fails() {
        let mut lines = good_lines();
        lines.remove(2);
        let c = run(PHASE, &[ATTACHED], &lines);
        assert_eq!(
            c.detail,
            "pid 191 (/g): 0 delivered sigkill lines (0 in all), expected 1"
        );
        let mut lines = good_lines();
        lines.push(lines[0].clone());
        let c = run(PHASE, &[ATTACHED], &lines);
        assert_eq!(
            c.detail,
            "pid 187 (/t): 2 delivered sigkill lines (2 in all), expected 1"
        );
    }

    #[test]
    fn a_wrong_kind_oom_id_or_code_fails() {
        let mut lines = good_lines();
        lines[1] = lines[1].replace(r#""oom_group""#, r#""oom_kernel""#);
        lines[0] = lines[0].replace(r#""oom_id":1"#, r#""oom_id":2"#);
        lines[3] = lines[3].replace(r#""si_code":128"#, r#""si_code":0"#);
        let c = run(PHASE, &[ATTACHED], &lines);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "pid 187 sigkill oom_id: 2, expected 1\n\
             pid 190 sigkill sender_kind: \"oom_kernel\", expected \"oom_group\"\n\
             pid 190 sigkill si_code: 0, expected 128"
        );
    }

    #[test]
    fn the_earlyoom_kill_must_be_attributed_by_its_executable() {
        let mut lines = good_lines();
        lines[4] = lines[4]
            .replace("/usr/bin/earlyoom", "/usr/bin/python3")
            .replace("oom_userspace", "other");
        let c = run(PHASE, &[ATTACHED], &lines);
        assert!(
            !c.ok && c.detail.contains("sender_kind Some(\"other\")"),
            "{c:#?}"
        );
        let c = run(PHASE, &[ATTACHED], &good_lines()[..4]);
        assert_eq!(c.detail, "earlyoom kill of dd 200: no sigkill line");
        let c = run("", &[ATTACHED], &good_lines());
        assert_eq!(c.detail, "the guest ran no earlyoom phase");
    }

    #[test]
    fn a_row_that_did_not_attach_fails_unless_disabled() {
        let row = |probe: &str, why: &str| {
            format!(
                r#"{{"level":"WARN","fields":{{"message":"probe unavailable","probe":"{probe}","reason":"{why}"}}}}"#
            )
        };
        let btf_failed = row(BTF_ROW, "verifier: invalid mem access");
        let tp_failed = row(TP_ROW, "tracefs: no such event");
        let c = run(PHASE, &[&btf_failed, &tp_failed], &[]);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "no signal_generate row: tp_btf:signal_generate:sigkill unavailable: verifier: invalid mem \
             access; tracepoint:signal/signal_generate:sigkill unavailable: tracefs: no such event"
        );
        // The tracepoint attached after the BTF row failed: the check runs.
        let tp_ok = ATTACHED.replace(BTF_ROW, TP_ROW);
        let c = run(PHASE, &[&btf_failed, &tp_ok], &good_lines());
        assert!(c.ok && c.detail.starts_with(TP_ROW), "{c:#?}");
        assert!(
            c.detail.contains(
                "(fallback: tp_btf:signal_generate:sigkill unavailable: verifier: invalid mem access)"
            ),
            "{c:#?}"
        );
        // Both disabled: not applicable; one disabled and the other failed: a failure.
        let (btf_off, tp_off) = (row(BTF_ROW, DISABLED), row(TP_ROW, DISABLED));
        let c = run(PHASE, &[&btf_off, &tp_off], &[]);
        assert!(c.ok && c.detail.starts_with("not applicable"), "{c:#?}");
        let c = run(PHASE, &[&btf_off, &tp_failed], &[]);
        assert!(!c.ok && c.detail.contains("no such event"), "{c:#?}");
        let c = run(PHASE, &[], &[]);
        assert!(!c.ok && c.detail.contains("no such row"), "{c:#?}");
    }

    #[test]
    fn a_refused_btf_row_is_named_with_the_verifiers_verdict() {
        let reason = "load: the BPF_PROG_LOAD syscall returned Argument list too long (os error \
                      7). Verifier output: 0: R1=ctx(off=0,imm=0) R10=fp0\n\
                      3626: (3d) if r1 >= r2 goto pc+22     ; frame1: R1_w=138\n\
                      BPF program is too large. Processed 1000001 insn\n\
                      verification time 64931914 usec\n\
                      stack depth 200+32+0+0+32+32+32\n\
                      processed 1000001 insns (limit 1000000) max_states_per_insn 37 \
                      total_states 50468 peak_states 6331 mark_read 204\n";
        let failed = serde_json::json!({"level": "WARN", "fields": {"message": "probe unavailable",
            "probe": BTF_ROW, "reason": reason}});
        let tp_ok = ATTACHED.replace(BTF_ROW, TP_ROW);
        let c = run(PHASE, &[&failed.to_string(), &tp_ok], &good_lines());
        assert!(c.ok, "{c:#?}");
        assert!(
            c.detail.starts_with(
                "tracepoint:signal/signal_generate:sigkill (fallback: tp_btf:signal_generate:sigkill \
                 unavailable: load: the BPF_PROG_LOAD syscall returned Argument list too long \
                 (os error 7): BPF program is too large. Processed 1000001 insn: processed \
                 1000001 insns (limit 1000000) max_states_per_insn 37 total_states 50468 \
                 peak_states 6331 mark_read 204), 5 sigkill lines: "
            ),
            "{}",
            c.detail
        );
    }

    #[test]
    fn dropped_sigkills_fail() {
        let console = Console::parse(PHASE);
        let k = Kernel {
            console: &console,
            victims: &[],
            kills: &[],
            invocations: &[],
        };
        let metrics = [METRICS[0].replace(" 0", " 3")];
        let c = check_sigkills(&k, &[ATTACHED.into()], &metrics, &[], &[]);
        assert_eq!(
            c.detail,
            "earlyoom kill of dd 200: no sigkill line\n\
             oomwatch_sigkills_dropped_total{reason=\"rate_limited\"} Some(3), expected 0\n\
             oomwatch_sigkills_dropped_total{reason=\"ring_full\"} None, expected 0"
        );
    }

    /// On the real console fixture: a group member's line attributed to the OOM killer alone,
    /// and the chosen task's second (undelivered) line given another oom_id, fail for that agent
    /// only; the group kill's second SIGKILL to its chosen task is no second delivered line.
    #[test]
    fn the_real_sample_fails_for_a_misattributed_group_kill() {
        use crate::check::{
            check_console,
            fixture::{get, mutate_sigkills, sample, FIXTURE},
        };
        let s = sample();
        let (chosen, member) = (s.group_chosen(), s.group_members()[0]);
        let id = s.value("events-kprobe", member, "oom_id");
        let text = mutate_sigkills(
            FIXTURE,
            "events-kprobe",
            member,
            r#""sender_kind":"oom_group""#,
            r#""sender_kind":"oom_kernel""#,
        );
        let undelivered = format!(r#""oom_id":{id},"si_code":128,"delivered":false"#);
        let text = mutate_sigkills(
            &text,
            "events-kmsg",
            chosen,
            &undelivered,
            &undelivered.replace(&format!(":{id},"), ":99,"),
        );
        let r = check_console(&text);
        assert_eq!(
            r.failed(),
            ["kprobe: sigkill attribution", "kmsg: sigkill attribution"]
        );
        assert_eq!(
            get(&r, "kprobe", NAME).detail,
            format!("pid {member} sigkill sender_kind: \"oom_kernel\", expected \"oom_group\"")
        );
        assert_eq!(
            get(&r, "kmsg", NAME).detail,
            format!("pid {chosen} sigkill oom_id: 99, expected {id}")
        );
    }
}
