//! A forged userspace OOM killer: an unprivileged Python process that names itself `earlyoom`
//! and SIGKILLs its own children as fast as it can. The real agent reports none of it as an
//! OOM kill, counts every one as dropped, and records every real OOM kill made meanwhile
//! (checked against the kernel's own count in `memory.oom_control`).
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, TestCgroup};

const WAIT: Duration = Duration::from_secs(15);

/// Forks a child and SIGKILLs it, in a loop, for `seconds`; prints the number of kills.
const FORGER: &str = r#"
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, b"earlyoom", 0, 0, 0)
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    n += 1
print(n, flush=True)
"#;

#[test]
fn a_forged_earlyoom_makes_no_events_and_real_kills_are_all_recorded() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let forger = Command::new("/usr/bin/python3")
        .args(["-c", FORGER, "4"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let forger_pid = forger.id();

    // Real kills meanwhile, in a cgroup of this test's own.
    let cg = TestCgroup::new(32 << 20);
    let victims: Vec<i32> = (0..5).map(|_| cg.oom_kill(0)).collect();
    let out = forger.wait_with_output().unwrap();
    let forged: u64 = BufReader::new(&out.stdout[..])
        .lines()
        .next()
        .and_then(|l| l.ok()?.trim().parse().ok())
        .expect("the forger's count");
    for v in &victims {
        agent.wait_event(WAIT, |e| e["pid"] == *v && e["type"].is_null());
    }
    agent.drain(Duration::from_millis(1500));

    let fake: Vec<_> = agent
        .seen
        .iter()
        .filter(|e| e["killer_pid"] == forger_pid)
        .collect();
    let m = agent.get("/metrics");
    let dropped: f64 = ["executable", "unprivileged", "sender_gone", "rate_limited"]
        .iter()
        .filter_map(|r| {
            metric_value(
                &m,
                &format!("oomwatch_userspace_oom_kills_dropped_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    let recorded = victims
        .iter()
        .filter(|v| {
            agent
                .seen
                .iter()
                .any(|e| e["pid"] == **v && e["type"].is_null())
        })
        .count() as u64;
    let events: serde_json::Value =
        serde_json::from_str(agent.get("/events").split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let in_ring = victims
        .iter()
        .filter(|v| events.as_array().unwrap().iter().any(|e| e["pid"] == **v))
        .count();
    eprintln!(
        "forged kills: {forged}; forged events: {}; dropped counted: {dropped}; real kills: \
         kernel {}, recorded {recorded}, in /events {in_ring}",
        fake.len(),
        cg.oom_kills()
    );
    assert!(forged >= 100, "the forger killed only {forged}");
    assert!(
        fake.is_empty(),
        "{} forged kills reported, e.g. {}",
        fake.len(),
        fake[0]
    );
    assert_eq!(cg.oom_kills(), 5, "kernel's count");
    assert_eq!(recorded, 5, "real kills recorded");
    assert_eq!(in_ring, 5, "real kills in /events");
    assert!(
        dropped >= forged as f64,
        "{dropped} drops counted for {forged} forged kills:\n{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "oomwatch_userspace_oom_kills_total{killer=\"earlyoom\"}"
        ),
        None
    );
}
