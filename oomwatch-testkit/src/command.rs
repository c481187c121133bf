//! What the harnesses (`xtask`, `oomwatch-bench`) share about the commands they run and the
//! outputs their tests pin.

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context, Result};

/// A command as a shell-like line, with the environment variables it sets (not `PATH`, which
/// only ever gets `~/.cargo/bin` prepended) and its directory.
pub fn describe(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            if k == "PATH" {
                continue;
            }
            parts.push(format!("{}={}", k.to_string_lossy(), quote(v)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    let mut line = parts.join(" ");
    if let Some(dir) = cmd.get_current_dir() {
        line = format!("(cd {} && {line})", dir.display());
    }
    line
}

/// Prints and runs a command, inheriting stdio; a non-zero exit is an error naming the step.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("[{step}] $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("[{step}] failed to start: {line}"))?;
    if !status.success() {
        bail!("[{step}] command failed ({status}): {line}");
    }
    Ok(())
}

/// Runs a probe command quietly and captures its output (`None` if it could not be started).
pub fn probe(program: impl AsRef<OsStr>, args: &[&str]) -> Option<Output> {
    Command::new(program).args(args).output().ok()
}

/// `name` as the first executable file of that name on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Compares `actual` with `<dir>/<name>` (a test's pinned output); `OOMWATCH_BLESS=1` writes it
/// instead.
pub fn assert_pinned(dir: &Path, name: &str, actual: &str) {
    let path = dir.join(name);
    if std::env::var_os("OOMWATCH_BLESS").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (OOMWATCH_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from {}:\n{actual}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reads_as_a_shell_line() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "a b"]).env("X", "1").current_dir("/r");
        assert_eq!(describe(&cmd), "(cd /r && X=1 cargo test 'a b')");
    }
}
