//! Scoring processes as `oom_badness()` (mm/oom_kill.c) and `proc_oom_score()` (fs/proc/base.c)
//! do, from what `/proc/<pid>` shows.
//!
//! ```text
//! oom_badness: skip (LONG_MIN) if global init, PF_KTHREAD, no mm, oom_score_adj == -1000,
//!              MMF_OOM_SKIP or in_vfork; else
//!              points = get_mm_rss + MM_SWAPENTS + pgtables_bytes / PAGE_SIZE
//!                     + oom_score_adj * (totalpages / 1000)        (integer division first)
//! oom_score  = (1000 + points * 1000 / totalpages) * 2 / 3        (signed, truncating; 0 if skipped)
//! ```
//!
//! `RssAnon + RssFile + RssShmem` is `get_mm_rss`, `VmSwap` is `MM_SWAPENTS`, `VmPTE` is
//! `mm_pgtables_bytes >> 10`. `MMF_OOM_SKIP` and `in_vfork` are not visible in `/proc`; a task
//! the kernel scores 0 while its memory says otherwise is taken as excluded by them.
use super::badness::{badness, oom_score, OOM_SCORE_ADJ_MIN};
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::domain::{in_subtree, Domain};
use super::RankError;
use crate::sys::procfs::{self, ProcInfo};

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Memory of one process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
    pub pgtables: u64,
}

impl Memory {
    /// What `oom_badness()` counts before the adjustment, in pages.
    pub fn pages(&self, page_size: u64) -> u64 {
        let p = |b: u64| b / page_size.max(1);
        p(self.anon) + p(self.file) + p(self.shmem) + p(self.swap) + p(self.pgtables)
    }
}

/// One process as `oomwatch top` shows it (and its `--json` object).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// 1 = the OOM killer's next pick; `None` for protected processes.
    pub rank: Option<usize>,
    pub pid: i32,
    pub comm: String,
    /// `proc_oom_score()` over the domain's totalpages (for the host: `/proc/<pid>/oom_score`).
    pub oom_score: u32,
    /// The same over the host's totalpages, computed.
    pub host_oom_score: u32,
    /// `/proc/<pid>/oom_score` as read (host scale), when readable.
    pub kernel_oom_score: Option<u32>,
    pub oom_score_adj: i16,
    /// `oom_badness()` in the domain; `None` for protected processes.
    pub points: Option<i64>,
    /// (rss + swap + pgtables) / totalpages: the fraction of the domain a kill would free.
    pub share: f64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swap: u64,
    pub pgtables: u64,
    /// The domain's totalpages.
    pub domain_pages: u64,
    pub cgroup: Option<String>,
    pub pod: Option<String>,
    pub protected: bool,
    /// Why the OOM killer never picks it: `oom_score_adj=-1000` or `init`.
    pub protected_by: Option<String>,
}

/// The result of one pass over `/proc`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranking {
    /// Highest score first.
    pub ranked: Vec<Row>,
    /// By pid.
    pub protected: Vec<Row>,
}

/// What one `/proc/<pid>` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub pid: i32,
    pub comm: String,
    pub kthread: bool,
    /// `None` when the process has no mm (kernel thread, zombie).
    pub memory: Option<Memory>,
    pub oom_score_adj: i16,
    pub cgroup: Option<String>,
    pub kernel_oom_score: Option<u32>,
}

/// The flags field of `/proc/<pid>/stat` (the comm may hold spaces and parentheses).
pub fn parse_stat_flags(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // state ppid pgrp session tty_nr tpgid flags
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// `VmSwap` of `/proc/<pid>/status`, in bytes, and whether its `Kthread:` line says 1.
fn parse_status_extra(status: &str) -> (Option<u64>, bool) {
    let mut swap = None;
    let mut kthread = false;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmSwap:") {
            swap = v
                .trim()
                .strip_suffix("kB")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .and_then(|n| n.checked_mul(1024));
        } else if let Some(v) = line.strip_prefix("Kthread:") {
            kthread = v.trim() == "1";
        }
    }
    (swap, kthread)
}

