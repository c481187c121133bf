//! Kubernetes identity on the real kernel: kubelet-style memory cgroups (systemd and cgroupfs
//! drivers, all three QoS classes, containerd / CRI-O / Docker container cgroups), the
//! runtimes' bundle files under a `--host-root`, and a process OOM-killed in each container.
//! Each event must name the namespace, pod, container, QoS class and OOM domain, checked
//! against the kernel's own record of the kill (`/dev/kmsg`, `memory.oom_control`/`events`).
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const LIMIT: u64 = 48 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    Systemd,
    Cgroupfs,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Runtime {
    Containerd,
    Crio,
    Docker,
}

/// Where the memory limit sits, i.e. the OOM domain the event must report.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LimitAt {
    Container,
    Pod,
    Qos,
    Kubepods,
}

struct Case {
    driver: Driver,
    qos: &'static str,
    runtime: Runtime,
    limit: LimitAt,
    /// The bundle is written after the agent started (not in its start-up cache).
    late_bundle: bool,
}

const CASES: [Case; 6] = [
    Case {
        driver: Driver::Systemd,
        qos: "guaranteed",
        runtime: Runtime::Containerd,
        limit: LimitAt::Container,
        late_bundle: false,
    },
    Case {
        driver: Driver::Systemd,
        qos: "burstable",
        runtime: Runtime::Crio,
        limit: LimitAt::Pod,
        late_bundle: true,
    },
    Case {
        driver: Driver::Systemd,
        qos: "besteffort",
        runtime: Runtime::Docker,
        limit: LimitAt::Qos,
        late_bundle: false,
    },
    Case {
        driver: Driver::Cgroupfs,
        qos: "guaranteed",
        runtime: Runtime::Containerd,
        limit: LimitAt::Kubepods,
        late_bundle: true,
    },
    Case {
        driver: Driver::Cgroupfs,
        qos: "burstable",
        runtime: Runtime::Docker,
        limit: LimitAt::Container,
        late_bundle: false,
    },
    Case {
        driver: Driver::Cgroupfs,
        qos: "besteffort",
        runtime: Runtime::Crio,
        limit: LimitAt::Container,
        late_bundle: false,
    },
];

/// One case's identity: a pod uid and container id unique to this run.
struct Ids {
    uid: String,
    id: String,
    namespace: String,
    pod: String,
    container: String,
}

fn ids(i: usize) -> Ids {
    let p = std::process::id();
    Ids {
        uid: format!("{p:08x}-{i:04x}-4a5b-8c9d-0e1f2a3b4c5d"),
        id: format!("{p:08x}{i:056x}")
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        namespace: format!("team-{i}"),
        pod: format!("web-{i}-7d9f8b6c5-x2x4q"),
        container: format!("app-{i}"),
    }
}

/// The cgroup levels (kubepods, qos, pod, container) below `prefix`, as kubelet and the
/// runtime name them.
fn levels(prefix: &str, c: &Case, ids: &Ids) -> Vec<String> {
    let mut v = vec![prefix.to_string()];
    let push = |v: &mut Vec<String>, name: String| {
        let next = format!("{}/{name}", v.last().unwrap());
        v.push(next);
    };
    match c.driver {
        Driver::Systemd => {
            push(&mut v, "kubepods.slice".into());
            let mut slice = "kubepods".to_string();
            if c.qos != "guaranteed" {
                slice = format!("kubepods-{}", c.qos);
                push(&mut v, format!("{slice}.slice"));
            }
            push(
                &mut v,
                format!("{slice}-pod{}.slice", ids.uid.replace('-', "_")),
            );
            let scope = match c.runtime {
                Runtime::Containerd => format!("cri-containerd-{}.scope", ids.id),
                Runtime::Crio => format!("crio-{}.scope", ids.id),
                Runtime::Docker => format!("docker-{}.scope", ids.id),
            };
            push(&mut v, scope);
        }
        Driver::Cgroupfs => {
            push(&mut v, "kubepods".into());
            if c.qos != "guaranteed" {
                push(&mut v, c.qos.into());
            }
            push(&mut v, format!("pod{}", ids.uid));
            let dir = match c.runtime {
                Runtime::Crio => format!("crio-{}", ids.id),
                _ => ids.id.clone(),
            };
            push(&mut v, dir);
        }
    }
    v
}

