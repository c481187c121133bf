//! The checks of everything under `deploy/`, without a cluster or a container engine; `cargo
//! xtask deploy` runs them once it has found (or installed) the tools they need.
//!
//! 1. Renders the kustomize base `deploy/kubernetes` and the overlays `deploy/overlays/*` with
//!    `kubectl kustomize` (Debian's `kubernetes-client` is installed when kubectl is missing).
//! 2. Validates every rendered object with `kubernetes-validate --strict` against Kubernetes
//!    1.28, 1.30 and 1.32 (PyPI, installed with pip when missing). It has no schema for CRDs:
//!    the PodMonitor is validated against the prometheus-operator types instead (npm package
//!    `@kubernetes-models/prometheus-operator`, generated from the operator's CRDs, when node
//!    and npm exist; otherwise that step says why it is skipped) and, always, checked for
//!    consistency with the DaemonSet it scrapes.
//! 3. Checks properties of the rendered DaemonSet that must not get lost (not privileged, the
//!    exact capability set, read-only hostPaths, Guaranteed QoS, ...). PyYAML (a dependency of
//!    kubernetes-validate) turns the YAML into tab-separated facts that `facts`, `manifest`,
//!    `scrape` and `rules` check.
//! 4. Runs `promtool check rules` and `promtool test rules` on `deploy/prometheus`, and checks
//!    that every alert has a runbook section, a firing test and a quiet test.
//! 5. Checks `deploy/Containerfile` against the repository: the packages and bpf-linker version
//!    of `xtask/src/setup.rs`, xtask subcommands that exist, the agent's binary name, and the
//!    libraries the release binary links against (when it has been built).
//!
//! Every failure says what is wrong and how to fix it. Rendered files are kept in
//! `target/deploy-check/`.
//!
//! Modules: `tools` finds or installs kubectl, kubernetes-validate and promtool; `render` renders
//! with kustomize and validates schemas (kubernetes-validate, the PodMonitor's npm types);
//! `facts` holds the facts about rendered YAML and the check/report helpers; `manifest` checks
//! the DaemonSet, `scrape` the Service and PodMonitor that scrape it; `rules` checks the alerting
//! rules; `containerfile` checks deploy/Containerfile against what `sources` reads from the
//! repository.

mod containerfile;
mod facts;
mod manifest;
mod render;
mod rules;
mod scrape;
mod sources;
#[cfg(test)]
mod test_support;
mod tools;

pub use tools::Tools;

use std::{fs, path::Path, time::Instant};

use anyhow::{bail, Context, Result};

use self::{
    containerfile::containerfile_checks,
    facts::{report, Facts},
    manifest::manifest_checks,
    render::{podmonitor_schema, render, validate_schemas},
    rules::prometheus_rules,
    sources::workspace_version,
};

const STEP: &str = "deploy";

/// Kubernetes versions the manifests must be valid for.
const K8S_VERSIONS: &[&str] = &["1.28", "1.30", "1.32"];
/// Installed with pip (by `cargo xtask deploy`) when the `kubernetes_validate` module is
/// missing.
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// prometheus-operator types (generated from its CRDs) for the PodMonitor, from npm.
const PROM_OPERATOR_MODELS: &str = "@kubernetes-models/prometheus-operator@6.0.0";
/// Kinds kubernetes-validate has no schema for, and that are checked otherwise.
const CRD_KINDS: &[&str] = &["PodMonitor"];

/// The capabilities of the base DaemonSet, and of each overlay.
const BASE_CAPS: &[&str] = &["BPF", "PERFMON", "SYSLOG"];
const OVERLAYS: &[(&str, &[&str])] = &[
    ("legacy-kernel", &["SYS_ADMIN", "SYS_RESOURCE", "SYSLOG"]),
    ("memlock", &["BPF", "PERFMON", "SYSLOG", "SYS_RESOURCE"]),
    ("tls", BASE_CAPS),
];

/// The only hostPath that may be mounted writable: the agent's `--state-dir`.
const STATE_DIR: &str = "/var/lib/oomwatch";
/// Where the host's directories are mounted (`--host-root`).
const HOST_ROOT: &str = "/host";
/// The scrape job the alerting rules select (`up{job="oomwatch"}`).
const JOB: &str = "oomwatch";
const IMAGE_REPO: &str = "ghcr.io/oomwatch/oomwatch";
const RUNBOOK_PREFIX: &str =
    "https://github.com/oomwatch/oomwatch/blob/main/deploy/prometheus/README.md#";
/// Libraries `gcr.io/distroless/cc-debian12` provides (glibc and libgcc).
const DISTROLESS_CC_LIBS: &[&str] = &[
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// Every check of `root`'s `deploy/`, with `tools`, rendering into `work`
/// (`target/deploy-check/`).
pub fn check(root: &Path, work: &Path, tools: &Tools) -> Result<()> {
    let started = Instant::now();
    fs::create_dir_all(work).with_context(|| format!("[{STEP}] creating {}", work.display()))?;
    let version = workspace_version(root)?;

    // (a), (b), (e): the base and each overlay.
    let mut targets = vec![(
        "kubernetes".to_string(),
        root.join("deploy/kubernetes"),
        BASE_CAPS,
    )];
    for (name, caps) in OVERLAYS {
        targets.push((
            format!("overlays/{name}"),
            root.join("deploy/overlays").join(name),
            *caps,
        ));
    }
    // Every overlay must be listed in OVERLAYS, with the capabilities it is meant to grant.
    let overlay_dir = root.join("deploy/overlays");
    let mut unlisted = Vec::new();
    for entry in fs::read_dir(&overlay_dir)
        .with_context(|| format!("[{STEP}] reading {}", overlay_dir.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !OVERLAYS.iter().any(|(o, _)| *o == name) {
            unlisted.push(name);
        }
    }
    if !unlisted.is_empty() {
        bail!(
            "[{STEP}] deploy/overlays/{} is not checked; fix: add it to OVERLAYS in \
             deploy/check/src/lib.rs with the exact capability set it grants",
            unlisted.join(", deploy/overlays/")
        );
    }
    for (name, dir, caps) in &targets {
        let rendered = render(tools, name, dir, work)?;
        validate_schemas(tools, name, &rendered)?;
        let facts = Facts::parse(&tools.python_output(&["facts", &path_str(&rendered)])?);
        let checks = manifest_checks(&facts, caps, &version);
        report(&format!("deploy/{name}"), &checks)?;
        // Each rendering's PodMonitor (the tls overlay's scrapes over https).
        podmonitor_schema(tools, &rendered, work)?;
    }

    // (c)
    prometheus_rules(tools, root)?;

    // (d)
    // The release binary's libraries, when `target/release/oomwatch` is built.
    let target = work.parent().unwrap_or(work);
    let checks = containerfile_checks(root, target);
    report("deploy/Containerfile", &checks)?;

    eprintln!(
        "[{STEP}] all deploy checks passed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The repository this crate is in (`deploy/check/` is two levels below it): the tests read
/// its files.
#[cfg(test)]
fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Helpers in other languages

/// PyYAML helper: `python3 -c FACTS_PY facts FILE | podmonitors FILE | rules RULES TESTS`.
const FACTS_PY: &str = include_str!("../facts.py");

/// Validates PodMonitors (JSON lines on stdin) with `@kubernetes-models/prometheus-operator`.
const PODMONITOR_MJS: &str = include_str!("../validate-podmonitor.mjs");
