//! The HTTP server over a real socket: routes, content types, graceful shutdown, and the
//! bind error for a port already in use.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oomwatch::host::HostCollectors;
use oomwatch::record::{OomEvent, ProbeId};
use oomwatch::server::{self, ServerError, ServerState};
use oomwatch::sink::metrics::{EbpfCounters, Metrics};
use oomwatch::sink::recent::RecentEvents;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP/1.1 response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn metrics() -> Arc<Metrics> {
    let m = common::metrics_sink(10, "test");
    m.set_probe_attached(ProbeId::MarkVictimTp, true);
    m.set_ebpf_counters_reader(Box::new(|| EbpfCounters {
        ringbuf_drops: 7,
        read_errors: 0,
    }));
    Arc::new(m)
}

#[tokio::test]
async fn serves_metrics_healthz_and_404_then_shuts_down() {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, metrics(), async {
        let _ = stopped.await;
    }));

    let r = request(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r
        .body
        .contains("# TYPE oomwatch_events_dropped_total counter\n"));
    assert!(r.body.contains("\noomwatch_events_dropped_total 7\n"));
    assert!(r
        .body
        .contains("oomwatch_probe_attached{probe=\"tracepoint:oom/mark_victim\"} 1\n"));

    let r = request(addr, "GET", "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok\n");

    let r = request(addr, "GET", "/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.body.starts_with("not found"), "body: {:?}", r.body);
    assert!(r.body.len() < 100);

    let r = request(addr, "POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET,HEAD"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stops after the shutdown future completes")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn bind_to_a_port_in_use_says_so_and_names_the_fix() {
    let first = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = first.local_addr().unwrap();
    let err = server::bind(addr).await.unwrap_err();
    assert!(matches!(err, ServerError::Bind { addr: a, .. } if a == addr));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot listen on {addr}: address already in use (another oomwatch?); \
             choose another with --listen"
        )
    );
}

/// Starts a server on an ephemeral port; returns its address and the stop handle.
async fn start(state: ServerState) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn page_and_events_show_the_recent_events_newest_first() {
    let recent = Arc::new(RecentEvents::new(3));
    for pid in 1..=4 {
        let mut ev = OomEvent::new(pid, 1, SystemTime::now(), "node-1".into());
        ev.comm = Some(format!("<b>comm{pid}"));
        ev.cgroup = Some("/t".into());
        recent.push(&ev);
    }
    let state = ServerState::new(metrics())
        .with_recent(Arc::clone(&recent))
        .with_host(Arc::new(HostCollectors::new("/")))
        .with_node("node-1");
    let (addr, _stop) = start(state).await;

    let r = request(addr, "GET", "/events").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let pids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids, [4, 3, 2], "newest first, the ring keeps 3");
    assert_eq!(v[0]["comm"], "<b>comm4");
    assert_eq!(v[0]["host"], "node-1");

    let r = request(addr, "GET", "/events?limit=1").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["pid"], 4);

    let r = request(addr, "GET", "/events?limit=x").await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("invalid limit"), "{}", r.body);

    let r = request(addr, "GET", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.starts_with("<!DOCTYPE html>"));
    assert!(r.body.contains("&lt;b&gt;comm4") && !r.body.contains("<b>comm"));
    assert!(r.body.contains(">4<") && !r.body.contains(">1<"));
    assert!(r.body.contains("Host settings") && r.body.contains("vm.overcommit_memory"));
    assert!(r.body.contains("tracepoint:oom/mark_victim"), "probe list");

    let r = request(addr, "HEAD", "/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = request(addr, "DELETE", "/events").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn page_without_events_or_host_says_so() {
    let (addr, _stop) = start(ServerState::new(metrics())).await;
    let r = request(addr, "GET", "/").await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .contains("No OOM kills seen since the agent started."));
    assert!(r.body.contains("not collected by this server"));
    let r = request(addr, "GET", "/events").await;
    assert_eq!(r.body, "[]");
}

/// SIGHUP (the exporters' "reload") without `--web.config.file`: nothing to reload, and the
/// agent keeps running (the signal's default action would end it).
#[test]
fn sighup_without_a_web_config_keeps_the_agent_running() {
    if !common::real_kernel_or_skip() {
        return;
    }
    let agent = common::Agent::start(&[]);
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent.log_text().contains("SIGHUP: nothing to reload") {
        assert!(std::time::Instant::now() < end, "{}", agent.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        agent.get("/healthz").contains("200"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}
