//! Section "Host settings": the host values that shape OOM kills, the risky-settings rules of
//! [`HostSnapshot::warnings`], and the rule on processes the OOM killer may never pick.
use std::path::Path;

use serde::Serialize;

use super::report::{Item, Status};
use crate::commands::top::{self, TopArgs};
use crate::explain::badness::OOM_SCORE_ADJ_MIN;
use crate::explain::rank;
use crate::host::{HostSnapshot, Warning};
use crate::sys::text::human;

/// Code of the warning on memory held by processes with `oom_score_adj=-1000`.
pub const PROTECTED_CODE: &str = "protected_memory_high";
/// That warning fires when their RSS exceeds this share of `MemTotal`, in percent.
pub const PROTECTED_LIMIT_PERCENT: u64 = 50;
/// How many of the largest protected processes are named.
const LARGEST: usize = 3;

/// One process with `oom_score_adj=-1000`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProtectedProcess {
    pub pid: i32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// Processes with `oom_score_adj=-1000`: the OOM killer never picks them, so memory they hold
/// can only be freed by killing everything else.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Protected {
    pub processes: usize,
    /// Sum of their RSS (anon + file + shmem).
    pub rss_bytes: u64,
    pub mem_total_bytes: Option<u64>,
    /// `rss_bytes` as a percentage of `mem_total_bytes`.
    pub percent: Option<f64>,
    /// The largest, biggest first.
    pub largest: Vec<ProtectedProcess>,
    /// Why the processes could not be listed.
    pub error: Option<String>,
}

impl Protected {
    /// From `oomwatch top`'s rows (only those with `oom_score_adj=-1000` count: init is
    /// protected differently and its memory is small).
    pub fn from_rows(rows: &[rank::Row], mem_total: Option<u64>) -> Self {
        let mut procs: Vec<ProtectedProcess> = rows
            .iter()
            .filter(|r| r.oom_score_adj == OOM_SCORE_ADJ_MIN)
            .map(|r| ProtectedProcess {
                pid: r.pid,
                comm: r.comm.clone(),
                rss_bytes: r
                    .rss_anon
                    .saturating_add(r.rss_file)
                    .saturating_add(r.rss_shmem),
            })
            .collect();
        let rss = procs
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.rss_bytes));
        procs.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
        let processes = procs.len();
        procs.truncate(LARGEST);
        Protected {
            processes,
            rss_bytes: rss,
            mem_total_bytes: mem_total,
            percent: mem_total
                .filter(|&t| t > 0)
                .map(|t| rss as f64 * 100.0 / t as f64),
            largest: procs,
            error: None,
        }
    }

    /// Scans `<host_root>/proc` as `oomwatch top` does.
    pub fn gather(host_root: &Path, mem_total: Option<u64>) -> Self {
        let args = TopArgs {
            json: false,
            limit: 0,
            cgroup: None,
            host_root: host_root.to_path_buf(),
        };
        match top::collect(&args, &|_| None) {
            Ok((domain, ranking)) => {
                let total = mem_total
                    .or_else(|| Some(domain.host.ram_pages.saturating_mul(domain.page_size)));
                Self::from_rows(&ranking.protected, total)
            }
            Err(e) => Protected {
                mem_total_bytes: mem_total,
                error: Some(e.to_string()),
                ..Protected::default()
            },
        }
    }

    /// Whether their RSS exceeds [`PROTECTED_LIMIT_PERCENT`] of `MemTotal`.
    pub fn too_much(&self) -> bool {
        self.mem_total_bytes.filter(|&t| t > 0).is_some_and(|t| {
            u128::from(self.rss_bytes) * 100 > u128::from(t) * u128::from(PROTECTED_LIMIT_PERCENT)
        })
    }
}

/// The fix for a [`Warning`] of [`HostSnapshot::warnings`].
pub fn fix_for(code: &str, snap: &HostSnapshot) -> Option<String> {
    let persist = " (persist it in /etc/sysctl.d/)";
    Some(match code {
        "panic_on_oom_always" | "panic_on_oom" => {
            format!("sysctl -w vm.panic_on_oom=0{persist}, unless panicking is intended (failover)")
        }
        "oom_kill_allocating_task" => format!("sysctl -w vm.oom_kill_allocating_task=0{persist}"),
        "overcommit_near_limit" => "add memory or swap, raise vm.overcommit_ratio, or find what \
                                    commits most (`oomwatch top`)"
            .to_string(),
        "overcommit_always" => {
            format!("sysctl -w vm.overcommit_memory=0{persist}, unless a workload needs it")
        }
        "min_free_kbytes_high" | "min_free_kbytes_low" => match snap.min_free_expected_kbytes() {
            Some(v) => format!("sysctl -w vm.min_free_kbytes={v}{persist}"),
            None => "set vm.min_free_kbytes back to the kernel's own value".to_string(),
        },
        "oom_dump_tasks_off" => format!("sysctl -w vm.oom_dump_tasks=1{persist}"),
        "oom_kill_lines_on_console" => format!(
            "sysctl -w kernel.printk=\"3 4 1 7\"{persist} or boot with loglevel=3: the line \
             stays in the kernel log and /dev/kmsg, off the console"
        ),
        _ => return None,
    })
}

