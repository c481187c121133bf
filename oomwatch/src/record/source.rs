//! Where facts come from: the probe table's rows by name ([`ProbeId`], the one list of probe
//! names used by the loader, `--disable-probe`, `oomwatch check`, metrics and events), and the
//! `sources` of an event ([`Source`]).
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// One row of the probe table (see `source::probe`), named as logged, exported
/// (`oomwatch_probe_attached{probe=...}`), accepted by `--disable-probe` and shown in `sources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeId {
    /// `tp_btf:mark_victim`: the victim's `task_struct` through BTF offsets.
    MarkVictimBtf,
    /// `tracepoint:oom/mark_victim`: the kernel's own trace record.
    MarkVictimTp,
    /// `fentry:oom_kill_process`: the invocation's `struct oom_control`.
    OomKillFentry,
    /// `kprobe:oom_kill_process`: the same, where fentry is not allowed.
    OomKillKprobe,
    /// `kmsg:oom_report`: the kernel's OOM report in `/dev/kmsg`.
    KmsgOomReport,
    /// `fexit:oom_badness`: each scored task's points.
    BadnessFexit,
    /// `kretprobe:oom_badness`: the same, where fexit is not allowed.
    BadnessKretprobe,
    /// `tracepoint:sched/sched_process_exit`: a killed task's exit.
    ProcessExit,
    /// `tracepoint:oom/reaper`: the OOM reaper's steps.
    Reaper,
    /// `tp_btf:signal_generate`: SIGKILLs, with the target's `task_struct`.
    SignalBtf,
    /// `tracepoint:signal/signal_generate`: SIGKILLs from the kernel's trace record.
    SignalTp,
    /// `tp_btf:signal_generate:sigkill`: every SIGKILL to a task in a memory cgroup, attributed
    /// (a program of its own, verified on its own).
    SigkillBtf,
    /// `tracepoint:signal/signal_generate:sigkill`: the same from the trace record.
    SigkillTp,
    /// `tracepoint:oom/reclaim_retry_zone`: the allocator's reclaim retries near OOM.
    ReclaimRetry,
    /// `tracepoint:oom/compact_retry`: its compaction retries.
    CompactRetry,
}

impl ProbeId {
    /// Every row, in table order.
    pub const ALL: [ProbeId; 15] = [
        ProbeId::MarkVictimBtf,
        ProbeId::MarkVictimTp,
        ProbeId::OomKillFentry,
        ProbeId::OomKillKprobe,
        ProbeId::KmsgOomReport,
        ProbeId::BadnessFexit,
        ProbeId::BadnessKretprobe,
        ProbeId::ProcessExit,
        ProbeId::Reaper,
        ProbeId::SignalBtf,
        ProbeId::SignalTp,
        ProbeId::SigkillBtf,
        ProbeId::SigkillTp,
        ProbeId::ReclaimRetry,
        ProbeId::CompactRetry,
    ];

    /// The row's name (`tp_btf:mark_victim`, `kmsg:oom_report`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ProbeId::MarkVictimBtf => "tp_btf:mark_victim",
            ProbeId::MarkVictimTp => "tracepoint:oom/mark_victim",
            ProbeId::OomKillFentry => "fentry:oom_kill_process",
            ProbeId::OomKillKprobe => "kprobe:oom_kill_process",
            ProbeId::KmsgOomReport => "kmsg:oom_report",
            ProbeId::BadnessFexit => "fexit:oom_badness",
            ProbeId::BadnessKretprobe => "kretprobe:oom_badness",
            ProbeId::ProcessExit => "tracepoint:sched/sched_process_exit",
            ProbeId::Reaper => "tracepoint:oom/reaper",
            ProbeId::SignalBtf => "tp_btf:signal_generate",
            ProbeId::SignalTp => "tracepoint:signal/signal_generate",
            ProbeId::SigkillBtf => "tp_btf:signal_generate:sigkill",
            ProbeId::SigkillTp => "tracepoint:signal/signal_generate:sigkill",
            ProbeId::ReclaimRetry => "tracepoint:oom/reclaim_retry_zone",
            ProbeId::CompactRetry => "tracepoint:oom/compact_retry",
        }
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no row of the probe table.
#[derive(Debug, thiserror::Error)]
#[error("unknown probe {0:?}: expected one of {names}", names = ProbeId::ALL.map(ProbeId::name).join(", "))]
pub struct UnknownProbe(pub String);

