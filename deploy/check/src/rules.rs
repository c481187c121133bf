//! The alerting rules: `promtool check rules`, `promtool test rules`, and every alert's
//! severity, annotations, runbook section and tests.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};

use super::{
    facts::{report, verdict, Check, Facts},
    path_str,
    tools::Tools,
    RUNBOOK_PREFIX, STEP,
};
use oomwatch_testkit::command::run;

pub(super) fn prometheus_rules(tools: &Tools, root: &Path) -> Result<()> {
    let dir = root.join("deploy/prometheus");
    let rules = "oomwatch-rules.yaml";
    let tests = "oomwatch-rules.test.yaml";
    let mut check_cmd = Command::new(&tools.promtool);
    check_cmd.args(["check", "rules", rules]).current_dir(&dir);
    run(STEP, &mut check_cmd).context(
        "[deploy] promtool check rules failed (see its output above); fix \
         deploy/prometheus/oomwatch-rules.yaml",
    )?;
    let mut test_cmd = Command::new(&tools.promtool);
    test_cmd.args(["test", "rules", tests]).current_dir(&dir);
    run(STEP, &mut test_cmd).context(
        "[deploy] promtool test rules failed (the expected and actual alerts are above); fix the \
         rule or, if the change is intended, the test in deploy/prometheus/oomwatch-rules.test.yaml",
    )?;
    eprintln!("[{STEP}] ok   deploy/prometheus: promtool check rules, promtool test rules");

    let facts = Facts::parse(&tools.python_output(&[
        "rules",
        &path_str(&dir.join(rules)),
        &path_str(&dir.join(tests)),
    ])?);
    let readme = fs::read_to_string(dir.join("README.md"))
        .with_context(|| format!("[{STEP}] reading deploy/prometheus/README.md"))?;
    report("deploy/prometheus", &rules_checks(&facts, &readme))
}

fn rules_checks(f: &Facts, readme: &str) -> Vec<Check> {
    let mut problems = Vec::new();
    let alerts: Vec<&[String]> = f.all("alert").collect();
    if alerts.is_empty() {
        problems.push("no alert found in oomwatch-rules.yaml".to_string());
    }
    for a in &alerts {
        let name = a[0].as_str();
        let severity = a.get(1).map_or("", String::as_str);
        let runbook = a.get(2).map_or("", String::as_str);
        if !name.starts_with("Oomwatch") {
            problems.push(format!("alert {name}: fix: name it Oomwatch..."));
        }
        if !["info", "warning", "critical"].contains(&severity) {
            problems.push(format!(
                "alert {name} has severity {severity:?}; fix: labels.severity: info, warning or \
                 critical"
            ));
        }
        if a.get(3).is_none_or(|s| s != "true") || a.get(4).is_none_or(|s| s != "true") {
            problems.push(format!(
                "alert {name}: fix: give it summary and description annotations"
            ));
        }
        let anchor = name.to_lowercase();
        if runbook != format!("{RUNBOOK_PREFIX}{anchor}") {
            problems.push(format!(
                "alert {name} has runbook_url {runbook:?}; fix: {RUNBOOK_PREFIX}{anchor}"
            ));
        }
        if !readme.lines().any(|l| l.trim() == format!("### {name}")) {
            problems.push(format!(
                "deploy/prometheus/README.md has no section `### {name}` (the runbook_url's \
                 anchor); fix: add one saying what the alert means and what to do"
            ));
        }
        for case in ["firing", "quiet"] {
            if !f
                .all("test")
                .any(|t| t[0] == name && t.get(1).is_some_and(|c| c == case))
            {
                problems.push(format!(
                    "alert {name} has no {case} test; fix: add an alert_rule_test with {} to \
                     oomwatch-rules.test.yaml",
                    if case == "firing" {
                        "expected alerts"
                    } else {
                        "exp_alerts: []"
                    }
                ));
            }
        }
    }
    for t in f.all("test") {
        if !alerts.iter().any(|a| a[0] == t[0]) {
            problems.push(format!(
                "a test expects alert {}, which oomwatch-rules.yaml does not define; fix: correct \
                 the test's alertname",
                t[0]
            ));
        }
    }
    vec![verdict(
        "every alert: severity, summary, description, runbook section, firing and quiet tests",
        problems,
        format!("{} alerts", alerts.len()),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_one_failure, facts, failures};

    const README: &str = "# alerts\n### OomwatchA\nmeaning\n";

    fn rule_facts(alert: &str, tests: &[(&str, &str)]) -> Facts {
        let mut text = format!("alert|{alert}\n");
        for (name, case) in tests {
            text.push_str(&format!("test|{name}|{case}\n"));
        }
        facts(&text)
    }

    #[test]
    fn every_alert_needs_runbook_and_both_kinds_of_test() {
        let good = format!("OomwatchA|warning|{RUNBOOK_PREFIX}oomwatcha|true|true");
        let both = [("OomwatchA", "firing"), ("OomwatchA", "quiet")];
        assert_eq!(
            failures(&rules_checks(&rule_facts(&good, &both), README)),
            Vec::<String>::new()
        );

        let only_firing = rules_checks(&rule_facts(&good, &both[..1]), README);
        assert_one_failure(&only_firing, &["OomwatchA has no quiet test"]);

        let no_section = rules_checks(&rule_facts(&good, &both), "# alerts\n");
        assert_one_failure(&no_section, &["no section `### OomwatchA`"]);

        let bad_link = format!("OomwatchA|warning|{RUNBOOK_PREFIX}a|true|true");
        assert_one_failure(
            &rules_checks(&rule_facts(&bad_link, &both), README),
            &["runbook_url", "#oomwatcha"],
        );

        let bad_severity = format!("OomwatchA|page|{RUNBOOK_PREFIX}oomwatcha|true|false");
        let f = failures(&rules_checks(&rule_facts(&bad_severity, &both), README));
        assert!(f[0].contains("severity \"page\"") && f[0].contains("description"));

        let stray = [
            ("OomwatchA", "firing"),
            ("OomwatchA", "quiet"),
            ("OomwatchB", "quiet"),
        ];
        assert_one_failure(
            &rules_checks(&rule_facts(&good, &stray), README),
            &["expects alert OomwatchB"],
        );
    }
}