fn warn_item(w: &Warning, snap: &HostSnapshot) -> Item {
    let item = Item::new(Status::Warn, w.code, w.message.clone());
    match fix_for(w.code, snap) {
        Some(f) => item.with_fix(f),
        None => item,
    }
}

/// Pushes the warnings whose code is in `codes` (taking them out of `left`), or `ok` when none.
fn setting(
    out: &mut Vec<Item>,
    left: &mut Vec<Warning>,
    codes: &[&str],
    snap: &HostSnapshot,
    ok: Option<Item>,
) {
    let (hit, rest): (Vec<Warning>, Vec<Warning>) =
        left.drain(..).partition(|w| codes.contains(&w.code));
    *left = rest;
    if hit.is_empty() {
        out.extend(ok);
    } else {
        out.extend(hit.iter().map(|w| warn_item(w, snap)));
    }
}

fn pct(part: u64, whole: u64) -> String {
    (u128::from(part) * 100)
        .checked_div(u128::from(whole))
        .map_or_else(|| "-".into(), |p| format!("{p}%"))
}

/// The items of the section. `host_root_error` is set when `--host-root` has no `proc/`.
pub fn items(
    snap: &HostSnapshot,
    warnings: &[Warning],
    protected: &Protected,
    host_root_error: Option<&str>,
) -> Vec<Item> {
    let mut out = Vec::new();
    reading_items(&mut out, snap, host_root_error);
    let mut left = warnings.to_vec();
    oom_sysctl_items(&mut out, &mut left, snap);
    let codes = ["overcommit_near_limit", "overcommit_always"];
    setting(&mut out, &mut left, &codes, snap, overcommit_item(snap));
    let codes = ["min_free_kbytes_high", "min_free_kbytes_low"];
    setting(&mut out, &mut left, &codes, snap, min_free_item(snap));
    // Rules added to the snapshot later still show up.
    out.extend(left.iter().map(|w| warn_item(w, snap)));
    out.extend(psi_item(snap));
    if let Some(n) = snap.kernel_oom_kills {
        out.push(Item::info(
            "kernel_oom_kills",
            format!("OOM kills since boot: {n}"),
        ));
    }
    out.push(protected_item(protected));
    out
}

/// What could not be read, then the host's memory.
fn reading_items(out: &mut Vec<Item>, snap: &HostSnapshot, host_root_error: Option<&str>) {
    if let Some(e) = host_root_error {
        out.push(
            Item::new(Status::Fail, "host_root", e.to_string()).with_fix(
                "give the directory where the host's / is mounted (e.g. /host with /proc at \
                 /host/proc)",
            ),
        );
    }
    for (name, e) in &snap.collector_errors {
        out.push(
            Item::new(
                Status::Warn,
                "host_collector",
                format!("cannot read the {name} values: {e}"),
            )
            .with_fix("pass --host-root a directory holding the host's /proc and /sys"),
        );
    }
    if let Some(total) = snap.mem_total_bytes {
        let avail = snap.mem_available_bytes.map_or("-".into(), human);
        let swap = snap.swap_total_bytes.map_or("-".into(), human);
        out.push(Item::info(
            "memory",
            format!(
                "MemTotal {}, MemAvailable {avail}, SwapTotal {swap}",
                human(total)
            ),
        ));
    }
}

/// An "ok" line for a sysctl. Codes of the "ok" lines are `vm_<name>`: the warnings own the
/// bare names.
fn ok_if(v: Option<i64>, code: &'static str, text: &str) -> Option<Item> {
    let name = code.trim_start_matches("vm_");
    v.map(|v| Item::ok(code, format!("vm.{name}={v}: {text}")))
}

