//! Kernel log (`/dev/kmsg`) reader and OOM report parser.
//!
//! Three layers, each usable alone:
//!
//! - [`record`]: one `/dev/kmsg` record (`prio,seq,ts_usec,flags;message` plus `KEY=value`
//!   dictionary lines) parsed into a [`KmsgRecord`], `\xNN` escapes decoded.
//! - [`reader`]: [`KmsgReader`] reads records one per `read()` from `/dev/kmsg` (or any
//!   [`KmsgSource`]), reports records the kernel overwrote before we read them as a [`Gap`],
//!   and can resume after a saved sequence number; [`AsyncKmsgReader`] waits for records on a
//!   tokio reactor (epoll), never polling.
//! - [`oom`]: [`OomReportParser`] turns the messages of the kernel's OOM report into typed
//!   [`OomItem`]s (`Invoked`, `TaskDump`, `Constraint`, `Killed`, `Reaped`, …), for the formats
//!   of Linux 2.6.32 to 6.18.
//!
//! ```ignore
//! let mut kmsg = AsyncKmsgReader::open_at_end()?;
//! let mut parser = OomReportParser::new();
//! loop {
//!     match kmsg.next_event().await? {
//!         KmsgEvent::Record(rec) => {
//!             for item in parser.push_record(&rec) { /* … */ }
//!         }
//!         KmsgEvent::Gap(gap) => tracing::warn!(lost = gap.lost(), "kernel log records lost"),
//!     }
//! }
//! ```

pub mod async_reader;
mod dump;
mod lines;
pub mod meminfo;
pub mod oom;
pub mod reader;
pub mod record;
pub mod report;
pub mod syslog;

pub use async_reader::AsyncKmsgReader;
pub use dump::{MAX_DUMP_ROWS, MAX_NAME_BYTES};
pub use oom::{
    Constraint, ConstraintKind, DumpRow, Invoked, Killed, OomItem, OomReportParser, ParserStats,
    Reaped, TaskDump, MAX_FRAGMENT_GAP, MAX_LINE_BYTES,
};
pub use reader::{
    Gap, KmsgError, KmsgEvent, KmsgReader, KmsgSource, ReaderStats, SeekTo, KMSG_PATH,
};
pub use record::{parse_record, KmsgRecord, RecordError, MAX_RECORD_BYTES};

#[cfg(test)]
pub(crate) mod tests {
    //! Table-driven tests: raw `/dev/kmsg` fixtures (`tests/fixtures/kmsg/`, kernel version in the
    //! file name) through the record parser and the OOM parser, compared item by item.
    use std::path::PathBuf;

    use super::oom::{OomItem, OomReportParser};
    use super::record::{parse_record, KmsgRecord};

