//! One boot of a `vm-test` guest: QEMU (TCG, two NUMA nodes; `qemu-system-x86_64`, or
//! `qemu-system-aarch64 -M virt` for arm64) with the kernel and the initramfs, its serial
//! console copied to a log file and collected, lines the guest's `/init` marks `OWVM: ` echoed
//! as they come.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{arch::Arch, kernel::Kernel, STEP};
use crate::util;

/// The guest's run takes about a minute once its agents are ready (x86-64; arm64's emulation is
/// slower); they may take up to `oomwatch_guest::script::READY_SECS` (a verifier refusing a program at its
/// complexity limit).
pub fn boot_timeout(arch: Arch) -> Duration {
    let run = match arch {
        Arch::X86_64 => 180,
        Arch::Arm64 => 600,
    };
    Duration::from_secs(oomwatch_guest::script::READY_SECS + run)
}

/// QEMU's `cpus=` of `n` CPUs: `0`, `0-1`.
fn cpu_range(n: u32) -> String {
    match n {
        0 | 1 => "0".into(),
        n => format!("0-{}", n - 1),
    }
}

/// What one boot gave.
pub struct Boot {
    /// QEMU's exit status; `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// Seconds from start to power-off (or the kill).
    pub secs: f64,
    /// The serial console's text.
    pub console: String,
}

/// QEMU booting `k` with `initrd`, its serial console on stdout.
fn command(k: &Kernel, initrd: &Path) -> Command {
    let mut cmd = Command::new(k.arch.qemu());
    cmd.args(k.arch.qemu_machine())
        .args(["-m", "512M", "-smp"])
        .arg(k.arch.cpus().to_string())
        .arg("-nographic")
        // Two NUMA nodes of 256M (the second without a CPU), so that the `c` phase can confine
        // a task to node 1 with a cpuset and make a CONSTRAINT_CPUSET OOM.
        .args(["-object", "memory-backend-ram,id=n0,size=256M"])
        .arg("-numa")
        .arg(format!(
            "node,nodeid=0,cpus={},memdev=n0",
            cpu_range(k.arch.cpus())
        ))
        .args(["-object", "memory-backend-ram,id=n1,size=256M"])
        .args(["-numa", "node,nodeid=1,memdev=n1"])
        .args(["-no-reboot", "-kernel"])
        .arg(&k.image)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 quiet", k.arch.console()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

/// Boot `k` with `initrd`; the console is also written to `log_path`.
pub fn boot(k: &Kernel, initrd: &Path, log_path: &Path) -> Result<Boot> {
    let qemu = k.arch.qemu();
    let timeout = boot_timeout(k.arch);
    let mut cmd = command(k, initrd);
    eprintln!(
        "[{STEP}] booting {} ({}), timeout {}s: $ {}",
        k.label,
        k.version,
        timeout.as_secs(),
        util::describe(&cmd)
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("[vm] cannot start {qemu}"))?;
    let stdout = child.stdout.take().context("[vm] qemu stdout")?;
    let mut log = fs::File::create(log_path)
        .with_context(|| format!("[vm] cannot create {}", log_path.display()))?;
    let label = k.label;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let mut lines = BufReader::new(stdout).split(b'\n');
        while let Some(Ok(bytes)) = lines.next() {
            let line = String::from_utf8_lossy(&bytes);
            let _ = writeln!(log, "{}", line.trim_end_matches('\r'));
            // The first one follows the firmware's terminal escapes on the same line.
            if let Some((_, msg)) = line.trim_end().split_once("OWVM: ") {
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
        if started.elapsed() > timeout {
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

    Ok(Boot {
        status,
        secs: boot_secs,
        console: text,
    })
}

#[cfg(test)]
mod tests {
    use super::cpu_range;

    #[test]
    fn numa_node_0_holds_every_cpu() {
        assert_eq!(cpu_range(1), "0");
        assert_eq!(cpu_range(2), "0-1");
    }
}
