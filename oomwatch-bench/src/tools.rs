//! The other programs of the bench: Debian's `prometheus-node-exporter` (side by side) and
//! `wrk` (load on `/metrics`), which `cargo xtask bench` installs with apt when missing.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{http, json::J, stats::Pct, sys};
use oomwatch_testkit::command::describe;

pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// A running node_exporter on 127.0.0.1 with its default collectors; killed on drop.
pub struct NodeExporter {
    child: Child,
    pub pid: u32,
    pub port: u16,
    pub version: String,
}

impl NodeExporter {
    pub fn start() -> Result<NodeExporter> {
        let version = Command::new(NODE_EXPORTER)
            .arg("--version")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").to_string()
            })
            .unwrap_or_default();
        let port = sys::free_port()?;
        let mut cmd = Command::new(NODE_EXPORTER);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        eprintln!("[bench] $ {}", describe(&cmd));
        let child = cmd.spawn().context("start prometheus-node-exporter")?;
        let mut ne = NodeExporter {
            pid: child.id(),
            child,
            port,
            version,
        };
        for _ in 0..250 {
            if http::get_text(port, "/metrics").is_ok() {
                return Ok(ne);
            }
            if let Some(status) = ne.child.try_wait()? {
                bail!("prometheus-node-exporter exited ({status}) at start");
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("prometheus-node-exporter did not answer on port {port} within 5 s")
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `wrk --latency` reported.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub secs: u64,
    pub threads: u32,
    pub connections: u32,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Socket errors plus non-2xx answers.
    pub errors: u64,
}

impl WrkResult {
    pub fn json(&self) -> J {
        J::obj(vec![
            ("duration_s", J::Num(self.secs as f64)),
            ("threads", J::Num(f64::from(self.threads))),
            ("connections", J::Num(f64::from(self.connections))),
            ("requests", J::Num(self.requests as f64)),
            ("requests_per_s", J::Num(self.rps)),
            ("p50_ms", J::opt(self.p50_ms)),
            ("p99_ms", J::opt(self.p99_ms)),
            ("max_ms", J::opt(self.max_ms)),
            ("errors", J::Num(self.errors as f64)),
        ])
    }
}

/// `wrk -t1 -cC -dSs --latency http://127.0.0.1:PORT/metrics`.
pub fn wrk(port: u16, secs: u64, connections: u32) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        "10s".into(),
        "--latency".into(),
        format!("http://127.0.0.1:{port}/metrics"),
    ]);
    eprintln!("[bench] $ {}", describe(&cmd));
    let out = cmd.output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse_wrk(&text);
    r.secs = secs;
    r.threads = 1;
    r.connections = connections;
    Ok(r)
}

pub fn parse_wrk(text: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = duration_ms(v),
            ["99%", v] => r.p99_ms = duration_ms(v),
            ["Latency", _avg, _stdev, max, ..] => r.max_ms = duration_ms(max),
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse().unwrap_or(0),
            _ => {}
        }
    }
    r
}

/// wrk's `12.34ms`, `567.00us`, `1.20s`, `2.00m` in ms.
fn duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// The delay between a kill and the moment node_exporter's `node_vmstat_oom_kill` showed it.
#[derive(Clone, Debug, Default)]
pub struct VmstatDelay {
    pub kills: usize,
    /// Kill (kernel timestamp) → first poll whose answer had the new value, ms.
    pub delay_ms: Option<Pct>,
    /// oomwatch's kill → record latency for the same kills, ms.
    pub oomwatch_ms: Option<Pct>,
    /// How long one poll (a full scrape) of node_exporter took, ms.
    pub poll_ms: Option<Pct>,
    /// Kernel log lines per kill (an isolated kill gets the full OOM report).
    pub log_lines_per_kill: f64,
}

impl VmstatDelay {
    pub fn json(&self) -> J {
        J::obj(vec![
            ("kills", J::Num(self.kills as f64)),
            ("node_vmstat_oom_kill_delay_ms", Pct::json(&self.delay_ms)),
            ("oomwatch_record_latency_ms", Pct::json(&self.oomwatch_ms)),
            ("node_exporter_poll_ms", Pct::json(&self.poll_ms)),
            ("kernel_log_lines_per_kill", J::Num(self.log_lines_per_kill)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 3s test @ http://127.0.0.1:1/metrics
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.13ms    2.01ms   1.20s    80.00%
    Req/Sec   100.00     10.00   120.00     70.00%
  Latency Distribution
     50%  850.00us
     75%   11.00ms
     90%   12.00ms
     99%   15.50ms
  300 requests in 3.00s, 1.00GB read
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    100.50
Transfer/sec:    333.33MB
";
        let r = parse_wrk(text);
        assert_eq!(r.p50_ms, Some(0.85));
        assert_eq!(r.p99_ms, Some(15.5));
        assert_eq!(r.max_ms, Some(1200.0));
        assert_eq!(r.requests, 300);
        assert_eq!(r.rps, 100.5);
        assert_eq!(r.errors, 3);
    }
}
