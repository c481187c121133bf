use super::*;
use crate::deploy::test_support::{assert_one_failure, facts, failures};

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
