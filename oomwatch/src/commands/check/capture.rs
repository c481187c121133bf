//! Section "Capture": the probe table as the agent would build it, really loaded and attached
//! (then detached at once), and where each kind of field will come from.
use std::path::PathBuf;

use serde::Serialize;

use super::report::{one_line, Item, Status};
use crate::source::probe::loader::{self, LoadOptions, ProbeError};
use crate::source::probe::table::{ProbeId, ProbeStatus, DISABLED};

const KMSG_READS: &str = "the kernel's OOM report: constraint, gfp_mask, order, memcg";

/// One row of the probe table, as `oomwatch run` logs it ("probe attached"/"probe unavailable").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub probe: ProbeId,
    pub attached: bool,
    /// What it reads, or why it is unavailable.
    pub detail: String,
}

impl From<&ProbeStatus> for Row {
    fn from(s: &ProbeStatus) -> Self {
        Row {
            probe: s.probe,
            attached: s.attached,
            detail: s.detail.clone(),
        }
    }
}

/// What loading the probes gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capture {
    /// Whether the probes were loaded.
    pub tried: bool,
    /// Why they were not.
    pub not_tried: Option<String>,
    /// Why loading failed (the agent would exit with this error).
    pub error: Option<String>,
    /// Every row the agent would log, in its order; `kmsg:oom_report` only when the agent would
    /// consult it (no `oom_kill_process` probe attached).
    pub probes: Vec<Row>,
    /// The attached `mark_victim` probes.
    pub victim: Vec<ProbeId>,
    /// Where the OOM context (constraint, gfp_mask, order, memcg) comes from, if anywhere.
    pub oom_context: Option<ProbeId>,
    /// Where GFP flag names come from, if anywhere.
    pub gfp_names: Option<&'static str>,
}

impl Capture {
    pub fn not_tried(why: impl Into<String>) -> Self {
        Capture {
            tried: false,
            not_tried: Some(why.into()),
            error: None,
            probes: Vec::new(),
            victim: Vec::new(),
            oom_context: None,
            gfp_names: None,
        }
    }

    /// Whether an unreadable `/dev/kmsg` costs anything: when the kernel log is the OOM
    /// context source, or might be (probes not loaded).
    pub fn kmsg_needed(&self, disabled: &[ProbeId]) -> bool {
        if disabled.contains(&ProbeId::KmsgOomReport) {
            return false;
        }
        !self.tried
            || !self.probes.iter().any(|r| {
                r.attached && [ProbeId::OomKillFentry, ProbeId::OomKillKprobe].contains(&r.probe)
            })
    }
}

/// Loads the probes as `oomwatch run` does, records the table and drops them (detaching
/// everything). `kmsg_error` is why `/dev/kmsg` cannot be opened, if it cannot.
pub fn load(btf: PathBuf, disabled: &[ProbeId], kmsg_error: Option<&str>) -> Capture {
    raise_memlock_limit();
    let result = loader::load(&LoadOptions {
        btf_path: btf,
        force_pid_only: false,
        disabled: disabled.to_vec(),
        inject_read_fault: false,
        userspace_killers: Vec::new(),
        stacks: crate::record::StackMode::None,
        sigkills: true,
        root_memcg_id: 0,
    });
    match result {
        Ok(probes) => {
            let rows: Vec<Row> = probes.status.iter().map(Row::from).collect();
            let gfp = probes.gfp.as_ref().map(|(_, from)| *from);
            drop(probes);
            from_rows(rows, gfp, disabled, kmsg_error)
        }
        Err(e) => Capture {
            tried: true,
            not_tried: None,
            error: Some(error_text(&e)),
            ..Capture::not_tried("")
        },
    }
}

fn error_text(e: &ProbeError) -> String {
    one_line(&e.to_string(), 600)
}

