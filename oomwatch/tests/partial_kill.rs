//! Partial OOM kills on the real kernel: kubelet-style memory cgroups, each holding a process
//! tree whose init is pid 1 of its own pid namespace (as runc starts a container), and a real
//! OOM kill in each. A child killed while the init lives must be `partial_kill: true` naming
//! that init; the init itself killed must be `false`. Checked against the kernel's own record
//! (`/dev/kmsg`, `memory.oom_control`/`memory.events`) and the processes' real fate; the
//! metric's real value is then fed to `promtool test rules`, where `OomwatchSilentOomKill`
//! must fire.
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::{kill_pid, real_kernel_or_skip, Agent, Kmsg};
use oomwatch_testkit::{ContainerCgroup, NsInit};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const LIMIT: u64 = 48 << 20;
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Names for container `n`, as its containerd bundle gives them.
fn names(n: u32) -> (String, String, String) {
    (
        format!("team-{n}"),
        format!("web-{n}-7d9f8b6c5-x2x4q"),
        format!("app-{n}"),
    )
}

/// The containerd bundle kubelet's runtime writes for the container, below `root`.
fn write_bundle(root: &Path, c: &ContainerCgroup, n: u32) {
    let (ns, pod, container) = names(n);
    let dir = root
        .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
        .join(&c.id);
    fs::create_dir_all(&dir).unwrap();
    let body = json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": container,
            "io.kubernetes.cri.sandbox-id": "f".repeat(64),
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-namespace": ns,
            "io.kubernetes.cri.sandbox-uid": c.pod_uid,
        },
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
    });
    fs::write(dir.join("config.json"), body.to_string()).unwrap();
}

/// The agent's record of the kill in `cg` (not a lifecycle follow-up).
fn event_in(agent: &mut Agent, cg: &str) -> Value {
    agent.wait_event(WAIT, |v| kill_pid(v).is_some() && v["cgroup"] == cg)
}

#[test]
fn a_child_killed_while_init_lives_is_partial_and_the_init_killed_is_not() {
    if !real_kernel_or_skip() {
        return;
    }
    cases(&[]);
}

/// The same without the task read at the kill: decided from the cgroup right after it.
#[test]
fn the_same_from_the_cgroup_when_the_task_is_not_read_at_the_kill() {
    if !real_kernel_or_skip() {
        return;
    }
    cases(&["--disable-probe", "tp_btf:mark_victim"]);
}

