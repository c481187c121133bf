//! End to end: a real Prometheus (Debian's `prometheus`) scrapes the real agent while real OOM
//! kills happen in cgroups of this test; then every query of every panel of the Grafana
//! dashboards in `dashboards/` runs through Prometheus's HTTP API, with the dashboards'
//! variables and Grafana's built-in intervals substituted, and must return data.
//!
//! The scrape mimics `deploy/kubernetes/podmonitor.yaml` (`honorLabels: true`, `job` from the
//! pod's name label, `node` from the pod's node) plus the target labels prometheus-operator gives
//! every PodMonitor target (`namespace`, `pod`, `container`, `endpoint` of the agent's pod).
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use common::{real_kernel_or_skip, Agent, TestCgroup};
use oomwatch_testkit::{ContainerCgroup, NsInit};
use prometheus::{now, Prometheus};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The Kubernetes node name the scrape puts on every target (and the agent's `--host`).
const NODE: &str = "oomwatch-e2e-node";
/// The agent pod's own target labels, as prometheus-operator sets them.
const AGENT_NAMESPACE: &str = "oomwatch";
const AGENT_POD: &str = "oomwatch-e2e01";
/// The scrape interval of `CONFIG`.
const SCRAPE: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);
const KILLS: u64 = 3;
/// Grafana's built-in variables, as a dashboard showing the last 10 minutes gets them.
const BUILTINS: &[(&str, &str)] = &[
    ("__range", "10m"),
    ("__range_s", "600"),
    ("__range_ms", "600000"),
    ("__rate_interval", "2m"),
    ("__rate_interval_ms", "120000"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
];
/// `$__interval` as a duration: panels compare `x` with `x offset $__interval`.
const INTERVAL: Duration = Duration::from_secs(15);
/// The range queries of timeseries panels: the last 2 minutes, every 5 s.
const RANGE_S: u64 = 120;
const STEP_S: u64 = 5;

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !real_kernel_or_skip() || !prometheus_or_skip() {
        return;
    }
    let dashboards = load_dashboards();
    let pm = fs::read_to_string(Path::new(REPO).join("deploy/kubernetes/podmonitor.yaml")).unwrap();
    for needle in [
        "honorLabels: true",
        "targetLabel: node",
        "jobLabel: app.kubernetes.io/",
    ] {
        let why = "make CONFIG in this test mimic deploy/kubernetes/podmonitor.yaml again";
        assert!(pm.contains(needle), "no `{needle}`: {why}");
    }

    // The headroom rows ("Near the limit") come from a background walk, every 30 s by
    // default: walk every 500 ms so the cgroups the test makes are seen within its scrapes.
    let mut agent = Agent::start(&["--host", NODE, "--headroom-interval-ms", "500"]);
    let prom = Prometheus::start(agent.port);
    // At least two scrapes before the kills, so counters are seen rising from 0.
    prom.wait_for("count_over_time(up{job=\"oomwatch\"}[1m])", |v| v >= 2.0);
    assert_eq!(
        prom.value("count(up)"),
        Some(1.0),
        "the agent must be the only target"
    );

    let (cg1, cg2) = (TestCgroup::new(64 << 20), TestCgroup::new(64 << 20));
    for cg in [&cg1, &cg1, &cg2] {
        let pid = cg.oom_kill(0);
        agent.wait_event(WAIT, |v| v["pid"] == pid);
        eprintln!("OOM kill of pid {pid} in {} seen by the agent", cg.path);
    }
    // A silent partial kill: a worker of a kubelet-style container whose init (pid 1 of its
    // own pid namespace) lives on; the partial-kill panel needs it.
    let container = ContainerCgroup::kubelet(
        &format!("/oomwatch-dash-{}", std::process::id()),
        0,
        64 << 20,
    );
    let in_container = container.container().path.clone();
    let mut init = NsInit::start(container.container(), "tail /dev/zero; read forever");
    init.go();
    let partial = agent.wait_event(WAIT, |v| {
        common::kill_pid(v).is_some() && v["cgroup"] == in_container
    });
    assert_eq!(partial["partial_kill"], true, "{partial}");
    prom.wait_for("sum(oomwatch_oom_partial_kills_total)", |v| v >= 1.0);
    // Other processes on the host may be OOM-killed too: wait for the series of ours.
    let ours = format!(
        "sum(oomwatch_oom_kills_total{{cgroup=~\"{}|{}\"}})",
        cg1.path, cg2.path
    );
    prom.wait_for(&ours, |v| v >= KILLS as f64);
    // Two more scrapes, so increase() and rate() have two points after the kills; and history
    // older than `$__interval`, so `x offset $__interval` exists as on any real Prometheus.
    thread::sleep(SCRAPE * 3);
    let first = prom.first_scrape();
    let wanted = first + INTERVAL.as_secs_f64() + (SCRAPE * 2).as_secs_f64();
    thread::sleep(Duration::from_secs_f64((wanted - now()).max(0.0)));

    let mut failures = victim_label_failures(&prom, &[&cg1.path, &cg2.path]);
    let mut queries = 0;
    for (file, dash) in &dashboards {
        let short = file
            .trim_end_matches(".json")
            .trim_start_matches("oomwatch-");
        for vars in assignments(&prom, short, dash, &mut failures) {
            queries += run_dashboard(&prom, short, dash, &vars, &mut failures);
        }
    }
    println!("{queries} queries run, {} failed", failures.len());
    drop(init);
    drop(container);
    assert!(
        failures.is_empty(),
        "{} dashboard queries returned no data or failed:\n  {}\nPrometheus log:\n{}",
        failures.len(),
        failures.join("\n  "),
        prom.log()
    );
}