/// Writes the runtime's bundle file for the container, in the runtime's own format.
fn write_bundle(root: &Path, c: &Case, ids: &Ids) {
    let oci = |annotations: Value| {
        json!({
            "ociVersion": "1.1.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/app"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "hostname": ids.pod,
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": annotations,
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    };
    let (path, body) = match c.runtime {
        Runtime::Containerd => (
            root.join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
                .join(&ids.id)
                .join("config.json"),
            oci(json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": ids.container,
                "io.kubernetes.cri.sandbox-id": "f".repeat(64),
                "io.kubernetes.cri.sandbox-name": ids.pod,
                "io.kubernetes.cri.sandbox-namespace": ids.namespace,
                "io.kubernetes.cri.sandbox-uid": ids.uid,
                "io.kubernetes.cri.image-name": "registry.k8s.io/app:1.0"
            })),
        ),
        Runtime::Crio => (
            root.join("var/lib/containers/storage/overlay-containers")
                .join(&ids.id)
                .join("userdata/config.json"),
            oci(json!({
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.container.name": ids.container,
                "io.kubernetes.pod.name": ids.pod,
                "io.kubernetes.pod.namespace": ids.namespace,
                "io.kubernetes.pod.uid": ids.uid,
                "io.kubernetes.cri-o.ContainerID": ids.id
            })),
        ),
        Runtime::Docker => (
            root.join("var/lib/docker/containers")
                .join(&ids.id)
                .join("config.v2.json"),
            json!({
                "ID": ids.id,
                "Name": format!("/k8s_{}_{}_{}_{}_0", ids.container, ids.pod, ids.namespace, ids.uid),
                "Config": {
                    "Image": "registry.k8s.io/app:1.0",
                    "Labels": {
                        "io.kubernetes.container.name": ids.container,
                        "io.kubernetes.docker.type": "container",
                        "io.kubernetes.pod.name": ids.pod,
                        "io.kubernetes.pod.namespace": ids.namespace,
                        "io.kubernetes.pod.uid": ids.uid
                    }
                },
                "State": {"Running": true, "Pid": 4242}
            }),
        ),
    };
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
}

/// A host root as a DaemonSet sees it: the host's /proc and /sys below it, and the runtime
/// state directories holding only this test's bundles.
fn host_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    symlink("/proc", root.path().join("proc")).unwrap();
    symlink("/sys", root.path().join("sys")).unwrap();
    root
}

fn expected_domain(l: LimitAt) -> &'static str {
    match l {
        LimitAt::Container => "container",
        LimitAt::Pod => "pod",
        LimitAt::Qos => "qos",
        LimitAt::Kubepods => "kubepods",
    }
}

/// Kills one process in `dir`, retrying while the kernel rate-limits its report header (the
/// OOM context the domain is derived from). Returns the last victim's pid and how many
/// processes were killed (each retry is one more kill the kernel counts).
fn kill_with_report(cg: &TestCgroup) -> (i32, u64) {
    for attempt in 1..=4 {
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (inv, kill) = kmsg.invocation_of(pid, WAIT);
        assert_eq!(kill.pid, pid);
        if !inv.constraint.is_empty() {
            return (pid, attempt);
        }
        eprintln!("kernel report header rate-limited (attempt {attempt}); retrying in 5.5 s");
        thread::sleep(Duration::from_millis(5500));
    }
    panic!("the kernel printed no report header in 4 tries");
}

