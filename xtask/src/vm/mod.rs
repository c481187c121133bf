//! `cargo xtask vm-test [--kernel 6.1|6.12|all] [--keep] [--prepare-only]`: boot Debian's 6.1
//! and 6.12 cloud kernels in QEMU (TCG) with the release agent in a busybox initramfs, cause
//! memory-cgroup OOM kills (single victims, a `memory.oom.group` kill, multi-threaded victims
//! with their leader alive and exited) on cgroup v2 and a global OOM, and check
//! the events of three agents run side by side (OOM context from fentry, from the kprobe
//! fallback, from the kernel log) against the kernel's own log; each kill's follow-up
//! `oom_kill_lifecycle` line, and a real earlyoom's SIGKILL (Debian's package, unpacked under
//! `target/vm/earlyoom/`) reported with `killer: "earlyoom"`; each of those SIGKILLs' `sigkill`
//! line (sender kind `oom_kernel`, `oom_group` or `oom_userspace`, the kill's `oom_id`).
//! Downloads are cached under `target/vm/`, and so is each kernel's BTF
//! (`target/vm/<release>/vmlinux.btf`, for the offset tests); `--prepare-only` stops after
//! those.
//!
//! The steps, one module each: `kernel` (Debian packages, kernel download) → `btf` (each
//! kernel's BTF) → `initramfs` (busybox, the agent, `init.sh` as the guest's `/init`) → `qemu`
//! (one boot, its serial console) → `console` (the console's sections and kernel lines) →
//! `check` (the boot's checks, and each of the three `agent`s') → `report` (the tables).
//! `earlyoom` fetches the userspace killer the guest runs; `kernels_doc` rewrites
//! `docs/kernels.md` from the last console of each kernel.

mod agent;
mod arm64;
mod btf;
mod check;
mod console;
mod earlyoom;
mod initramfs;
mod kernel;
mod kernels_doc;
mod qemu;
mod report;
pub mod sources;

use std::{fs, path::Path, time::Instant};

use anyhow::{bail, Context, Result};

pub use arm64::vm_test_arm64;
use check::Check;
use kernel::{ensure_packages, fetch_kernel, Kernel, BOOT_PACKAGES, BTF_PACKAGES, SERIES};
use report::{print_run, print_summary, RunResult};

const STEP: &str = "vm";

/// The whole test; with `prepare_only`, only the kernels and their BTF (no build, no boot).
pub fn vm_test(which: &str, keep: bool, prepare_only: bool) -> Result<()> {
    let started = Instant::now();
    let vm_dir = crate::target_dir().join("vm");
    let (kernels, download_secs) = prepare(which, keep, prepare_only, &vm_dir)?;
    if prepare_only {
        // Also Debian's earlyoom, unpacked (never installed): the host's userspace-killer test
        // runs it from target/vm/earlyoom/.
        let earlyoom = earlyoom::fetch(&vm_dir)?;
        eprintln!("[{STEP}] earlyoom: {}", earlyoom.display());
        eprintln!(
            "[{STEP}] prepared {} kernel(s) and their BTF ({:.1}s); nothing built or booted",
            kernels.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let binary = crate::build(false).context("[vm] step build")?;
    let t = Instant::now();
    let initrd = vm_dir.join("initramfs").join("initrd.cpio.gz");
    let staging = vm_dir.join("initramfs").join("root");
    let earlyoom = earlyoom::fetch(&vm_dir)?;
    let threads = build_alloc_threads()?;
    initramfs::build(
        &binary,
        &[earlyoom.as_path(), threads.as_path()],
        &staging,
        &initrd,
    )?;
    if !keep {
        fs::remove_dir_all(&staging)?;
    }
    let initramfs_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "[{STEP}] initramfs {} ({} KiB, {initramfs_secs:.1}s)",
        initrd.display(),
        fs::metadata(&initrd)?.len() / 1024
    );

    let mut results = Vec::new();
    for k in &kernels {
        results.push(boot_and_check(k, &initrd, &vm_dir)?);
    }
    print_summary(&results);
    if let Err(e) = kernels_doc() {
        eprintln!("[{STEP}] docs/kernels.md not rewritten: {e:#}");
    }
    eprintln!(
        "[{STEP}] timings: kernels {download_secs:.1}s, initramfs {initramfs_secs:.1}s, {}, \
         total {:.1}s",
        results
            .iter()
            .map(|r| format!("{} boot-to-poweroff {:.1}s", r.release, r.boot_secs))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let bad = r.report.failed();
            (!bad.is_empty()).then(|| format!("{}: {}", r.release, bad.join(", ")))
        })
        .collect();
    if !failed.is_empty() {
        bail!("[{STEP}] FAILED: {}", failed.join("; "));
    }
    eprintln!("[{STEP}] all checks passed on {} kernel(s)", results.len());
    Ok(())
}

