//! A Prometheus server of the test's own, scraping the agent the way the PodMonitor in
//! `deploy/kubernetes` makes prometheus-operator scrape it, and its HTTP API.
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::common::free_port;
use super::{AGENT_NAMESPACE, AGENT_POD, NODE, PROMETHEUS, RANGE_S, STEP_S, WAIT};

/// The scrape of the PodMonitor, as prometheus-operator writes it for the agent's pod.
const CONFIG: &str = "\
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: oomwatch
    honor_labels: true
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:AGENT_PORT']
        labels:
          node: NODE
          namespace: AGENT_NAMESPACE
          pod: AGENT_POD
          container: oomwatch
          endpoint: metrics
";

/// A Prometheus of its own: config, storage and log in a temporary directory; killed on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(agent_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = CONFIG
            .replace("AGENT_PORT", &agent_port.to_string())
            .replace("NODE", NODE)
            .replace("AGENT_NAMESPACE", AGENT_NAMESPACE)
            .replace("AGENT_POD", AGENT_POD);
        let config_file = dir.path().join("prometheus.yml");
        fs::write(&config_file, config).unwrap();
        let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut prom = Prometheus { child, port, dir };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = prom.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before ready; log:\n{}",
                    prom.log()
                );
            }
            if matches!(http(port, "/-/ready"), Ok((200, _))) {
                break;
            }
            assert!(
                Instant::now() < end,
                "prometheus not ready in 60 s:\n{}",
                prom.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
        eprintln!("prometheus ready on 127.0.0.1:{port}, scraping 127.0.0.1:{agent_port}");
        prom
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `data` of a successful API answer, else the error Prometheus gave.
    pub fn api(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let (code, body) = http(self.port, &format!("{endpoint}?{}", query.join("&")))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|_| format!("HTTP {code}, not JSON: {}", body.trim()))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    pub fn instant(&self, expr: &str) -> Result<Value, String> {
        let time = format!("{:.3}", now());
        self.api("/api/v1/query", &[("query", expr.into()), ("time", time)])
    }

    pub fn range(&self, expr: &str) -> Result<Value, String> {
        let end = now().floor() as u64;
        self.api(
            "/api/v1/query_range",
            &[
                ("query", expr.into()),
                ("start", (end - RANGE_S).to_string()),
                ("end", end.to_string()),
                ("step", STEP_S.to_string()),
            ],
        )
    }

    /// The value of a query that returns one sample.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let data = self.instant(expr).ok()?;
        let sample = data["result"].as_array()?.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Unix time of the first sample of the agent's target.
    pub fn first_scrape(&self) -> f64 {
        let data = self.instant("up{job=\"oomwatch\"}[1h]").unwrap();
        data["result"][0]["values"][0][0]
            .as_f64()
            .unwrap_or_else(|| panic!("no sample of up: {data}"))
    }

    pub fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) {
        let end = Instant::now() + WAIT;
        loop {
            let v = self.value(expr);
            if v.is_some_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < end,
                "`{expr}` still {v:?} after {WAIT:?}; prometheus log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One HTTP/1.0 GET (no chunked encoding): status code and body.
pub fn http(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of HTTP header")?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    Ok((code.ok_or("no HTTP status")?, body.to_string()))
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
