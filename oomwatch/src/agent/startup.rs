//! Start-up, step by step: everything privileged happens here (programs attached, maps and
//! `/dev/kmsg` open, port bound), then the capabilities are dropped.
use std::collections::HashSet;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aya::maps::{MapData, PerCpuArray};
use prometheus::proto::MetricType;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use super::error::RunError;
use super::event_loop::{Agent, ServerDone, Shutdown};
use super::sink::Sink;
use crate::config::Config;
use crate::correlate::Correlator;
use crate::enrich::bundle::BundleConfig;
use crate::enrich::stack::StackSymbolizer;
use crate::enrich::Enricher;
use crate::host::HostCollectors;
use crate::kill_outcome::sigkill::{self, Sigkills};
use crate::kill_outcome::{self, Lifecycle};
use crate::record::{OomEvent, ProbeId, Source, StackMode};
use crate::recovery::position::{self, StateFile};
use crate::recovery::{Recovery, StartUp};
use crate::server;
use crate::sink::json::{self, JsonLines};
use crate::sink::metrics::{prom, BuildInfo, EbpfCounters, Metrics};
use crate::sink::recent::RecentEvents;
use crate::source::gfp::GfpDecoder;
use crate::source::kmsg::syslog::SyslogBuffer;
use crate::source::kmsg::{AsyncKmsgReader, KmsgError, KmsgReader};
use crate::source::probe::candidates as candidates_probe;
use crate::source::probe::loader::{self, LoadOptions, Probes};
use crate::source::probe::ringbuf::{self, Record};
use crate::source::probe::silence::Silence;
use crate::sys::caps;
use crate::sys::cgroup::{IdResolver, MemoryHierarchy};
use crate::sys::clock::monotonic_ns;
use crate::sys::seccomp;
use crate::sys::steer::LoopSteer;
use crate::sys::thread;

/// Which rows of the probe table attached, as the rest of start-up needs it.
struct Hooks {
    victim_tp: bool,
    victim_btf: bool,
    /// The `oom_kill_process` row in use, if any.
    oom_kill: Option<Source>,
    scored: bool,
    /// The `oom_badness` row in use, if any.
    badness: Option<ProbeId>,
    exits: bool,
    kill_signals: bool,
    /// A SIGKILL-attribution row.
    sigkills: bool,
    /// `reclaim_retry_zone`, `compact_retry`.
    near_oom: (bool, bool),
}

impl Hooks {
    /// The attached `mark_victim` rows.
    fn victim_rows(&self) -> Vec<ProbeId> {
        [
            (self.victim_btf, ProbeId::MarkVictimBtf),
            (self.victim_tp, ProbeId::MarkVictimTp),
        ]
        .into_iter()
        .filter_map(|(up, row)| up.then_some(row))
        .collect()
    }

    fn of(p: &Probes) -> Self {
        let oom_kill = if p.attached(ProbeId::OomKillFentry) {
            Some(Source::OomKillFentry)
        } else if p.attached(ProbeId::OomKillKprobe) {
            Some(Source::OomKillKprobe)
        } else {
            None
        };
        Hooks {
            victim_tp: p.attached(ProbeId::MarkVictimTp),
            victim_btf: p.attached(ProbeId::MarkVictimBtf),
            oom_kill,
            scored: candidates_probe::PROBES.iter().any(|&r| p.attached(r)),
            badness: candidates_probe::PROBES
                .into_iter()
                .find(|&r| p.attached(r)),
            exits: p.attached(ProbeId::ProcessExit),
            kill_signals: p.attached(ProbeId::SignalBtf) || p.attached(ProbeId::SignalTp),
            sigkills: p.attached(ProbeId::SigkillBtf) || p.attached(ProbeId::SigkillTp),
            near_oom: (
                p.attached(ProbeId::ReclaimRetry),
                p.attached(ProbeId::CompactRetry),
            ),
        }
    }
}

/// The kernel log, opened and read up to now, and what the agent missed while down.
#[derive(Default)]
struct KernelLog {
    reader: Option<AsyncKmsgReader>,
    recovery: Option<Recovery>,
    missed: Option<StartUp>,
}

