//! `vm-test` checks of the `m` phase: a multi-threaded process (`examples/alloc_threads`, 4
//! allocating threads) OOM-killed in `/sys/fs/cgroup/m`, once with its leader alive and once
//! with the leader exited (the kernel then kills another thread). The kernel also marks the
//! other threads as victims, without killing them: each agent must still write exactly one
//! event per "Killed process" line, live, for the thread the line names.
//!
//! The phase runs last, so the other checks see the kernel log only up to its mark
//! ([`before_phase`]) and the agents' events outside `/m` ([`in_phase`]).

use oomwatch_testkit::oracle;
use serde_json::Value;

use crate::{
    check::{check, Check},
    console::{kernel_kills, key_value, Console, KernelKill},
};

pub const PHASE: &str = "m";
/// `PID STATUS [leader-exits]` per run of the victim.
pub const SECTION: &str = "thread-victims";

/// The dmesg lines before the `m` phase's mark (all of them without one).
pub fn before_phase(dmesg: &[String]) -> &[String] {
    let mark = format!("oomwatch-vm: phase {PHASE}");
    let end = dmesg
        .iter()
        .position(|l| l.contains(&mark))
        .unwrap_or(dmesg.len());
    &dmesg[..end]
}

/// An event or follow-up record of a task in `/m`.
pub fn in_phase(v: &Value) -> bool {
    v.get("cgroup").and_then(Value::as_str) == Some("/m")
}

/// One run of the victim: its pid (the thread group) and exit status.
struct Run {
    pid: i64,
    status: i64,
    leader_exits: bool,
}

fn runs(c: &Console) -> Vec<Run> {
    c.section(SECTION)
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Run {
                pid: w.next()?.parse().ok()?,
                status: w.next()?.parse().ok()?,
                leader_exits: w.next() == Some("leader-exits"),
            })
        })
        .collect()
}

fn phase_kills(c: &Console) -> Vec<KernelKill> {
    kernel_kills(c.section("dmesg"))
        .into_iter()
        .filter(|k| k.phase == PHASE)
        .collect()
}

/// The guest's side: each run SIGKILLed, one "Killed process" line each, `memory.events`
/// agreeing. Passes with a note on a console without the phase (an older guest).
pub fn boot_check(c: &Console) -> Check {
    if !c.sections.contains_key(SECTION) {
        return check("threaded kills", vec![], "no m phase".into());
    }
    let runs = runs(c);
    let kills = phase_kills(c);
    let mut problems = Vec::new();
    let want = crate::script::M_VICTIMS;
    if runs.len() != want {
        problems.push(format!("{} runs recorded, expected {want}", runs.len()));
    }
    for r in runs.iter().filter(|r| r.status != 137) {
        problems.push(format!(
            "alloc_threads {} exited {} (not 137)",
            r.pid, r.status
        ));
    }
    if kills.len() != runs.len() {
        problems.push(format!(
            "{} 'Killed process' lines in /m for {} runs",
            kills.len(),
            runs.len()
        ));
    }
    let oom_kill = key_value(c.section("memory.events-m"), "oom_kill");
    if oom_kill != Some(kills.len() as i64) {
        problems.push(format!(
            "/m memory.events oom_kill {oom_kill:?}, {} kernel lines",
            kills.len()
        ));
    }
    let threads: Vec<String> = runs
        .iter()
        .zip(&kills)
        .map(|(r, k)| {
            let who = if k.pid == r.pid { "leader" } else { "thread" };
            format!("{} ({who} {})", r.pid, k.pid)
        })
        .collect();
    check(
        "threaded kills",
        problems,
        format!(
            "/m: {} runs of {} threads killed: {}",
            runs.len(),
            crate::script::M_THREADS,
            threads.join(", ")
        ),
    )
}

/// One agent's side: one live event per kill, for the killed thread, in the right process
/// (`oracle::threads`, as the host test `tests/threads.rs`).
pub fn agent_check(c: &Console, events: &[Value]) -> Check {
    if !c.sections.contains_key(SECTION) {
        return check("threaded victims", vec![], "no m phase".into());
    }
    let runs = runs(c);
    let kills = phase_kills(c);
    let processes: Vec<i64> = runs.iter().map(|r| r.pid).collect();
    let problems = oracle::threads::one_event_per_killed_thread(&kills, &processes, events);
    let leader_gone = runs.iter().filter(|r| r.leader_exits).count();
    check(
        "threaded victims",
        problems,
        format!(
            "{} events for {} kills ({leader_gone} with the leader exited), all live",
            events.len(),
            kills.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use crate::check::{
        check_console,
        fixture::{fentry_event_in, get, FIXTURE},
    };

    #[test]
    fn the_sample_kills_a_thread_of_an_exited_leader_and_records_each_kill_once() {
        let r = check_console(FIXTURE);
        let boot = get(&r, "", "threaded kills");
        assert!(
            boot.ok && boot.detail.contains("(thread "),
            "{}",
            boot.detail
        );
        let agent = get(&r, "fentry", "threaded victims");
        assert!(agent.ok, "{}", agent.detail);
        assert!(
            agent.detail.starts_with("2 events for 2 kills"),
            "{}",
            agent.detail
        );
    }

    #[test]
    fn an_event_for_a_thread_only_marked_fails() {
        let line = fentry_event_in("/m");
        let pid = line
            .split(r#""pid":"#)
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let other: i64 = pid.parse::<i64>().unwrap() + 1;
        let extra = line.replacen(
            &format!(r#""pid":{pid},"#),
            &format!(r#""pid":{other},"#),
            1,
        );
        let text = FIXTURE.replacen(line, &format!("{line}\n{extra}"), 1);
        let r = check_console(&text);
        let agent = get(&r, "fentry", "threaded victims");
        assert!(!agent.ok);
        assert!(
            agent.detail.contains("which the kernel did not kill"),
            "{}",
            agent.detail
        );
    }

    #[test]
    fn a_replayed_event_fails() {
        let line = fentry_event_in("/m");
        let replayed = line.replacen(r#""replayed":false"#, r#""replayed":true"#, 1);
        let r = check_console(&FIXTURE.replacen(line, &replayed, 1));
        let agent = get(&r, "fentry", "threaded victims");
        assert!(
            !agent.ok && agent.detail.contains("not recorded live"),
            "{}",
            agent.detail
        );
    }
}