/// `docs/kernels.md` from the last console of each kernel under `target/vm/`.
pub fn kernels_doc() -> Result<()> {
    let doc = crate::util::repo_root().join("docs/kernels.md");
    kernels_doc::write(&crate::target_dir().join("vm"), &doc)?;
    eprintln!(
        "[{STEP}] {} rewritten from the last run of each kernel",
        doc.display()
    );
    Ok(())
}

/// Steps 1 to 3: packages, then each kernel downloaded and extracted, and its BTF dumped.
fn prepare(
    which: &str,
    keep: bool,
    prepare_only: bool,
    vm_dir: &Path,
) -> Result<(Vec<Kernel>, f64)> {
    fs::create_dir_all(vm_dir)?;
    let mut packages = BTF_PACKAGES.to_vec();
    if !prepare_only {
        packages.extend(BOOT_PACKAGES);
    }
    ensure_packages(&packages)?;
    sources::ensure()?;

    let t = Instant::now();
    let mut kernels: Vec<Kernel> = Vec::new();
    for series in SERIES.iter().filter(|s| which == "all" || which == s.label) {
        let kernel = fetch_kernel(series, vm_dir, keep)?;
        // "newest" is one of the others when no newer suite is reachable.
        if let Some(same) = kernels.iter().find(|k| k.package == kernel.package) {
            eprintln!(
                "[{STEP}] kernel {}: {} is kernel {} already; booted once",
                kernel.label, kernel.package, same.label
            );
            continue;
        }
        btf::extract(&kernel, vm_dir)?;
        kernels.push(kernel);
    }
    if kernels.is_empty() {
        bail!("[{STEP}] unknown --kernel {which:?}: use 5.10, 6.1, 6.12, newest or all");
    }
    let download_secs = t.elapsed().as_secs_f64();
    eprintln!("[{STEP}] kernels ready ({download_secs:.1}s)");
    Ok((kernels, download_secs))
}

/// Step 4 and 5: boot one kernel, capture the serial console, check it.
fn boot_and_check(k: &Kernel, initrd: &Path, vm_dir: &Path) -> Result<RunResult> {
    let release = k.release().to_string();
    let out_dir = vm_dir.join(&release);
    fs::create_dir_all(&out_dir)?;
    let log_path = out_dir.join("console.log");
    let boot = qemu::boot(k, initrd, &log_path)?;
    let (text, boot_secs) = (&boot.console, boot.secs);

    let mut report = check::check_console(text);
    report.boot.insert(
        0,
        Check {
            name: "qemu",
            ok: boot.status.is_some_and(|s| s.success()),
            detail: match boot.status {
                Some(s) => format!("exited ({s}) after {boot_secs:.1}s"),
                None => format!("killed after the {}s timeout", qemu::BOOT_TIMEOUT.as_secs()),
            },
            fallback: None,
        },
    );
    let uptime = check::guest_uptime(text)
        .map(|u| format!(", guest uptime {u:.1}s at the end"))
        .unwrap_or_default();
    eprintln!(
        "[{STEP}] {release}: boot to poweroff {boot_secs:.1}s{uptime}; console: {}",
        log_path.display()
    );
    let console = console::Console::parse(text);
    let result = RunResult {
        label: k.label,
        release,
        report,
        boot_secs,
    };
    print_run(&result, &console);
    if !result.report.failed().is_empty() && !console.done {
        let log_lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        eprintln!("[{STEP}]   last console lines:");
        for l in &log_lines[log_lines.len().saturating_sub(30)..] {
            eprintln!("[{STEP}]   | {l}");
        }
    }
    Ok(result)
}

/// `examples/alloc_threads` (release): the multi-threaded victim of the `m` phase.
fn build_alloc_threads() -> Result<std::path::PathBuf> {
    let mut cmd = std::process::Command::new(crate::util::host_cargo());
    cmd.args([
        "build",
        "--release",
        "-p",
        "oomwatch",
        "--example",
        "alloc_threads",
    ])
    .current_dir(crate::util::repo_root());
    crate::util::run("vm", &mut cmd).context("[vm] cargo build --example alloc_threads")?;
    let path = crate::target_dir().join("release/examples/alloc_threads");
    if !path.is_file() {
        anyhow::bail!("[vm] {} missing after the build", path.display());
    }
    Ok(path)
}