/// Runs every start-up step; the agent is then ready for its event loop.
pub async fn start(cfg: &Config, steer: Option<LoopSteer>) -> Result<Agent, RunError> {
    let state_file = prepare_process(cfg)?;
    // Read the web configuration and bind before touching the kernel: a bad file or a busy
    // port fails fast with nothing attached.
    let web = web_config(cfg)?;
    if let Err(e) = server::watch_hangup_early() {
        tracing::warn!("cannot watch SIGHUP: {e}; a SIGHUP would end the agent");
    }
    let listener = server::bind(cfg.listen).await?;
    let probes = loader::load(&load_options(cfg))?;
    let metrics = new_metrics(cfg);
    report_probes(&probes, &metrics);
    let hooks = Hooks::of(&probes);
    let Probes {
        ebpf,
        events,
        candidates,
        stacks,
        sigkills,
        counters,
        logger,
        constraints,
        gfp,
        ..
    } = probes;
    // While privileged: the copy of kallsyms keeps the kernel's addresses.
    let symbolizer = StackSymbolizer::new(cfg.stacks, &cfg.host_root);
    let counters = wire_ebpf_counters(&metrics, counters, &hooks, cfg.stacks);
    let hierarchy = find_hierarchy(cfg);
    let boot_id = position::boot_id(&cfg.host_root.join("proc")).unwrap_or_default();
    let silence = Silence::with_file(&cfg.state_dir, boot_id);
    metrics.set_probe_silence(silence.clone());
    let resolver = hierarchy.clone().map(IdResolver::new);
    let correlator = new_correlator(cfg, &hooks, resolver.clone(), gfp)
        .with_silence(silence.clone(), hooks.badness);
    let host = new_host_collectors(cfg, &metrics)?;
    let mut log = open_kernel_log(cfg, state_file)?;
    log.recovery = log
        .recovery
        .map(|r| r.with_silence(silence.clone(), hooks.victim_rows()));
    let (correlator, kmsg_context) =
        choose_context_source(cfg, &hooks, correlator, &log, &metrics, constraints);
    let recent = Arc::new(RecentEvents::new(cfg.recent_events));
    let (stop, server) = start_server(cfg, (listener, web), &metrics, &recent, &host)?;
    // Parsed BTF and load-time buffers are gone; hand their pages back to the kernel.
    trim_heap();
    let lifecycle = new_lifecycle(cfg, &hooks, resolver.clone()).with_silence(silence);
    let sink = new_sink(
        cfg,
        &metrics,
        SinkParts {
            recent,
            host,
            hierarchy,
            resolver,
            lifecycle,
            recovery: log.recovery,
            stacks: symbolizer,
        },
    )?;
    let signal_rows = hooks.sigkills.then_some(counters);
    metrics.add_collector(sigkill::collector(sink.sigkills.stats(), signal_rows));
    let mut agent = Agent {
        correlator,
        sink,
        kmsg: log.reader,
        kmsg_context,
        ring: register(events)?,
        scored_ring: register(candidates)?,
        stack_ring: register(stacks)?,
        sigkill_ring: register(sigkills)?,
        log_fd: logger.map(register).transpose()?,
        sigint: signal(SignalKind::interrupt()).map_err(|e| RunError::Signal("SIGINT", e))?,
        sigterm: signal(SignalKind::terminate()).map_err(|e| RunError::Signal("SIGTERM", e))?,
        shutdown: Shutdown::new(stop, server, ebpf),
        drop_rows: cfg.test.drop_probe_records.clone(),
        miss_kill_signals: cfg.test.miss_kill_signals,
        oom_row: hooks
            .oom_kill
            .and_then(Source::probe)
            .unwrap_or(ProbeId::OomKillFentry),
    };
    watch_the_loop(&agent, &metrics, steer);
    settle(cfg, &mut agent, log.missed)?;
    Ok(agent)
}