fn cases(extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    symlink("/proc", root.path().join("proc")).unwrap();
    symlink("/sys", root.path().join("sys")).unwrap();
    let run = if extra.is_empty() { "btf" } else { "cg" };
    let base = format!("/oomwatch-partial-{}-{run}", std::process::id());
    // Container numbers unique to this run (the two tests run at once; each agent sees both).
    let (n_partial, n_whole) = if extra.is_empty() { (0, 1) } else { (2, 3) };
    let partial = ContainerCgroup::kubelet(&format!("{base}-a"), n_partial, LIMIT);
    let whole = ContainerCgroup::kubelet(&format!("{base}-b"), n_whole, LIMIT);
    write_bundle(root.path(), &partial, n_partial);
    write_bundle(root.path(), &whole, n_whole);
    let host_root = root.path().to_str().unwrap().to_string();
    let mut args = vec!["--host-root", host_root.as_str()];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(&args);
    let v2 = partial.container().v2;

    // 1. `sh` is the init; its child `tail` grows until the kernel kills it; `sh` lives on.
    let cg = partial.container();
    let mut init = NsInit::start(cg, "tail /dev/zero; read forever");
    let mut kmsg = Kmsg::open();
    init.go();
    let ev = event_in(&mut agent, &cg.path);
    let victim = ev["pid"].as_i64().unwrap() as i32;
    let kernel = kmsg.killed(victim, WAIT);
    assert_eq!(kernel.comm, "tail", "the kernel killed the child: {ev}");
    assert_ne!(victim, init.pid);
    assert_eq!(
        cg.oom_kills(),
        1,
        "the kernel counted one kill in {}",
        cg.path
    );
    assert!(
        init.alive(),
        "the init kept running: the container was not killed"
    );
    let show = |v: &Value| {
        format!(
            "pid {} comm {} partial_kill {} container_init {} oom_group {}",
            v["pid"], v["comm"], v["partial_kill"], v["container_init"], v["oom_group"]
        )
    };
    eprintln!(
        "[{run}] child killed, init {} alive: {}",
        init.pid,
        show(&ev)
    );
    assert_eq!(ev["partial_kill"], true, "{ev}");
    assert_eq!(
        ev["container_init"],
        json!({"pid": init.pid, "comm": "sh"}),
        "{ev}"
    );
    // Read at the kill where the victim's task_struct is (tp_btf), else from the cgroup.
    let source = if ev["sources"]["tgid"] == "tp_btf:mark_victim" {
        "tp_btf:mark_victim"
    } else {
        "cgroupfs:nspid"
    };
    assert_eq!(extra.is_empty(), source == "tp_btf:mark_victim", "{ev}");
    assert_eq!(ev["sources"]["partial_kill"], source, "{ev}");
    // memory.oom.group exists only on cgroup v2 (the VM); this host has v1.
    let want_group = if v2 { json!(false) } else { Value::Null };
    assert_eq!(ev["oom_group"], want_group, "{ev}");
    assert_eq!(ev["pod"], names(n_partial).1, "{ev}");

    // 2. The init itself grows and is killed: the namespace dies with it.
    let cg = whole.container();
    let mut init_b = NsInit::start(cg, "exec tail /dev/zero");
    let mut kmsg = Kmsg::open();
    init_b.go();
    let ev = event_in(&mut agent, &cg.path);
    assert_eq!(ev["pid"], init_b.pid, "the init is the victim: {ev}");
    assert_eq!(kmsg.killed(init_b.pid, WAIT).comm, "tail");
    assert!(
        init_b.wait(WAIT).is_some(),
        "the namespace ended with its init"
    );
    assert!(!init_b.alive());
    assert_eq!(cg.oom_kills(), 1);
    eprintln!("[{run}] init {} killed: {}", init_b.pid, show(&ev));
    assert_eq!(ev["sources"]["partial_kill"], source, "{ev}");
    assert_eq!(ev["partial_kill"], false, "{ev}");
    // The init is named when it was still there to read; a reaped one leaves an empty cgroup.
    let init_seen = &ev["container_init"];
    assert!(
        init_seen.is_null() || init_seen["pid"] == init_b.pid,
        "container_init is the victim or unknown: {ev}"
    );
    assert_eq!(ev["oom_group"], want_group, "{ev}");

    // 3. The metric counts the partial kill only, and the alert fires on its real value.
    let metrics = agent.get("/metrics");
    let (ns, pod, container) = names(n_partial);
    let series = format!(
        "oomwatch_oom_partial_kills_total{{container=\"{container}\",namespace=\"{ns}\",pod=\"{pod}\"}}"
    );
    let value = common::metric_value(&metrics, &series)
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    assert_eq!(value, 1.0);
    let whole_pod = names(n_whole).1;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("oomwatch_oom_partial_kills_total{") && l.contains(&whole_pod)),
        "the init's kill is not partial:\n{metrics}"
    );
    alert_fires_on(&series, value);
    drop(init);
    drop(init_b);
    drop(agent);
}

/// `promtool test rules` with the deployed rules, fed with the scraped series and value as a
/// Prometheus scraping the agent would store them: `OomwatchSilentOomKill` must fire.
fn alert_fires_on(series: &str, value: f64) {
    let rules = Path::new(REPO).join("deploy/prometheus/oomwatch-rules.yaml");
    let (_, labels) = series.split_once('{').unwrap();
    let labels = labels.trim_end_matches('}');
    let stored = format!(
        "oomwatch_oom_partial_kills_total{{{labels},instance=\"127.0.0.1:9837\",job=\"oomwatch\",node=\"node-a\"}}"
    );
    let get = |name: &str| {
        let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        labels[start..].split('"').next().unwrap().to_string()
    };
    let (ns, pod, container) = (get("namespace"), get("pod"), get("container"));
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - name: the agent's real series after a partial kill
    interval: 1m
    input_series:
      - series: '{stored}'
        values: '_x5 {value}x20'
    alert_rule_test:
      - alertname: OomwatchSilentOomKill
        eval_time: 4m
        exp_alerts: []
      - alertname: OomwatchSilentOomKill
        eval_time: 6m
        exp_alerts:
          - exp_labels:
              severity: warning
              namespace: {ns}
              pod: {pod}
              container: {container}
              node: node-a
            exp_annotations:
              summary: "A process of container {ns}/{pod}/{container} was OOM-killed silently"
              description: "The kernel's OOM killer killed {value} process(es) of container {container} in pod {ns}/{pod} (node node-a) in the last 15 minutes that were not the container's init: the container kept running, so Kubernetes shows no restart and no OOMKilled status."
              runbook_url: "https://github.com/oomwatch/oomwatch/blob/main/deploy/prometheus/README.md#oomwatchsilentoomkill"
"#,
        rules = rules.display(),
    );
    common::promtool_test_rules(&test);
}
