//! containerd through the CRI, as kubelet drives it: our own `containerd` (CRI plugin, cgroupfs
//! driver, a state directory of its own given to the agent with `--containerd-state`), pods
//! made with RunPodSandbox (kubelet's metadata, `cgroup_parent` under
//! `kubepods/{burstable,besteffort,}/pod<uid>` with the pod's limit written as kubelet does),
//! containers with CreateContainer/StartContainer (kubelet's labels and annotations, memory
//! limit). Real OOM kills inside the containers; every event is checked against the CRI's own
//! ContainerStatus/PodSandboxStatus and the kernel's record (`/dev/kmsg`, `memory.oom_control`).
mod common;
mod cri;

use std::fs;

use common::runtime::{
    check_fields, kernel_oom_kills, kill_in, oom_in_cgroup, retry_rate_limited, tools_or_skip,
};
use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};
use cri::{Containerd, Pod};
use serde_json::{json, Value};

/// The allocation: `tail` of an endless line; the shell stays (the cgroup outlives the kill).
const HOG: &str = "tail /dev/zero; exec sleep 600";
const MIB: i64 = 1 << 20;

fn pod(name: &str, qos: &'static str, n: u32) -> Pod {
    Pod {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        uid: format!(
            "7c3d8a6e-2f41-4b9a-8e5d-{:04x}{:08x}",
            n,
            std::process::id()
        ),
        qos,
    }
}

/// Creates the pod's memory cgroup as kubelet does before RunPodSandbox, with its limit.
fn pod_cgroup(c: &Containerd, p: &Pod, limit: Option<i64>) -> String {
    let cg = p.cgroup(&c.cgroup_root);
    let dir = TestCgroup::mount().join(cg.trim_start_matches('/'));
    fs::create_dir_all(&dir).unwrap();
    if let Some(l) = limit {
        fs::write(dir.join("memory.limit_in_bytes"), l.to_string()).unwrap();
    }
    cg
}

