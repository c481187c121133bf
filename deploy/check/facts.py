"""Facts about deploy/ manifests and alerting rules for `cargo xtask deploy` (deploy/check/src/lib.rs).

python3 facts.py facts RENDERED.yaml        tab-separated facts about the objects
python3 facts.py podmonitors RENDERED.yaml  each PodMonitor as one JSON line
python3 facts.py rules RULES.yaml TESTS.yaml alerts and the alert tests that cover them

Needs PyYAML (a dependency of kubernetes-validate). The first field of each fact names its
kind; deploy/check/src/lib.rs reads them.
"""
import json, sys, yaml

def s(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).replace("\t", " ").replace("\n", " ")

def out(*fields):
    print("\t".join(s(f) for f in fields))

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def daemonset(d):
    spec = d.get("spec") or {}
    tpl = spec.get("template") or {}
    pod = tpl.get("spec") or {}
    for k, v in ((tpl.get("metadata") or {}).get("labels") or {}).items():
        out("pod.label", k, v)
    for f in ("hostPID", "hostNetwork", "hostIPC", "priorityClassName", "serviceAccountName",
              "automountServiceAccountToken"):
        out("pod." + f, pod.get(f))
    out("pod.seccomp", ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type"))
    for t in pod.get("tolerations") or []:
        out("pod.toleration", t.get("key"), t.get("operator"), t.get("value"), t.get("effect"))
    for v in pod.get("volumes") or []:
        if "hostPath" in v:
            hp = v.get("hostPath") or {}
            out("pod.hostPath", v.get("name"), hp.get("path"), hp.get("type"))
    for role, cs in (("container", pod.get("containers")), ("initContainer", pod.get("initContainers"))):
        for c in cs or []:
            n = c.get("name")
            out(role, n, c.get("image"))
            sc = c.get("securityContext") or {}
            for f in ("privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem",
                      "runAsUser", "runAsNonRoot"):
                out("c." + f, n, sc.get(f))
            out("c.seccomp", n, (sc.get("seccompProfile") or {}).get("type"))
            caps = sc.get("capabilities") or {}
            out("c.capDrop", n, ",".join(caps.get("drop") or []))
            out("c.capAdd", n, ",".join(caps.get("add") or []))
            for m in c.get("volumeMounts") or []:
                out("c.mount", n, m.get("name"), m.get("mountPath"), m.get("readOnly"))
            for p in c.get("ports") or []:
                out("c.port", n, p.get("name"), p.get("containerPort"))
            for a in c.get("args") or []:
                out("c.arg", n, a)
            for e in c.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                out("c.env", n, e.get("name"), e.get("value"), ref)
            for probe in ("livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if p is not None:
                    g = p.get("httpGet") or {}
                    out("c." + probe, n, g.get("path"), g.get("port"))
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r, q in (res.get(kind) or {}).items():
                    out("c.resource", n, kind, r, q)

def podmonitor(d):
    md = d.get("metadata") or {}
    spec = d.get("spec") or {}
    name = md.get("name")
    out("pm", name, md.get("namespace"), spec.get("jobLabel"))
    for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
        out("pm.selector", name, k, v)
    for ep in spec.get("podMetricsEndpoints") or []:
        out("pm.endpoint", name, ep.get("port"), ep.get("path"), ep.get("honorLabels"))

def service(d):
    md = d.get("metadata") or {}
    spec = d.get("spec") or {}
    name = md.get("name")
    out("svc", name, spec.get("clusterIP"))
    for k, v in (spec.get("selector") or {}).items():
        out("svc.selector", name, k, v)
    for p in spec.get("ports") or []:
        out("svc.port", name, p.get("name"), p.get("port"), p.get("targetPort"))

def facts(path):
    for d in load(path):
        md = d.get("metadata") or {}
        kind = d.get("kind")
        out("object", d.get("apiVersion"), kind, md.get("namespace"), md.get("name"))
        if kind == "DaemonSet":
            daemonset(d)
        elif kind == "PodMonitor":
            podmonitor(d)
        elif kind == "Service":
            service(d)
        elif kind == "ServiceAccount":
            out("sa", md.get("name"), d.get("automountServiceAccountToken"))

def podmonitors(path):
    for d in load(path):
        if d.get("kind") == "PodMonitor":
            print(json.dumps(d))

def rules(rules_path, tests_path):
    with open(rules_path) as f:
        groups = (yaml.safe_load(f) or {}).get("groups") or []
    for g in groups:
        for r in g.get("rules") or []:
            if "alert" in r:
                a = r.get("annotations") or {}
                out("alert", r["alert"], (r.get("labels") or {}).get("severity"),
                    a.get("runbook_url"), bool(a.get("summary")), bool(a.get("description")))
    with open(tests_path) as f:
        tests = (yaml.safe_load(f) or {}).get("tests") or []
    for t in tests:
        for a in t.get("alert_rule_test") or []:
            out("test", a.get("alertname"), "firing" if a.get("exp_alerts") else "quiet")

mode = sys.argv[1]
if mode == "facts":
    facts(sys.argv[2])
elif mode == "podmonitors":
    podmonitors(sys.argv[2])
elif mode == "rules":
    rules(sys.argv[2], sys.argv[3])
else:
    sys.exit("unknown mode " + mode)