/// The OOM killer's own sysctls: panic_on_oom, oom_kill_allocating_task, oom_dump_tasks.
fn oom_sysctl_items(out: &mut Vec<Item>, left: &mut Vec<Warning>, snap: &HostSnapshot) {
    let panic = ok_if(
        snap.panic_on_oom,
        "vm_panic_on_oom",
        "an OOM kills a task, the node stays up",
    );
    setting(
        out,
        left,
        &["panic_on_oom_always", "panic_on_oom"],
        snap,
        panic,
    );
    let oakt = ok_if(
        snap.oom_kill_allocating_task,
        "vm_oom_kill_allocating_task",
        "the OOM killer picks the task with the highest oom_score",
    );
    setting(out, left, &["oom_kill_allocating_task"], snap, oakt);
    let dump = ok_if(
        snap.oom_dump_tasks,
        "vm_oom_dump_tasks",
        "the kernel log lists the candidate tasks of each OOM",
    );
    setting(out, left, &["oom_dump_tasks_off"], snap, dump);
}

/// The "ok" line of vm.overcommit_memory, with its ratio or kbytes and how full the commit is.
fn overcommit_item(snap: &HostSnapshot) -> Option<Item> {
    snap.overcommit_memory.map(|m| {
        let mut text = format!("vm.overcommit_memory={m}");
        match (snap.overcommit_kbytes, snap.overcommit_ratio) {
            (Some(kb), _) if kb > 0 => text.push_str(&format!(", vm.overcommit_kbytes={kb}")),
            (_, Some(r)) => text.push_str(&format!(", vm.overcommit_ratio={r}")),
            _ => {}
        }
        if let (Some(c), Some(l)) = (snap.committed_as_bytes, snap.commit_limit_bytes) {
            let p = pct(c, l);
            text.push_str(&format!(
                "; Committed_AS {} is {p} of CommitLimit {}",
                human(c),
                human(l)
            ));
        }
        Item::ok("vm_overcommit", text)
    })
}

/// The "ok" line of vm.min_free_kbytes, with the kernel's own value.
fn min_free_item(snap: &HostSnapshot) -> Option<Item> {
    snap.min_free_kbytes.map(|cur| {
        let mut text = format!("vm.min_free_kbytes={cur}");
        match (
            snap.min_free_default_kbytes,
            snap.min_free_expected_kbytes(),
        ) {
            (Some(d), Some(e)) if e > d => text.push_str(&format!(
                " (the kernel's own value here: {e}, its default {d} raised for transparent \
                 huge pages)"
            )),
            (Some(d), _) => text.push_str(&format!(" (the kernel's default here: {d})")),
            _ => {}
        }
        Item::ok("vm_min_free_kbytes", text)
    })
}

/// Memory pressure (PSI), when the kernel says whether it has it.
fn psi_item(snap: &HostSnapshot) -> Option<Item> {
    match (snap.psi_supported, snap.psi_some, snap.psi_full) {
        (Some(false), ..) => Some(Item::info(
            "psi",
            "memory pressure (PSI): not available (CONFIG_PSI off or booted with psi=0)",
        )),
        (Some(true), some, full) => {
            let avg = |p: Option<crate::host::PsiAverages>| {
                p.map_or("-".into(), |p| format!("{:.2}%", p.avg10_percent))
            };
            Some(Item::ok(
                "psi",
                format!(
                    "memory pressure (PSI avg10): some {}, full {}",
                    avg(some),
                    avg(full)
                ),
            ))
        }
        (None, ..) => None,
    }
}

fn protected_item(p: &Protected) -> Item {
    if let Some(e) = &p.error {
        return Item::info(
            PROTECTED_CODE,
            format!("processes with oom_score_adj=-1000: not listed: {e}"),
        );
    }
    let share = match (p.percent, p.mem_total_bytes) {
        (Some(pc), Some(t)) => format!("{pc:.1}% of MemTotal {}", human(t)),
        _ => "MemTotal unknown".to_string(),
    };
    let largest: Vec<String> = p
        .largest
        .iter()
        .map(|x| format!("{} ({}) {}", x.comm, x.pid, human(x.rss_bytes)))
        .collect();
    let largest = if largest.is_empty() {
        String::new()
    } else {
        format!("; largest: {}", largest.join(", "))
    };
    let text = format!(
        "processes with oom_score_adj=-1000 (never killed): {}, RSS {} = {share}{largest}",
        p.processes,
        human(p.rss_bytes)
    );
    if p.too_much() {
        Item::new(
            Status::Warn,
            PROTECTED_CODE,
            format!(
                "{text}: more than {PROTECTED_LIMIT_PERCENT}% of memory cannot be freed by the \
                 OOM killer, so it kills everything else first, possibly repeatedly"
            ),
        )
        .with_fix(
            "give them oom_score_adj -999 (still last, but killable) or a memory limit; see \
             `oomwatch top`",
        )
    } else {
        Item::ok(PROTECTED_CODE, text)
    }
}
