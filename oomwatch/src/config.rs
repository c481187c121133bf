//! The agent's settings, validated once: every count is a `usize`, every wait a `Duration`, the
//! host name resolved. `commands::run` builds a [`Config`] from the command line; nothing below
//! it reads flags.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::probe::table::ProbeId;

/// Format of the agent's own log on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Knobs that exist for the project's tests and benchmarks only: they make the agent behave as
/// on another kernel, or pre-fill its state. Off in production.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestKnobs {
    /// Behave as on a kernel whose `mark_victim` has only `pid` (fields from /proc).
    pub force_pid_only: bool,
    /// Make one kernel read of the BTF program fault on purpose.
    pub inject_read_fault: bool,
    /// Pre-populate this many fake label sets of `oomwatch_oom_kills_total`.
    pub synthetic_label_sets: usize,
    /// Drop these rows' records right after decoding (a hook that fires nowhere useful).
    pub drop_probe_records: Vec<ProbeId>,
    /// Clear every victim record's `KILL_SENT`: as if each kill's SIGKILL went unseen.
    pub miss_kill_signals: bool,
    /// Read the kernel log through `syslog(2)`, as where `/dev/kmsg` is refused.
    pub kmsg_via_syslog: bool,
    /// The seccomp filter logs unlisted calls instead of refusing them.
    pub seccomp_log: bool,
}

/// Everything `oomwatch run` needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    pub oom_score_adj: i16,
    pub nice: i32,
    /// Cap on `oomwatch_oom_kills_total` label sets (≥ 1).
    pub max_label_sets: usize,
    /// Open HTTP connections at most (≥ 1).
    pub max_connections: usize,
    /// `--web.config.file`: TLS, basic authentication, headers (exporter-toolkit format).
    pub web_config_file: Option<PathBuf>,
    /// Serve only `/metrics` and `/healthz` (no `/` nor `/events`).
    pub metrics_only: bool,
    /// Keep running when dropping capabilities after start-up fails (else fatal).
    pub allow_cap_drop_failure: bool,
    /// Recent events kept for `/` and `/events` (≥ 1).
    pub recent_events: usize,
    /// Host name put in every event.
    pub host: String,
    /// Scored tasks put in each event (0: none).
    pub candidates: usize,
    pub host_root: PathBuf,
    /// Docker data roots (`dockerd --data-root`), under `host_root`.
    pub docker_roots: Vec<PathBuf>,
    /// podman storage roots (`podman --root`), under `host_root`.
    pub podman_roots: Vec<PathBuf>,
    /// containerd state directories (`containerd --state`), under `host_root`.
    pub containerd_states: Vec<PathBuf>,
    /// Memory cgroups the headroom collector reports (0: off).
    pub headroom_cgroups: usize,
    /// `--headroom-interval-ms`: the background walk's period (`None`: at each scrape).
    pub headroom_interval: Option<std::time::Duration>,
    pub state_dir: PathBuf,
    pub btf: PathBuf,
    /// Longest wait for a victim's second probe record.
    pub correlation_window: Duration,
    /// Probe-table rows not to use.
    pub disabled: Vec<ProbeId>,
    /// Extra comms whose SIGKILLs are userspace OOM kills.
    pub userspace_killers: Vec<String>,
    /// `--stacks`: the trigger's stacks captured at the kill.
    pub stacks: crate::record::StackMode,
    /// `--sigkills`: every SIGKILL to a task in a non-root memory cgroup is attributed.
    pub sigkills: bool,
    /// `--seccomp`: the system-call filter after start-up.
    pub seccomp: bool,
    /// A killed task not exited this long after the kill is reported as stuck.
    pub stuck_after: Duration,
    pub test: TestKnobs,
}

impl Config {
    /// The OOM context probes' fallback, the kernel log, may be used.
    pub fn kmsg_enabled(&self) -> bool {
        !self.disabled.contains(&ProbeId::KmsgOomReport)
    }
}

/// This machine's host name, as the kernel has it (`unknown` when unreadable).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
