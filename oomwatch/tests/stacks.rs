//! `trigger.stack`: the allocating task's kernel and user stacks at the kill, symbolized, on
//! real kills of a C program built here with frame pointers and DWARF (`leaky_cache_insert` called from
//! `serve_request`), checked against the running kernel's `/proc/kallsyms`: with its symbols,
//! stripped (`module+0xoffset` frames), and as a trigger that is not the victim (a small
//! allocator in a memory cgroup with a big idle process).
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{real_kernel_or_skip, Agent, TestCgroup};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// Allocates 1 MiB at a time through `serve_request` → `leaky_cache_insert`, touching every page
/// in `leaky_cache_insert` itself; `hold N` holds N MiB (in `hold_memory`) and sleeps.
const LEAKY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

static char **cache;
static size_t entries;

__attribute__((noinline)) void leaky_cache_insert(size_t bytes) {
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    if (entries % 1024 == 0) cache = realloc(cache, (entries + 1024) * sizeof *cache);
    cache[entries++] = p;
}

__attribute__((noinline)) void serve_request(void) { leaky_cache_insert(1 << 20); }

__attribute__((noinline)) void hold_memory(size_t mib) {
    char *p = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    memset(p, 1, mib << 20);
    FILE *adj = fopen("/proc/self/oom_score_adj", "w");
    if (adj) { fputs("500", adj); fclose(adj); }
    puts("ready");
    fflush(stdout);
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "hold") == 0) hold_memory(strtoul(argv[2], NULL, 10));
    for (;;) serve_request();
}
"#;

/// The program, built with frame pointers, and a stripped copy, in a temporary directory.
struct Programs {
    _dir: tempfile::TempDir,
    leaky: PathBuf,
    stripped: PathBuf,
}

fn build_programs() -> Programs {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("leaky.c");
    std::fs::write(&src, LEAKY_C).unwrap();
    let leaky = dir.path().join("leaky");
    let out = Command::new("gcc")
        .args([
            "-fno-omit-frame-pointer",
            "-O0",
            "-g",
            "-Wl,--build-id",
            "-o",
        ])
        .arg(&leaky)
        .arg(&src)
        .output()
        .expect("gcc (cargo xtask setup --test installs it)");
    assert!(out.status.success(), "gcc: {out:?}");
    let stripped = dir.path().join("leaky-stripped");
    std::fs::copy(&leaky, &stripped).unwrap();
    let out = Command::new("strip")
        .arg(&stripped)
        .output()
        .expect("strip");
    assert!(out.status.success(), "strip: {out:?}");
    Programs {
        _dir: dir,
        leaky,
        stripped,
    }
}

/// Runs `program` in `cg` until the kernel kills it; its pid.
fn run_until_killed(cg: &TestCgroup, program: &Path) -> i32 {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    pid
}

fn symbols(frames: &Value) -> Vec<String> {
    frames
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {frames}"))
        .iter()
        .filter_map(|f| f["symbol"].as_str().map(str::to_string))
        .collect()
}

/// `a` then `b` (its caller) among the frames, innermost first.
fn in_order(names: &[String], a: &str, b: &str) -> bool {
    let ia = names.iter().position(|n| n == a);
    let ib = names.iter().position(|n| n == b);
    matches!((ia, ib), (Some(x), Some(y)) if x < y)
}

/// The kernel stack goes through the OOM killer, by names this kernel's kallsyms has.
fn assert_kernel_stack(ev: &Value) {
    let kernel = symbols(&ev["trigger"]["stack"]["kernel"]);
    // The capturing program's and the tracepoint's frames are not reported.
    assert!(
        !kernel[0].starts_with("bpf_") && kernel[0] != "__traceiter_mark_victim",
        "{kernel:?}"
    );
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let known = |name: &str| {
        kallsyms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(name))
    };
    let oom = ["mem_cgroup_out_of_memory", "out_of_memory"]
        .into_iter()
        .find(|s| kernel.iter().any(|k| k == s))
        .unwrap_or_else(|| panic!("no OOM function in the kernel stack: {ev}"));
    assert!(known(oom), "{oom} is not in /proc/kallsyms");
    assert!(
        kernel.iter().all(|k| known(k)),
        "unknown kernel symbols: {kernel:?}"
    );
}

