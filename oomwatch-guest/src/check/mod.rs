//! Host-side checks of one `vm-test` guest run: the serial console is split into the sections
//! the guest's `/init` prints; the boot's own checks are here, each agent's JSON events are
//! compared with the kernel's own lines, `memory.events`, its metrics and its log in
//! `agent`.

use std::collections::BTreeSet;

pub use oomwatch_testkit::oracle::{at, render};

pub mod candidates;
#[cfg(test)]
pub mod fixture;
pub mod global;
pub mod lifecycle;
pub mod oom;
pub mod platform;
pub mod sigkill;
pub mod source;
pub mod stacks;
pub mod threads;

use crate::{
    agent::{check_agent, Agent, Kernel, AGENTS},
    console::*,
    script::{G_VICTIMS, T_VICTIMS},
};

/// One line of the result table; `detail` may have several lines (per-field diffs).
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// The fallback the check accepted because the agent reported that the kernel lacks its
    /// first choice's hook (`source`), with the agent's reason.
    pub fallback: Option<String>,
}

pub fn check(name: &'static str, problems: Vec<String>, ok_detail: String) -> Check {
    Check {
        name,
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            ok_detail
        } else {
            problems.join("\n")
        },
        fallback: None,
    }
}

impl Check {
    /// The check, marked as passed (or failed) on `fallback`.
    pub fn on(self, fallback: Option<String>) -> Check {
        Check { fallback, ..self }
    }
}

/// The checks of one boot: those of the boot itself, then each agent's.
#[derive(Debug, Clone)]
pub struct Report {
    pub boot: Vec<Check>,
    pub agents: Vec<(&'static Agent, Vec<Check>)>,
}

impl Report {
    /// `name` or `agent: name` of every failed check.
    pub fn failed(&self) -> Vec<String> {
        let boot = self.boot.iter().filter(|c| !c.ok).map(|c| c.name.into());
        let agents = self.agents.iter().flat_map(|(a, checks)| {
            checks
                .iter()
                .filter(|c| !c.ok)
                .map(move |c| format!("{}: {}", a.name, c.name))
        });
        boot.chain(agents).collect()
    }

    /// The first problem of each failed check, `name: problem` or `agent: name: problem`, each
    /// cut to `width` characters: what a log's last lines can show of a failure.
    pub fn first_problems(&self, width: usize) -> Vec<String> {
        let first = |c: &Check| -> String {
            let line = c.detail.lines().next().unwrap_or_default();
            let mut cut: String = line.chars().take(width).collect();
            if cut.len() < line.len() {
                cut.push('…');
            }
            cut
        };
        let boot = self
            .boot
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, first(c)));
        let agents = self.agents.iter().flat_map(|(a, checks)| {
            checks
                .iter()
                .filter(|c| !c.ok)
                .map(move |c| format!("{}: {}: {}", a.name, c.name, first(c)))
        });
        boot.chain(agents).collect()
    }
}

/// Every check on one guest's console output.
pub fn check_console(text: &str) -> Report {
    let c = Console::parse(text);
    let victims = victims(c.section("victims"));
    // The multi-threaded phase (last) has checks of its own.
    let dmesg = threads::before_phase(c.section("dmesg"));
    let kills = kernel_kills(dmesg);
    let invocations = oom_invocations(dmesg);
    let mut boot = vec![
        guest_finished(&c),
        victims_killed(&victims, &kills, &invocations),
        threads::boot_check(&c),
    ];
    boot.extend(global::PHASES.iter().map(|phase| phase.boot_check(&c)));
    boot.push(platform::seccomp(&c));
    let kernel = Kernel {
        console: &c,
        victims: &victims,
        kills: &kills,
        invocations: &invocations,
    };
    let agents = AGENTS
        .iter()
        .map(|a| (a, check_agent(a, &kernel)))
        .collect();
    Report { boot, agents }
}

/// Every section `/init` prints is there, and its last line.
fn guest_finished(c: &Console) -> Check {
    let agent_sections = AGENTS
        .iter()
        .flat_map(|a| AGENT_SECTIONS.iter().map(|s| a.section(s)));
    let mut problems: Vec<String> = BOOT_SECTIONS
        .iter()
        .map(|s| s.to_string())
        .chain(agent_sections)
        .filter(|s| !c.sections.contains_key(s))
        .map(|s| format!("section {s} missing"))
        .collect();
    if !c.done {
        problems.push(format!("{DONE} never printed: the guest did not finish"));
    }
    check("guest finished", problems, "all sections printed".into())
}

