//! The markdown of `docs/benchmarks.md`: the machine, a table of every number with its
//! target, the side-by-side with node_exporter, where the latency goes, and the method.

use std::fmt::Write as _;

use super::{
    http::ScrapeStats,
    report::{mark, mib, ms, opt_num, pcts, Check, Report},
};

/// `docs/benchmarks.md`.
pub fn markdown(r: &Report, json_path: &str) -> String {
    let mut o = String::new();
    machine(&mut o, r, json_path);
    results(&mut o, r);
    // `OOMWATCH_BENCH_ONLY`: that phase's rows only.
    if r.only.is_none() {
        side_by_side(&mut o, r);
        breakdown(&mut o, r);
    }
    notes(&mut o, r);
    o
}

fn machine(o: &mut String, r: &Report, json_path: &str) {
    let m = &r.machine;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench` (raw numbers: `{json_path}`). One run on the machine \
         below; targets are reported, never enforced on timings (only the correctness rows — \
         records equal kernel kills, nothing dropped — make the bench fail). \
         `cargo xtask bench --smoke` runs a short version in `cargo xtask test`.\n"
    );
    let _ = writeln!(o, "## Machine and run\n\n| | |\n|---|---|");
    let _ = writeln!(o, "| date (UTC) | {} |", r.date);
    let _ = writeln!(
        o,
        "| git commit | `{}` |",
        r.commit.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(o, "| CPU | {}, {} cores |", m.cpu_model, m.cores);
    let _ = writeln!(o, "| RAM | {} MiB |", m.ram_mib);
    let hz = m.hz.map_or(String::new(), |h| format!(" (CONFIG_HZ={h})"));
    let _ = writeln!(o, "| kernel | {}{hz} |", m.kernel);
    let agent = r
        .agent
        .rsplit_once("/target/")
        .map_or(r.agent.as_str(), |(_, p)| p);
    let _ = writeln!(o, "| agent | `{agent}` |");
    let _ = writeln!(
        o,
        "| how busy the machine was | load average {} before, {} after; all CPUs {:.0}% busy \
         over the run, {:.0}% during the idle window (other work on this shared machine \
         included) |\n",
        r.load_before, r.load_after, r.busy_pct, r.idle_busy_pct
    );
}

/// A row of the results table: its number, what, the value, and the check (by name) whose
/// target and verdict it shows.
type Row = (&'static str, String, String, Option<&'static str>);

fn row(
    n: &'static str,
    what: impl Into<String>,
    value: String,
    check: Option<&'static str>,
) -> Row {
    (n, what.into(), value, check)
}

fn results(o: &mut String, r: &Report) {
    let checks = r.checks();
    let _ = writeln!(o, "## Results\n");
    let _ = writeln!(o, "| # | measurement | value | target | met |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    let all = r.only.is_none();
    let rows = (all.then(|| {
        storm_rows(r)
            .into_iter()
            .chain(idle_rows(r))
            .chain(scrape_rows(r))
    }))
    .into_iter()
    .flatten()
    .chain(big_node_rows(r));
    for (n, what, value, check) in rows {
        let c: Option<&Check> = check.and_then(|name| checks.iter().find(|c| c.name == name));
        let (t, ok) = c.map_or(("—", ""), |c| (c.target, mark(c.ok)));
        let _ = writeln!(o, "| {n} | {what} | {value} | {t} | {ok} |");
    }
    o.push('\n');
}

const STORM_OK: Option<&str> = Some("storm: records = kernel kills, none dropped");

fn storm_rows(r: &Report) -> Vec<Row> {
    let s = &r.storm;
    let (ncg, per) = r.storm_plan;
    vec![
        row(
            "1",
            format!(
                "OOM storm ({ncg} cgroups × {per} kills, {} MiB limit): kills counted by the kernel",
                s.limit_mib
            ),
            format!("{} in {:.1} s", s.kernel_kills, s.secs),
            None,
        ),
        row("1", "records emitted", s.records.to_string(), STORM_OK),
        row(
            "1",
            "records dropped (ring buffer) / replayed / missed",
            format!(
                "{} / {} / {}",
                opt_num(s.dropped),
                s.replayed,
                opt_num(s.missed)
            ),
            STORM_OK,
        ),
        row(
            "1",
            "kill → record latency p50 / p95 / p99 / max",
            pcts(&s.latency_ms),
            Some("storm: kill → record p99"),
        ),
        row(
            "1",
            "agent CPU time per record",
            s.cpu_us_per_record
                .map_or("n/a".into(), |v| format!("{v:.0} µs")),
            None,
        ),
        row(
            "1",
            "agent peak RSS during the storm",
            format!("{:.2} MiB", mib(s.peak_rss_kib)),
            None,
        ),
    ]
    .into_iter()
    .chain(stacks_rows(r))
    .chain(sigkill_rows(r))
    .collect()
}

/// The storm again with `--sigkills false`, and a SIGKILL storm during an OOM storm: what
/// attributing every SIGKILL costs.
fn sigkill_rows(r: &Report) -> Vec<Row> {
    let cpu = |s: &super::phases::Storm| {
        s.cpu_us_per_record
            .map_or("n/a".into(), |v| format!("{v:.0} µs"))
    };
    let mut rows = Vec::new();
    if let Some(off) = &r.storm_sigkills_off {
        rows.push(row(
            "1c",
            format!(
                "same storm, `--sigkills false` ({} kills): kill → record p50 / p95 / p99 / max",
                off.kernel_kills
            ),
            pcts(&off.latency_ms),
            None,
        ));
        rows.push(row(
            "1c",
            "sigkills on / off: agent CPU time per OOM record",
            format!("{} / {}", cpu(&r.storm), cpu(off)),
            None,
        ));
    }
    let Some(s) = &r.sigkill_storm else {
        return rows;
    };
    let num = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
    rows.extend([
        row(
            "1c",
            format!(
                "SIGKILL storm ({} SIGKILLs in {:.1} s): records / rate-limited / ring full",
                s.kills, s.secs
            ),
            format!(
                "{} / {} / {}",
                s.recorded,
                num(s.dropped_rate_limited),
                num(s.dropped_ring_full)
            ),
            None,
        ),
        row(
            "1c",
            format!(
                "during it, OOM storm ({} kernel kills, {} records): kill → record p50 / p95 / \
                 p99 / max",
                s.oom.kernel_kills, s.oom.records
            ),
            pcts(&s.oom.latency_ms),
            None,
        ),
        row(
            "1c",
            "SIGKILL storm: agent CPU per SIGKILL sent; signal → line p99",
            format!(
                "{:.1} µs; {}",
                s.cpu_us_per_kill,
                s.read_ms
                    .map_or("n/a".into(), |p| format!("{:.2} ms", p.p99))
            ),
            None,
        ),
    ]);
    rows
}

/// The storm again with `--stacks none`: what taking and symbolizing the triggers' stacks
/// costs (the main storm has them on).
fn stacks_rows(r: &Report) -> Vec<Row> {
    let Some(off) = &r.storm_stacks_off else {
        return Vec::new();
    };
    let on = &r.storm;
    let cpu = |s: &super::phases::Storm| {
        s.cpu_us_per_record
            .map_or("n/a".into(), |v| format!("{v:.0} µs"))
    };
    vec![
        row(
            "1b",
            format!(
                "same storm, `--stacks none` ({} kills): kill → record p50 / p95 / p99 / max",
                off.kernel_kills
            ),
            pcts(&off.latency_ms),
            None,
        ),
        row(
            "1b",
            "stacks on / off: agent CPU time per record",
            format!("{} / {}", cpu(on), cpu(off)),
            None,
        ),
        row(
            "1b",
            "stacks on / off: agent peak RSS during the storm (symbol caches warm)",
            format!(
                "{:.2} / {:.2} MiB",
                mib(on.peak_rss_kib),
                mib(off.peak_rss_kib)
            ),
            None,
        ),
    ]
}

fn idle_rows(r: &Report) -> Vec<Row> {
    let (i, ia) = (&r.idle, &r.idle_activity);
    vec![
        row(
            "2",
            format!("idle RSS ({:.0} s)", i.secs),
            format!(
                "{:.2} MiB (peak {:.2} MiB)",
                mib(i.rss_kib),
                mib(i.peak_rss_kib)
            ),
            Some("idle RSS"),
        ),
        row(
            "2",
            "idle CPU",
            format!("{:.4} % of a core ({:.1} ms)", i.cpu_pct, i.cpu_ms),
            Some("idle CPU"),
        ),
        row(
            "2",
            "idle wake-ups (context switches, all threads)",
            format!(
                "{:.2}/s ({} in {:.0} s, {} threads)",
                i.wakeups_per_s, i.wakeups, i.secs, i.threads
            ),
            None,
        ),
        row(
            "2",
            "meanwhile on the host: kernel log lines (OOM kills) / agent records / ring-buffer batches",
            format!(
                "{} ({}) / {} / {}",
                ia.kernel_log_lines, ia.kernel_oom_kills, ia.agent_records, ia.agent_ring_batches
            ),
            None,
        ),
        row(
            "2",
            "start-up to \"probes ready\" (all probes attached)",
            format!("{:.0} ms", r.startup.ms),
            None,
        ),
        row(
            "2",
            "ready → start-up work done (no CPU for 1 s)",
            format!("{:.0} ms", r.startup.settled_after_ms),
            None,
        ),
        row(
            "2",
            "peak RSS during start-up",
            format!("{:.2} MiB", mib(r.startup.peak_rss_kib)),
            None,
        ),
    ]
}

/// `p50 / p99 ms (n=N)` of a scrape series.
fn scrape_p50_p99(s: &ScrapeStats) -> String {
    s.latency_ms.map_or("n/a".into(), |p| {
        format!("{:.2} / {:.2} ms (n={})", p.p50, p.p99, p.n)
    })
}

fn scrape_rows(r: &Report) -> Vec<Row> {
    let sc = &r.scrape_synthetic;
    let mut rows = vec![
        row(
            "3",
            format!(
                "scrape with {} label sets ({} samples), p50 / p99",
                r.synthetic_sets, sc.samples
            ),
            scrape_p50_p99(sc),
            Some("scrape p99"),
        ),
        row("3", "response size", format!("{} bytes", sc.bytes), None),
    ];
    if let Some(t) = &r.scrape_10k_series {
        rows.push(row(
            "3",
            format!(
                "for comparison: {} label sets, {} samples in all ({} bytes), p50 / p99",
                t.label_sets.unwrap_or(0.0),
                t.samples,
                t.bytes
            ),
            scrape_p50_p99(t),
            None,
        ));
    }
    let Some((w, st)) = &r.wrk else {
        rows.push(row("3", "wrk", "not run (wrk missing)".into(), None));
        return rows;
    };
    rows.extend([
        row(
            "3",
            format!(
                "wrk {} s, {} connections, during a storm: req/s, p50 / p99",
                w.secs, w.connections
            ),
            format!(
                "{:.1} req/s, {} / {} ({} errors)",
                w.rps,
                ms(w.p50_ms),
                ms(w.p99_ms),
                w.errors
            ),
            None,
        ),
        row(
            "3",
            "records = kernel kills during wrk (dropped)",
            format!(
                "{} = {} ({})",
                st.records,
                st.kernel_kills,
                opt_num(st.dropped)
            ),
            Some("wrk + storm: records = kernel kills, none dropped"),
        ),
        row(
            "3",
            "kill → record during wrk p50 / p95 / p99 / max",
            pcts(&st.latency_ms),
            None,
        ),
    ]);
    rows
}

/// 5: the big node's start-up, scrapes and flood.
fn big_node_rows(r: &Report) -> Vec<Row> {
    let Some(b) = &r.big_node else {
        return Vec::new();
    };
    let collectors = b
        .collector_ms
        .iter()
        .take(3)
        .map(|(n, v)| format!("{n} {v:.1} ms"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        row(
            "5",
            "big node built for real: memory cgroups / processes / pods (bundle files)",
            format!(
                "{} / {} / {} ({}), built in {:.1} s",
                b.cgroups, b.processes, b.pods, b.bundles, b.build_secs
            ),
            None,
        ),
        row(
            "5",
            "start-up: to \"probes ready\"; then to start-up work done",
            format!(
                "{:.0} ms; {:.0} ms",
                b.startup.ms, b.startup.settled_after_ms
            ),
            None,
        ),
        row(
            "5",
            "RSS when start-up work is done (peak during start-up); after the scrapes",
            format!(
                "{:.2} MiB ({:.2} MiB); {:.2} MiB",
                mib(b.settled_rss_kib),
                mib(b.settled_peak_rss_kib),
                mib(b.rss_after_scrapes_kib)
            ),
            None,
        ),
        row(
            "5",
            format!(
                "scrape ({} bytes, headroom walk over {} cgroups), p50 / p99",
                b.scrape.bytes,
                opt_num(b.walk_scanned)
            ),
            scrape_p50_p99(&b.scrape),
            Some("big node: scrape p99"),
        ),
        row(
            "5",
            "agent CPU per scrape, and as a share of a core at one scrape per 15 s",
            format!(
                "{:.2} ms, {:.3} % of a core",
                b.cpu_ms_per_scrape,
                b.core_pct_at_interval()
            ),
            Some("big node: CPU per scrape at a 15 s interval"),
        ),
        row(
            "5",
            "slowest host collectors at a scrape",
            if collectors.is_empty() {
                "n/a".into()
            } else {
                collectors
            },
            None,
        ),
    ]
    .into_iter()
    .chain(big_node_flood_rows(b))
    .collect()
}

/// Section 5's scrape floods (alone, then with the OOM storm) and `/healthz` meanwhile.
fn big_node_flood_rows(b: &super::big_node::BigNode) -> Vec<Row> {
    let (a, f) = (&b.flood_alone, &b.flood);
    let p99 = |p: &Option<super::stats::Pct>| ms(p.map(|p| p.p99));
    let rate = |f: &super::big_node::Flood| {
        format!(
            "{} / {} ({} errors); {:.0} % of a core",
            ms(f.metrics_ms.map(|p| p.p50)),
            p99(&f.metrics_ms),
            f.errors,
            f.agent_cpu_pct
        )
    };
    vec![
        row(
            "5",
            format!(
                "flood {:.0} s, no OOM storm: `/metrics` at {:.1} req/s (target {:.0}), p50 / \
                 p99; agent CPU",
                a.secs, a.metrics_rps, a.target_rps
            ),
            rate(a),
            None,
        ),
        row(
            "5",
            "`/healthz` every 20 ms during that flood, p50 / p95 / p99 / max",
            pcts(&a.healthz_ms),
            Some("big node: /healthz p99 during the scrape flood (no OOM storm)"),
        ),
        row(
            "5",
            format!(
                "flood {:.0} s with an OOM storm in a pod: `/metrics` at {:.1} req/s, p50 / p99; \
                 agent CPU",
                f.secs, f.metrics_rps
            ),
            rate(f),
            None,
        ),
        row(
            "5",
            "`/healthz` during the flood with the OOM storm (the killers hold a CPU in the \
             kernel, rows below), p50 / p95 / p99 / max",
            pcts(&f.healthz_ms),
            None,
        ),
    ]
    .into_iter()
    .chain(big_node_storm_rows(b))
    .collect()
}

/// Section 5's OOM storms: idle host, big node, big node under the flood, and the kernel's
/// hold beside them.
fn big_node_storm_rows(b: &super::big_node::BigNode) -> Vec<Row> {
    vec![
        row(
            "5",
            format!(
                "idle host: the same storm on a fresh default agent, no big node, nothing \
                 scraping{} ({} kills{}): kill → record",
                match b.console_was {
                    Some(l) => format!(" (console_loglevel {l} → 1, as the whole phase)"),
                    None => String::new(),
                },
                b.idle_host.kernel_kills,
                stolen(&b.idle_host)
            ),
            with_unrobbed(&b.idle_host),
            None,
        ),
        row(
            "5",
            format!(
                "OOM storm in a pod of the big node, no scrapes ({} kills{}): kill → record",
                b.quiet.kernel_kills,
                stolen(&b.quiet)
            ),
            with_unrobbed(&b.quiet),
            None,
        ),
        row(
            "5",
            format!(
                "the same storm during the flood ({} kills{}): kill → record",
                b.flood_storm.kernel_kills,
                stolen(&b.flood_storm)
            ),
            with_unrobbed(&b.flood_storm),
            None,
        ),
    ]
    .into_iter()
    .chain(big_node_comparison_rows(b))
    .collect()
}

/// Section 5's comparisons: the kernel's hold, and kill → record p99 between the storms.
fn big_node_comparison_rows(b: &super::big_node::BigNode) -> Vec<Row> {
    let p99 = |p: &Option<super::stats::Pct>| ms(p.map(|p| p.p99));
    let delta = |d: Option<f64>| d.map_or("n/a".into(), |d| format!("{d:+.2} ms"));
    vec![
        row(
            "5",
            "the kernel alone: each killer's unbroken hold of its CPU after its kill \
             (`mark_victim` → its first switch-out or its SIGKILL delivered, tracefs; kills no \
             steal or stall overlapped), p99: idle host; big node, no scrapes; flood",
            format!(
                "{}; {}; {}",
                p99(&b.idle_host.killer_hold_ms),
                p99(&b.quiet.killer_hold_ms),
                p99(&b.flood_storm.killer_hold_ms)
            ),
            None,
        ),
        row(
            "5",
            "kill → record p99 (kills no steal or stall overlapped): big node with no scrapes − idle \
             host (the kernel's longer hold after each kill, p99); flood − idle host",
            format!(
                "{} ({}); {}",
                delta(b.p99_node_ms()),
                delta(b.p99_killer_hold_node_ms()),
                delta(b.p99_flood_vs_idle_host_ms()),
            ),
            None,
        ),
        row(
            "5",
            "kill → record p99 (kills no steal or stall overlapped): flood − the same node with no \
             scrapes (what the scrapes add)",
            format!(
                "{}{}",
                delta(b.p99_delay_ms()),
                if b.robbed() {
                    " (not conclusive: hypervisor steals overlapped more than a quarter of a \
                     storm's kills)"
                } else {
                    ""
                }
            ),
            Some("big node: kill → record p99, flood − no scrapes"),
        ),
        row(
            "5",
            "storms' records = kernel kills (no scrapes; flood), dropped",
            format!(
                "{} = {}; {} = {} ({} / {})",
                b.quiet.records,
                b.quiet.kernel_kills,
                b.flood_storm.records,
                b.flood_storm.kernel_kills,
                opt_num(b.quiet.dropped),
                opt_num(b.flood_storm.dropped)
            ),
            Some("big node: storms' records = kernel kills, none dropped"),
        ),
    ]
}

fn side_by_side(o: &mut String, r: &Report) {
    let Some(n) = &r.node_exporter else {
        let _ = writeln!(
            o,
            "## oomwatch and prometheus-node-exporter\n\nnode_exporter was not run.\n"
        );
        return;
    };
    let _ = writeln!(
        o,
        "## oomwatch and prometheus-node-exporter, same host, same run\n\n\
         | | oomwatch | node_exporter {} |\n|---|---|---|",
        n.version
            .split_once("version ")
            .and_then(|(_, v)| v.split_whitespace().next())
            .unwrap_or("")
    );
    let (a, b) = (&r.idle, &n.idle);
    let _ = writeln!(
        o,
        "| idle RSS ({:.0} s, same window) | {:.2} MiB | {:.2} MiB |",
        a.secs,
        mib(a.rss_kib),
        mib(b.rss_kib)
    );
    let _ = writeln!(o, "| idle CPU | {:.4} % | {:.4} % |", a.cpu_pct, b.cpu_pct);
    let _ = writeln!(
        o,
        "| idle wake-ups | {:.2}/s | {:.2}/s |",
        a.wakeups_per_s, b.wakeups_per_s
    );
    let _ = writeln!(o, "| threads | {} | {} |", a.threads, b.threads);
    let lat = |s: &ScrapeStats| {
        s.latency_ms
            .map_or("n/a".into(), |p| format!("{:.2} / {:.2} ms", p.p50, p.p99))
    };
    let _ = writeln!(
        o,
        "| scrape latency p50 / p99 ({} scrapes each) | {} | {} |",
        n.scrape.scrapes,
        lat(&r.scrape),
        lat(&n.scrape)
    );
    let _ = writeln!(
        o,
        "| scrape size | {} bytes, {} samples | {} bytes, {} samples |",
        r.scrape.bytes, r.scrape.samples, n.scrape.bytes, n.scrape.samples
    );
    let d = &n.delay;
    let _ = writeln!(
        o,
        "| kill → visible, p50 / p95 / p99 / max ({} single kills) | record written: {} | \
         `node_vmstat_oom_kill` moved, polled every 10 ms: {} |\n",
        d.kills,
        pcts(&d.oomwatch_ms),
        pcts(&d.delay_ms)
    );
    let _ = writeln!(
        o,
        "node_exporter reads `/proc/vmstat` only when scraped, so the second number is how \
         soon a client that scrapes back to back sees the kill (one full scrape took {} at \
         the median); a Prometheus server sees it at its next scrape, on average half the \
         scrape interval later (7.5 s at 15 s). It says that a kill happened, not who died.\n",
        ms(d.poll_ms.map(|p| p.p50))
    );
}

fn breakdown(o: &mut String, r: &Report) {
    let s = &r.storm;
    let _ = writeln!(o, "## Where the kill → record time goes\n");
    let _ = writeln!(
        o,
        "| stage (storm above) | p50 / p95 / p99 / max |\n|---|---|"
    );
    let _ = writeln!(
        o,
        "| kill → agent drained the ring buffer (kernel → user space; per batch) | {} |",
        pcts(&s.drain_ms)
    );
    let _ = writeln!(
        o,
        "| kill → record written (the agent's `latency_us`) | {} |",
        pcts(&s.latency_ms)
    );
    let _ = writeln!(
        o,
        "| kill → line read from the agent's stdout by the bench (cross-check) | {} |",
        pcts(&s.read_ms)
    );
    if s.kill_to_exit_ms.is_some() {
        let _ = writeln!(
            o,
            "| victim killed → exited (the agent's lifecycle lines) | {} |",
            pcts(&s.kill_to_exit_ms)
        );
    }
    for v in &r.variants {
        let _ = writeln!(
            o,
            "| diagnostic storm, {} ({} kills): kill → record | {} |",
            v.what,
            v.storm.kernel_kills,
            pcts(&v.storm.latency_ms)
        );
    }
    let c = &r.console;
    if let (Some(err), Some(info)) = (c.err_line_ms, c.info_line_ms) {
        let _ = writeln!(
            o,
            "| one 190-byte kernel log line at KERN_ERR (as \"Killed process\"), consoles {}, \
             console_loglevel {} | {err:.2} ms (KERN_INFO: {info:.2} ms) |",
            c.consoles.join(", "),
            c.loglevel.map_or("?".into(), |l| l.to_string())
        );
    }
    let _ = writeln!(
        o,
        "\nDuring the storm the agent's threads waited {} per wake-up for a CPU (run queue, \
         `schedstat`), and the agent moved its event loop {} times off a CPU it was queued on \
         (`oomwatch_event_loop_moves_total`); all CPUs were {:.0}% busy, and the hypervisor \
         stole {:.0} ms of CPU time (`/proc/stat` steal); the kernel logged {} other OOM kills \
         on the host meanwhile (others' tests), which the agent recorded too.\n",
        s.runq_wait_us_per_wakeup
            .map_or("n/a".into(), |v| format!("{v:.0} µs")),
        s.loop_moves.map_or("n/a".into(), |v| format!("{v:.0}")),
        s.machine_busy_pct,
        s.steal_ms,
        s.other_host_kills
    );
}

/// A storm's kill → record, all kills and then those no hypervisor steal or CPU stall overlapped.
fn with_unrobbed(s: &super::phases::Storm) -> String {
    format!(
        "{}; the kills no steal or stall overlapped: {}{}",
        pcts(&s.latency_ms),
        pcts(&s.latency_unrobbed_ms),
        s.loop_moves.map_or(String::new(), |m| format!(
            "; the agent moved its event loop off a CPU it was queued on {m:.0} times"
        ))
    )
}

/// ", N ms stolen by the hypervisor" when the storm lost CPU time to it: each such stall
/// holds the records of its moment as long (a p99 of 1,000 kills is its 10th worst).
fn stolen(s: &super::phases::Storm) -> String {
    match s.steal_ms {
        ms if ms > 0.0 => format!("; the hypervisor stole {ms:.0} ms of CPU during it"),
        _ => String::new(),
    }
}

fn notes(o: &mut String, r: &Report) {
    let _ = writeln!(o, "## Method\n");
    let lines = [
        "Kills: each storm cgroup is a memory cgroup of its own (cgroup v1 `memory.limit_in_bytes`, \
         or v2 `memory.max`, no swap); a shell moves itself into it and execs `tail /dev/zero`, \
         which the OOM killer SIGKILLs; one thread per cgroup repeats this. Kernel kills are the \
         `oom_kill` counts of those cgroups (`memory.oom_control`/`memory.events`); records are \
         the agent's live stdout lines whose `cgroup` is one of them.",
        "Latency: the agent's own `event written` debug line, `latency_us` = CLOCK_MONOTONIC right \
         after the JSON line is written − the kernel's `bpf_ktime_get_ns()` at `mark_victim`. The \
         bench cross-checks it with the time it read each line from the pipe. Drain age: the \
         run loop's `ring buffer drained` trace line (`--log-level debug,oomwatch::agent::event_loop=trace`).",
        "CPU: time on CPU summed over the agent's threads (`/proc/<pid>/task/*/schedstat`; \
         `utime+stime` ticks in the JSON too). Wake-ups: `voluntary_ctxt_switches + \
         nonvoluntary_ctxt_switches` summed over `/proc/<pid>/task/*`. RSS: `VmRSS`; peaks: \
         `VmHWM`, reset (`clear_refs` 5) at the start of each window; start-up peak = `VmHWM` \
         when \"probes ready\" is logged.",
        "Idle: the agent (and node_exporter, same window) with nothing scraping and no kills \
         of the bench's. When the host logs OOM kills meanwhile (others' tests on this shared \
         machine), the window is repeated, up to 3 times, and the quietest kept; the table says \
         what happened during it.",
        "Diagnostic storms: a fresh agent each, 4 cgroups × 50 kills: the floor (none of three \
         suspected delays: no kernel-log context, state directory on tmpfs, SCHED_FIFO), then \
         the floor with each delay put back alone (a tail is the worst of several delays, so \
         removing one at a time would hide it behind the others).",
        "Scrapes: one keep-alive HTTP/1.1 connection from the bench, one warm-up, then timed GETs \
         of `/metrics` (request written → body read). The label sets come from the hidden agent \
         flag `--synthetic-label-sets N` (with `--max-label-sets 2N`): N fake series of \
         `oomwatch_oom_kills_total`, each with the badness, last-kill time and RSS gauges a real \
         kill adds, so the answer has the size 10,000 real label sets would have. They do not \
         count in `oomwatch_oom_kills_all_total`.",
        "wrk: `wrk -t1 -c4 --latency` on `/metrics` of that agent while a storm (same cgroup \
         count) runs until wrk ends.",
        "node_exporter: Debian's `prometheus-node-exporter` with its default collectors on \
         127.0.0.1. Its kill delay: single kills 400 ms apart while a thread scrapes it every \
         10 ms (or back to back when a scrape takes longer); delay = first answer with a new \
         `node_vmstat_oom_kill` − the kill's kernel timestamp (from oomwatch's record).",
        "Big node (5): built for real under `/oomwatch-bench-<pid>-bignode`: a cgroupfs-driver \
         `kubepods` tree (pods 3 in 10 guaranteed, 5 burstable, 2 best-effort; a sandbox and 1 \
         to 3 containers each, limits as the kubelet sets them), `system.slice` services and \
         `user.slice` sessions up to the cgroup count; `sleep` processes, one per sandbox and \
         the rest round-robin over the other leaves; containerd bundles (`config.json` with the \
         CRI annotations) for every container, given with `--containerd-state`; default agent \
         flags (`--headroom-cgroups 20`). CPU per scrape: the agent's `utime + stime` \
         (`/proc/<pid>/stat`, which keeps exited threads' time) over the sequential scrapes \
         (warm-up included) / their number; at 15 s: that / 15 s. Flood: 4 connections \
         asking `/metrics` on a fixed schedule (50 req/s in all; a late request goes at once, \
         missed slots are skipped), a fifth asking `/healthz` every 20 ms: first alone (the \
         `/healthz` target: what scrapes do to liveness), then while an OOM storm runs in \
         cgroups inside a best-effort pod of the tree; its kill → record p99 is set \
         against the same storm on the big node with nothing scraping (what the scrapes add: \
         the target), and both against the idle host's (the same storm on a fresh default \
         agent before the node is built: what the node adds). Beside each storm, the kernel \
         alone: a tracefs instance records `oom:mark_victim`, `signal:signal_deliver` (sig 9) \
         and the `tail` victims' `sched:sched_switch`; the killer is its own victim, so mark → \
         its first switch-out or its SIGKILL delivered, whichever comes first, is how long it \
         keeps its CPU after the kill without a break (the rest of `__oom_kill_process`, which \
         walks every process of the host for others sharing the victim's memory, then the \
         unwinding to user space), during which, under `PREEMPT_NONE`, a task woken on its CPU \
         waits. The whole phase runs with `console_loglevel` 1 (restored after): each \
         kill's `KERN_ERR` line on a serial console is printed with interrupts off (the line \
         above times it), which holds up every wake-up on that CPU; the agent's own trace put a \
         victim's record 2.8 ms after `mark_victim` at p50 with the console printing, 0.08 ms \
         without. Section 1's storm keeps the host's console as it is. A storm during which \
         the hypervisor stole more than 40 ms of CPU (`/proc/stat` steal; one vCPU taken away \
         for 100 ms holds every record of that moment as long) is run again, up to 3 times, \
         the least robbed kept. Steals are also placed in time: a thread reads `/proc/stat` \
         every 5 ms, and a rise of k `USER_HZ` units between two reads makes a steal window \
         from k + 1 units and a tick before the first read to the second. The steal counter \
         misses a host's CPU quota throttling the VM (records held up together, released on a \
         100 ms grid): a thread per CPU, pinned at `SCHED_FIFO`, sleeps 1 ms at a time, and a \
         wake-up over 20 ms late makes a stall window (no task ran on that CPU: the host took \
         it, or the kernel or a real-time kernel thread held it that long; a stall a \
         killer's own hold covers is the kernel's and excludes nothing). A kill whose span \
         (kernel timestamp → line written; for the killers' holds, mark → end of the hold) \
         overlaps \
         a steal or stall window is left out of the p99 comparisons (both figures are shown; the comparison is \
         not conclusive when more than a quarter of a storm's kills were left out). \
         `OOMWATCH_BENCH_ONLY=big_node` runs this phase alone (results to stderr and \
         `target/bench/bench-only-big_node-*.json`).",
        "The machine is shared (2 cores, other builds may run): timings are noisy; the load line \
         above says how busy it was.",
    ];
    for l in lines {
        let _ = writeln!(o, "- {l}");
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Findings\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
    }
}
