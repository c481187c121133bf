//! The agent in a container, for real: the image `cargo xtask image` built
//! (`target/image/oomwatch-oci.tar`, or `OOMWATCH_IMAGE`) imported into our own containerd and
//! run through the CRI as kubelet runs the DaemonSet's pod, with exactly the security context,
//! arguments, resources and hostPath mounts parsed from `deploy/kubernetes/daemonset.yaml`
//! (so manifest and test cannot drift): its own network namespace (a CNI bridge of ours), no
//! host PID namespace. It must attach its probes, record a real kill in another pod with full
//! identity, serve `/metrics` and `/healthz`, and exit 0 on StopContainer.
mod common;
mod cri;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::runtime::{kernel_oom_kills, tools_or_skip};
use common::{real_kernel_or_skip, TestCgroup};
use cri::{Containerd, Pod};
use k8s_cri::v1 as c;
use serde_yaml::Value;

const MIB: i64 = 1 << 20;

fn image_archive() -> Option<PathBuf> {
    let tar = std::env::var_os("OOMWATCH_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/oomwatch-oci.tar")
        });
    if tar.is_file() {
        return Some(tar);
    }
    oomwatch_testkit::skip(format!(
        "needs the agent's image {} (cargo xtask image; cargo xtask test builds it)",
        tar.display()
    ));
    None
}

/// The DaemonSet's pod spec.
fn pod_spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let ds: Value = serde_yaml::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    ds["spec"]["template"]["spec"].clone()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The container's security context, as kubelet translates the manifest's for the CRI.
fn security_context(spec: &Value) -> c::LinuxContainerSecurityContext {
    let ctr = &spec["containers"][0];
    let sc = &ctr["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    let seccomp = spec["securityContext"]["seccompProfile"]["type"].as_str();
    assert_eq!(
        seccomp,
        Some("RuntimeDefault"),
        "the manifest's seccomp profile"
    );
    assert_eq!(spec["hostPID"].as_bool(), Some(false));
    assert_eq!(spec["hostNetwork"].as_bool(), Some(false));
    c::LinuxContainerSecurityContext {
        capabilities: Some(c::Capability {
            add_capabilities: strs(&sc["capabilities"]["add"]),
            drop_capabilities: strs(&sc["capabilities"]["drop"]),
            ..Default::default()
        }),
        privileged: false,
        namespace_options: Some(c::NamespaceOption {
            network: c::NamespaceMode::Pod as i32,
            pid: c::NamespaceMode::Container as i32,
            ipc: c::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        run_as_user: sc["runAsUser"]
            .as_i64()
            .map(|value| c::Int64Value { value }),
        run_as_group: sc["runAsGroup"]
            .as_i64()
            .map(|value| c::Int64Value { value }),
        readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap(),
        no_new_privs: !sc["allowPrivilegeEscalation"].as_bool().unwrap(),
        seccomp: Some(c::SecurityProfile {
            profile_type: c::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        ..Default::default()
    }
}

/// The manifest's volumeMounts joined with its hostPath volumes; `remap` turns a host path of
/// the manifest into this test's (our containerd's state dir, our agent state dir).
fn mounts(spec: &Value, remap: &dyn Fn(&str) -> PathBuf) -> Vec<c::Mount> {
    let volumes: HashMap<String, String> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            (name, v["hostPath"]["path"].as_str().unwrap().to_owned())
        })
        .collect();
    spec["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let host = &volumes[m["name"].as_str().unwrap()];
            c::Mount {
                container_path: m["mountPath"].as_str().unwrap().to_owned(),
                host_path: remap(host).to_string_lossy().into_owned(),
                readonly: m["readOnly"].as_bool().unwrap_or(false),
                ..Default::default()
            }
        })
        .collect()
}

/// The manifest's args with `$(NODE_NAME)` expanded as kubelet does.
fn args(spec: &Value) -> Vec<String> {
    strs(&spec["containers"][0]["args"])
        .into_iter()
        .map(|a| a.replace("$(NODE_NAME)", "cri-node"))
        .collect()
}

fn memory_limit(spec: &Value) -> i64 {
    let l = spec["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap();
    l.strip_suffix("Mi").unwrap().parse::<i64>().unwrap() * MIB
}

fn http(ip: &str, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&format!("{ip}:9837").parse().ok()?, Duration::from_secs(2))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The agent's stdout events, from the CRI container log (`<time> stdout F <line>`).
fn events(log: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_, stream, _, text) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (stream == "stdout")
                .then(|| serde_json::from_str(text).ok())
                .flatten()
        })
        .collect()
}

