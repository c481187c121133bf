//! The accept loop: HTTP/1 connections served by hyper under the [`Limits`], so hostile
//! clients cannot make the agent hold unbounded memory or file descriptors.
//!
//! * Every open connection is in a registry (oldest first). A connection accepted at
//!   `max_connections` makes the oldest connection with no request in progress close at once
//!   (one that never completed a request first: a slow or idle client rather than a scraper
//!   between scrapes); the accept loop waits for it to go (at most [`EVICT_WAIT`]) before it
//!   accepts again. So at most `max_connections + 1` sockets are open, and a well-behaved
//!   client that connects and sends its request right away is served even while the table is
//!   full of idle or slow connections. When none is idle, the one whose answer has waited
//!   longest (over [`SLOW_READER`]) for its reader is reset; else the new one is closed.
//! * A request is in progress until its answer's last byte is in the kernel's hands, which
//!   must happen within `write_timeout` of the handler's answer, else the connection is reset
//!   (see [`super::conn`]). `/healthz` does not wait for a handler turn.
//! * Accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) are counted and followed by a
//!   [`ACCEPT_BACKOFF`] pause instead of a busy loop.
//! * At shutdown the listener is closed, connections without a request in progress are closed
//!   at once, the others get `shutdown_grace` to finish their answer.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::conn::{self, Conn, InFlight, Owned, Tracked, Watched};
use super::limits::{ConnError, HttpStats, Limits};
use super::web_config::WebConfig;

/// Longest wait of the accept loop for an evicted connection to close.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Pause after a failed accept (out of file descriptors, of memory, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An answer unread this long may be reset to make room for a new connection at the cap.
const SLOW_READER: Duration = Duration::from_secs(1);

/// The open connections, by accept order.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Woken whenever a connection leaves the registry.
    gone: Notify,
    next_id: AtomicU64,
    stats: Arc<HttpStats>,
    /// Bytes of [`Owned`] answers held by all connections.
    budget: Arc<AtomicUsize>,
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
        let conn = Arc::new(Conn::new(Arc::clone(&self.budget)));
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
    /// request, else the oldest idle one, else (to be reset) the one whose answer has been
    /// waiting longest for its reader, if for more than [`SLOW_READER`]; none when all are
    /// busy or already closing.
    fn victim(&self, write_timeout: Duration) -> Option<(Arc<Conn>, bool)> {
        let conns = self.lock();
        let open = || conns.values().filter(|c| !c.closing());
        let idle = || open().filter(|c| c.idle());
        if let Some(c) = idle().find(|c| c.served() == 0).or_else(|| idle().next()) {
            return Some((Arc::clone(c), false));
        }
        let slow_before = Instant::now() + write_timeout.saturating_sub(SLOW_READER);
        open()
            .filter_map(|c| Some((c.deadline()?, c)))
            .filter(|(d, _)| *d <= slow_before)
            .min_by_key(|(d, _)| *d)
            .map(|(_, c)| (Arc::clone(c), true))
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
        self.conn.release();
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
    /// The web configuration now (replaced when its file is reloaded, see [`reload`]).
    web: RwLock<Arc<WebConfig>>,
}

impl Shared {
    fn web(&self) -> Arc<WebConfig> {
        Arc::clone(&self.web.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    web: WebConfig,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = limits.sanitized();
    conn::cap_segment_size(listener.as_raw_fd(), limits.send_buffer_bytes);
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
        web: RwLock::new(Arc::new(web)),
    });
    let reloader = tokio::spawn(reload(Arc::clone(&shared)));
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
    reloader.abort();

    registry.close_all();
    let deadline = Instant::now() + limits.shutdown_grace + Duration::from_millis(100);
    if !registry.wait_below(1, deadline).await {
        tracing::debug!(
            open = registry.len(),
            "HTTP server: connections still open at shutdown are dropped"
        );
    }
}

/// SIGHUP, watched from start-up on ([`watch_hangup_early`]) for the reloader to take.
static EARLY_HANGUP: std::sync::OnceLock<std::sync::Mutex<Option<tokio::signal::unix::Signal>>> =
    std::sync::OnceLock::new();

/// Starts watching SIGHUP now (inside the runtime), so that one sent before the server's
/// reloader runs is neither fatal (the default action) nor lost: the reloader takes this stream.
pub fn watch_hangup_early() -> std::io::Result<()> {
    let s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let _ = EARLY_HANGUP.set(std::sync::Mutex::new(Some(s)));
    Ok(())
}

/// How often the web configuration file is checked for a change.
const RELOAD_POLL: Duration = Duration::from_secs(5);

/// Reloads the web configuration on SIGHUP and when its file or a file it names (certificate,
/// key, client CA) changes (modification time, size or inode, through symbolic links as a
/// Kubernetes Secret volume swaps them): new connections and requests get the new one. A file that does not load is a
/// warning; the one in use stays.
async fn reload(shared: Arc<Shared>) {
    let early = EARLY_HANGUP
        .get()
        .and_then(|m| m.lock().unwrap_or_else(|p| p.into_inner()).take());
    let Some(path) = shared.web().path.clone() else {
        // SIGHUP's default would end the agent: an operator's `kill -HUP` (the exporters'
        // reload) must not lose kills.
        let hup = early.map(Ok).unwrap_or_else(|| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        });
        if let Ok(mut hup) = hup {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload (no --web.config.file)");
            }
        }
        return;
    };
    let stamp = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
    };
    let hup = early
        .map(Ok)
        .unwrap_or_else(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()));
    let mut hup = match hup {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "cannot watch SIGHUP for --web.config.file: {e}; reloading on change only"
            );
            None
        }
    };
    let stamps = |shared: &Shared| {
        shared
            .web()
            .files
            .iter()
            .map(|f| stamp(f))
            .collect::<Vec<_>>()
    };
    let mut seen = stamps(&shared);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            () = tokio::time::sleep(RELOAD_POLL) => {
                let now = stamps(&shared);
                if now == seen {
                    continue;
                }
                seen = now;
                "file changed"
            }
        };
        match WebConfig::load(&path) {
            Ok(web) => {
                *shared.web.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(web);
                seen = stamps(&shared);
                tracing::info!(reason = why, "web configuration reloaded");
            }
            Err(e) => tracing::warn!(reason = why, "{e}; keeping the web configuration in use"),
        }
    }
}

