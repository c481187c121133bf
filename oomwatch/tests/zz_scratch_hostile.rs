use oomwatch::server::{self, Limits};
use oomwatch::sink::metrics::{BuildInfo, Metrics};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn flood_rate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cap: usize = std::env::var("CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let listener = rt
        .block_on(server::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let m = Arc::new(Metrics::new(
        10,
        BuildInfo {
            version: "0",
            git_commit: "t",
        },
    ));
    let th = std::thread::spawn(move || {
        rt.block_on(server::serve_with_limits(
            listener,
            m,
            Limits::default().with_max_connections(cap),
            std::future::pending(),
        ))
    });
    let _ = th;
    let t = Instant::now();
    let mut v = Vec::new();
    let mut slow = 0;
    for _ in 0..3000 {
        let t1 = Instant::now();
        v.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
        if t1.elapsed() > Duration::from_millis(500) {
            slow += 1;
            eprintln!("slow #{} at {:?}", v.len(), t.elapsed());
        }
    }
    eprintln!("3000 connects in {:?}, {slow} slow", t.elapsed());
}