/// Starts the watchers that move the event loop off a CPU the kernel holds (`sys::steer`) on
/// the probes' ring buffers, and counts their moves in
/// `oomwatch_event_loop_moves_total`.
/// Without them (a failure is logged) the agent works as before, its records at times later.
fn watch_the_loop(agent: &Agent, metrics: &Metrics, steer: Option<LoopSteer>) {
    let Some(steer) = steer else {
        return;
    };
    let rings = [
        agent.ring.get_ref().as_fd(),
        agent.scored_ring.get_ref().as_fd(),
        agent.stack_ring.get_ref().as_fd(),
        agent.sigkill_ring.get_ref().as_fd(),
    ];
    match steer.watch(&rings, caps::drop_this_thread) {
        Ok(cpus) => tracing::debug!(?cpus, "the event loop's watchers run"),
        Err(e) => {
            tracing::warn!("cannot start the event loop's watchers: {e}");
            return;
        }
    }
    metrics.add_collector(Box::new(move || {
        vec![prom::family(
            "oomwatch_event_loop_moves_total",
            "Times the event loop, woken by a probe and still queued on another CPU (one the \
             kernel may hold: an OOM kill's process walk), was moved to a watcher's CPU.",
            MetricType::COUNTER,
            vec![prom::counter(&[], steer.moves() as f64)],
        )]
    }));
}

/// The last start-up steps: what was missed while down, written; then the privileges dropped
/// and the system calls filtered, for the rest of the agent's life.
fn settle(cfg: &Config, agent: &mut Agent, missed: Option<StartUp>) -> Result<(), RunError> {
    if let Some(up) = missed {
        record_missed(agent, up)?;
    }
    let syslog = agent.kmsg.as_ref().is_some_and(AsyncKmsgReader::is_syslog);
    drop_privileges(cfg, syslog)?;
    filter_syscalls(cfg)?;
    tracing::info!("probes ready; waiting for OOM kills");
    Ok(())
}

/// Where finished records go: the JSON lines on stdout (their own thread), metrics, the recent
/// ring, enrichment, the kill-outcome tracker and recovery.
/// What [`new_sink`] wires together besides the configuration and the metrics.
struct SinkParts {
    recent: Arc<RecentEvents>,
    host: Arc<HostCollectors>,
    hierarchy: Option<MemoryHierarchy>,
    /// The one cgroup id resolver, shared by the correlator and the trackers.
    resolver: Option<IdResolver>,
    lifecycle: Lifecycle,
    recovery: Option<Recovery>,
    stacks: StackSymbolizer,
}

fn new_sink(cfg: &Config, metrics: &Arc<Metrics>, parts: SinkParts) -> Result<Sink, RunError> {
    let SinkParts {
        recent,
        host,
        hierarchy,
        resolver,
        lifecycle,
        recovery,
        stacks,
    } = parts;
    // Its thread holds no capability from its first instruction on.
    let out = JsonLines::spawn(io::stdout(), json::QUEUE_LINES, caps::drop_this_thread)
        .map_err(RunError::Stdout)?;
    let stdout_stats = out.stats();
    metrics.add_collector(Box::new(move || stdout_stats.families()));
    let sink = Sink {
        out,
        metrics: Arc::clone(metrics),
        recent,
        enricher: Enricher::with_bundles(bundle_config(cfg)).with_hierarchy(hierarchy.clone()),
        host,
        lifecycle,
        sigkills: Sigkills::new(
            cfg.host.clone(),
            cfg.host_root.join("proc"),
            cfg.max_label_sets,
        )
        .with_resolver(resolver),
        hierarchy,
        recovery,
        stacks,
    };
    metrics.add_collector(kill_outcome::collector(sink.lifecycle.stats()));
    Ok(sink)
}

/// `--web.config.file`, read before anything touches the kernel (a bad file fails fast).
fn web_config(cfg: &Config) -> Result<server::WebConfig, RunError> {
    Ok(match &cfg.web_config_file {
        Some(p) => server::WebConfig::load(p)?,
        None => server::WebConfig::default(),
    })
}

/// Checks privileges and `--host-root`, opens the state file, and protects the agent from the
/// OOM killer it watches (oom_score_adj, nice, memlock).
fn prepare_process(cfg: &Config) -> Result<StateFile, RunError> {
    caps::check_self()?;
    if !cfg.host_root.join("proc").is_dir() {
        return Err(RunError::HostRoot(cfg.host_root.clone()));
    }
    let state_file = StateFile::open(&cfg.state_dir)?;
    let adj = cfg.oom_score_adj;
    match caps::set_own_oom_score_adj(adj) {
        Ok(()) => tracing::info!(
            oom_score_adj = adj,
            "set own oom_score_adj so the OOM killer spares the agent"
        ),
        Err(e) => tracing::warn!(
            oom_score_adj = adj,
            "could not set own oom_score_adj: {e}; the agent stays killable"
        ),
    }
    let allocating =
        std::fs::read_to_string(cfg.host_root.join("proc/sys/vm/oom_kill_allocating_task"))
            .ok()
            .and_then(|v| crate::host::sysctl::parse_int(&v));
    if let Some(risk) = caps::allocating_task_risk(allocating, adj) {
        tracing::warn!("{risk}");
    }
    match caps::set_own_nice(cfg.nice) {
        Ok(()) => tracing::info!(nice = cfg.nice, "set own nice value"),
        Err(e) => tracing::warn!(nice = cfg.nice, "could not set own nice value: {e}"),
    }
    raise_memlock_limit();
    Ok(state_file)
}

