//! Rows that attached but stay silent. Attaching proves only that the kernel accepted the hook;
//! on an unknown kernel a hook can sit where nothing useful passes (an inlined function, a
//! different call path). Each row family knows what it must have seen once an OOM kill happened,
//! and the stage that can tell says so here ([`Silence::observe`]):
//!
//! | rows | expected, per OOM kill | noticed by | fallback |
//! |---|---|---|---|
//! | `tp_btf:mark_victim`, `tracepoint:oom/mark_victim` | a record for every victim: the partner row's record, or the kernel's "Killed process" line | `correlate` (partner missing after the window), `recovery` (a kill line with no live record) | the other row's fields, else the kill line (`replayed`) |
//! | `fentry:oom_kill_process`, `kprobe:oom_kill_process` | an invocation record before each chosen victim | `correlate` | `kmsg:oom_report` (the kernel's report) |
//! | `kmsg:oom_report` | the kernel's report of each victim the probes reported | `correlate` (the victim's wait for it ran out) | the event without the report's context |
//! | `fexit:oom_badness`, `kretprobe:oom_badness` | scored tasks for an invocation whose report's task dump lists tasks (not for `oom_kill_allocating_task` kills, which score none) | `correlate` | candidates from the task dump |
//! | `tracepoint:sched/sched_process_exit` | the exit of each killed process | `kill_outcome` (the victim gone from `/proc` without an exit record) | the lifecycle record without `kill_to_exit_ns` |
//!
//! The reaper, signal and near-OOM rows have no expectation: the reaper runs only for victims
//! still there after 2 s, a SIGKILL may be sent by the kernel before the agent's marks are
//! judged, and the allocator retries only under node pressure.
//!
//! Each silent row is logged once ("probe attached but silent"), counted
//! (`oomwatch_probe_silent_total{probe}`) and written to [`FILE`] under `--state-dir`, which
//! `oomwatch check` reads.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::record::ProbeId;

/// File name below the state directory.
pub const FILE: &str = "silent-probes.json";

const ROWS: usize = ProbeId::ALL.len();

/// One silent row as written to [`FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentRow {
    /// The row's name (`fexit:oom_badness`, ...).
    pub probe: String,
    /// OOM kills after which it had delivered nothing.
    pub count: u64,
    /// What was expected of it.
    pub expected: String,
    /// Where the data came from instead.
    pub fallback: String,
}

/// What [`FILE`] holds: the running agent's silent rows, for this boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentFile {
    pub boot_id: String,
    /// The agent's pid.
    pub pid: u32,
    pub rows: Vec<SilentRow>,
}

impl SilentFile {
    /// Reads `dir/FILE`; `None` when absent or unreadable (a bad file is not an error here).
    pub fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Counts of silent rows, shared by the stages that notice and the metrics.
#[derive(Clone, Debug, Default)]
pub struct Silence {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: [AtomicU64; ROWS],
    /// What each row was expected to give and its fallback, once noticed.
    notes: Mutex<Vec<(ProbeId, &'static str, &'static str)>>,
    /// Where the rows are written (`--state-dir`), with the boot id.
    file: Option<(PathBuf, String)>,
}

fn index(probe: ProbeId) -> usize {
    ProbeId::ALL
        .iter()
        .position(|&p| p == probe)
        .unwrap_or_default()
}

impl Silence {
    /// Counts only (no file).
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts, written to `dir/FILE` (with `boot_id`) on each change; an old file is removed
    /// now (it belongs to an earlier run).
    pub fn with_file(dir: &Path, boot_id: String) -> Self {
        let _ = std::fs::remove_file(dir.join(FILE));
        Self {
            inner: Arc::new(Inner {
                file: Some((dir.to_path_buf(), boot_id)),
                ..Inner::default()
            }),
        }
    }

    /// `probe` attached but gave nothing of what one OOM kill must have made it give
    /// (`expected`); the data came from `fallback`. Logged the first time per row.
    pub fn observe(&self, probe: ProbeId, expected: &'static str, fallback: &'static str) {
        let before = self.inner.counts[index(probe)].fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            tracing::warn!(
                probe = %probe,
                expected,
                fallback,
                "probe attached but silent: this kernel's hook gives nothing after an OOM kill; using the fallback"
            );
            let mut notes = self.inner.notes.lock().unwrap_or_else(|p| p.into_inner());
            notes.push((probe, expected, fallback));
        }
        self.save();
    }

    /// OOM kills after which `probe` was silent, so far.
    pub fn count(&self, probe: ProbeId) -> u64 {
        self.inner.counts[index(probe)].load(Ordering::Relaxed)
    }

    /// The silent rows, in the order first noticed.
    pub fn rows(&self) -> Vec<SilentRow> {
        let notes = self.inner.notes.lock().unwrap_or_else(|p| p.into_inner());
        notes
            .iter()
            .map(|&(p, expected, fallback)| SilentRow {
                probe: p.name().to_string(),
                count: self.count(p),
                expected: expected.to_string(),
                fallback: fallback.to_string(),
            })
            .collect()
    }

    /// Writes the rows to the state directory (by rename: a reader never sees half a file); a
    /// failure is logged.
    fn save(&self) {
        let Some((dir, boot_id)) = &self.inner.file else {
            return;
        };
        let file = SilentFile {
            boot_id: boot_id.clone(),
            pid: std::process::id(),
            rows: self.rows(),
        };
        let tmp = dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec_pretty(&file).unwrap_or_default();
        if let Err(e) =
            std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, dir.join(FILE)))
        {
            tracing::warn!("cannot write {}: {e}", dir.join(FILE).display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_counted_and_written_with_its_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "stale").unwrap();
        let s = Silence::with_file(dir.path(), "b".into());
        assert!(
            SilentFile::load(dir.path()).is_none(),
            "an earlier run's file is gone"
        );
        s.observe(ProbeId::BadnessFexit, "scored tasks", "the task dump");
        s.observe(ProbeId::BadnessFexit, "scored tasks", "the task dump");
        s.observe(ProbeId::MarkVictimBtf, "a record", "the other row");
        assert_eq!(s.count(ProbeId::BadnessFexit), 2);
        assert_eq!(s.count(ProbeId::MarkVictimTp), 0);
        let f = SilentFile::load(dir.path()).unwrap();
        assert_eq!(f.boot_id, "b");
        let got: Vec<(&str, u64)> = f.rows.iter().map(|r| (&*r.probe, r.count)).collect();
        assert_eq!(got, [("fexit:oom_badness", 2), ("tp_btf:mark_victim", 1)]);
        assert_eq!(f.rows[0].fallback, "the task dump");
    }

    #[test]
    fn a_silence_without_a_file_only_counts() {
        let s = Silence::new();
        s.observe(ProbeId::ProcessExit, "an exit", "none");
        assert_eq!(s.count(ProbeId::ProcessExit), 1);
        assert_eq!(s.rows().len(), 1);
    }
}