    /// Reads a fixture: `#` lines are comments, a line starting with a space continues the previous
    /// record (dictionary), every other line is one record.
    pub(crate) fn load(name: &str) -> Vec<KmsgRecord> {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/kmsg", name]
            .iter()
            .collect();
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let raw = oomwatch_testkit::kernel_log::raw_records(&text);
        raw.iter()
            .map(|r| {
                parse_record(r)
                    .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(r)))
            })
            .collect()
    }

    pub(super) fn run(name: &str) -> Vec<OomItem> {
        let mut parser = OomReportParser::new();
        let mut items = Vec::new();
        for rec in load(name) {
            items.extend(parser.push_record(&rec));
        }
        items.extend(parser.flush());
        items
    }

    /// One line per item, with the fields that matter.
    pub(super) fn summarize(item: &OomItem) -> String {
        match item {
        OomItem::Invoked(i) => format!(
            "invoked comm={:?} gfp={:#x} flags={:?} nodemask={:?} order={} adj={}",
            i.comm, i.gfp_mask, i.gfp_flags, i.nodemask, i.order, i.oom_score_adj
        ),
        OomItem::CpusetContext {
            comm,
            cpuset,
            mems_allowed,
        } => format!("cpuset comm={comm:?} cpuset={cpuset:?} mems={mems_allowed:?}"),
        OomItem::MemcgContext {
            task_memcg,
            oom_memcg,
        } => format!("memcg task={task_memcg:?} oom={oom_memcg:?}"),
        OomItem::TaskDump(d) => {
            let rows: Vec<String> = d
                .rows
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}/{} {:?} vm={} rss={} anon={:?} file={:?} shmem={:?} pgt={:?} ptes={:?}/{:?} swap={:?} adj={:?}",
                        r.pid, r.uid, r.tgid, r.name, r.total_vm_pages, r.rss_pages,
                        r.rss_anon_pages, r.rss_file_pages, r.rss_shmem_pages, r.pgtables_bytes,
                        r.nr_ptes, r.nr_pmds, r.swapents, r.oom_score_adj
                    )
                })
                .collect();
            format!(
                "dump dropped={} malformed={} [{}]",
                d.dropped_rows,
                d.malformed_rows,
                rows.join("; ")
            )
        }
        OomItem::Constraint(c) => format!(
            "constraint {:?} nodemask={:?} cpuset={:?} mems={:?} oom_memcg={:?} task_memcg={:?} task={:?} pid={} uid={}",
            c.constraint, c.nodemask, c.cpuset, c.mems_allowed, c.oom_memcg, c.task_memcg,
            c.comm, c.pid, c.uid
        ),
        OomItem::Selected {
            memcg,
            pid,
            comm,
            score,
        } => format!("selected memcg={memcg} pid={pid} comm={comm:?} score={score}"),
        OomItem::Killed(k) => format!(
            "killed memcg={} reason={:?} pid={} comm={:?} vm={} anon={} file={} shmem={:?} uid={:?} pgt={:?} adj={:?}",
            k.memcg, k.reason, k.pid, k.comm, k.total_vm_kb, k.anon_rss_kb, k.file_rss_kb,
            k.shmem_rss_kb, k.uid, k.pgtables_kb, k.oom_score_adj
        ),
        OomItem::GroupKill { memcg } => format!("group memcg={memcg:?}"),
        OomItem::VictimExiting { memcg, pid, comm } => {
            format!("exiting memcg={memcg} pid={pid} comm={comm:?}")
        }
        OomItem::Reaped(r) => format!(
            "reaped pid={} comm={:?} anon={} file={} shmem={}",
            r.pid, r.comm, r.anon_rss_kb, r.file_rss_kb, r.shmem_rss_kb
        ),
        OomItem::Suppressed { callbacks } => format!("suppressed {callbacks}"),
        OomItem::Counter(c) => format!(
            "counter {} usage={}kB limit={:?}kB",
            c.name, c.usage_kb, c.limit_kb
        ),
        OomItem::MemcgStats { cgroup, stats } => {
            format!("memcg_stats {cgroup:?} {} lines", stats.len())
        }
        OomItem::GlobalMemInfo { pages } => format!("mem_info {} values", pages.len()),
    }
    }

    const CASES: &[(&str, &[&str])] = &[
        (
            "oom-memcg-v6.18-owtest.kmsg",
            &[
                r#"invoked comm="tail" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=0"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=Some("/owtest") task_memcg=Some("/owtest") task="tail" pid=16296 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=16296 comm="tail" vm=68148 anon=65280 file=1544 shmem=Some(0) uid=Some(0) pgt=Some(168) adj=Some(300)"#,
            ],
        ),
        (
            "oom-memcg-v6.18-host-tail.kmsg",
            &[
                "suppressed 14",
                r#"invoked comm="tail" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=0"#,
                "counter memory usage=65536kB limit=Some(65536)kB",
                "counter memory+swap usage=65536kB limit=NonekB",
                "counter kmem usage=192kB limit=NonekB",
                r#"memcg_stats "/kmsgfix" 42 lines"#,
                r#"dump dropped=0 malformed=0 [12531/0/12531 "tail" vm=17037 rss=16716 anon=Some(16320) file=Some(396) shmem=Some(0) pgt=Some(176128) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=Some("/kmsgfix") task_memcg=Some("/kmsgfix") task="tail" pid=12531 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=12531 comm="tail" vm=68148 anon=65280 file=1584 shmem=Some(0) uid=Some(0) pgt=Some(172) adj=Some(0)"#,
            ],
        ),
        (
            "oom-memcg-v6.18-host-web-content.kmsg",
            &[
                r#"invoked comm="Web (Content)\n" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=0"#,
                "counter memory usage=65536kB limit=Some(65536)kB",
                "counter memory+swap usage=65536kB limit=NonekB",
                "counter kmem usage=164kB limit=NonekB",
                r#"memcg_stats "/kmsgfix2" 42 lines"#,
                r#"dump dropped=0 malformed=0 [12573/0/12573 "Web (Content)\n" vm=31374 rss=16729 anon=Some(16348) file=Some(381) shmem=Some(0) pgt=Some(208896) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=Some("/kmsgfix2") task_memcg=Some("/kmsgfix2") task="Web (Content)\n" pid=12573 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=12573 comm="Web (Content)\n" vm=125496 anon=65392 file=1524 shmem=Some(0) uid=Some(0) pgt=Some(204) adj=Some(0)"#,
            ],
        ),
        (
            "oom-memcg-v6.18-host-sd-pam.kmsg",
            &[
                r#"invoked comm="(sd-pam)" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=0"#,
                "counter memory usage=65536kB limit=Some(65536)kB",
                "counter memory+swap usage=65536kB limit=NonekB",
                "counter kmem usage=156kB limit=NonekB",
                r#"memcg_stats "/kmsgfix3" 42 lines"#,
                r#"dump dropped=0 malformed=0 [12632/0/12632 "(sd-pam)" vm=31374 rss=16709 anon=Some(16324) file=Some(385) shmem=Some(0) pgt=Some(204800) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=Some("/kmsgfix3") task_memcg=Some("/kmsgfix3") task="(sd-pam)" pid=12632 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=12632 comm="(sd-pam)" vm=125496 anon=65296 file=1540 shmem=Some(0) uid=Some(0) pgt=Some(200) adj=Some(0)"#,
            ],
        ),
        (
            "oom-global-v6.12.kmsg",
            &[
                r#"invoked comm="Web Content" gfp=0x140cca flags=Some("GFP_HIGHUSER_MOVABLE|__GFP_COMP") nodemask=None order=0 adj=0"#,
                "mem_info 3 values",
                r#"dump dropped=0 malformed=0 [612/0/612 "systemd-journal" vm=72351 rss=1843 anon=Some(512) file=Some(1331) shmem=Some(0) pgt=Some(184320) ptes=None/None swap=Some(0) adj=Some(-250); 1024/113/1024 "postgres" vm=275812 rss=14210 anon=Some(12804) file=Some(1406) shmem=Some(0) pgt=Some(548864) ptes=None/None swap=Some(0) adj=Some(0); 4312/1000/4312 "Web Content" vm=1012345 rss=940512 anon=Some(939800) file=Some(712) shmem=Some(0) pgt=Some(7630848) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint None nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=None task_memcg=Some("/user.slice/user-1000.slice/session-3.scope") task="Web Content" pid=4312 uid=1000"#,
                r#"killed memcg=false reason=Some("Out of memory") pid=4312 comm="Web Content" vm=4049380 anon=3759200 file=2848 shmem=Some(0) uid=Some(1000) pgt=Some(7452) adj=Some(0)"#,
                r#"reaped pid=4312 comm="Web Content" anon=0 file=0 shmem=0"#,
            ],
        ),
        (
            "oom-memcg-group-v6.6.kmsg",
            &[
                r#"invoked comm="python3" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=200"#,
                "counter memory usage=51200kB limit=Some(51200)kB",
                r#"memcg_stats "/app.slice/job, with, commas" 0 lines"#,
                r#"dump dropped=0 malformed=0 [483880/1000/483880 "python3" vm=73357 rss=14530 anon=None file=None shmem=None pgt=Some(180224) ptes=None/None swap=Some(0) adj=Some(200); 483881/1000/483881 "sh" vm=4200 rss=310 anon=None file=None shmem=None pgt=Some(49152) ptes=None/None swap=Some(0) adj=Some(200); 483882/1000/483882 "(sd-pam)" vm=4200 rss=290 anon=None file=None shmem=None pgt=Some(49152) ptes=None/None swap=Some(0) adj=Some(200)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("app.slice") mems=Some("0-1") oom_memcg=Some("/app.slice/job, with, commas") task_memcg=Some("/app.slice/job, with, commas") task="python3" pid=483880 uid=1000"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=483880 comm="python3" vm=293428 anon=50824 file=7296 shmem=Some(0) uid=Some(1000) pgt=Some(176) adj=Some(200)"#,
                r#"group memcg="/app.slice/job, with, commas""#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=483881 comm="sh" vm=16800 anon=240 file=1000 shmem=Some(0) uid=Some(1000) pgt=Some(48) adj=Some(200)"#,
                r#"exiting memcg=true pid=483882 comm="(sd-pam)""#,
            ],
        ),
        (
            "oom-memcg-v6.1.kmsg",
            &[
                r#"invoked comm="kworker/u8:2" gfp=0x400dc0 flags=Some("GFP_KERNEL_ACCOUNT|__GFP_ZERO") nodemask=None order=1 adj=0"#,
                r#"dump dropped=0 malformed=0 [2269/0/2269 "python" vm=7946600 rss=3486495 anon=None file=None shmem=None pgt=Some(28217344) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=Some("/process_api/claude-code-bash") task_memcg=Some("/process_api/claude-code-bash") task="python" pid=2269 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=2269 comm="python" vm=31786400 anon=13945980 file=11996 shmem=Some(0) uid=Some(0) pgt=Some(27556) adj=Some(0)"#,
            ],
        ),
        (
            "oom-mempolicy-v5.10.kmsg",
            &[
                r#"invoked comm="a,b (c)" gfp=0x100cca flags=Some("GFP_HIGHUSER_MOVABLE") nodemask=None order=-1 adj=-17"#,
                r#"dump dropped=0 malformed=0 [777/4294967295/777 "a,b (c)" vm=1000 rss=900 anon=None file=None shmem=None pgt=Some(40960) ptes=None/None swap=Some(12) adj=Some(-999)]"#,
                r#"constraint MemoryPolicy nodemask="0-1,3" cpuset=Some("batch") mems=Some("0-3") oom_memcg=None task_memcg=Some("/batch") task="a,b (c)" pid=777 uid=4294967295"#,
                r#"killed memcg=false reason=Some("Out of memory") pid=777 comm="a,b (c)" vm=4000 anon=3500 file=100 shmem=Some(0) uid=Some(4294967295) pgt=Some(40) adj=Some(-999)"#,
            ],
        ),
        (
            "oom-memcg-v5.4.kmsg",
            &[
                r#"invoked comm="node" gfp=0xcc0 flags=Some("GFP_KERNEL") nodemask=None order=0 adj=969"#,
                r#"memcg task=Some("/kubepods/pod1/c1") oom="/kubepods/pod1""#,
                r#"dump dropped=0 malformed=0 [22609/0/22609 "node" vm=2480905 rss=1034954 anon=None file=None shmem=None pgt=Some(8835072) ptes=None/None swap=Some(0) adj=Some(969)]"#,
                r#"constraint Memcg nodemask="(null)" cpuset=Some("c1") mems=Some("0") oom_memcg=Some("/kubepods/pod1") task_memcg=Some("/kubepods/pod1/c1") task="node" pid=22609 uid=0"#,
                r#"killed memcg=true reason=Some("Memory cgroup out of memory") pid=22609 comm="node" vm=9923620 anon=4116684 file=23132 shmem=Some(0) uid=Some(0) pgt=None adj=None"#,
                r#"reaped pid=22609 comm="node" anon=0 file=0 shmem=0"#,
            ],
        ),
        (
            "oom-global-v5.0.kmsg",
            &[
                r#"invoked comm="sed" gfp=0x6200ca flags=Some("GFP_HIGHUSER_MOVABLE") nodemask=None order=0 adj=0"#,
                r#"dump dropped=0 malformed=0 [29480/12345/29480 "bash" vm=5000 rss=1200 anon=None file=None shmem=None pgt=Some(61440) ptes=None/None swap=Some(0) adj=Some(0); 29481/12345/29481 "sed" vm=1100000 rss=1000000 anon=None file=None shmem=None pgt=Some(8200192) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"constraint None nodemask="(null)" cpuset=Some("/") mems=Some("0") oom_memcg=None task_memcg=Some("/") task="bash" pid=29480 uid=12345"#,
                r#"selected memcg=false pid=29480 comm="bash" score=940"#,
                r#"killed memcg=false reason=None pid=29481 comm="sed" vm=4400000 anon=3999000 file=1000 shmem=Some(0) uid=None pgt=None adj=None"#,
            ],
        ),
        (
            "oom-memcg-v4.19.kmsg",
            &[
                r#"invoked comm="java" gfp=0x6000c0 flags=Some("GFP_KERNEL") nodemask=Some("(null)") order=0 adj=0"#,
                r#"cpuset comm="java" cpuset="/" mems="0""#,
                r#"memcg task=Some("/docker/abc") oom="/docker/abc""#,
                "counter memory usage=524288kB limit=Some(524288)kB",
                r#"dump dropped=0 malformed=0 [3001/0/3001 "java" vm=1200000 rss=130000 anon=None file=None shmem=None pgt=Some(1400832) ptes=None/None swap=Some(0) adj=Some(0); 3050/0/3050 "sh" vm=1100 rss=200 anon=None file=None shmem=None pgt=Some(45056) ptes=None/None swap=Some(0) adj=Some(0)]"#,
                r#"selected memcg=true pid=3001 comm="java" score=993"#,
                r#"killed memcg=true reason=None pid=3001 comm="java" vm=4800000 anon=515000 file=5000 shmem=Some(0) uid=None pgt=None adj=None"#,
                r#"group memcg="/docker/abc""#,
                r#"killed memcg=true reason=None pid=3050 comm="sh" vm=4400 anon=400 file=400 shmem=Some(0) uid=None pgt=None adj=None"#,
                r#"reaped pid=3001 comm="java" anon=0 file=0 shmem=0"#,
            ],
        ),
        (
            "oom-global-v4.14.kmsg",
            &[
                r#"invoked comm="kworker/u8:2" gfp=0x15080c0 flags=Some("GFP_KERNEL_ACCOUNT|__GFP_ZERO") nodemask=Some("(null)") order=1 adj=0"#,
                r#"cpuset comm="kworker/u8:2" cpuset="/" mems="0""#,
                r#"dump dropped=0 malformed=0 [320/0/320 "systemd-udevd" vm=12000 rss=3000 anon=None file=None shmem=None pgt=None ptes=Some(25)/Some(3) swap=Some(0) adj=Some(-1000); 1905/0/1905 "systemd-journal" vm=3236 rss=1714 anon=None file=None shmem=None pgt=None ptes=Some(10)/Some(4) swap=Some(0) adj=Some(0); 4582/1000/4582 "oom02" vm=800000 rss=700000 anon=None file=None shmem=None pgt=None ptes=Some(1400)/Some(5) swap=Some(0) adj=Some(0); 4583/1000/4583 "oom02" vm=790000 rss=690000 anon=None file=None shmem=None pgt=None ptes=Some(1390)/Some(5) swap=Some(0) adj=Some(0)]"#,
                r#"selected memcg=false pid=4582 comm="oom02" score=900"#,
                r#"killed memcg=false reason=None pid=4583 comm="oom02" vm=3160000 anon=2759000 file=1000 shmem=Some(0) uid=None pgt=None adj=None"#,
                r#"reaped pid=4583 comm="oom02" anon=0 file=0 shmem=0"#,
            ],
        ),
        (
            "oom-global-v2.6.32-rhel6.kmsg",
            &[
                r#"invoked comm="httpd" gfp=0x201da flags=None nodemask=None order=0 adj=0"#,
                r#"cpuset comm="httpd" cpuset="/" mems="0""#,
                r#"dump dropped=0 malformed=0 [549/0/549 "udevd" vm=2662 rss=118 anon=None file=None shmem=None pgt=None ptes=None/None swap=None adj=Some(-1000); 9682/27/9682 "mysqld" vm=11847 rss=956 anon=None file=None shmem=None pgt=None ptes=None/None swap=None adj=Some(0)]"#,
                r#"selected memcg=false pid=9682 comm="mysqld" score=9"#,
                r#"killed memcg=false reason=None pid=9682 comm="mysqld" vm=47388 anon=3744 file=80 shmem=None uid=Some(27) pgt=None adj=None"#,
            ],
        ),
    ];

    #[test]
    fn every_fixture_parses_to_its_expected_items() {
        let mut failures = Vec::new();
        for (name, expected) in CASES {
            let got: Vec<String> = run(name).iter().map(summarize).collect();
            if got != *expected {
                failures.push(format!(
                    "{name}:\n  expected:\n    {}\n  got:\n    {}",
                    expected.join("\n    "),
                    got.join("\n    ")
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_fixture_file_is_in_the_table() {
        let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/kmsg"]
            .iter()
            .collect();
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".kmsg") {
                assert!(
                    CASES.iter().any(|(n, _)| *n == name),
                    "{name} has no expectations"
                );
            }
        }
    }

    #[test]
    fn real_records_keep_sequence_and_level() {
        let recs = load("oom-memcg-v6.18-host-tail.kmsg");
        assert!(recs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let killed = recs
            .iter()
            .find(|r| r.message.contains("Killed process"))
            .unwrap();
        assert_eq!((killed.facility, killed.level, killed.seq), (0, 3, 6306));
    }

    /// Property tests with a seeded xorshift generator: arbitrary bytes and mutated real lines never
    /// panic the record parser, the reader or the OOM parser, and never grow them without bound.
    mod fuzz {
        use std::collections::VecDeque;
        use std::io;

        use super::load;
        use crate::source::kmsg::dump::{MAX_DUMP_ROWS, MAX_NAME_BYTES};
        use crate::source::kmsg::oom::{OomItem, OomReportParser, MAX_LINE_BYTES};
        use crate::source::kmsg::reader::{KmsgReader, KmsgSource, SeekTo};
        use crate::source::kmsg::record::{parse_record, MAX_RECORD_BYTES};

        use oomwatch_testkit::XorShift;

        /// Bytes biased towards the characters the parsers care about.
        fn random_bytes(rng: &mut XorShift, max_len: usize) -> Vec<u8> {
            const INTERESTING: &[u8] = b" ,;=()[]:-\\x0123456789\nkBc";
            let len = rng.below(max_len + 1);
            (0..len)
                .map(|_| match rng.below(3) {
                    0 => INTERESTING[rng.below(INTERESTING.len())],
                    1 => b'a' + rng.below(26) as u8,
                    _ => rng.next_u64() as u8,
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
                    2 if !b.is_empty() => b[at] = rng.next_u64() as u8,
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
                    let header = format!(
                        "{},{},{},-;",
                        rng.below(300),
                        rng.next_u64(),
                        rng.next_u64()
                    );
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
                let rec = crate::source::kmsg::record::KmsgRecord {
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
    }
}
