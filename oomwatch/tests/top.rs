//! `oomwatch top` against the real kernel's `/proc/<pid>/oom_score`, against a real memory
//! cgroup, and against a fixture `/proc` tree under `--host-root`.
//!
//! The children are this test binary re-run as a helper (`alloc_helper`) that touches a given
//! number of MiB and sleeps, so each child's memory is known. Their `oom_score_adj` is only
//! ever raised: lowering it needs CAP_SYS_RESOURCE, which a container's root may lack. The
//! protected (-1000) listing is therefore checked on the fixture tree.
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use oomwatch_testkit::{page_size, MemoryHolder, TestCgroup};
use serde_json::Value;

/// Not a test of its own: the body of the child processes (does nothing unless asked).
#[test]
fn alloc_helper() {
    oomwatch_testkit::mem::hold_memory_if_asked();
}

/// A helper child holding `mib` MiB with `oom_score_adj` `adj`, killed on drop.
fn holder(mib: usize, adj: i16) -> MemoryHolder {
    MemoryHolder::start(mib, adj, None)
}

fn oomwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .arg("top")
        .args(args)
        .output()
        .expect("run oomwatch top")
}

fn json(args: &[&str]) -> Vec<Value> {
    let o = oomwatch(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "oomwatch top {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    v.as_array().expect("a JSON array").clone()
}

fn kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} line"))
}

/// `totalram_pages() + total_swap_pages` from `<proc>/meminfo`.
fn host_total_pages(proc: &Path) -> u64 {
    let m = fs::read_to_string(proc.join("meminfo")).unwrap();
    (kb(&m, "MemTotal") + kb(&m, "SwapTotal")) * 1024 / page_size()
}

