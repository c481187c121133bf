//! Who ended a container, on a real Docker (our own `containerd` + `dockerd`): `docker stop` of
//! a container whose init ignores SIGTERM, `docker kill`, `kill -9` of its init from a host
//! shell, its init OOM-killed, a partial OOM kill followed by `docker kill`, and a partial OOM
//! kill followed by a normal exit. The agent's `sigkill`, `container_killed` and OOM lines are
//! checked against Docker's own account (`docker inspect`: State.ExitCode, State.OOMKilled)
//! and the kernel's (`memory.oom_control` oom_kill). Each case prints one row of the report
//! table (`TABLE | docker | case | agent | docker | PASS/FAIL`).
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::runtime::{kernel_oom_kills, tools_or_skip, Docker, RuntimeCli, IMAGE};
use common::{real_kernel_or_skip, Agent};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// What one case expects of the agent.
struct Want {
    /// `sender_kind` of the SIGKILL that ended the init, and of `container_killed`; `None`:
    /// no SIGKILL reaches the init (it exits by itself).
    kind: Option<&'static str>,
    partial_before: u64,
    runtime_reason: Option<&'static str>,
    /// docker inspect's State.OOMKilled and State.ExitCode.
    docker: (bool, i64),
}

/// The container's init pid (as the host sees it) once it runs.
fn init_pid(d: &Docker, id: &str) -> i64 {
    let end = Instant::now() + WAIT;
    loop {
        let pid = d.inspect(id)["State"]["Pid"].as_i64().unwrap_or(0);
        if pid > 0 || Instant::now() > end {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Docker's account once the container has exited (its OOM event may come after the exit).
fn exited(d: &Docker, id: &str, oom: bool) -> Value {
    d.run(&["wait", id]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut ins = d.inspect(id);
    while oom && ins["State"]["OOMKilled"] != json!(true) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        ins = d.inspect(id);
    }
    ins
}

/// The agent's partial OOM kill in the container `id` (its cgroup's new event).
fn partial_kill(agent: &mut Agent, id: &str) -> Value {
    let cg = format!("/docker/{id}");
    agent.wait_event(WAIT, |v| v["type"].is_null() && v["cgroup"] == cg.as_str())
}

/// Checks the case's lines against `want` and Docker's account; prints the table row.
fn check(agent: &mut Agent, case: &str, init: i64, ins: &Value, want: &Want, f: &mut Vec<String>) {
    let mut bad = Vec::new();
    let docker = (
        ins["State"]["OOMKilled"].as_bool().unwrap_or(false),
        ins["State"]["ExitCode"].as_i64().unwrap_or(-1),
    );
    if docker != want.docker {
        bad.push(format!(
            "docker said {docker:?}, the case expects {:?}",
            want.docker
        ));
    }
    let mut got = "no SIGKILL to the init: no container_killed".to_string();
    if let Some(kind) = want.kind {
        let kill = agent.wait_event(WAIT, |v| {
            v["type"] == "sigkill" && v["target"]["pid"] == init
        });
        let end = agent.wait_event(WAIT, |v| {
            v["type"] == "container_killed" && v["init"]["pid"] == init
        });
        got = format!(
            "sigkill.sender_kind={} sender.exe={} container_init={} | container_killed: \
             sender_kind={} partial_oom_kills_before={} cgroup_oom_kills={} runtime_reason={}",
            kill["sender_kind"],
            kill["sender"]["exe"],
            kill["container_init"],
            end["sender_kind"],
            end["partial_oom_kills_before"],
            end["cgroup_oom_kills"],
            end["runtime_reason"]
        );
        let pairs = [
            (&kill["sender_kind"], json!(kind)),
            (&kill["container_init"], json!(true)),
            (&kill["target"]["container_id"], ins["Id"].clone()),
            (&end["sender_kind"], json!(kind)),
            (&end["sigkill_id"], kill["sigkill_id"].clone()),
            (&end["partial_oom_kills_before"], json!(want.partial_before)),
            (&end["runtime_reason"], json!(want.runtime_reason)),
        ];
        for (g, w) in pairs {
            if *g != w {
                bad.push(format!("got {g}, want {w}"));
            }
        }
        // What the agent predicts the runtime reports, against what Docker reported.
        let oom_said = end["runtime_reason"] == "OOMKilled";
        if oom_said != docker.0 || docker.1 != 137 {
            bad.push(format!(
                "runtime_reason {} but docker {docker:?}",
                end["runtime_reason"]
            ));
        }
    }
    let verdict = if bad.is_empty() { "PASS" } else { "FAIL" };
    eprintln!(
        "TABLE | docker | {case} | {got} | State.OOMKilled={} State.ExitCode={} | {verdict}",
        docker.0, docker.1
    );
    if !bad.is_empty() {
        f.push(format!("{case}: {}", bad.join("; ")));
    }
}

fn run(d: &Docker, name: &str, mem: bool, cmd: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    if mem {
        args.extend_from_slice(&["--memory", "32m", "--memory-swap", "32m"]);
    }
    args.push(IMAGE);
    args.extend_from_slice(cmd);
    d.run(&args)
}

/// Stopped or killed by the runtime, or by a host shell: no OOM anywhere.
fn signalled(d: &Docker, agent: &mut Agent, f: &mut Vec<String>) {
    let want = |kind| Want {
        kind: Some(kind),
        partial_before: 0,
        runtime_reason: Some("Error"),
        docker: (false, 137),
    };
    // PID 1 of a pid namespace ignores SIGTERM it has no handler for: stop ends in SIGKILL.
    let id = run(d, "stop-ignores-term", false, &["sleep", "600"]);
    let init = init_pid(d, &id);
    d.run(&["stop", "-t", "1", &id]);
    let ins = exited(d, &id, false);
    check(
        agent,
        "docker stop, SIGTERM ignored",
        init,
        &ins,
        &want("runtime"),
        f,
    );

    let id = run(d, "killed", false, &["sleep", "600"]);
    let init = init_pid(d, &id);
    d.run(&["kill", &id]);
    let ins = exited(d, &id, false);
    check(agent, "docker kill", init, &ins, &want("runtime"), f);

    let id = run(d, "shell-kill", false, &["sleep", "600"]);
    let init = init_pid(d, &id);
    let st = Command::new("/bin/sh")
        .args(["-c", &format!("kill -9 {init}")])
        .status()
        .unwrap();
    assert!(st.success());
    let ins = exited(d, &id, false);
    check(
        agent,
        "kill -9 from a host shell",
        init,
        &ins,
        &want("other"),
        f,
    );
}

/// OOM kills: the init itself, a child before `docker kill`, a child before a normal exit.
fn oom(d: &Docker, agent: &mut Agent, f: &mut Vec<String>) {
    let id = run(d, "init-oom", true, &["tail", "/dev/zero"]);
    let init = init_pid(d, &id);
    let ins = exited(d, &id, true);
    let want = Want {
        kind: Some("oom_kernel"),
        partial_before: 0,
        runtime_reason: Some("OOMKilled"),
        docker: (true, 137),
    };
    check(agent, "init OOM-killed", init, &ins, &want, f);

    let hog = "tail /dev/zero; exec sleep 600";
    let id = run(d, "partial-then-kill", true, &["sh", "-c", hog]);
    let init = init_pid(d, &id);
    let ev = partial_kill(agent, &id);
    assert_eq!(ev["partial_kill"], true, "{ev}");
    assert_eq!(kernel_oom_kills(&format!("/docker/{id}")), 1);
    d.run(&["kill", &id]);
    let ins = exited(d, &id, true);
    let want = Want {
        kind: Some("runtime"),
        partial_before: 1,
        runtime_reason: Some("OOMKilled"),
        docker: (true, 137),
    };
    check(
        agent,
        "partial OOM kill, then docker kill",
        init,
        &ins,
        &want,
        f,
    );

    let id = run(
        d,
        "partial-then-exit",
        true,
        &["sh", "-c", "tail /dev/zero; sleep 1; exit 0"],
    );
    let ev = partial_kill(agent, &id);
    let ins = exited(d, &id, true);
    let want = Want {
        kind: None,
        partial_before: 0,
        runtime_reason: None,
        docker: (true, 0),
    };
    let case = format!(
        "partial OOM kill (partial_kill={}), then exit 0",
        ev["partial_kill"]
    );
    check(agent, &case, 0, &ins, &want, f);
    if ev["partial_kill"] != true {
        f.push(format!("{case}: the OOM kill was partial"));
    }
}

/// `OomwatchContainerKilledNotByOom` in `promtool test rules`, fed with the agent's real
/// series for the container its init was `kill -9`ed from a host shell.
fn not_by_oom_alert_fires(metrics: &str, f: &mut Vec<String>) {
    let Some(line) = metrics.lines().find(|l| {
        l.starts_with("oomwatch_container_sigkills_total{")
            && l.contains("container=\"shell-kill\"")
            && l.contains("sender_kind=\"other\"")
    }) else {
        f.push("no oomwatch_container_sigkills_total series for shell-kill/other".into());
        return;
    };
    let (series, value) = line.rsplit_once(' ').unwrap();
    let labels = series.split_once('{').unwrap().1.trim_end_matches('}');
    let stored = format!(
        "oomwatch_container_sigkills_total{{{labels},instance=\"127.0.0.1:9837\",job=\"oomwatch\",node=\"node-a\"}}"
    );
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/oomwatch-rules.yaml");
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - name: the agent's real series after a kill -9 of a container's init
    interval: 1m
    input_series:
      - series: '{stored}'
        values: '_x5 {value}x20'
    alert_rule_test:
      - alertname: OomwatchContainerKilledNotByOom
        eval_time: 4m
        exp_alerts: []
      - alertname: OomwatchContainerKilledNotByOom
        eval_time: 6m
        exp_alerts:
          - exp_labels:
              severity: info
              container: shell-kill
              node: node-a
              sender_kind: other
            exp_annotations:
              summary: "A process of container //shell-kill was SIGKILLed by other, not by the OOM killer"
              description: "{value} SIGKILL(s) sent by other reached processes of container shell-kill in pod / (node node-a) in the last 15 minutes. If one reached the container's init, the container ended with exit code 137 that was not an OOM kill: the agent's container_killed record names the sender and what Kubernetes shows (runtime_reason)."
              runbook_url: "https://github.com/oomwatch/oomwatch/blob/main/deploy/prometheus/README.md#oomwatchcontainerkillednotbyoom"
"#,
        rules = rules.display(),
    );
    common::promtool_test_rules(&test);
    eprintln!(
        "TABLE | docker | OomwatchContainerKilledNotByOom on the real series {line} | fires | PASS"
    );
}

#[test]
fn docker_container_ends_are_attributed() {
    if !real_kernel_or_skip() || !tools_or_skip(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    let d = Docker::start();
    let root = d.data_root().to_str().unwrap().to_owned();
    let mut agent = Agent::start(&["--docker-root", &root]);
    let mut failures = Vec::new();
    signalled(&d, &mut agent, &mut failures);
    oom(&d, &mut agent, &mut failures);
    let metrics = agent.get("/metrics");
    not_by_oom_alert_fires(&metrics, &mut failures);
    for (family, labels) in [
        (
            "oomwatch_container_sigkills_total{",
            "container=\"killed\",namespace=\"\",pod=\"\",sender_kind=\"runtime\"",
        ),
        (
            "oomwatch_container_ends_total{",
            "runtime_reason=\"OOMKilled\",sender_kind=\"oom_kernel\"",
        ),
    ] {
        if !metrics
            .lines()
            .any(|l| l.starts_with(family) && l.contains(labels))
        {
            failures.push(format!("no {family}{labels}}} in /metrics"));
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\nevents: {:#?}\ndockerd log:\n{}",
        agent
            .seen
            .iter()
            .filter(|v| v["type"] == "sigkill")
            .collect::<Vec<_>>(),
        d.log()
    );
}
