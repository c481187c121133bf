//! The read-only HTML page at `/`: recent OOM kills, host settings and their warnings, probes.
//!
//! Rendered on the server in one pass into a `String`: no script, no external asset (it works
//! offline and under a strict CSP), inline CSS only. Every value that comes from the kernel or
//! the host (comm, cgroup paths, pod names, sysctl values, error messages) goes through
//! [`escape`]; a comm or cgroup name is chosen by whoever runs the process. Long values are
//! clipped so 100 events stay well under 200 KB (`/events` has them whole).
use crate::sys::text::human;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::host::HostSnapshot;
use crate::record::OomEvent;

/// Seconds between reloads (`<meta http-equiv="refresh">`).
pub const REFRESH_SECONDS: u32 = 10;

/// Longest text shown for one value (in characters) before it is clipped with `…`.
const MAX_SHOWN: usize = 160;

/// What the page shows.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// The node's name, if known.
    pub node: Option<&'a str>,
    /// The agent's version.
    pub version: &'a str,
    /// Newest first.
    pub events: &'a [OomEvent],
    /// Events recorded since the agent started (may exceed `events.len()`).
    pub seen: u64,
    /// How many events the agent keeps.
    pub capacity: usize,
    /// `None` when the server has no host collectors.
    pub host: Option<&'a HostSnapshot>,
    /// Probe name and whether it is attached.
    pub probes: &'a [(String, bool)],
    /// The time the page is rendered (ages are relative to it).
    pub now: SystemTime,
}

const STYLE: &str = "\
:root{--fg:#1f2328;--mut:#59636e;--bd:#d1d9e0;--bg:#f6f8fa;--anon:#cf222e;--file:#0969da;\
--shmem:#bf8700}\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:var(--fg);background:#fff}\
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 18px;padding:12px 24px;\
border-bottom:1px solid var(--bd);background:var(--bg)}\
header h1{font-size:19px;margin:0}\
header nav{margin-left:auto}\
nav a{margin-left:14px}\
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}\
main{padding:4px 24px 24px}\
h2{font-size:15px;margin:22px 0 8px}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--bd);vertical-align:top;\
line-height:20px}\
th{font-size:12px;color:var(--mut);font-weight:600;background:var(--bg);white-space:nowrap}\
.n{text-align:right;font-variant-numeric:tabular-nums}\
.m{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,monospace;font-size:12.5px}\
.mut{color:var(--mut);font-size:12.5px}\
.wl{max-width:420px;word-break:break-all}\
.bar{display:flex;width:160px;height:10px;border-radius:3px;overflow:hidden;background:#e6eaef;\
margin:5px 0}\
.bar i{display:block;height:100%}\
.a{background:var(--anon)}.f{background:var(--file)}.s{background:var(--shmem)}\
.key i{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 10px;\
vertical-align:-1px}\
.badge{display:inline-block;font-size:11px;line-height:16px;padding:0 7px;border-radius:9px;\
border:1px solid var(--bd);color:var(--mut);white-space:nowrap}\
.badge.r{border-color:#d4a72c;color:#7d4e00;background:#fff8c5}\
.badge.pk{border-color:#bf3989;color:#99286e;background:#ffeff7}\
tr.pk td:first-child{box-shadow:inset 4px 0 #bf3989}\
.warn{border-left:4px solid #d4a72c;background:#fff8c5;padding:6px 10px;margin:6px 0;\
border-radius:0 4px 4px 0}\
.ok{border-left:4px solid #1a7f37;background:#dafbe1;padding:6px 10px;margin:6px 0;\
border-radius:0 4px 4px 0}\
.empty{padding:18px;border:1px dashed var(--bd);border-radius:6px;color:var(--mut);\
text-align:center}\
.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,1fr);gap:28px}\
.set td:first-child{white-space:nowrap}\
ul.pr{list-style:none;padding:0;margin:0}\
ul.pr li{padding:4px 0;border-bottom:1px solid var(--bd)}\
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:8px;\
background:#afb8c1}.dot.on{background:#1a7f37}\
footer{padding:10px 24px 20px;color:var(--mut);font-size:12px}\
@media (max-width:900px){.cols{grid-template-columns:1fr}}";

