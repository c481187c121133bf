//! Checks of the rendered DaemonSet: security context, capabilities, host mounts, scheduling,
//! probes, resources, arguments and image.

use std::collections::BTreeSet;

use super::{
    facts::{fail, is_true, ok, parse_quantity, verdict, Check, Facts},
    scrape::{check_podmonitor, check_service},
    HOST_ROOT, IMAGE_REPO, STATE_DIR,
};

/// All checks of one rendered kustomization.
pub(super) fn manifest_checks(f: &Facts, expected_caps: &[&str], version: &str) -> Vec<Check> {
    let daemonsets: Vec<&[String]> = f
        .all("object")
        .filter(|r| r.get(1).is_some_and(|k| k == "DaemonSet"))
        .collect();
    if daemonsets.len() != 1 {
        return vec![fail(
            "one DaemonSet",
            format!(
                "found {} DaemonSets; fix: keep exactly one (daemonset.yaml) in the kustomization",
                daemonsets.len()
            ),
        )];
    }
    let containers: Vec<&str> = f
        .all("container")
        .chain(f.all("initContainer"))
        .filter_map(|r| r.first().map(String::as_str))
        .collect();
    if containers.is_empty() {
        return vec![fail(
            "containers",
            "the DaemonSet has no container; fix: restore daemonset.yaml",
        )];
    }
    vec![
        check_not_privileged(f, &containers),
        check_capabilities(f, &containers, expected_caps),
        check_host_paths(f),
        check_priority_and_tolerations(f),
        check_probes(f),
        check_guaranteed(f, &containers),
        check_host_namespaces_and_token(f),
        check_seccomp_and_user(f, &containers),
        check_args(f),
        check_image(f, version),
        check_service(f),
        check_podmonitor(f),
    ]
}

fn check_not_privileged(f: &Facts, containers: &[&str]) -> Check {
    let mut problems = Vec::new();
    for c in containers {
        if is_true(f.keyed("c.privileged", c, 1)) {
            problems.push(format!(
                "container {c} has privileged: true; fix: remove it from daemonset.yaml (the \
                 agent needs only the capabilities listed there)"
            ));
        }
        if f.keyed("c.allowPrivilegeEscalation", c, 1) != Some("false") {
            problems.push(format!(
                "container {c} lacks allowPrivilegeEscalation: false; fix: set it in its \
                 securityContext (no_new_privs)"
            ));
        }
        if !is_true(f.keyed("c.readOnlyRootFilesystem", c, 1)) {
            problems.push(format!(
                "container {c} lacks readOnlyRootFilesystem: true; fix: set it (the agent writes \
                 only to {STATE_DIR})"
            ));
        }
    }
    verdict(
        "not privileged, no privilege escalation, read-only root filesystem",
        problems,
        "",
    )
}

fn check_capabilities(f: &Facts, containers: &[&str], expected: &[&str]) -> Check {
    let mut problems = Vec::new();
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    for c in containers {
        let drop = f.keyed("c.capDrop", c, 1).unwrap_or("");
        if !drop.split(',').any(|d| d == "ALL") {
            problems.push(format!(
                "container {c} does not drop ALL capabilities (drop: [{drop}]); fix: \
                 capabilities.drop: [ALL]"
            ));
        }
        let add = f.keyed("c.capAdd", c, 1).unwrap_or("");
        let have: BTreeSet<&str> = add.split(',').filter(|s| !s.is_empty()).collect();
        if have != want {
            let extra: Vec<&str> = have.difference(&want).copied().collect();
            let missing: Vec<&str> = want.difference(&have).copied().collect();
            problems.push(format!(
                "container {c} adds [{add}], expected exactly [{}] (extra: [{}], missing: [{}]); \
                 fix: capabilities.add in the DaemonSet (or the overlay's capabilities.yaml); a \
                 new capability needs its reason in deploy/kubernetes/README.md and in \
                 deploy/check/src/lib.rs",
                expected.join(", "),
                extra.join(", "),
                missing.join(", ")
            ));
        }
    }
    verdict(
        "capabilities",
        problems,
        format!("drop ALL, add {}", expected.join(" ")),
    )
}

