//! The command line: thin commands wiring the rooms below.
pub mod check;
pub mod history;
pub mod run;
pub mod top;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Parser, Subcommand, ValueEnum};

use crate::record::{ProbeId, StackMode};

/// Default HTTP address. 9837 is not a well-known exporter's port (node_exporter is 9100).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9837";

/// eBPF-based Linux OOM-kill observability: one JSON record per victim, Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "oomwatch", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run` (the default command).
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and write one JSON line per OOM victim to stdout (default).
    Run(Box<RunArgs>),
    /// Rank processes by the kernel's oom_score: who the OOM killer would pick next.
    Top(top::TopArgs),
    /// Preflight: can the agent run here, what will it capture, which settings are risky.
    Check(check::CheckArgs),
    /// OOM kills still in the kernel log, in the same schema as live events.
    History(history::HistoryArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Address of the HTTP server (/, /events, /metrics, /healthz).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Format of the agent's own log on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace; or a tracing filter).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// The agent's own oom_score_adj, so the killer it watches spares it (-1000..=1000).
    #[arg(long, default_value_t = -999, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i16).range(-1000..=1000))]
    pub oom_score_adj: i16,
    /// The agent's own nice value (-20..=19), so that on a busy host its records are not held up
    /// behind the tasks it watches. Lowering it needs CAP_SYS_NICE; without it a warning says so.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// Cap on `oomwatch_oom_kills_total` label sets; the least recently updated is evicted.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_label_sets: u64,
    /// Open HTTP connections at most; a new one beyond it closes the oldest idle connection
    /// (1..=65536).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// TLS, basic authentication and response headers for the HTTP server, in the Prometheus
    /// exporter-toolkit web configuration format (tls_server_config, basic_auth_users,
    /// http_server_config.headers).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Serve only /metrics and /healthz: no / page and no /events (for nodes where only the
    /// metrics may be exposed).
    #[arg(long)]
    pub metrics_only: bool,
    /// Keep running, privileged, when dropping every capability after start-up fails (by
    /// default that stops the agent).
    #[arg(long)]
    pub allow_cap_drop_failure: bool,
    /// How many recent events the HTTP server keeps for `/` and `/events` (1..=10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub recent_events: u64,
    /// Host name put in every event (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// How many of the tasks the OOM killer scored go in each event's `candidates` (0: none).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub candidates: u64,
    /// The host's root filesystem: `/proc`, `/sys/fs/cgroup` and the container runtimes' state
    /// are read below it (`/host` in a pod that mounts the host's directories there).
    #[arg(long, default_value = "/")]
    pub host_root: PathBuf,
    /// Docker's data root (`dockerd --data-root`), below `--host-root`, where the container
    /// names, images and labels are read (repeatable; replaces the default).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/docker")]
    pub docker_root: Vec<PathBuf>,
    /// podman's storage root (`podman --root`; rootless: `~/.local/share/containers/storage`),
    /// below `--host-root`, where the container names and images are read (repeatable;
    /// replaces the default).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/containers/storage"
    )]
    pub podman_root: Vec<PathBuf>,
    /// containerd's state directory (`containerd --state`, the `state` key of its config),
    /// below `--host-root`, where the CRI's bundles (`config.json`) name pods and containers
    /// (repeatable; replaces the default: `/run/containerd` and k3s/RKE2's
    /// `/run/k3s/containerd`; microk8s: `/var/snap/microk8s/common/run/containerd`).
    #[arg(
        long,
        value_name = "DIR",
        default_values = ["/run/containerd", "/run/k3s/containerd"]
    )]
    pub containerd_state: Vec<PathBuf>,
    /// How many memory cgroups with a limit of their own to expose headroom, pressure and next
    /// victim for: those closest to their limit (0..=1000; 0 turns the walk off).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub headroom_cgroups: u64,
    /// How often the headroom cgroups are walked, in the background (ms; 0: at each scrape,
    /// which then waits for the walk of every memory cgroup and /proc).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub headroom_interval_ms: u64,
    /// Where the agent keeps its kernel-log position, so kills logged while it was down are
    /// replayed at start (once each). Created if missing; must be writable.
    #[arg(long, default_value = "/var/lib/oomwatch")]
    pub state_dir: PathBuf,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Longest wait, in ms, for the second probe record of a victim before emitting what is known.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub correlation_window_ms: u64,
    /// Do not use this probe (repeatable): tp_btf:mark_victim, tracepoint:oom/mark_victim,
    /// fentry:oom_kill_process, kprobe:oom_kill_process, kmsg:oom_report, the candidates rows
    /// fexit:oom_badness, kretprobe:oom_badness, and the kill-lifecycle
    /// rows tracepoint:sched/sched_process_exit, tracepoint:oom/reaper, tp_btf:signal_generate,
    /// tracepoint:signal/signal_generate, tracepoint:oom/reclaim_retry_zone,
    /// tracepoint:oom/compact_retry. The next row of the probe table is used instead, as on a
    /// kernel that refuses the probe.
    #[arg(long = "disable-probe", value_name = "PROBE", value_enum)]
    pub disable_probe: Vec<ProbeId>,
    /// Also report SIGKILLs sent by processes with this comm as userspace OOM kills
    /// (repeatable; besides earlyoom, systemd-oomd, oomd, nohang and lmkd).
    #[arg(long = "userspace-killer", value_name = "COMM")]
    pub userspace_killer: Vec<String>,
    /// The trigger's stacks at the kill (`trigger.stack`): `none`, `kernel`, or `all` (kernel
    /// and user, symbolized).
    #[arg(long, value_enum, default_value_t = StackMode::All)]
    pub stacks: StackMode,
    /// Attribute every SIGKILL to a task in a non-root memory cgroup (`sigkill` and
    /// `container_killed` records, `oomwatch_container_sigkills_total`): `true` or `false`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sigkills: bool,
    /// After start-up, install a seccomp filter that allows only the system calls the running
    /// agent makes (the rest fail with EPERM and are logged by the kernel): `true` or `false`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub seccomp: bool,
    /// A killed task not exited this many ms after the kill is reported as stuck.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub stuck_after_ms: u64,
    /// Test knob: behave as on a kernel whose mark_victim has only `pid` (fields from /proc).
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true)]
    pub force_pid_only: bool,
    /// Test knob: make one kernel read of the BTF program fault on purpose.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true)]
    pub inject_read_fault: bool,
    /// Test knob: drop this row's records right after decoding (repeatable), as on a kernel
    /// where its hook attaches but fires nowhere useful.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true, value_name = "PROBE", value_enum)]
    pub drop_probe_records: Vec<ProbeId>,
    /// Test knob: clear every victim record's KILL_SENT, as if each kill's SIGKILL went unseen
    /// (a CPU stalled between the SIGKILL and the mark; an evicted kill-signal entry).
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true)]
    pub miss_kill_signals: bool,
    /// Test knob: the seccomp filter logs the calls it does not list instead of refusing them.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true)]
    pub seccomp_log: bool,
    /// Test knob: read the kernel log through syslog(2), as where /dev/kmsg is refused.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true)]
    pub kmsg_via_syslog: bool,
    /// Benchmark knob: pre-populates N fake label sets of oomwatch_oom_kills_total.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true, default_value_t = 0)]
    pub synthetic_label_sets: usize,
}

/// `--disable-probe` takes the probe table's names, and only those.
impl ValueEnum for ProbeId {
    fn value_variants<'a>() -> &'a [Self] {
        &ProbeId::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}