fn load_options(cfg: &Config) -> LoadOptions {
    LoadOptions {
        btf_path: cfg.btf.clone(),
        force_pid_only: cfg.test.force_pid_only,
        inject_read_fault: cfg.test.inject_read_fault,
        disabled: cfg.disabled.clone(),
        userspace_killers: cfg.userspace_killers.clone(),
        stacks: cfg.stacks,
        sigkills: cfg.sigkills,
        root_memcg_id: root_memcg_id(cfg),
    }
}

/// The root memory cgroup's id (its directory's inode), whose SIGKILLs are not attributed.
fn root_memcg_id(cfg: &Config) -> u64 {
    use std::os::unix::fs::MetadataExt;
    MemoryHierarchy::find_under(&cfg.host_root)
        .and_then(|h| std::fs::metadata(&h.mount).ok())
        .map_or(0, |m| m.ino())
}

fn new_metrics(cfg: &Config) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new(
        cfg.max_label_sets,
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("OOMWATCH_GIT_COMMIT"),
        },
    ));
    metrics.add_synthetic_label_sets(cfg.test.synthetic_label_sets);
    metrics
}

/// One log line per row of the probe table, and `oomwatch_probe_attached`.
fn report_probes(probes: &Probes, metrics: &Metrics) {
    for s in &probes.status {
        metrics.set_probe_attached(s.probe, s.attached);
        if s.attached {
            tracing::info!(probe = %s.probe, reads = %s.detail, "probe attached");
        } else {
            tracing::warn!(probe = %s.probe, reason = %s.detail, "probe unavailable");
        }
    }
}

/// The eBPF side's own counters: near-OOM retries, dropped scored tasks, ring-buffer drops and
/// failed kernel reads.
fn wire_ebpf_counters(
    metrics: &Metrics,
    counters: PerCpuArray<MapData, u64>,
    hooks: &Hooks,
    stacks: StackMode,
) -> Arc<Mutex<PerCpuArray<MapData, u64>>> {
    let counters = Arc::new(Mutex::new(counters));
    metrics.add_collector(crate::enrich::stack::drops_collector(
        Arc::clone(&counters),
        stacks,
    ));
    metrics.add_collector(kill_outcome::near_oom_collector(
        Arc::clone(&counters),
        hooks.near_oom,
    ));
    metrics.add_collector(crate::correlate::scored::drops_collector(
        Arc::clone(&counters),
        hooks.scored,
    ));
    let shared = Arc::clone(&counters);
    metrics.set_ebpf_counters_reader(Box::new(move || {
        let c = shared.lock().unwrap_or_else(|p| p.into_inner());
        EbpfCounters {
            ringbuf_drops: loader::read_counter(&c, loader::RINGBUF_DROPS),
            read_errors: loader::read_counter(&c, loader::READ_ERRORS),
        }
    }));
    counters
}

fn find_hierarchy(cfg: &Config) -> Option<MemoryHierarchy> {
    let hierarchy = MemoryHierarchy::find_under(&cfg.host_root);
    match &hierarchy {
        Some(h) => {
            tracing::info!(version = ?h.version, mount = %h.mount.display(), "memory cgroup hierarchy")
        }
        None => {
            tracing::warn!("no memory cgroup hierarchy mounted; cgroup paths come from /proc only")
        }
    }
    hierarchy
}