fn check_host_paths(f: &Facts) -> Check {
    let mut problems = Vec::new();
    let mut read_only = 0;
    let mut state_mounted = false;
    for hp in f.all("pod.hostPath") {
        let (volume, path) = (hp[0].as_str(), hp.get(1).map_or("", String::as_str));
        let mounts: Vec<&[String]> = f
            .all("c.mount")
            .filter(|m| m.get(1).is_some_and(|v| v == volume))
            .collect();
        for m in mounts {
            let (container, mount_path) = (m[0].as_str(), m.get(2).map_or("", String::as_str));
            let ro = is_true(m.get(3).map(String::as_str));
            if path == STATE_DIR {
                state_mounted |= !ro;
                continue;
            }
            if ro {
                read_only += 1;
            } else {
                problems.push(format!(
                    "hostPath {path} (volume {volume}) is mounted writable at {mount_path} in \
                     container {container}; fix: add readOnly: true to that volumeMount (only \
                     {STATE_DIR} may be writable)"
                ));
            }
        }
    }
    if !state_mounted {
        problems.push(format!(
            "no writable hostPath mount of {STATE_DIR} (the agent's --state-dir); fix: restore the \
             `state` volume (hostPath {STATE_DIR}, type DirectoryOrCreate) and its mount"
        ));
    }
    verdict(
        "hostPath mounts read-only",
        problems,
        format!("{read_only} read-only, {STATE_DIR} writable"),
    )
}

fn check_priority_and_tolerations(f: &Facts) -> Check {
    let mut problems = Vec::new();
    let priority = f.value("pod.priorityClassName").unwrap_or("");
    if priority != "system-node-critical" {
        problems.push(format!(
            "priorityClassName is {priority:?}; fix: priorityClassName: system-node-critical (the \
             agent must run, and stay, on nodes under memory pressure)"
        ));
    }
    // Rows: key, operator, value, effect.
    let tolerates_all = f.all("pod.toleration").any(|t| {
        t.first().is_none_or(|k| k.is_empty())
            && t.get(1).is_some_and(|o| o == "Exists")
            && t.get(3).is_none_or(|e| e.is_empty())
    });
    if !tolerates_all {
        problems.push(
            "no toleration {operator: Exists} without key and effect; fix: add it to \
             tolerations so that tainted nodes get an agent too"
                .to_string(),
        );
    }
    verdict(
        "priority system-node-critical, tolerates every taint",
        problems,
        "",
    )
}

/// The container port named `metrics`, as (container, number).
pub(super) fn metrics_port(f: &Facts) -> Option<(String, String)> {
    f.all("c.port")
        .find(|p| p.get(1).is_some_and(|n| n == "metrics"))
        .map(|p| (p[0].clone(), p.get(2).cloned().unwrap_or_default()))
}

fn check_probes(f: &Facts) -> Check {
    let mut problems = Vec::new();
    let Some((container, number)) = metrics_port(f) else {
        return fail(
            "liveness and readiness probes",
            "no container port named `metrics`; fix: ports: [{name: metrics, containerPort: \
             9837}]",
        );
    };
    for probe in ["c.livenessProbe", "c.readinessProbe"] {
        let what = probe.trim_start_matches("c.");
        match f.all(probe).find(|r| r[0] == container) {
            None => problems.push(format!(
                "container {container} has no {what}; fix: add {what}: httpGet {{path: /healthz, \
                 port: metrics}}"
            )),
            Some(r) => {
                let path = r.get(1).map_or("", String::as_str);
                let port = r.get(2).map_or("", String::as_str);
                if path != "/healthz" || (port != "metrics" && port != number) {
                    problems.push(format!(
                        "{what} of {container} is GET {path:?} on port {port:?}; fix: httpGet \
                         {{path: /healthz, port: metrics}}"
                    ));
                }
            }
        }
    }
    verdict(
        "liveness and readiness probes",
        problems,
        "GET /healthz on port metrics",
    )
}