#[test]
fn every_victim_carries_its_pod_container_qos_and_domain() {
    if !real_kernel_or_skip() {
        return;
    }
    let root = host_root();
    let base = format!("/oomwatch-k8s-{}", std::process::id());
    let mut cgroups: Vec<TestCgroup> = vec![TestCgroup::at(&base, None)];
    let mut containers = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let ids = ids(i);
        let lv = levels(&format!("{base}/case{i}"), c, &ids);
        let limit_level = match (c.limit, c.qos) {
            (LimitAt::Container, _) => lv.len() - 1,
            (LimitAt::Pod, _) => lv.len() - 2,
            (LimitAt::Qos, q) => {
                assert_ne!(q, "guaranteed");
                2
            }
            (LimitAt::Kubepods, _) => 1,
        };
        for (j, path) in lv.iter().enumerate() {
            cgroups.push(TestCgroup::at(path, (j == limit_level).then_some(LIMIT)));
        }
        if !c.late_bundle {
            write_bundle(root.path(), c, &ids);
        }
        containers.push((cgroups.len() - 1, lv[limit_level].clone(), ids));
    }
    let unit_parent = format!("{base}/system.slice");
    cgroups.push(TestCgroup::at(&unit_parent, None));
    cgroups.push(TestCgroup::at(
        &format!("{unit_parent}/oomtest.service"),
        Some(LIMIT),
    ));
    let unit_idx = cgroups.len() - 1;

    let root_arg = root.path().to_str().unwrap().to_string();
    let mut agent = Agent::start(&["--host-root", &root_arg]);
    for (i, c) in CASES.iter().enumerate() {
        if c.late_bundle {
            write_bundle(root.path(), c, &containers[i].2);
        }
    }

    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let (idx, limit_path, ids) = &containers[i];
        let cg = &cgroups[*idx];
        // The kernel counts the kill in the victim's memory cgroup (v1 `memory.oom_control`
        // is local to it; v2 `memory.events` also counts it in every ancestor).
        let before = cg.oom_kills();
        let (pid, kills) = kill_with_report(cg);
        assert_eq!(
            cg.oom_kills(),
            before + kills,
            "kernel count in {}",
            cg.path
        );
        let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
        let want = [
            ("namespace", json!(ids.namespace)),
            ("pod", json!(ids.pod)),
            ("pod_uid", json!(ids.uid)),
            ("container", json!(ids.container)),
            ("container_id", json!(ids.id)),
            (
                "container_runtime",
                json!(match c.runtime {
                    Runtime::Containerd => "containerd",
                    Runtime::Crio => "crio",
                    Runtime::Docker => "docker",
                }),
            ),
            ("qos_class", json!(c.qos)),
            ("oom_domain", json!(expected_domain(c.limit))),
            ("oom_memcg", json!(limit_path)),
            ("cgroup", json!(cg.path)),
            ("systemd_unit", Value::Null),
        ];
        for (field, value) in want {
            if ev[field] != value {
                failures.push(format!(
                    "case {i} {:?}/{}/{:?}: {field} = {} (want {value})",
                    c.driver, c.qos, c.runtime, ev[field]
                ));
            }
        }
        assert_eq!(ev["victim"]["pod"], json!(ids.pod), "{ev}");
        thread::sleep(Duration::from_millis(600));
    }

    // Outside Kubernetes: the systemd unit and slice, a `system` domain.
    let unit = &cgroups[unit_idx];
    let (pid, _) = kill_with_report(unit);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    for (field, value) in [
        ("systemd_unit", json!("oomtest.service")),
        ("systemd_slice", json!("system.slice")),
        ("oom_domain", json!("system")),
        ("pod", Value::Null),
        ("namespace", Value::Null),
        ("qos_class", Value::Null),
    ] {
        if ev[field] != value {
            failures.push(format!("unit case: {field} = {} (want {value})", ev[field]));
        }
    }
    assert!(
        failures.is_empty(),
        "field mismatches:\n{}",
        failures.join("\n")
    );

    // Metrics: one series per container, keyed by names (no container id), with its domain.
    let metrics = agent.get("/metrics");
    for (i, c) in CASES.iter().enumerate() {
        let ids = &containers[i].2;
        let want = format!(
            "oomwatch_oom_kills_total{{cgroup=\"\",comm=\"tail\",constraint=\"CONSTRAINT_MEMCG\",container=\"{}\",namespace=\"{}\",oom_domain=\"{}\",pod=\"{}\"}} 1",
            ids.container,
            ids.namespace,
            expected_domain(c.limit),
            ids.pod
        );
        assert!(
            metrics.lines().any(|l| l == want),
            "missing {want}\n{metrics}"
        );
        assert!(
            !metrics
                .lines()
                .any(|l| l.starts_with("oomwatch_oom_kills_total{") && l.contains(&ids.id)),
            "a container id leaked into a kill series label"
        );
    }
    let unit_series = format!(
        "oomwatch_oom_kills_total{{cgroup=\"{}\",comm=\"tail\",constraint=\"CONSTRAINT_MEMCG\",container=\"\",namespace=\"\",oom_domain=\"system\",pod=\"\"}} 1",
        unit.path
    );
    assert!(
        metrics.lines().any(|l| l == unit_series),
        "missing {unit_series}\n{metrics}"
    );

    drop(agent);
    while let Some(cg) = cgroups.pop() {
        drop(cg);
    }
}
