//! What `vm-test` prints about its checks: the PASS/FAIL list of each boot (the boot's own
//! checks, then each agent's) and the summary table, one column group per agent with one
//! column per kernel.

use std::sync::Mutex;

use super::{check::Check, check::Report, console};

const STEP: &str = "vm";
const NAME: usize = 22;

/// Held while one boot's results are printed: boots run side by side (`vm::boot_all`).
pub static PRINT: Mutex<()> = Mutex::new(());

/// The result of one guest run.
pub struct RunResult {
    /// The series: `6.1`, `arm64-6.1`, ...
    pub label: &'static str,
    pub release: String,
    pub report: Report,
    pub boot_secs: f64,
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let mut lines = c.detail.lines();
        let first = lines.next().unwrap_or("");
        let verdict = if c.ok { "PASS" } else { "FAIL" };
        eprintln!("[{STEP}]   {verdict}  {:<NAME$} {first}", c.name);
        for more in lines {
            eprintln!("[{STEP}]         {:<NAME$} {more}", "");
        }
        if let Some(fallback) = &c.fallback {
            eprintln!("[{STEP}]         {:<NAME$} fallback: {fallback}", "");
        }
    }
}

/// The checks of one boot, each with its detail lines, and each agent's log warnings.
pub fn print_run(r: &RunResult, console: &console::Console) {
    print_checks(&r.report.boot);
    for (agent, checks) in &r.report.agents {
        eprintln!("[{STEP}]   {}:", agent.describe());
        print_checks(checks);
        let log = console.section(&agent.section("agent-log"));
        for p in console::agent_problems(log).iter().take(10) {
            eprintln!("[{STEP}]         agent log: {p}");
        }
    }
}

/// Rows: the boot's checks, then the agents' (the same names for each agent). Columns: one
/// group per agent, one column per kernel; a boot check's verdict is repeated in every group,
/// as each agent's results depend on it.
pub fn print_summary(results: &[RunResult]) {
    for line in summary(results) {
        eprintln!("[{STEP}] {line}");
    }
}

fn summary(results: &[RunResult]) -> Vec<String> {
    let Some(first) = results.first() else {
        return vec![];
    };
    let col = results
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(4)
        .max(5)
        + 2;
    let agents: Vec<_> = first.report.agents.iter().map(|(a, _)| *a).collect();
    let widest = agents.iter().map(|a| a.name.len() + 8).max().unwrap_or(0);
    let group = (col * results.len()).max(widest);
    let kernels: Vec<String> = results
        .iter()
        .map(|r| format!("{} = {}", r.label, r.release))
        .collect();
    let mut out = vec![format!("summary ({})", kernels.join(", "))];
    let mut header = format!("{:<NAME$}", "agent");
    let mut sub = format!("{:<NAME$}", "check");
    for a in &agents {
        header.push_str(&format!("{:<group$}", format!("{} :{}", a.name, a.port)));
        let labels: String = results
            .iter()
            .map(|r| format!("{:<col$}", r.label))
            .collect();
        sub.push_str(&format!("{labels:<group$}"));
    }
    out.push(header.trim_end().to_string());
    out.push(sub.trim_end().to_string());
    let verdict = |c: Option<&Check>| {
        c.map_or("-", |c| match (c.ok, c.fallback.is_some()) {
            (true, false) => "PASS",
            (true, true) => "PASS*",
            (false, _) => "FAIL",
        })
    };
    let mut rows: Vec<&'static str> = first.report.boot.iter().map(|c| c.name).collect();
    if let Some((_, checks)) = first.report.agents.first() {
        rows.extend(checks.iter().map(|c| c.name));
    }
    for name in rows {
        let mut row = format!("{name:<NAME$}");
        for i in 0..agents.len() {
            let cells: String = results
                .iter()
                .map(|r| {
                    let boot = r.report.boot.iter().find(|c| c.name == name);
                    let own = r
                        .report
                        .agents
                        .get(i)
                        .and_then(|(_, cs)| cs.iter().find(|c| c.name == name));
                    format!("{:<col$}", verdict(boot.or(own)))
                })
                .collect();
            row.push_str(&format!("{cells:<group$}"));
        }
        out.push(row.trim_end().to_string());
    }
    let times: String = results
        .iter()
        .map(|r| format!("{:<col$}", format!("{:.1}s", r.boot_secs)))
        .collect();
    out.push(format!("{:<NAME$}{}", "boot-to-poweroff", times.trim_end()));
    if out.iter().any(|l| l.contains("PASS*")) {
        out.push(
            "PASS*: passed on the fallback row the agent took where the kernel lacks the hook \
             of its first choice (the reason is in the kernel's list above)"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_console, fixture::FIXTURE};

    #[test]
    fn the_summary_has_one_column_group_per_agent_and_one_column_per_kernel() {
        let run = |label, release: &str, secs| RunResult {
            label,
            release: release.into(),
            report: check_console(FIXTURE),
            boot_secs: secs,
        };
        let lines = summary(&[
            run("6.1", "6.1.0-56-cloud-amd64", 10.3),
            run("6.12", "6.12.x", 11.5),
        ]);
        let want = [
            "summary (6.1 = 6.1.0-56-cloud-amd64, 6.12 = 6.12.x)",
            "agent                 fentry :9837  kprobe :9838  kmsg :9839",
            "check                 6.1    6.12   6.1    6.12   6.1    6.12",
            "guest finished        PASS   PASS   PASS   PASS   PASS   PASS",
            "victims killed        PASS   PASS   PASS   PASS   PASS   PASS",
            "threaded kills        PASS   PASS   PASS   PASS   PASS   PASS",
            "global kill           PASS   PASS   PASS   PASS   PASS   PASS",
            "manual kill           PASS   PASS   PASS   PASS   PASS   PASS",
            "allocating-task kill  PASS   PASS   PASS   PASS   PASS   PASS",
            "cpuset kill           PASS   PASS   PASS   PASS   PASS   PASS",
            "mempolicy kill        PASS   PASS   PASS   PASS   PASS   PASS",
            "seccomp               PASS   PASS   PASS   PASS   PASS   PASS",
            "one event per victim  PASS   PASS   PASS   PASS   PASS   PASS",
        ];
        assert_eq!(lines[..want.len()], want);
        // The real sample passes every check of every agent.
        for line in &lines[3..lines.len() - 1] {
            assert!(
                line.ends_with("PASS   PASS   PASS   PASS   PASS   PASS"),
                "{line}"
            );
        }
        assert!(lines.iter().any(|l| l.starts_with("oom context ")));
        assert_eq!(lines.len(), 3 + 9 + 20 + 1);
        assert_eq!(lines.last().unwrap(), "boot-to-poweroff      10.3s  11.5s");
    }
}