fn prometheus_or_skip() -> bool {
    if Path::new(PROMETHEUS).is_file() {
        return true;
    }
    oomwatch_testkit::skip(format!(
        "{PROMETHEUS} is missing; install Debian's `prometheus` package (`cargo xtask setup \
         --test` does)"
    ));
    false
}

/// Every `dashboards/*.json`, by file name.
fn load_dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(REPO).join("dashboards");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = fs::read_to_string(&path).unwrap();
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["oomwatch-node.json", "oomwatch-overview.json"] {
        assert!(names.contains(&want), "{} has no {want}", dir.display());
    }
    out
}

/// The victims outside Kubernetes must keep their empty `namespace`/`pod`/`container` under
/// `honor_labels`: otherwise every panel would name the agent's own pod as the victim.
fn victim_label_failures(prom: &Prometheus, cgroups: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for cg in cgroups {
        let expr = format!("oomwatch_oom_kills_total{{cgroup=\"{cg}\"}}");
        let data = prom
            .instant(&expr)
            .unwrap_or_else(|e| panic!("`{expr}`: {e}"));
        let series = data["result"].as_array().cloned().unwrap_or_default();
        if series.is_empty() {
            failures.push(format!("`{expr}`: no series for a cgroup with kills"));
        }
        for s in series {
            let m = &s["metric"];
            if ["namespace", "pod", "container"]
                .iter()
                .any(|l| m.get(l).is_some())
            {
                failures.push(format!(
                    "`{expr}`: victim series carries target labels: {s}"
                ));
            }
            if m["node"] != NODE {
                failures.push(format!("`{expr}`: series without node=\"{NODE}\": {s}"));
            }
        }
    }
    failures
}

/// The variable values to run the dashboard with: as the dashboard opens (its `current`
/// selection, `All` as `allValue`), and, when that differs, with the first real value of each
/// query variable (a user picking one node).
fn assignments(
    prom: &Prometheus,
    dash: &str,
    d: &Value,
    failures: &mut Vec<String>,
) -> Vec<BTreeMap<String, String>> {
    let mut out: Vec<BTreeMap<String, String>> = Vec::new();
    for pick_real in [false, true] {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or("").to_string();
            let value = resolve(prom, v, &vars, pick_real).unwrap_or_else(|e| {
                if !pick_real {
                    failures.push(format!("{dash}: variable ${name}: {e}"));
                }
                ".*".into()
            });
            vars.insert(name, value);
        }
        if !out.contains(&vars) {
            out.push(vars);
        }
    }
    out
}

