//! Section "Run time": what a running agent found after OOM kills. Loading the probes proves
//! only that the kernel accepted each hook; whether a hook fires anywhere useful shows only
//! after an OOM kill, so the agent notes each row that stayed silent in
//! `--state-dir/silent-probes.json` (see [`crate::source::probe::silence`]) and check reports
//! it here. `oomwatch_probe_silent_total{probe}` is the same signal as a metric.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::report::{Item, Status};
use crate::recovery::position;
use crate::source::probe::silence::{SilentFile, FILE};

/// The agent's silent rows, as its state directory holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Silent {
    /// The file read.
    pub file: PathBuf,
    /// What it holds, when it is of this boot.
    pub found: Option<SilentFile>,
    /// Whether the agent that wrote it still runs.
    pub agent_running: bool,
}

impl Silent {
    /// Reads `state_dir`'s file; a file of another boot (another kernel, perhaps) is ignored.
    pub fn gather(state_dir: &Path, host_root: &Path) -> Self {
        let proc_root = host_root.join("proc");
        let boot = position::boot_id(&proc_root).unwrap_or_default();
        let found = SilentFile::load(state_dir).filter(|f| f.boot_id == boot);
        let agent_running = found
            .as_ref()
            .is_some_and(|f| proc_root.join(f.pid.to_string()).is_dir());
        Silent {
            file: state_dir.join(FILE),
            found,
            agent_running,
        }
    }
}

/// One warning per silent row, else one line saying what was looked at.
pub fn items(s: &Silent) -> Vec<Item> {
    let Some(f) = s.found.as_ref().filter(|f| !f.rows.is_empty()) else {
        return vec![Item::info(
            "silent_probes",
            format!(
                "no attached probe found silent after an OOM kill (per {}; a probe's silence \
                 shows only after an OOM kill, also as oomwatch_probe_silent_total)",
                s.file.display()
            ),
        )];
    };
    let who = match s.agent_running {
        true => format!("the running agent (pid {})", f.pid),
        false => format!("the agent of this boot (pid {}, no longer running)", f.pid),
    };
    f.rows
        .iter()
        .map(|r| {
            Item::new(
                Status::Warn,
                "silent_probe",
                format!(
                    "{}: attached but silent after {} OOM kill(s), per {who}: expected {}; \
                     the agent used {}",
                    r.probe, r.count, r.expected, r.fallback
                ),
            )
            .with_fix(format!(
                "this kernel's hook fires nowhere useful; events carry the fallback's data. \
                 `--disable-probe {}` makes the agent take the next row from the start; \
                 please report the kernel release",
                r.probe
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ProbeId;
    use crate::source::probe::silence::Silence;

    #[test]
    fn a_silent_row_of_this_boot_warns_with_its_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let boot = position::boot_id(Path::new("/proc")).unwrap_or_default();
        let s = Silence::with_file(dir.path(), boot);
        let none = items(&Silent::gather(dir.path(), Path::new("/")));
        assert_eq!((none.len(), none[0].status), (1, Status::Info));
        s.observe(ProbeId::BadnessFexit, "scored tasks", "the task dump");
        let got = Silent::gather(dir.path(), Path::new("/"));
        assert!(got.agent_running, "this test process wrote it");
        let it = items(&got);
        assert_eq!((it.len(), it[0].status), (1, Status::Warn));
        assert!(it[0]
            .message
            .contains("fexit:oom_badness: attached but silent after 1"));
        assert!(it[0].message.contains("the task dump"));
    }

    #[test]
    fn a_file_of_another_boot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        Silence::with_file(dir.path(), "another-boot".into()).observe(
            ProbeId::ProcessExit,
            "an exit",
            "none",
        );
        let got = Silent::gather(dir.path(), Path::new("/"));
        assert!(got.found.is_none());
        assert_eq!(items(&got)[0].status, Status::Info);
    }
}
