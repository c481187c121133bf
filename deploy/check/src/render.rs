//! Rendering the kustomizations with `kubectl kustomize`, validating them with
//! `kubernetes-validate --strict`, and the PodMonitor against the prometheus-operator types.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{
    path_str, tools::Tools, CRD_KINDS, K8S_VERSIONS, PODMONITOR_MJS, PROM_OPERATOR_MODELS, STEP,
};
use oomwatch_testkit::command::{self as util, run};

/// `kubectl kustomize DIR` into `work/<name>.yaml`.
pub(super) fn render(tools: &Tools, name: &str, dir: &Path, work: &Path) -> Result<PathBuf> {
    let out_file = work.join(format!("{}.yaml", name.replace('/', "-")));
    let mut cmd = Command::new(&tools.kubectl);
    cmd.arg("kustomize").arg(dir);
    eprintln!(
        "[{STEP}] $ {} > {}",
        util::describe(&cmd),
        out_file.display()
    );
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("[{STEP}] cannot run {}", tools.kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "[{STEP}] `kubectl kustomize {}` failed ({}); fix the kustomization it names above. \
             Keep to fields the kustomize v2.0.3 of kubectl <= 1.20 knows: resources (files only), \
             bases (directories), namespace, images, patchesStrategicMerge",
            dir.display(),
            out.status
        );
    }
    fs::write(&out_file, &out.stdout)
        .with_context(|| format!("[{STEP}] writing {}", out_file.display()))?;
    eprintln!("[{STEP}] ok   rendered deploy/{name}");
    Ok(out_file)
}

/// One version's `kubernetes-validate --strict` verdict, from its output.
#[derive(Debug, Default, PartialEq, Eq)]
struct Validation {
    passed: usize,
    /// Kinds without a schema that are checked elsewhere (CRD_KINDS).
    crds: Vec<String>,
    /// Lines that make the validation fail.
    errors: Vec<String>,
}

fn parse_validation(output: &str) -> Validation {
    let mut v = Validation::default();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            v.passed += 1;
        } else if let Some(rest) = line.strip_prefix("WARN ") {
            let kind = rest
                .split("schema for kind ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            match kind {
                Some(k) if CRD_KINDS.contains(&k) => v.crds.push(k.to_string()),
                _ => v.errors.push(line.to_string()),
            }
        } else if line.starts_with("ERROR ") || line.starts_with("FATAL ") {
            v.errors.push(line.to_string());
        }
    }
    v
}

pub(super) fn validate_schemas(tools: &Tools, name: &str, rendered: &Path) -> Result<()> {
    for version in K8S_VERSIONS {
        let mut cmd = Command::new(&tools.python);
        cmd.args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(rendered);
        let out = cmd.output().with_context(|| {
            format!(
                "[{STEP}] cannot run kubernetes-validate with {}",
                tools.python.display()
            )
        })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let v = parse_validation(&text);
        if !out.status.success() || !v.errors.is_empty() || v.passed == 0 {
            let details = if v.errors.is_empty() {
                text.trim().to_string()
            } else {
                v.errors.join("\n  ")
            };
            bail!(
                "[{STEP}] deploy/{name} is not valid for Kubernetes {version} \
                 (`{}`):\n  {details}\nfix: correct the field named after `resource kind/name` in \
                 deploy/{name}. A WARN about a missing schema means an unknown apiVersion/kind \
                 (only {} are expected to have none); fields newer than Kubernetes {} must not be \
                 used in the base",
                util::describe(&cmd),
                CRD_KINDS.join(", "),
                K8S_VERSIONS[0]
            );
        }
        let crds = if v.crds.is_empty() {
            String::new()
        } else {
            format!(
                "; {} has no schema here, checked against the prometheus-operator types below",
                v.crds.join(", ")
            )
        };
        eprintln!(
            "[{STEP}] ok   deploy/{name}: kubernetes-validate --strict {version}: {} objects \
             valid{crds}",
            v.passed
        );
    }
    Ok(())
}

/// Validates the PodMonitors of `rendered` against the prometheus-operator types (npm).
pub(super) fn podmonitor_schema(tools: &Tools, rendered: &Path, work: &Path) -> Result<()> {
    let what = "PodMonitor against the prometheus-operator types";
    let (Some(node), Some(npm)) = (util::find_on_path("node"), util::find_on_path("npm")) else {
        eprintln!(
            "[{STEP}] skip {what}: node or npm not found (install Debian's nodejs and npm to \
             include it); the PodMonitor was still parsed and checked against the DaemonSet"
        );
        return Ok(());
    };
    let dir = work.join("npm");
    fs::create_dir_all(&dir).with_context(|| format!("[{STEP}] creating {}", dir.display()))?;
    let installed = dir.join("node_modules/@kubernetes-models/prometheus-operator/package.json");
    if !installed.is_file() {
        let mut cmd = Command::new(npm);
        cmd.arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .arg(PROM_OPERATOR_MODELS);
        run(STEP, &mut cmd).with_context(|| {
            format!(
                "[{STEP}] npm could not install {PROM_OPERATOR_MODELS}; check access to the npm \
                 registry, or remove {} and run again",
                dir.display()
            )
        })?;
    }
    let script = dir.join("validate-podmonitor.mjs");
    fs::write(&script, PODMONITOR_MJS)
        .with_context(|| format!("[{STEP}] writing {}", script.display()))?;
    let objects = tools.python_output(&["podmonitors", &path_str(rendered)])?;
    if objects.trim().is_empty() {
        bail!(
            "[{STEP}] deploy/kubernetes renders no PodMonitor; fix: keep podmonitor.yaml in \
             deploy/kubernetes/kustomization.yaml (the alerting rules rely on its job label)"
        );
    }
    let mut child = Command::new(node)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("[{STEP}] cannot run node {}", script.display()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(objects.as_bytes())
        .context("[deploy] writing to node")?;
    let out = child
        .wait_with_output()
        .context("[deploy] waiting for node")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "[{STEP}] {what}: {}\nfix: correct deploy/kubernetes/podmonitor.yaml (field names and \
             types of monitoring.coreos.com/v1 PodMonitor)",
            text.trim()
        );
    }
    for line in text.lines() {
        eprintln!("[{STEP}] ok   {what}: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_output_is_classified() {
        let out = "\
INFO f passed for resource namespace/oomwatch against version 1.28
INFO f passed for resource daemonset/oomwatch against version 1.28
WARN f Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1 for kubernetes version 1.28
";
        assert_eq!(
            parse_validation(out),
            Validation {
                passed: 2,
                crds: vec!["PodMonitor".into()],
                errors: vec![],
            }
        );
        // An unknown kind (a typo, or an apiVersion that no longer exists) is an error, not a pass.
        let typo = "WARN f Couldn't find schema for kind DaemonSet with api version apps/v1beta2 for kubernetes version 1.28";
        assert_eq!(parse_validation(typo).errors.len(), 1);
        let error = "ERROR f did not validate for resource daemonset/oomwatch against version 1.28: spec.template.spec.containers.0: Additional properties are not allowed ('bogus' was unexpected)";
        assert_eq!(parse_validation(error).errors, vec![error.to_string()]);
    }
}
