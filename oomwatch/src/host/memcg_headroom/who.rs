//! Who is in a memory cgroup of the headroom set: its identity labels (cgroup path, runtime
//! bundle names) and the process the memcg OOM killer would pick next.
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::enrich::bundle::{BundleReader, BundleSource, Names};
use crate::enrich::identity::{self, Identity};
use crate::explain::domain::{self, Domain};
use crate::explain::rank;
use crate::sys::cgroup::Version;
use crate::sys::procfs;

/// Children of a pod-level cgroup tried for the pod's names.
const POD_CHILDREN_TRIED: usize = 8;

/// Identity labels of a cgroup; empty strings where unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Who {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub pod_uid: String,
}

/// Names of the identity's container from its runtime's bundle, unless they name another pod
/// than the path (never a wrong name), as the event enricher does.
fn names_of(bundles: &mut BundleReader, id: &Identity) -> Option<Arc<Names>> {
    let c = id.container.as_ref()?;
    let hint = c.runtime.map(BundleSource::of);
    let names = bundles.lookup(&c.id, hint)?;
    match (&id.pod, &names.pod_uid) {
        (Some(p), Some(uid)) if !uid.eq_ignore_ascii_case(&p.uid) => None,
        _ => Some(names),
    }
}

/// The identity labels of cgroup `path` (directory `dir`).
pub fn who(path: &str, dir: &Path, bundles: &mut BundleReader) -> Who {
    let id = identity::parse(path);
    let mut w = Who::default();
    if let Some(p) = &id.pod {
        w.pod_uid.clone_from(&p.uid);
    }
    let names = if id.container.is_some() {
        names_of(bundles, &id)
    } else if id.pod.is_some() {
        // A pod-level cgroup: the pod's names from one of its containers.
        let mut children: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        children.sort_unstable();
        children
            .iter()
            .map(|name| identity::parse(&format!("{path}/{name}")))
            .filter(|c| c.container.is_some() && c.pod == id.pod)
            .take(POD_CHILDREN_TRIED)
            .find_map(|c| names_of(bundles, &c))
    } else {
        None
    };
    if let Some(n) = names {
        w.namespace = n.namespace.clone().unwrap_or_default();
        w.pod = n.pod.clone().unwrap_or_default();
        if w.pod_uid.is_empty() {
            w.pod_uid = n.pod_uid.clone().unwrap_or_default();
        }
        if id.container.is_some() && !n.sandbox {
            w.container = n.container.clone().unwrap_or_default();
        }
    }
    w
}

/// The process the memcg OOM killer would pick next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    pub pid: i32,
    pub comm: String,
    /// `/proc/<pid>/oom_score` as read (host scale), else the same computed.
    pub oom_score: u32,
}

/// The next victim of each cgroup (`(path, dir)`), ranked as `oomwatch top --cgroup` does,
/// from one pass over `<root>/proc`. `None` for a cgroup without a killable process, or
/// when `/proc/meminfo` or the cgroup's limit cannot be read.
pub fn next_victims(
    root: &Path,
    version: Version,
    cgroups: &[(&str, &Path)],
    page_size: u64,
) -> Vec<Option<Victim>> {
    let mut best = vec![None; cgroups.len()];
    let proc = root.join("proc");
    let Some(host) = fs::read_to_string(proc.join("meminfo"))
        .ok()
        .and_then(|t| domain::parse_meminfo(&t, page_size))
    else {
        return best;
    };
    let domains: Vec<Option<Domain>> = cgroups
        .iter()
        .map(|(path, dir)| {
            let m = domain::memcg(version, (*path).into(), dir.into(), host, root, page_size);
            m.ok().map(|m| Domain {
                page_size,
                host,
                memcg: Some(m),
            })
        })
        .collect();
    if domains.iter().all(Option::is_none) {
        return best;
    }
    let Ok(entries) = fs::read_dir(&proc) else {
        return best;
    };
    let mut rows: Vec<Vec<rank::Row>> = vec![Vec::new(); cgroups.len()];
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 0 {
            continue;
        }
        // Only /proc/<pid>/cgroup for processes outside every subtree.
        let Some(cg) = fs::read_to_string(proc.join(pid.to_string()).join("cgroup"))
            .ok()
            .and_then(|t| procfs::parse_cgroup(&t))
        else {
            continue;
        };
        let inside: Vec<usize> = (0..cgroups.len())
            .filter(|&i| domains[i].is_some() && domain::in_subtree(&cg, cgroups[i].0))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let Some(sample) = rank::read_sample(&proc, pid) else {
            continue;
        };
        for i in inside {
            let Some(d) = &domains[i] else { continue };
            if let Some(row) = rank::classify(sample.clone(), d, &|_| None) {
                if !row.protected {
                    rows[i].push(row);
                }
            }
        }
    }
    for (slot, mut r) in best.iter_mut().zip(rows) {
        rank::sort_rows(&mut r);
        *slot = r.into_iter().next().map(|row| Victim {
            pid: row.pid,
            oom_score: row.kernel_oom_score.unwrap_or(row.host_oom_score),
            comm: row.comm,
        });
    }
    best
}
