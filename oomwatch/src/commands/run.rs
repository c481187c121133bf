//! `oomwatch run`: load and attach, then one JSON line per victim until SIGINT/SIGTERM.
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use super::{LogFormat, RunArgs};
use crate::caps;
use crate::cgroup::{IdResolver, MemoryHierarchy};
use crate::correlate::{monotonic_ns, Correlator};
use crate::enrich::Enricher;
use crate::event::{OomEvent, Source};
use crate::host::HostCollectors;
use crate::kmsg::{AsyncKmsgReader, KmsgError, KmsgEvent, KmsgReader};
use crate::lifecycle::{self, Lifecycle};
use crate::probe::candidates as candidates_probe;
use crate::probe::lifecycle as lifecycle_probe;
use crate::probe::loader::{self, LoadOptions, Probes};
use crate::probe::ringbuf;
use crate::recovery::Recovery;
use crate::server;
use crate::sink::json::JsonLines;
use crate::sink::metrics::{BuildInfo, EbpfCounters, Metrics};
use crate::sink::recent::RecentEvents;
use crate::state::StateFile;

#[path = "run_sink.rs"]
mod sink;
use sink::{drain_kmsg_now, Sink, KMSG_POLL};
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Probe(#[from] loader::ProbeError),
    #[error("cannot install the {0} signal handler: {1}")]
    Signal(&'static str, io::Error),
    #[error("ring buffer: {0}")]
    RingBuf(io::Error),
    #[error("writing events to stdout failed: {0}")]
    Stdout(io::Error),
    #[error("--host-root {0:?} has no proc/ directory: give the directory where the host's / is mounted (e.g. /host with /proc at /host/proc)")]
    HostRoot(std::path::PathBuf),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("kernel log: {0}")]
    Kmsg(#[from] KmsgError),
    #[error("invalid --log-level {0:?}: {1}")]
    LogLevel(String, String),
}

/// Sets up the agent's own log on stderr. aya-log records from the eBPF side arrive through the
/// `log` crate and are bridged into `tracing`.
pub fn init_logging(args: &RunArgs) -> Result<(), RunError> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| RunError::LogLevel(args.log_level.clone(), e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| RunError::LogLevel(args.log_level.clone(), e.to_string()))?;
    // The tracing subscriber's `log` bridge is installed by try_init (tracing-log feature);
    // nothing else to do when it is already present.
    Ok(())
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    caps::check_self()?;
    if !args.host_root.join("proc").is_dir() {
        return Err(RunError::HostRoot(args.host_root.clone()));
    }
    let state_file = StateFile::open(&args.state_dir)?;
    match caps::set_own_oom_score_adj(args.oom_score_adj) {
        Ok(()) => tracing::info!(
            oom_score_adj = args.oom_score_adj,
            "set own oom_score_adj so the OOM killer spares the agent"
        ),
        Err(e) => tracing::warn!(
            oom_score_adj = args.oom_score_adj,
            "could not set own oom_score_adj: {e}; the agent stays killable"
        ),
    }
    let allocating =
        std::fs::read_to_string(args.host_root.join("proc/sys/vm/oom_kill_allocating_task"))
            .ok()
            .and_then(|v| crate::host::sysctl::parse_int(&v));
    if let Some(risk) = caps::allocating_task_risk(allocating, args.oom_score_adj) {
        tracing::warn!("{risk}");
    }
    match caps::set_own_nice(args.nice) {
        Ok(()) => tracing::info!(nice = args.nice, "set own nice value"),
        Err(e) => tracing::warn!(nice = args.nice, "could not set own nice value: {e}"),
    }
    raise_memlock_limit();
    // Bind before touching the kernel: a busy port fails fast with nothing attached.
    let listener = server::bind(args.listen).await?;

    let probes = loader::load(&LoadOptions {
        btf_path: args.btf.clone(),
        force_pid_only: args.force_pid_only,
        inject_read_fault: args.inject_read_fault,
        disabled: args.disable_probe.clone(),
        userspace_killers: args.userspace_killer.clone(),
    })?;
    let metrics = Arc::new(Metrics::new(
        usize::try_from(args.max_label_sets).unwrap_or(usize::MAX),
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("OOMWATCH_GIT_COMMIT"),
        },
    ));
    metrics.add_synthetic_label_sets(args.synthetic_label_sets);
    for s in &probes.status {
        metrics.set_probe_attached(s.probe, s.attached);
        if s.attached {
            tracing::info!(probe = s.probe, reads = %s.detail, "probe attached");
        } else {
            tracing::warn!(probe = s.probe, reason = %s.detail, "probe unavailable");
        }
    }
    let exits_seen = probes.attached(lifecycle_probe::PROBE_EXIT);
    let kill_signals = probes.attached(lifecycle_probe::PROBE_SIGNAL_BTF)
        || probes.attached(lifecycle_probe::PROBE_SIGNAL_TP);
    let near_oom = (
        probes.attached(lifecycle_probe::PROBE_RECLAIM_RETRY),
        probes.attached(lifecycle_probe::PROBE_COMPACT_RETRY),
    );
    let expect_tp = probes.attached(loader::PROBE_MARK_VICTIM_TP);
    let expect_btf = probes.attached(loader::PROBE_MARK_VICTIM_BTF);
    let oom_source = if probes.attached(loader::PROBE_OOM_KILL_FENTRY) {
        Some(Source::OomKillFentry)
    } else if probes.attached(loader::PROBE_OOM_KILL_KPROBE) {
        Some(Source::OomKillKprobe)
    } else {
        None
    };

    let scored_attached = candidates_probe::PROBES.iter().any(|p| probes.attached(p));
    let Probes {
        ebpf,
        events,
        candidates,
        counters,
        logger,
        constraints,
        gfp,
        ..
    } = probes;
    let counters = Arc::new(Mutex::new(counters));
    metrics.add_collector(lifecycle::near_oom_collector(
        Arc::clone(&counters),
        near_oom,
    ));
    metrics.add_collector(crate::scored::drops_collector(
        Arc::clone(&counters),
        scored_attached,
    ));
    metrics.set_ebpf_counters_reader(Box::new(move || {
        let c = counters.lock().unwrap_or_else(|p| p.into_inner());
        EbpfCounters {
            ringbuf_drops: loader::read_counter(&c, loader::RINGBUF_DROPS),
            read_errors: loader::read_counter(&c, loader::READ_ERRORS),
        }
    }));

    let hierarchy = MemoryHierarchy::find_under(&args.host_root);
    match &hierarchy {
        Some(h) => {
            tracing::info!(version = ?h.version, mount = %h.mount.display(), "memory cgroup hierarchy")
        }
        None => {
            tracing::warn!("no memory cgroup hierarchy mounted; cgroup paths come from /proc only")
        }
    }
    let host = args.host.clone().unwrap_or_else(hostname);
    match &gfp {
        Some((_, from)) => tracing::info!("GFP flag names: {from}"),
        None => tracing::info!(
            "GFP flag names: no table in tracefs or BTF; only the kernel log's own decoding"
        ),
    }
    let gfp = gfp.map(|(d, _)| d);
    let mut correlator = Correlator::new(
        expect_tp,
        expect_btf,
        Duration::from_millis(args.correlation_window_ms),
        host.clone(),
        hierarchy.clone().map(IdResolver::new),
    )
    .with_gfp(gfp)
    .with_proc_root(args.host_root.join("proc"));
    // With a signal_generate program, a mark is a kill only if its SIGKILL was seen. The
    // programs were attached before now: marks from now on carry the answer.
    if kill_signals {
        correlator = correlator.with_kill_signals_since(monotonic_ns());
    }
    let enricher = Enricher::new(&args.host_root).with_hierarchy(hierarchy.clone());
    let host_collectors = Arc::new(
        HostCollectors::new(&args.host_root)
            .with_headroom(usize::try_from(args.headroom_cgroups).unwrap_or(usize::MAX)),
    );
    {
        let h = Arc::clone(&host_collectors);
        metrics.add_collector(Box::new(move || h.collect()));
        let root = args.host_root.clone();
        metrics.set_kernel_kills_reader(Box::new(move || {
            crate::host::vmstat::kernel_oom_kills(&root).ok()
        }));
    }
    // The kernel log: the safety net for kills (replay after downtime, kills the probes did not
    // report), and the OOM context where no oom_kill_process probe attached.
    let boot_id = crate::state::boot_id(&args.host_root.join("proc")).unwrap_or_default();
    let mut kmsg = None;
    let mut recovery = None;
    let mut startup = None;
    match KmsgReader::open() {
        Ok(mut reader) => match Recovery::start(state_file, boot_id, host.clone(), &mut reader) {
            Ok((r, up)) => {
                kmsg = Some(AsyncKmsgReader::new(reader)?);
                recovery = Some(r);
                startup = Some(up);
            }
            Err(e) => {
                tracing::warn!("kernel log unreadable: {e}; no replay of kills missed while down")
            }
        },
        Err(e) => tracing::warn!(
            "kernel log unreadable: {e}; no replay of kills missed while down (needs CAP_SYSLOG)"
        ),
    }
    // Invocation context: from the oom_kill_process probe, else from the kernel's own report.
    let mut kmsg_context = false;
    if let Some(src) = oom_source {
        correlator = correlator
            .with_oom_kill(src, constraints)
            .with_candidates(usize::try_from(args.candidates).unwrap_or(5));
        if kmsg.is_some() && args.candidates > 0 {
            // The report still gives what the probes cannot: the scored candidates (when no
            // oom_badness row attached; else what that probe could not read) and the
            // domain's memory at the kill.
            correlator = correlator
                .with_kmsg()
                .with_candidates(usize::try_from(args.candidates).unwrap_or(5));
            kmsg_context = true;
        }
    } else if args.disable_probe.iter().any(|p| p == PROBE_KMSG) {
        tracing::warn!(
            probe = PROBE_KMSG,
            reason = "disabled by --disable-probe",
            "probe unavailable: events carry no OOM context"
        );
        metrics.set_probe_attached(PROBE_KMSG, false);
    } else if kmsg.is_some() {
        tracing::info!(
            probe = PROBE_KMSG,
            "probe attached: OOM context (constraint, gfp_mask, order, memcg) from the kernel log"
        );
        metrics.set_probe_attached(PROBE_KMSG, true);
        correlator = correlator
            .with_kmsg()
            .with_candidates(usize::try_from(args.candidates).unwrap_or(5));
        kmsg_context = true;
    } else {
        tracing::warn!(
            probe = PROBE_KMSG,
            reason = "kernel log unreadable",
            "probe unavailable: events carry no OOM context"
        );
        metrics.set_probe_attached(PROBE_KMSG, false);
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recent = Arc::new(RecentEvents::new(
        usize::try_from(args.recent_events).unwrap_or(usize::MAX),
    ));
    let server_state = server::ServerState::new(Arc::clone(&metrics))
        .with_recent(Arc::clone(&recent))
        .with_host(Arc::clone(&host_collectors))
        .with_node(&host);
    let limits = server::Limits::default()
        .with_max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX));
    let server_task = tokio::spawn(server::serve_with_limits(
        listener,
        server_state,
        limits,
        async move {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(listen = %args.listen, "serving /, /events, /metrics and /healthz");

    // Parsed BTF and load-time buffers are gone; hand their pages back to the kernel.
    trim_heap();

    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| RunError::Signal("SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RunError::Signal("SIGTERM", e))?;
    let mut ring = register(events)?;
    let mut scored_ring = register(candidates)?;
    let mut log_fd = match logger {
        Some(l) => Some(register(l)?),
        None => None,
    };
    let mut sink = Sink {
        out: JsonLines::new(io::stdout()),
        metrics: Arc::clone(&metrics),
        recent,
        enricher,
        host: host_collectors,
        lifecycle: Lifecycle::new(
            host.clone(),
            Duration::from_millis(args.stuck_after_ms),
            exits_seen,
        )
        .with_proc_root(args.host_root.join("proc"))
        .with_resolver(hierarchy.clone().map(IdResolver::new)),
        hierarchy,
        recovery,
    };
    metrics.add_collector(lifecycle::collector(sink.lifecycle.stats()));
    if let Some(up) = startup {
        if up.lost_records > 0 {
            tracing::warn!(
                lost = up.lost_records,
                "kernel-log records were overwritten while the agent was down; kills among them cannot be replayed"
            );
        }
        // Kills since the probes attached are in the ring buffer: record them live, and do
        // not replay their kernel-log lines.
        let mut live = std::collections::HashSet::new();
        let mut evs = Vec::new();
        let now = Instant::now();
        let mut batch = Vec::new();
        while let Some(item) = ring.get_mut().next() {
            batch.extend(ringbuf::decode(&item));
        }
        // The scored tasks of these kills were submitted before them: read them after.
        candidates_probe::drain(scored_ring.get_mut(), |r| correlator.push_candidate(r));
        for rec in batch {
            if let ringbuf::Record::Victim(v) = &rec {
                live.insert(v.pid);
            }
            evs.extend(correlator.push(rec, now));
        }
        sink.emit(evs)?;
        let missed: Vec<OomEvent> = up
            .missed
            .into_iter()
            .filter(|e| !live.contains(&e.pid))
            .collect();
        if up.resumed {
            tracing::info!(
                kills = missed.len(),
                "replaying kills logged while the agent was down"
            );
        }
        sink.emit(missed)?;
        sink.save_position();
    }
    // Everything privileged is done: programs attached, maps and /dev/kmsg open, port bound.
    match caps::drop_all() {
        Ok(()) => tracing::info!("dropped all capabilities"),
        Err(e) => tracing::warn!("could not drop capabilities: {e}"),
    }
    tracing::info!("probes ready; waiting for OOM kills");

    let result = loop {
        metrics.set_marks_without_kill(correlator.marks_without_kill());
        // While a victim waits for its kernel-log report, look for it every millisecond
        // rather than wait for the kernel's wake-up (which comes after the console print).
        let kmsg_poll =
            (kmsg.is_some() && correlator.has_held()).then(|| Instant::now() + KMSG_POLL);
        let deadline = [
            correlator.next_deadline(),
            sink.recovery_deadline(),
            sink.lifecycle.next_deadline(),
            kmsg_poll,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sigterm.recv() => break Ok("SIGTERM"),
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => break Err(RunError::RingBuf(e)),
                };
                // Clear readiness before draining: a record submitted after the drain then
                // wakes us again instead of waiting for the next kill.
                guard.clear_ready();
                let rb = guard.get_inner_mut();
                let mut batch = Vec::new();
                while let Some(item) = rb.next() {
                    if let Some(rec) = ringbuf::decode(&item) {
                        batch.push(rec);
                    }
                }
                // The scored tasks of these kills were submitted before them: read them after.
                candidates_probe::drain(scored_ring.get_mut(), |r| correlator.push_candidate(r));
                let now = Instant::now();
                if let Some(first) = batch.first() {
                    let age_us = monotonic_ns().saturating_sub(first.ktime_ns()) / 1000;
                    tracing::trace!(records = batch.len(), age_us, "ring buffer drained");
                }
                // Victim records make events; exits, reaper steps and userspace kills go to the
                // lifecycle tracker, after the events they may follow.
                let (victims, others): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(ringbuf::Record::is_victim_record);
                let evs: Vec<OomEvent> =
                    victims.into_iter().flat_map(|rec| correlator.push(rec, now)).collect();
                if let Err(e) = sink.emit(evs) {
                    break Err(e);
                }
                if correlator.has_held() {
                    if let Err(e) = drain_kmsg_now(&mut kmsg, &mut correlator, &mut sink, kmsg_context) {
                        break Err(e);
                    }
                }
                let outs = others.iter().flat_map(|r| sink.lifecycle.push(r, now)).collect();
                if let Err(e) = sink.emit_lifecycle(outs) {
                    break Err(e);
                }
            }
            guard = scored_ring.readable_mut() => {
                match guard {
                    Ok(mut g) => {
                        g.clear_ready();
                        candidates_probe::drain(g.get_inner_mut(), |r| correlator.push_candidate(r));
                    }
                    Err(e) => break Err(RunError::RingBuf(e)),
                }
            }
            _ = sleep_until_opt(deadline) => {
                if let Err(e) = drain_kmsg_now(&mut kmsg, &mut correlator, &mut sink, kmsg_context) {
                    break Err(e);
                }
                let now = Instant::now();
                let mut evs = correlator.flush_expired(now);
                evs.extend(sink.recovery.as_mut().map(|r| r.due(now)).unwrap_or_default());
                if let Err(e) = sink.emit(evs) {
                    break Err(e);
                }
                let outs = sink.lifecycle.due(now);
                if let Err(e) = sink.emit_lifecycle(outs) {
                    break Err(e);
                }
            }
            ev = next_kmsg(&mut kmsg) => {
                match ev {
                    Ok(KmsgEvent::Record(rec)) => {
                        let now = Instant::now();
                        if let Some(r) = sink.recovery.as_mut() {
                            r.on_record(&rec, now);
                        }
                        let evs = if kmsg_context {
                            correlator.push_kmsg(&rec, now)
                        } else {
                            Vec::new()
                        };
                        if let Err(e) = sink.emit(evs) {
                            break Err(e);
                        }
                    }
                    Ok(KmsgEvent::Gap(gap)) => tracing::warn!(
                        lost = gap.lost(),
                        "kernel log overwrote records before they were read; OOM context may be missing"
                    ),
                    Err(e) => {
                        tracing::warn!("kernel log unreadable, no more OOM context from it: {e}");
                        kmsg = None;
                    }
                }
            }
            guard = readable_opt(&mut log_fd) => {
                if let Some(Ok(mut g)) = guard {
                    g.clear_ready();
                    g.get_inner_mut().flush();
                }
            }
        }
    };
    let leftover = correlator.flush_all();
    let flushed = sink.emit(leftover);
    sink.save_position();
    let _ = stop_tx.send(());
    let _ = server_task.await;
    drop(ring);
    drop(ebpf);
    let signal = result?;
    flushed?;
    tracing::info!(signal, "probes detached; exiting");
    Ok(())
}

/// Probe-table name of the kernel-log source.
const PROBE_KMSG: &str = "kmsg:oom_report";

async fn next_kmsg(reader: &mut Option<AsyncKmsgReader>) -> Result<KmsgEvent, KmsgError> {
    match reader {
        Some(r) => r.next_event().await,
        None => std::future::pending().await,
    }
}

/// Registers a map's file descriptor with the runtime (read readiness only: no polling).
fn register<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>, RunError> {
    // SAFETY: `inner` owns its map fd (aya's MapData closes it only on drop), so the descriptor
    // stays open and the same for as long as the AsyncFd that owns `inner` lives.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::RingBuf(e.into_parts().1))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn readable_opt<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> Option<io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>>> {
    match fd {
        Some(fd) => Some(fd.readable_mut().await),
        None => std::future::pending().await,
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup.
fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: lim is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            io::Error::last_os_error()
        );
    }
}

fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
