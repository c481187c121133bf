//! `oomwatch top`: who the OOM killer would pick next.
//!
//! Processes are ranked by the kernel's own formula (see [`rank`]) over the OOM domain's
//! `totalpages` (see [`domain`]): the host, or with `--cgroup` one memory cgroup and the
//! processes in its subtree. Processes with `oom_score_adj=-1000` (and init) are listed apart;
//! kernel threads are left out.

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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::explain::badness;
    use crate::explain::domain::{self, Domain, HostMemory};
    use crate::explain::rank::{self, Memory, Sample};
    use crate::sys::cgroup::{MemoryHierarchy, Version};

    const PS: u64 = 4096;

    #[test]
    fn badness_divides_totalpages_before_scaling_the_adjustment() {
        // 1999 / 1000 = 1, so adj 500 adds 500 pages, not 999.5.
        assert_eq!(badness::badness(10, 500, 1999), 510);
        assert_eq!(badness::badness(10, -1, 1999), 9);
        assert_eq!(badness::badness(0, 1000, 999), 0);
        assert_eq!(badness::badness(100, -999, 1_000_000), 100 - 999_000);
    }

    #[test]
    fn oom_score_matches_proc_oom_score() {
        let t = 6_171_021; // this kind of host: 24 GiB, no swap
        assert_eq!(badness::oom_score(badness::badness(0, 0, t), t), 666);
        assert_eq!(badness::oom_score(badness::badness(0, 500, t), t), 999);
        assert_eq!(badness::oom_score(badness::badness(445, 500, t), t), 1000);
        assert_eq!(badness::oom_score(badness::badness(0, 1000, t), t), 1332);
        assert_eq!(badness::oom_score(badness::badness(t, 1000, t), t), 1999);
        // A task using all memory with adj 1000 tops out at 2000.
        assert_eq!(
            badness::oom_score(badness::badness(1000, 1000, 1000), 1000),
            2000
        );
        // Negative badness truncates toward zero, as C's signed division.
        assert_eq!(badness::oom_score(-1, 3), (1000 - 333) * 2 / 3);
        assert_eq!(badness::oom_score(badness::badness(5, -999, t), t), 1);
        assert_eq!(badness::oom_score(badness::badness(0, -999, 1000), 1000), 0);
        assert_eq!(badness::oom_score(i64::MIN, 1), 0);
        assert_eq!(badness::oom_score(i64::MAX, 0), u32::MAX);
    }

    #[test]
    fn memory_pages_sum_rss_swap_and_pgtables() {
        let m = Memory {
            anon: 8 * PS,
            file: 2 * PS,
            shmem: PS,
            swap: 3 * PS,
            pgtables: PS + 100,
        };
        assert_eq!(m.pages(PS), 15);
        assert_eq!(m.pages(0), 8 * PS + 2 * PS + PS + 3 * PS + PS + 100);
    }

    #[test]
    fn stat_flags_survive_odd_comms() {
        let s = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0";
        assert_eq!(rank::parse_stat_flags(s), Some(2_129_984));
        const { assert!(2_129_984 & rank::PF_KTHREAD != 0) };
        let s = "77 (a) b) (c) R 1 77 77 0 -1 4194560 5 0";
        assert_eq!(rank::parse_stat_flags(s), Some(4_194_560));
        assert_eq!(rank::parse_stat_flags("77 (x"), None);
        assert_eq!(rank::parse_stat_flags("77 (x) R 1"), None);
    }

    #[test]
    fn meminfo_in_pages() {
        let m = domain::parse_meminfo("MemTotal:  24684084 kB\nSwapTotal: 8 kB\n", PS).unwrap();
        assert_eq!(
            m,
            HostMemory {
                ram_pages: 6_171_021,
                swap_pages: 2
            }
        );
        assert_eq!(m.total_pages(), 6_171_023);
        let m = domain::parse_meminfo("MemTotal: 4096 kB\n", PS).unwrap();
        assert_eq!(m.swap_pages, 0);
        assert_eq!(domain::parse_meminfo("MemFree: 1 kB\n", PS), None);
        assert_eq!(domain::parse_meminfo("MemTotalX: 1 kB\n", PS), None);
    }

    #[test]
    fn subtree_membership() {
        assert!(domain::in_subtree("/a/b", "/a"));
        assert!(domain::in_subtree("/a", "/a"));
        assert!(!domain::in_subtree("/ab", "/a"));
        assert!(domain::in_subtree("/anything", "/"));
    }

    fn v1_tree() -> (tempfile::TempDir, MemoryHierarchy) {
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("sys/fs/cgroup/memory");
        fs::create_dir_all(mount.join("kubepods/pod1")).unwrap();
        let h = MemoryHierarchy {
            version: Version::V1,
            mount,
        };
        (t, h)
    }

    #[test]
    fn cgroup_argument_forms() {
        let (_t, h) = v1_tree();
        let (p, d) = domain::resolve(&h, "/kubepods/pod1/").unwrap();
        assert_eq!(
            (p.as_str(), d),
            ("/kubepods/pod1", h.mount.join("kubepods/pod1"))
        );
        let abs = h.mount.join("kubepods");
        let (p, _) = domain::resolve(&h, abs.to_str().unwrap()).unwrap();
        assert_eq!(p, "/kubepods");
        assert_eq!(domain::resolve(&h, "kubepods").unwrap().0, "/kubepods");
        assert_eq!(domain::resolve(&h, "/").unwrap().0, "/");
        let e = domain::resolve(&h, "/nope").unwrap_err().to_string();
        assert!(e.starts_with("cgroup /nope does not exist under "), "{e}");
        assert!(matches!(
            domain::resolve(&h, "/kubepods/../.."),
            Err(RankError::BadCgroupPath(_))
        ));
    }

    #[test]
    fn memcg_max_v1_adds_memsw_excess_capped_by_swap() {
        let (t, h) = v1_tree();
        let dir = h.mount.join("kubepods");
        fs::write(dir.join("memory.limit_in_bytes"), "104857600\n").unwrap();
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "125829120\n").unwrap();
        fs::write(dir.join("memory.swappiness"), "60\n").unwrap();
        let host = HostMemory {
            ram_pages: 1 << 20,
            swap_pages: 1000,
        };
        let m = domain::memcg(
            Version::V1,
            "/kubepods".into(),
            dir.clone(),
            host,
            t.path(),
            PS,
        )
        .unwrap();
        assert_eq!((m.limit_pages, m.swap_pages), (25_600, 1000));
        let big = HostMemory {
            swap_pages: 1 << 20,
            ..host
        };
        let m = domain::memcg(Version::V1, "/k".into(), dir.clone(), big, t.path(), PS).unwrap();
        assert_eq!(m.swap_pages, 5120);
        fs::write(dir.join("memory.swappiness"), "0\n").unwrap();
        let m = domain::memcg(Version::V1, "/k".into(), dir.clone(), big, t.path(), PS).unwrap();
        assert_eq!(m.swap_pages, 0);
        let d = Domain {
            page_size: PS,
            host: big,
            memcg: Some(m),
        };
        assert_eq!(d.total_pages(), 25_600);
        fs::write(dir.join("memory.limit_in_bytes"), "lots\n").unwrap();
        let e = domain::memcg(Version::V1, "/k".into(), dir, big, t.path(), PS).unwrap_err();
        assert!(e.to_string().contains("unexpected content"), "{e}");
    }

    #[test]
    fn memcg_max_v2_uses_swap_max_and_global_swappiness() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("sys/fs/cgroup/a");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(t.path().join("proc/sys/vm")).unwrap();
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        let host = HostMemory {
            ram_pages: 1 << 20,
            swap_pages: 300,
        };
        let m = domain::memcg(Version::V2, "/a".into(), dir.clone(), host, t.path(), PS).unwrap();
        assert!(m.unlimited(PS));
        assert_eq!(m.swap_pages, 300);
        fs::write(dir.join("memory.max"), "8192\n").unwrap();
        fs::write(dir.join("memory.swap.max"), "4096\n").unwrap();
        let m = domain::memcg(Version::V2, "/a".into(), dir.clone(), host, t.path(), PS).unwrap();
        assert_eq!((m.limit_pages, m.swap_pages), (2, 1));
        fs::write(t.path().join("proc/sys/vm/swappiness"), "0\n").unwrap();
        let m = domain::memcg(Version::V2, "/a".into(), dir.clone(), host, t.path(), PS).unwrap();
        assert_eq!(m.swap_pages, 0);
        fs::write(dir.join("memory.max"), "0\n").unwrap();
        let m = domain::memcg(Version::V2, "/a".into(), dir, host, t.path(), PS).unwrap();
        let d = Domain {
            page_size: PS,
            host,
            memcg: Some(m),
        };
        assert_eq!(d.total_pages(), 1, "mem_cgroup_get_max() ?: 1");
    }

    #[test]
    fn v2_hierarchy_needs_memory_in_controllers() {
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("sys/fs/cgroup");
        fs::create_dir_all(&cg).unwrap();
        fs::write(cg.join("cgroup.controllers"), "cpu io\n").unwrap();
        assert_eq!(domain::hierarchy(t.path()), None);
        fs::write(cg.join("cgroup.controllers"), "cpu memory io\n").unwrap();
        assert_eq!(domain::hierarchy(t.path()).unwrap().version, Version::V2);
    }

    fn host_domain() -> Domain {
        Domain {
            page_size: PS,
            host: HostMemory {
                ram_pages: 100_000,
                swap_pages: 0,
            },
            memcg: None,
        }
    }

    fn sample(pid: i32, anon_pages: u64, adj: i16) -> Sample {
        Sample {
            pid,
            comm: format!("p{pid}"),
            kthread: false,
            memory: Some(Memory {
                anon: anon_pages * PS,
                ..Memory::default()
            }),
            oom_score_adj: adj,
            cgroup: Some("/a".into()),
            kernel_oom_score: None,
        }
    }

    #[test]
    fn classify_skips_and_protects_as_the_kernel_does() {
        let d = host_domain();
        let none = |_: &str| None;
        let mut k = sample(2, 0, 0);
        k.kthread = true;
        assert_eq!(rank::classify(k, &d, &none), None);
        let mut z = sample(3, 0, 0);
        z.memory = None;
        assert_eq!(rank::classify(z, &d, &none), None);
        let init = rank::classify(sample(1, 10, 0), &d, &none).unwrap();
        assert_eq!(
            (init.protected, init.protected_by.as_deref()),
            (true, Some("init"))
        );
        let p = rank::classify(sample(9, 50_000, -1000), &d, &none).unwrap();
        assert_eq!((p.protected, p.oom_score, p.points), (true, 0, None));
        assert_eq!(p.share, 0.5);
        // The kernel scores it 0 although its memory says 1000: excluded (e.g. MMF_OOM_SKIP).
        let mut s = sample(10, 50_000, 0);
        s.kernel_oom_score = Some(0);
        assert_eq!(rank::classify(s, &d, &none), None);
        let pod = |c: &str| Some(format!("pod-of{c}"));
        let r = rank::classify(sample(11, 50_000, 0), &d, &pod).unwrap();
        assert_eq!((r.points, r.oom_score), (Some(50_000), 1000));
        assert_eq!(r.pod.as_deref(), Some("pod-of/a"));
    }

    #[test]
    fn ties_order_by_points_then_pid() {
        let d = host_domain();
        let none = |_: &str| None;
        // 100_000 pages total: 1 point is 0.01 on the 1000 scale, so these tie on oom_score.
        let mut rows: Vec<_> = [(30, 10, 0), (20, 11, 0), (10, 10, 0), (5, 0, 1)]
            .into_iter()
            .map(|(pid, pages, adj)| rank::classify(sample(pid, pages, adj), &d, &none).unwrap())
            .collect();
        rank::sort_rows(&mut rows);
        let order: Vec<i32> = rows.iter().map(|r| r.pid).collect();
        assert_eq!(order, [5, 20, 10, 30]);
        assert_eq!(rows[3].rank, Some(4));
    }

    #[test]
    fn table_columns_align() {
        let d = host_domain();
        let none = |_: &str| None;
        let mut ranked: Vec<_> = [(7, 60_000, 0), (12345, 5, 900)]
            .into_iter()
            .map(|(pid, pages, adj)| rank::classify(sample(pid, pages, adj), &d, &none).unwrap())
            .collect();
        rank::sort_rows(&mut ranked);
        let protected = vec![rank::classify(sample(1, 1, 0), &d, &none).unwrap()];
        let r = Ranking { ranked, protected };
        let t = render_table(&r, &d, 1);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("OOM domain: host, totalpages 100000"),
            "{t}"
        );
        assert!(lines[1].starts_with("1 of 2 killable"), "{t}");
        let head = lines[3];
        let row = lines[4];
        assert!(head.starts_with("#    PID  COMM    SCORE  ADJ"), "{t}");
        assert_eq!(
            head.find("SCORE").unwrap() + 5,
            row.find("1266").unwrap() + 4,
            "{t}"
        );
        assert!(row.contains("12345  p12345"), "{t}");
        assert!(!t.contains("p7 "), "limit 1 shows one ranked row:\n{t}");
        assert!(
            t.contains("protected (oom_score_adj=-1000): never killed (1)"),
            "{t}"
        );
        assert!(t.contains("p1   "), "{t}");
        let j: serde_json::Value = serde_json::from_str(&render_json(&r, 0)).unwrap();
        assert_eq!(j.as_array().unwrap().len(), 3);
        assert_eq!(j[2]["protected"], true);
    }
}