#[test]
fn the_allocating_victims_stacks_name_its_functions_and_the_oom_path() {
    if !real_kernel_or_skip() {
        return;
    }
    let programs = build_programs();
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(64 << 20);
    let pid = run_until_killed(&cg, &programs.leaky);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    assert_eq!(ev["trigger"]["pid"], pid, "{ev}");
    let user = symbols(&ev["trigger"]["stack"]["user"]);
    assert!(
        in_order(&user, "leaky_cache_insert", "serve_request"),
        "user stack {user:?}: {ev}"
    );
    assert!(in_order(&user, "serve_request", "main"), "{user:?}");
    let frames = ev["trigger"]["stack"]["user"].as_array().unwrap();
    let leaf = frames
        .iter()
        .find(|f| f["symbol"] == "leaky_cache_insert")
        .unwrap();
    assert_eq!(leaf["module"], "leaky", "{ev}");
    // Built with -g: the faulting line, from the program's DWARF.
    let line = LEAKY_C
        .lines()
        .position(|l| l.contains("p[i] = 1;"))
        .unwrap()
        + 1;
    assert!(
        leaf["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("leaky.c")),
        "{leaf}"
    );
    assert_eq!(leaf["line"], line, "{leaf}");
    let summary = ev["trigger"]["stack"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("leaky_cache_insert <- serve_request"),
        "{summary}"
    );
    assert_kernel_stack(&ev);
}

#[test]
fn a_stripped_program_gives_module_and_offset_frames() {
    if !real_kernel_or_skip() {
        return;
    }
    let programs = build_programs();
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(64 << 20);
    let pid = run_until_killed(&cg, &programs.stripped);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    let user = ev["trigger"]["stack"]["user"].as_array().unwrap();
    let own: Vec<&Value> = user
        .iter()
        .filter(|f| f["module"] == "leaky-stripped")
        .collect();
    assert!(own.len() >= 3, "leaf, serve_request, main: {ev}");
    for f in &own {
        assert!(f["symbol"].is_null(), "{f}");
        assert!(f["offset"].as_u64().unwrap() > 0, "{f}");
    }
    let summary = ev["trigger"]["stack"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("leaky-stripped+0x"), "{summary}");
    assert_kernel_stack(&ev);
}

#[test]
fn a_trigger_that_is_not_the_victim_gets_its_own_stack() {
    if !real_kernel_or_skip() {
        return;
    }
    let programs = build_programs();
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(64 << 20);
    let mut hold = Command::new(&programs.leaky);
    hold.args(["hold", "44"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cg.enter_on_exec(&mut hold);
    let mut holder = hold.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let holder_pid = holder.id() as i32;
    let mut alloc = Command::new(&programs.leaky);
    alloc.stdin(Stdio::null()).stdout(Stdio::null());
    cg.enter_on_exec(&mut alloc);
    let mut allocator = alloc.spawn().unwrap();
    let alloc_pid = allocator.id() as i32;

    let ev = agent.wait_event(WAIT, |v| v["pid"] == holder_pid);
    let _ = allocator.kill();
    let _ = allocator.wait();
    let _ = holder.wait();
    assert_eq!(ev["trigger"]["pid"], alloc_pid, "{ev}");
    let user = symbols(&ev["trigger"]["stack"]["user"]);
    assert!(
        in_order(&user, "leaky_cache_insert", "serve_request"),
        "{user:?}: {ev}"
    );
    assert!(
        !user.iter().any(|s| s == "hold_memory"),
        "victim's stack: {ev}"
    );
    assert_eq!(
        ev["trigger"]["stack"]["summary"], "leaky_cache_insert <- serve_request <- main",
        "{ev}"
    );
    assert_kernel_stack(&ev);
}

/// `--stacks kernel` takes the kernel stack only; `--stacks none` no stack at all (and no drop
/// counter).
#[test]
fn the_stacks_flag_limits_what_is_taken() {
    if !real_kernel_or_skip() {
        return;
    }
    let programs = build_programs();
    let cg = TestCgroup::new(64 << 20);
    let mut agent = Agent::start(&["--stacks", "kernel"]);
    let pid = run_until_killed(&cg, &programs.leaky);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    let stack = &ev["trigger"]["stack"];
    assert_eq!(stack["user"], serde_json::json!([]), "{ev}");
    assert!(stack["summary"].is_null(), "{ev}");
    assert_kernel_stack(&ev);
    assert!(agent
        .get("/metrics")
        .contains("oomwatch_stacks_dropped_total 0"));
    drop(agent);

    let mut agent = Agent::start(&["--stacks", "none"]);
    let pid = run_until_killed(&cg, &programs.leaky);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    assert_eq!(ev["trigger"]["pid"], pid, "{ev}");
    assert!(ev["trigger"]["stack"].is_null(), "{ev}");
    assert!(!agent
        .get("/metrics")
        .contains("oomwatch_stacks_dropped_total"));
}

/// A Go program (Go keeps frame pointers): `main.leakyCacheInsert` called from
/// `main.serveRequest` grows a cache until the kernel kills it.
const LEAKY_GO: &str = r#"package main

var cache [][]byte

//go:noinline
func leakyCacheInsert(n int) {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	cache = append(cache, b)
}

//go:noinline
func serveRequest() { leakyCacheInsert(1 << 20) }

func main() {
	for {
		serveRequest()
	}
}
"#;

#[test]
fn a_go_allocators_stack_names_its_functions_past_the_runtime() {
    if !real_kernel_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leaky.go"), LEAKY_GO).unwrap();
    let bin = dir.path().join("leaky-go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("leaky.go")
        .current_dir(dir.path())
        .env("GOCACHE", dir.path().join("cache"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output();
    let Some(out) =
        oomwatch_testkit::host_or_skip("go (cargo xtask setup --test installs golang-go)", out)
    else {
        return;
    };
    assert!(out.status.success(), "go build: {out:?}");
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(64 << 20);
    let pid = run_until_killed(&cg, &bin);
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    let user = symbols(&ev["trigger"]["stack"]["user"]);
    eprintln!(
        "go user stack: {user:?}\nsummary: {}",
        ev["trigger"]["stack"]["summary"]
    );
    assert!(
        in_order(&user, "main.leakyCacheInsert", "main.serveRequest"),
        "user stack {user:?}: {ev}"
    );
    let summary = ev["trigger"]["stack"]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with("main.leakyCacheInsert <- main.serveRequest"),
        "{summary}"
    );
    assert_kernel_stack(&ev);
}

/// A JavaScript allocator under Node.js with `--perf-basic-prof`: its JIT's perf map names the
/// frames in anonymous executable memory (`leakyCacheInsert` called from `serveRequest`).
const LEAKY_JS: &str = r#"
const cache = [];
function leakyCacheInsert() {
  const a = new Float64Array(131072);
  for (let i = 0; i < a.length; i += 512) a[i] = 1;
  cache.push(a);
}
function serveRequest() { leakyCacheInsert(); }
for (;;) serveRequest();
"#;

#[test]
fn a_jit_runtimes_frames_are_named_from_its_perf_map() {
    if !real_kernel_or_skip() {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    if oomwatch_testkit::host_or_skip("node (cargo xtask setup --test installs nodejs)", node)
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("leaky.js");
    std::fs::write(&script, LEAKY_JS).unwrap();
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(128 << 20);
    let mut cmd = Command::new("node");
    cmd.args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
        .arg(&script)
        // V8 may write its isolate log in the working directory: the test's own.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    // The runtime leaves its map behind (as it would on a node); removed once read.
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let user = ev["trigger"]["stack"]["user"].as_array().unwrap();
    let names: Vec<String> = symbols(&ev["trigger"]["stack"]["user"]);
    let at = |f: &str| names.iter().position(|n| n.contains(f));
    assert!(
        matches!((at("leakyCacheInsert"), at("serveRequest")), (Some(a), Some(b)) if a < b),
        "JS frames in order: {names:?}"
    );
    let leaf = user
        .iter()
        .find(|f| {
            f["symbol"]
                .as_str()
                .is_some_and(|s| s.contains("leakyCacheInsert"))
        })
        .unwrap();
    assert_eq!(leaf["module"], format!("perf-{pid}.map"), "{leaf}");
    let summary = ev["trigger"]["stack"]["summary"].as_str().unwrap_or("");
    assert!(summary.contains("leakyCacheInsert"), "{summary}");
    assert_kernel_stack(&ev);
}
