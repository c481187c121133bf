//! The console fixture read with the parsers under test, so that the tests take pids, cgroups,
//! kill order and values from it instead of from one run: a fixture refreshed from a new
//! `cargo xtask vm-test` run (other pids, uptime, sizes) needs no test edits.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    check::{lifecycle::not_a_kernel_event, Check, Report},
    console::{kernel_kills, oom_invocations, victims, Console, Invocation, KernelKill, Victim},
};

/// The tag that starts each agent event line: `"host":"oomwatch-vm","pid":N,`.
pub(crate) fn event_tag(pid: i64) -> String {
    format!(r#""host":"oomwatch-vm","pid":{pid},"#)
}

/// Whether `line` of an events section is a kernel OOM kill event, as the checks tell them
/// from the other lines (`oom_kill_lifecycle` and `oom_kill_stuck` follow-ups, userspace
/// killers' kills).
pub(crate) fn is_kernel_event(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| !not_a_kernel_event(&v))
}

/// Whether `line` is the kernel OOM kill event of `pid` (not its follow-up lines).
pub(crate) fn is_kernel_event_of(line: &str, pid: i64) -> bool {
    line.contains(&event_tag(pid)) && is_kernel_event(line)
}

/// The kernel OOM kill events of `lines` (an agent's events section).
pub(crate) fn kernel_events(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| is_kernel_event(l)).collect()
}

/// The one kernel OOM kill event line of `pid` in `section` of `text`.
pub(crate) fn event_line<'a>(text: &'a str, section: &str, pid: i64) -> &'a str {
    let mut current = "";
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            if let Some(name) = l.strip_prefix("@@OWVM BEGIN ") {
                current = name.trim_end_matches('@');
            }
            current == section && is_kernel_event_of(l, pid)
        })
        .collect();
    assert_eq!(lines.len(), 1, "one {section} kernel event for pid {pid}");
    lines[0]
}

/// The fixture's victims, kernel kills and OOM invocations, as the checks parse them.
pub(crate) struct Sample {
    pub text: String,
    pub console: Console,
    pub victims: Vec<Victim>,
    pub kills: Vec<KernelKill>,
    pub invocations: Vec<Invocation>,
}

/// The fixture, parsed.
pub(crate) fn sample() -> Sample {
    Sample::of(FIXTURE)
}

impl Sample {
    pub fn of(text: &str) -> Sample {
        let console = Console::parse(text);
        Sample {
            text: text.to_string(),
            victims: victims(console.section("victims")),
            // The multi-threaded phase is checked apart (check::threads).
            kills: kernel_kills(crate::check::threads::before_phase(
                console.section("dmesg"),
            )),
            invocations: oom_invocations(crate::check::threads::before_phase(
                console.section("dmesg"),
            )),
            console,
        }
    }

    /// Pids `/init` started in `cgroup` (`t` or `g`), in the order it recorded them.
    pub fn victims_in(&self, cgroup: &str) -> Vec<i64> {
        let pids: Vec<i64> = self
            .victims
            .iter()
            .filter(|v| v.cgroup == cgroup)
            .map(|v| v.pid)
            .collect();
        assert!(!pids.is_empty(), "no victim in /{cgroup}");
        pids
    }

    /// The cgroup `/init` put `pid` in, as the checks print it: `/t`.
    pub fn cgroup_of(&self, pid: i64) -> String {
        let v = self.victims.iter().find(|v| v.pid == pid);
        format!("/{}", v.expect("a victim").cgroup)
    }

