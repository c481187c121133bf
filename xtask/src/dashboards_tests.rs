//! Tests of `dashboards.rs`: the JSON reader and the static checks.

use std::collections::BTreeSet;

use super::*;
#[test]
fn json_parses_nested_values_and_escapes() {
    let j = Json::parse(r#" {"a": [1, -2.5e1, true, null], "b": {"c": "x\"\u00e9\ud83d\ude00"}} "#)
        .unwrap();
    assert_eq!(j.at(&["b"]).unwrap().str_at("c"), Some("x\"é😀"));
    assert_eq!(j.get("a").items().nth(1), Some(&Json::Num(-25.0)));
    assert!(Json::parse("{\"a\": 1,}").is_err());
    assert!(Json::parse("[1] x").is_err());
}

#[test]
fn metric_names_skip_functions_labels_strings_and_variables() {
    let e = r#"sum by (namespace) (label_replace(rate(oomwatch_a_total{node=~"$node",x="{y}"}[$__rate_interval] offset 5m), "n", "$1", "pod", "(.*)")) or on(instance) up == 0 and ignoring (a) vector(1) * 1e3"#;
    let names: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(names, ["oomwatch_a_total", "up"]);
    assert_eq!(metric_names("max(oomwatch_b) BY (x)").len(), 1);
}

#[test]
fn variables_and_datasources() {
    let vars: Vec<String> = variables(r#"x{a=~"$node"}[${__range}] "$1" ${ns:regex}"#)
        .into_iter()
        .collect();
    assert_eq!(vars, ["__range", "node", "ns"]);
    let ds: BTreeSet<&str> = ["datasource"].into();
    let good = Json::parse(r#"{"type":"prometheus","uid":"${datasource}"}"#).unwrap();
    let fixed = Json::parse(r#"{"type":"prometheus","uid":"P1809F7CD0C75ACF3"}"#).unwrap();
    assert!(is_datasource_var(Some(&good), &ds));
    assert!(!is_datasource_var(Some(&fixed), &ds));
    let d = Json::parse(r#"{"panels":[{"datasource":{"uid":"abc"}}]}"#).unwrap();
    let mut out = Vec::new();
    hard_coded_datasources(&d, "", &ds, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn lint_reports_each_problem_with_a_fix() {
    let d = Json::parse(
        r#"{"templating":{"list":[{"name":"datasource","type":"datasource"}]},
            "panels":[{"id":1,"type":"stat","targets":[{"refId":"A","expr":"foo + oomwatch_x{a=\"$nope\"}"}]},
                      {"id":1,"type":"row","panels":[]}]}"#,
    )
    .unwrap();
    let documented: BTreeSet<String> = ["oomwatch_x".to_string()].into();
    let problems = lint(&d, &documented);
    for want in [
        "schemaVersion",
        "duplicate id",
        "no description",
        "datasource is not",
        "$nope",
        "metric foo",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want}: {problems:#?}"
        );
    }
    assert!(problems.iter().all(|p| p.contains("fix:")), "{problems:#?}");
    assert_eq!(problems.len(), 6, "{problems:#?}");
}