/// `s` with `& < > " '` replaced by character references: safe in text and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` clipped to [`MAX_SHOWN`] characters, then escaped.
fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN) {
        Some((i, _)) => format!("{}…", escape(&s[..i])),
        None => escape(s),
    }
}

/// The muted dash shown for an unknown value.
const UNKNOWN: &str = "<span class=\"mut\">–</span>";

/// The whole page.
pub fn render(p: &Page<'_>) -> String {
    let mut out = String::with_capacity(8192 + p.events.len() * 1200);
    let node = p.node.map(shown);
    let title = match &node {
        Some(n) => format!("oomwatch · {n}"),
        None => "oomwatch".to_owned(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n\
         <header><h1>oomwatch</h1>"
    );
    if let Some(n) = &node {
        let _ = write!(out, "<span>node <b>{n}</b></span>");
    }
    let _ = write!(
        out,
        "<span class=\"mut\">agent {}</span><nav><a href=\"/metrics\">/metrics</a>\
         <a href=\"/events\">/events</a><a href=\"/healthz\">/healthz</a></nav></header>\n<main>\n",
        escape(p.version)
    );
    events_section(&mut out, p);
    out.push_str("<div class=\"cols\"><section>");
    host_section(&mut out, p.host);
    out.push_str("</section><section>");
    probes_section(&mut out, p.probes);
    out.push_str("</section></div>\n</main>\n");
    let _ = write!(
        out,
        "<footer>Read-only. Rendered {} · reloads every {REFRESH_SECONDS} s · \
         the same events as JSON at <a href=\"/events\">/events</a>, \
         counters at <a href=\"/metrics\">/metrics</a>.</footer>\n</body></html>\n",
        humantime::format_rfc3339_seconds(p.now)
    );
    out
}

fn events_section(out: &mut String, p: &Page<'_>) {
    out.push_str("<section><h2>Recent OOM kills</h2>\n");
    if p.events.is_empty() {
        out.push_str(
            "<div class=\"empty\">No OOM kills seen since the agent started.</div></section>\n",
        );
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"mut\">{} seen since the agent started; newest first, the last {} kept.\
         <span class=\"key\"><i class=\"a\"></i>anon<i class=\"f\"></i>file\
         <i class=\"s\"></i>shmem</span></p>",
        plural(p.seen, "kill"),
        p.capacity
    );
    out.push_str(
        "<table><thead><tr><th>Time (UTC)</th><th class=\"n\">PID</th><th>Comm</th>\
         <th>Workload / cgroup</th><th>Constraint</th><th>Domain</th>\
         <th class=\"n\">Badness</th><th>Memory at kill (MiB)</th></tr></thead><tbody>\n",
    );
    for ev in p.events {
        event_row(out, ev, p.now);
    }
    out.push_str("</tbody></table></section>\n");
}

fn event_row(out: &mut String, ev: &OomEvent, now: SystemTime) {
    let partial = ev.container_kill.partial_kill == Some(true);
    let _ = write!(
        out,
        "<tr{}><td><span class=\"m\" title=\"{}\">{}</span><br><span class=\"mut\">{}</span>",
        if partial { " class=\"pk\"" } else { "" },
        humantime::format_rfc3339_nanos(ev.time),
        short_time(ev.time),
        age(now, ev.time)
    );
    if ev.replayed {
        out.push_str(
            " <span class=\"badge r\" title=\"recorded from the kernel log after the fact\">\
             replayed</span>",
        );
    }
    let _ = write!(
        out,
        "</td><td class=\"n\"><span class=\"m\">{}</span></td><td>",
        ev.pid
    );
    opt_text(out, ev.comm.as_deref());
    allocation(out, ev);
    out.push_str("</td><td class=\"wl\">");
    workload_cell(out, ev);
    if partial {
        partial_badge(out, ev);
    }
    out.push_str("</td><td>");
    opt_text(out, ev.oom.constraint.as_deref());
    out.push_str("</td><td>");
    match ev.workload.oom_domain {
        Some(d) => out.push_str(d.as_str()),
        None => out.push_str(UNKNOWN),
    }
    out.push_str("</td><td class=\"n\">");
    match ev.oom.badness {
        Some(b) => {
            let _ = write!(out, "{b}");
        }
        None => out.push_str(UNKNOWN),
    }
    if let Some(adj) = ev.oom_score_adj {
        let _ = write!(out, "<br><span class=\"mut\">adj {adj}</span>");
    }
    out.push_str("</td><td>");
    memory_cell(out, ev);
    out.push_str("</td></tr>\n");
}

/// The allocation that invoked the killer (`trigger.stack.summary`), when known.
fn allocation(out: &mut String, ev: &OomEvent) {
    let Some(t) = &ev.trigger else { return };
    let Some(summary) = t.stack.as_ref().and_then(|s| s.summary.as_deref()) else {
        return;
    };
    let _ = write!(
        out,
        "<br><span class=\"mut\" title=\"the allocation that invoked the OOM killer: {} \
         (pid {})\">alloc <span class=\"m\">{}</span></span>",
        shown(&t.comm),
        t.pid,
        shown(summary)
    );
}

fn opt_text(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) if !s.is_empty() => {
            let _ = write!(out, "<span class=\"m\">{}</span>", shown(s));
        }
        _ => out.push_str(UNKNOWN),
    }
}

