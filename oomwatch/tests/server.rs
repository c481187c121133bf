//! The HTTP server over a real socket: routes, content types, graceful shutdown, and the
//! bind error for a port already in use.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oomwatch::server::{self, ServerError};
use oomwatch::sink::metrics::{BuildInfo, EbpfCounters, Metrics};
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
    let m = Metrics::new(
        10,
        BuildInfo {
            version: "0.1.0",
            git_commit: "test",
        },
    );
    m.set_probe_attached("tracepoint/oom/mark_victim", true);
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
        .contains("oomwatch_probe_attached{probe=\"tracepoint/oom/mark_victim\"} 1\n"));

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
