//! Docker outside Kubernetes, for real: our own `containerd` + `dockerd` (non-default data root,
//! given to the agent with `--docker-root`), containers OOM-killed at their own `--memory`
//! limit and at a `--cgroup-parent`'s limit, Compose labels, and the runtime's faults (dockerd
//! stopped, a container's state file removed, the state directory missing). Every event is
//! checked against `docker inspect` (Id, Name, Config.Image, State.OOMKilled) and the kernel's
//! own record (`/dev/kmsg`, `memory.oom_control`). One daemon pair and one test for the binary.
mod common;

use std::fs;

use common::runtime::{
    check_fields, kernel_oom_kills, kill_in, oom_in_cgroup, retry_rate_limited, tools_or_skip,
    Docker, RuntimeCli, IMAGE,
};
use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};
use serde_json::{json, Value};

/// The allocation every container makes: `tail` of an endless line; the shell stays, so the
/// container and its cgroup outlive the kill (the kernel's count can be read).
const HOG: &str = "tail /dev/zero; exec sleep 600";

/// `docker run -d` of the hog; returns the container id.
fn run_hog(d: &Docker, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", HOG]);
    d.run(&args)
}

/// The container's own identity as `docker inspect` gives it, after it was stopped.
fn inspected(d: &Docker, id: &str) -> (Value, String) {
    d.run(&["kill", id]);
    d.run(&["wait", id]);
    // dockerd learns of the OOM from containerd's event, which can come after the exit it
    // already reported: give its own account a moment to settle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut ins = d.inspect(id);
    while ins["State"]["OOMKilled"] != serde_json::json!(true)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        ins = d.inspect(id);
    }
    let says = format!(
        "Id={} Name={} Config.Image={} State.OOMKilled={}",
        ins["Id"], ins["Name"], ins["Config"]["Image"], ins["State"]["OOMKilled"]
    );
    (ins, says)
}

fn identity(ins: &Value) -> Vec<(&'static str, Value)> {
    let name = ins["Name"].as_str().unwrap().trim_start_matches('/');
    vec![
        ("container_runtime", json!("docker")),
        ("container_id", ins["Id"].clone()),
        ("container_name", json!(name)),
        ("container_image", ins["Config"]["Image"].clone()),
    ]
}

struct Case<'a> {
    name: &'a str,
    extra: &'a [&'a str],
    /// The limiting cgroup, when not the container's own.
    parent: Option<&'a str>,
    domain: &'a str,
    compose: Option<(&'a str, &'a str)>,
}

/// One container OOM-killed; its event checked against docker and the kernel.
fn one_case(d: &Docker, agent: &mut Agent, c: &Case, failures: &mut Vec<String>) {
    let (id, cg, ev, inv) = retry_rate_limited(|n| {
        let mut kmsg = Kmsg::open();
        let name = if n == 1 {
            c.name.to_owned()
        } else {
            format!("{}-{n}", c.name)
        };
        let id = run_hog(d, &name, c.extra);
        let cg = format!("{}/{id}", c.parent.unwrap_or("/docker"));
        let (ev, inv) = kill_in(agent, &mut kmsg, &cg)?;
        Some((id, cg, ev, inv))
    });
    let kernel_count = kernel_oom_kills(&cg);
    let (ins, says) = inspected(d, &id);
    assert_eq!(
        ins["State"]["OOMKilled"],
        json!(true),
        "docker's own account"
    );
    assert_eq!(kernel_count, 1, "kernel count in {cg}");
    assert_eq!(inv.oom_memcg.as_deref(), Some(c.parent.unwrap_or(&cg)));
    let mut want = identity(&ins);
    want.push(("oom_domain", json!(c.domain)));
    want.push(("cgroup", json!(cg)));
    want.push(("oom_memcg", json!(inv.oom_memcg)));
    let (project, service) = c.compose.unzip();
    want.push(("compose_project", json!(project)));
    want.push(("compose_service", json!(service)));
    check_fields(
        "docker",
        c.name,
        &ev,
        &want,
        &format!("{says} kernel oom_kill=1"),
        failures,
    );
}

/// A kill in a running container's cgroup by a host process (the runtime is down or its files
/// are gone); the event must still carry what the cgroup path says.
fn fault_case(agent: &mut Agent, case: &str, id: &str, names: Option<&Value>, f: &mut Vec<String>) {
    let cg = format!("/docker/{id}");
    let ev = retry_rate_limited(|_| {
        let mut kmsg = Kmsg::open();
        oom_in_cgroup(&cg);
        kill_in(agent, &mut kmsg, &cg).map(|(ev, _)| ev)
    });
    let mut want = vec![
        ("container_runtime", json!("docker")),
        ("container_id", json!(id)),
        ("oom_domain", json!("container")),
    ];
    match names {
        Some(ins) => {
            want = identity(ins)
                .into_iter()
                .chain(want.into_iter().skip(2))
                .collect()
        }
        None => want.extend([
            ("container_name", json!(null)),
            ("container_image", json!(null)),
        ]),
    }
    check_fields(
        "docker",
        case,
        &ev,
        &want,
        &format!("kernel: killed in {cg}"),
        f,
    );
}