/// Kubernetes identity when known (the cgroup in the tooltip), else the cgroup path and the
/// systemd unit.
fn workload_cell(out: &mut String, ev: &OomEvent) {
    let w = &ev.workload;
    if let Some(pod) = &w.pod {
        let _ = write!(
            out,
            "<span title=\"{}\">",
            ev.cgroup.as_deref().map(shown).unwrap_or_default()
        );
        if let Some(ns) = &w.namespace {
            let _ = write!(out, "{}/", shown(ns));
        }
        let _ = write!(out, "<b>{}</b></span>", shown(pod));
        if let Some(c) = &w.container {
            let _ = write!(out, "<br><span class=\"mut\">container {}</span>", shown(c));
        }
        if let Some(q) = w.qos_class {
            let _ = write!(out, " <span class=\"badge\">{}</span>", q.as_str());
        }
        return;
    }
    match &ev.cgroup {
        Some(cg) => {
            let _ = write!(out, "<span class=\"m\">{}</span>", shown(cg));
        }
        None => out.push_str(UNKNOWN),
    }
    if let Some(unit) = &w.systemd_unit {
        let _ = write!(out, "<br><span class=\"mut\">unit {}</span>", shown(unit));
    }
    // A plain Docker/podman container: the runtime's own name and image.
    if let Some(name) = &w.container_name {
        let _ = write!(out, "<br><span class=\"mut\">container {}", shown(name));
        if let Some(image) = &w.container_image {
            let _ = write!(out, " ({})", shown(image));
        }
        out.push_str("</span>");
    }
}

/// The mark of a partial kill: the container kept running, Kubernetes shows nothing.
fn partial_badge(out: &mut String, ev: &OomEvent) {
    let init = match &ev.container_kill.container_init {
        Some(i) => format!(
            "; its init {} (pid {}) lives",
            i.comm.as_deref().map(shown).unwrap_or_default(),
            i.pid
        ),
        None => String::new(),
    };
    let _ = write!(
        out,
        "<br><span class=\"badge pk\" title=\"partial kill: the victim was not the \
         container&#39;s init, the container kept running{init}; no restart, no OOMKilled\">\
         silent partial kill</span>"
    );
}