/// The value Grafana substitutes for one template variable.
fn resolve(
    prom: &Prometheus,
    v: &Value,
    vars: &BTreeMap<String, String>,
    pick_real: bool,
) -> Result<String, String> {
    let kind = v["type"].as_str().unwrap_or("");
    let query = match &v["query"] {
        Value::String(s) => s.clone(),
        q => q["query"].as_str().unwrap_or("").to_string(),
    };
    if v["regex"].as_str().is_some_and(|r| !r.is_empty()) {
        return Err("a `regex` filter, which this test does not apply".into());
    }
    let values: Vec<String> = match kind {
        "datasource" => return Ok("prometheus".into()),
        "constant" | "textbox" => return Ok(query),
        "custom" | "interval" => query.split(',').map(|s| s.trim().to_string()).collect(),
        "query" => {
            let q = substitute(&query, vars)?;
            let values = label_values(prom, &q)?;
            if !pick_real {
                println!(
                    "variable ${}: {q} -> {values:?}",
                    v["name"].as_str().unwrap_or("")
                );
            }
            values
        }
        other => return Err(format!("type {other:?}, which this test does not support")),
    };
    let current: Vec<String> = match &v["current"]["value"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let include_all = v["includeAll"] == true;
    let all = || match v["allValue"].as_str() {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => format!("({})", values.join("|")),
    };
    if pick_real {
        return match values.first() {
            Some(first) => Ok(first.clone()),
            None if include_all => Ok(all()),
            None => Err(format!("`{query}` has no values")),
        };
    }
    if include_all && (current.is_empty() || current.iter().any(|c| c == "$__all")) {
        return Ok(all());
    }
    match current
        .iter()
        .find(|c| values.contains(c))
        .or(values.first())
    {
        Some(value) => Ok(value.clone()),
        None => Err(format!("`{query}` has no values and no All option")),
    }
}

/// `label_values(selector, label)` through `/api/v1/series`, `label_values(label)` through
/// `/api/v1/label/<label>/values`: sorted, as with `sort: 1`.
fn label_values(prom: &Prometheus, query: &str) -> Result<Vec<String>, String> {
    let args = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("query `{query}` is not label_values(...)"))?;
    let end = now().floor() as u64;
    let window = [("start", (end - 600).to_string()), ("end", end.to_string())];
    let mut set = BTreeSet::new();
    match args.rsplit_once(',') {
        Some((selector, label)) => {
            let mut params = vec![("match[]", selector.trim().to_string())];
            params.extend(window);
            let series = prom.api("/api/v1/series", &params)?;
            for s in series.as_array().into_iter().flatten() {
                if let Some(value) = s[label.trim()].as_str() {
                    set.insert(value.to_string());
                }
            }
        }
        None => {
            let path = format!("/api/v1/label/{}/values", args.trim());
            for value in prom.api(&path, &window)?.as_array().into_iter().flatten() {
                set.extend(value.as_str().map(String::from));
            }
        }
    }
    Ok(set.into_iter().collect())
}

/// Replaces `$name`, `${name}`, `${name:format}` of known variables and Grafana's built-ins;
/// `$1` (label_replace) stays. An unknown variable left in the text is an error.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let lookup = |name: &str| {
        vars.get(name).cloned().or_else(|| {
            BUILTINS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in `{text}`"))?;
            let inner = &braced[..close];
            (inner.split(':').next().unwrap_or(""), close + 2)
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        let is_var = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        match lookup(name) {
            Some(value) if is_var => out.push_str(&value),
            None if is_var => return Err(format!("unknown variable ${name} in `{text}`")),
            _ => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every panel, with those nested in rows.
fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        all_panels(&p["panels"], out);
    }
}

/// Series and points of a query's `data`.
fn count(data: &Value) -> (usize, usize) {
    match data["resultType"].as_str() {
        Some("scalar" | "string") => (1, 1),
        _ => {
            let series = data["result"].as_array().cloned().unwrap_or_default();
            let points = series
                .iter()
                .map(|s| s["values"].as_array().map_or(1, Vec::len))
                .sum();
            (series.len(), points)
        }
    }
}

/// Runs every target of every panel (instant; and range for timeseries panels). Returns the
/// number of queries run.
fn run_dashboard(
    prom: &Prometheus,
    dash: &str,
    d: &Value,
    vars: &BTreeMap<String, String>,
    failures: &mut Vec<String>,
) -> usize {
    let shown: Vec<String> = vars
        .iter()
        .filter(|(k, _)| *k != "datasource")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let shown = shown.join(",");
    let mut panels = Vec::new();
    all_panels(&d["panels"], &mut panels);
    let mut n = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("(no title)");
        let timeseries = p["type"] == "timeseries";
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(raw) = t["expr"].as_str() else {
                continue;
            };
            let id = format!(
                "{dash}/{title} [{}] {{{shown}}}",
                t["refId"].as_str().unwrap_or("?")
            );
            let expr = match substitute(raw, vars) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{id}: {e}"));
                    continue;
                }
            };
            let mut kinds = vec![("instant", prom.instant(&expr))];
            if timeseries || t["range"] == true {
                kinds.push(("range", prom.range(&expr)));
            }
            for (kind, answer) in kinds {
                n += 1;
                match answer {
                    Ok(data) if count(&data).0 > 0 => {
                        let (series, points) = count(&data);
                        println!("{id}: {kind} {series} series, {points} points");
                    }
                    Ok(_) => {
                        println!("{id}: {kind} NO DATA");
                        failures.push(format!("{id}: {kind} query returned no data: {expr}"));
                    }
                    Err(e) => {
                        println!("{id}: {kind} ERROR {e}");
                        failures.push(format!("{id}: {kind} query failed ({e}): {expr}"));
                    }
                }
            }
        }
    }
    n
}

