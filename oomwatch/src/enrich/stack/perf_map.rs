//! JIT runtimes' perf maps (`/tmp/perf-<pid>.map`: one `START SIZE name` line per compiled
//! function, written by V8 with `--perf-basic-prof`, by the JVM's perf agents, by CPython 3.12's
//! `-X perf`, ...): the names of user frames in anonymous executable memory, which no ELF file
//! describes. The runtime writes the file in its own `/tmp` and names it after the pid it sees
//! itself as; the agent looks through `/proc/<pid>/root` while the process lives, and in the
//! host's `/tmp` after (a containerised runtime's file is then out of reach).
//!
//! The file is the workload's: read at most [`MAX_BYTES`], a name kept at most [`MAX_NAME`]
//! bytes, malformed lines skipped; only names come from it.
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Most bytes read of one perf map.
const MAX_BYTES: u64 = 64 << 20;
/// Longest name kept (V8's include the script's path).
const MAX_NAME: usize = 256;

/// Where the perf map of process `tgid` may be, most specific first.
pub fn candidates(host_root: &Path, tgid: i32) -> Vec<PathBuf> {
    let proc = host_root.join(format!("proc/{tgid}"));
    let mut out = Vec::new();
    if let Some(ns) = ns_tgid(&proc.join("status")) {
        out.push(proc.join(format!("root/tmp/perf-{ns}.map")));
    }
    out.push(host_root.join(format!("tmp/perf-{tgid}.map")));
    out
}

/// The process's pid in its own namespace (`NSpid`'s last field).
fn ns_tgid(status: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The name (and the offset into it) of each of `addrs` the first readable perf map of
/// `files` knows: the last entry that covers the address (code can be moved or replaced, and
/// its new entry is appended).
pub fn lookup(files: &[PathBuf], addrs: &[u64]) -> Vec<Option<(String, u64)>> {
    let mut found = vec![None; addrs.len()];
    let Some(file) = files.iter().find_map(|p| open_regular(p)) else {
        return found;
    };
    let reader = BufReader::new(file.take(MAX_BYTES));
    for line in reader.split(b'\n').map_while(Result::ok) {
        let Some((start, size, name)) = parse(&line) else {
            continue;
        };
        for (slot, a) in found.iter_mut().zip(addrs) {
            if *a >= start && *a - start < size {
                *slot = Some((name.clone(), *a - start));
            }
        }
    }
    found
}

/// A regular file (never a FIFO or a device named like a perf map).
fn open_regular(p: &Path) -> Option<std::fs::File> {
    let meta = std::fs::metadata(p).ok()?;
    meta.is_file()
        .then(|| std::fs::File::open(p).ok())
        .flatten()
}

/// `START SIZE name` (hexadecimal, an optional `0x`).
fn parse(line: &[u8]) -> Option<(u64, u64, String)> {
    let text = String::from_utf8_lossy(line);
    let mut w = text.trim_end().splitn(3, ' ');
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (start, size) = (hex(w.next()?)?, hex(w.next()?)?);
    let name = w.next()?.trim();
    if name.is_empty() || size == 0 {
        return None;
    }
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some((start, size, name[..end].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entry_covering_an_address_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("perf-1.map");
        let long = "x".repeat(1000);
        std::fs::write(
            &p,
            format!(
                "7f0000001000 100 JS:*leakyCacheInsert file:///app.js:2:26\n\
                 garbage line\n\
                 0x7f0000002000 0x40 JS:~serveRequest file:///app.js:7\n\
                 7f0000001000 80 JS:*leakyCacheInsert (reoptimized)\n\
                 7f0000009000 10 {long}\n\
                 zz 10 bad\n7f000000a000 0 empty\n"
            ),
        )
        .unwrap();
        let got = lookup(
            &[dir.path().join("missing.map"), p],
            &[
                0x7f00_0000_1010,
                0x7f00_0000_10f0,
                0x7f00_0000_2004,
                0x7f00_0000_9000,
                0x5,
            ],
        );
        assert_eq!(
            got[0],
            Some(("JS:*leakyCacheInsert (reoptimized)".into(), 0x10))
        );
        assert_eq!(
            got[1],
            Some(("JS:*leakyCacheInsert file:///app.js:2:26".into(), 0xf0))
        );
        assert_eq!(
            got[2],
            Some(("JS:~serveRequest file:///app.js:7".into(), 4))
        );
        assert_eq!(got[3].as_ref().unwrap().0.len(), MAX_NAME);
        assert_eq!(got[4], None);
    }

    #[test]
    fn a_fifo_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("perf-2.map");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(lookup(&[p], &[1]), vec![None]);
    }
}
