//! podman outside Kubernetes, for real: podman 4 with its own storage root (given to the agent
//! with `--podman-root`), cgroupfs manager; a container OOM-killed at its own `--memory` limit
//! and one at its podman pod's limit, and a container whose runtime state is gone. Every event
//! is checked against `podman inspect` (Id, Name, ImageName) and the kernel's own record
//! (`/dev/kmsg`, `memory.oom_control`).
//!
//! podman 4.3 with runc on cgroup v1 reports `State.OOMKilled: false` for these kills (it does
//! not watch the cgroup's OOM events for this case); the kernel's count is the ground truth.
mod common;

use std::fs;

use common::runtime::{
    check_fields, kernel_oom_kills, kill_in, oom_in_cgroup, retry_rate_limited, tools_or_skip,
    Podman, RuntimeCli, IMAGE, PAUSE_IMAGE,
};
use common::{real_kernel_or_skip, Agent, Kmsg};
use serde_json::{json, Value};

const HOG: &str = "tail /dev/zero; exec sleep 600";

/// Runs the hog in a new container; waits for the kernel's kill in it and the agent's event;
/// checks both against podman's own state and the kernel's count.
/// `parent`: the cgroup podman puts the container in (`/libpod_parent`, or its pod's).
struct Case<'a> {
    name: &'a str,
    extra: &'a [&'a str],
    parent: &'a str,
    domain: &'a str,
}

/// The container's Compose labels as `podman inspect` gives them (`Config.Labels`).
fn compose(ins: &Value) -> [(&'static str, Value); 2] {
    let labels = &ins["Config"]["Labels"];
    let get = |k: &str| labels.get(k).cloned().unwrap_or(Value::Null);
    [
        ("compose_project", get("com.docker.compose.project")),
        ("compose_service", get("com.docker.compose.service")),
    ]
}

fn one_case(p: &Podman, agent: &mut Agent, c: &Case, f: &mut Vec<String>) {
    let (ev, inv, id) = retry_rate_limited(|n| {
        let mut kmsg = Kmsg::open();
        let name = if n == 1 {
            c.name.to_owned()
        } else {
            format!("{}-{n}", c.name)
        };
        let mut args = vec!["run", "-d", "--network", "none", "--name", &name];
        args.extend_from_slice(c.extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", HOG]);
        let id = p.run(&args);
        let cg = format!("{}/libpod-{id}", c.parent);
        kill_in(agent, &mut kmsg, &cg).map(|(ev, inv)| (ev, inv, id))
    });
    let kernel_count = kernel_oom_kills(&inv.task_memcg);
    let ins = p.inspect(&id);
    assert_eq!(kernel_count, 1, "kernel count in {}", inv.task_memcg);
    let says = format!(
        "Id={} Name={} ImageName={} Config.Labels={} State.OOMKilled={} kernel oom_kill=1 \
         oom_memcg={}",
        ins["Id"],
        ins["Name"],
        ins["ImageName"],
        ins["Config"]["Labels"],
        ins["State"]["OOMKilled"],
        inv.oom_memcg.as_deref().unwrap_or("?")
    );
    let [project, service] = compose(&ins);
    let want = [
        project,
        service,
        ("container_runtime", json!("podman")),
        ("container_id", ins["Id"].clone()),
        ("container_name", ins["Name"].clone()),
        ("container_image", ins["ImageName"].clone()),
        ("oom_domain", json!(c.domain)),
        ("cgroup", json!(inv.task_memcg)),
        ("oom_memcg", json!(inv.oom_memcg)),
    ];
    check_fields("podman", c.name, &ev, &want, &says, f);
}

#[test]
fn podman_containers_named_and_classified() {
    if !real_kernel_or_skip() || !tools_or_skip(&["podman", "conmon", "runc"]) {
        return;
    }
    let p = Podman::new();
    let root = p.root().to_str().unwrap().to_owned();
    let mut agent = Agent::start(&["--podman-root", &root]);
    let mut failures = Vec::new();
    let mem = [
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=web",
    ];
    let web = Case {
        name: "web",
        extra: &mem,
        parent: "/libpod_parent",
        domain: "container",
    };
    one_case(&p, &mut agent, &web, &mut failures);

    // A pod with a limit of its own; the container has none.
    let pod = p.run(&[
        "pod",
        "create",
        "--name",
        "shop",
        "--network",
        "none",
        "--memory",
        "40m",
        "--infra-image",
        PAUSE_IMAGE,
    ]);
    let parent = format!("/libpod_parent/{pod}");
    let cart = Case {
        name: "cart",
        extra: &["--pod", &pod],
        parent: &parent,
        domain: "pod",
    };
    one_case(&p, &mut agent, &cart, &mut failures);

    // podman's list lost the container (its state gone between kill and lookup): the event
    // still has the id, runtime and domain, and one log line says why.
    let id = p.run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "gone",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        IMAGE,
        "sleep",
        "600",
    ]);
    let list = p.root().join("overlay-containers/containers.json");
    let saved = fs::read(&list).unwrap();
    fs::write(&list, "[]").unwrap();
    let cg = format!("/libpod_parent/libpod-{id}");
    let ev = retry_rate_limited(|_| {
        let mut kmsg = Kmsg::open();
        oom_in_cgroup(&cg);
        kill_in(&mut agent, &mut kmsg, &cg).map(|(ev, _)| ev)
    });
    fs::write(&list, saved).unwrap();
    let want = [
        ("container_runtime", json!("podman")),
        ("container_id", json!(id)),
        ("container_name", json!(null)),
        ("oom_domain", json!("container")),
    ];
    check_fields(
        "podman",
        "state-removed",
        &ev,
        &want,
        &format!("kernel: killed in {cg}"),
        &mut failures,
    );
    let cause = "container state file not found";
    let lines = agent
        .log_text()
        .lines()
        .filter(|l| l.contains(cause))
        .count();
    assert_eq!(lines, 1, "{}", agent.log_text());
    assert!(failures.is_empty(), "{failures:#?}");
}
