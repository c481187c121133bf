//! The diagnostic storms (`diagnostic_storms` in the results): where the kill → record time
//! goes. The same kind of storm with one thing changed at a time, and notes that read the
//! numbers (written into `docs/benchmarks.md`).

use std::path::Path;

use anyhow::Result;

use super::{agent::Agent, json::J, phases::Storm, report::Report, stats::Pct};

/// A diagnostic storm.
#[derive(Clone, Debug)]
pub struct Variant {
    pub key: &'static str,
    /// What differs from the main storm.
    pub what: &'static str,
    pub storm: Storm,
}

impl Variant {
    pub fn json(&self, storm: J) -> J {
        J::obj(vec![
            ("key", J::str(self.key)),
            ("what", J::str(self.what)),
            ("storm", storm),
        ])
    }
}

const NO_KMSG: &str = "kmsg:oom_report";

/// The floor (none of the three suspected delays: no kernel-log context, state on tmpfs,
/// SCHED_FIFO), then the floor with each delay put back alone. A tail is the worst of several
/// delays, so removing one at a time hides each one behind the others; adding one at a time
/// to the floor shows what each costs. Needs tmpfs at /dev/shm and `chrt`.
pub fn variants(
    binary: &Path,
    out_dir: &Path,
    stamp: &str,
    storm: impl Fn(&str, &Agent) -> Result<Storm>,
) -> Result<Vec<Variant>> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || !Path::new("/usr/bin/chrt").is_file() {
        return Ok(Vec::new());
    }
    let no_kmsg = || vec!["--disable-probe".to_string(), NO_KMSG.into()];
    type Plan = (
        &'static str,
        &'static str,
        &'static [&'static str],
        Vec<String>,
        bool,
    );
    let plans: Vec<Plan> = vec![
        (
            FLOOR,
            "none of the three: `--disable-probe kmsg:oom_report` (no wait for the kernel \
             log's OOM context), state directory on tmpfs, agent at SCHED_FIFO 10 (`chrt -f 10`)",
            FIFO,
            no_kmsg(),
            true,
        ),
        (
            KMSG,
            "floor + the kernel-log context (default probes)",
            FIFO,
            vec![],
            true,
        ),
        (
            DISK,
            "floor + the state directory on disk (ext4, like `/var/lib/oomwatch`)",
            FIFO,
            no_kmsg(),
            false,
        ),
        (
            PRIO,
            "floor + normal scheduling priority",
            &[],
            no_kmsg(),
            true,
        ),
    ];
    let mut out = Vec::new();
    for (key, what, wrapper, extra, on_tmpfs) in plans {
        let state = if on_tmpfs {
            shm.join(format!("oomwatch-bench-state-{stamp}-{key}"))
        } else {
            out_dir.join(format!("state-{stamp}-{key}"))
        };
        let a = Agent::start_wrapped(wrapper, binary, state, &extra)?;
        let s = storm(key, &a)?;
        a.stop()?;
        out.push(Variant {
            key,
            what,
            storm: s,
        });
    }
    Ok(out)
}

const FIFO: &[&str] = &["chrt", "-f", "10"];
const FLOOR: &str = "floor";
const KMSG: &str = "floor+kmsg-context";
const DISK: &str = "floor+state-on-disk";
const PRIO: &str = "floor+normal-priority";

fn ms3(p: Option<Pct>) -> String {
    p.map_or("n/a".into(), |p| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p.p50, p.p99, p.max
        )
    })
}

/// Notes that read the numbers: where the kill → record time goes.
pub fn analysis(r: &Report) -> Vec<String> {
    let big = r.big_node.as_ref().and_then(big_node_note);
    let (Some(lat), Some(drain)) = (r.storm.latency_ms, r.storm.drain_ms) else {
        return big.into_iter().collect();
    };
    let mut out: Vec<String> = big.into_iter().collect();
    out.extend(console_note(r, drain));
    out.extend(floor_note(r, lat));
    out.extend(delay_notes(r));
    out.extend(window_note(r));
    out.extend(isolated_kills_note(r));
    out.extend(scrape_note(r));
    out
}