/// Reads `<proc>/<pid>`; `None` when the process vanished meanwhile.
pub fn read_sample(proc: &Path, pid: i32) -> Option<Sample> {
    let dir = proc.join(pid.to_string());
    let status = procfs::read_text(&dir.join("status"))?;
    let kernel_oom_score = fs::read_to_string(dir.join("oom_score"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let oom_score_adj = fs::read_to_string(dir.join("oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat_flags = procfs::read_text(&dir.join("stat")).and_then(|s| parse_stat_flags(&s));
    let cgroup = fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|s| procfs::parse_cgroup(&s));
    let mut info = ProcInfo::default();
    procfs::parse_status(&status, &mut info);
    let (swap, kthread_line) = parse_status_extra(&status);
    let memory = info.anon_rss.map(|anon| Memory {
        anon,
        file: info.file_rss.unwrap_or(0),
        shmem: info.shmem_rss.unwrap_or(0),
        swap: swap.unwrap_or(0),
        pgtables: info.pgtables.unwrap_or(0),
    });
    Some(Sample {
        pid,
        comm: info.comm.unwrap_or_default(),
        kthread: kthread_line || stat_flags.is_some_and(|f| f & PF_KTHREAD != 0),
        memory,
        oom_score_adj,
        cgroup,
        kernel_oom_score,
    })
}

/// Places one sample: `None` if the OOM killer never considers it at all (kernel threads,
/// processes without memory, outside the domain, excluded by the kernel right now).
pub fn classify(
    s: Sample,
    domain: &Domain,
    pod_of: &dyn Fn(&str) -> Option<String>,
) -> Option<Row> {
    if s.kthread {
        return None;
    }
    let mem = s.memory?;
    if let Some(root) = domain.filter() {
        if !s.cgroup.as_deref().is_some_and(|c| in_subtree(c, root)) {
            return None;
        }
    }
    let page_size = domain.page_size;
    let total = domain.total_pages();
    let host_total = domain.host.total_pages();
    let mem_pages = mem.pages(page_size);
    let protected_by = if s.pid == 1 {
        Some("init")
    } else if s.oom_score_adj == OOM_SCORE_ADJ_MIN {
        Some("oom_score_adj=-1000")
    } else {
        None
    };
    let (points, oom_score_v, host_score) = match protected_by {
        Some(_) => (None, 0, 0),
        None => {
            let points = badness(mem_pages, s.oom_score_adj, total);
            let host_points = badness(mem_pages, s.oom_score_adj, host_total);
            let host_score = oom_score(host_points, host_total);
            // The kernel said "not a candidate" (MMF_OOM_SKIP, in_vfork, exiting) although
            // the memory it showed gives a positive score: leave it out, as the killer would.
            if s.kernel_oom_score == Some(0) && host_score >= 2 {
                return None;
            }
            (Some(points), oom_score(points, total), host_score)
        }
    };
    let pod = s.cgroup.as_deref().and_then(pod_of);
    Some(Row {
        rank: None,
        pid: s.pid,
        comm: s.comm,
        oom_score: oom_score_v,
        host_oom_score: host_score,
        kernel_oom_score: s.kernel_oom_score,
        oom_score_adj: s.oom_score_adj,
        points,
        share: mem_pages as f64 / total as f64,
        rss_anon: mem.anon,
        rss_file: mem.file,
        rss_shmem: mem.shmem,
        swap: mem.swap,
        pgtables: mem.pgtables,
        domain_pages: total,
        cgroup: s.cgroup,
        pod,
        protected: protected_by.is_some(),
        protected_by: protected_by.map(str::to_string),
    })
}

/// Orders rows as the OOM killer would pick them: highest score, then points, then pid.
pub fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        b.oom_score
            .cmp(&a.oom_score)
            .then(b.points.cmp(&a.points))
            .then(a.pid.cmp(&b.pid))
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = Some(i + 1);
    }
}

/// Scans `<proc>` once and ranks every process in the domain.
pub fn rank(
    proc: &Path,
    domain: &Domain,
    pod_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Ranking, RankError> {
    let entries = fs::read_dir(proc).map_err(|source| RankError::Proc {
        path: proc.to_path_buf(),
        source,
    })?;
    let mut out = Ranking::default();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 0 {
            continue;
        }
        let Some(row) = read_sample(proc, pid).and_then(|s| classify(s, domain, pod_of)) else {
            continue;
        };
        if row.protected {
            out.protected.push(row);
        } else {
            out.ranked.push(row);
        }
    }
    sort_rows(&mut out.ranked);
    out.protected.sort_by_key(|r| r.pid);
    Ok(out)
}