    /// The comm `/init` recorded for `pid` (4th column of the victims section).
    pub fn comm_of(&self, pid: i64) -> String {
        self.console
            .section("victims")
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.get(1) == Some(&pid.to_string().as_str()))
            .and_then(|w| w.get(3).map(|c| c.to_string()))
            .unwrap_or_else(|| panic!("no victims line for {pid}"))
    }

    /// The invocation whose "Killed process" lines name `pid`.
    pub fn invocation_of(&self, pid: i64) -> &Invocation {
        let mut found = self.invocations.iter().filter(|i| i.killed.contains(&pid));
        let inv = found
            .next()
            .unwrap_or_else(|| panic!("no invocation killed {pid}"));
        assert!(found.next().is_none(), "{pid} killed by two invocations");
        inv
    }

    /// The task the invocation chose, from its "oom-kill:" summary.
    pub fn chosen(inv: &Invocation) -> i64 {
        inv.summary["pid"].parse().expect("a pid")
    }

    /// The `memory.oom.group` invocation of `/g`.
    pub fn group(&self) -> &Invocation {
        let groups: Vec<&Invocation> = self.invocations.iter().filter(|i| i.group).collect();
        assert_eq!(groups.len(), 1, "one group kill");
        groups[0]
    }

    pub fn group_chosen(&self) -> i64 {
        Self::chosen(self.group())
    }

    /// The victims the group kill took along with its chosen task, in the kernel's order.
    pub fn group_members(&self) -> Vec<i64> {
        let chosen = self.group_chosen();
        let members: Vec<i64> = self
            .group()
            .killed
            .iter()
            .copied()
            .filter(|p| *p != chosen)
            .collect();
        assert_eq!(
            members.iter().collect::<BTreeSet<_>>().len(),
            members.len(),
            "each member killed once"
        );
        members
    }

    /// The only victim of its invocation whose task-dump row has a nonzero `oom_score_adj`
    /// (`/init` starts the last `/t` victim so).
    pub fn adjusted_victim(&self) -> i64 {
        let pids: Vec<i64> = self
            .invocations
            .iter()
            .filter(|i| i.killed.len() == 1)
            .map(|i| i.killed[0])
            .filter(|p| self.row(*p).get("oom_score_adj") != Some(&0))
            .collect();
        assert_eq!(
            pids.len(),
            1,
            "one single victim with a nonzero oom_score_adj"
        );
        pids[0]
    }

    /// The `oom_score_adj` `/init` says it gave `pid`: `OWVM: victim P in /t (oom_score_adj N)`.
    pub fn adj_of(&self, pid: i64) -> i64 {
        let say = format!("OWVM: victim {pid} in ");
        let line = self.text.lines().find(|l| l.starts_with(&say));
        line.and_then(|l| l.split_once("(oom_score_adj ")?.1.split_once(')'))
            .and_then(|(adj, _)| adj.parse().ok())
            .unwrap_or_else(|| panic!("no {say:?} line"))
    }

    /// The task-dump row of `pid` in the invocation that killed it.
    pub fn row(&self, pid: i64) -> &BTreeMap<String, i64> {
        let inv = self.invocation_of(pid);
        inv.tasks
            .get(&pid)
            .unwrap_or_else(|| panic!("{pid} not in its task dump"))
    }

    /// The kernel OOM kill event of `pid` in `section`.
    pub fn event(&self, section: &str, pid: i64) -> Value {
        serde_json::from_str::<Value>(event_line(&self.text, section, pid)).expect("a JSON event")
    }

    /// Field `path` (`a.b`) of that event as the checks render it: `16776`, `"/t"`, `null`.
    pub fn value(&self, section: &str, pid: i64, path: &str) -> String {
        let e = self.event(section, pid);
        let v = crate::check::at(&e, path);
        crate::check::render(
            v.unwrap_or_else(|| panic!("no {path} in the {section} event of {pid}")),
        )
    }

    /// Field `path` of that event as a number.
    pub fn number(&self, section: &str, pid: i64, path: &str) -> i64 {
        let v = self.value(section, pid, path);
        v.parse()
            .unwrap_or_else(|_| panic!("{path} of {pid} in {section} is {v}, not a number"))
    }
}

pub(crate) const FIXTURE: &str = include_str!("../../tests/fixtures/vm-console-7.2.log");
/// A real console of Debian 12's arm64 6.1 guest (`cargo xtask vm-test --kernel arm64-6.1`,
/// `target/vm/6.1.0-57-cloud-arm64/console.log`, unedited).
pub(crate) const ARM64_FIXTURE: &str =
    include_str!("../../tests/fixtures/vm-console-arm64-6.1.log");
/// The same guest with an agent that embedded the host's (x86-64) eBPF object instead of the
/// one built for arm64 (a real run, unedited).
pub(crate) const ARM64_HOST_EBPF_FIXTURE: &str =
    include_str!("../../tests/fixtures/vm-console-arm64-6.1-host-ebpf.log");

