//! The kernel log: `/dev/kmsg` records, the OOM report parser (lines, task table), and the two
//! consumers of its items that do arithmetic on logged numbers (replay, kmsg contexts).
use std::time::{Duration, Instant};

use oomwatch::correlate::kmsg_context::KmsgContexts;
use oomwatch::recovery::replay::LogKills;
use oomwatch::source::kmsg::{
    parse_record, KmsgRecord, OomItem, OomReportParser, MAX_DUMP_ROWS, MAX_LINE_BYTES,
    MAX_NAME_BYTES, MAX_RECORD_BYTES,
};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::harness::{self, bounded, check, Bytes};

const RECORD_ALPHABET: &[u8] = b"0123456789,;-c+\\xX=\n ABCDEFabcdef";
const REPORT_ALPHABET: &[u8] = b" ,;=()[]:-0123456789\nkBxabcdefuidpgtables";

/// Pieces of every OOM report line the parser knows, to build plausible nonsense from.
const REPORT_TOKENS: &[&str] = &[
    "sed invoked oom-killer: ",
    "gfp_mask=0x",
    "cc0",
    "(GFP_KERNEL|__GFP_COMP)",
    ", order=",
    ", oom_score_adj=",
    "oom-kill:constraint=CONSTRAINT_MEMCG",
    "CONSTRAINT_NONE",
    ",nodemask=(null),cpuset=/,mems_allowed=0",
    ",oom_memcg=/a",
    ",task_memcg=/a/b",
    ",task=tail",
    ",pid=",
    ",uid=",
    "Memory cgroup out of memory",
    "Out of memory",
    ": Killed process ",
    "Killed process ",
    " (tail)",
    " total-vm:",
    "kB, anon-rss:",
    "kB, file-rss:",
    "kB, shmem-rss:",
    "kB, UID:",
    ", UID ",
    " pgtables:",
    "kB oom_score_adj:",
    "kB",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes \
     swapents oom_score_adj name",
    "[  12355]",
    "     0 12355    17037    16735    16320      415         0   172032        0           0 ",
    "oom_reaper: reaped process ",
    ", now anon-rss:",
    "Tasks in ",
    " are going to be killed due to memory.oom.group set",
    "Task in ",
    " killed as a result of limit of ",
    "memory: usage ",
    ": Kill process ",
    " score ",
    " or sacrifice child",
    "cpuset=",
    " mems_allowed=",
    "oom_kill_process: ",
    " callbacks suppressed",
    "Memory cgroup out of memory: Killed process ",
    " ",
    "  ",
    "\n",
];

fn kmsg_fixtures() -> Vec<Vec<u8>> {
    let mut all = harness::fixture_texts("kmsg", ".kmsg");
    all.extend(harness::fixture_texts("gfp", ".kmsg"));
    all
}

/// Every item's documented bounds.
fn check_items(items: &[OomItem]) {
    for item in items {
        if let OomItem::TaskDump(d) = item {
            assert!(d.rows.len() <= MAX_DUMP_ROWS, "{} rows", d.rows.len());
            for r in &d.rows {
                assert!(r.name.len() <= MAX_NAME_BYTES, "name {:?}", r.name);
            }
        }
    }
}

/// Feeds records to every kernel-log consumer: the parser, the replay and the contexts.
fn feed(records: &[KmsgRecord]) {
    let mut parser = OomReportParser::new();
    let mut replay = LogKills::new("host".into());
    let mut contexts = KmsgContexts::new();
    let base = Instant::now();
    for rec in records {
        check_items(&parser.push_record(rec));
        for kill in replay.push(rec) {
            assert_eq!(kill.seq, rec.seq);
            assert!(kill.event.replayed);
        }
        let now = base + Duration::from_micros(rec.ts_usec % (1 << 40));
        for pid in contexts.push_record(rec, now) {
            let _ = contexts.take(pid, (pid % 2 == 0).then_some(65_504));
        }
    }
    check_items(&parser.flush().into_iter().collect::<Vec<_>>());
}

fn record_of(message: String, flags: u8, seq: u64) -> KmsgRecord {
    KmsgRecord {
        facility: u8::from(flags & 15 == 1),
        level: flags >> 5,
        seq,
        ts_usec: seq.wrapping_mul(37_000),
        cont: flags & 7 == 0,
        message,
        dict: Vec::new(),
    }
}