/// Closes the connection [`Registry::victim`] picks and waits for it to go; false when there
/// is none or it did not go in time.
async fn make_room(registry: &Registry, limits: &Limits) -> bool {
    let Some((victim, slow)) = registry.victim(limits.write_timeout) else {
        return false;
    };
    if slow {
        victim.tell_to_reset();
    } else {
        victim.tell_to_close();
    }
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

/// Serves one connection (after its TLS handshake, within the header timeout, when the web
/// configuration asks for TLS).
async fn connection(stream: TcpStream, registered: Registered, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    conn::cap_send_buffer(fd, shared.limits.send_buffer_bytes);
    let Some(acceptor) = shared.web().tls.clone().map(TlsAcceptor::from) else {
        return serve_io(stream, fd, registered, shared).await;
    };
    let timeout = shared.limits.header_read_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_io(tls, fd, registered, shared).await,
        Ok(Err(e)) => {
            shared.stats.conn_error(ConnError::TlsHandshake);
            tracing::debug!("HTTP connection closed: TLS handshake failed: {e}");
        }
        Err(_) => {
            shared.stats.conn_error(ConnError::TlsHandshake);
            tracing::debug!("HTTP connection closed: no TLS handshake within {timeout:?}");
        }
    }
}

/// Serves one connection until it ends, the client misbehaves, it is told to close, or an
/// answer is not written by its deadline (then the connection is reset, dropping what the
/// kernel still holds for it).
async fn serve_io<S>(stream: S, fd: RawFd, registered: Registered, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(&registered.conn);
    let service = {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(req, Arc::clone(&shared), Arc::clone(&conn))
        })
    };
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&conn)));
    let mut http = pin!(shared.http.serve_connection(io, service));
    let result = loop {
        let deadline = conn.deadline();
        let overdue = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = http.as_mut() => break r,
            () = conn.armed.notified() => {}
            () = overdue => if conn.overdue(Instant::now()) {
                shared.stats.conn_error(ConnError::WriteTimeout);
                tracing::debug!("HTTP connection reset: its answer was not read in time");
                conn::reset_on_close(fd);
                break Ok(());
            },
            () = conn.close.notified() => {
                if conn.idle() {
                    break Ok(());
                }
                if !conn.resetting() {
                    http.as_mut().graceful_shutdown();
                    if let Ok(r) = tokio::time::timeout(shared.limits.shutdown_grace, http.as_mut()).await {
                        break r;
                    }
                }
                conn::reset_on_close(fd);
                break Ok(());
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

/// Runs one request through the router: waits its turn among the concurrent requests, then
/// the handler, both within the request timeout (else 503).
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) -> Result<Response<Body>, Infallible> {
    let mark = InFlight::new(Arc::clone(&conn));
    let mut router = shared.router.clone();
    // /healthz waits for no turn: a flood of scrapes never fails liveness.
    let queued = req.uri().path() != "/healthz";
    let answer = tokio::time::timeout(shared.limits.request_timeout, async {
        let _turn = match queued {
            true => Some(shared.handlers.acquire().await),
            false => None,
        };
        // Within the turn: a flood of wrong passwords costs at most the handlers' bcrypt time.
        if queued && !authorized(&shared, &req).await {
            return Ok(unauthorized());
        }
        poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx)).await?;
        router.call(req).await
    })
    .await;
    let mut response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_elapsed) => unavailable("the request took too long; try again later\n"),
    };
    if response.extensions().get::<Owned>().is_some() {
        let size = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if !conn.hold(size, shared.limits.max_answer_bytes) {
            shared.stats.over_budget();
            response = unavailable("too many answers are being sent; try again later\n");
        }
    }
    shared.stats.answered(response.status().as_u16());
    decorate(response.headers_mut(), &shared.web().headers);
    conn.arm(shared.limits.write_timeout);
    Ok(response.map(|body| Body::new(Tracked::new(body, mark))))
}

/// Whether the request may be answered: no basic authentication configured, or right
/// credentials (bcrypt is checked on a blocking thread).
async fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(auth) = shared.web().auth.clone() else {
        return true;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    tokio::task::spawn_blocking(move || auth.allows(header.as_deref()))
        .await
        .unwrap_or(false)
}

fn unauthorized() -> Response<Body> {
    let mut r = Response::new(Body::from("unauthorized\n"));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"oomwatch\""),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers on every answer: no scripts, frames, sniffing or referrers (the page has none of
/// its own), then those of the web configuration (which may replace them).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

fn decorate(h: &mut header::HeaderMap, configured: &[(header::HeaderName, header::HeaderValue)]) {
    for (k, v) in SECURITY_HEADERS {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    for (k, v) in configured {
        h.insert(k.clone(), v.clone());
    }
}

/// A 503 with `text`.
fn unavailable(text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
