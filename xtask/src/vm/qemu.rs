//! One boot of a `vm-test` guest: QEMU (TCG, two NUMA nodes) with the kernel and the
//! initramfs, its serial console copied to a log file and collected, lines the guest's `/init`
//! marks `OWVM: ` echoed as they come.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{kernel::Kernel, STEP};
use crate::util;

const QEMU: &str = "qemu-system-x86_64";
/// The guest's run takes about a minute once its agents are ready; they may take up to
/// `initramfs::READY_SECS` (a verifier refusing a program at its complexity limit).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(super::initramfs::READY_SECS + 180);

/// What one boot gave.
pub struct Boot {
    /// QEMU's exit status; `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// Seconds from start to power-off (or the kill).
    pub secs: f64,
    /// The serial console's text.
    pub console: String,
}

/// Boot `k` with `initrd`; the console is also written to `log_path`.
pub fn boot(k: &Kernel, initrd: &Path, log_path: &Path) -> Result<Boot> {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-m", "512M", "-smp", "1", "-nographic"])
        // Two NUMA nodes of 256M (the second without a CPU), so that the `c` phase can confine
        // a task to node 1 with a cpuset and make a CONSTRAINT_CPUSET OOM.
        .args(["-object", "memory-backend-ram,id=n0,size=256M"])
        .args(["-numa", "node,nodeid=0,cpus=0,memdev=n0"])
        .args(["-object", "memory-backend-ram,id=n1,size=256M"])
        .args(["-numa", "node,nodeid=1,memdev=n1"])
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

    Ok(Boot {
        status,
        secs: boot_secs,
        console: text,
    })
}