impl FromStr for ProbeId {
    type Err = UnknownProbe;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeId::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProbe(s.to_string()))
    }
}

impl Serialize for ProbeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Where a group of fields came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `tracepoint/oom/mark_victim`: the kernel's own trace record.
    MarkVictimTracepoint,
    /// `tp_btf/mark_victim`: read from the victim's `task_struct` via BTF offsets.
    MarkVictimBtf,
    /// `/proc/<pid>/status`, `/proc/<pid>/oom_score_adj` read after the event arrived.
    Procfs,
    /// `/proc/<pid>/cgroup` read after the event arrived.
    ProcCgroup,
    /// `fentry/oom_kill_process`: the OOM invocation's `struct oom_control`.
    OomKillFentry,
    /// `kprobe/oom_kill_process`: the same, where fentry is not allowed.
    OomKillKprobe,
    /// The kernel's OOM report read from `/dev/kmsg`.
    Kmsg,
    /// `fexit/oom_badness` inside `out_of_memory()`: each scored task's points (`candidates`).
    CandidatesFexit,
    /// `kretprobe/oom_badness`: the same, where fexit is not allowed.
    CandidatesKretprobe,
    /// The memory cgroup hierarchy searched for the cgroup id the kernel gave, or a cgroup's
    /// own file (`memory.oom.group`).
    Cgroupfs,
    /// The victim cgroup's tasks (`cgroup.procs`) and their `NSpid` in `/proc/<pid>/status`,
    /// read right after the kill: the container's init and whether it lives.
    CgroupNspid,
    /// `tracepoint/signal/signal_generate`: a SIGKILL from a userspace OOM killer.
    SignalTracepoint,
    /// `tp_btf/signal_generate`: the same, with the target's `task_struct`.
    SignalBtf,
}

impl Source {
    /// The probe-table row this source is, if it is one.
    pub const fn probe(self) -> Option<ProbeId> {
        Some(match self {
            Source::MarkVictimTracepoint => ProbeId::MarkVictimTp,
            Source::MarkVictimBtf => ProbeId::MarkVictimBtf,
            Source::OomKillFentry => ProbeId::OomKillFentry,
            Source::OomKillKprobe => ProbeId::OomKillKprobe,
            Source::Kmsg => ProbeId::KmsgOomReport,
            Source::CandidatesFexit => ProbeId::BadnessFexit,
            Source::CandidatesKretprobe => ProbeId::BadnessKretprobe,
            Source::SignalTracepoint => ProbeId::SignalTp,
            Source::SignalBtf => ProbeId::SignalBtf,
            Source::Procfs | Source::ProcCgroup | Source::Cgroupfs | Source::CgroupNspid => {
                return None
            }
        })
    }

    /// The name shown in an event's `sources`.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Procfs => "procfs",
            Source::ProcCgroup => "procfs:cgroup",
            Source::Cgroupfs => "cgroupfs",
            Source::CgroupNspid => "cgroupfs:nspid",
            Source::MarkVictimTracepoint => ProbeId::MarkVictimTp.name(),
            Source::MarkVictimBtf => ProbeId::MarkVictimBtf.name(),
            Source::OomKillFentry => ProbeId::OomKillFentry.name(),
            Source::OomKillKprobe => ProbeId::OomKillKprobe.name(),
            Source::Kmsg => ProbeId::KmsgOomReport.name(),
            Source::CandidatesFexit => ProbeId::BadnessFexit.name(),
            Source::CandidatesKretprobe => ProbeId::BadnessKretprobe.name(),
            Source::SignalTracepoint => ProbeId::SignalTp.name(),
            Source::SignalBtf => ProbeId::SignalBtf.name(),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
