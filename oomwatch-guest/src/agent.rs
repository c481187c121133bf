//! The three agents `vm-test` runs side by side in each guest, one per source of OOM context
//! (`fentry:oom_kill_process`, its `kprobe` fallback, the kernel-log fallback
//! `kmsg:oom_report`), and the checks of one agent's output against the kernel's log.

use serde_json::Value;

use oomwatch_testkit::oracle::{self, fields::KillCount, pid_of};

use crate::{
    check::candidates::{FEXIT as FEXIT_BADNESS, KRETPROBE as KRETPROBE_BADNESS},
    check::{candidates, check, global, lifecycle, oom, sigkill, source, stacks, threads, Check},
    console::*,
};

/// One agent of the guest: `oomwatch run --listen 127.0.0.1:PORT --disable-probe ...`.
#[derive(Debug, PartialEq, Eq)]
pub struct Agent {
    /// Column label: the source of OOM context it must use.
    pub name: &'static str,
    /// Suffix of its files (`/events{suffix}.jsonl`, `/agent{suffix}.log`) and console sections.
    pub suffix: &'static str,
    pub port: u16,
    /// `--disable-probe` arguments.
    pub disabled: &'static [&'static str],
    /// The probe that must attach and give every event's `oom` (`sources.oom`).
    pub oom_probe: &'static str,
    /// The source every event's `candidates` must come from (`sources.candidates`).
    pub candidates_probe: &'static str,
    /// Rows of the candidates probe it disables (`--disable-probe` too).
    pub candidates_disabled: &'static [&'static str],
}

pub const FENTRY: &str = "fentry:oom_kill_process";
pub const KPROBE: &str = "kprobe:oom_kill_process";
pub const KMSG: &str = oracle::oom::KMSG;

pub const AGENTS: [Agent; 3] = [
    Agent {
        name: "fentry",
        suffix: "",
        port: 9837,
        disabled: &[],
        oom_probe: FENTRY,
        candidates_probe: FEXIT_BADNESS,
        candidates_disabled: &[],
    },
    Agent {
        name: "kprobe",
        suffix: "-kprobe",
        port: 9838,
        disabled: &[FENTRY],
        oom_probe: KPROBE,
        candidates_probe: KRETPROBE_BADNESS,
        candidates_disabled: &[FEXIT_BADNESS],
    },
    Agent {
        name: "kmsg",
        suffix: "-kmsg",
        port: 9839,
        disabled: &[FENTRY, KPROBE],
        oom_probe: KMSG,
        candidates_probe: KMSG,
        candidates_disabled: &[FEXIT_BADNESS, KRETPROBE_BADNESS],
    },
];

