//! `vm-test` checks of the `h` phase: a global OOM (no memory cgroup limit: the whole guest runs
//! out of memory). A `dd` with `oom_score_adj` 1000 in `/sys/fs/cgroup/h` (no `memory.max`)
//! allocates 120 % of the guest's RAM (with `vm.overcommit_memory=1`); the kernel's OOM killer, with constraint
//! `CONSTRAINT_NONE`, must choose and kill it. Each agent (themselves at `oom_score_adj` -999)
//! must record it live with the global context: no `oom_memcg`, the victim chosen, in `/h`.
//!
//! The phase runs after the `m` phase, so [`super::vm_check_threads::before_phase`] keeps it
//! out of the other checks too.

use super::{
    vm_check::{check, Check},
    vm_json::Json,
    vm_parse::{kernel_kills, oom_invocations, Console, Invocation},
};

pub const PHASE: &str = "h";
/// `PID STATUS` of the victim.
pub const SECTION: &str = "global-victim";

/// An event or follow-up record of a task in `/h`.
pub fn in_phase(v: &Json) -> bool {
    v.get("cgroup").and_then(Json::as_str) == Some("/h")
}

fn victim(c: &Console) -> Option<(i64, i64)> {
    let line = c.section(SECTION).first()?;
    let mut w = line.split_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// The phase's part of the kernel log: from its mark on.
fn phase_dmesg(c: &Console) -> &[String] {
    let dmesg = c.section("dmesg");
    let mark = format!("oomwatch-vm: phase {PHASE}");
    let start = dmesg
        .iter()
        .position(|l| l.contains(&mark))
        .unwrap_or(dmesg.len());
    &dmesg[start..]
}

/// The invocation that killed `pid` in the phase.
fn invocation(c: &Console, pid: i64) -> Option<Invocation> {
    oom_invocations(phase_dmesg(c))
        .into_iter()
        .find(|i| i.killed.contains(&pid))
}

/// The guest's side: the victim SIGKILLed by a global OOM (constraint `CONSTRAINT_NONE`).
pub fn boot_check(c: &Console) -> Check {
    if !c.sections.contains_key(SECTION) {
        return check("global kill", vec![], "no h phase".into());
    }
    let mut problems = Vec::new();
    let Some((pid, status)) = victim(c) else {
        return check(
            "global kill",
            vec![format!("{SECTION}: no pid")],
            String::new(),
        );
    };
    if status != 137 {
        problems.push(format!("dd {pid} exited {status} (not 137)"));
    }
    let kills: Vec<i64> = kernel_kills(phase_dmesg(c)).iter().map(|k| k.pid).collect();
    if !kills.contains(&pid) {
        problems.push(format!("no 'Killed process {pid}' line; killed {kills:?}"));
    }
    let inv = invocation(c, pid);
    let constraint = inv
        .as_ref()
        .and_then(|i| i.summary.get("constraint").cloned());
    if inv.as_ref().is_some_and(|i| i.header) && constraint.as_deref() != Some("CONSTRAINT_NONE") {
        problems.push(format!("constraint {constraint:?}, not CONSTRAINT_NONE"));
    }
    check(
        "global kill",
        problems,
        format!(
            "dd {pid} killed by a global OOM ({}), kernel lines for {kills:?}",
            constraint.as_deref().unwrap_or("report rate-limited")
        ),
    )
}

/// One agent's side: one live event for the victim, with the global context.
pub fn agent_check(c: &Console, events: &[Json]) -> Check {
    if !c.sections.contains_key(SECTION) {
        return check("global OOM", vec![], "no h phase".into());
    }
    let Some((pid, _)) = victim(c) else {
        return check(
            "global OOM",
            vec![format!("{SECTION}: no pid")],
            String::new(),
        );
    };
    let text = |e: &Json, k: &str| e.get(k).and_then(Json::as_str).map(str::to_string);
    let mine: Vec<&Json> = events
        .iter()
        .filter(|e| e.get("pid").and_then(Json::as_i64) == Some(pid))
        .collect();
    let mut problems = Vec::new();
    if mine.len() != 1 || events.len() != 1 {
        problems.push(format!(
            "{} events for dd {pid}, {} in /h in all",
            mine.len(),
            events.len()
        ));
    }
    let header = invocation(c, pid).is_some_and(|i| i.header);
    for e in mine {
        if e.get("replayed").and_then(Json::as_bool) != Some(false) {
            problems.push("not recorded live".into());
        }
        // With the report's header (not rate-limited) every source has the context.
        let constraint = text(e, "constraint");
        if (header || constraint.is_some()) && constraint.as_deref() != Some("CONSTRAINT_NONE") {
            problems.push(format!("constraint {constraint:?}, not CONSTRAINT_NONE"));
        }
        if !matches!(e.get("oom_memcg"), None | Some(Json::Null)) {
            problems.push(format!(
                "oom_memcg {}, not null",
                e.get("oom_memcg").map(Json::render).unwrap_or_default()
            ));
        }
        let chosen = e
            .get("chosen")
            .and_then(|c| c.get("pid"))
            .and_then(Json::as_i64);
        if constraint.is_some() && chosen != Some(pid) {
            problems.push(format!("chosen {chosen:?}, not {pid}"));
        }
        let explanation = text(e, "explanation").unwrap_or_default();
        if constraint.is_some() && !explanation.contains("host (global OOM)") {
            problems.push(format!("explanation {explanation:?}"));
        }
    }
    check(
        "global OOM",
        problems,
        format!("dd {pid}: one live event, CONSTRAINT_NONE, no oom_memcg, chosen"),
    )
}

#[cfg(test)]
mod tests {
    use super::super::vm_check::{
        check_console,
        tests::{fentry_event_in, get, FIXTURE},
    };

    #[test]
    fn the_sample_has_a_global_kill_recorded_by_every_agent() {
        let r = check_console(FIXTURE);
        let boot = get(&r, "", "global kill");
        assert!(
            boot.ok && boot.detail.contains("CONSTRAINT_NONE"),
            "{}",
            boot.detail
        );
        for agent in ["fentry", "kprobe", "kmsg"] {
            let c = get(&r, agent, "global OOM");
            assert!(c.ok, "{agent}: {}", c.detail);
        }
    }

    #[test]
    fn a_memcg_context_or_a_second_event_fails() {
        let line = fentry_event_in("/h");
        let memcg = line.replacen(
            r#""constraint":"CONSTRAINT_NONE""#,
            r#""constraint":"CONSTRAINT_MEMCG""#,
            1,
        );
        let r = check_console(&FIXTURE.replacen(line, &memcg, 1));
        let c = get(&r, "fentry", "global OOM");
        assert!(
            !c.ok && c.detail.contains("not CONSTRAINT_NONE"),
            "{}",
            c.detail
        );
        let twice = FIXTURE.replacen(line, &format!("{line}\n{line}"), 1);
        let c = get(&check_console(&twice), "fentry", "global OOM");
        assert!(!c.ok && c.detail.contains("2 events"), "{}", c.detail);
    }
}
