//! `/proc/meminfo` (commit accounting, totals, swap) and the per-NUMA-node
//! `/sys/devices/system/node/node<N>/meminfo`.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use super::read::{read_optional, read_text, HostError};
use super::snapshot::{HostSnapshot, NumaNode};
use crate::sink::metrics::prom::{f, family, gauge, single_gauge};

/// NUMA nodes read at most (the kernel's MAX_NUMNODES is at most 1024).
pub const MAX_NODES: usize = 4096;

/// The `/proc/meminfo` values used, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub mem_total: Option<u64>,
    pub mem_free: Option<u64>,
    pub mem_available: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
    pub commit_limit: Option<u64>,
    pub committed_as: Option<u64>,
}

/// One `Key:  value kB` line: the key (the last word before the colon, so the `Node 0`
/// prefix of the per-node files is skipped) and the value in bytes. A value without unit is
/// taken as is; another unit, a non-number or an overflow gives `None`.
pub fn parse_line(line: &str) -> Option<(&str, u64)> {
    let (left, right) = line.split_once(':')?;
    let key = left.split_whitespace().last()?;
    let mut words = right.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let bytes = match (words.next(), words.next()) {
        (Some("kB"), None) => n.checked_mul(1024)?,
        (None, None) => n,
        _ => return None,
    };
    Some((key, bytes))
}

/// Parses `/proc/meminfo`; unknown or malformed lines are ignored, the first occurrence wins.
pub fn parse_meminfo(text: &str) -> Meminfo {
    let mut m = Meminfo::default();
    for (key, bytes) in text.lines().filter_map(parse_line) {
        let slot = match key {
            "MemTotal" => &mut m.mem_total,
            "MemFree" => &mut m.mem_free,
            "MemAvailable" => &mut m.mem_available,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            "CommitLimit" => &mut m.commit_limit,
            "Committed_AS" => &mut m.committed_as,
            _ => continue,
        };
        slot.get_or_insert(bytes);
    }
    m
}

/// Parses a node's `meminfo` (`Node 0 MemTotal:  9660620 kB` lines).
pub fn parse_node_meminfo(text: &str) -> NumaNode {
    let mut n = NumaNode::default();
    for (key, bytes) in text.lines().filter_map(parse_line) {
        match key {
            "MemTotal" => {
                n.total_bytes.get_or_insert(bytes);
            }
            "MemFree" => {
                n.free_bytes.get_or_insert(bytes);
            }
            _ => {}
        }
    }
    n
}

/// The node number of a `node<N>` directory name.
pub fn node_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the `meminfo` collector read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeminfoData {
    pub meminfo: Meminfo,
    /// By node number; empty without NUMA sysfs.
    pub nodes: BTreeMap<u32, NumaNode>,
}

/// Reads `proc/meminfo` (required, with a `MemTotal` line) and the node files under `root`
/// (optional: a kernel without NUMA sysfs has none; a node that vanishes meanwhile is skipped).
pub fn read(root: &Path) -> Result<MeminfoData, HostError> {
    let path = root.join("proc/meminfo");
    let meminfo = parse_meminfo(&read_text(&path)?);
    if meminfo.mem_total.is_none() {
        return Err(HostError::parse(&path, "no MemTotal line"));
    }
    let dir = root.join("sys/devices/system/node");
    let mut nodes = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(HostError::Read { path: dir, source }),
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(|source| HostError::Read {
            path: dir.clone(),
            source,
        })?;
        let Some(id) = entry.file_name().to_str().and_then(node_number) else {
            continue;
        };
        if nodes.len() >= MAX_NODES {
            break;
        }
        if let Some(text) = read_optional(&entry.path().join("meminfo"))? {
            nodes.insert(id, parse_node_meminfo(&text));
        }
    }
    Ok(MeminfoData { meminfo, nodes })
}

