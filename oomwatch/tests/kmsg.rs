//! The kernel-log source against the real kernel: lines written to `/dev/kmsg` read back in
//! order, the async reader woken by new records, resumption by sequence number, and a real OOM
//! kill in a memory cgroup this test creates, parsed from the kernel's own report.
//!
//! Needs root. Without it each test prints why it skipped, unless
//! `OOMWATCH_REQUIRE_REAL_KERNEL=1`, where it fails instead.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oomwatch_testkit::TestCgroup;

use oomwatch::source::kmsg::{
    AsyncKmsgReader, DumpRow, KmsgEvent, KmsgReader, KmsgRecord, OomItem, OomReportParser,
};

/// True when the test may use the real kernel (root); otherwise skips because it `needs`
/// (a failure under `OOMWATCH_REQUIRE_REAL_KERNEL=1`).
fn real_kernel_or_skip(needs: &str) -> bool {
    oomwatch_testkit::root_or_skip(needs)
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("oomwatch-kmsgtest-{}-{nanos}-{tag}", std::process::id())
}

/// Logs `line` through `/dev/kmsg` (one write = one record; `<6>` = info).
fn log_line(line: &str) {
    let mut f = OpenOptions::new().write(true).open("/dev/kmsg").unwrap();
    f.write_all(format!("<6>{line}\n").as_bytes()).unwrap();
}

