//! [`KmsgReader`] against a scripted source: EAGAIN, EPIPE, sequence jumps, resumption.
use std::collections::VecDeque;
use std::io;

use super::reader::{Gap, KmsgEvent, KmsgReader, KmsgSource, SeekTo};

/// Replays reads; `seek_to(Start)` rewinds to the first scripted read.
#[derive(Default)]
struct Script {
    all: Vec<Step>,
    next: VecDeque<Step>,
    seeks: Vec<SeekTo>,
}

#[derive(Clone)]
enum Step {
    Rec(String),
    Again,
    Pipe,
    Intr,
    Fail,
}

impl Script {
    fn new(steps: &[Step]) -> Self {
        Script {
            all: steps.to_vec(),
            next: steps.iter().cloned().collect(),
            seeks: Vec::new(),
        }
    }
}

fn rec(seq: u64, msg: &str) -> Step {
    Step::Rec(format!("6,{seq},{},-;{msg}\n", seq * 10))
}

impl KmsgSource for Script {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.next.pop_front() {
            None | Some(Step::Again) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Step::Pipe) => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Some(Step::Intr) => Err(io::Error::from_raw_os_error(libc::EINTR)),
            Some(Step::Fail) => Err(io::Error::from_raw_os_error(libc::EIO)),
            Some(Step::Rec(s)) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                Ok(s.len())
            }
        }
    }

    fn seek_to(&mut self, to: SeekTo) -> io::Result<()> {
        self.seeks.push(to);
        if to == SeekTo::Start {
            self.next = self.all.iter().cloned().collect();
        }
        Ok(())
    }
}

fn seqs(r: &mut KmsgReader<Script>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        out.push(match ev {
            KmsgEvent::Record(rec) => format!("{}", rec.seq),
            KmsgEvent::Gap(g) => {
                format!("gap {}..{} lost {}", g.expected_seq, g.next_seq, g.lost())
            }
        });
    }
    out
}

#[test]
fn reads_until_eagain_then_continues_later() {
    let mut r = KmsgReader::new(Script::new(&[
        rec(1, "a"),
        rec(2, "b"),
        Step::Again,
        rec(3, "c"),
    ]));
    assert_eq!(seqs(&mut r), ["1", "2"]);
    assert_eq!(seqs(&mut r), ["3"]);
    assert_eq!(r.last_seq(), Some(3));
    assert!(r.next_event().unwrap().is_none());
    assert_eq!(r.stats().records, 3);
}

#[test]
fn epipe_then_jump_reports_one_gap_with_the_lost_count() {
    let mut r = KmsgReader::new(Script::new(&[
        rec(10, "a"),
        rec(11, "b"),
        Step::Pipe,
        rec(42, "c"),
        rec(43, "d"),
    ]));
    assert_eq!(seqs(&mut r), ["10", "11", "gap 12..42 lost 30", "42", "43"]);
    let s = r.stats();
    assert_eq!((s.overruns, s.gaps, s.lost, s.records), (1, 1, 30, 4));
}

#[test]
fn a_jump_without_epipe_is_also_a_gap() {
    let mut r = KmsgReader::new(Script::new(&[rec(5, "a"), rec(9, "b")]));
    assert_eq!(seqs(&mut r), ["5", "gap 6..9 lost 3", "9"]);
    assert_eq!(
        Gap {
            expected_seq: 6,
            next_seq: 9
        }
        .lost(),
        3
    );
}

#[test]
fn resume_after_skips_processed_records_without_returning_them() {
    let steps = [rec(1, "a"), rec(2, "b"), rec(3, "c"), rec(4, "d")];
    let mut first = KmsgReader::new(Script::new(&steps));
    assert_eq!(seqs(&mut first), ["1", "2", "3", "4"]);
    // A later run (new open) continues after what was processed.
    let mut second = KmsgReader::new(Script::new(&steps));
    second.resume_after(2).unwrap();
    assert_eq!(second.get_ref().seeks, [SeekTo::Start]);
    assert_eq!(seqs(&mut second), ["3", "4"]);
    assert_eq!(second.stats().skipped, 2);
}

#[test]
fn resume_after_a_record_already_overwritten_reports_the_gap() {
    let mut r = KmsgReader::new(Script::new(&[rec(100, "x"), rec(101, "y")]));
    r.resume_after(90).unwrap();
    assert_eq!(seqs(&mut r), ["gap 91..100 lost 9", "100", "101"]);
}

#[test]
fn seeking_forgets_the_position_so_skipped_records_are_no_gap() {
    let mut r = KmsgReader::new(Script::new(&[rec(1, "a"), Step::Again, rec(50, "b")]));
    assert_eq!(seqs(&mut r), ["1"]);
    r.seek_to_end().unwrap();
    assert_eq!(seqs(&mut r), ["50"]);
    r.seek_data().unwrap();
    assert_eq!(r.get_ref().seeks, [SeekTo::End, SeekTo::Data]);
}

#[test]
fn eintr_is_retried_malformed_reads_are_skipped_and_eio_is_an_error() {
    let mut r = KmsgReader::new(Script::new(&[
        Step::Intr,
        Step::Rec("garbage without header".into()),
        rec(7, "ok"),
        Step::Fail,
    ]));
    assert!(matches!(
        r.next_event().unwrap(),
        Some(KmsgEvent::Record(ref rec)) if rec.seq == 7 && rec.message == "ok"
    ));
    assert_eq!(r.stats().malformed, 1);
    assert!(matches!(r.next_event(), Err(super::KmsgError::Read(_))));
}