/// `text` with `from` replaced by `to` exactly once.
pub(crate) fn mutate_in(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// `text` with `from` replaced by `to` in the one line of section `section` that `pick` selects.
pub(crate) fn mutate_line(
    text: &str,
    section: &str,
    pick: impl Fn(&str) -> bool,
    from: &str,
    to: &str,
) -> String {
    let mut current = String::new();
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if let Some(name) = l.strip_prefix("@@OWVM BEGIN ") {
                current = name.trim_end_matches('@').to_string();
            }
            if current == section && pick(l) {
                assert!(l.contains(from), "{from:?} not in {l:?} of {section}");
                hits += 1;
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(hits, 1, "one line of {section} picked");
    out.join("\n")
}

/// `text` with `from` replaced by `to` in the kernel OOM kill event line of `pid` in section
/// `section` only (not in its `oom_kill_lifecycle` line).
pub(crate) fn mutate_event(text: &str, section: &str, pid: i64, from: &str, to: &str) -> String {
    mutate_line(text, section, |l| is_kernel_event_of(l, pid), from, to)
}

/// `text` with `from` replaced by `to` in the `oom_kill_lifecycle` line of `pid` in `section`.
pub(crate) fn mutate_lifecycle(
    text: &str,
    section: &str,
    pid: i64,
    from: &str,
    to: &str,
) -> String {
    let tag = event_tag(pid);
    let lifecycle = |l: &str| l.contains(&tag) && l.contains(r#""type":"oom_kill_lifecycle""#);
    mutate_line(text, section, lifecycle, from, to)
}

/// `text` with the `oom_id` of `pid`'s kill in `section` changed from `from` to `to` in its
/// event, its `oom_kill_lifecycle` line and its `sigkill` lines, as an agent that gave the kill
/// that id writes them (the lifecycle and sigkill checks compare them with the event).
pub(crate) fn with_oom_id(text: &str, section: &str, pid: i64, from: &str, to: &str) -> String {
    let (from, to) = (format!(r#""oom_id":{from},"#), format!(r#""oom_id":{to},"#));
    let text = mutate_event(text, section, pid, &from, &to);
    let text = mutate_lifecycle(&text, section, pid, &from, &to);
    mutate_sigkills(&text, section, pid, &from, &to)
}

/// `text` with `from` replaced by `to` in every `sigkill` line of target `pid` in `section`
/// that has it (a memory.oom.group kill signals its chosen task twice: two lines); at least one.
pub(crate) fn mutate_sigkills(text: &str, section: &str, pid: i64, from: &str, to: &str) -> String {
    let target = format!(r#""target":{{"pid":{pid},"#);
    let mut current = String::new();
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if let Some(name) = l.strip_prefix("@@OWVM BEGIN ") {
                current = name.trim_end_matches('@').to_string();
            }
            let mine = l.contains(r#""type":"sigkill""#) && l.contains(&target);
            if current == section && mine && l.contains(from) {
                hits += 1;
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        hits > 0,
        "no sigkill line of {pid} with {from:?} in {section}"
    );
    out.join("\n")
}

pub(crate) fn agent_checks<'a>(r: &'a Report, agent: &str) -> &'a [Check] {
    r.agents
        .iter()
        .find(|(a, _)| a.name == agent)
        .map(|(_, c)| c.as_slice())
        .unwrap_or_else(|| panic!("no agent {agent}"))
}

pub(crate) fn by_name(checks: &[Check], name: &str) -> Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .clone()
}

/// The fentry agent's first OOM kill event in `cgroup` (`/m`, `/h`), as a whole line.
pub(crate) fn fentry_event_in(cgroup: &str) -> &'static str {
    let start = FIXTURE.find("@@OWVM BEGIN events@@").unwrap();
    let tag = format!(r#""cgroup":"{cgroup}""#);
    FIXTURE[start..]
        .lines()
        .find(|l| l.contains(&tag) && !l.contains(r#""type":"#))
        .unwrap()
}

/// The check `name` of `agent` ("" for the boot's own).
pub(crate) fn get(r: &Report, agent: &str, name: &str) -> Check {
    match agent {
        "" => by_name(&r.boot, name),
        a => by_name(agent_checks(r, a), name),
    }
}