fn variant<'a>(r: &'a Report, key: &str) -> Option<&'a Storm> {
    r.variants.iter().find(|v| v.key == key).map(|v| &v.storm)
}

fn console_note(r: &Report, drain: Pct) -> Option<String> {
    let c = &r.console;
    if !c.err_on_console() {
        return None;
    }
    let cost = c
        .err_line_ms
        .map_or(String::new(), |ms| format!(", {ms:.2} ms per line here"));
    Some(format!(
        "Kernel side: the OOM killer logs \"Killed process ...\" at KERN_ERR right after \
         `mark_victim`; with console_loglevel {} that line is written synchronously to the \
         console ({}){cost}, by the killing task with preemption off. An agent woken on \
         that CPU runs only afterwards. Kill → ring buffer drained: p50 {:.2} ms, p99 {:.2} \
         ms. A host that keeps KERN_ERR off slow consoles (`kernel.printk = 3 4 1 7`, or \
         `loglevel=3`) does not pay this.",
        c.loglevel.unwrap_or(0),
        c.consoles.join(", "),
        drain.p50,
        drain.p99
    ))
}

fn floor_note(r: &Report, lat: Pct) -> Option<String> {
    let floor = variant(r, FLOOR)?;
    let f = floor.latency_ms?;
    Some(format!(
        "Floor: with none of the three delays below (no kernel-log context, state on tmpfs, \
         SCHED_FIFO) the same kind of storm gives {}, drain p99 {:.2} ms; the main storm \
         (all three present): {}. Each delay alone, put back on the floor:",
        ms3(Some(f)),
        floor.drain_ms.map_or(f64::NAN, |d| d.p99),
        ms3(Some(lat))
    ))
}

/// What putting one delay back on the floor costs, at p50 and p99.
fn cost(r: &Report, key: &str) -> String {
    let floor = variant(r, FLOOR).and_then(|s| s.latency_ms);
    match (floor, variant(r, key).and_then(|s| s.latency_ms)) {
        (Some(f), Some(v)) => format!(
            "floor + this: {}, i.e. {:+.2} ms at p50 and {:+.2} ms at p99 over the floor",
            ms3(Some(v)),
            v.p50 - f.p50,
            v.p99 - f.p99
        ),
        _ => "not measured in this run".into(),
    }
}

/// The three suspected delays, each with what it costs on the floor.
fn delay_notes(r: &Report) -> [String; 3] {
    let tick = r.machine.hz.map_or("one timer tick".to_string(), |hz| {
        format!(
            "one timer tick ({:.0} ms at CONFIG_HZ={hz})",
            1000.0 / hz as f64
        )
    });
    [
        format!(
            "1. Kernel-log context ({}). With no `oom_kill_process` probe here the agent holds \
             each victim until its \"Killed process\" line comes from `/dev/kmsg`. The kernel \
             stores that line before the console write but wakes `/dev/kmsg` readers only after \
             it, from a lazy irq_work (`wake_up_klogd`) run at the next timer tick: up to {tick} \
             more. So while a victim is held the run loop reads `/dev/kmsg` without blocking at \
             once and every 1 ms (within the 250 ms bound) instead of waiting for that wake-up.",
            cost(r, KMSG)
        ),
        format!(
            "2. State file ({}). The position (`kmsg-position.json`) is saved after each record \
             (not after other kernel-log lines), with one `pwrite` of a page-sized slot, round 8 \
             slots: no temporary file, no rename, and no write to a page the kernel may be \
             writing back (which can stall on stable-page devices).",
            cost(r, DISK)
        ),
        format!(
            "3. Scheduling ({}). Under the storm the victims (`tail`), their exits and others' \
             builds keep both CPUs busy: the agent's threads waited {:.0} µs per wake-up for a \
             CPU in the main storm. The agent lowers its own nice value (`--nice`, default -10, \
             needs CAP_SYS_NICE); SCHED_FIFO or a reserved CPU would cut this further.",
            cost(r, PRIO),
            r.storm.runq_wait_us_per_wakeup.unwrap_or(0.0)
        ),
    ]
}