/// Reads (synchronously) until a record whose message is `want` arrives.
fn read_until(reader: &mut KmsgReader<fs::File>, want: &str) -> KmsgRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reader.next_event().unwrap() {
            Some(KmsgEvent::Record(rec)) if rec.message == want => return rec,
            Some(_) => {}
            None => {
                assert!(
                    Instant::now() < deadline,
                    "{want:?} never appeared in /dev/kmsg"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[test]
fn real_kmsg_write_then_read_back_in_order() {
    if !real_kernel_or_skip("to write /dev/kmsg") {
        return;
    }
    let mut reader = KmsgReader::open().unwrap();
    reader.seek_to_end().unwrap();
    let (a, b) = (unique("a"), unique("b \\ with escape"));
    log_line(&a);
    log_line(&b);
    let ra = read_until(&mut reader, &a);
    let rb = read_until(&mut reader, &b);
    assert!(
        rb.seq > ra.seq,
        "seq must increase: {} then {}",
        ra.seq,
        rb.seq
    );
    assert!(rb.ts_usec >= ra.ts_usec);
    // Written lines get facility LOG_USER (1); <6> is level info.
    assert_eq!((ra.facility, ra.level), (1, 6));
    assert_eq!(reader.last_seq(), Some(rb.seq));
}

#[test]
fn real_resume_after_skips_records_already_processed() {
    if !real_kernel_or_skip("to write /dev/kmsg") {
        return;
    }
    let mut first = KmsgReader::open().unwrap();
    first.seek_to_end().unwrap();
    let lines = [unique("r1"), unique("r2"), unique("r3")];
    for l in &lines {
        log_line(l);
    }
    read_until(&mut first, &lines[0]);
    let processed = read_until(&mut first, &lines[1]).seq;

    // A new open starts at the oldest record; resuming skips everything up to `processed`.
    let mut second = KmsgReader::open().unwrap();
    second.resume_after(processed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match second.next_event().unwrap() {
            Some(KmsgEvent::Record(rec)) => {
                assert!(
                    rec.seq > processed,
                    "record {} was already processed",
                    rec.seq
                );
                assert_ne!(rec.message, lines[0]);
                assert_ne!(rec.message, lines[1]);
                if rec.message == lines[2] {
                    break;
                }
            }
            Some(KmsgEvent::Gap(g)) => panic!("unexpected gap {g:?}"),
            None => {
                assert!(Instant::now() < deadline, "third line never read");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    assert!(second.stats().skipped > 0);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn real_async_reader_wakes_when_a_record_arrives() {
    if !real_kernel_or_skip("to write /dev/kmsg") {
        return;
    }
    let line = unique("async");
    runtime().block_on(async {
        let mut kmsg = AsyncKmsgReader::open_at_end().unwrap();
        let writer = {
            let line = line.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                log_line(&line);
            })
        };
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let KmsgEvent::Record(rec) = kmsg.next_event().await.unwrap() {
                    if rec.message == line {
                        return rec;
                    }
                }
            }
        })
        .await
        .expect("the async reader was not woken by the new record");
        assert_eq!(kmsg.last_seq(), Some(found.seq));
        writer.join().unwrap();
    });
}

/// Everything the parser said, in order, until the `Killed` line for `victim` (or timeout).
async fn collect_until_killed(kmsg: &mut AsyncKmsgReader, victim: i32) -> Vec<OomItem> {
    let mut parser = OomReportParser::new();
    let mut items = Vec::new();
    let collect = async {
        loop {
            match kmsg.next_event().await.unwrap() {
                KmsgEvent::Record(rec) => {
                    for item in parser.push_record(&rec) {
                        let done = matches!(&item, OomItem::Killed(k) if k.pid == victim);
                        items.push(item);
                        if done {
                            return;
                        }
                    }
                }
                KmsgEvent::Gap(g) => eprintln!("kernel log gap: {} records lost", g.lost()),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .is_err()
    {
        panic!("no Killed line for pid {victim} within 60 s; saw {items:?}");
    }
    items
}

fn page_kb() -> u64 {
    oomwatch_testkit::page_size() / 1024
}

#[test]
fn real_memcg_oom_kill_report_is_parsed_in_kernel_order() {
    if !real_kernel_or_skip("to create a memory cgroup and read /dev/kmsg") {
        return;
    }
    let cg = TestCgroup::new(64 << 20);
    let dump_tasks =
        fs::read_to_string("/proc/sys/vm/oom_dump_tasks").is_ok_and(|s| s.trim() == "1");
    let rt = runtime();
    // The report header is rate limited (10 per 5 s, shared with every other OOM on the host):
    // if ours was suppressed, wait for the limit to reset and kill again.
    for attempt in 1..=4 {
        let before = cg.oom_kills();
        let (victim, items) = rt.block_on(async {
            let mut kmsg = AsyncKmsgReader::open_at_end().unwrap();
            // `tail /dev/zero` with oom_score_adj 300, in the cgroup before it execs.
            let mut child = cg.command_hog(300).spawn().unwrap();
            let victim = i32::try_from(child.id()).unwrap();
            let items = collect_until_killed(&mut kmsg, victim).await;
            let status = child.wait().unwrap();
            assert!(!status.success(), "the hog must have been killed");
            (victim, items)
        });
        assert_eq!(
            cg.oom_kills(),
            before + 1,
            "memory.oom_control must count exactly one kill"
        );

        let pos = |f: &dyn Fn(&OomItem) -> bool| items.iter().rposition(f);
        let Some(c_at) = pos(&|i| matches!(i, OomItem::Constraint(c) if c.pid == victim)) else {
            eprintln!("attempt {attempt}: report header rate limited ({items:?}); retrying");
            std::thread::sleep(Duration::from_millis(5500));
            continue;
        };
        let OomItem::Constraint(c) = &items[c_at] else {
            unreachable!()
        };
        assert_eq!(c.oom_memcg.as_deref(), Some(cg.path.as_str()), "{c:?}");
        assert_eq!(c.task_memcg.as_deref(), Some(cg.path.as_str()));
        assert_eq!(c.comm, "tail");

        // Reports never interleave (the kernel holds oom_lock from the header to the kill), so
        // the last Invoked before our Constraint opened our report.
        let i_at = items[..c_at]
            .iter()
            .rposition(|i| matches!(i, OomItem::Invoked(_)))
            .expect("Invoked before Constraint");
        let OomItem::Invoked(inv) = &items[i_at] else {
            unreachable!()
        };
        assert_eq!(
            inv.comm, "tail",
            "the hog's own allocation invoked the killer"
        );
        assert_eq!(inv.oom_score_adj, 300);

        let k_at = items.len() - 1;
        let OomItem::Killed(k) = &items[k_at] else {
            unreachable!()
        };
        assert!(k.memcg, "{k:?}");
        assert_eq!(k.comm, "tail");
        assert!(c_at < k_at);
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert!(k.uid.is_none_or(|u| u == uid), "{k:?}");
        assert!(k.oom_score_adj.is_none_or(|a| a == 300), "{k:?}");
        let limit_kb = 64 * 1024;
        let charged = k.anon_rss_kb + k.shmem_rss_kb.unwrap_or(0);
        assert!(charged <= limit_kb && charged >= limit_kb / 2, "{k:?}");
        assert!(k.total_vm_kb >= k.anon_rss_kb + k.file_rss_kb, "{k:?}");

        if dump_tasks {
            // Kernel order: Invoked, TaskDump, Constraint (dump_oom_summary runs after
            // dump_tasks), Killed.
            let d_at = items[i_at..c_at]
                .iter()
                .rposition(|i| matches!(i, OomItem::TaskDump(_)))
                .map(|p| p + i_at)
                .expect("TaskDump between Invoked and Constraint");
            let OomItem::TaskDump(d) = &items[d_at] else {
                unreachable!()
            };
            let row: &DumpRow = d
                .rows
                .iter()
                .find(|r| r.pid == victim)
                .unwrap_or_else(|| panic!("victim {victim} not in {d:?}"));
            assert_eq!(
                (row.name.as_str(), row.tgid, row.uid),
                ("tail", victim, uid)
            );
            assert_eq!(row.oom_score_adj, Some(300));
            let pk = page_kb();
            assert_eq!(row.total_vm_pages * pk, k.total_vm_kb, "{row:?} vs {k:?}");
            let rss_kb = row.rss_pages * pk;
            let killed_rss = k.anon_rss_kb + k.file_rss_kb + k.shmem_rss_kb.unwrap_or(0);
            assert!(rss_kb.abs_diff(killed_rss) <= 4096, "{row:?} vs {k:?}");
            if let (Some(bytes), Some(kb)) = (row.pgtables_bytes, k.pgtables_kb) {
                assert_eq!(bytes / 1024, kb);
            }
        } else {
            oomwatch_testkit::skip("vm.oom_dump_tasks is 0: the task table is not checked");
        }
        return;
    }
    panic!("the OOM report header was rate limited on every attempt");
}