/// The anon/file/shmem split as a bar (widths in % of their sum) and the values as text.
fn memory_cell(out: &mut String, ev: &OomEvent) {
    let parts = [
        ("a", "anon", ev.anon_rss),
        ("f", "file", ev.file_rss),
        ("s", "shmem", ev.shmem_rss),
    ];
    if parts.iter().all(|p| p.2.is_none()) {
        out.push_str("<span class=\"mut\">unknown</span>");
        return;
    }
    let total: u64 = parts
        .iter()
        .map(|p| p.2.unwrap_or(0))
        .fold(0, u64::saturating_add);
    out.push_str("<div class=\"bar\">");
    for (class, name, v) in parts {
        let v = v.unwrap_or(0);
        if v == 0 || total == 0 {
            continue;
        }
        let pct = v as f64 * 100.0 / total as f64;
        let _ = write!(
            out,
            "<i class=\"{class}\" style=\"width:{pct:.1}%\" title=\"{name} {v} bytes\"></i>"
        );
    }
    out.push_str("</div><span class=\"mut\">");
    for (i, (_, name, v)) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(" · ");
        }
        match v {
            Some(b) => {
                let _ = write!(out, "{name} {}", mib(*b));
            }
            None => {
                let _ = write!(out, "{name} –");
            }
        }
    }
    out.push_str("</span>");
}

fn host_section(out: &mut String, host: Option<&HostSnapshot>) {
    out.push_str("<h2>Host settings</h2>\n");
    let Some(h) = host else {
        out.push_str("<p class=\"mut\">Host values are not collected by this server.</p>\n");
        return;
    };
    host_warnings(out, h);
    out.push_str("<table class=\"set\"><tbody>\n");
    oom_setting_rows(out, h);
    memory_rows(out, h);
    out.push_str("</tbody></table>\n");
    for (name, err) in &h.collector_errors {
        let _ = writeln!(
            out,
            "<p class=\"mut\">Collector <b>{}</b> failed: {}</p>",
            escape(name),
            shown(err)
        );
    }
}

/// The risky settings (the rules of `oomwatch check`), or a line saying there are none.
fn host_warnings(out: &mut String, h: &HostSnapshot) {
    let warnings = h.warnings();
    if warnings.is_empty() {
        out.push_str(
            "<div class=\"ok\">No risky settings found (the rules of <code>oomwatch check</code>).\
             </div>\n",
        );
    }
    for w in &warnings {
        let _ = writeln!(
            out,
            "<div class=\"warn\"><b class=\"m\">{}</b> {}</div>",
            escape(w.code),
            escape(&w.message)
        );
    }
}

/// One row of the host settings table.
fn setting_row(out: &mut String, name: &str, value: String, note: &str) {
    let _ = writeln!(
        out,
        "<tr><td><span class=\"m\">{name}</span></td><td>{value}</td>\
         <td class=\"mut\">{note}</td></tr>"
    );
}

fn num_or_unknown(v: Option<i64>) -> String {
    v.map_or_else(|| UNKNOWN.to_owned(), |v| v.to_string())
}

/// The sysctls that decide what an OOM does: panic_on_oom, oom_kill_allocating_task,
/// overcommit_memory.
fn oom_setting_rows(out: &mut String, h: &HostSnapshot) {
    let panic_note = match h.panic_on_oom {
        Some(0) => "an OOM kills a task",
        Some(1) => "a system-wide OOM panics the node",
        Some(2) => "every OOM panics the node",
        _ => "",
    };
    setting_row(
        out,
        "vm.panic_on_oom",
        num_or_unknown(h.panic_on_oom),
        panic_note,
    );
    let alloc_note = match h.oom_kill_allocating_task {
        Some(0) => "the killer picks the task with the highest badness",
        Some(_) => "the killer kills whichever task allocated",
        None => "",
    };
    setting_row(
        out,
        "vm.oom_kill_allocating_task",
        num_or_unknown(h.oom_kill_allocating_task),
        alloc_note,
    );
    let over_note = match h.overcommit_memory {
        Some(0) => "heuristic overcommit",
        Some(1) => "always overcommit",
        Some(2) => "strict: no overcommit past CommitLimit",
        _ => "",
    };
    setting_row(
        out,
        "vm.overcommit_memory",
        num_or_unknown(h.overcommit_memory),
        over_note,
    );
}

