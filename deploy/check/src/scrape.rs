//! Checks that the Service and the PodMonitor select the agent's pods and its metrics port, with
//! the job label the alerting rules expect.

use super::{
    facts::{fail, is_true, ok, verdict, Check, Facts},
    manifest::metrics_port,
    JOB,
};

fn pod_labels(f: &Facts) -> Vec<(String, String)> {
    f.all("pod.label")
        .map(|l| (l[0].clone(), l.get(1).cloned().unwrap_or_default()))
        .collect()
}

pub(super) fn check_service(f: &Facts) -> Check {
    let name = "Service selects the agent pods";
    let labels = pod_labels(f);
    let Some((_, number)) = metrics_port(f) else {
        return fail(name, "no container port named `metrics`");
    };
    let services: Vec<&[String]> = f.all("svc").collect();
    if services.is_empty() {
        return ok(name, "no Service in this kustomization");
    }
    let mut problems = Vec::new();
    for svc in services {
        let svc_name = svc[0].as_str();
        for sel in f.all("svc.selector").filter(|s| s[0] == svc_name) {
            let pair = (sel[1].clone(), sel.get(2).cloned().unwrap_or_default());
            if !labels.contains(&pair) {
                problems.push(format!(
                    "Service {svc_name} selects {}={} but the pods have no such label; fix: use \
                     the pod template's labels",
                    pair.0, pair.1
                ));
            }
        }
        let port_ok = f.all("svc.port").any(|p| {
            p[0] == svc_name
                && p.get(1).is_some_and(|n| n == "metrics")
                && p.get(3).is_some_and(|t| t == "metrics" || *t == number)
        });
        if !port_ok {
            problems.push(format!(
                "Service {svc_name} has no port named metrics targeting the container's metrics \
                 port; fix: ports: [{{name: metrics, port: {number}, targetPort: metrics}}]"
            ));
        }
    }
    verdict(name, problems, "")
}

pub(super) fn check_podmonitor(f: &Facts) -> Check {
    let name = "PodMonitor matches the DaemonSet";
    let monitors: Vec<&[String]> = f.all("pm").collect();
    if monitors.is_empty() {
        return ok(name, "no PodMonitor in this kustomization");
    }
    let labels = pod_labels(f);
    let ds_namespace = f
        .all("object")
        .find(|r| r.get(1).is_some_and(|k| k == "DaemonSet"))
        .and_then(|r| r.get(2))
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    for pm in monitors {
        let (pm_name, namespace, job_label) = (
            pm[0].as_str(),
            pm.get(1).map_or("", String::as_str),
            pm.get(2).map_or("", String::as_str),
        );
        if namespace != ds_namespace {
            problems.push(format!(
                "PodMonitor {pm_name} is in namespace {namespace:?}, the DaemonSet in \
                 {ds_namespace:?}; fix: keep both in one namespace (a PodMonitor selects pods of its \
                 own namespace)"
            ));
        }
        selector_problems(f, pm_name, &labels, &mut problems);
        match labels.iter().find(|(k, _)| k == job_label) {
            Some((_, job)) if job == JOB => {}
            found => problems.push(format!(
                "PodMonitor {pm_name} has jobLabel {job_label:?}, which gives job={:?}; the \
                 alerting rules select job=\"{JOB}\"; fix: jobLabel: app.kubernetes.io/name (pod \
                 label value {JOB})",
                found.map_or("<namespace>/<name>", |(_, v)| v.as_str())
            )),
        }
        endpoint_problems(f, pm_name, &mut problems);
    }
    verdict(name, problems, format!("job={JOB}, honorLabels"))
}

/// The PodMonitor's selector must select the pods by their labels.
fn selector_problems(
    f: &Facts,
    pm_name: &str,
    labels: &[(String, String)],
    problems: &mut Vec<String>,
) {
    let selectors: Vec<&[String]> = f.all("pm.selector").filter(|s| s[0] == pm_name).collect();
    if selectors.is_empty() {
        problems.push(format!(
            "PodMonitor {pm_name} has no selector.matchLabels; fix: select \
             app.kubernetes.io/name: oomwatch"
        ));
    }
    for sel in selectors {
        let pair = (sel[1].clone(), sel.get(2).cloned().unwrap_or_default());
        if !labels.contains(&pair) {
            problems.push(format!(
                "PodMonitor {pm_name} selects {}={} but the pods have no such label; fix: use \
                 the pod template's labels",
                pair.0, pair.1
            ));
        }
    }
}

/// The PodMonitor's endpoints: a declared port, /metrics, honorLabels.
fn endpoint_problems(f: &Facts, pm_name: &str, problems: &mut Vec<String>) {
    let port_names: Vec<&str> = f
        .all("c.port")
        .filter_map(|p| p.get(1).map(String::as_str))
        .collect();
    let endpoints: Vec<&[String]> = f.all("pm.endpoint").filter(|e| e[0] == pm_name).collect();
    if endpoints.is_empty() {
        problems.push(format!("PodMonitor {pm_name} has no podMetricsEndpoints"));
    }
    for ep in endpoints {
        let port = ep.get(1).map_or("", String::as_str);
        if !port_names.contains(&port) {
            problems.push(format!(
                "PodMonitor {pm_name} scrapes port {port:?}, which no container declares; fix: \
                 port: metrics"
            ));
        }
        if ep.get(2).map_or("", String::as_str) != "/metrics" {
            problems.push(format!("PodMonitor {pm_name}: fix: path: /metrics"));
        }
        if !is_true(ep.get(3).map(String::as_str)) {
            problems.push(format!(
                "PodMonitor {pm_name} lacks honorLabels: true, so the victims' namespace/pod/ \
                 container labels would be replaced by the agent pod's; fix: honorLabels: true"
            ));
        }
    }
}
