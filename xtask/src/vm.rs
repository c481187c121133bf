//! `cargo xtask vm-test [--kernel 6.1|6.12|all] [--keep]`: boot Debian's 6.1 and 6.12 cloud
//! kernels in QEMU (TCG) with the release agent in a busybox initramfs, cause memory-cgroup OOM
//! kills (single victims and a `memory.oom.group` kill) on cgroup v2, and check the agent's
//! events against the kernel's own log. Downloads are cached under `target/vm/`.

#[path = "vm_check.rs"]
mod vm_check;
#[path = "vm_check_oom.rs"]
mod vm_check_oom;
#[path = "vm_initramfs.rs"]
mod vm_initramfs;
#[path = "vm_json.rs"]
mod vm_json;
#[path = "vm_kernel.rs"]
mod vm_kernel;
#[path = "vm_parse.rs"]
mod vm_parse;

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;
use vm_check::Check;
use vm_kernel::{ensure_packages, fetch_kernel, Kernel, SERIES};

const STEP: &str = "vm";
const QEMU: &str = "qemu-system-x86_64";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The result of one guest run.
struct RunResult {
    release: String,
    checks: Vec<Check>,
    boot_secs: f64,
}

pub fn vm_test(which: &str, keep: bool) -> Result<()> {
    let started = Instant::now();
    let vm_dir = crate::target_dir().join("vm");
    fs::create_dir_all(&vm_dir)?;
    ensure_packages()?;

    let t = Instant::now();
    let mut kernels = Vec::new();
    for series in SERIES.iter().filter(|s| which == "all" || which == s.label) {
        kernels.push(fetch_kernel(series, &vm_dir, keep)?);
    }
    if kernels.is_empty() {
        bail!("[{STEP}] unknown --kernel {which:?}: use 6.1, 6.12 or all");
    }
    let download_secs = t.elapsed().as_secs_f64();
    eprintln!("[{STEP}] kernels ready ({download_secs:.1}s)");

    let binary = crate::build(false).context("[vm] step build")?;
    let t = Instant::now();
    let initrd = vm_dir.join("initramfs").join("initrd.cpio.gz");
    let staging = vm_dir.join("initramfs").join("root");
    vm_initramfs::build(&binary, &staging, &initrd)?;
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
            let bad: Vec<&str> = r.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
            (!bad.is_empty()).then(|| format!("{}: {}", r.release, bad.join(", ")))
        })
        .collect();
    if !failed.is_empty() {
        bail!("[{STEP}] FAILED: {}", failed.join("; "));
    }
    eprintln!("[{STEP}] all checks passed on {} kernel(s)", results.len());
    Ok(())
}

/// Step 4 and 5: boot one kernel, capture the serial console, check it.
fn boot_and_check(k: &Kernel, initrd: &Path, vm_dir: &Path) -> Result<RunResult> {
    let release = k
        .package
        .strip_prefix("linux-image-")
        .unwrap_or(&k.package)
        .to_string();
    let out_dir = vm_dir.join(&release);
    fs::create_dir_all(&out_dir)?;
    let log_path = out_dir.join("console.log");
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-m", "512M", "-smp", "1", "-nographic"])
        .args(["-no-reboot", "-kernel"])
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!(
        "[{STEP}] booting {} ({}), timeout {}s: $ {}",
        k.label,
        k.version,
        BOOT_TIMEOUT.as_secs(),
        util::describe(&cmd)
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("[vm] cannot start {QEMU}"))?;
    let stdout = child.stdout.take().context("[vm] qemu stdout")?;
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("[vm] cannot create {}", log_path.display()))?;
    let label = k.label;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let mut lines = BufReader::new(stdout).split(b'\n');
        while let Some(Ok(bytes)) = lines.next() {
            let line = String::from_utf8_lossy(&bytes);
            let _ = writeln!(log, "{}", line.trim_end_matches('\r'));
            if let Some(msg) = line.trim_end().strip_prefix("OWVM: ") {
                eprintln!("[{STEP} {label}] guest: {msg}");
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let boot_secs = started.elapsed().as_secs_f64();
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("[vm] console reader panicked"))?;

    let mut checks = vec![Check {
        name: "qemu",
        ok: status.is_some_and(|s| s.success()),
        detail: match status {
            Some(s) => format!("exited ({s}) after {boot_secs:.1}s"),
            None => format!("killed after the {}s timeout", BOOT_TIMEOUT.as_secs()),
        },
    }];
    checks.extend(vm_check::check_console(&text));
    let uptime = vm_check::guest_uptime(&text)
        .map(|u| format!(", guest uptime {u:.1}s at the end"))
        .unwrap_or_default();
    eprintln!(
        "[{STEP}] {release}: boot to poweroff {boot_secs:.1}s{uptime}; console: {}",
        log_path.display()
    );
    for c in &checks {
        let mut lines = c.detail.lines();
        let first = lines.next().unwrap_or("");
        let verdict = if c.ok { "PASS" } else { "FAIL" };
        eprintln!("[{STEP}]   {verdict}  {:<22} {first}", c.name);
        for more in lines {
            eprintln!("[{STEP}]         {:<22} {more}", "");
        }
    }
    let log_lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let console = vm_parse::Console::parse(&text);
    let agent_log = console
        .sections
        .get("agent-log")
        .cloned()
        .unwrap_or_default();
    for p in vm_parse::agent_problems(&agent_log).iter().take(10) {
        eprintln!("[{STEP}]   agent log: {p}");
    }
    if checks.iter().any(|c| !c.ok) && !console.done {
        eprintln!("[{STEP}]   last console lines:");
        for l in &log_lines[log_lines.len().saturating_sub(30)..] {
            eprintln!("[{STEP}]   | {l}");
        }
    }
    Ok(RunResult {
        release,
        checks,
        boot_secs,
    })
}

/// One column per kernel, one row per check.
fn print_summary(results: &[RunResult]) {
    let Some(first) = results.first() else { return };
    let width = results.iter().map(|r| r.release.len()).max().unwrap_or(4) + 2;
    let mut header = format!("[{STEP}] {:<22}", "summary");
    for r in results {
        header.push_str(&format!("{:<width$}", r.release));
    }
    eprintln!("{header}");
    for (i, c) in first.checks.iter().enumerate() {
        let mut row = format!("[{STEP}] {:<22}", c.name);
        for r in results {
            let v = r
                .checks
                .get(i)
                .map_or("-", |c| if c.ok { "PASS" } else { "FAIL" });
            row.push_str(&format!("{v:<width$}"));
        }
        eprintln!("{row}");
    }
    let mut row = format!("[{STEP}] {:<22}", "boot-to-poweroff");
    for r in results {
        row.push_str(&format!("{:<width$}", format!("{:.1}s", r.boot_secs)));
    }
    eprintln!("{row}");
}