fn check_record(buf: &[u8]) {
    let rec = bounded("parse_record", buf.len(), 8, || parse_record(buf));
    if buf.len() > MAX_RECORD_BYTES {
        assert!(rec.is_err(), "a {}-byte record was accepted", buf.len());
    }
    if let Ok(rec) = rec {
        // `\xNN` shrinks 4 bytes to 1; U+FFFD is 3 bytes for one invalid byte.
        assert!(rec.message.len() <= buf.len() * 3);
        let dict: usize = rec.dict.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(dict <= buf.len() * 3);
    }
}

#[test]
fn kmsg_record_random_bytes() {
    let header = (any::<u16>(), any::<u64>(), any::<u64>(), 0u8..4);
    let strategy = (header, harness::bytes(RECORD_ALPHABET, 400), any::<bool>());
    check(
        "kmsg_record_random",
        1,
        strategy,
        |(h, body, with_header)| {
            let mut buf = Vec::new();
            if with_header {
                let flags = ["-", "c", "+", ""][usize::from(h.3)];
                buf.extend(format!("{},{},{},{flags};", h.0 % 300, h.1, h.2).bytes());
            }
            buf.extend_from_slice(&body.0);
            check_record(&buf);
        },
    );
}

#[test]
fn kmsg_record_mutated_fixtures() {
    let corpus: Vec<Vec<u8>> = kmsg_fixtures()
        .iter()
        .flat_map(|t| oomwatch_testkit::kernel_log::raw_records(t))
        .collect();
    check(
        "kmsg_record_mutated",
        1,
        harness::mutated(corpus, RECORD_ALPHABET, 6),
        |buf| check_record(&buf.0),
    );
}

#[test]
fn kmsg_record_oversized_is_refused() {
    let mut buf = b"6,1,2,-;".to_vec();
    buf.resize(MAX_RECORD_BYTES + 1, b'a');
    check_record(&buf);
    buf.resize(4 << 20, b'\\');
    check_record(&buf);
}

/// Whole fixture reports with random edits, parsed record by record as the agent reads them.
#[test]
fn oom_report_mutated_fixtures() {
    check(
        "oom_report_mutated",
        1,
        harness::mutated(kmsg_fixtures(), REPORT_ALPHABET, 10),
        |text: Bytes| {
            let records: Vec<KmsgRecord> = oomwatch_testkit::kernel_log::raw_records(&text.0)
                .iter()
                .filter_map(|r| parse_record(r).ok())
                .collect();
            bounded("oom report", text.0.len(), 64, || feed(&records));
        },
    );
}

/// Streams of plausible report lines in random order, some as fragments or user records.
#[test]
fn oom_report_token_soup() {
    let lines = vec((harness::soup(REPORT_TOKENS, 14), any::<u8>()), 1..48);
    check("oom_report_soup", 1, lines, |lines| {
        let total: usize = lines.iter().map(|(l, _)| l.0.len()).sum();
        let records: Vec<KmsgRecord> = lines
            .iter()
            .enumerate()
            .map(|(i, (l, flags))| record_of(l.text(), *flags, i as u64))
            .collect();
        bounded("oom report", total, 64, || feed(&records));
    });
}

/// A number as the kernel might print it, biased to type edges; `usual` half the time.
fn number(usual: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(usual.to_string()),
        2 => proptest::sample::select(harness::EDGE_NUMBERS).prop_map(str::to_string),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u64..100_000).prop_map(|n| n.to_string()),
    ]
}

/// A complete report (header, task table, summary, kill, reap) whose every number is drawn
/// from [`number`]: arithmetic on logged values never overflows.
#[test]
fn oom_report_edge_numbers() {
    let n = || number("1000");
    let row = (number("42"), vec(n(), 9), number("0"));
    let strategy = (vec(row, 1..4), number("42"), vec(n(), 12), number("0"));
    check("oom_report_numbers", 1, strategy, |(rows, pid, v, adj)| {
        let mut lines = vec![
            format!("tail invoked oom-killer: gfp_mask=0x{}(GFP_KERNEL), order={}, oom_score_adj={adj}", v[0], v[1]),
            "Tasks state (memory values in pages):".to_string(),
            "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name".to_string(),
        ];
        for (p, c, a) in &rows {
            lines.push(format!("[{p:>7}] {} {a:>5} tail", c.join(" ")));
        }
        lines.extend([
            format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid={pid},uid={}", v[2]),
            format!("Memory cgroup out of memory: Killed process {pid} (tail) total-vm:{}kB, anon-rss:{}kB, file-rss:{}kB, shmem-rss:{}kB, UID:{} pgtables:{}kB oom_score_adj:{adj}", v[3], v[4], v[5], v[6], v[7], v[8]),
            format!("oom_reaper: reaped process {pid} (tail), now anon-rss:{}kB, file-rss:{}kB, shmem-rss:{}kB", v[9], v[10], v[11]),
        ]);
        let records: Vec<KmsgRecord> = lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| record_of(l, 2, i as u64))
            .collect();
        feed(&records);
    });
}

