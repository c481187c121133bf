//! The probe table as typed data: every row is a [`ProbeId`]; a row either attached or says why
//! not ([`ProbeStatus`]). The rows, best first within each family (a fallback is tried only when
//! the row before it did not attach):
//!
//! | family | rows | file |
//! |---|---|---|
//! | victim | `tp_btf:mark_victim`, `tracepoint:oom/mark_victim` (both when both attach) | [`super::loader`] |
//! | OOM context | `fentry:oom_kill_process` → `kprobe:oom_kill_process` → `kmsg:oom_report` | [`super::loader`], `source::kmsg` |
//! | scored tasks | `fexit:oom_badness` → `kretprobe:oom_badness` → the report's task dump | [`super::candidates`] |
//! | kill outcome | `tracepoint:sched/sched_process_exit`, `tracepoint:oom/reaper`, `tp_btf:signal_generate` → `tracepoint:signal/signal_generate`, `tracepoint:oom/reclaim_retry_zone`, `tracepoint:oom/compact_retry` | [`super::lifecycle`] |
//!
//! To add a row: a variant of [`ProbeId`] (its name is then accepted by `--disable-probe`,
//! exported by `oomwatch_probe_attached`, and shown by `oomwatch check`), its programs in
//! `oomwatch-ebpf`, and its attach step in the family's file, which pushes one [`row`].
pub use crate::record::ProbeId;

/// Why a disabled row is not used.
pub const DISABLED: &str = "disabled by --disable-probe";

/// What happened to one row of the probe table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    pub probe: ProbeId,
    pub attached: bool,
    /// Why it is unavailable, or what it reads.
    pub detail: String,
}

/// The status of a row: attached (and what it reads), or why not.
pub fn row(probe: ProbeId, result: Result<(), String>, reads: &str) -> ProbeStatus {
    ProbeStatus {
        probe,
        attached: result.is_ok(),
        detail: result.map_or_else(|e| e, |()| reads.to_string()),
    }
}

/// `Ok` unless `--disable-probe` named the row.
pub fn enabled(disabled: &[ProbeId], probe: ProbeId) -> Result<(), String> {
    match disabled.contains(&probe) {
        true => Err(DISABLED.into()),
        false => Ok(()),
    }
}

/// Whether `probe` is among the attached rows.
pub fn attached(status: &[ProbeStatus], probe: ProbeId) -> bool {
    status.iter().any(|s| s.probe == probe && s.attached)
}
