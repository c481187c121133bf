//! The page size, and helper processes holding touched memory: the test binary re-run with
//! `--exact alloc_helper`. A test binary that uses [`MemoryHolder`] defines
//!
//! ```ignore
//! #[test]
//! fn alloc_helper() {
//!     oomwatch_testkit::mem::hold_memory_if_asked();
//! }
//! ```
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestCgroup;

/// The MiB a re-run test binary holds (see [`hold_memory_if_asked`]).
const HOLD_ENV: &str = "OOMWATCH_TEST_HOLD_MIB";
/// What the re-run binary prints once its memory is touched.
const READY: &str = "oomwatch-test-memory-held";

/// The kernel's page size, `sysconf(_SC_PAGESIZE)`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).expect("sysconf(_SC_PAGESIZE)")
}

/// The body of the `alloc_helper` test: when `OOMWATCH_TEST_HOLD_MIB` names a size in MiB,
/// hold that much touched memory, print the ready line and sleep (the test kills it; the sleep
/// bounds its life if the test dies first). Without the variable it returns at once.
pub fn hold_memory_if_asked() {
    let Some(mib) = std::env::var(HOLD_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let mut v = vec![0u8; mib << 20];
    let page = usize::try_from(page_size()).unwrap();
    for i in (0..v.len()).step_by(page) {
        v[i] = 1;
    }
    std::hint::black_box(&mut v);
    println!("\n{READY}");
    std::thread::sleep(Duration::from_secs(180));
}

/// A helper process holding `mib` MiB of touched memory; killed on drop.
pub struct MemoryHolder {
    child: Child,
    pub pid: i32,
}

impl MemoryHolder {
    /// Starts the helper (in `cgroup` from before it execs, when given, so every page it
    /// touches is charged there) and waits until it holds its memory; then sets its
    /// `oom_score_adj` unless 0.
    pub fn start(mib: usize, oom_score_adj: i16, cgroup: Option<&TestCgroup>) -> MemoryHolder {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "alloc_helper", "--nocapture", "--test-threads=1"])
            .env(HOLD_ENV, mib.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(cg) = cgroup {
            cg.enter_on_exec(&mut cmd);
        }
        let mut child = cmd.spawn().expect("spawn the memory helper");
        let pid = i32::try_from(child.id()).unwrap();
        let ready = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(READY));
        let holder = MemoryHolder { child, pid };
        assert!(ready, "helper {pid} ({mib} MiB) did not get ready");
        if oom_score_adj != 0 {
            std::fs::write(
                format!("/proc/{pid}/oom_score_adj"),
                oom_score_adj.to_string(),
            )
            .unwrap_or_else(|e| panic!("set oom_score_adj of {pid} to {oom_score_adj}: {e}"));
        }
        holder
    }
}

impl Drop for MemoryHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