fn window_note(r: &Report) -> Option<String> {
    let max = variant(r, PRIO)?.latency_ms?.max;
    (max < 50.0).then(|| {
        format!(
            "Correlation window (`--correlation-window-ms` 50): never waited on. Without \
             the kernel-log context the slowest record took {max:.1} ms, less than the \
             window: both `mark_victim` records of a victim arrive in the same batch."
        )
    })
}

fn isolated_kills_note(r: &Report) -> Option<String> {
    let d = &r.node_exporter.as_ref()?.delay;
    let p = d.oomwatch_ms?;
    Some(format!(
        "Isolated kills (side by side above): p50 {:.1} ms. The kernel rate-limits its \
         full OOM report (header, memory state, task list) to 10 per 5 s, so kills \
         400 ms apart are mostly reported in full: {:.0} kernel-log lines per kill here.",
        p.p50, d.log_lines_per_kill
    ))
}

/// What the big node adds to kill → record, set beside what its kernel adds to each kill.
fn big_node_note(b: &super::big_node::BigNode) -> Option<String> {
    let (idle, node) = (b.idle_host.killer_hold_ms?, b.quiet.killer_hold_ms?);
    let (d_rec, d_hold) = (b.p99_node_ms()?, b.p99_killer_hold_node_ms()?);
    let verdict = if d_hold <= 0.0 {
        "the kernel's hold did not grow: not the kernel's"
    } else if d_rec <= d_hold + 1.0 {
        "the node's extra is the kernel's own work per kill, not the agent's"
    } else {
        "more than the kernel's longer hold accounts for: the rest is the agent's or the \
         scheduler's"
    };
    Some(format!(
        "Big node: after each OOM kill the kernel walks every process of the host \
         (`__oom_kill_process` looks for others sharing the victim's memory, {} processes \
         here), in the killing task with no preemption point in the walk (only a fully \
         preemptible kernel runs another task there): the killer keeps its CPU without a break \
         after `mark_victim` for p50 {:.2} ms, p99 {:.2} ms on the big node \
         against p50 {:.2} ms, p99 {:.2} ms on the idle host, and any task queued on its CPU \
         waits that long (an HTTP client; the agent's event loop only until one of its two \
         watchers, on other CPUs, moves it: {} moves in the storm with no scrapes). \
         Kill → record p99 grew by {:+.2} ms, the killer's hold by {:+.2} ms: {verdict}. \
         The scrapes add {}.",
        b.processes,
        node.p50,
        node.p99,
        idle.p50,
        idle.p99,
        b.quiet
            .loop_moves
            .map_or("n/a".into(), |m| format!("{m:.0}")),
        d_rec,
        d_hold,
        b.p99_delay_ms().map_or("n/a".into(), |d| format!(
            "{d:+.2} ms at p99 (flood − no scrapes)"
        ))
    ))
}

fn scrape_note(r: &Report) -> Option<String> {
    let p = r.scrape_synthetic.latency_ms?;
    let wrk = r.wrk.as_ref().and_then(|(_, s)| s.latency_ms);
    Some(format!(
        "Scrapes: with {} label sets the answer is {} bytes ({} samples) and takes {:.1} ms \
         at the median. The label sets' families are rendered to text only when a kill \
         changed them and kept between scrapes; a scrape renders the small families (the \
         host collectors' included) and sends the kept text from shared buffers, without \
         copying it (`Content-Length` known), so most of the time is moving the body; \
         records never wait for scrapes{}.",
        r.synthetic_sets,
        r.scrape_synthetic.bytes,
        r.scrape_synthetic.samples,
        p.p50,
        wrk.map_or(String::new(), |w| format!(
            " (under wrk, kill → record p50 {:.0} ms, p99 {:.0} ms, with both cores busy)",
            w.p50, w.p99
        ))
    ))
}
