//! Small helpers shared by the xtask steps: printing and running commands,
//! locating the repository and cargo, and detecting root.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// Root of the repository (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// The cargo that is running xtask (the one from `env CARGO`), falling back to `cargo` on PATH.
pub fn host_cargo() -> PathBuf {
    env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// `$CARGO_HOME` if set, else `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cargo"))
}

/// `$CARGO_HOME/bin` (usually `~/.cargo/bin`), where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    cargo_home().map(|h| h.join("bin"))
}

/// PATH with `~/.cargo/bin` prepended (unless already present).
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir() {
        if !dirs.contains(&bin) {
            dirs.insert(0, bin);
        }
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// Effective uid from /proc/self/status (no libc dependency needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Remove every environment variable that cargo sets for the xtask process itself or that
/// would redirect a nested cargo/rustc (wrappers, flags, target dir, rustup toolchain).
/// Registry, network, terminal and home settings (`CARGO_HOME`, `CARGO_NET_*`, ...) are kept.
pub fn scrub_cargo_env(cmd: &mut Command) {
    const EXACT: &[&str] = &[
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        // CARGO_BUILD_TARGET, CARGO_BUILD_TARGET_DIR, CARGO_BUILD_RUSTC*, CARGO_BUILD_RUSTFLAGS, ...
        "CARGO_BUILD_",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
}

pub use oomwatch_testkit::command::{describe, find_on_path, probe, run};

/// `dpkg-query -W -f='${Status}' PKG` says "install ok installed" (exit status 1, "no such
/// package known", and a missing dpkg-query mean not installed).
pub fn dpkg_installed(pkg: &str) -> bool {
    probe("dpkg-query", &["-W", "-f=${Status}", pkg]).is_some_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "install ok installed"
    })
}

/// `apt-get ARGS` that asks nothing (`DEBIAN_FRONTEND=noninteractive`).
pub fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// `apt-get update`, then `apt-get install -y INSTALL_ARGS...`, each printed and checked.
pub fn apt_install(step: &str, install_args: &[&str]) -> Result<()> {
    run(step, &mut apt_get(&["update"])).with_context(|| format!("[{step}] apt-get update"))?;
    let args: Vec<&str> = ["install", "-y"]
        .iter()
        .chain(install_args)
        .copied()
        .collect();
    run(step, &mut apt_get(&args)).with_context(|| format!("[{step}] apt-get install"))
}

/// `name` on PATH, else (as root) Debian's `packages` installed with apt; `on_failure` is added
/// to an install error (what else can be wrong).
pub fn ensure_apt_tool(
    step: &str,
    name: &str,
    packages: &[&str],
    on_failure: &str,
) -> Result<PathBuf> {
    if let Some(p) = find_on_path(name) {
        return Ok(p);
    }
    let list = packages.join(" ");
    if !is_root() {
        bail!(
            "[{step}] {name} not found on PATH; fix: as root run `apt-get update && apt-get \
             install -y {list}` (or run `cargo xtask {step}` as root, which does that)"
        );
    }
    eprintln!("[{step}] {name}: missing, installing Debian's {list}");
    apt_install(step, packages).map_err(|e| match on_failure {
        "" => e,
        why => e.context(why.to_string()),
    })?;
    find_on_path(name)
        .with_context(|| format!("[{step}] {list} installed but {name} is still not on PATH"))
}

/// Packages apt may remove to install [`ensure_packages`]' ones; each is reinstalled from
/// Debian 12 at once. (The machine image carries a backported qemu-utils that Debian 12's qemu
/// conflicts with.)
const REPLACEABLE: [&str; 1] = ["qemu-utils"];

/// Debian's `packages` (`name:arm64` for a foreign architecture's), installed without
/// recommendations when missing (as root), never removing another package but the
/// [`REPLACEABLE`] ones: `vm-test`'s QEMU and the like, the cross toolchain of `cross`.
pub fn ensure_packages(step: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("[{step}] packages {}: installed", packages.join(" "));
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "[{step}] missing Debian packages: {list}; as root run: \
             apt-get install -y --no-install-recommends {list}"
        );
    }
    // Never let apt make room by removing other packages, with one known exception: this kind
    // of machine ships a backported qemu-utils that Debian 12's qemu-system-x86 conflicts with.
    // That one is replaced by Debian 12's own qemu-utils (so qemu-img stays); anything else
    // apt would remove stops the set-up with the command to accept it.
    let removals = would_remove(&missing);
    let replaced: Vec<&String> = removals
        .iter()
        .filter(|r| REPLACEABLE.contains(&r.as_str()))
        .collect();
    if removals.len() != replaced.len() {
        bail!(
            "[{step}] installing {list} would remove {}: not done; to accept that, as root run: \
             apt-get install -y --no-install-recommends {list}",
            removals.join(" ")
        );
    }
    eprintln!("[{step}] installing {list}");
    let started = Instant::now();
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    if replaced.is_empty() {
        args.push("--no-remove");
    }
    args.extend(&missing);
    if run(step, &mut apt_get(&args)).is_err() {
        eprintln!("[{step}] apt-get install failed; updating the package lists and retrying");
        run(step, &mut apt_get(&["update"]))?;
        run(step, &mut apt_get(&args))?;
    }
    for r in &replaced {
        eprintln!("[{step}] {r} (a backport that Debian 12's qemu conflicts with) was removed; installing Debian 12's {r}");
        run(
            step,
            &mut apt_get(&[
                "install",
                "-y",
                "--no-install-recommends",
                "--no-remove",
                r.as_str(),
            ]),
        )?;
    }
    if let Some(p) = missing.iter().find(|p| !dpkg_installed(p)) {
        bail!("[{step}] {p} is still not installed after apt-get install");
    }
    eprintln!(
        "[{step}] installed {list} ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Packages `apt-get install -s` would remove (its `Remv NAME ...` lines).
fn would_remove(packages: &[&str]) -> Vec<String> {
    let mut args = vec!["install", "-s", "--no-install-recommends"];
    args.extend(packages);
    let out = apt_get(&args)
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    removals(&String::from_utf8_lossy(&out))
}

/// The `Remv NAME [VERSION]` lines of `apt-get install -s` output.
fn removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv ")?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_removals_are_found() {
        let sim = "Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                   Inst cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])\n\
                   Conf cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])\n";
        assert_eq!(removals(sim), ["qemu-utils"]);
        assert!(removals("Inst cpio (2.13)\n").is_empty());
    }
}
