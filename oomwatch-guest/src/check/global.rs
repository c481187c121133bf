//! `vm-test` checks of the host-level phases, where no memory cgroup limit is hit:
//!
//! - `h`, a global OOM: a `dd` with `oom_score_adj` 1000 in `/h` (no `memory.max`) allocates
//!   120 % of the guest's RAM (with `vm.overcommit_memory=1`); the OOM killer, with constraint
//!   `CONSTRAINT_NONE`, must choose it by badness;
//! - `s`, a manual OOM kill (`echo f > /proc/sysrq-trigger`): a kernel worker invokes the
//!   killer with order -1, which chooses a sleeper at `oom_score_adj` 1000 in `/s`;
//! - `a`, `vm.oom_kill_allocating_task=1`: the same global OOM as `h` from a `dd` at
//!   `oom_score_adj` 0 in `/a` kills that `dd`, the allocating task, although a sleeper in `/a`
//!   at 1000 has more points (it must survive). The agents are at -1000 during the phase: the
//!   kernel would kill any allocating task, theirs too;
//! - `c`, a cpuset OOM: a `dd` in `/c`, whose cpuset allows NUMA node 1 only (the guest has two
//!   nodes of 256M), asks for 120 % of that node: constraint `CONSTRAINT_CPUSET`;
//! - `p`, a memory-policy OOM: `alloc_threads` bound to node 1 (`set_mempolicy(MPOL_BIND)`) in
//!   `/p` allocates until the node runs out: constraint `CONSTRAINT_MEMORY_POLICY`.
//!
//! Each agent (at `oom_score_adj` -999) must record each victim live, once, with the context
//! of its kind. The phases run after the `m` phase, so
//! [`crate::check::threads::before_phase`] keeps them out of the other checks too.

use crate::{
    check::{check, render, Check},
    console::{kernel_kills, oom_invocations, Console, Invocation},
};
use serde_json::Value;

/// One host-level phase.
pub struct HostPhase {
    pub phase: &'static str,
    /// The victim's cgroup.
    pub cgroup: &'static str,
    /// `PID STATUS [SLEEPER alive|gone]` of the victim.
    pub section: &'static str,
    boot_name: &'static str,
    agent_name: &'static str,
    what: &'static str,
    /// The kernel's constraint for the phase's OOM.
    constraint: &'static str,
    /// Phase-specific problems of one agent's event of the victim (its context is known).
    expect: fn(&Value) -> Vec<String>,
}

pub const PHASES: [HostPhase; 5] = [
    HostPhase {
        phase: "h",
        cgroup: "/h",
        section: "global-victim",
        boot_name: "global kill",
        agent_name: "global OOM",
        what: "global OOM",
        constraint: "CONSTRAINT_NONE",
        expect: expect_global,
    },
    HostPhase {
        phase: "s",
        cgroup: "/s",
        section: "sysrq-victim",
        boot_name: "manual kill",
        agent_name: "manual OOM",
        what: "manual OOM (sysrq f)",
        constraint: "CONSTRAINT_NONE",
        expect: expect_manual,
    },
    HostPhase {
        phase: "a",
        cgroup: "/a",
        section: "allocating-victim",
        boot_name: "allocating-task kill",
        agent_name: "allocating-task OOM",
        what: "global OOM, oom_kill_allocating_task",
        constraint: "CONSTRAINT_NONE",
        expect: expect_allocating,
    },
    HostPhase {
        phase: "c",
        cgroup: "/c",
        section: "cpuset-victim",
        boot_name: "cpuset kill",
        agent_name: "cpuset OOM",
        what: "cpuset OOM (node 1)",
        constraint: "CONSTRAINT_CPUSET",
        expect: expect_cpuset,
    },
    HostPhase {
        phase: "p",
        cgroup: "/p",
        section: "mempolicy-victim",
        boot_name: "mempolicy kill",
        agent_name: "mempolicy OOM",
        what: "memory-policy OOM (node 1)",
        constraint: "CONSTRAINT_MEMORY_POLICY",
        expect: expect_mempolicy,
    },
];