fn check_guaranteed(f: &Facts, containers: &[&str]) -> Check {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    for c in containers {
        for resource in ["cpu", "memory"] {
            let get = |kind: &str| {
                f.all("c.resource")
                    .find(|r| {
                        r[0] == *c
                            && r.get(1).is_some_and(|k| k == kind)
                            && r.get(2).is_some_and(|n| n == resource)
                    })
                    .and_then(|r| r.get(3).cloned())
            };
            match (get("requests"), get("limits")) {
                (Some(req), Some(lim)) => {
                    let equal = match (parse_quantity(&req), parse_quantity(&lim)) {
                        (Some(a), Some(b)) => a == b,
                        _ => req == lim,
                    };
                    if equal {
                        summary.push(format!("{resource} {lim}"));
                    } else {
                        problems.push(format!(
                            "container {c}: {resource} request {req} != limit {lim}; fix: make \
                             them equal (Guaranteed QoS gives the agent oom_score_adj -997)"
                        ));
                    }
                }
                (req, lim) => problems.push(format!(
                    "container {c}: {resource} request {} and limit {} must both be set and \
                     equal; fix: set resources.requests.{resource} = resources.limits.{resource}",
                    req.as_deref().unwrap_or("unset"),
                    lim.as_deref().unwrap_or("unset")
                )),
            }
        }
    }
    verdict(
        "Guaranteed QoS (requests == limits)",
        problems,
        summary.join(", "),
    )
}

fn check_host_namespaces_and_token(f: &Facts) -> Check {
    let mut problems = Vec::new();
    for ns in ["hostPID", "hostNetwork", "hostIPC"] {
        if is_true(f.value(&format!("pod.{ns}"))) {
            problems.push(format!(
                "{ns}: true; fix: remove it (the agent reads the host through /host mounts)"
            ));
        }
    }
    let pod_token = f.value("pod.automountServiceAccountToken");
    let sa = f.value("pod.serviceAccountName").unwrap_or("");
    let sa_token = f.keyed("sa", sa, 1);
    if pod_token == Some("true") || (pod_token != Some("false") && sa_token != Some("false")) {
        problems.push(
            "the pod would get a service-account token; fix: automountServiceAccountToken: false \
             (the agent never calls the Kubernetes API)"
                .to_string(),
        );
    }
    verdict(
        "no host PID/network/IPC namespace, no API token",
        problems,
        "",
    )
}

fn check_seccomp_and_user(f: &Facts, containers: &[&str]) -> Check {
    let mut problems = Vec::new();
    let pod_seccomp = f.value("pod.seccomp").filter(|s| !s.is_empty());
    for c in containers {
        let seccomp = f
            .keyed("c.seccomp", c, 1)
            .filter(|s| !s.is_empty())
            .or(pod_seccomp);
        if seccomp != Some("RuntimeDefault") {
            problems.push(format!(
                "container {c} runs with seccomp {:?}; fix: securityContext.seccompProfile.type: \
                 RuntimeDefault (it allows bpf/perf_event_open with CAP_BPF/CAP_PERFMON; see \
                 deploy/kubernetes/README.md)",
                seccomp.unwrap_or("unset (Unconfined by default)")
            ));
        }
        let uid = f.keyed("c.runAsUser", c, 1).unwrap_or("");
        if uid != "0" || is_true(f.keyed("c.runAsNonRoot", c, 1)) {
            problems.push(format!(
                "container {c}: runAsUser {uid:?}, runAsNonRoot {:?}; fix: runAsUser: 0 with \
                 runAsNonRoot: false (a non-root process loses the added capabilities at exec)",
                f.keyed("c.runAsNonRoot", c, 1).unwrap_or("")
            ));
        }
    }
    verdict(
        "seccomp RuntimeDefault, root limited by capabilities",
        problems,
        "",
    )
}