fn new_correlator(
    cfg: &Config,
    hooks: &Hooks,
    resolver: Option<IdResolver>,
    gfp: Option<(GfpDecoder, &'static str)>,
) -> Correlator {
    match &gfp {
        Some((_, from)) => tracing::info!("GFP flag names: {from}"),
        None => tracing::info!(
            "GFP flag names: no table in tracefs or BTF; only the kernel log's own decoding"
        ),
    }
    let correlator = Correlator::new(
        hooks.victim_tp,
        hooks.victim_btf,
        cfg.correlation_window,
        cfg.host.clone(),
        resolver,
    )
    .with_gfp(gfp.map(|(d, _)| d))
    .with_proc_root(cfg.host_root.join("proc"));
    // With a signal_generate program, a mark is a kill only if its SIGKILL was seen. The
    // programs were attached before now: marks from now on carry the answer.
    if hooks.kill_signals {
        return correlator.with_kill_signals_since(monotonic_ns());
    }
    correlator
}

fn new_host_collectors(cfg: &Config, metrics: &Metrics) -> Result<Arc<HostCollectors>, RunError> {
    let host = HostCollectors::new(&cfg.host_root)
        .with_headroom(cfg.headroom_cgroups)
        .with_headroom_bundles(bundle_config(cfg));
    let host = Arc::new(host);
    if let (Some(every), true) = (cfg.headroom_interval, cfg.headroom_cgroups > 0) {
        // The walk reads every memory cgroup and all of /proc (half a second of CPU on a node
        // of 10,000 processes): at SCHED_IDLE it never takes a CPU from the event loop.
        let prelude = || {
            caps::drop_this_thread()?;
            thread::idle_priority()
        };
        host.spawn_headroom_refresh(every, prelude)
            .map_err(RunError::DropPrivileges)?;
    }
    let h = Arc::clone(&host);
    metrics.add_collector(Box::new(move || h.collect()));
    let root = cfg.host_root.clone();
    metrics.set_kernel_kills_reader(Box::new(move || {
        crate::host::vmstat::kernel_oom_kills(&root).ok()
    }));
    Ok(host)
}

/// The container runtimes' state directories, as `--host-root`, `--docker-root`,
/// `--podman-root` and `--containerd-state` name them.
fn bundle_config(cfg: &Config) -> BundleConfig {
    BundleConfig {
        host_root: cfg.host_root.clone(),
        docker_root: cfg.docker_roots.clone(),
        podman_root: cfg.podman_roots.clone(),
        containerd_state: cfg.containerd_states.clone(),
        ..BundleConfig::default()
    }
}

/// The kernel log: the safety net for kills (replay after downtime, kills the probes did not
/// report), and the OOM context where no `oom_kill_process` probe attached.
fn open_kernel_log(cfg: &Config, state_file: StateFile) -> Result<KernelLog, RunError> {
    let boot_id = position::boot_id(&cfg.host_root.join("proc")).unwrap_or_default();
    let opened = match cfg.test.kmsg_via_syslog {
        true => Err(KmsgError::Open(std::io::ErrorKind::PermissionDenied.into())),
        false => KmsgReader::open(),
    };
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => return Ok(syslog_fallback(&e, cfg.host.clone())),
    };
    match Recovery::start(state_file, boot_id, cfg.host.clone(), &mut reader) {
        Ok((recovery, missed)) => Ok(KernelLog {
            reader: Some(AsyncKmsgReader::new(reader)?),
            recovery: Some(recovery),
            missed: Some(missed),
        }),
        Err(e) => {
            tracing::warn!("kernel log unreadable: {e}; no replay of kills missed while down");
            Ok(KernelLog::default())
        }
    }
}

/// Where `/dev/kmsg` cannot be opened (a container's device cgroup refuses the device): the
/// log through `syslog(2)`, from now on: its kill lines matched with live records as usual,
/// but without replay (its record numbers are the agent's own, meaningless after a restart).
fn syslog_fallback(kmsg: &KmsgError, host: String) -> KernelLog {
    let opened = SyslogBuffer::open().and_then(|b| {
        let mut r = KmsgReader::new(b);
        r.seek_to_end()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(r)
    });
    match opened {
        Ok(r) => {
            tracing::warn!(
                "{kmsg}; reading the kernel log with syslog(2) instead (CAP_SYSLOG; polled every \
                 {} ms): OOM context and kills the probes missed as usual, no replay of kills \
                 missed while down",
                crate::source::kmsg::async_reader::SYSLOG_POLL.as_millis()
            );
            KernelLog {
                reader: Some(AsyncKmsgReader::syslog(r)),
                recovery: Some(Recovery::live_only(host)),
                missed: None,
            }
        }
        Err(e) => {
            tracing::warn!(
                "kernel log unreadable: {kmsg}, and syslog(2) too: {e}; no OOM context from it, \
                 no replay of kills missed while down (needs CAP_SYSLOG)"
            );
            KernelLog::default()
        }
    }
}