impl Agent {
    /// Its console section `base` (`events`, `agent-log`, ...): `events-kprobe`.
    pub fn section(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// `--disable-probe A --disable-probe B`, or "" for none.
    pub fn disable_args(&self) -> String {
        self.disabled
            .iter()
            .chain(self.candidates_disabled)
            .map(|p| format!("--disable-probe {p}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `agent 2 kprobe (127.0.0.1:9838, --disable-probe fentry:oom_kill_process)`.
    pub fn describe(&self) -> String {
        let n = AGENTS.iter().position(|a| a == self).map_or(0, |i| i + 1);
        let args = match self.disable_args() {
            a if a.is_empty() => "no --disable-probe".to_string(),
            a => a,
        };
        format!("agent {n} {} (127.0.0.1:{}, {args})", self.name, self.port)
    }
}

/// What every agent's checks share: the boot's victims and kernel log.
pub struct Kernel<'a> {
    pub console: &'a Console,
    pub victims: &'a [Victim],
    pub kills: &'a [KernelKill],
    pub invocations: &'a [Invocation],
}

/// One agent's event lines, by the checks that read them.
struct Events {
    /// Kernel OOM kills of the memory-cgroup phases (`t`, `g`).
    kernel: Vec<Value>,
    /// Follow-up records and userspace killers' kills (check::lifecycle), outside the
    /// multi-threaded and host-level phases.
    others: Vec<Value>,
    /// The multi-threaded phase's kills (check::threads).
    threads: Vec<Value>,
    /// The host-level phases' kills (check::global).
    global: Vec<Value>,
}

impl Events {
    /// `lines` parsed and sorted; a line that is no JSON is a problem.
    fn sort(lines: &[String], problems: &mut Vec<String>) -> Events {
        let mut events: Vec<Value> = Vec::new();
        for line in lines {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => events.push(v),
                Err(e) => problems.push(format!("not a JSON event ({e}): {line}")),
            }
        }
        let (others, events): (Vec<Value>, Vec<Value>) =
            events.into_iter().partition(lifecycle::not_a_kernel_event);
        let (threads, events): (Vec<Value>, Vec<Value>) =
            events.into_iter().partition(threads::in_phase);
        let (global, kernel): (Vec<Value>, Vec<Value>) =
            events.into_iter().partition(global::in_phase);
        let others = others
            .into_iter()
            .filter(|o| !threads::in_phase(o) && !global::in_phase(o))
            .collect();
        Events {
            kernel,
            others,
            threads,
            global,
        }
    }
}

/// Every check of one agent's events, metrics, log and exit status.
pub fn check_agent(agent: &Agent, k: &Kernel) -> Vec<Check> {
    let section = |base: &str| k.console.section(&agent.section(base));
    let mut problems = Vec::new();
    let ev = Events::sort(section("events"), &mut problems);
    let events = &ev.kernel;
    let from = source::oom(agent, &probe_status(section("agent-log")));
    let mut checks = vec![one_event_per_victim(k, events, problems)];
    checks.extend(kernel_fields(k, events));
    checks.push(oom::check_oom(&from, events, k.victims, k.invocations));
    checks.push(candidates::check_candidates(
        agent,
        events,
        k.invocations,
        section("agent-log"),
        section("metrics"),
    ));
    checks.push(memory_events(k, events));
    checks.extend(lifecycle::checks(
        k,
        section("agent-log"),
        events,
        &ev.others,
    ));
    checks.push(sigkill::check_sigkills(
        k,
        section("agent-log"),
        section("metrics"),
        events,
        &ev.others,
    ));
    checks.push(threads::agent_check(k.console, &ev.threads));
    let all: Vec<&Value> = events.iter().chain(&ev.threads).chain(&ev.global).collect();
    checks.push(stacks::check_stacks(
        section("agent-log"),
        k.console.section("kallsyms"),
        &all,
    ));
    for phase in &global::PHASES {
        let mine: Vec<Value> = ev
            .global
            .iter()
            .filter(|e| e.get("cgroup").and_then(Value::as_str) == Some(phase.cgroup))
            .cloned()
            .collect();
        checks.push(phase.agent_check(k.console, &mine));
    }
    let n = events.len() + ev.threads.len() + ev.global.len();
    checks.push(metrics(agent, &from, section("metrics"), n));
    checks.push(probes(agent, &from, section("agent-log")));
    let exit = section("agent-exit").first().map(|s| s.trim().to_string());
    checks.push(check(
        "agent exit 0",
        if exit.as_deref() == Some("0") {
            vec![]
        } else {
            vec![format!("agent exit status {exit:?} after SIGTERM")]
        },
        "exit 0 after SIGTERM".into(),
    ));
    checks
}

/// Events: one per victim, recorded live (`oracle::fields`, as the host tests); `problems` are
/// those found parsing them.
fn one_event_per_victim(k: &Kernel, events: &[Value], mut problems: Vec<String>) -> Check {
    let cgroups: Vec<String> = k.victims.iter().map(|v| format!("/{}", v.cgroup)).collect();
    let victims: Vec<(i64, &str)> = k
        .victims
        .iter()
        .zip(&cgroups)
        .map(|(v, c)| (v.pid, c.as_str()))
        .collect();
    problems.extend(oracle::fields::one_event_per_victim(&victims, events));
    check(
        "one event per victim",
        problems,
        format!("{} events for {} victims", events.len(), k.victims.len()),
    )
}

/// `fields = kernel`, `cgroup v2 path`, `tgid`: each event against the kernel's "Killed
/// process" line and the cgroup `/init` put the victim in (`oracle::fields`, as the host tests).
fn kernel_fields(k: &Kernel, events: &[Value]) -> [Check; 3] {
    let mut fields = Vec::new();
    let mut cgroups = Vec::new();
    let mut tgids = Vec::new();
    for e in events {
        let pid = pid_of(e);
        let kill = k.kills.iter().find(|kill| kill.pid == pid);
        fields.extend(oracle::fields::match_kernel(e, kill));
        let victim = k.victims.iter().find(|v| v.pid == pid);
        let want_cg = victim.map(|v| format!("/{}", v.cgroup));
        cgroups.extend(oracle::fields::cgroup_is(e, want_cg.as_deref()));
        tgids.extend(oracle::fields::tgid_is_pid(e));
    }
    let n = events.len();
    [
        check(
            "fields = kernel",
            fields,
            format!("{n} events: pid comm uid memory pgtables oom_score_adj equal"),
        ),
        check("cgroup v2 path", cgroups, format!("{n} events: /t or /g")),
        check("tgid", tgids, format!("{n} events: tgid = pid")),
    ]
}

/// memory.events: the kernel counts oom_kill once per "Killed process" line, and a
/// memory.oom.group kill prints and counts its chosen task twice (one victim, one event).
fn memory_events(k: &Kernel, events: &[Value]) -> Check {
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    for cg in ["t", "g"] {
        let section = k.console.section(&format!("memory.events-{cg}"));
        let path = format!("/{cg}");
        let killed: Vec<i64> = k
            .kills
            .iter()
            .filter(|kill| kill.phase == cg)
            .map(|kill| kill.pid)
            .collect();
        let count = KillCount {
            cgroup: &path,
            oom_kill: key_value(section, "oom_kill"),
            killed: &killed,
            events: events
                .iter()
                .filter(|e| e.get("cgroup").and_then(Value::as_str) == Some(&path))
                .count(),
        };
        let group = key_value(section, "oom_group_kill");
        let render = |v: Option<i64>| v.map_or("absent".into(), |g| g.to_string());
        let (lines, distinct) = (killed.len(), count.victims());
        counts.push(format!(
            "{path} oom_kill {} = {lines} kernel lines ({} events{}), oom_group_kill {}",
            render(count.oom_kill),
            count.events,
            if lines > distinct {
                format!(" + {} chosen task counted twice", lines - distinct)
            } else {
                String::new()
            },
            render(group)
        ));
        problems.extend(count.problems());
        let want_group = i64::from(cg == "g");
        if group.is_some_and(|g| g != want_group) {
            problems.push(format!(
                "{path}: memory.events oom_group_kill {group:?}, expected {want_group}"
            ));
        }
    }
    check("memory.events", problems, counts.join("; "))
}

/// `oomwatch_oom_kills_all_total` counts the events; `oomwatch_probe_attached` says 1 for the
/// agent's source of OOM context (`from`: its first choice, or the fallback it reported) and 0
/// for each row it disabled.
fn metrics(agent: &Agent, from: &source::Source, lines: &[String], n: usize) -> Check {
    let mut problems = Vec::new();
    let total = key_value(lines, "oomwatch_oom_kills_all_total");
    if total != Some(n as i64) {
        problems.push(format!(
            "oomwatch_oom_kills_all_total {total:?}, expected {n}"
        ));
    }
    let want = std::iter::once((from.probe, 1)).chain(agent.disabled.iter().map(|p| (*p, 0)));
    let mut said = Vec::new();
    for (probe, value) in want {
        let key = format!("oomwatch_probe_attached{{probe=\"{probe}\"}}");
        let got = key_value(lines, &key);
        if got != Some(value) {
            problems.push(format!("{key} {got:?}, expected {value}"));
        }
        said.push(format!("{probe} {value}"));
    }
    check(
        "metrics",
        problems,
        format!(
            "oomwatch_oom_kills_all_total {n}, probe_attached {}",
            said.join(", ")
        ),
    )
    .on(from.fallback.clone())
}

/// The log says `probe attached` for both mark_victim rows and the agent's source of OOM
/// context (`from`), and `probe unavailable` (disabled by --disable-probe) for each row it
/// disabled.
fn probes(agent: &Agent, from: &source::Source, log: &[String]) -> Check {
    let status = probe_status(log);
    let mut problems = Vec::new();
    for p in REQUIRED_PROBES.iter().chain([&from.probe]) {
        match status.get(*p) {
            Some((true, _)) => {}
            Some((false, reason)) => problems.push(format!("{p}: unavailable: {reason}")),
            None => problems.push(format!("{p}: not mentioned in the agent log")),
        }
    }
    for p in agent.disabled {
        match status.get(*p) {
            Some((false, reason)) if reason == DISABLED => {}
            Some((ok, d)) => problems.push(format!(
                "{p}: {} ({d}), expected unavailable ({DISABLED})",
                if *ok { "attached" } else { "unavailable" }
            )),
            None => problems.push(format!("{p}: not mentioned in the agent log")),
        }
    }
    let listing: Vec<String> = status
        .iter()
        .map(|(p, (ok, d))| {
            let state = if *ok { "attached" } else { "unavailable" };
            format!("{p} {state} ({d})")
        })
        .collect();
    check("probes attached", problems, listing.join("\n")).on(from.fallback.clone())
}

#[cfg(test)]
mod tests {
    //! Tests of one agent's probe and metrics checks on the real console fixture.

    use super::*;
    use crate::check::{
        check_console,
        fixture::{get, mutate_in, FIXTURE},
    };

    /// The `probe` line of `probe` in the log section of `agent`, replaced.
    fn replace_probe_line(agent_log: &str, probe: &str, new_fields: &str) -> String {
        let text = FIXTURE.to_string();
        let c = Console::parse(&text);
        let line = c.sections[agent_log]
            .iter()
            .find(|l| l.contains(&format!(r#""probe":"{probe}""#)) && l.contains("\"probe "))
            .unwrap();
        let start = line.find(r#""fields":{"#).unwrap() + r#""fields":{"#.len();
        let end = line.find(r#"},"target""#).unwrap();
        mutate_in(
            &text,
            line,
            &format!("{}{new_fields}{}", &line[..start], &line[end..]),
        )
    }

    #[test]
    fn probe_problems_are_reported_with_what_the_log_said() {
        let unavailable = |p: &str, why: &str| {
            format!(r#""message":"probe unavailable","probe":"{p}","reason":"{why}""#)
        };
        let cases = [
        ("kmsg", "tp_btf:mark_victim", unavailable("tp_btf:mark_victim", "no BTF"),
         "tp_btf:mark_victim: unavailable: no BTF"),
        ("fentry", "fentry:oom_kill_process", unavailable("fentry:oom_kill_process", "EPERM"),
         "fentry:oom_kill_process: unavailable: EPERM"),
        ("kmsg", "kmsg:oom_report",
         r#""message":"probe unavailable: events carry no OOM context","probe":"kmsg:oom_report","reason":"EACCES""#.to_string(),
         "kmsg:oom_report: unavailable: EACCES"),
        ("kprobe", "fentry:oom_kill_process",
         r#""message":"probe attached","probe":"fentry:oom_kill_process","reads":"all""#.to_string(),
         "fentry:oom_kill_process: attached (all), expected unavailable (disabled by --disable-probe)"),
    ];
        for (agent, probe, fields, detail) in cases {
            let section = AGENTS
                .iter()
                .find(|a| a.name == agent)
                .unwrap()
                .section("agent-log");
            let r = check_console(&replace_probe_line(&section, probe, &fields));
            assert_eq!(r.failed(), [format!("{agent}: probes attached")], "{probe}");
            assert_eq!(get(&r, agent, "probes attached").detail, detail);
        }
    }

    #[test]
    fn probe_attached_metrics_must_match_the_agent() {
        let from = "oomwatch_probe_attached{probe=\"kmsg:oom_report\"} 1\n";
        let r = check_console(&mutate_in(FIXTURE, from, &from.replace(" 1", " 0")));
        assert_eq!(r.failed(), ["kmsg: metrics"]);
        assert_eq!(
            get(&r, "kmsg", "metrics").detail,
            "oomwatch_probe_attached{probe=\"kmsg:oom_report\"} Some(0), expected 1"
        );
    }

    #[test]
    fn agent_problems_lists_warnings_and_plain_text_but_not_disabled_probes() {
        let log = [
        r#"{"level":"INFO","fields":{"message":"ok"}}"#.to_string(),
        r#"{"level":"WARN","fields":{"message":"could not"}}"#.to_string(),
        "Error: no probe could attach".to_string(),
        String::new(),
        r#"{"level":"WARN","fields":{"message":"probe unavailable","probe":"kprobe:oom_kill_process","reason":"disabled by --disable-probe"}}"#.to_string(),
    ];
        assert_eq!(agent_problems(&log), log[1..3]);
        // The fixture's only warnings: the rows of oom_kill_process that its fentry and kprobe
        // agents logged as silent after an OOM kill (7.2 and 6.12 alike; its context came from
        // the kernel log then).
        let c = Console::parse(FIXTURE);
        for a in &AGENTS {
            let problems = agent_problems(c.section(&a.section("agent-log")));
            let silent = format!(
                r#""message":"probe attached but silent: this kernel's hook gives nothing after an OOM kill; using the fallback","probe":"{}""#,
                a.oom_probe
            );
            assert!(
                problems.iter().all(|p| p.contains(&silent)) && problems.len() <= 1,
                "{}: {problems:#?}",
                a.name
            );
        }
    }
}
