//! `oomwatch top`: who the OOM killer would pick next.
//!
//! Processes are ranked by the kernel's own formula (see [`rank`]) over the OOM domain's
//! `totalpages` (see [`domain`]): the host, or with `--cgroup` one memory cgroup and the
//! processes in its subtree. Processes with `oom_score_adj=-1000` (and init) are listed apart;
//! kernel threads are left out.
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::explain::domain::{self, Domain, HostMemory};
use crate::explain::rank::{self, Ranking, Row};
use crate::explain::RankError;

/// Options of `oomwatch top`.
#[derive(Clone, Debug, clap::Args)]
pub struct TopArgs {
    /// Print a JSON array (highest score first, protected processes last) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many ranked processes to show; 0 shows all. Protected processes are always shown.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Rank as an OOM in this memory cgroup would: only its subtree, against its limit. A path
    /// relative to the memory controller mount (`/kubepods.slice/...`) or a directory under it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Read `/proc` and `/sys/fs/cgroup` under this directory (the host's root in a container).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

/// Runs `oomwatch top`; prints a one-line error and returns failure on bad input.
pub fn main(args: TopArgs) -> ExitCode {
    let pod_of = |cgroup: &str| crate::enrich::identity::parse(cgroup).pod.map(|p| p.uid);
    match run(&args, &pod_of) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RankError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn into a panic.
            let _ = writeln!(io::stderr(), "oomwatch top: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ranks and prints; `pod_of` maps a cgroup path to its pod (the hook for pod identity).
pub fn run(args: &TopArgs, pod_of: &dyn Fn(&str) -> Option<String>) -> Result<(), RankError> {
    let (domain, ranking) = collect(args, pod_of)?;
    let text = if args.json {
        render_json(&ranking, args.limit)
    } else {
        render_table(&ranking, &domain, args.limit)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(RankError::Stdout)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Finds the domain and ranks the processes in it.
pub fn collect(
    args: &TopArgs,
    pod_of: &dyn Fn(&str) -> Option<String>,
) -> Result<(Domain, Ranking), RankError> {
    let root = args.host_root.as_path();
    let proc = root.join("proc");
    let page_size = page_size();
    let host = read_host(&proc, page_size)?;
    let memcg = match &args.cgroup {
        None => None,
        Some(arg) => {
            let h = domain::hierarchy(root).ok_or_else(|| RankError::NoHierarchy {
                root: root.join("sys/fs/cgroup"),
            })?;
            let (path, dir) = domain::resolve(&h, arg)?;
            // The root memcg has no limit: its OOMs are the host's.
            (path != "/")
                .then(|| domain::memcg(h.version, path, dir, host, root, page_size))
                .transpose()?
        }
    };
    let domain = Domain {
        page_size,
        host,
        memcg,
    };
    let ranking = rank::rank(&proc, &domain, pod_of)?;
    Ok((domain, ranking))
}

fn read_host(proc: &Path, page_size: u64) -> Result<HostMemory, RankError> {
    let path = proc.join("meminfo");
    let text = std::fs::read_to_string(&path).map_err(|source| RankError::Proc {
        path: path.clone(),
        source,
    })?;
    domain::parse_meminfo(&text, page_size).ok_or(RankError::Meminfo { path })
}

fn limited(rows: &[Row], limit: usize) -> &[Row] {
    if limit == 0 {
        rows
    } else {
        &rows[..limit.min(rows.len())]
    }
}

/// The `--json` output: ranked rows (at most `limit`), then every protected one.
pub fn render_json(r: &Ranking, limit: usize) -> String {
    let rows: Vec<&Row> = limited(&r.ranked, limit)
        .iter()
        .chain(r.protected.iter())
        .collect();
    // Serializing plain structs of numbers and strings cannot fail; "[]" keeps it valid anyway.
    let mut s = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn describe(domain: &Domain) -> String {
    let ps = domain.page_size;
    let total = domain.total_pages();
    match &domain.memcg {
        None => format!(
            "OOM domain: host, totalpages {total} (MemTotal {} MiB + SwapTotal {} MiB)",
            mib(domain.host.ram_pages.saturating_mul(ps)),
            mib(domain.host.swap_pages.saturating_mul(ps)),
        ),
        Some(m) if m.unlimited(ps) => format!(
            "OOM domain: memory cgroup {} has no memory limit: its OOMs come from an \
             ancestor's limit or the host's; shares are of the unlimited maximum",
            m.path
        ),
        Some(m) => format!(
            "OOM domain: memory cgroup {}, totalpages {total} (limit {} MiB + swap {} MiB)",
            m.path,
            mib(m.limit_pages.saturating_mul(ps)),
            mib(m.swap_pages.saturating_mul(ps)),
        ),
    }
}

/// Lays out rows under a header, each column as wide as its widest cell. Columns whose header
/// starts with `<` are left-aligned, others right-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header
        .iter()
        .map(|h| h.trim_start_matches('<').len())
        .collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let heads: Vec<String> = header
        .iter()
        .map(|h| h.trim_start_matches('<').to_string())
        .collect();
    for cells in std::iter::once(&heads).chain(rows) {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let left = header.get(i).is_some_and(|h| h.starts_with('<'));
            let pad = w.saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if left {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn memory_cells(r: &Row) -> [String; 5] {
    [
        mib(r.rss_anon),
        mib(r.rss_file),
        mib(r.rss_shmem),
        mib(r.swap),
        mib(r.pgtables),
    ]
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

/// The table output: a domain line, the ranked processes, then the protected ones.
pub fn render_table(r: &Ranking, domain: &Domain, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", describe(domain));
    let shown = limited(&r.ranked, limit);
    let _ = writeln!(
        out,
        "{} of {} killable processes, most likely victim first (sizes in MiB)\n",
        shown.len(),
        r.ranked.len()
    );
    let mut drift = false;
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|row| {
            let (cells, drifted) = ranked_cells(row, domain);
            drift |= drifted;
            cells
        })
        .collect();
    table(
        &mut out,
        &[
            "#", "PID", "<COMM", "SCORE", "ADJ", "POINTS", "SHARE", "ANON", "FILE", "SHMEM",
            "SWAP", "PGTBL", "<CGROUP", "<POD",
        ],
        &rows,
    );
    if drift {
        let _ = writeln!(
            out,
            "(* then /proc/<pid>/oom_score: the process's memory changed while it was read)"
        );
    }
    let _ = writeln!(
        out,
        "\nprotected (oom_score_adj=-1000): never killed ({})",
        r.protected.len()
    );
    if !r.protected.is_empty() {
        protected_table(&mut out, &r.protected);
    }
    out
}

/// One ranked process's cells, and whether the kernel's score disagreed with ours.
fn ranked_cells(row: &Row, domain: &Domain) -> (Vec<String>, bool) {
    // The kernel's own /proc/<pid>/oom_score, when it disagrees with ours (memory
    // changed between the reads), is shown next to ours.
    let mut score = row.oom_score.to_string();
    let mut drift = false;
    if domain.memcg.is_none() {
        if let Some(k) = row
            .kernel_oom_score
            .filter(|k| k.abs_diff(row.oom_score) > 1)
        {
            score = format!("{score}*{k}");
            drift = true;
        }
    }
    let mut cells = vec![
        row.rank.map_or_else(String::new, |n| n.to_string()),
        row.pid.to_string(),
        row.comm.clone(),
        score,
        row.oom_score_adj.to_string(),
        row.points.map_or_else(|| "-".into(), |p| p.to_string()),
        format!("{:.2}%", row.share * 100.0),
    ];
    cells.extend(memory_cells(row));
    cells.push(opt(&row.cgroup));
    cells.push(opt(&row.pod));
    (cells, drift)
}

/// The processes with `oom_score_adj=-1000`, and why.
fn protected_table(out: &mut String, protected: &[Row]) {
    let rows: Vec<Vec<String>> = protected
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.pid.to_string(),
                row.comm.clone(),
                row.oom_score_adj.to_string(),
                opt(&row.protected_by),
                format!("{:.2}%", row.share * 100.0),
            ];
            cells.extend(memory_cells(row));
            cells.push(opt(&row.cgroup));
            cells.push(opt(&row.pod));
            cells
        })
        .collect();
    table(
        out,
        &[
            "PID", "<COMM", "ADJ", "<WHY", "SHARE", "ANON", "FILE", "SHMEM", "SWAP", "PGTBL",
            "<CGROUP", "<POD",
        ],
        &rows,
    );
}