fn check_args(f: &Facts) -> Check {
    let mut problems = Vec::new();
    let Some((container, port)) = metrics_port(f) else {
        return fail("agent arguments", "no container port named `metrics`");
    };
    let args: Vec<&str> = f
        .all("c.arg")
        .filter(|a| a[0] == container)
        .filter_map(|a| a.get(1).map(String::as_str))
        .collect();
    for want in [
        format!("--host-root={HOST_ROOT}"),
        format!("--state-dir={STATE_DIR}"),
        format!("--listen=0.0.0.0:{port}"),
        "--log-format=json".to_string(),
        "--host=$(NODE_NAME)".to_string(),
    ] {
        if !args.contains(&want.as_str()) {
            problems.push(format!(
                "container {container} lacks the argument {want} (has: {}); fix: add it to args",
                args.join(" ")
            ));
        }
    }
    let node_name = f
        .all("c.env")
        .find(|e| e[0] == container && e.get(1).is_some_and(|n| n == "NODE_NAME"));
    if node_name.and_then(|e| e.get(3)).map(String::as_str) != Some("spec.nodeName") {
        problems.push(
            "env NODE_NAME is not taken from the downward API; fix: env NODE_NAME valueFrom \
             fieldRef fieldPath: spec.nodeName"
                .to_string(),
        );
    }
    // Host directories are read below --host-root: each mount there must mirror its host path.
    for hp in f.all("pod.hostPath") {
        let (volume, path) = (hp[0].as_str(), hp.get(1).map_or("", String::as_str));
        for m in f
            .all("c.mount")
            .filter(|m| m.get(1).is_some_and(|v| v == volume))
        {
            let mount_path = m.get(2).map_or("", String::as_str);
            if mount_path.starts_with(&format!("{HOST_ROOT}/"))
                && mount_path != format!("{HOST_ROOT}{path}")
            {
                problems.push(format!(
                    "hostPath {path} is mounted at {mount_path}, but the agent looks for it at \
                     {HOST_ROOT}{path} (--host-root={HOST_ROOT}); fix: mountPath: \
                     {HOST_ROOT}{path}"
                ));
            }
        }
    }
    verdict("agent arguments", problems, args.join(" "))
}

