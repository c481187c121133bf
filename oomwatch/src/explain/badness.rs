//! The kernel's `oom_badness()` (mm/oom_kill.c) and `proc_oom_score()` (fs/proc/base.c), written
//! once: used for the candidates of a kill (from the kernel's task dump) and for live processes
//! (`oomwatch top`, the headroom collector).
//!
//! ```text
//! points    = rss + swap entries + page-table pages + oom_score_adj * (totalpages / 1000)
//! oom_score = (1000 + points * 1000 / totalpages) * 2 / 3
//! ```
//!
//! `totalpages` is the OOM domain's size: for a memcg OOM its limit (plus the swap it may use,
//! up to the host's swap), for a global OOM all RAM plus swap. Tasks with
//! `oom_score_adj = -1000` are never picked.

/// `OOM_SCORE_ADJ_MIN`: never killed.
pub const OOM_SCORE_ADJ_MIN: i16 = -1000;

/// `oom_badness()` for a killable task.
pub fn badness(mem_pages: u64, oom_score_adj: i16, total_pages: u64) -> i64 {
    let adj = i128::from(oom_score_adj) * i128::from(total_pages / 1000);
    clamp_i64(i128::from(mem_pages) + adj)
}

/// `proc_oom_score()` for a task whose badness is `points`, on the 0..=2000 scale.
pub fn oom_score(points: i64, total_pages: u64) -> u32 {
    let t = i128::from(total_pages.max(1));
    let v = (1000 + i128::from(points) * 1000 / t) * 2 / 3;
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The domain's size in pages from the report's page counters (memcg) or the host's memory
/// (global): `limit + min(swap limit, host swap)`, or `MemTotal + SwapTotal`.
pub fn totalpages(
    memcg_limit_kb: Option<u64>,
    swap_limit_kb: Option<Option<u64>>,
    global: bool,
    mem_total: Option<u64>,
    swap_total: Option<u64>,
    page_size: u64,
) -> Option<u64> {
    let page = page_size.max(1);
    let swap_pages = swap_total.unwrap_or(0) / page;
    if global {
        return Some(mem_total? / page + swap_pages);
    }
    let limit = memcg_limit_kb? * 1024 / page;
    let swap = match swap_limit_kb {
        // Unlimited: as much as the host has.
        Some(None) | None => swap_pages,
        Some(Some(kb)) => (kb * 1024 / page).min(swap_pages),
    };
    Some((limit + swap).max(1))
}

/// `/proc/meminfo`'s `MemTotal` and `SwapTotal` in bytes (for [`totalpages`]).
pub fn host_totals(meminfo: &str) -> (Option<u64>, Option<u64>) {
    let get = |key: &str| {
        meminfo.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim();
            v.parse::<u64>().ok()?.checked_mul(1024)
        })
    };
    (get("MemTotal:"), get("SwapTotal:"))
}