/// Victims: every task /init started was SIGKILLed (exit 137) and the kernel logged it.
fn victims_killed(victims: &[Victim], kills: &[KernelKill], invocations: &[Invocation]) -> Check {
    let killed: BTreeSet<i64> = kills.iter().map(|k| k.pid).collect();
    let mut problems = Vec::new();
    for (cg, n) in [("t", T_VICTIMS), ("g", G_VICTIMS)] {
        let got = victims.iter().filter(|v| v.cgroup == cg).count();
        if got != n {
            problems.push(format!("/{cg}: {got} victims recorded, expected {n}"));
        }
    }
    for v in victims {
        if v.status != 137 {
            problems.push(format!(
                "pid {} in /{} exited {} (not 137 = SIGKILL)",
                v.pid, v.cgroup, v.status
            ));
        }
        if !killed.contains(&v.pid) {
            problems.push(format!("no 'Killed process {}' line", v.pid));
        }
    }
    let victim_pids: BTreeSet<i64> = victims.iter().map(|v| v.pid).collect();
    for pid in killed.difference(&victim_pids) {
        problems.push(format!("kernel killed pid {pid}, which is no test victim"));
    }
    let lines_per_cg = |cg: &str| kills.iter().filter(|k| k.phase == cg).count();
    let suppressed = invocations.iter().filter(|i| !i.header).count();
    check(
        "victims killed",
        problems,
        format!(
            "/t {} and /g {} distinct pids SIGKILLed ({} and {} 'Killed process' lines); \
             {} OOM invocations{}",
            victims.iter().filter(|v| v.cgroup == "t").count(),
            victims.iter().filter(|v| v.cgroup == "g").count(),
            lines_per_cg("t"),
            lines_per_cg("g"),
            invocations.len(),
            match suppressed {
                0 => String::new(),
                n => format!(", {n} without header (kernel rate limit)"),
            }
        ),
    )
}