fn check_image(f: &Facts, version: &str) -> Check {
    let want = format!("{IMAGE_REPO}:{version}");
    let images: Vec<&str> = f
        .all("container")
        .filter_map(|c| c.get(1).map(String::as_str))
        .collect();
    let bad: Vec<&str> = images.iter().copied().filter(|i| *i != want).collect();
    if bad.is_empty() {
        ok("image", want)
    } else {
        fail(
            "image",
            format!(
                "image {} is not {want} (the workspace version is {version}); fix: set newTag: \
                 {version} under images: in deploy/kubernetes/kustomization.yaml and the tag in \
                 daemonset.yaml",
                bad.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    //! Tests of the DaemonSet, Service and PodMonitor checks on hand-written facts.
    //! `cargo xtask deploy` runs them all on the real rendered manifests.

    use super::*;
    use crate::{
        test_support::{assert_one_failure, facts, failures},
        BASE_CAPS, OVERLAYS,
    };

    /// Facts of a correct base, as `deploy/check/facts.py` prints them (`|` stands for a tab).
    const GOOD: &str = "\
object|v1|Namespace||oomwatch
object|v1|ServiceAccount|oomwatch|oomwatch
sa|oomwatch|false
object|v1|Service|oomwatch|oomwatch
svc|oomwatch|None
svc.selector|oomwatch|app.kubernetes.io/name|oomwatch
svc.port|oomwatch|metrics|9837|metrics
object|apps/v1|DaemonSet|oomwatch|oomwatch
pod.label|app.kubernetes.io/name|oomwatch
pod.hostPID|false
pod.hostNetwork|false
pod.hostIPC|
pod.priorityClassName|system-node-critical
pod.serviceAccountName|oomwatch
pod.automountServiceAccountToken|false
pod.seccomp|RuntimeDefault
pod.toleration||Exists||
pod.hostPath|tracefs|/sys/kernel/tracing|Directory
pod.hostPath|cgroup|/sys/fs/cgroup|Directory
pod.hostPath|proc|/proc|Directory
pod.hostPath|state|/var/lib/oomwatch|DirectoryOrCreate
container|oomwatch|ghcr.io/oomwatch/oomwatch:0.1.0
c.privileged|oomwatch|false
c.allowPrivilegeEscalation|oomwatch|false
c.readOnlyRootFilesystem|oomwatch|true
c.runAsUser|oomwatch|0
c.runAsNonRoot|oomwatch|false
c.seccomp|oomwatch|
c.capDrop|oomwatch|ALL
c.capAdd|oomwatch|BPF,PERFMON,SYSLOG
c.mount|oomwatch|tracefs|/sys/kernel/tracing|true
c.mount|oomwatch|cgroup|/host/sys/fs/cgroup|true
c.mount|oomwatch|proc|/host/proc|true
c.mount|oomwatch|state|/var/lib/oomwatch|
c.port|oomwatch|metrics|9837
c.arg|oomwatch|run
c.arg|oomwatch|--host-root=/host
c.arg|oomwatch|--state-dir=/var/lib/oomwatch
c.arg|oomwatch|--listen=0.0.0.0:9837
c.arg|oomwatch|--log-format=json
c.arg|oomwatch|--host=$(NODE_NAME)
c.env|oomwatch|NODE_NAME||spec.nodeName
c.livenessProbe|oomwatch|/healthz|metrics
c.readinessProbe|oomwatch|/healthz|metrics
c.resource|oomwatch|requests|cpu|100m
c.resource|oomwatch|requests|memory|64Mi
c.resource|oomwatch|limits|cpu|100m
c.resource|oomwatch|limits|memory|64Mi
object|monitoring.coreos.com/v1|PodMonitor|oomwatch|oomwatch
pm|oomwatch|oomwatch|app.kubernetes.io/name
pm.selector|oomwatch|app.kubernetes.io/name|oomwatch
pm.endpoint|oomwatch|metrics|/metrics|true
";

    /// GOOD with one line replaced (`from` must occur).
    fn mutated(from: &str, to: &str) -> Facts {
        assert!(GOOD.contains(from), "{from:?} is not in GOOD");
        facts(&GOOD.replacen(from, to, 1))
    }

    fn checks_of(f: &Facts) -> Vec<Check> {
        manifest_checks(f, BASE_CAPS, "0.1.0")
    }

    /// GOOD with `from` replaced by `to` fails one check, whose message has every needle.
    fn fails(from: &str, to: &str, needles: &[&str]) {
        assert_one_failure(&checks_of(&mutated(from, to)), needles);
    }

    fn passes(f: &Facts) {
        assert_eq!(failures(&checks_of(f)), Vec::<String>::new());
    }

    #[test]
    fn a_correct_base_passes_every_check() {
        let checks = checks_of(&facts(GOOD));
        assert_eq!(failures(&checks), Vec::<String>::new());
        assert!(checks.len() >= 12);
    }

    #[test]
    fn privileged_and_escalation_fail() {
        fails(
            "c.privileged|oomwatch|false",
            "c.privileged|oomwatch|true",
            &["privileged: true"],
        );
        fails(
            "c.allowPrivilegeEscalation|oomwatch|false",
            "c.allowPrivilegeEscalation|oomwatch|",
            &["allowPrivilegeEscalation: false"],
        );
        fails(
            "c.readOnlyRootFilesystem|oomwatch|true",
            "c.readOnlyRootFilesystem|oomwatch|false",
            &["readOnlyRootFilesystem"],
        );
    }

    #[test]
    fn capabilities_must_be_exactly_the_expected_set() {
        fails(
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG",
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG,SYS_ADMIN",
            &["extra: [SYS_ADMIN]", "missing: []"],
        );
        fails(
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG",
            "c.capAdd|oomwatch|BPF",
            &["missing: [PERFMON, SYSLOG]"],
        );
        fails(
            "c.capDrop|oomwatch|ALL",
            "c.capDrop|oomwatch|NET_RAW",
            &["drop ALL"],
        );
        // The overlays' sets are checked the same way, order aside.
        let legacy = mutated(
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG",
            "c.capAdd|oomwatch|SYSLOG,SYS_RESOURCE,SYS_ADMIN",
        );
        let checks = manifest_checks(&legacy, OVERLAYS[0].1, "0.1.0");
        assert_eq!(failures(&checks), Vec::<String>::new());
    }

    #[test]
    fn only_the_state_dir_may_be_writable() {
        fails(
            "c.mount|oomwatch|proc|/host/proc|true",
            "c.mount|oomwatch|proc|/host/proc|",
            &["hostPath /proc", "readOnly: true"],
        );
        fails(
            "c.mount|oomwatch|state|/var/lib/oomwatch|",
            "c.mount|oomwatch|state|/var/lib/oomwatch|true",
            &["no writable hostPath mount of /var/lib/oomwatch"],
        );
    }

    #[test]
    fn priority_and_toleration_are_required() {
        fails(
            "pod.priorityClassName|system-node-critical",
            "pod.priorityClassName|",
            &["system-node-critical"],
        );
        fails(
            "pod.toleration||Exists||",
            "pod.toleration|node-role.kubernetes.io/control-plane|Exists||NoSchedule",
            &["operator: Exists"],
        );
    }

    #[test]
    fn probes_must_get_healthz_on_the_metrics_port() {
        fails(
            "c.livenessProbe|oomwatch|/healthz|metrics",
            "c.livenessProbe|oomwatch|/metrics|metrics",
            &["livenessProbe", "/metrics"],
        );
        // The port may be given by number.
        let by_number = mutated(
            "c.readinessProbe|oomwatch|/healthz|metrics",
            "c.readinessProbe|oomwatch|/healthz|9837",
        );
        passes(&by_number);
        fails(
            "c.readinessProbe|oomwatch|/healthz|metrics\n",
            "",
            &["no readinessProbe"],
        );
    }

    #[test]
    fn requests_must_equal_limits() {
        fails(
            "c.resource|oomwatch|limits|memory|64Mi",
            "c.resource|oomwatch|limits|memory|128Mi",
            &["memory request 64Mi != limit 128Mi", "Guaranteed"],
        );
        fails(
            "c.resource|oomwatch|limits|cpu|100m\n",
            "",
            &["cpu request 100m and limit unset"],
        );
        // Equal quantities in other notations are equal.
        let same = facts(
            &GOOD
                .replace("limits|cpu|100m", "limits|cpu|0.1")
                .replace("limits|memory|64Mi", "limits|memory|67108864"),
        );
        passes(&same);
    }

    #[test]
    fn root_must_not_be_combined_with_run_as_non_root() {
        fails(
            "c.runAsNonRoot|oomwatch|false",
            "c.runAsNonRoot|oomwatch|true",
            &["runAsNonRoot", "runAsUser: 0"],
        );
        fails(
            "pod.seccomp|RuntimeDefault",
            "pod.seccomp|",
            &["seccomp", "RuntimeDefault"],
        );
    }

    #[test]
    fn host_namespaces_and_tokens_fail() {
        fails("pod.hostPID|false", "pod.hostPID|true", &["hostPID: true"]);
        // The ServiceAccount's false is enough when the pod says nothing...
        let sa_only = mutated(
            "pod.automountServiceAccountToken|false",
            "pod.automountServiceAccountToken|",
        );
        passes(&sa_only);
        // ...but not when neither does.
        let neither = facts(
            &GOOD
                .replace(
                    "pod.automountServiceAccountToken|false",
                    "pod.automountServiceAccountToken|",
                )
                .replace("sa|oomwatch|false", "sa|oomwatch|"),
        );
        assert_one_failure(&checks_of(&neither), &["service-account token"]);
    }

    #[test]
    fn arguments_and_host_mounts_must_agree() {
        fails(
            "c.arg|oomwatch|--host-root=/host",
            "c.arg|oomwatch|--host-root=/",
            &["--host-root=/host"],
        );
        fails(
            "c.mount|oomwatch|cgroup|/host/sys/fs/cgroup|true",
            "c.mount|oomwatch|cgroup|/host/cgroup|true",
            &["/host/sys/fs/cgroup"],
        );
        fails(
            "c.env|oomwatch|NODE_NAME||spec.nodeName",
            "c.env|oomwatch|NODE_NAME|node-1|",
            &["spec.nodeName"],
        );
    }

    #[test]
    fn the_image_tag_follows_the_workspace_version() {
        assert_one_failure(
            &manifest_checks(&facts(GOOD), BASE_CAPS, "0.2.0"),
            &["ghcr.io/oomwatch/oomwatch:0.2.0", "newTag"],
        );
    }

    #[test]
    fn the_podmonitor_must_match_the_daemonset() {
        fails(
            "pm.endpoint|oomwatch|metrics|/metrics|true",
            "pm.endpoint|oomwatch|metrics|/metrics|",
            &["honorLabels: true"],
        );
        fails(
            "pm.endpoint|oomwatch|metrics|/metrics|true",
            "pm.endpoint|oomwatch|http|/metrics|true",
            &["port \"http\""],
        );
        fails(
            "pm|oomwatch|oomwatch|app.kubernetes.io/name",
            "pm|oomwatch|oomwatch|",
            &["jobLabel", "job=\"oomwatch\""],
        );
        fails(
            "pm.selector|oomwatch|app.kubernetes.io/name|oomwatch",
            "pm.selector|oomwatch|app|oomwatch",
            &["selects app=oomwatch"],
        );
    }

    #[test]
    fn exactly_one_daemonset_is_expected() {
        let none = facts(&GOOD.replace("object|apps/v1|DaemonSet|oomwatch|oomwatch\n", ""));
        assert_one_failure(&checks_of(&none), &["found 0 DaemonSets"]);
    }
}