/// A task table that never ends, with names of every length, keeps at most `MAX_DUMP_ROWS`
/// rows of at most `MAX_NAME_BYTES`-byte names: its heap does not grow with the stream.
#[test]
fn endless_task_table_stays_bounded() {
    let rows = MAX_DUMP_ROWS + 200_000;
    let ((), peak) = harness::peak_heap(|| {
        let mut parser = OomReportParser::new();
        parser.push_line(
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        );
        let long = "n".repeat(MAX_LINE_BYTES - 100);
        let mut line = String::new();
        for i in 0..rows {
            let name = match i % 1000 {
                0 => long.as_str(),
                1 => "a name with spaces and more than sixty-four bytes in it, so refused .",
                _ => "worker",
            };
            line.clear();
            line.push_str(&format!("[{i:7}] 0 {i} 1 1 1 0 0 {name}"));
            assert!(parser.push_line(&line).is_empty());
        }
        let Some(OomItem::TaskDump(d)) = parser.flush() else {
            panic!("no task table")
        };
        assert_eq!(d.rows.len(), MAX_DUMP_ROWS);
        assert_eq!(
            d.rows.len() as u64 + d.dropped_rows + d.malformed_rows,
            rows as u64
        );
        check_items(&[OomItem::TaskDump(d)]);
    });
    let row = std::mem::size_of::<oomwatch::source::kmsg::DumpRow>();
    let limit = MAX_DUMP_ROWS * row * 2 + MAX_LINE_BYTES * 4 + harness::SLACK;
    assert!(
        peak <= limit,
        "{peak} bytes for an endless table (limit {limit})"
    );
}

/// Fragment records that never complete, and oversized lines, are dropped: the pending line
/// never exceeds `MAX_LINE_BYTES`.
#[test]
fn endless_fragments_stay_bounded() {
    let ((), peak) = harness::peak_heap(|| {
        let mut parser = OomReportParser::new();
        let piece = "x".repeat(1000);
        let huge = "y".repeat(MAX_LINE_BYTES * 4);
        for i in 0..20_000u64 {
            let message = match i % 50 {
                0 => "oom-kill:constraint=CONSTRAINT_NONE".to_string(),
                1 => huge.clone(),
                _ => piece.clone(),
            };
            // Flags 8: a kernel fragment; 2: a whole kernel line.
            let rec = record_of(message, if i % 3 == 0 { 8 } else { 2 }, i);
            check_items(&parser.push_record(&rec));
        }
        let s = parser.stats();
        assert!(s.oversized > 0, "{s:?}");
    });
    assert!(peak <= MAX_LINE_BYTES * 16 + harness::SLACK, "{peak} bytes");
}

/// The report above with every number at the largest value the parsers accept, with the task
/// table of 6.8+ and of 4.14 (`nr_ptes`, `nr_pmds`).
#[test]
fn oom_report_largest_numbers() {
    let m = i64::MAX;
    let tables = [
        (
            "rss_anon rss_file rss_shmem pgtables_bytes",
            format!("{m} {m} {m} {m}"),
        ),
        ("nr_ptes nr_pmds", format!("{m} {m}")),
    ];
    for ((columns, values), adj) in tables.iter().flat_map(|t| [(t, 0), (t, 1000), (t, -999)]) {
        let lines = [
            format!("tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj={adj}"),
            "Tasks state (memory values in pages):".to_string(),
            format!("[  pid  ]   uid  tgid total_vm      rss {columns} swapents oom_score_adj name"),
            format!("[     42] 0 42 {m} {m} {values} {m} {adj:>5} tail"),
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/a/b,task=tail,pid=42,uid=0".to_string(),
            format!("Out of memory: Killed process 42 (tail) total-vm:{m}kB, anon-rss:{m}kB, file-rss:{m}kB, shmem-rss:{m}kB, UID:0 pgtables:{m}kB oom_score_adj:{adj}"),
        ];
        let records: Vec<KmsgRecord> = lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| record_of(l, 2, i as u64))
            .collect();
        feed(&records);
    }
}
