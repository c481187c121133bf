//! Host-side checks of one `vm-test` guest run: the serial console is split into the sections
//! the guest's `/init` prints; the boot's own checks are here, each agent's JSON events are
//! compared with the kernel's own lines, `memory.events`, its metrics and its log in
//! `vm_agent`.

use std::collections::BTreeSet;

use super::{
    vm_agent::{check_agent, Agent, Kernel, AGENTS},
    vm_parse::*,
};

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
}

/// Every check on one guest's console output.
pub fn check_console(text: &str) -> Report {
    let c = Console::parse(text);
    let mut boot = Vec::new();

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
    boot.push(check(
        "guest finished",
        problems,
        "all sections printed".into(),
    ));

    // Victims: every task /init started was SIGKILLed (exit 137) and the kernel logged it.
    let victims = victims(c.section("victims"));
    // The multi-threaded phase (last) has checks of its own.
    let dmesg = super::vm_check_threads::before_phase(c.section("dmesg"));
    let kills = kernel_kills(dmesg);
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
    let invocations = oom_invocations(dmesg);
    let suppressed = invocations.iter().filter(|i| !i.header).count();
    boot.push(check(
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
    ));

    boot.push(super::vm_check_threads::boot_check(&c));
    for phase in &super::vm_check_global::PHASES {
        boot.push(phase.boot_check(&c));
    }

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
pub(crate) mod tests;