impl MeminfoData {
    pub(super) fn fill(&self, s: &mut HostSnapshot) {
        let m = &self.meminfo;
        s.mem_total_bytes = m.mem_total;
        s.mem_free_bytes = m.mem_free;
        s.mem_available_bytes = m.mem_available;
        s.swap_total_bytes = m.swap_total;
        s.swap_free_bytes = m.swap_free;
        s.commit_limit_bytes = m.commit_limit;
        s.committed_as_bytes = m.committed_as;
        s.numa_nodes = self.nodes.clone();
    }

    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let m = &self.meminfo;
        let mut fams: Vec<MetricFamily> = [
            (
                "oomwatch_memory_commit_limit_bytes",
                "CommitLimit from /proc/meminfo: what may be committed under \
                 overcommit_memory=2 (swap plus overcommit_ratio or overcommit_kbytes of RAM).",
                m.commit_limit,
            ),
            (
                "oomwatch_memory_committed_as_bytes",
                "Committed_AS from /proc/meminfo: memory committed (allocated address space) by \
                 all processes.",
                m.committed_as,
            ),
            (
                "oomwatch_memory_total_bytes",
                "MemTotal from /proc/meminfo: usable RAM.",
                m.mem_total,
            ),
            (
                "oomwatch_memory_available_bytes",
                "MemAvailable from /proc/meminfo: the kernel's estimate of memory available \
                 for new work without swapping.",
                m.mem_available,
            ),
            (
                "oomwatch_memory_free_bytes",
                "MemFree from /proc/meminfo: memory not used at all.",
                m.mem_free,
            ),
            (
                "oomwatch_swap_total_bytes",
                "SwapTotal from /proc/meminfo.",
                m.swap_total,
            ),
            (
                "oomwatch_swap_free_bytes",
                "SwapFree from /proc/meminfo.",
                m.swap_free,
            ),
        ]
        .into_iter()
        .filter_map(|(name, help, v)| single_gauge(name, help, v.map(f)))
        .collect();

        // Series sorted by label value (as text), like everything else oomwatch exposes.
        let mut rows: Vec<(String, &NumaNode)> = self
            .nodes
            .iter()
            .map(|(id, n)| (id.to_string(), n))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let per_node = |pick: fn(&NumaNode) -> Option<u64>| -> Vec<Metric> {
            rows.iter()
                .filter_map(|(id, n)| pick(n).map(|v| gauge(&[("numa_node", id)], f(v))))
                .collect()
        };
        fams.push(family(
            "oomwatch_numa_node_memory_free_bytes",
            "MemFree of each NUMA node (sys/devices/system/node/node<N>/meminfo).",
            MetricType::GAUGE,
            per_node(|n| n.free_bytes),
        ));
        fams.push(family(
            "oomwatch_numa_node_memory_total_bytes",
            "MemTotal of each NUMA node (sys/devices/system/node/node<N>/meminfo).",
            MetricType::GAUGE,
            per_node(|n| n.total_bytes),
        ));
        fams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_in_bytes() {
        let m = parse_meminfo(
            "MemTotal:       24684084 kB\nMemFree:        24014760 kB\n\
             MemAvailable:   24231200 kB\nSwapTotal:             0 kB\nSwapFree: 0 kB\n\
             HugePages_Total:       0\nCommitLimit:    12342040 kB\nCommitted_AS:      63640 kB\n\
             MemTotal: 1 kB\nbogus\nVmallocTotal:   34359738367 kB\n",
        );
        assert_eq!(
            m.mem_total,
            Some(24_684_084 * 1024),
            "first occurrence wins"
        );
        assert_eq!(m.mem_available, Some(24_231_200 * 1024));
        assert_eq!(m.swap_total, Some(0));
        assert_eq!(m.commit_limit, Some(12_342_040 * 1024));
        assert_eq!(m.committed_as, Some(63_640 * 1024));
    }

    #[test]
    fn parse_line_edge_cases() {
        assert_eq!(
            parse_line("HugePages_Total:       7"),
            Some(("HugePages_Total", 7))
        );
        assert_eq!(parse_line("X: 1 MB"), None);
        assert_eq!(parse_line("X: 1 kB extra"), None);
        assert_eq!(parse_line("X: -1 kB"), None);
        assert_eq!(parse_line(": 1 kB"), None);
        assert_eq!(parse_line("X: 18446744073709551615 kB"), None, "overflow");
    }

    #[test]
    fn parses_node_meminfo() {
        let n = parse_node_meminfo(
            "Node 1 MemTotal:        9660620 kB\nNode 1 MemFree:         8991348 kB\n\
             Node 1 MemUsed:          669272 kB\nNode 1 HugePages_Total:     0\n",
        );
        assert_eq!(n.total_bytes, Some(9_660_620 * 1024));
        assert_eq!(n.free_bytes, Some(8_991_348 * 1024));
    }

    #[test]
    fn node_directory_names() {
        assert_eq!(node_number("node0"), Some(0));
        assert_eq!(node_number("node12"), Some(12));
        assert_eq!(node_number("node"), None);
        assert_eq!(node_number("node+1"), None);
        assert_eq!(node_number("possible"), None);
        assert_eq!(node_number("node99999999999"), None);
    }
}
