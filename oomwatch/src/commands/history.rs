//! `oomwatch history`: the OOM kills still in the kernel log (`/dev/kmsg`), as a table or as
//! JSON lines in the live events' schema (`"replayed": true`, sources `kmsg:oom_report`).
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::enrich::Enricher;
use crate::record::OomEvent;
use crate::recovery::replay::LogKills;
use crate::source::kmsg::{KmsgEvent, KmsgReader};

/// Options of `oomwatch history`.
#[derive(Clone, Debug, clap::Args)]
pub struct HistoryArgs {
    /// One JSON object per line, in the same schema as the agent's live events.
    #[arg(long)]
    pub json: bool,
    /// Only kills since then: a duration back from now (`30m`, `2h`, `1d`) or a time
    /// (`2026-11-21T10:00:00Z`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<SystemTime>,
    /// The host's root filesystem (`/host` in a pod), for cgroup and pod names.
    #[arg(long, default_value = "/")]
    pub host_root: PathBuf,
    /// Host name put in every event (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
}

fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s} reaches before the epoch"));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?} is neither a duration (30m, 2h) nor a time (2026-11-21T10:00:00Z)")
    })
}

#[derive(Debug, thiserror::Error)]
enum HistoryError {
    #[error("cannot read the kernel log: {0}: run as root or with CAP_SYSLOG (or set kernel.dmesg_restrict=0)")]
    Kmsg(crate::source::kmsg::KmsgError),
    #[error("writing to stdout failed: {0}")]
    Stdout(io::Error),
}

/// Runs `oomwatch history`.
pub fn main(args: HistoryArgs) -> ExitCode {
    match history(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(HistoryError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomwatch history: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every kill in the kernel log now, oldest first.
pub fn logged_kills(host: String) -> Result<Vec<OomEvent>, crate::source::kmsg::KmsgError> {
    let mut reader = KmsgReader::open()?;
    let mut kills = LogKills::new(host);
    let mut out = Vec::new();
    while let Some(ev) = reader.next_event()? {
        if let KmsgEvent::Record(rec) = ev {
            out.extend(kills.push(&rec).into_iter().map(|k| k.event));
        }
    }
    Ok(out)
}

fn history(args: &HistoryArgs) -> Result<(), HistoryError> {
    let host = args.host.clone().unwrap_or_else(crate::config::hostname);
    let mut events = logged_kills(host).map_err(HistoryError::Kmsg)?;
    if let Some(since) = args.since {
        events.retain(|e| e.time >= since);
    }
    let mut enricher = Enricher::new(&args.host_root);
    for ev in &mut events {
        enricher.enrich(ev);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.json {
        for ev in &events {
            writeln!(out, "{}", ev.to_json_line()).map_err(HistoryError::Stdout)?;
        }
    } else {
        write_table(&mut out, &events).map_err(HistoryError::Stdout)?;
    }
    out.flush().map_err(HistoryError::Stdout)
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

fn write_table(out: &mut impl Write, events: &[OomEvent]) -> io::Result<()> {
    if events.is_empty() {
        return writeln!(out, "no OOM kills in the kernel log");
    }
    writeln!(
        out,
        "{:<24} {:>8} {:<16} {:<18} {:>9} {:>9} {:>9} {:<10} WHERE",
        "TIME", "PID", "COMM", "CONSTRAINT", "ANON_MiB", "FILE_MiB", "SHMEM_MiB", "DOMAIN"
    )?;
    for ev in events {
        let time = humantime::format_rfc3339_seconds(ev.time).to_string();
        let constraint = ev
            .oom
            .constraint
            .as_deref()
            .map_or("-", |c| c.trim_start_matches("CONSTRAINT_"));
        let domain = ev.workload.oom_domain.map_or("-", |d| d.as_str());
        let place = match (&ev.workload.namespace, &ev.workload.pod) {
            (Some(ns), Some(pod)) => format!(
                "{ns}/{pod}{}",
                ev.workload
                    .container
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
            _ => ev.cgroup.clone().unwrap_or_else(|| "-".into()),
        };
        writeln!(
            out,
            "{:<24} {:>8} {:<16} {:<18} {:>9} {:>9} {:>9} {:<10} {}",
            time,
            ev.pid,
            ev.comm.as_deref().unwrap_or("-"),
            constraint,
            mib(ev.anon_rss),
            mib(ev.file_rss),
            mib(ev.shmem_rss),
            domain,
            place
        )?;
    }
    Ok(())
}
