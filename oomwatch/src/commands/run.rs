//! `oomwatch run`: the command line becomes a validated [`Config`]; then the agent runs until
//! SIGINT/SIGTERM (see [`crate::agent`]).
use std::process::ExitCode;

use super::{LogFormat, RunArgs};
use crate::agent;
use crate::config::{self, Config, TestKnobs};
use crate::sys::steer::LoopSteer;

/// The one place where flags become settings.
pub fn config(args: RunArgs) -> Config {
    let test = test_knobs(&args);
    let count = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Config {
        listen: args.listen,
        log_format: match args.log_format {
            LogFormat::Text => config::LogFormat::Text,
            LogFormat::Json => config::LogFormat::Json,
        },
        log_level: args.log_level,
        oom_score_adj: args.oom_score_adj,
        nice: args.nice,
        max_label_sets: count(args.max_label_sets),
        max_connections: count(args.max_connections),
        web_config_file: args.web_config_file,
        metrics_only: args.metrics_only,
        allow_cap_drop_failure: args.allow_cap_drop_failure,
        recent_events: count(args.recent_events),
        host: args.host.unwrap_or_else(config::hostname),
        candidates: count(args.candidates),
        host_root: args.host_root,
        docker_roots: args.docker_root,
        podman_roots: args.podman_root,
        containerd_states: args.containerd_state,
        headroom_cgroups: count(args.headroom_cgroups),
        headroom_interval: (args.headroom_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(args.headroom_interval_ms)),
        state_dir: args.state_dir,
        btf: args.btf,
        correlation_window: std::time::Duration::from_millis(args.correlation_window_ms),
        disabled: args.disable_probe,
        userspace_killers: args.userspace_killer,
        stacks: args.stacks,
        sigkills: args.sigkills,
        seccomp: args.seccomp,
        stuck_after: std::time::Duration::from_millis(args.stuck_after_ms),
        test,
    }
}

#[cfg(feature = "test-knobs")]
fn test_knobs(args: &RunArgs) -> TestKnobs {
    TestKnobs {
        force_pid_only: args.force_pid_only,
        inject_read_fault: args.inject_read_fault,
        synthetic_label_sets: args.synthetic_label_sets,
        drop_probe_records: args.drop_probe_records.clone(),
        miss_kill_signals: args.miss_kill_signals,
        kmsg_via_syslog: args.kmsg_via_syslog,
        seccomp_log: args.seccomp_log,
    }
}

/// The product build has no test knobs.
#[cfg(not(feature = "test-knobs"))]
fn test_knobs(_: &RunArgs) -> TestKnobs {
    TestKnobs::default()
}

/// Runs the agent on a single-threaded runtime.
pub fn main(args: RunArgs) -> ExitCode {
    let cfg = config(args);
    if let Err(e) = agent::init_logging(&cfg) {
        eprintln!("oomwatch: {e:#}");
        return ExitCode::FAILURE;
    }
    // The event loop runs on this thread; watchers move it off a CPU the kernel holds.
    let steer = LoopSteer::for_this_thread();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if let Some(s) = &steer {
        builder
            .on_thread_park(s.on_park())
            .on_thread_unpark(s.on_unpark());
    }
    let result: anyhow::Result<()> = builder
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(agent::run(cfg, steer))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