/// Invocation context: from the `oom_kill_process` probe, else from the kernel's own report.
/// Also says whether the kernel log feeds the correlator.
fn choose_context_source(
    cfg: &Config,
    hooks: &Hooks,
    mut c: Correlator,
    log: &KernelLog,
    metrics: &Metrics,
    constraints: Vec<(i64, String)>,
) -> (Correlator, bool) {
    let kmsg = ProbeId::KmsgOomReport;
    let take = |c: Correlator| c.with_kmsg().with_candidates(cfg.candidates);
    let from_log = if let Some(src) = hooks.oom_kill {
        c = c
            .with_oom_kill(src, constraints)
            .with_candidates(cfg.candidates);
        // The report still gives what the probes cannot: the scored candidates (when no
        // oom_badness row attached; else what that probe could not read) and the domain's
        // memory at the kill.
        let also = log.reader.is_some() && cfg.candidates > 0;
        if also {
            c = take(c);
        }
        also
    } else if !cfg.kmsg_enabled() {
        tracing::warn!(probe = %kmsg, reason = crate::source::probe::table::DISABLED,
            "probe unavailable: events carry no OOM context");
        metrics.set_probe_attached(kmsg, false);
        false
    } else if log.reader.is_some() {
        tracing::info!(probe = %kmsg,
            "probe attached: OOM context (constraint, gfp_mask, order, memcg) from the kernel log");
        metrics.set_probe_attached(kmsg, true);
        c = take(c);
        true
    } else {
        tracing::warn!(probe = %kmsg, reason = "kernel log unreadable",
            "probe unavailable: events carry no OOM context");
        metrics.set_probe_attached(kmsg, false);
        false
    };
    (c, from_log)
}

/// The HTTP server on a thread of its own (its own single-threaded runtime, no capability):
/// `/healthz` and scrapes are answered while the event loop symbolizes, enriches and writes
/// a storm's records, and a record never waits behind a request.
fn start_server(
    cfg: &Config,
    (listener, web): (TcpListener, server::WebConfig),
    metrics: &Arc<Metrics>,
    recent: &Arc<RecentEvents>,
    host: &Arc<HostCollectors>,
) -> Result<(oneshot::Sender<()>, ServerDone), RunError> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    // Two renderers (a scrape and a page at once), below the event loop: see
    // `server::renderer`.
    let renderer =
        server::Renderer::start(2, thread::own_nice()).map_err(RunError::ServerThread)?;
    let state = server::ServerState::new(Arc::clone(metrics))
        .with_renderer(renderer)
        .with_recent(Arc::clone(recent))
        .with_host(Arc::clone(host))
        .with_node(&cfg.host)
        .metrics_only(cfg.metrics_only);
    let limits = server::Limits::default().with_max_connections(cfg.max_connections);
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let auth = if web.auth.is_some() {
        ", basic auth"
    } else {
        ""
    };
    // The socket leaves this runtime's reactor for the server thread's; that runtime is built
    // here, before the seccomp filter, and moved to the thread.
    let listener = listener.into_std().map_err(RunError::ServerThread)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::ServerThread)?;
    let serve = move || {
        let result = serve_on(rt, listener, state, limits, web, async move {
            let _ = stop_rx.await;
        });
        let _ = done_tx.send(result);
    };
    thread::spawn_after("oomwatch-http", caps::drop_this_thread, serve)
        .map_err(RunError::ServerThread)?;
    let paths = if cfg.metrics_only {
        "/metrics and /healthz"
    } else {
        "/, /events, /metrics and /healthz"
    };
    tracing::info!(listen = %cfg.listen, "serving {paths} ({scheme}{auth})");
    Ok((stop_tx, done_rx))
}