/// An event or follow-up record of a task in one of the phases' cgroups.
pub fn in_phase(v: &Value) -> bool {
    let cg = v.get("cgroup").and_then(Value::as_str);
    PHASES.iter().any(|p| cg == Some(p.cgroup))
}

fn text(e: &Value, k: &str) -> Option<String> {
    e.get(k).and_then(Value::as_str).map(str::to_string)
}

fn explanation_has(e: &Value, part: &str) -> Vec<String> {
    let explanation = text(e, "explanation").unwrap_or_default();
    if explanation.contains(part) {
        vec![]
    } else {
        vec![format!("explanation {explanation:?} lacks {part:?}")]
    }
}

fn expect_global(e: &Value) -> Vec<String> {
    explanation_has(e, "host (global OOM)")
}

fn expect_manual(e: &Value) -> Vec<String> {
    let mut problems = explanation_has(e, "host (global OOM, manual: sysrq f)");
    let order = e.get("order").and_then(Value::as_i64);
    if order != Some(-1) {
        problems.push(format!("order {order:?}, not -1"));
    }
    let trigger = |k: &str| e.get("trigger").and_then(|t| t.get(k)).cloned();
    let comm = trigger("comm").and_then(|c| c.as_str().map(str::to_string));
    if !comm.as_deref().is_some_and(|c| c.starts_with("kworker/")) {
        problems.push(format!("trigger.comm {comm:?}, not a kworker"));
    }
    let cgroup = trigger("cgroup").and_then(|c| c.as_str().map(str::to_string));
    if cgroup.as_deref() != Some("/") {
        problems.push(format!("trigger.cgroup {cgroup:?}, not the kworker's /"));
    }
    problems
}

fn expect_cpuset(e: &Value) -> Vec<String> {
    let mut problems = explanation_has(e, "cpuset");
    // The agents (at -999, in the root cpuset) are candidates too: scored, or counted as not.
    let explanation = text(e, "explanation").unwrap_or_default();
    if explanation.contains("no other candidate") {
        problems.push(format!(
            "explanation {explanation:?}: the agents were candidates"
        ));
    }
    let domain = text(e, "oom_domain");
    if domain.as_deref() != Some("cpuset") {
        problems.push(format!("oom_domain {domain:?}, not cpuset"));
    }
    problems
}

fn expect_mempolicy(e: &Value) -> Vec<String> {
    let mut problems = explanation_has(e, "memory policy's nodes");
    let domain = text(e, "oom_domain");
    if domain.as_deref() != Some("mempolicy") {
        problems.push(format!("oom_domain {domain:?}, not mempolicy"));
    }
    problems
}

fn expect_allocating(e: &Value) -> Vec<String> {
    let mut problems = explanation_has(e, "was killed as the allocating task");
    if e.get("allocating_task_kill").and_then(Value::as_bool) != Some(true) {
        problems.push("allocating_task_kill not true".into());
    }
    let message = text(e, "message");
    if message.as_deref() != Some("Out of memory (oom_kill_allocating_task)") {
        problems.push(format!("message {message:?}"));
    }
    if !matches!(e.get("badness"), None | Some(Value::Null)) {
        problems.push(format!(
            "badness {}: the kernel ranked no task",
            e.get("badness").map(render).unwrap_or_default()
        ));
    }
    problems
}

impl HostPhase {
    fn victim(&self, c: &Console) -> Option<(i64, i64)> {
        let line = c.section(self.section).first()?;
        let mut w = line.split_whitespace();
        Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
    }

    /// `SLEEPER alive|gone` of the phase's bystander, if it has one.
    fn bystander(&self, c: &Console) -> Option<(i64, bool)> {
        let line = c.section(self.section).first()?;
        let mut w = line.split_whitespace().skip(2);
        Some((w.next()?.parse().ok()?, w.next()? == "alive"))
    }

