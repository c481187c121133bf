//! The OOM report's account of the domain's memory at the kill, printed before the task dump:
//!
//! * memcg OOM (`mem_cgroup_print_oom_meminfo()`): `memory: usage 65536kB, limit 65536kB,
//!   failcnt 19`, then `swap: ...` (v2) or `memory+swap: ...` and `kmem: ...` (v1), then
//!   `Memory cgroup stats for /path:` and one `key value` line per statistic (bytes; on v2 the
//!   kernel may print them as one record with embedded newlines);
//! * global OOM (`show_mem()`): `Mem-Info:` then lines of `key:pages` pairs
//!   (`active_anon:12 inactive_anon:941203 isolated_anon:0`, ...).
//!
//! Statistics lines are bounded ([`MAX_STATS`]); anything else ends a block.

/// Most statistics kept from one block.
pub const MAX_STATS: usize = 128;

/// `<name>: usage NkB, limit NkB, failcnt N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// `memory`, `swap`, `memory+swap` or `kmem`.
    pub name: String,
    pub usage_kb: u64,
    /// `None` when unlimited (the kernel prints PAGE_COUNTER_MAX, ~2^53 kB).
    pub limit_kb: Option<u64>,
}

/// Parses a page-counter line.
pub fn parse_counter(line: &str) -> Option<Counter> {
    let (name, rest) = line.split_once(": usage ")?;
    if !matches!(name, "memory" | "swap" | "memory+swap" | "kmem") {
        return None;
    }
    let (usage, rest) = rest.split_once("kB, limit ")?;
    let (limit, _) = rest.split_once("kB")?;
    let limit: u64 = limit.trim().parse().ok()?;
    Some(Counter {
        name: name.to_string(),
        usage_kb: usage.trim().parse().ok()?,
        limit_kb: (limit < (1u64 << 52)).then_some(limit),
    })
}

/// `Memory cgroup stats for /path:` → the path.
pub fn parse_stats_header(line: &str) -> Option<String> {
    let path = line
        .strip_prefix("Memory cgroup stats for ")?
        .strip_suffix(':')?;
    path.starts_with('/').then(|| path.to_string())
}

/// One `key value` statistics line (lowercase key, unsigned value).
pub fn parse_stat_line(line: &str) -> Option<(String, u64)> {
    let (k, v) = line.split_once(' ')?;
    let key_ok = !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    key_ok.then_some(())?;
    Some((k.to_string(), v.trim().parse().ok()?))
}

/// One `Mem-Info:` line: `key:value` pairs separated by spaces; `None` if any token is not one.
pub fn parse_meminfo_line(line: &str) -> Option<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for tok in line.split_whitespace() {
        let (k, v) = tok.split_once(':')?;
        let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        ok.then_some(())?;
        out.push((k.to_string(), v.parse().ok()?));
    }
    (!out.is_empty()).then_some(out)
}

/// A statistics block being collected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// After `Memory cgroup stats for <path>:`.
    Memcg {
        cgroup: String,
        stats: Vec<(String, u64)>,
    },
    /// After `Mem-Info:` (values in pages).
    Global { pages: Vec<(String, u64)> },
}

impl Block {
    /// Whether `line` is a line of this block.
    pub fn accepts(&self, line: &str) -> bool {
        match self {
            Block::Memcg { .. } => parse_stat_line(line).is_some(),
            Block::Global { .. } => parse_meminfo_line(line).is_some(),
        }
    }

    /// Adds a line if it belongs to the block; `false` ends the block.
    pub fn push(&mut self, line: &str) -> bool {
        match self {
            Block::Memcg { stats, .. } => match parse_stat_line(line) {
                Some(kv) => {
                    if stats.len() < MAX_STATS {
                        stats.push(kv);
                    }
                    true
                }
                None => false,
            },
            Block::Global { pages } => match parse_meminfo_line(line) {
                Some(kvs) => {
                    for kv in kvs {
                        if pages.len() < MAX_STATS {
                            pages.push(kv);
                        }
                    }
                    true
                }
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_v1_and_v2() {
        assert_eq!(
            parse_counter("memory: usage 65536kB, limit 65536kB, failcnt 19"),
            Some(Counter {
                name: "memory".into(),
                usage_kb: 65536,
                limit_kb: Some(65536)
            })
        );
        let sw = parse_counter("memory+swap: usage 65536kB, limit 9007199254740988kB, failcnt 0");
        assert_eq!(sw.unwrap().limit_kb, None);
        assert_eq!(
            parse_counter("swap: usage 0kB, limit 0kB, failcnt 0").map(|c| c.limit_kb),
            Some(Some(0))
        );
        assert_eq!(parse_counter("cpu: usage 1kB, limit 2kB, failcnt 0"), None);
        assert_eq!(parse_counter("memory: usage xkB, limit 2kB"), None);
    }

    #[test]
    fn stats_and_meminfo_blocks_end_at_the_first_foreign_line() {
        assert_eq!(
            parse_stats_header("Memory cgroup stats for /a b:").as_deref(),
            Some("/a b")
        );
        let mut b = Block::Memcg {
            cgroup: "/x".into(),
            stats: Vec::new(),
        };
        assert!(b.push("anon 66846720"));
        assert!(b.push("total_rss 5"));
        assert!(!b.push("Tasks state (memory values in pages):"));
        let mut g = Block::Global { pages: Vec::new() };
        assert!(g.push("active_anon:12 inactive_anon:941203 isolated_anon:0"));
        assert!(!g.push("Node 0 active_anon:48kB inactive_anon:3764812kB"));
        assert_eq!(
            g,
            Block::Global {
                pages: vec![
                    ("active_anon".into(), 12),
                    ("inactive_anon".into(), 941203),
                    ("isolated_anon".into(), 0)
                ]
            }
        );
    }

    #[test]
    fn endless_blocks_stay_bounded() {
        let mut b = Block::Memcg {
            cgroup: "/x".into(),
            stats: Vec::new(),
        };
        for i in 0..10_000 {
            assert!(b.push(&format!("k{i} {i}")));
        }
        let Block::Memcg { stats, .. } = b else {
            unreachable!()
        };
        assert_eq!(stats.len(), MAX_STATS);
    }
}