/// What the CRI says of a container (after it was stopped) and its sandbox, as the expected
/// identity fields and a one-line account.
fn cri_says(
    c: &mut Containerd,
    sandbox: &str,
    id: &str,
    qos: &str,
    domain: &str,
) -> (Vec<(&'static str, Value)>, String) {
    let st = c.container_status(id);
    let sb = c.sandbox_status(sandbox);
    let (cm, pm) = (st.metadata.unwrap(), sb.metadata.unwrap());
    let image = st.image.map(|i| i.image).unwrap_or_default();
    let says = format!(
        "CRI ContainerStatus id={} name={} reason={} exit={} image={}; PodSandboxStatus {}/{} uid={}",
        &st.id[..12],
        cm.name,
        st.reason,
        st.exit_code,
        image,
        pm.namespace,
        pm.name,
        pm.uid
    );
    let want = vec![
        ("namespace", json!(pm.namespace)),
        ("pod", json!(pm.name)),
        ("pod_uid", json!(pm.uid)),
        ("container", json!(cm.name)),
        ("container_id", json!(st.id)),
        ("container_runtime", json!("containerd")),
        ("container_image", json!(image)),
        (
            "qos_class",
            json!(if qos.is_empty() { "guaranteed" } else { qos }),
        ),
        ("oom_domain", json!(domain)),
    ];
    (want, says)
}

/// A container running HOG is OOM-killed; returns (its id, the event).
fn kill_one(
    c: &mut Containerd,
    agent: &mut Agent,
    p: &Pod,
    sandbox: &str,
    name: &str,
    limit: Option<i64>,
    attempt: &mut u32,
) -> (String, Value) {
    let pod_cg = p.cgroup(&c.cgroup_root);
    retry_rate_limited(|_| {
        let mut kmsg = Kmsg::open();
        let id = c.run_container(p, sandbox, name, *attempt, limit, HOG);
        *attempt += 1;
        let cg = format!("{pod_cg}/{id}");
        let (ev, inv) = kill_in(agent, &mut kmsg, &cg)?;
        assert_eq!(kernel_oom_kills(&cg), 1, "kernel count in {cg}");
        let memcg = if limit.is_some() { &cg } else { &pod_cg };
        assert_eq!(
            inv.oom_memcg.as_deref(),
            Some(memcg.as_str()),
            "the kernel's OOM memcg"
        );
        Some((id, ev))
    })
}

/// Container limit (guaranteed or burstable pod): domain `container`; then a restart of the
/// same container (new id, same names, the metric series continues).
fn container_limit_case(
    c: &mut Containerd,
    agent: &mut Agent,
    qos: &'static str,
    n: u32,
    f: &mut Vec<String>,
) {
    let p = pod(
        &format!("cart-{}", if qos.is_empty() { "guaranteed" } else { qos }),
        qos,
        n,
    );
    pod_cgroup(c, &p, Some(96 * MIB));
    let sandbox = c.run_pod(&p);
    let mut attempt = 0;
    let (id, ev) = kill_one(
        c,
        agent,
        &p,
        &sandbox,
        "worker",
        Some(32 * MIB),
        &mut attempt,
    );
    c.stop_container(&id);
    let (want, says) = cri_says(c, &sandbox, &id, qos, "container");
    let reason = c.container_status(&id).reason;
    assert_eq!(reason, "OOMKilled", "the CRI's own account");
    check_fields(
        "containerd-cri",
        &format!(
            "container limit ({})",
            if qos.is_empty() { "guaranteed" } else { qos }
        ),
        &ev,
        &want,
        &says,
        f,
    );
    if !qos.is_empty() {
        return;
    }
    // The harness restarts it, as kubelet would: attempt 1, new id, same names.
    let (id2, ev2) = kill_one(
        c,
        agent,
        &p,
        &sandbox,
        "worker",
        Some(32 * MIB),
        &mut attempt,
    );
    assert_ne!(id, id2);
    c.stop_container(&id2);
    let (want, says) = cri_says(c, &sandbox, &id2, qos, "container");
    check_fields(
        "containerd-cri",
        "restarted container (new id)",
        &ev2,
        &want,
        &says,
        f,
    );
    let series = [
        "namespace=\"shop\"".to_owned(),
        format!("pod=\"{}\"", p.name),
        "container=\"worker\"".to_owned(),
        "cgroup=\"\"".to_owned(),
    ];
    let kills = kills_with(&agent.get("/metrics"), &series);
    let series = series.join(",");
    // One kill per container the harness ran (a rate-limited kernel report means one more).
    let want = Some(f64::from(attempt));
    let verdict = if kills == want { "PASS" } else { "FAIL" };
    eprintln!("TABLE | containerd-cri | restart: metric series | {series} = {kills:?} | {attempt} kills, {attempt} container ids, one series | {verdict}");
    if kills != want {
        f.push(format!("restart: {series} = {kills:?}, want {want:?}"));
    }
}

#[test]
fn containerd_cri_pods_identified_from_containerds_own_files() {
    if !real_kernel_or_skip() || !tools_or_skip(&["containerd", "ctr", "runc"]) {
        return;
    }
    let mut c = Containerd::start();
    let state = c.state().to_str().unwrap().to_owned();
    let mut agent = Agent::start(&["--containerd-state", &state]);
    let mut f = Vec::new();
    container_limit_case(&mut c, &mut agent, "", 1, &mut f);
    container_limit_case(&mut c, &mut agent, "burstable", 2, &mut f);
    pod_limit_and_sandbox_cases(&mut c, &mut agent, &mut f);
    removed_case(&mut c, &mut agent, &mut f);
    init_and_sidecar_case(&mut c, &mut agent, &mut f);
    containerd_stopped_case(&mut c, &mut agent, &mut f);
    drop(agent);
    drop(c);
    assert!(f.is_empty(), "{f:#?}");
}

/// Pod-level limit, two containers: the one that died is named, not the other; then a process
/// in the pod's sandbox (pause) container's cgroup killed at the pod's limit.
fn pod_limit_and_sandbox_cases(c: &mut Containerd, agent: &mut Agent, f: &mut Vec<String>) {
    let p = pod("checkout", "burstable", 3);
    let pod_cg = pod_cgroup(c, &p, Some(48 * MIB));
    let sandbox = c.run_pod(&p);
    let web = c.run_container(&p, &sandbox, "web", 0, None, "exec sleep 600");
    let (id, ev) = kill_one(c, agent, &p, &sandbox, "worker", None, &mut 0);
    assert_ne!(ev["container"], json!("web"));
    c.stop_container(&id);
    let (mut want, says) = cri_says(c, &sandbox, &id, "burstable", "pod");
    want.push(("oom_memcg", json!(pod_cg)));
    check_fields(
        "containerd-cri",
        "pod limit, 2 containers",
        &ev,
        &want,
        &says,
        f,
    );
    let web_status = c.container_status(&web);
    assert_eq!(
        web_status.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
    // A process in the sandbox container's cgroup.
    let sb = c.sandbox_status(&sandbox);
    let cg = format!("{pod_cg}/{sandbox}");
    let ev = retry_rate_limited(|_| {
        let mut kmsg = Kmsg::open();
        oom_in_cgroup(&cg);
        kill_in(agent, &mut kmsg, &cg).map(|(ev, _)| ev)
    });
    let pm = sb.metadata.unwrap();
    let want = vec![
        ("namespace", json!(pm.namespace)),
        ("pod", json!(pm.name)),
        ("pod_uid", json!(pm.uid)),
        ("container", json!(null)),
        ("container_id", json!(sb.id)),
        ("container_runtime", json!("containerd")),
        ("qos_class", json!("burstable")),
        ("oom_domain", json!("pod")),
    ];
    let says = format!(
        "CRI PodSandboxStatus id={} {}/{}; kernel: killed in {cg}",
        &sb.id[..12],
        pm.namespace,
        pm.name
    );
    check_fields(
        "containerd-cri",
        "pod sandbox (pause) cgroup",
        &ev,
        &want,
        &says,
        f,
    );
}

/// A container whose only process is killed, removed through the CRI right after it exited.
fn removed_case(c: &mut Containerd, agent: &mut Agent, f: &mut Vec<String>) {
    let p = pod("ledger", "burstable", 4);
    let pod_cg = pod_cgroup(c, &p, None);
    let sandbox = c.run_pod(&p);
    let (id, ev, says) = retry_rate_limited(|n| {
        let mut kmsg = Kmsg::open();
        let id = c.run_container(
            &p,
            &sandbox,
            "batch",
            n - 1,
            Some(32 * MIB),
            "exec tail /dev/zero",
        );
        // Removed as soon as the CRI reports it exited.
        let mut st = c.container_status(&id);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while st.state != k8s_cri::v1::ContainerState::ContainerExited as i32
            && std::time::Instant::now() < end
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            st = c.container_status(&id);
        }
        let says = format!(
            "CRI ContainerStatus id={} reason={} exit={}, then RemoveContainer",
            &id[..12],
            st.reason,
            st.exit_code
        );
        assert_eq!(st.reason, "OOMKilled");
        c.remove_container(&id);
        let cg = format!("{pod_cg}/{id}");
        let (ev, _) = kill_in(agent, &mut kmsg, &cg)?;
        Some((id, ev, says))
    });
    let want = vec![
        ("namespace", json!("shop")),
        ("pod", json!("ledger")),
        ("pod_uid", json!(p.uid)),
        ("container", json!("batch")),
        ("container_id", json!(id)),
        ("container_runtime", json!("containerd")),
        ("qos_class", json!("burstable")),
        ("oom_domain", json!("container")),
    ];
    check_fields(
        "containerd-cri",
        "container removed right after its kill",
        &ev,
        &want,
        &says,
        f,
    );
}

/// An init container OOM-killed at its own limit (it is its own init: the kill ends it, as
/// kubelet would then see `OOMKilled`), then the app and a sidecar (kubelet's native sidecar is
/// an init container that keeps running): the sidecar's worker OOM-killed while its shell lives
/// is named the sidecar, never the app, and is a partial kill.
fn init_and_sidecar_case(c: &mut Containerd, agent: &mut Agent, f: &mut Vec<String>) {
    let p = pod("orders", "burstable", 5);
    pod_cgroup(c, &p, None);
    let sandbox = c.run_pod(&p);
    let pod_cg = p.cgroup(&c.cgroup_root);
    let (id, ev) = retry_rate_limited(|n| {
        let mut kmsg = Kmsg::open();
        let script = "exec tail /dev/zero";
        let id = c.run_container(&p, &sandbox, "migrate", n - 1, Some(32 * MIB), script);
        let (ev, _) = kill_in(agent, &mut kmsg, &format!("{pod_cg}/{id}"))?;
        Some((id, ev))
    });
    c.stop_container(&id);
    let (mut want, says) = cri_says(c, &sandbox, &id, "burstable", "container");
    want.push(("partial_kill", json!(false)));
    check_fields("containerd-cri", "init container", &ev, &want, &says, f);
    let app = c.run_container(&p, &sandbox, "app", 0, None, "exec sleep 600");
    let (id, ev) = kill_one(
        c,
        agent,
        &p,
        &sandbox,
        "log-shipper",
        Some(32 * MIB),
        &mut 0,
    );
    assert_ne!(ev["container"], json!("app"));
    c.stop_container(&id);
    let (mut want, says) = cri_says(c, &sandbox, &id, "burstable", "container");
    want.push(("partial_kill", json!(true)));
    check_fields(
        "containerd-cri",
        "sidecar beside the app",
        &ev,
        &want,
        &says,
        f,
    );
    let st = c.container_status(&app);
    assert_eq!(
        st.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
}

/// containerd stopped while the agent runs (its shims and containers live on, their bundles
/// stay): a kill in a running container still carries its identity, from the bundle files, and
/// the agent logs nothing about the runtime (it does not talk to containerd).
fn containerd_stopped_case(c: &mut Containerd, agent: &mut Agent, f: &mut Vec<String>) {
    let p = pod("stock", "burstable", 6);
    let pod_cg = pod_cgroup(c, &p, None);
    let sandbox = c.run_pod(&p);
    let id = c.run_container(&p, &sandbox, "api", 0, Some(32 * MIB), "exec sleep 600");
    // What the CRI says, read before the stop.
    let (want, says) = cri_says(c, &sandbox, &id, "burstable", "container");
    c.stop_daemon();
    let cg = format!("{pod_cg}/{id}");
    let ev = retry_rate_limited(|_| {
        let mut kmsg = Kmsg::open();
        oom_in_cgroup(&cg);
        kill_in(agent, &mut kmsg, &cg).map(|(ev, _)| ev)
    });
    let says = format!("{says}; then containerd stopped, kernel: killed in {cg}");
    check_fields("containerd-cri", "containerd stopped", &ev, &want, &says, f);
    c.start_daemon();
    assert!(agent.get("/healthz").contains("200"), "agent alive");
}

/// `oomwatch_oom_kills_total` summed over the series that carry every label in `labels`.
fn kills_with(metrics: &str, labels: &[String]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("oomwatch_oom_kills_total{")?;
            let (ls, value) = rest.split_once("} ")?;
            let has = labels.iter().all(|w| ls.split(',').any(|x| x == w));
            has.then(|| value.trim().parse().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