    /// The phase's part of the kernel log: from its mark to the next phase's.
    fn dmesg<'a>(&self, c: &'a Console) -> &'a [String] {
        let dmesg = c.section("dmesg");
        let mark = format!("oomwatch-vm: phase {}", self.phase);
        let start = dmesg
            .iter()
            .position(|l| l.contains(&mark))
            .unwrap_or(dmesg.len());
        let len = dmesg[start..]
            .iter()
            .skip(1)
            .position(|l| l.contains("oomwatch-vm: phase "))
            .map_or(dmesg.len() - start, |n| n + 1);
        &dmesg[start..start + len]
    }

    /// The victim's `(pid, status)`, or the check's verdict without one: passed when the phase
    /// did not run (its section is absent), failed when it ran without a victim.
    fn victim_or_verdict(&self, c: &Console, name: &'static str) -> Result<(i64, i64), Check> {
        if !c.sections.contains_key(self.section) {
            return Err(check(name, vec![], format!("no {} phase", self.phase)));
        }
        self.victim(c).ok_or_else(|| {
            let line = c.section(self.section).first();
            check(
                name,
                vec![format!("{}: no pid ({line:?})", self.section)],
                String::new(),
            )
        })
    }

    /// The invocation that killed `pid` in the phase.
    fn invocation(&self, c: &Console, pid: i64) -> Option<Invocation> {
        oom_invocations(self.dmesg(c))
            .into_iter()
            .find(|i| i.killed.contains(&pid))
    }

    /// The guest's side: the victim SIGKILLed by an OOM with the phase's constraint.
    pub fn boot_check(&self, c: &Console) -> Check {
        let name = self.boot_name;
        let (pid, status) = match self.victim_or_verdict(c, name) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let mut problems = Vec::new();
        if status != 137 {
            problems.push(format!("{pid} exited {status} (not 137)"));
        }
        let kills: Vec<i64> = kernel_kills(self.dmesg(c)).iter().map(|k| k.pid).collect();
        if !kills.contains(&pid) {
            problems.push(format!("no 'Killed process {pid}' line; killed {kills:?}"));
        }
        if let Some((sleeper, alive)) = self.bystander(c) {
            if !alive {
                problems.push(format!("the sleeper {sleeper} with more points was killed"));
            }
        }
        let inv = self.invocation(c, pid);
        let constraint = inv
            .as_ref()
            .and_then(|i| i.summary.get("constraint").cloned());
        if inv.as_ref().is_some_and(|i| i.header) && constraint.as_deref() != Some(self.constraint)
        {
            problems.push(format!(
                "constraint {constraint:?}, not {}",
                self.constraint
            ));
        }
        check(
            name,
            problems,
            format!(
                "{pid} killed by a {} ({}), kernel lines for {kills:?}",
                self.what,
                constraint.as_deref().unwrap_or("report rate-limited")
            ),
        )
    }

    /// One agent's side: one live event for the victim, with the context of the phase's kind.
    /// `events` are the agent's events in the phase's cgroup.
    pub fn agent_check(&self, c: &Console, events: &[Value]) -> Check {
        let name = self.agent_name;
        let (pid, _) = match self.victim_or_verdict(c, name) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e.get("pid").and_then(Value::as_i64) == Some(pid))
            .collect();
        let mut problems = Vec::new();
        if mine.len() != 1 || events.len() != 1 {
            problems.push(format!(
                "{} events for {pid}, {} in {} in all",
                mine.len(),
                events.len(),
                self.cgroup
            ));
        }
        let header = self.invocation(c, pid).is_some_and(|i| i.header);
        for e in mine {
            if e.get("replayed").and_then(Value::as_bool) != Some(false) {
                problems.push("not recorded live".into());
            }
            // With the report's header (not rate-limited) every source has the context.
            let constraint = text(e, "constraint");
            if (header || constraint.is_some()) && constraint.as_deref() != Some(self.constraint) {
                problems.push(format!(
                    "constraint {constraint:?}, not {}",
                    self.constraint
                ));
            }
            if !matches!(e.get("oom_memcg"), None | Some(Value::Null)) {
                problems.push(format!(
                    "oom_memcg {}, not null",
                    e.get("oom_memcg").map(render).unwrap_or_default()
                ));
            }
            let chosen = e
                .get("chosen")
                .and_then(|c| c.get("pid"))
                .and_then(Value::as_i64);
            if constraint.is_some() {
                if chosen != Some(pid) {
                    problems.push(format!("chosen {chosen:?}, not {pid}"));
                }
                problems.extend((self.expect)(e));
            }
        }
        check(
            name,
            problems,
            format!(
                "{pid}: one live event, {}, {}, no oom_memcg, chosen",
                self.what, self.constraint
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::check::{
        check_console,
        fixture::{fentry_event_in, get, FIXTURE},
        Check,
    };

    /// The fentry agent's check `name` on the sample with its event in `cgroup` edited.
    fn fentry_check_with(cgroup: &str, edit: impl Fn(&str) -> String, name: &str) -> Check {
        let line = fentry_event_in(cgroup);
        let wrong = edit(line);
        assert_ne!(wrong, line, "the edit changed nothing");
        get(
            &check_console(&FIXTURE.replacen(line, &wrong, 1)),
            "fentry",
            name,
        )
    }

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
        let memcg = |l: &str| {
            l.replacen(
                r#""constraint":"CONSTRAINT_NONE""#,
                r#""constraint":"CONSTRAINT_MEMCG""#,
                1,
            )
        };
        let c = fentry_check_with("/h", memcg, "global OOM");
        assert!(
            !c.ok && c.detail.contains("not CONSTRAINT_NONE"),
            "{}",
            c.detail
        );
        let c = fentry_check_with("/h", |l| format!("{l}\n{l}"), "global OOM");
        assert!(!c.ok && c.detail.contains("2 events"), "{}", c.detail);
    }

    #[test]
    fn the_sample_has_a_manual_and_an_allocating_task_kill_recorded_by_every_agent() {
        let r = check_console(FIXTURE);
        for (boot, agent_check) in [
            ("manual kill", "manual OOM"),
            ("allocating-task kill", "allocating-task OOM"),
        ] {
            let b = get(&r, "", boot);
            assert!(b.ok && b.detail.contains("CONSTRAINT_NONE"), "{}", b.detail);
            for agent in ["fentry", "kprobe", "kmsg"] {
                let c = get(&r, agent, agent_check);
                assert!(c.ok, "{agent} {agent_check}: {}", c.detail);
            }
        }
    }

    #[test]
    fn a_manual_kill_needs_order_minus_one_and_the_kworker_trigger() {
        let wrong = |l: &str| {
            l.replacen(r#""order":-1"#, r#""order":0"#, 1).replacen(
                r#""cgroup":"/","cgroup_id":1"#,
                r#""cgroup":null,"cgroup_id":1"#,
                1,
            )
        };
        let c = fentry_check_with("/s", wrong, "manual OOM");
        assert!(
            !c.ok && c.detail.contains("order Some(0), not -1"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("trigger.cgroup None"), "{}", c.detail);
    }

    #[test]
    fn an_allocating_task_kill_must_claim_no_badness() {
        let wrong = |l: &str| l.replacen(r#""badness":null"#, r#""badness":0"#, 1);
        let c = fentry_check_with("/a", wrong, "allocating-task OOM");
        assert!(
            !c.ok && c.detail.contains("the kernel ranked no task"),
            "{}",
            c.detail
        );
        // A sleeper with more points killed instead: the kernel did not take that path.
        let section = FIXTURE
            .lines()
            .skip_while(|l| !l.contains("@@OWVM BEGIN allocating-victim@@"))
            .nth(1)
            .unwrap();
        let gone = section.replacen(" alive", " gone", 1);
        let r = check_console(&FIXTURE.replacen(section, &gone, 1));
        let b = get(&r, "", "allocating-task kill");
        assert!(
            !b.ok && b.detail.contains("with more points was killed"),
            "{}",
            b.detail
        );
    }

    #[test]
    fn a_cpuset_kill_needs_the_cpuset_domain() {
        let r = check_console(FIXTURE);
        assert!(get(&r, "", "cpuset kill")
            .detail
            .contains("CONSTRAINT_CPUSET"));
        for agent in ["fentry", "kprobe", "kmsg"] {
            let c = get(&r, agent, "cpuset OOM");
            assert!(c.ok, "{agent}: {}", c.detail);
        }
        let wrong = |l: &str| l.replacen(r#""oom_domain":"cpuset""#, r#""oom_domain":"global""#, 1);
        let c = fentry_check_with("/c", wrong, "cpuset OOM");
        assert!(!c.ok && c.detail.contains("not cpuset"), "{}", c.detail);
    }
}