fn wait_until<T>(what: &str, timeout: Duration, log: &Path, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what} within {timeout:?}; agent log:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn agent_runs_under_the_daemonsets_security_context_through_the_cri() {
    if !real_kernel_or_skip() || !tools_or_skip(&["containerd", "ctr", "runc", "ip"]) {
        return;
    }
    let Some(tar) = image_archive() else { return };
    let spec = pod_spec();
    let mut cd = Containerd::start();
    cd.import_archive(&tar);
    let image = spec["containers"][0]["image"].as_str().unwrap().to_owned();
    let state = cd.dir().join("agent-state");
    let empty = cd.dir().join("empty");
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(&empty).unwrap();
    let cd_state = cd.state();
    let remap = |host: &str| -> PathBuf {
        if let Some(rest) = host.strip_prefix("/run/containerd/") {
            let p = cd_state.join(rest);
            fs::create_dir_all(&p).unwrap();
            return p;
        }
        if host == "/var/lib/oomwatch" {
            return state.clone();
        }
        if Path::new(host).exists() {
            PathBuf::from(host)
        } else {
            empty.clone()
        }
    };
    let agent_pod = Pod {
        name: "oomwatch-x7k2p".into(),
        namespace: "oomwatch".into(),
        uid: format!("5e0a1b2c-3d4e-4f50-8a6b-{:012x}", std::process::id()),
        qos: "",
    };
    let pod_cg = agent_pod.cgroup(&cd.cgroup_root);
    fs::create_dir_all(TestCgroup::mount().join(pod_cg.trim_start_matches('/'))).unwrap();
    let mut sandbox_config = agent_pod.config(&cd.cgroup_root, cd.dir());
    if let Some(l) = sandbox_config.linux.as_mut() {
        l.security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .network = c::NamespaceMode::Pod as i32;
        l.security_context.as_mut().unwrap().seccomp = Some(c::SecurityProfile {
            profile_type: c::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
    }
    let sandbox = cd.run_pod_config(sandbox_config.clone());
    let config = c::ContainerConfig {
        metadata: Some(c::ContainerMetadata {
            name: "oomwatch".into(),
            attempt: 0,
        }),
        image: Some(c::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        args: args(&spec),
        envs: vec![c::KeyValue {
            key: "NODE_NAME".into(),
            value: "cri-node".into(),
        }],
        mounts: mounts(&spec, &remap),
        log_path: "oomwatch/0.log".into(),
        labels: HashMap::from([(
            "io.kubernetes.container.name".to_owned(),
            "oomwatch".to_owned(),
        )]),
        linux: Some(c::LinuxContainerConfig {
            resources: Some(c::LinuxContainerResources {
                memory_limit_in_bytes: memory_limit(&spec),
                cpu_shares: 102,
                cpu_period: 100_000,
                cpu_quota: 10_000,
                ..Default::default()
            }),
            security_context: Some(security_context(&spec)),
        }),
        ..Default::default()
    };
    let agent = cd.run_container_config(&sandbox, config, sandbox_config);
    let log = PathBuf::from(&agent_pod.config(&cd.cgroup_root, cd.dir()).log_directory)
        .join("oomwatch/0.log");
    let ip = cd
        .sandbox_status(&sandbox)
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(!ip.is_empty(), "the agent's pod has no IP");
    let health = wait_until(
        "/healthz answers 200",
        Duration::from_secs(60),
        &log,
        || http(&ip, "/healthz").filter(|b| b.starts_with("HTTP/1.1 200")),
    );
    eprintln!(
        "agent pod {ip}: /healthz {}",
        health.lines().next().unwrap_or("")
    );
    // A kill in another pod.
    let victim = Pod {
        name: "cart".into(),
        namespace: "shop".into(),
        uid: format!("6f1b2c3d-4e5f-4a61-9b7c-{:012x}", std::process::id()),
        qos: "burstable",
    };
    let vcg = victim.cgroup(&cd.cgroup_root);
    fs::create_dir_all(TestCgroup::mount().join(vcg.trim_start_matches('/'))).unwrap();
    let vsb = cd.run_pod(&victim);
    let id = cd.run_container(
        &victim,
        &vsb,
        "worker",
        0,
        Some(32 * MIB),
        "tail /dev/zero; exec sleep 600",
    );
    let cg = format!("{vcg}/{id}");
    let ev = wait_until(
        "the kill's event in the agent's log",
        Duration::from_secs(30),
        &log,
        || {
            events(&log)
                .into_iter()
                .find(|e| e["cgroup"] == cg.as_str())
        },
    );
    assert_eq!(kernel_oom_kills(&cg), 1);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("probes ready; waiting for OOM kills"),
        "{text}"
    );
    // The runtime's device cgroup denies open(/dev/kmsg) to a non-privileged container (a
    // hostPath mount of a device grants no device access): the agent reads the log with
    // syslog(2) (CAP_SYSLOG) instead, and the kernel's OOM report gives the context.
    let kmsg = if ev["oom_domain"] == "container" && ev["constraint"] == "CONSTRAINT_MEMCG" {
        "PASS"
    } else {
        "FAIL"
    };
    let why = text
        .lines()
        .find(|l| l.contains("/dev/kmsg"))
        .unwrap_or("no line about /dev/kmsg");
    eprintln!(
        "TABLE | containerd-cri (agent in DaemonSet context) | OOM context from the kernel log | oom_domain={} constraint={} oom_memcg={} | kernel: CONSTRAINT_MEMCG in {cg}; agent: {why} | {kmsg}",
        ev["oom_domain"], ev["constraint"], ev["oom_memcg"]
    );
    assert_eq!(
        kmsg, "PASS",
        "the OOM context in the container: {ev}\n{text}"
    );
    assert_eq!(ev["oom_memcg"], cg.as_str(), "{ev}");
    cd.stop_container(&id);
    let st = cd.container_status(&id);
    assert_eq!(st.reason, "OOMKilled");
    for (k, v) in [
        ("namespace", "shop"),
        ("pod", "cart"),
        ("container", "worker"),
        ("container_id", id.as_str()),
        ("container_runtime", "containerd"),
        ("qos_class", "burstable"),
        ("host", "cri-node"),
    ] {
        assert_eq!(ev[k], v, "{k} in {ev}");
    }
    assert_eq!(ev["pod_uid"], victim.uid.as_str());
    eprintln!("TABLE | containerd-cri (agent in DaemonSet context) | kill in pod shop/cart | namespace={} pod={} container={} container_id={} runtime={} qos={} domain={} | CRI reason={} | PASS", ev["namespace"], ev["pod"], ev["container"], &id[..12], ev["container_runtime"], ev["qos_class"], ev["oom_domain"], st.reason);
    let metrics = http(&ip, "/metrics").unwrap();
    assert!(
        metrics.contains("oomwatch_oom_kills_total{") && metrics.contains("pod=\"cart\""),
        "{metrics}"
    );
    cd.stop_container_grace(&agent, 10);
    let st = cd.container_status(&agent);
    assert_eq!(
        st.exit_code,
        0,
        "the agent's exit on StopContainer; log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
