//! `cargo xtask dashboards`: checks the Grafana dashboards in `dashboards/` without Grafana.
//!
//! 1. Static checks, here in Rust: `schemaVersion` present; every panel (also those nested in
//!    rows) has a description and the datasource `{"type":"prometheus","uid":"${datasource}"}`;
//!    no datasource anywhere is a hard-coded uid; panel ids are unique; every `$variable` an
//!    expr uses is defined (or one of Grafana's built-ins the end-to-end test substitutes); every
//!    metric an expr names is `up` or an `oomwatch_*` metric documented in `docs/metrics.md`.
//! 2. The type check of `dashboards/schema-check/`: both JSON files against `@grafana/schema`'s
//!    `Dashboard` type with `tsc` (`strict`, `noEmit`), plus its own lint (`npm run check`).
//!    `npm ci` runs there when `node_modules` is missing or older than `package-lock.json`;
//!    Debian's `nodejs` and `npm` are installed with apt when `npm` is missing.
//!
//! `oomwatch/tests/dashboards.rs` runs every query against a real Prometheus and agent.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::util::{self, run};
use serde_json::Value;

const STEP: &str = "dashboards";
const DASHBOARDS: &[&str] = &["oomwatch-overview.json", "oomwatch-node.json"];
/// Grafana's built-in variables that `oomwatch/tests/dashboards.rs` substitutes.
const BUILTINS: &[&str] = &[
    "__range",
    "__range_s",
    "__range_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__interval",
    "__interval_ms",
];
/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const DATASOURCE_FIX: &str =
    r#"fix: set "datasource": {"type": "prometheus", "uid": "${datasource}"}"#;