/// Memory: commit charge, min_free_kbytes, what is available, pressure, kills since boot.
fn memory_rows(out: &mut String, h: &HostSnapshot) {
    let commit = match (h.committed_as_bytes, h.commit_limit_bytes) {
        (Some(c), Some(l)) => {
            let pct = (u128::from(c) * 100)
                .checked_div(u128::from(l))
                .map_or_else(String::new, |p| format!(" ({p}%)"));
            format!("{} / {}{pct}", human(c), human(l))
        }
        _ => UNKNOWN.to_owned(),
    };
    setting_row(
        out,
        "Committed_AS / CommitLimit",
        commit,
        "enforced only when vm.overcommit_memory=2",
    );
    let min_free = h
        .min_free_kbytes
        .map_or_else(|| UNKNOWN.to_owned(), |v| format!("{v} kB"));
    let min_note = match (h.min_free_default_kbytes, h.min_free_expected_kbytes()) {
        (Some(d), Some(e)) if e > d => {
            format!("kernel default {d} kB, {e} kB with transparent huge pages")
        }
        (Some(d), _) => format!("kernel default {d} kB"),
        _ => String::new(),
    };
    setting_row(out, "vm.min_free_kbytes", min_free, &min_note);
    let avail = match (h.mem_available_bytes, h.mem_total_bytes) {
        (Some(a), Some(t)) => format!("{} of {}", human(a), human(t)),
        _ => UNKNOWN.to_owned(),
    };
    setting_row(out, "MemAvailable / MemTotal", avail, "");
    pressure_rows(out, h);
}

/// PSI and the kernel's OOM kill count.
fn pressure_rows(out: &mut String, h: &HostSnapshot) {
    let psi = match (h.psi_supported, h.psi_some, h.psi_full) {
        (Some(false), _, _) => "not supported by this kernel".to_owned(),
        (_, Some(s), f) => format!(
            "some {:.2}% · full {}",
            s.avg10_percent,
            f.map_or_else(|| "–".to_owned(), |f| format!("{:.2}%", f.avg10_percent))
        ),
        _ => UNKNOWN.to_owned(),
    };
    setting_row(
        out,
        "PSI memory avg10",
        psi,
        "share of the last 10 s stalled on memory",
    );
    let kills = h
        .kernel_oom_kills
        .map_or_else(|| UNKNOWN.to_owned(), |k| k.to_string());
    setting_row(
        out,
        "OOM kills since boot",
        kills,
        "oom_kill in /proc/vmstat",
    );
}

fn probes_section(out: &mut String, probes: &[(String, bool)]) {
    out.push_str("<h2>Probes</h2>\n");
    if probes.is_empty() {
        out.push_str("<p class=\"mut\">No probe status reported.</p>\n");
        return;
    }
    out.push_str("<ul class=\"pr\">");
    for (name, up) in probes {
        let _ = write!(
            out,
            "<li><span class=\"dot{}\"></span><span class=\"m\">{}</span> \
             <span class=\"mut\">{}</span></li>",
            if *up { " on" } else { "" },
            shown(name),
            if *up { "attached" } else { "not attached" }
        );
    }
    out.push_str("</ul>\n");
}

/// `2025-11-22 00:11:24`.
fn short_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn age(now: SystemTime, t: SystemTime) -> String {
    let secs = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_five() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn clips_long_values_on_a_char_boundary() {
        let s = "é".repeat(MAX_SHOWN + 5);
        let out = shown(&s);
        assert!(out.ends_with('…'));
        assert_eq!(out.chars().count(), MAX_SHOWN + 1);
    }

    #[test]
    fn ages_and_units() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(age(t, t), "0 s ago");
        assert_eq!(age(t + Duration::from_secs(7200), t), "2 h ago");
        assert_eq!(age(t, t + Duration::from_secs(5)), "0 s ago");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(mib(1_572_864), "1.5");
        assert_eq!(short_time(t), "1970-01-12 13:46:40");
    }
}
