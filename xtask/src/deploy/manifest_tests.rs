//! Tests of the DaemonSet, Service and PodMonitor checks on hand-written facts.
//! `cargo xtask deploy` runs them all on the real rendered manifests.

use super::*;
use crate::deploy::{
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
pod.hostPath|kmsg|/dev/kmsg|CharDevice
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
c.mount|oomwatch|kmsg|/dev/kmsg|true
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

#[test]
fn a_correct_base_passes_every_check() {
    let checks = checks_of(&facts(GOOD));
    assert_eq!(failures(&checks), Vec::<String>::new());
    assert!(checks.len() >= 12);
}

#[test]
fn privileged_and_escalation_fail() {
    assert_one_failure(
        &checks_of(&mutated(
            "c.privileged|oomwatch|false",
            "c.privileged|oomwatch|true",
        )),
        &["privileged: true"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.allowPrivilegeEscalation|oomwatch|false",
            "c.allowPrivilegeEscalation|oomwatch|",
        )),
        &["allowPrivilegeEscalation: false"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.readOnlyRootFilesystem|oomwatch|true",
            "c.readOnlyRootFilesystem|oomwatch|false",
        )),
        &["readOnlyRootFilesystem"],
    );
}

#[test]
fn capabilities_must_be_exactly_the_expected_set() {
    assert_one_failure(
        &checks_of(&mutated(
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG",
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG,SYS_ADMIN",
        )),
        &["extra: [SYS_ADMIN]", "missing: []"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.capAdd|oomwatch|BPF,PERFMON,SYSLOG",
            "c.capAdd|oomwatch|BPF",
        )),
        &["missing: [PERFMON, SYSLOG]"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.capDrop|oomwatch|ALL",
            "c.capDrop|oomwatch|NET_RAW",
        )),
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
    assert_one_failure(
        &checks_of(&mutated(
            "c.mount|oomwatch|proc|/host/proc|true",
            "c.mount|oomwatch|proc|/host/proc|",
        )),
        &["hostPath /proc", "readOnly: true"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.mount|oomwatch|state|/var/lib/oomwatch|",
            "c.mount|oomwatch|state|/var/lib/oomwatch|true",
        )),
        &["no writable hostPath mount of /var/lib/oomwatch"],
    );
}

#[test]
fn priority_and_toleration_are_required() {
    assert_one_failure(
        &checks_of(&mutated(
            "pod.priorityClassName|system-node-critical",
            "pod.priorityClassName|",
        )),
        &["system-node-critical"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "pod.toleration||Exists||",
            "pod.toleration|node-role.kubernetes.io/control-plane|Exists||NoSchedule",
        )),
        &["operator: Exists"],
    );
}

#[test]
fn probes_must_get_healthz_on_the_metrics_port() {
    assert_one_failure(
        &checks_of(&mutated(
            "c.livenessProbe|oomwatch|/healthz|metrics",
            "c.livenessProbe|oomwatch|/metrics|metrics",
        )),
        &["livenessProbe", "/metrics"],
    );
    // The port may be given by number.
    let by_number = mutated(
        "c.readinessProbe|oomwatch|/healthz|metrics",
        "c.readinessProbe|oomwatch|/healthz|9837",
    );
    assert_eq!(failures(&checks_of(&by_number)), Vec::<String>::new());
    assert_one_failure(
        &checks_of(&mutated("c.readinessProbe|oomwatch|/healthz|metrics\n", "")),
        &["no readinessProbe"],
    );
}

#[test]
fn requests_must_equal_limits() {
    assert_one_failure(
        &checks_of(&mutated(
            "c.resource|oomwatch|limits|memory|64Mi",
            "c.resource|oomwatch|limits|memory|128Mi",
        )),
        &["memory request 64Mi != limit 128Mi", "Guaranteed"],
    );
    assert_one_failure(
        &checks_of(&mutated("c.resource|oomwatch|limits|cpu|100m\n", "")),
        &["cpu request 100m and limit unset"],
    );
    // Equal quantities in other notations are equal.
    let same = facts(
        &GOOD
            .replace("limits|cpu|100m", "limits|cpu|0.1")
            .replace("limits|memory|64Mi", "limits|memory|67108864"),
    );
    assert_eq!(failures(&checks_of(&same)), Vec::<String>::new());
}

#[test]
fn root_must_not_be_combined_with_run_as_non_root() {
    assert_one_failure(
        &checks_of(&mutated(
            "c.runAsNonRoot|oomwatch|false",
            "c.runAsNonRoot|oomwatch|true",
        )),
        &["runAsNonRoot", "runAsUser: 0"],
    );
    assert_one_failure(
        &checks_of(&mutated("pod.seccomp|RuntimeDefault", "pod.seccomp|")),
        &["seccomp", "RuntimeDefault"],
    );
}

#[test]
fn host_namespaces_and_tokens_fail() {
    assert_one_failure(
        &checks_of(&mutated("pod.hostPID|false", "pod.hostPID|true")),
        &["hostPID: true"],
    );
    // The ServiceAccount's false is enough when the pod says nothing...
    let sa_only = mutated(
        "pod.automountServiceAccountToken|false",
        "pod.automountServiceAccountToken|",
    );
    assert_eq!(failures(&checks_of(&sa_only)), Vec::<String>::new());
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
    assert_one_failure(
        &checks_of(&mutated(
            "c.arg|oomwatch|--host-root=/host",
            "c.arg|oomwatch|--host-root=/",
        )),
        &["--host-root=/host"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.mount|oomwatch|cgroup|/host/sys/fs/cgroup|true",
            "c.mount|oomwatch|cgroup|/host/cgroup|true",
        )),
        &["/host/sys/fs/cgroup"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "c.env|oomwatch|NODE_NAME||spec.nodeName",
            "c.env|oomwatch|NODE_NAME|node-1|",
        )),
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
    assert_one_failure(
        &checks_of(&mutated(
            "pm.endpoint|oomwatch|metrics|/metrics|true",
            "pm.endpoint|oomwatch|metrics|/metrics|",
        )),
        &["honorLabels: true"],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "pm.endpoint|oomwatch|metrics|/metrics|true",
            "pm.endpoint|oomwatch|http|/metrics|true",
        )),
        &["port \"http\""],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "pm|oomwatch|oomwatch|app.kubernetes.io/name",
            "pm|oomwatch|oomwatch|",
        )),
        &["jobLabel", "job=\"oomwatch\""],
    );
    assert_one_failure(
        &checks_of(&mutated(
            "pm.selector|oomwatch|app.kubernetes.io/name|oomwatch",
            "pm.selector|oomwatch|app|oomwatch",
        )),
        &["selects app=oomwatch"],
    );
}

#[test]
fn exactly_one_daemonset_is_expected() {
    let none = facts(&GOOD.replace("object|apps/v1|DaemonSet|oomwatch|oomwatch\n", ""));
    assert_one_failure(&checks_of(&none), &["found 0 DaemonSets"]);
}