pub fn check() -> Result<()> {
    let started = Instant::now();
    let root = util::repo_root();
    let dir = root.join("dashboards");
    let docs = fs::read_to_string(root.join("docs/metrics.md"))
        .with_context(|| format!("[{STEP}] reading docs/metrics.md"))?;
    let documented = documented_metrics(&docs);

    let mut failed = Vec::new();
    let mut files: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("[{STEP}] reading {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    for want in DASHBOARDS {
        if !files.iter().any(|f| f == want) {
            failed.push(format!(
                "dashboards/{want}: missing; fix: restore it (the e2e test and the type check \
                 read it)"
            ));
        }
    }
    for file in &files {
        let text = fs::read_to_string(dir.join(file))
            .with_context(|| format!("[{STEP}] reading dashboards/{file}"))?;
        let problems = match serde_json::from_str::<Value>(&text) {
            Ok(d) => lint(&d, &documented),
            Err(e) => vec![format!("not JSON: {e}; fix: repair the file")],
        };
        if problems.is_empty() {
            eprintln!(
                "[{STEP}] ok   dashboards/{file}: descriptions, datasources, panel ids, \
                 schemaVersion, variables, documented metrics"
            );
        }
        for p in problems {
            eprintln!("[{STEP}] FAIL dashboards/{file}: {p}");
            failed.push(format!("dashboards/{file}: {p}"));
        }
    }

    if let Err(e) = type_check(&dir.join("schema-check")) {
        eprintln!("[{STEP}] FAIL schema-check: {e:#}");
        failed.push(format!("schema-check: {e:#}"));
    }
    if !failed.is_empty() {
        bail!(
            "[{STEP}] {} check(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    eprintln!(
        "[{STEP}] all dashboard checks passed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `oomwatch_*` names that appear anywhere in `docs/metrics.md`.
fn documented_metrics(docs: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = docs;
    while let Some(i) = rest.find("oomwatch_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

/// The static checks of one dashboard: one line per problem, each with its fix.
fn lint(d: &Value, documented: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if !matches!(d.get("schemaVersion"), Some(Value::Number(_))) {
        problems.push(
            "no numeric schemaVersion; fix: set the one Grafana writes (see \
             dashboards/schema-check)"
                .to_string(),
        );
    }
    let vars: Vec<&Value> = items(d.pointer("/templating/list")).collect();
    let var_names: BTreeSet<&str> = vars.iter().filter_map(|v| str_at(v, "name")).collect();
    let ds_vars: BTreeSet<&str> = vars
        .iter()
        .filter(|v| str_at(v, "type") == Some("datasource"))
        .filter_map(|v| str_at(v, "name"))
        .collect();
    hard_coded_datasources(d, "", &ds_vars, &mut problems);

    let mut panels = Vec::new();
    all_panels(d.get("panels"), &mut panels);
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = str_at(p, "title").unwrap_or("");
        let id = p.get("id").and_then(Value::as_f64);
        let at = match id {
            Some(n) => format!("panel {n} \"{title}\""),
            _ => format!("panel \"{title}\""),
        };
        match id {
            Some(n) if !ids.insert(n.to_bits()) => problems.push(format!(
                "{at}: duplicate id; fix: give it an id no other panel has"
            )),
            Some(_) => {}
            _ => problems.push(format!("{at}: no numeric id; fix: give it a unique id")),
        }
        if str_at(p, "type") == Some("row") {
            continue;
        }
        let described = matches!(str_at(p, "description"), Some(d) if !d.trim().is_empty());
        if !described {
            problems.push(format!(
                "{at}: no description; fix: add one saying what it shows and how to read it"
            ));
        }
        if !is_datasource_var(p.get("datasource"), &ds_vars) {
            problems.push(format!(
                "{at}: datasource is not the variable; {DATASOURCE_FIX}"
            ));
        }
        for t in items(p.get("targets")) {
            problems.extend(target_problems(t, &at, &var_names, &ds_vars, documented));
        }
    }
    problems
}

/// The problems of one query target of panel `at`.
fn target_problems(
    t: &Value,
    at: &str,
    var_names: &BTreeSet<&str>,
    ds_vars: &BTreeSet<&str>,
    documented: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let ref_id = str_at(t, "refId").unwrap_or("?");
    let tat = format!("{at} [{ref_id}]");
    if t.get("datasource").is_some() && !is_datasource_var(t.get("datasource"), ds_vars) {
        problems.push(format!(
            "{tat}: target datasource is not the variable; {DATASOURCE_FIX}"
        ));
    }
    let Some(expr) = str_at(t, "expr") else {
        problems.push(format!(
            "{tat}: no expr; fix: give the target a PromQL expr"
        ));
        return problems;
    };
    for var in variables(expr) {
        if !var_names.contains(var.as_str()) && !BUILTINS.contains(&var.as_str()) {
            problems.push(format!(
                "{tat}: uses ${var}, which is neither a variable of this dashboard nor a \
                 built-in the e2e test substitutes ({}); fix: define it in templating.list or \
                 use one of those",
                BUILTINS.join(", ")
            ));
        }
    }
    for m in metric_names(expr) {
        if m != "up" && !documented.contains(&m) {
            problems.push(format!(
                "{tat}: metric {m} is not in docs/metrics.md; fix: use a documented oomwatch_* \
                 metric (or `up`), or document it there"
            ));
        }
    }
    problems
}

/// `{"type":"prometheus","uid":"${ds}"}` or `$ds`, where `ds` is a datasource variable.
fn is_datasource_var(v: Option<&Value>, ds_vars: &BTreeSet<&str>) -> bool {
    let Some(v) = v else { return false };
    let uid = str_at(v, "uid").unwrap_or("");
    let name = uid
        .strip_prefix("${")
        .and_then(|u| u.strip_suffix('}'))
        .or_else(|| uid.strip_prefix('$'));
    str_at(v, "type") == Some("prometheus") && name.is_some_and(|n| ds_vars.contains(n))
}

/// Any `datasource` that names a fixed uid (the built-in `-- Grafana --` annotation aside).
fn hard_coded_datasources(j: &Value, path: &str, ds_vars: &BTreeSet<&str>, out: &mut Vec<String>) {
    match j {
        Value::Object(fields) => {
            for (k, v) in fields {
                let here = format!("{path}.{k}");
                if k == "datasource" {
                    let uid = match v {
                        Value::String(s) => Some(s.as_str()),
                        _ => str_at(v, "uid"),
                    };
                    let ok = match uid {
                        None | Some("-- Grafana --") => true,
                        Some(u) => {
                            let n = u.trim_start_matches('$').trim_matches(['{', '}']);
                            u.starts_with('$') && ds_vars.contains(n)
                        }
                    };
                    if !ok {
                        out.push(format!(
                            "{here}: hard-coded datasource {:?}; {DATASOURCE_FIX}",
                            uid.unwrap_or("")
                        ));
                    }
                }
                hard_coded_datasources(v, &here, ds_vars, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                hard_coded_datasources(v, &format!("{path}[{i}]"), ds_vars, out);
            }
        }
        _ => {}
    }
}

/// The elements of an array (none for anything else).
fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// The string member `key` of an object.
fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn all_panels<'a>(panels: Option<&'a Value>, out: &mut Vec<&'a Value>) {
    for p in items(panels) {
        out.push(p);
        all_panels(p.get("panels"), out);
    }
}

/// Names of `$name`, `${name}`, `${name:format}` (not `$1`).
fn variables(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices('$') {
        let rest = expr[i + 1..].trim_start_matches('{');
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            out.insert(name);
        }
    }
    out
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and label lists that are neither functions, keywords, numbers nor variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut label_list = false;
    let skip_string = |mut i: usize, quote: char| {
        i += 1;
        while i < c.len() && c[i] != quote {
            i += if c[i] == '\\' && quote != '`' { 2 } else { 1 };
        }
        i + 1
    };
    let skip_to = |mut i: usize, close: char| {
        while i < c.len() && c[i] != close {
            i = if matches!(c[i], '"' | '\'' | '`') {
                skip_string(i, c[i])
            } else {
                i + 1
            };
        }
        i + 1
    };
    let word = |i: usize| c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':';
    while i < c.len() {
        match c[i] {
            q @ ('"' | '\'' | '`') => i = skip_string(i, q),
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '(' if label_list => {
                i = skip_to(i, ')');
                label_list = false;
            }
            '$' => {
                i += 1;
                while i < c.len() && (word(i) || c[i] == '{' || c[i] == '}') {
                    i += 1;
                }
            }
            ch if ch.is_ascii_digit() || ch == '.' => {
                while i < c.len() && (word(i) || c[i] == '.') {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && word(i) {
                    i += 1;
                }
                let ident: String = c[start..i].iter().collect();
                let lower = ident.to_ascii_lowercase();
                let after: String = c[i..].iter().collect();
                let after = after.trim_start().to_ascii_lowercase();
                // A function or an aggregation (`sum(`, `sum by (`) is followed by these.
                let call = ["(", "by ", "by(", "without ", "without("]
                    .iter()
                    .any(|p| after.starts_with(p));
                if LABEL_LISTS.contains(&lower.as_str()) {
                    label_list = after.starts_with('(');
                } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                    out.insert(ident);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// `npm ci` when needed, then `npm run check` in `dashboards/schema-check`.
fn type_check(dir: &Path) -> Result<()> {
    let tsconfig = fs::read_to_string(dir.join("tsconfig.json"))
        .with_context(|| format!("reading {}/tsconfig.json", dir.display()))?;
    let options = serde_json::from_str::<Value>(&tsconfig)
        .ok()
        .and_then(|t| t.get("compilerOptions").cloned());
    for flag in ["strict", "noEmit"] {
        if !matches!(
            options.as_ref().and_then(|o| o.get(flag)),
            Some(Value::Bool(true))
        ) {
            bail!(
                "dashboards/schema-check/tsconfig.json: compilerOptions.{flag} is not true; fix: \
                 set \"{flag}\": true (the check is tsc --noEmit --strict)"
            );
        }
    }
    let npm = util::ensure_apt_tool(STEP, "npm", &["nodejs", "npm"], "")?;
    for (what, program) in [("node", PathBuf::from("node")), ("npm", npm.clone())] {
        let version = util::probe(&program, &["--version"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        eprintln!("[{STEP}] {what}: {version}");
    }
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(&dir.join("package-lock.json"));
    if modified(&installed).is_none() || modified(&installed) < lock {
        let mut ci = Command::new(&npm);
        ci.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
        run(STEP, &mut ci).context(
            "npm ci in dashboards/schema-check failed; fix: check that the npm registry is \
             reachable and package-lock.json matches package.json (`npm install` there updates it)",
        )?;
    }
    let mut check = Command::new(&npm);
    check.args(["run", "check"]).current_dir(dir);
    run(STEP, &mut check).context(
        "the dashboards do not type-check against @grafana/schema (or break schema-check's \
         lint); fix: correct the fields tsc/lint name above",
    )?;
    eprintln!(
        "[{STEP}] ok   dashboards type-check against @grafana/schema (tsc --noEmit --strict)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Tests of the static checks.

    use std::collections::BTreeSet;

    use super::*;
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
        let good = serde_json::from_str::<Value>(r#"{"type":"prometheus","uid":"${datasource}"}"#)
            .unwrap();
        let fixed =
            serde_json::from_str::<Value>(r#"{"type":"prometheus","uid":"P1809F7CD0C75ACF3"}"#)
                .unwrap();
        assert!(is_datasource_var(Some(&good), &ds));
        assert!(!is_datasource_var(Some(&fixed), &ds));
        let d =
            serde_json::from_str::<Value>(r#"{"panels":[{"datasource":{"uid":"abc"}}]}"#).unwrap();
        let mut out = Vec::new();
        hard_coded_datasources(&d, "", &ds, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn lint_reports_each_problem_with_a_fix() {
        let d = serde_json::from_str::<Value>(
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
}