/// Guest uptime in seconds when the results were printed.
pub fn guest_uptime(text: &str) -> Option<f64> {
    let c = Console::parse(text);
    c.section("uptime")
        .first()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    //! Tests of the `vm-test` checks on a real console log of Debian's 7.2.13+deb14-cloud-amd64
    //! guest with the three agents (fentry, kprobe, kmsg), as `cargo xtask vm-test` saved it in
    //! `target/vm/<release>/console.log` (unedited). Pids and values come from the fixture
    //! itself (`fixture::sample`), so a refreshed fixture needs no test edits.

    use super::*;
    use crate::script::{G_VICTIMS, T_VICTIMS};

    use super::fixture::{self, *};

    #[test]
    fn every_check_of_every_agent_passes_on_the_real_sample() {
        let r = check_console(FIXTURE);
        assert!(r.failed().is_empty(), "{r:#?}");
        // Finished, victims, threaded kills, the global, manual, allocating-task, cpuset and
        // memory-policy kills, and seccomp.
        assert_eq!(r.boot.len(), 9);
        assert_eq!(
            r.agents
                .iter()
                .map(|(a, c)| (a.name, c.len()))
                .collect::<Vec<_>>(),
            [("fentry", 20), ("kprobe", 20), ("kmsg", 20)]
        );
        let s = sample();
        let n = T_VICTIMS + G_VICTIMS;
        // The memory.oom.group kill prints (and counts) its chosen task twice.
        let g_lines = G_VICTIMS + 1;
        let victims = get(&r, "", "victims killed").detail;
        assert!(
            victims.ends_with(&format!(
                "({T_VICTIMS} and {g_lines} 'Killed process' lines); {} OOM invocations",
                T_VICTIMS + 1
            )),
            "{victims}"
        );
        for a in &AGENTS {
            assert_agent_passes(&r, &s, a);
        }
        assert_kmsg_agent(&r, n);
        assert_uptime_after_dmesg(&s);
    }

    /// What every agent's checks say on the sample: events, memory.events, context, oom_ids,
    /// lifecycle, earlyoom and probes.
    fn assert_agent_passes(r: &Report, s: &Sample, a: &crate::agent::Agent) {
        let (agent, source) = (a.name, a.oom_probe);
        let n = T_VICTIMS + G_VICTIMS;
        let g_lines = G_VICTIMS + 1;
        assert_eq!(
            get(r, agent, "one event per victim").detail,
            format!("{n} events for {n} victims")
        );
        let mem = get(r, agent, "memory.events").detail;
        assert!(
            mem.contains(&format!(
                "/g oom_kill {g_lines} = {g_lines} kernel lines \
             ({G_VICTIMS} events + 1 chosen task counted twice)"
            )),
            "{mem}"
        );
        let oom = get(r, agent, "oom context").detail;
        assert!(
            oom.starts_with(&format!("{n} events from {source}: ")),
            "{oom}"
        );
        // One oom_id per invocation, in the kernel's order, all different; the group kill
        // (the last) shares its id among its victims.
        let ids: Vec<String> = s
            .invocations
            .iter()
            .map(|i| s.value(&a.section("events"), i.killed[0], "oom_id"))
            .collect();
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>().len(),
            ids.len(),
            "{ids:?}"
        );
        assert!(
            oom.ends_with(&format!(
                "oom_id {} (shared by {G_VICTIMS} victims)",
                ids.join(", ")
            )),
            "{oom}"
        );
        // The fixture's agents attached the exit probe and the guest ran its earlyoom phase:
        // both checks of check::lifecycle applied.
        let lifecycle = get(r, agent, "kill lifecycle").detail;
        assert!(
            lifecycle.starts_with("kill→exit per victim: "),
            "{lifecycle}"
        );
        for pid in s.victims.iter().map(|v| v.pid) {
            assert!(
                lifecycle.contains(&format!(" {pid} ")),
                "{pid}: {lifecycle}"
            );
        }
        let userspace = get(r, agent, "userspace killer").detail;
        assert!(userspace.starts_with("earlyoom killed "), "{userspace}");
        assert_sigkills(r, s, a);
        let probes = get(r, agent, "probes attached").detail;
        assert!(probes.contains(&format!("{source} attached")), "{probes}");
        assert!(probes.contains("tp_btf:mark_victim attached"), "{probes}");
        assert!(
            probes.contains("tracepoint:oom/mark_victim attached"),
            "{probes}"
        );
    }

    /// Each victim's SIGKILL attributed (check::sigkill): the /t ones to the OOM killer, the /g
    /// ones to the group sweep, each with its event's oom_id, and earlyoom's by its executable.
    fn assert_sigkills(r: &Report, s: &Sample, a: &crate::agent::Agent) {
        let detail = get(r, a.name, "sigkill attribution").detail;
        assert!(
            detail.starts_with("tp_btf:signal_generate:sigkill, "),
            "{detail}"
        );
        for (cg, kind, n) in [
            ("t", "oom_kernel", T_VICTIMS),
            ("g", "oom_group", G_VICTIMS),
        ] {
            assert!(
                detail.contains(&format!("/{cg} {kind} {n}/{n} (")),
                "{detail}"
            );
            for pid in s.victims_in(cg) {
                let id = s.value(&a.section("events"), pid, "oom_id");
                assert!(
                    detail.contains(&format!("pid {pid} oom_id {id}")),
                    "{detail}"
                );
            }
        }
        assert!(
            detail.contains(" oom_userspace by /usr/bin/earlyoom "),
            "{detail}"
        );
        assert!(
            detail.ends_with("oomwatch_sigkills_dropped_total rate_limited 0, ring_full 0"),
            "{detail}"
        );
    }

    /// The kmsg agent's probes and metrics.
    fn assert_kmsg_agent(r: &Report, n: usize) {
        let probes = get(r, "kmsg", "probes attached").detail;
        assert!(probes.contains(
        "kmsg:oom_report attached (OOM context (constraint, gfp_mask, order, memcg) from the kernel log)"
    ));
        assert!(
            probes.contains("kprobe:oom_kill_process unavailable (disabled by --disable-probe)")
        );
        assert_eq!(
            get(r, "kmsg", "metrics").detail,
            format!(
                "oomwatch_oom_kills_all_total {}, probe_attached kmsg:oom_report 1, \
             fentry:oom_kill_process 0, kprobe:oom_kill_process 0",
                // t, g, m, and the h, s, a, c and p phases' one victim each.
                n + crate::script::M_VICTIMS + 5
            )
        );
    }

    /// /init prints its uptime after the run: later than the kernel's last line.
    fn assert_uptime_after_dmesg(s: &Sample) {
        let last_stamp: f64 = s
            .console
            .section("dmesg")
            .iter()
            .filter_map(|l| l.strip_prefix('[')?.split_once(']')?.0.trim().parse().ok())
            .next_back()
            .expect("time-stamped dmesg lines");
        let uptime = guest_uptime(FIXTURE).expect("an uptime");
        assert!(uptime > last_stamp, "{uptime} <= {last_stamp}");
    }

    #[test]
    fn sections_and_kernel_lines_are_parsed() {
        let s = sample();
        let c = &s.console;
        assert!(c.done);
        for a in &AGENTS {
            for sec in AGENT_SECTIONS {
                assert!(c.sections.contains_key(&a.section(sec)), "section {sec}");
            }
            assert_eq!(
                kernel_events(c.section(&a.section("events"))).len(),
                // t, g, m and one each in the h, s, a, c and p phases.
                T_VICTIMS + G_VICTIMS + crate::script::M_VICTIMS + 5
            );
        }
        assert_eq!(s.victims_in("t").len(), T_VICTIMS);
        assert_eq!(s.victims_in("g").len(), G_VICTIMS);
        let phase = |p: &str| -> Vec<i64> {
            let kills = s.kills.iter().filter(|k| k.phase == p);
            kills.map(|k| k.pid).collect()
        };
        // /t: one kill per victim, in the order /init started them.
        assert_eq!(phase("t"), s.victims_in("t"));
        // /g: the group kill prints its chosen task first and again last, the others between.
        let g = phase("g");
        assert_eq!(g.len(), G_VICTIMS + 1);
        assert_eq!(g.first(), Some(&s.group_chosen()));
        assert_eq!(g.last(), Some(&s.group_chosen()));
        assert_eq!(
            g.iter().collect::<BTreeSet<_>>(),
            s.victims_in("g").iter().collect()
        );
        // The first line of each victim agrees with its row of the kernel's task dump (4 kB pages).
        let mut seen = BTreeSet::new();
        for k in s.kills.iter().filter(|k| seen.insert(k.pid)) {
            assert_eq!(k.comm, s.comm_of(k.pid));
            let row = s.row(k.pid);
            let n = |key: &str| k.numbers[key];
            assert_eq!(n("total-vm"), row["total_vm"] * 4, "{k:?}");
            assert_eq!(
                n("anon-rss") + n("file-rss") + n("shmem-rss"),
                row["rss"] * 4,
                "{k:?}"
            );
            assert_eq!(n("pgtables") * 1024, row["pgtables_bytes"], "{k:?}");
            assert_eq!(n("UID"), row["uid"], "{k:?}");
            assert_eq!(n("oom_score_adj"), row["oom_score_adj"], "{k:?}");
        }
        assert_eq!(seen.len(), T_VICTIMS + G_VICTIMS);
        // /init gives the last /t victim, and only it, a nonzero oom_score_adj.
        let last = s.victims_in("t")[T_VICTIMS - 1];
        for pid in s.victims_in("t") {
            let k = s.kills.iter().find(|k| k.pid == pid).unwrap();
            assert_eq!(k.numbers["oom_score_adj"], s.adj_of(pid), "{k:?}");
            assert_eq!(s.adj_of(pid) != 0, pid == last, "{k:?}");
        }
        assert_eq!(s.adjusted_victim(), last);
    }

    #[test]
    fn a_wrong_number_gives_a_per_field_diff_for_that_agent_only() {
        let s = sample();
        let pid = s.victims_in("t")[0];
        let anon = s.number("events-kprobe", pid, "anon_rss");
        let text = mutate_event(
            FIXTURE,
            "events-kprobe",
            pid,
            &format!(r#""anon_rss":{anon},"#),
            &format!(r#""anon_rss":{},"#, anon + 1),
        );
        let r = check_console(&text);
        assert_eq!(r.failed(), ["kprobe: fields = kernel"]);
        let problem = format!("pid {pid} anon_rss: agent {} kernel {anon}", anon + 1);
        assert_eq!(get(&r, "kprobe", "fields = kernel").detail, problem);
        assert_eq!(
            r.first_problems(200),
            [format!("kprobe: fields = kernel: {problem}")]
        );
        let cut: String = problem.chars().take(5).collect();
        assert_eq!(
            r.first_problems(5),
            [format!("kprobe: fields = kernel: {cut}…")]
        );
    }

    #[test]
    fn null_fields_and_wrong_comm_are_reported() {
        let s = sample();
        let pid = s.victims_in("t")[0];
        let comm = s.comm_of(pid);
        let uid = s.number("events", pid, "uid");
        let text = mutate_event(
            FIXTURE,
            "events",
            pid,
            &format!(r#""pid":{pid},"tgid":{pid},"comm":"{comm}","uid":{uid},"#),
            &format!(r#""pid":{pid},"tgid":null,"comm":"{comm}x","uid":null,"#),
        );
        let r = check_console(&text);
        assert_eq!(r.failed(), ["fentry: fields = kernel", "fentry: tgid"]);
        assert_eq!(
            get(&r, "fentry", "fields = kernel").detail,
            format!(
                "pid {pid} comm: agent \"{comm}x\" kernel \"{comm}\"\n\
             pid {pid} uid: agent null kernel {uid}"
            )
        );
        assert_eq!(
            get(&r, "fentry", "tgid").detail,
            format!("pid {pid} tgid: agent null expected {pid}")
        );
    }

    #[test]
    fn a_missing_or_wrong_cgroup_path_fails() {
        let s = sample();
        let pid = s.victims_in("t")[0];
        let cg = s.cgroup_of(pid);
        let id = s.number("events-kmsg", pid, "cgroup_id");
        let source = s.value("events-kmsg", pid, "sources.cgroup");
        let from = format!(r#""cgroup":"{cg}","cgroup_id":{id}"#);
        for (to, detail) in [
            (
                format!(r#""cgroup":null,"cgroup_id":{id}"#),
                "agent null".to_string(),
            ),
            (
                format!(r#""cgroup":"/sys/fs/cgroup{cg}","cgroup_id":{id}"#),
                format!(r#"agent "/sys/fs/cgroup{cg}""#),
            ),
        ] {
            let text = mutate_event(FIXTURE, "events-kmsg", pid, &from, &to);
            let r = check_console(&text);
            assert!(r.failed().contains(&"kmsg: cgroup v2 path".to_string()));
            assert_eq!(
                get(&r, "kmsg", "cgroup v2 path").detail,
                format!("pid {pid} cgroup: {detail} expected {cg} (source {source})")
            );
        }
    }

    #[test]
    fn a_missing_or_duplicated_event_fails() {
        let s = sample();
        let pid = s.group_members()[0];
        let cg = s.cgroup_of(pid);
        let line = fixture::event_line(FIXTURE, "events-kprobe", pid);
        let missing = mutate_in(FIXTURE, &format!("{line}\n"), "");
        let r = check_console(&missing);
        assert_eq!(
            r.failed(),
            [
                "kprobe: one event per victim",
                "kprobe: memory.events",
                "kprobe: metrics"
            ]
        );
        assert_eq!(
            get(&r, "kprobe", "one event per victim").detail,
            format!("pid {pid} ({cg}): 0 events")
        );
        let doubled = mutate_in(FIXTURE, &format!("{line}\n"), &format!("{line}\n{line}\n"));
        let r = check_console(&doubled);
        assert!(r
            .failed()
            .contains(&"kprobe: one event per victim".to_string()));
        assert_eq!(
            get(&r, "kprobe", "one event per victim").detail,
            format!("pid {pid} ({cg}): 2 events")
        );
    }

    #[test]
    fn memory_events_must_match_the_kernel_lines_for_every_agent() {
        let s = sample();
        let t = s.kills.iter().filter(|k| k.phase == "t").count();
        let text = mutate_line(
            FIXTURE,
            "memory.events-t",
            |l| l.starts_with("oom_kill "),
            &format!("oom_kill {t}"),
            &format!("oom_kill {}", t - 1),
        );
        let r = check_console(&text);
        assert_eq!(
            r.failed(),
            [
                "fentry: memory.events",
                "kprobe: memory.events",
                "kmsg: memory.events"
            ]
        );
        assert_eq!(
            get(&r, "kmsg", "memory.events").detail,
            format!(
                "/t: memory.events oom_kill {}, kernel 'Killed process' lines {t} ({t} distinct \
             pids), agent events with cgroup /t: {t}",
                t - 1
            )
        );
    }

    #[test]
    fn a_bad_exit_status_fails() {
        let text = mutate_in(
            FIXTURE,
            "@@OWVM BEGIN agent-exit-kmsg@@\n0\n",
            "@@OWVM BEGIN agent-exit-kmsg@@\n143\n",
        );
        assert_eq!(check_console(&text).failed(), ["kmsg: agent exit 0"]);
    }

    #[test]
    fn a_truncated_console_fails_without_panicking() {
        let cut = &FIXTURE[..FIXTURE.find("@@OWVM BEGIN events-kprobe@@").unwrap()];
        let r = check_console(cut);
        let bad = r.failed();
        for name in [
            "guest finished",
            "kprobe: one event per victim",
            "kmsg: agent exit 0",
        ] {
            assert!(
                bad.contains(&name.to_string()),
                "{name} should fail: {bad:?}"
            );
        }
        assert!(
            !bad.contains(&"fentry: one event per victim".to_string()),
            "{bad:?}"
        );
        assert!(get(&r, "", "guest finished")
            .detail
            .contains("section events-kprobe missing"));
        assert_eq!(guest_uptime(cut), None);
    }
}
