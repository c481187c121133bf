//! `cargo xtask deploy`: the harness of the `oomwatch-deploy-check` crate (`deploy/check/`,
//! every check of `deploy/`): kubectl, promtool and python3 with kubernetes-validate and PyYAML
//! found, else installed (apt-get, pip), then the checks run into `target/deploy-check/`.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use oomwatch_deploy_check::{Tools, KUBERNETES_VALIDATE};

use crate::util::{self, run};

const STEP: &str = "deploy";

pub fn check() -> Result<()> {
    let tools = ensure_tools()?;
    let work = crate::target_dir().join("deploy-check");
    oomwatch_deploy_check::check(&util::repo_root(), &work, &tools)
}

/// kubectl, promtool and python3 with kubernetes-validate: found, else installed.
fn ensure_tools() -> Result<Tools> {
    let kubectl = ensure_apt_tool("kubectl", "kubernetes-client")?;
    let promtool = ensure_apt_tool("promtool", "prometheus")?;
    let python = util::find_on_path("python3").with_context(|| {
        format!(
            "[{STEP}] python3 not found on PATH; install Python 3 (as root: apt-get install -y \
             python3 python3-pip) and run again"
        )
    })?;
    let tools = Tools {
        kubectl,
        python,
        promtool,
    };
    ensure_kubernetes_validate(&tools)?;
    for (what, out) in [
        (
            "kubectl",
            util::probe(&tools.kubectl, &["version", "--client"]),
        ),
        (
            "kubernetes-validate",
            util::probe(&tools.python, &["-m", "kubernetes_validate", "--version"]),
        ),
        ("promtool", util::probe(&tools.promtool, &["--version"])),
    ] {
        let line = out
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default();
        eprintln!("[{STEP}] {what}: {line}");
    }
    Ok(tools)
}

/// `python3 -c 'import kubernetes_validate, yaml'`, else `pip install kubernetes-validate`.
fn ensure_kubernetes_validate(tools: &Tools) -> Result<()> {
    let importable = || {
        util::probe(&tools.python, &["-c", "import kubernetes_validate, yaml"])
            .is_some_and(|o| o.status.success())
    };
    if importable() {
        return Ok(());
    }
    eprintln!("[{STEP}] kubernetes-validate: missing, installing {KUBERNETES_VALIDATE}");
    let mut pip = Command::new(&tools.python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]);
    run(STEP, &mut pip).with_context(|| {
        format!(
            "[{STEP}] installing {KUBERNETES_VALIDATE} with {} failed; install it by hand \
             (`python3 -m pip install {KUBERNETES_VALIDATE}`, or in a virtualenv whose python3 \
             is first on PATH) and run again",
            tools.python.display()
        )
    })?;
    if !importable() {
        bail!(
            "[{STEP}] {KUBERNETES_VALIDATE} was installed but `{} -c 'import \
             kubernetes_validate, yaml'` still fails; check that pip and python3 belong to the \
             same Python",
            tools.python.display()
        );
    }
    Ok(())
}

/// `name` on PATH, else (as root) `apt-get install -y package`.
fn ensure_apt_tool(name: &str, package: &str) -> Result<PathBuf> {
    util::ensure_apt_tool(
        STEP,
        name,
        &[package],
        &format!(
            "[{STEP}] apt-get install {package} failed; if another package owns the {name} path \
             (for example Google's `kubectl` package with a broken symlink), repair or remove that \
             package, or put a working {name} on PATH"
        ),
    )
}
