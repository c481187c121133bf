//! The accept loop: HTTP/1 connections served by hyper under the [`Limits`], so hostile
//! clients cannot make the agent hold unbounded memory or file descriptors.
//!
//! * Every open connection is in a registry (oldest first). A connection accepted at
//!   `max_connections` makes the oldest connection with no request in progress close at once
//!   (one that never completed a request first: a slow or idle client rather than a scraper
//!   between scrapes); the accept loop waits for it to go (at most [`EVICT_WAIT`]) before it
//!   accepts again. So at most `max_connections + 1` sockets are open, and a well-behaved
//!   client that connects and sends its request right away is served even while the table is
//!   full of idle or slow connections. When every connection is busy, the new one is closed.
//! * Accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) are counted and followed by a
//!   [`ACCEPT_BACKOFF`] pause instead of a busy loop.
//! * At shutdown the listener is closed, connections without a request in progress are closed
//!   at once, the others get `shutdown_grace` to finish their answer.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

use super::limits::{ConnError, HttpStats, Limits};

/// Longest wait of the accept loop for an evicted connection to close.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Pause after a failed accept (out of file descriptors, of memory, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One open connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Conn {
    /// Requests of this connection in a handler now.
    in_flight: AtomicUsize,
    /// Requests of this connection answered so far.
    served: AtomicU64,
    /// Set once the connection was told to close.
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn tell_to_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }
}

/// The open connections, by accept order.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Woken whenever a connection leaves the registry.
    gone: Notify,
    next_id: AtomicU64,
    stats: Arc<HttpStats>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection; it leaves the registry when the returned guard drops.
    fn add(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        let mut conns = self.lock();
        conns.insert(id, Arc::clone(&conn));
        self.stats.set_open(conns.len());
        Registered {
            registry: Arc::clone(self),
            id,
            conn,
        }
    }

    /// The connection to close to make room: the oldest idle one that never completed a
    /// request, else the oldest idle one; none when all are busy or already closing.
    fn victim(&self) -> Option<Arc<Conn>> {
        let conns = self.lock();
        let candidates = || {
            conns
                .values()
                .filter(|c| c.idle() && !c.closing.load(Ordering::Acquire))
        };
        candidates()
            .find(|c| c.served.load(Ordering::Relaxed) == 0)
            .or_else(|| candidates().next())
            .cloned()
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.tell_to_close();
        }
    }

    /// Waits until fewer than `n` connections are open, or `deadline`; true if there are.
    async fn wait_below(&self, n: usize, deadline: Instant) -> bool {
        loop {
            let mut gone = pin!(self.gone.notified());
            gone.as_mut().enable();
            if self.len() < n {
                return true;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                return self.len() < n;
            }
        }
    }
}

/// A connection's place in the registry, given up on drop (also when its task is aborted).
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut conns = self.registry.lock();
        conns.remove(&self.id);
        self.registry.stats.set_open(conns.len());
        drop(conns);
        self.registry.gone.notify_waiters();
    }
}

/// What every connection task shares.
struct Shared {
    router: Router,
    limits: Limits,
    http: http1::Builder,
    handlers: Semaphore,
    stats: Arc<HttpStats>,
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = limits.sanitized();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true)
        .half_close(false);
    let shared = Arc::new(Shared {
        router,
        limits,
        http,
        handlers: Semaphore::new(limits.max_concurrent_requests),
        stats: Arc::clone(&stats),
    });
    let registry = Arc::new(Registry {
        stats,
        ..Registry::default()
    });

    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                shared.stats.accept_error();
                if is_per_connection(&e) {
                    continue;
                }
                tracing::warn!("HTTP server: accept failed: {e}; retrying in 100 ms");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if registry.len() >= limits.max_connections && !make_room(&registry, &limits).await {
            shared.stats.rejected();
            tracing::debug!("HTTP server: all connections busy; closing a new one");
            continue;
        }
        shared.stats.accepted();
        let registered = registry.add();
        tokio::spawn(connection(stream, registered, Arc::clone(&shared)));
    }
    drop(listener);

    registry.close_all();
    let deadline = Instant::now() + limits.shutdown_grace + Duration::from_millis(100);
    if !registry.wait_below(1, deadline).await {
        tracing::debug!(
            open = registry.len(),
            "HTTP server: connections still open at shutdown are dropped"
        );
    }
}

/// Closes the connection [`Registry::victim`] picks and waits for it to go; false when there
/// is none or it did not go in time.
async fn make_room(registry: &Registry, limits: &Limits) -> bool {
    let Some(victim) = registry.victim() else {
        return false;
    };
    victim.tell_to_close();
    registry.stats.evicted();
    registry
        .wait_below(limits.max_connections, Instant::now() + EVICT_WAIT)
        .await
}

/// Accept errors about one incoming connection (gone before it was accepted), after which the
/// next accept can be tried at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves one connection until it ends, the client misbehaves or it is told to close.
async fn connection(stream: TcpStream, registered: Registered, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let conn = Arc::clone(&registered.conn);
    let service = {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(req, Arc::clone(&shared), Arc::clone(&conn))
        })
    };
    let mut http = pin!(shared.http.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        r = http.as_mut() => r,
        () = conn.close.notified() => {
            if conn.idle() {
                Ok(())
            } else {
                http.as_mut().graceful_shutdown();
                tokio::time::timeout(shared.limits.shutdown_grace, http)
                    .await
                    .unwrap_or(Ok(()))
            }
        }
    };
    if let Err(e) = result {
        let kind = ConnError::of(&e);
        shared.stats.conn_error(kind);
        tracing::debug!(reason = ?kind, "HTTP connection closed: {e}");
    }
    drop(registered);
}

/// Marks a request in progress on its connection while alive.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one request through the router: waits its turn among the concurrent requests, then
/// the handler, both within the request timeout (else 503).
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) -> Result<Response<Body>, Infallible> {
    let _in_flight = InFlight::new(conn);
    let mut router = shared.router.clone();
    let answer = tokio::time::timeout(shared.limits.request_timeout, async {
        let _turn = shared.handlers.acquire().await;
        poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx)).await?;
        router.call(req).await
    })
    .await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_elapsed) => {
            let mut r = Response::new(Body::from("the request took too long; try again later\n"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    shared.stats.answered(response.status().as_u16());
    Ok(response)
}
