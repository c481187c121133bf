//! Finding, and installing when missing, the tools the deploy checks run: kubectl, promtool,
//! python3 with kubernetes-validate and PyYAML (and node/npm, looked up by `render`).

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use super::{FACTS_PY, KUBERNETES_VALIDATE, STEP};
use crate::util::{self, run};

pub(super) struct Tools {
    pub(super) kubectl: PathBuf,
    pub(super) python: PathBuf,
    pub(super) promtool: PathBuf,
}

impl Tools {
    pub(super) fn ensure() -> Result<Self> {
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
        tools.ensure_kubernetes_validate()?;
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
    fn ensure_kubernetes_validate(&self) -> Result<()> {
        let importable = || {
            util::probe(&self.python, &["-c", "import kubernetes_validate, yaml"])
                .is_some_and(|o| o.status.success())
        };
        if importable() {
            return Ok(());
        }
        eprintln!("[{STEP}] kubernetes-validate: missing, installing {KUBERNETES_VALIDATE}");
        let mut pip = Command::new(&self.python);
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
                self.python.display()
            )
        })?;
        if !importable() {
            bail!(
                "[{STEP}] {KUBERNETES_VALIDATE} was installed but `{} -c 'import \
                 kubernetes_validate, yaml'` still fails; check that pip and python3 belong to the \
                 same Python",
                self.python.display()
            );
        }
        Ok(())
    }

    /// Runs the embedded PyYAML helper (`FACTS_PY`) and returns its stdout.
    pub(super) fn python_output(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(FACTS_PY)
            .args(args)
            .output()
            .with_context(|| format!("[{STEP}] cannot run {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "[{STEP}] reading {} with PyYAML failed: {}; fix the YAML it names",
                args.get(1).unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
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
