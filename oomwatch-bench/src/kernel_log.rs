//! The kernel log as the bench sees it: its consoles, and a counter of the records it logs
//! (`KmsgCounter`).
//!
//! The consoles: the OOM killer writes "Killed process ..." at `KERN_ERR`, which is
//! printed synchronously on every console whose log level lets it through, by the task that
//! kills, before `/dev/kmsg` readers are woken. On a slow (serial) console this delays both the
//! ring-buffer wake-up of the agent and the kernel-log line the agent waits for.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    time::Instant,
};

use super::json::J;

#[derive(Clone, Debug, Default)]
pub struct Console {
    /// `/proc/consoles` names (`ttyS0`, `tty0`, ...).
    pub consoles: Vec<String>,
    /// First field of `/proc/sys/kernel/printk`: lines below this level reach the consoles.
    pub loglevel: Option<u32>,
    /// Median time to log one 190-byte line at `KERN_ERR` through `/dev/kmsg` (ms).
    pub err_line_ms: Option<f64>,
    /// The same at `KERN_INFO` (never printed on the console at the usual levels).
    pub info_line_ms: Option<f64>,
}

impl Console {
    /// Reads the console set-up; with `time_writes`, also logs 3 + 3 marked lines to time them.
    pub fn probe(time_writes: bool) -> Console {
        let consoles = std::fs::read_to_string("/proc/consoles")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        let loglevel = std::fs::read_to_string("/proc/sys/kernel/printk")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        let mut c = Console {
            consoles,
            loglevel,
            ..Console::default()
        };
        if time_writes {
            c.err_line_ms = time_line(3);
            c.info_line_ms = time_line(6);
        }
        c
    }

    /// Whether the OOM killer's `KERN_ERR` lines reach a console.
    pub fn err_on_console(&self) -> bool {
        !self.consoles.is_empty() && self.loglevel.is_some_and(|l| l > 3)
    }

    pub fn json(&self) -> J {
        J::obj(vec![
            (
                "consoles",
                J::Arr(self.consoles.iter().map(|c| J::str(c.as_str())).collect()),
            ),
            ("console_loglevel", J::opt(self.loglevel.map(f64::from))),
            ("kern_err_on_console", J::Bool(self.err_on_console())),
            ("kern_err_190_byte_line_ms", J::opt(self.err_line_ms)),
            ("kern_info_190_byte_line_ms", J::opt(self.info_line_ms)),
        ])
    }
}

/// Median of 3 writes of a "Killed process"-sized line at `level` to `/dev/kmsg`, in ms.
fn time_line(level: u8) -> Option<f64> {
    let mut f = OpenOptions::new().write(true).open("/dev/kmsg").ok()?;
    let mut line = format!(
        "<{level}>oomwatch bench: timing one kernel log line as long as an OOM kill's \
         'Killed process' line (level {level}); not an error"
    );
    while line.len() < 190 {
        line.push('.');
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        f.write_all(line.as_bytes()).ok()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Some(times[1])
}

/// Counts what the kernel logs from now on (`/dev/kmsg` opened at its end, read without
/// blocking): tells whether the host was really quiet during an idle window.
pub struct KmsgCounter {
    file: Option<File>,
}

const O_NONBLOCK: i32 = 0o4000;
const SEEK_END: i32 = 2;

extern "C" {
    fn lseek(fd: i32, offset: i64, whence: i32) -> i64;
}

impl KmsgCounter {
    pub fn open() -> KmsgCounter {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open("/dev/kmsg")
            .ok();
        if let Some(f) = &file {
            use std::os::fd::AsRawFd;
            // SAFETY: lseek on a descriptor this struct owns; /dev/kmsg supports SEEK_END.
            unsafe { lseek(f.as_raw_fd(), 0, SEEK_END) };
        }
        KmsgCounter { file }
    }

    /// Records logged since `open` (or the previous call), and how many were OOM kills.
    pub fn count(&mut self) -> (u64, u64) {
        let Some(f) = self.file.as_mut() else {
            return (0, 0);
        };
        let (mut lines, mut kills) = (0, 0);
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    lines += 1;
                    if String::from_utf8_lossy(&buf[..n]).contains("Killed process") {
                        kills += 1;
                    }
                }
                // EPIPE: records were overwritten before being read; go on.
                Err(e) if e.raw_os_error() == Some(32) => continue,
                Err(_) => break,
            }
        }
        (lines, kills)
    }
}

/// `console_loglevel` lowered for as long as this lives (restored on drop, also on error).
///
/// The big-node phase times its storms with it: on a serial console each OOM kill's
/// `KERN_ERR` line is printed with interrupts off on the killing CPU (3.3 ms per line on this
/// bench's VM), which holds up every wake-up aimed at that CPU, the agent's and its HTTP
/// clients' alike. Measured with the agent's own trace: a victim's ring-buffer record reached
/// the agent 2.8 ms after `mark_victim` at p50 with the console printing, 0.08 ms without.
/// That is the console's cost, not the node's or the scrapes', and it would drown the
/// differences the phase looks for.
#[derive(Debug)]
pub struct QuietConsole {
    /// The level before (what drop restores), when it was lowered.
    pub was: Option<u32>,
}

const PRINTK: &str = "/proc/sys/kernel/printk";

impl QuietConsole {
    /// Lowers `console_loglevel` to 1 (only `KERN_EMERG` reaches the consoles). Fails when the
    /// level cannot be read or written (the phase then says so rather than measure the console).
    pub fn start() -> std::io::Result<QuietConsole> {
        let text = std::fs::read_to_string(PRINTK)?;
        let was: u32 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("{PRINTK}: unreadable {text:?}")))?;
        if was <= 1 {
            return Ok(QuietConsole { was: None });
        }
        std::fs::write(PRINTK, "1")?;
        Ok(QuietConsole { was: Some(was) })
    }
}

impl Drop for QuietConsole {
    fn drop(&mut self) {
        if let Some(was) = self.was {
            if let Err(e) = std::fs::write(PRINTK, was.to_string()) {
                eprintln!("[bench] could not restore console_loglevel {was}: {e}");
            }
        }
    }
}