fn lines_with(agent: &Agent, text: &str) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

#[test]
fn docker_containers_named_and_classified_and_faults_survived() {
    if !real_kernel_or_skip() || !tools_or_skip(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    // Declared before the daemons: dropped after the containers in it are gone.
    let parent = format!("/oomwatch-docker-parent-{}", std::process::id());
    let _parent_cg = TestCgroup::at(&parent, Some(40 << 20));
    let mut d = Docker::start();
    let root = d.data_root().to_str().unwrap().to_owned();
    let mut agent = Agent::start(&["--docker-root", &root]);
    let mut failures = Vec::new();
    let mem: &[&str] = &["--memory", "32m", "--memory-swap", "32m"];
    let compose = [
        mem,
        &["--label", "com.docker.compose.project=shop"],
        &["--label", "com.docker.compose.service=cart"],
    ]
    .concat();
    let cgroup_parent = ["--cgroup-parent", parent.as_str()];
    let cases = [
        Case {
            name: "plain",
            extra: mem,
            parent: None,
            domain: "container",
            compose: None,
        },
        Case {
            name: "shop-cart-1",
            extra: &compose,
            parent: None,
            domain: "container",
            compose: Some(("shop", "cart")),
        },
        Case {
            name: "cgroup-parent",
            extra: &cgroup_parent,
            parent: Some(&parent),
            domain: "system",
            compose: None,
        },
    ];
    for c in &cases {
        one_case(&d, &mut agent, c, &mut failures);
    }
    removed_right_after_kill(&d, &mut agent, &mut failures);
    // The page names a plain container by its name and image.
    let compose = agent.seen.iter().find(|v| v["compose_project"] == "shop");
    let name = compose
        .and_then(|v| v["container_name"].as_str())
        .unwrap_or("?");
    let page = agent.get("/");
    assert!(
        page.contains(&format!("container {name} ({IMAGE})")),
        "the page names the container {name}: {page}"
    );

    // Faults: two running containers (created after the agent's start, so not read ahead).
    let alive = run_hog_sleeping(&d, "alive");
    let gone = run_hog_sleeping(&d, "gone");
    let alive_ins = d.inspect(&alive);
    d.stop_dockerd();
    fault_case(
        &mut agent,
        "dockerd-stopped",
        &alive,
        Some(&alive_ins),
        &mut failures,
    );
    let state = d
        .data_root()
        .join("containers")
        .join(&gone)
        .join("config.v2.json");
    let saved = fs::read(&state).unwrap();
    fs::remove_file(&state).unwrap();
    fault_case(&mut agent, "state-file-removed", &gone, None, &mut failures);
    fault_case(
        &mut agent,
        "state-file-removed-again",
        &gone,
        None,
        &mut failures,
    );
    // Put back, so that Docker removes the container at the end.
    fs::write(&state, saved).unwrap();
    assert_eq!(
        lines_with(&agent, "container state file not found"),
        1,
        "{}",
        agent.log_text()
    );
    assert!(agent.get("/healthz").contains("200"), "agent alive");
    drop(agent);

    // The state directory missing (a wrong --docker-root, or no Docker on this node).
    let missing = d.data_root().join("no-such-dir");
    let mut agent = Agent::start(&["--docker-root", missing.to_str().unwrap()]);
    fault_case(&mut agent, "state-dir-missing", &alive, None, &mut failures);
    fault_case(
        &mut agent,
        "state-dir-missing-again",
        &alive,
        None,
        &mut failures,
    );
    let cause = "container runtime state directory missing";
    assert_eq!(lines_with(&agent, cause), 1, "{}", agent.log_text());
    assert!(agent.get("/healthz").contains("200"), "agent alive");
    assert!(
        failures.is_empty(),
        "{failures:#?}\ndockerd log:\n{}",
        d.log()
    );
}

/// `docker run --rm`: the kill ends the container and Docker deletes its state right away;
/// the names must still be right (read before they went).
fn removed_right_after_kill(d: &Docker, agent: &mut Agent, failures: &mut Vec<String>) {
    let (ins, ev) = retry_rate_limited(|n| {
        let name = format!("rm-{n}");
        let id = d.run(&[
            "create",
            "--rm",
            "--name",
            &name,
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            IMAGE,
            "tail",
            "/dev/zero",
        ]);
        let ins = d.inspect(&id);
        let mut kmsg = Kmsg::open();
        d.run(&["start", &id]);
        let (ev, _) = kill_in(agent, &mut kmsg, &format!("/docker/{id}"))?;
        Some((ins, ev))
    });
    let mut want = identity(&ins);
    want.push(("oom_domain", json!("container")));
    let says = format!(
        "Id={} Name={} Config.Image={} (inspected before start; removed by --rm)",
        ins["Id"], ins["Name"], ins["Config"]["Image"]
    );
    check_fields("docker", "run --rm", &ev, &want, &says, failures);
}

/// A running container that only sleeps (the fault cases kill inside it from the host).
fn run_hog_sleeping(d: &Docker, name: &str) -> String {
    d.run(&[
        "run",
        "-d",
        "--name",
        name,
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        IMAGE,
        "sleep",
        "600",
    ])
}
