//! The tools the deploy checks run: kubectl, promtool, python3 with kubernetes-validate and
//! PyYAML (found, and installed when missing, by `cargo xtask deploy`; node/npm are looked up by
//! `render`).

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use super::{FACTS_PY, STEP};

/// Where each tool is.
pub struct Tools {
    pub kubectl: PathBuf,
    pub python: PathBuf,
    pub promtool: PathBuf,
}

impl Tools {
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
