//! Host-side checks of one `vm-test` guest run: the serial console is split into the sections
//! the guest's `/init` prints, and the agent's JSON events are compared with the kernel's own
//! "Killed process" lines, the cgroups' `memory.events`, the metrics and the agent's log.

use std::collections::BTreeSet;

use super::{vm_json::Json, vm_parse::*};

/// One line of the result table; `detail` may have several lines (per-field diffs).
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
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
    }
}

/// Event field -> key of the kernel's "Killed process" line and its multiplier to bytes.
const NUMERIC_FIELDS: [(&str, &str, i64); 7] = [
    ("total_vm", "total-vm", 1024),
    ("anon_rss", "anon-rss", 1024),
    ("file_rss", "file-rss", 1024),
    ("shmem_rss", "shmem-rss", 1024),
    ("pgtables", "pgtables", 1024),
    ("oom_score_adj", "oom_score_adj", 1),
    ("uid", "UID", 1),
];

/// Every check on one guest's console output.
pub fn check_console(text: &str) -> Vec<Check> {
    let c = Console::parse(text);
    let mut checks = Vec::new();

    let missing: Vec<String> = SECTIONS
        .iter()
        .filter(|s| !c.sections.contains_key(**s))
        .map(|s| format!("section {s} missing"))
        .collect();
    let mut problems = missing;
    if !c.done {
        problems.push(format!("{DONE} never printed: the guest did not finish"));
    }
    checks.push(check(
        "guest finished",
        problems,
        "all sections printed".into(),
    ));

    // Victims: every task /init started was SIGKILLed (exit 137) and the kernel logged it.
    let victims = victims(c.section("victims"));
    let kills = kernel_kills(c.section("dmesg"));
    let killed: BTreeSet<i64> = kills.iter().map(|k| k.pid).collect();
    let mut problems = Vec::new();
    for (cg, n) in [
        ("t", super::vm_initramfs::T_VICTIMS),
        ("g", super::vm_initramfs::G_VICTIMS),
    ] {
        let got = victims.iter().filter(|v| v.cgroup == cg).count();
        if got != n {
            problems.push(format!("/{cg}: {got} victims recorded, expected {n}"));
        }
    }
    for v in &victims {
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
    checks.push(check(
        "victims killed",
        problems,
        format!(
            "/t {} and /g {} distinct pids SIGKILLed ({} and {} 'Killed process' lines)",
            victims.iter().filter(|v| v.cgroup == "t").count(),
            victims.iter().filter(|v| v.cgroup == "g").count(),
            lines_per_cg("t"),
            lines_per_cg("g")
        ),
    ));

    // Events: one per victim, fields equal to the kernel's numbers.
    let mut problems = Vec::new();
    let mut events: Vec<Json> = Vec::new();
    for line in c.section("events") {
        match Json::parse(line) {
            Ok(v) => events.push(v),
            Err(e) => problems.push(format!("not a JSON event ({e}): {line}")),
        }
    }
    let pid_of = |e: &Json| e.get("pid").and_then(Json::as_i64).unwrap_or(-1);
    for v in &victims {
        let n = events.iter().filter(|e| pid_of(e) == v.pid).count();
        if n != 1 {
            problems.push(format!("pid {} (/{}): {n} events", v.pid, v.cgroup));
        }
    }
    for e in &events {
        if !victim_pids.contains(&pid_of(e)) {
            problems.push(format!(
                "event for pid {}, which is no test victim",
                pid_of(e)
            ));
        }
    }
    checks.push(check(
        "one event per victim",
        problems,
        format!("{} events for {} victims", events.len(), victims.len()),
    ));

    let mut fields = Vec::new();
    let mut cgroups = Vec::new();
    let mut tgids = Vec::new();
    for e in &events {
        let pid = pid_of(e);
        let render = |k: &str| e.get(k).map(Json::render).unwrap_or("absent".into());
        match kills.iter().find(|k| k.pid == pid) {
            None => fields.push(format!("pid {pid}: no kernel line to compare with")),
            Some(k) => {
                if e.get("comm").and_then(Json::as_str) != Some(k.comm.as_str()) {
                    fields.push(format!(
                        "pid {pid} comm: agent {} kernel {:?}",
                        render("comm"),
                        k.comm
                    ));
                }
                for (field, key, mult) in NUMERIC_FIELDS {
                    let want = k.numbers.get(key).map(|n| n * mult);
                    if e.get(field).and_then(Json::as_i64) != want || want.is_none() {
                        fields.push(format!(
                            "pid {pid} {field}: agent {} kernel {}",
                            render(field),
                            want.map_or("absent".into(), |w| w.to_string())
                        ));
                    }
                }
            }
        }
        let want_cg = victims
            .iter()
            .find(|v| v.pid == pid)
            .map(|v| format!("/{}", v.cgroup));
        let got_cg = e.get("cgroup").and_then(Json::as_str).map(str::to_string);
        if got_cg.is_none() || got_cg != want_cg {
            cgroups.push(format!(
                "pid {pid} cgroup: agent {} expected {} (source {})",
                render("cgroup"),
                want_cg.unwrap_or("?".into()),
                e.get("sources")
                    .and_then(|s| s.get("cgroup"))
                    .map(Json::render)
                    .unwrap_or("none".into())
            ));
        }
        if e.get("tgid").and_then(Json::as_i64) != Some(pid) {
            tgids.push(format!(
                "pid {pid} tgid: agent {} expected {pid}",
                render("tgid")
            ));
        }
    }
    let n = events.len();
    checks.push(check(
        "fields = kernel",
        fields,
        format!("{n} events: pid comm uid memory pgtables oom_score_adj equal"),
    ));
    checks.push(check(
        "cgroup v2 path",
        cgroups,
        format!("{n} events: /t or /g"),
    ));
    checks.push(check("tgid", tgids, format!("{n} events: tgid = pid")));
    let invocations = oom_invocations(c.section("dmesg"));
    checks.push(super::vm_check_oom::check_oom(
        &events,
        &victims,
        &invocations,
    ));

    // memory.events: the kernel counts oom_kill once per "Killed process" line, and a
    // memory.oom.group kill prints and counts its chosen task twice (one victim, one event).
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    for cg in ["t", "g"] {
        let section = c.section(&format!("memory.events-{cg}"));
        let got = key_value(section, "oom_kill");
        let in_cg = |e: &&Json| e.get("cgroup").and_then(Json::as_str) == Some(&format!("/{cg}"));
        let n_events = events.iter().filter(in_cg).count() as i64;
        let lines = lines_per_cg(cg) as i64;
        let distinct = kills
            .iter()
            .filter(|k| k.phase == cg)
            .map(|k| k.pid)
            .collect::<BTreeSet<_>>()
            .len() as i64;
        let group = key_value(section, "oom_group_kill");
        counts.push(format!(
            "/{cg} oom_kill {} = {lines} kernel lines ({n_events} events{}), oom_group_kill {}",
            got.map_or("absent".into(), |g| g.to_string()),
            if lines > distinct {
                format!(" + {} chosen task counted twice", lines - distinct)
            } else {
                String::new()
            },
            group.map_or("absent".into(), |g| g.to_string())
        ));
        if got != Some(lines) || n_events != distinct {
            problems.push(format!(
                "/{cg}: memory.events oom_kill {}, kernel 'Killed process' lines {lines} \
                 ({distinct} distinct pids), agent events with cgroup /{cg}: {n_events}",
                got.map_or("absent".into(), |g| g.to_string()),
            ));
        }
        let want_group = i64::from(cg == "g");
        if group.is_some_and(|g| g != want_group) {
            problems.push(format!(
                "/{cg}: memory.events oom_group_kill {group:?}, expected {want_group}"
            ));
        }
    }
    checks.push(check("memory.events", problems, counts.join("; ")));

    let total = key_value(c.section("metrics"), "oomwatch_oom_kills_all_total");
    checks.push(check(
        "metrics",
        if total == Some(n as i64) {
            vec![]
        } else {
            vec![format!(
                "oomwatch_oom_kills_all_total {total:?}, expected {n}"
            )]
        },
        format!("oomwatch_oom_kills_all_total {n}"),
    ));

    let probes = probe_status(c.section("agent-log"));
    let mut problems: Vec<String> = REQUIRED_PROBES
        .iter()
        .filter_map(|p| match probes.get(*p) {
            Some((true, _)) => None,
            Some((false, reason)) => Some(format!("{p}: unavailable: {reason}")),
            None => Some(format!("{p}: not mentioned in the agent log")),
        })
        .collect();
    // These kernels allow fentry and kprobes: one of the oom_kill_process probes must attach.
    let oom_kill: Vec<_> = probes
        .iter()
        .filter(|(p, _)| p.ends_with(":oom_kill_process"))
        .collect();
    if !oom_kill.iter().any(|(_, (ok, _))| *ok) {
        let said: Vec<String> = oom_kill
            .iter()
            .map(|(p, (_, reason))| format!("{p}: unavailable: {reason}"))
            .collect();
        problems.push(format!(
            "no oom_kill_process probe attached ({})",
            if said.is_empty() {
                "none mentioned in the agent log".to_string()
            } else {
                said.join("; ")
            }
        ));
    }
    let listing: Vec<String> = probes
        .iter()
        .map(|(p, (ok, d))| {
            let state = if *ok { "attached" } else { "unavailable" };
            format!("{p} {state} ({d})")
        })
        .collect();
    checks.push(check("probes attached", problems, listing.join("\n")));

    let exit = c
        .section("agent-exit")
        .first()
        .map(|s| s.trim().to_string());
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
#[path = "vm_check_tests.rs"]
mod tests;