fn kernel_score(pid: i32) -> i64 {
    fs::read_to_string(format!("/proc/{pid}/oom_score"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn i(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The memory `oom_badness()` counts, in pages, from a row's byte fields.
fn row_pages(r: &Value) -> u64 {
    ["rss_anon", "rss_file", "rss_shmem", "swap", "pgtables"]
        .iter()
        .map(|k| u(r, k) / page_size())
        .sum()
}

/// Checks a ranked row against mm/oom_kill.c and fs/proc/base.c, written out independently.
fn check_formula(r: &Value, total: u64) {
    let adj = i(r, "oom_score_adj");
    let points = row_pages(r) as i64 + adj * (total / 1000) as i64;
    assert_eq!(i(r, "points"), points, "oom_badness: {r}");
    let score = (1000 + points * 1000 / total as i64) * 2 / 3;
    assert_eq!(i(r, "oom_score"), score, "proc_oom_score: {r}");
    assert_eq!(u(r, "domain_pages"), total, "{r}");
    let share = row_pages(r) as f64 / total as f64;
    assert!((r["share"].as_f64().unwrap() - share).abs() < 1e-12, "{r}");
}

fn by_pid(rows: &[Value]) -> HashMap<i64, &Value> {
    rows.iter().map(|r| (i(r, "pid"), r)).collect()
}

#[test]
fn ranking_matches_the_kernels_oom_score() {
    // (MiB, oom_score_adj): the adjustments dominate; the two adj-0 ones differ by memory.
    let spec = [(1, 1000), (8, 500), (16, 100), (128, 0), (64, 0)];
    let helpers: Vec<MemoryHolder> = spec.iter().map(|&(m, a)| holder(m, a)).collect();
    let before: Vec<i64> = helpers.iter().map(|h| kernel_score(h.pid)).collect();
    let rows = json(&["--json", "--limit", "0"]);
    let after: Vec<i64> = helpers.iter().map(|h| kernel_score(h.pid)).collect();
    let total = host_total_pages(Path::new("/proc"));
    let rows_by_pid = by_pid(&rows);

    let mut ours = Vec::new();
    for (n, h) in helpers.iter().enumerate() {
        let r = rows_by_pid
            .get(&i64::from(h.pid))
            .unwrap_or_else(|| panic!("helper {} not listed", h.pid));
        assert_eq!(r["protected"], false);
        assert_eq!(i(r, "oom_score_adj"), i64::from(spec[n].1));
        check_formula(r, total);
        // (b) our score is the kernel's (±1: RSS may move between the reads).
        let s = i(r, "oom_score");
        assert!(
            (s - before[n]).abs() <= 1 || (s - after[n]).abs() <= 1,
            "pid {}: ours {s}, kernel {} / {}",
            h.pid,
            before[n],
            after[n]
        );
        assert_eq!(i(r, "host_oom_score"), s);
        // The memory fields are the process's own (it touched `spec[n].0` MiB of anon).
        let status = fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap();
        let anon = kb(&status, "RssAnon") * 1024;
        assert!(u(r, "rss_anon").abs_diff(anon) <= 1 << 20, "{r}\n{status}");
        assert!(u(r, "rss_anon") >= (spec[n].0 as u64) << 20, "{r}");
        ours.push((u(r, "rank"), n));
    }
    // (a) our order is the kernel's: scores never increase down our ranking.
    ours.sort();
    for w in ours.windows(2) {
        let (hi, lo) = (w[0].1, w[1].1);
        assert!(
            after[hi] >= after[lo],
            "rank order {:?} disagrees with kernel scores {after:?}",
            ours
        );
    }
    let order: Vec<usize> = ours.iter().map(|&(_, n)| n).collect();
    assert_eq!(order, [0, 1, 2, 3, 4], "scores {after:?}");
    // The whole list is sorted by score, then points, then pid.
    let ranked: Vec<&Value> = rows.iter().filter(|r| r["protected"] == false).collect();
    for w in ranked.windows(2) {
        let key = |r: &Value| (-i(r, "oom_score"), -i(r, "points"), i(r, "pid"));
        assert!(key(w[0]) < key(w[1]), "{} before {}", w[0], w[1]);
        assert_eq!(u(w[0], "rank") + 1, u(w[1], "rank"));
    }
    // Protected ones come after every ranked one.
    let first_protected = rows.iter().position(|r| r["protected"] == true);
    if let Some(p) = first_protected {
        assert!(rows[p..].iter().all(|r| r["protected"] == true));
    }
    // Kernel threads are not listed.
    assert!(!rows_by_pid.contains_key(&2), "kthreadd listed");
}

#[test]
fn table_on_the_real_host() {
    let h = holder(32, 1000);
    let o = oomwatch(&["--limit", "0"]);
    assert_eq!(o.status.code(), Some(0));
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.starts_with("OOM domain: host, totalpages "), "{t}");
    let head = t.lines().nth(3).unwrap();
    let cols: Vec<&str> = head.split_whitespace().collect();
    let want = [
        "#", "PID", "COMM", "SCORE", "ADJ", "POINTS", "SHARE", "ANON", "FILE",
    ];
    assert_eq!(cols[..9], want, "{t}");
    let first = t.lines().nth(4).unwrap();
    assert!(first.trim_start().starts_with("1  "), "{t}");
    assert!(t.contains(&format!(" {}  ", h.pid)), "{t}");
    assert!(
        t.contains("\nprotected (oom_score_adj=-1000): never killed ("),
        "{t}"
    );
}

#[test]
fn cgroup_ranks_its_members_against_its_limit() {
    if !oomwatch_testkit::root_or_skip("to create a memory cgroup") {
        return;
    }
    let limit: u64 = 256 << 20;
    let cg = TestCgroup::new(limit);
    // Declared after the cgroup: dropped (killed) before it is removed.
    let small = holder(8, 500);
    let big = holder(48, 0);
    let outside = holder(8, 1000);
    cg.add(small.pid);
    cg.add(big.pid);
    let total = limit / page_size();
    let abs = cg.dir.to_str().unwrap().to_string();
    for arg in [cg.path.as_str(), abs.as_str()] {
        let rows = json(&["--json", "--limit", "0", "--cgroup", arg]);
        let pids: Vec<i64> = rows.iter().map(|r| i(r, "pid")).collect();
        // adj 500 over 65536 pages is +32768 points: more than 48 MiB (12288 pages).
        assert_eq!(pids, [small.pid as i64, big.pid as i64], "{rows:?}");
        for r in &rows {
            assert_eq!(r["cgroup"], Value::String(cg.path.clone()));
            check_formula(r, total);
        }
        assert!(!pids.contains(&(outside.pid as i64)));
        // The share is of the limit: 48 MiB of 256 MiB is at least 18.75%.
        assert!(rows[1]["share"].as_f64().unwrap() >= 0.1875, "{}", rows[1]);
    }
    let o = oomwatch(&["--cgroup", &cg.path]);
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(
        t.starts_with(&format!(
            "OOM domain: memory cgroup {}, totalpages {total} (limit 256.0 MiB + swap 0.0 MiB)",
            cg.path
        )),
        "{t}"
    );
    assert!(t.contains("\n2 of 2 killable"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// Fixture tree under --host-root.

const POD_UID: &str = "7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e";
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// pid, comm, kernel thread, (anon, swap, pgtables) in kB or `None` without an mm (kernel
/// thread, zombie), oom_score_adj, memory cgroup, `/proc/<pid>/oom_score`.
type Proc<'a> = (
    i32,
    &'a str,
    bool,
    Option<(u64, u64, u64)>,
    i16,
    &'a str,
    u32,
);

fn write_proc(proc: &Path, &(pid, comm, kthread, mem_kb, adj, cgroup, score): &Proc) {
    let d = proc.join(pid.to_string());
    fs::create_dir_all(&d).unwrap();
    let flags = if kthread { 0x0020_8040 } else { 0x0040_0100 };
    let stat = format!("{pid} ({comm}) S 0 0 0 0 -1 {flags} 0 0 0 0 0");
    fs::write(d.join("stat"), stat).unwrap();
    let mut status = format!(
        "Name:\t{}\nState:\tS (sleeping)\nTgid:\t{}\nPid:\t{}\n",
        comm, pid, pid
    );
    if let Some((anon, swap, pte)) = mem_kb {
        status += &format!(
            "VmRSS:\t{} kB\nRssAnon:\t{anon} kB\nRssFile:\t4096 kB\nRssShmem:\t0 kB\n\
             VmPTE:\t{pte} kB\nVmSwap:\t{swap} kB\n",
            anon + 4096
        );
    }
    if mem_kb.is_none() {
        // kthreadd says so in status too; the kworker below only in its stat flags.
        status += &format!("Kthread:\t{}\n", u8::from(kthread));
    }
    fs::write(d.join("status"), status).unwrap();
    fs::write(d.join("oom_score"), format!("{score}\n")).unwrap();
    fs::write(d.join("oom_score_adj"), format!("{adj}\n")).unwrap();
    let cg = format!("5:memory:{cgroup}\n1:cpu:/\n0::/\n");
    fs::write(d.join("cgroup"), cg).unwrap();
    fs::write(d.join("cmdline"), format!("{comm}\0")).unwrap();
}

/// 8 GiB of RAM, 1 GiB of swap; a v1 memory hierarchy with `/kubepods` limited to 1 GiB and
/// memory+swap to 1.5 GiB.
fn fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let proc = t.path().join("proc");
    fs::create_dir_all(proc.join("self")).unwrap();
    fs::write(
        proc.join("meminfo"),
        "MemTotal:        8388608 kB\nMemFree:         1000000 kB\nSwapTotal:       1048576 kB\n",
    )
    .unwrap();
    let web = format!("/kubepods/burstable/pod{POD_UID}/{CONTAINER}");
    let batch = "/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-000000000001/x";
    // (pid, comm, kthread, (anon, swap, pgtables) kB, oom_score_adj, cgroup, kernel oom_score)
    #[rustfmt::skip]
    let procs: [Proc; 9] = [
        (1, "systemd", false, Some((8192, 0, 256)), 0, "/init.scope", 0),
        (2, "kthreadd", true, None, 0, "/", 0),
        (40, "kworker/0:1 (x)", true, Some((0, 0, 0)), 0, "/", 0),
        (100, "web", false, Some((409_600, 0, 1024)), 0, &web, 695),
        (200, "batch", false, Some((102_400, 51_200, 256)), 500, batch, 1010),
        (300, "db", false, Some((819_200, 0, 2048)), -1000, "/system.slice/db.service", 0),
        (400, "cache", false, Some((1024, 0, 64)), 1000, "/other", 1333),
        (500, "zombie", false, None, 0, "/other", 0),
        (600, "reaped", false, Some((2_000_000, 0, 4096)), 0, "/other", 0),
    ];
    for p in &procs {
        write_proc(&proc, p);
    }
    let mem = t.path().join("sys/fs/cgroup/memory");
    let kube = mem.join("kubepods");
    fs::create_dir_all(kube.join(format!("burstable/pod{POD_UID}/{CONTAINER}"))).unwrap();
    fs::create_dir_all(mem.join("other")).unwrap();
    fs::write(kube.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
    fs::write(kube.join("memory.memsw.limit_in_bytes"), "1610612736\n").unwrap();
    fs::write(kube.join("memory.swappiness"), "60\n").unwrap();
    let unlimited = "9223372036854771712\n";
    fs::write(kube.join("burstable/memory.limit_in_bytes"), unlimited).unwrap();
    t
}

#[test]
fn fixture_tree_json_and_table() {
    let t = fixture();
    let root = t.path().to_str().unwrap();
    let total = host_total_pages(&t.path().join("proc"));
    let rows = json(&["--host-root", root, "--json", "--limit", "0"]);
    let pids: Vec<i64> = rows.iter().map(|r| i(r, "pid")).collect();
    // cache (adj 1000) > batch (adj 500) > web; then init and db, protected. Kernel threads,
    // the zombie and the task the kernel scores 0 (reaped) are left out.
    assert_eq!(pids, [400, 200, 100, 1, 300], "{rows:#?}");
    let by = by_pid(&rows);
    for pid in [400, 200, 100] {
        let r = by[&pid];
        check_formula(r, total);
        if page_size() == 4096 {
            assert_eq!(r["oom_score"], r["kernel_oom_score"], "fixture scores: {r}");
        }
    }
    assert_eq!(by[&200]["swap"], 51_200 * 1024);
    assert_eq!(by[&100]["pod"], POD_UID);
    assert_eq!(by[&400]["pod"], Value::Null);
    assert_eq!(
        (
            by[&300]["protected"].clone(),
            by[&300]["protected_by"].clone()
        ),
        (Value::Bool(true), Value::from("oom_score_adj=-1000"))
    );
    assert_eq!(by[&1]["protected_by"], "init");
    assert_eq!(by[&300]["points"], Value::Null);
    assert_eq!(by[&300]["rank"], Value::Null);
    assert_eq!(by[&400]["rank"], 1);

    let rows = json(&["--host-root", root, "--json", "--limit", "1"]);
    let pids: Vec<i64> = rows.iter().map(|r| i(r, "pid")).collect();
    assert_eq!(pids, [400, 1, 300]);

    let o = oomwatch(&["--host-root", root, "--limit", "0"]);
    assert_eq!(o.status.code(), Some(0));
    let t = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "OOM domain: host, totalpages {total} (MemTotal 8192.0 MiB + SwapTotal 1024.0 MiB)"
        )
    );
    assert_eq!(
        lines[1],
        "3 of 3 killable processes, most likely victim first (sizes in MiB)"
    );
    assert!(
        lines[3].starts_with(
            "#  PID  COMM   SCORE   ADJ   POINTS  SHARE   ANON  FILE  SHMEM  SWAP  PGTBL  CGROUP"
        ),
        "{t}"
    );
    assert!(lines[4].starts_with("1  400  cache"), "{t}");
    assert!(lines[5].starts_with("2  200  batch"), "{t}");
    assert!(lines[6].starts_with("3  100  web"), "{t}");
    assert!(lines[5].contains("  100.0  "), "anon MiB: {t}");
    assert!(lines[5].contains("  50.0  "), "swap MiB: {t}");
    assert!(lines[6].ends_with(&format!("  {POD_UID}")), "{t}");
    let head = lines[3];
    for row in &lines[4..7] {
        // Right-aligned columns end where their header ends.
        let end = head.find("SHARE").unwrap() + 5;
        assert_eq!(&row[end - 1..end], "%", "{t}");
    }
    assert_eq!(
        lines[8],
        "protected (oom_score_adj=-1000): never killed (2)"
    );
    assert!(lines[10].starts_with("  1  systemd  "), "{t}");
    assert!(lines[10].contains("  init  "), "{t}");
    assert!(
        lines[11].starts_with("300  db       -1000  oom_score_adj=-1000"),
        "{t}"
    );
    assert!(!t.contains("kthreadd") && !t.contains("kworker"), "{t}");
    assert!(!t.contains("zombie") && !t.contains("reaped"), "{t}");
}

#[test]
fn fixture_tree_cgroup_domain() {
    let t = fixture();
    let root = t.path().to_str().unwrap();
    // limit 1 GiB + min(memsw 1.5 GiB - 1 GiB, SwapTotal 1 GiB) = 1.5 GiB.
    let total = (1536u64 << 20) / page_size();
    for arg in [
        "/kubepods".to_string(),
        "kubepods/".to_string(),
        format!("{root}/sys/fs/cgroup/memory/kubepods"),
    ] {
        let rows = json(&["--host-root", root, "--json", "--cgroup", &arg]);
        let pids: Vec<i64> = rows.iter().map(|r| i(r, "pid")).collect();
        assert_eq!(pids, [200, 100], "--cgroup {arg}: {rows:#?}");
        for r in &rows {
            check_formula(r, total);
        }
    }
    let o = oomwatch(&["--host-root", root, "--cgroup", "/kubepods/burstable"]);
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.contains("\n1 of 1 killable"), "{t}");
    assert!(t.contains("has no memory limit"), "{t}");
}

fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    let e = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("oomwatch top: "), "{e}");
    e
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    let t = fixture();
    let root = t.path().to_str().unwrap();
    let e = one_line_error(&oomwatch(&["--host-root", root, "--cgroup", "/nope"]));
    let mount = format!("{root}/sys/fs/cgroup/memory");
    assert!(
        e.starts_with(&format!(
            "oomwatch top: cgroup /nope does not exist under {mount}: pass"
        )),
        "{e}"
    );
    let e = one_line_error(&oomwatch(&[
        "--host-root",
        root,
        "--cgroup",
        "/kubepods/..",
    ]));
    assert!(e.contains("without '..'"), "{e}");
    let e = one_line_error(&oomwatch(&["--host-root", root, "--cgroup", "/other"]));
    assert!(
        e.contains("memory.limit_in_bytes") && e.contains("memory cgroup"),
        "{e}"
    );
    fs::remove_dir_all(t.path().join("sys")).unwrap();
    let e = one_line_error(&oomwatch(&["--host-root", root, "--cgroup", "/kubepods"]));
    assert!(e.contains("no memory cgroup hierarchy under"), "{e}");
    let e = one_line_error(&oomwatch(&["--host-root", "/nonexistent-oomwatch-root"]));
    assert!(e.contains("/nonexistent-oomwatch-root/proc/meminfo"), "{e}");
    fs::write(t.path().join("proc/meminfo"), "garbage\n").unwrap();
    let e = one_line_error(&oomwatch(&["--host-root", root]));
    assert!(e.contains("has no MemTotal line"), "{e}");
    for bad in [&["--limit", "-1"][..], &["--limit", "x"], &["--nope"]] {
        let o = oomwatch(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {o:?}");
    }
}

/// A process whose name is not UTF-8 (any process may choose its comm) is ranked like any
/// other, its name shown with U+FFFD for the bytes that are not.
#[test]
fn a_process_with_a_non_utf8_name_is_ranked() {
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import ctypes,sys,time\n\
             ctypes.CDLL(None).prctl(15, b'\\xffbad\\xfe', 0, 0, 0)\n\
             sys.stdout.write('named\\n'); sys.stdout.flush(); time.sleep(60)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid = i64::from(child.id());
    let rows = json(&["--json", "--limit", "0"]);
    let _ = child.kill();
    let _ = child.wait();
    let row = rows
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} with a non-UTF-8 name not ranked"));
    assert_eq!(row["comm"], "\u{fffd}bad\u{fffd}", "{row}");
}
