//! Property tests with a seeded xorshift generator: arbitrary bytes and mutated real lines never
//! panic the record parser, the reader or the OOM parser, and never grow them without bound.
use std::collections::VecDeque;
use std::io;

use super::dump::{MAX_DUMP_ROWS, MAX_NAME_BYTES};
use super::fixture_tests::load;
use super::oom::{OomItem, OomReportParser, MAX_LINE_BYTES};
use super::reader::{KmsgReader, KmsgSource, SeekTo};
use super::record::{parse_record, MAX_RECORD_BYTES};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes biased towards the characters the parsers care about.
fn random_bytes(rng: &mut XorShift, max_len: usize) -> Vec<u8> {
    const INTERESTING: &[u8] = b" ,;=()[]:-\\x0123456789\nkBc";
    let len = rng.below(max_len + 1);
    (0..len)
        .map(|_| match rng.below(3) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            1 => b'a' + rng.below(26) as u8,
            _ => rng.next() as u8,
        })
        .collect()
}

/// A real report line with random edits (insert, delete, replace, truncate, duplicate).
fn mutate(rng: &mut XorShift, line: &str) -> String {
    let mut b = line.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(5) {
            0 => b.insert(at, random_bytes(rng, 1).first().copied().unwrap_or(b'(')),
            1 if !b.is_empty() => {
                b.remove(at);
            }
            2 if !b.is_empty() => b[at] = rng.next() as u8,
            3 => b.truncate(at),
            _ => {
                let piece = b[at..].to_vec();
                b.extend_from_slice(&piece);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn all_fixture_lines() -> Vec<String> {
    [
        "oom-memcg-v6.18-host-tail.kmsg",
        "oom-global-v6.12.kmsg",
        "oom-memcg-group-v6.6.kmsg",
        "oom-mempolicy-v5.10.kmsg",
        "oom-global-v5.0.kmsg",
        "oom-memcg-v4.19.kmsg",
        "oom-global-v4.14.kmsg",
        "oom-global-v2.6.32-rhel6.kmsg",
    ]
    .iter()
    .flat_map(|f| load(f))
    .map(|r| r.message)
    .collect()
}

fn check_bounds(items: &[OomItem]) {
    for item in items {
        if let OomItem::TaskDump(d) = item {
            assert!(d.rows.len() <= MAX_DUMP_ROWS);
            assert!(d.rows.iter().all(|r| r.name.len() <= MAX_NAME_BYTES));
        }
    }
}

#[test]
fn random_bytes_never_panic_the_record_parser() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut buf = random_bytes(&mut rng, 300);
        if rng.below(2) == 0 {
            let header = format!("{},{},{},-;", rng.below(300), rng.next(), rng.next());
            buf.splice(0..0, header.bytes());
        }
        if let Ok(rec) = parse_record(&buf) {
            assert!(
                rec.message.len() <= buf.len() * 3,
                "U+FFFD is 3 bytes at most"
            );
        }
    }
    assert!(parse_record(&vec![b';'; MAX_RECORD_BYTES + 1]).is_err());
}

#[test]
fn mutated_report_lines_never_panic_the_oom_parser() {
    let lines = all_fixture_lines();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut parser = OomReportParser::new();
    for _ in 0..60_000 {
        let line = match rng.below(4) {
            0 => String::from_utf8_lossy(&random_bytes(&mut rng, 200)).into_owned(),
            _ => {
                let pick = rng.below(lines.len());
                mutate(&mut rng, &lines[pick])
            }
        };
        let rec = super::record::KmsgRecord {
            facility: 0,
            level: 6,
            seq: 0,
            ts_usec: 0,
            cont: rng.below(8) == 0,
            message: line,
            dict: Vec::new(),
        };
        check_bounds(&parser.push_record(&rec));
    }
    check_bounds(&parser.flush().into_iter().collect::<Vec<_>>());
}

#[test]
fn endless_row_stream_stays_bounded() {
    let mut rng = XorShift(7);
    let mut parser = OomReportParser::new();
    parser.push_line(
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    );
    let long_name = "n".repeat(MAX_LINE_BYTES / 2);
    for i in 0..(MAX_DUMP_ROWS + 50_000) {
        let name = if rng.below(100) == 0 {
            long_name.as_str()
        } else {
            "w"
        };
        let out = parser.push_line(&format!("[{i:7}] 0 {i} 1 1 1 0 0 {name}"));
        assert!(out.is_empty());
    }
    let Some(OomItem::TaskDump(d)) = parser.flush() else {
        panic!("table expected")
    };
    assert_eq!(d.rows.len(), MAX_DUMP_ROWS);
    assert!(d.dropped_rows > 0);
    assert!(
        d.malformed_rows > 0,
        "oversized names are rejected, not stored"
    );
    assert_eq!(
        d.rows.len() as u64 + d.dropped_rows + d.malformed_rows,
        (MAX_DUMP_ROWS + 50_000) as u64
    );
    assert!(d.rows.iter().all(|r| r.name.len() <= MAX_NAME_BYTES));
}

/// A source that returns random buffers, EAGAIN, EPIPE and EINTR.
struct RandomSource {
    rng: XorShift,
    left: usize,
    queue: VecDeque<Vec<u8>>,
}

impl KmsgSource for RandomSource {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.left -= 1;
        match self.rng.below(10) {
            0 => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            1 => Err(io::Error::from_raw_os_error(libc::EINTR)),
            2 => Err(io::ErrorKind::WouldBlock.into()),
            _ => {
                let rec = self.queue.pop_front().unwrap_or_else(|| {
                    let seq = self.rng.below(1000);
                    let mut r = format!("6,{seq},1,-;").into_bytes();
                    r.extend(random_bytes(&mut self.rng, 100));
                    r
                });
                let n = rec.len().min(buf.len());
                buf[..n].copy_from_slice(&rec[..n]);
                Ok(n)
            }
        }
    }

    fn seek_to(&mut self, _: SeekTo) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn random_reads_never_panic_the_reader() {
    let mut reader = KmsgReader::new(RandomSource {
        rng: XorShift(12345),
        left: 50_000,
        queue: VecDeque::new(),
    });
    let mut events = 0u64;
    let mut idle = 0;
    while idle < 1000 {
        match reader.next_event() {
            Ok(Some(_)) => events += 1,
            Ok(None) => idle += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let s = reader.stats();
    assert_eq!(events, s.records + s.gaps);
    assert!(s.records > 0 && s.overruns > 0);
}