/// The choice `oomwatch run` makes from the probe table: victims from every attached
/// `mark_victim` probe; OOM context from fentry, else kprobe, else the kernel log.
pub fn from_rows(
    mut rows: Vec<Row>,
    gfp_names: Option<&'static str>,
    disabled: &[ProbeId],
    kmsg_error: Option<&str>,
) -> Capture {
    let attached = |rows: &[Row], p: ProbeId| rows.iter().any(|r| r.probe == p && r.attached);
    let victim = [ProbeId::MarkVictimBtf, ProbeId::MarkVictimTp]
        .into_iter()
        .filter(|&p| attached(&rows, p))
        .collect();
    let oom_context = if attached(&rows, ProbeId::OomKillFentry) {
        Some(ProbeId::OomKillFentry)
    } else if attached(&rows, ProbeId::OomKillKprobe) {
        Some(ProbeId::OomKillKprobe)
    } else {
        let (ok, detail) = if disabled.contains(&ProbeId::KmsgOomReport) {
            (false, DISABLED.to_string())
        } else {
            match kmsg_error {
                None => (true, KMSG_READS.to_string()),
                Some(e) => (false, e.to_string()),
            }
        };
        rows.push(Row {
            probe: ProbeId::KmsgOomReport,
            attached: ok,
            detail,
        });
        ok.then_some(ProbeId::KmsgOomReport)
    };
    Capture {
        tried: true,
        not_tried: None,
        error: None,
        probes: rows,
        victim,
        oom_context,
        gfp_names,
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; the agent raises it, so do we.
fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: lim is a valid rlimit; setrlimit only reads it. Failure is harmless (5.11+).
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// The items of the section; `fatal` is the status of a load failure.
pub fn items(c: &Capture, fatal: Status) -> Vec<Item> {
    if let Some(why) = &c.not_tried {
        return vec![Item::info("probes", format!("probes not tried: {why}"))];
    }
    if let Some(e) = &c.error {
        return vec![Item::new(fatal, "probes", format!("probes: {e}")).with_fix(
            "see the Kernel section: the agent needs BTF (tp_btf) or tracefs (tracepoint) for \
             oom/mark_victim; do not --disable-probe both",
        )];
    }
    let mut out: Vec<Item> = c.probes.iter().map(row_item).collect();
    out.push(victim_item(c));
    out.push(match c.oom_context {
        Some(ProbeId::KmsgOomReport) => Item::ok(
            "oom_context",
            "OOM context (constraint, gfp_mask, order, memcg): kmsg:oom_report (kernel log)",
        ),
        Some(p) => Item::ok(
            "oom_context",
            format!("OOM context (constraint, gfp_mask, order, memcg, badness): {p}"),
        ),
        None => Item::new(
            Status::Warn,
            "oom_context",
            "OOM context: none: events will lack constraint, gfp_mask, order and the OOM memcg",
        )
        .with_fix(
            "let the agent read /dev/kmsg (CAP_SYSLOG), or use a kernel where fentry (BTF) or \
             kprobes work on oom_kill_process",
        ),
    });
    out.push(match c.gfp_names {
        Some(from) => Item::ok("gfp_names", format!("GFP flag names: {from}")),
        None => Item::info(
            "gfp_names",
            "GFP flag names: no table in tracefs or BTF; only the kernel log's own decoding",
        ),
    });
    out
}

fn row_item(r: &Row) -> Item {
    if r.attached {
        Item::ok(
            "probe",
            format!("{}: attached ({})", r.probe, one_line(&r.detail, 300)),
        )
    } else {
        // A row that is unavailable costs nothing by itself: the summary lines below say what
        // is lost when no row of its kind attached.
        Item::info(
            "probe",
            format!("{}: unavailable: {}", r.probe, one_line(&r.detail, 300)),
        )
    }
}

fn victim_item(c: &Capture) -> Item {
    let names = c
        .victim
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(" + ");
    let lost: Vec<&Row> = c
        .probes
        .iter()
        .filter(|r| {
            [ProbeId::MarkVictimBtf, ProbeId::MarkVictimTp].contains(&r.probe)
                && !r.attached
                && r.detail != DISABLED
        })
        .collect();
    if lost.is_empty() {
        return Item::ok(
            "victim",
            format!("victim fields: {names}; anything missing from /proc and cgroupfs"),
        );
    }
    let missing: Vec<&str> = lost.iter().map(|r| r.probe.name()).collect();
    Item::new(
        Status::Warn,
        "victim",
        format!(
            "victim fields: {names} only; what {} would read comes from /proc after the kill, \
             and is lost when the victim is already gone",
            missing.join(" and ")
        ),
    )
    .with_fix("see why it is unavailable above (BTF, tracefs)")
}