/// Runs the server to its end on `rt`, in the calling thread.
fn serve_on(
    rt: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    state: server::ServerState,
    limits: server::Limits,
    web: server::WebConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), server::ServerError> {
    let addr = listener.local_addr().ok();
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)
            .map_err(|error| server::ServerError::Serve { addr, error })?;
        server::serve_with(listener, state, limits, web, stop).await
    })
}

fn new_lifecycle(cfg: &Config, hooks: &Hooks, resolver: Option<IdResolver>) -> Lifecycle {
    Lifecycle::new(cfg.host.clone(), cfg.stuck_after, hooks.exits)
        .with_proc_root(cfg.host_root.join("proc"))
        .with_resolver(resolver)
}

/// Records the kills since the probes attached (in the ring buffer, live) and replays the kills
/// logged while the agent was down, except those the ring buffer already had.
fn record_missed(agent: &mut Agent, up: StartUp) -> Result<(), RunError> {
    if up.lost_records > 0 {
        tracing::warn!(
            lost = up.lost_records,
            "kernel-log records were overwritten while the agent was down; kills among them cannot be replayed"
        );
    }
    let mut batch = Vec::new();
    while let Some(item) = agent.ring.get_mut().next() {
        batch.extend(ringbuf::decode(&item));
    }
    agent.drop_knob(&mut batch);
    // The scored tasks of these kills were submitted before them: read them after.
    agent.drain_scored();
    let now = Instant::now();
    let mut live = HashSet::new();
    let mut evs = Vec::new();
    for rec in batch {
        if let Record::Victim(v) = &rec {
            live.insert(v.pid);
        }
        evs.extend(agent.correlator.push(rec, now));
    }
    agent.sink.emit(evs)?;
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
    agent.sink.emit(missed)?;
    agent.sink.save_position();
    Ok(())
}

/// Everything privileged is done: programs attached, maps and /dev/kmsg open, port bound.
/// Drops every capability (and the bounding set as far as allowed); a failure is fatal
/// unless `--allow-cap-drop-failure`: an agent left privileged is what an attacker wants.
/// Drops every capability; but CAP_SYSLOG when the kernel log is read with syslog(2).
fn drop_privileges(cfg: &Config, syslog: bool) -> Result<(), RunError> {
    match caps::drop_all_but_syslog(syslog) {
        Ok(bounding) if syslog => {
            tracing::info!(
                bounding_set_dropped = bounding,
                "dropped all capabilities but CAP_SYSLOG (the kernel log is read with syslog(2))"
            );
            Ok(())
        }
        Ok(bounding) => {
            tracing::info!(bounding_set_dropped = bounding, "dropped all capabilities");
            Ok(())
        }
        Err(e) if cfg.allow_cap_drop_failure => {
            tracing::error!(
                "could not drop capabilities: {e}; running privileged (--allow-cap-drop-failure)"
            );
            Ok(())
        }
        Err(e) => Err(RunError::DropPrivileges(e)),
    }
}

/// The seccomp filter (`sys::seccomp`), unless `--seccomp false`; a failure is fatal unless
/// `--allow-cap-drop-failure`.
fn filter_syscalls(cfg: &Config) -> Result<(), RunError> {
    if !cfg.seccomp {
        tracing::warn!("no seccomp filter (--seccomp false): every system call stays allowed");
        return Ok(());
    }
    let mode = match cfg.test.seccomp_log {
        true => seccomp::Mode::Log,
        false => seccomp::Mode::Enforce,
    };
    match seccomp::install(mode) {
        Ok(n) => {
            tracing::info!(
                allowed = n,
                ?mode,
                "seccomp filter installed: {n} system calls allowed, the rest refused (EPERM) \
                 and logged by the kernel"
            );
            Ok(())
        }
        Err(e) if cfg.allow_cap_drop_failure => {
            tracing::error!(
                "could not install the seccomp filter: {e}; running without it \
                 (--allow-cap-drop-failure)"
            );
            Ok(())
        }
        Err(e) => Err(RunError::DropPrivileges(e)),
    }
}

/// Registers a map's file descriptor with the runtime (read readiness only: no polling).
fn register<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>, RunError> {
    // SAFETY: `inner` owns its map fd (aya's MapData closes it only on drop), so the descriptor
    // stays open and the same for as long as the AsyncFd that owns `inner` lives.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::RingBuf(e.into_parts().1))
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