mod prometheus {
    //! A Prometheus server of the test's own, scraping the agent the way the PodMonitor in
    //! `deploy/kubernetes` makes prometheus-operator scrape it, and its HTTP API.
    use std::fs;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::thread;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use serde_json::Value;

    use super::common::free_port;
    use super::{AGENT_NAMESPACE, AGENT_POD, NODE, PROMETHEUS, RANGE_S, STEP_S, WAIT};

    /// The scrape of the PodMonitor, as prometheus-operator writes it for the agent's pod.
    const CONFIG: &str = "\
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: oomwatch
    honor_labels: true
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:AGENT_PORT']
        labels:
          node: NODE
          namespace: AGENT_NAMESPACE
          pod: AGENT_POD
          container: oomwatch
          endpoint: metrics
";

    /// A Prometheus of its own: config, storage and log in a temporary directory; killed on drop.
    pub struct Prometheus {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Prometheus {
        pub fn start(agent_port: u16) -> Prometheus {
            let dir = tempfile::tempdir().unwrap();
            let config = CONFIG
                .replace("AGENT_PORT", &agent_port.to_string())
                .replace("NODE", NODE)
                .replace("AGENT_NAMESPACE", AGENT_NAMESPACE)
                .replace("AGENT_POD", AGENT_POD);
            let config_file = dir.path().join("prometheus.yml");
            fs::write(&config_file, config).unwrap();
            let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let port = free_port();
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut prom = Prometheus { child, port, dir };
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = prom.child.try_wait().unwrap() {
                    panic!(
                        "prometheus exited ({status}) before ready; log:\n{}",
                        prom.log()
                    );
                }
                if matches!(http(port, "/-/ready"), Ok((200, _))) {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "prometheus not ready in 60 s:\n{}",
                    prom.log()
                );
                thread::sleep(Duration::from_millis(200));
            }
            eprintln!("prometheus ready on 127.0.0.1:{port}, scraping 127.0.0.1:{agent_port}");
            prom
        }

        pub fn log(&self) -> String {
            fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
        }

        /// `data` of a successful API answer, else the error Prometheus gave.
        pub fn api(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Value, String> {
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            let (code, body) = http(self.port, &format!("{endpoint}?{}", query.join("&")))?;
            let v: Value = serde_json::from_str(&body)
                .map_err(|_| format!("HTTP {code}, not JSON: {}", body.trim()))?;
            if v["status"] == "success" {
                Ok(v["data"].clone())
            } else {
                Err(format!("{}: {}", v["errorType"], v["error"]))
            }
        }

        pub fn instant(&self, expr: &str) -> Result<Value, String> {
            let time = format!("{:.3}", now());
            self.api("/api/v1/query", &[("query", expr.into()), ("time", time)])
        }

        pub fn range(&self, expr: &str) -> Result<Value, String> {
            let end = now().floor() as u64;
            self.api(
                "/api/v1/query_range",
                &[
                    ("query", expr.into()),
                    ("start", (end - RANGE_S).to_string()),
                    ("end", end.to_string()),
                    ("step", STEP_S.to_string()),
                ],
            )
        }

        /// The value of a query that returns one sample.
        pub fn value(&self, expr: &str) -> Option<f64> {
            let data = self.instant(expr).ok()?;
            let sample = data["result"].as_array()?.first()?;
            sample["value"][1].as_str()?.parse().ok()
        }

        /// Unix time of the first sample of the agent's target.
        pub fn first_scrape(&self) -> f64 {
            let data = self.instant("up{job=\"oomwatch\"}[1h]").unwrap();
            data["result"][0]["values"][0][0]
                .as_f64()
                .unwrap_or_else(|| panic!("no sample of up: {data}"))
        }

        pub fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) {
            let end = Instant::now() + WAIT;
            loop {
                let v = self.value(expr);
                if v.is_some_and(&ok) {
                    return;
                }
                assert!(
                    Instant::now() < end,
                    "`{expr}` still {v:?} after {WAIT:?}; prometheus log:\n{}",
                    self.log()
                );
                thread::sleep(Duration::from_millis(250));
            }
        }
    }

    impl Drop for Prometheus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    /// One HTTP/1.0 GET (no chunked encoding): status code and body.
    pub fn http(port: u16, path: &str) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of HTTP header")?;
        let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
        Ok((code.ok_or("no HTTP status")?, body.to_string()))
    }

    /// Percent-encoding of a query parameter.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
