//! HTTP server: `GET /` (a read-only HTML page, see [`page`]), `GET /events` (the recent events
//! as JSON, newest first, `?limit=N`, 100 by default), `GET /metrics` (Prometheus text format), `GET /healthz`.
//!
//! Any other path answers 404 with a short text body; another method on a known path
//! answers 405 with an `Allow` header. The server stops accepting connections when the
//! shutdown future completes and returns once in-flight requests are done.
//!
//! Connections are served by hyper (HTTP/1 only) under [`Limits`]: a cap on open connections,
//! a header timeout, a head size limit, a request timeout (see [`limits`] and [`accept`]);
//! the server's own counters are the `oomwatch_http_*` metrics.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::{TcpListener, TcpSocket};

use crate::host::HostCollectors;
use crate::sink::metrics::{Metrics, CONTENT_TYPE};
use crate::sink::recent::RecentEvents;

mod accept;
pub use accept::watch_hangup_early;
mod conn;
pub mod limits;
pub mod page;
pub mod renderer;
mod segments;
pub mod web_config;

pub use limits::{HttpStats, Limits};
pub use renderer::Renderer;
pub use web_config::{WebConfig, WebConfigError};

/// What the handlers read: the metrics, the recent events, the host collectors.
#[derive(Clone, Debug)]
pub struct ServerState {
    metrics: Arc<Metrics>,
    recent: Arc<RecentEvents>,
    host: Option<Arc<HostCollectors>>,
    node: Option<Arc<str>>,
    metrics_only: bool,
    /// The threads that render `/metrics`, `/` and `/events`; without them (the library's
    /// tests), the runtime's blocking pool.
    renderer: Option<Arc<Renderer>>,
}

impl ServerState {
    /// Serves `metrics`, with no recent events (an empty ring) and no host values.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ServerState {
            metrics,
            recent: Arc::new(RecentEvents::default()),
            host: None,
            node: None,
            metrics_only: false,
            renderer: None,
        }
    }

    /// Renders on `renderer`'s threads (below the event loop's priority), not the blocking
    /// pool.
    pub fn with_renderer(mut self, renderer: Arc<Renderer>) -> Self {
        self.renderer = Some(renderer);
        self
    }

    /// Runs `f` on the renderers (or the blocking pool), away from the HTTP thread.
    async fn render<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        match &self.renderer {
            Some(r) => r.run(f).await.map_err(|e| e.to_string()),
            None => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The ring the run loop pushes events to (shown at `/` and `/events`).
    pub fn with_recent(mut self, recent: Arc<RecentEvents>) -> Self {
        self.recent = recent;
        self
    }

    /// Host collectors whose snapshot and warnings the page shows.
    pub fn with_host(mut self, host: Arc<HostCollectors>) -> Self {
        self.host = Some(host);
        self
    }

    /// Serve only `/metrics` and `/healthz` when `on` (`/` and `/events` answer 404).
    pub fn metrics_only(mut self, on: bool) -> Self {
        self.metrics_only = on;
        self
    }

    /// The node name shown in the page's title.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Some(Arc::from(node));
        self
    }
}

impl From<Arc<Metrics>> for ServerState {
    fn from(metrics: Arc<Metrics>) -> Self {
        ServerState::new(metrics)
    }
}

/// Why the HTTP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {}", bind_hint(.error))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said (already described in the message).
        error: io::Error,
    },
    /// The server failed while running (accept loop error).
    #[error("HTTP server on {} failed: {error}", addr_or_unknown(.addr))]
    Serve {
        /// The address served, if the socket still knew it.
        addr: Option<SocketAddr>,
        /// What failed (already described in the message).
        error: io::Error,
    },
}

fn addr_or_unknown(a: &Option<SocketAddr>) -> String {
    a.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

/// The part of the bind error after the address: the cause in words, then the fix.
fn bind_hint(e: &io::Error) -> String {
    const FIX: &str = "choose another with --listen";
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("address already in use (another oomwatch?); {FIX}"),
        io::ErrorKind::PermissionDenied => {
            format!("permission denied (ports below 1024 need CAP_NET_BIND_SERVICE); {FIX}")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("address not available (not an address of this host); {FIX}")
        }
        _ => format!("{e}; {FIX}"),
    }
}

/// Binds the listening socket.
///
/// The error names the address and the fix, e.g. "cannot listen on 0.0.0.0:9837: address
/// already in use (another oomwatch?); choose another with --listen".
///
/// The listen backlog is [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`), not
/// the standard library's 128: a burst of connections (a flood, or many scrapers at once)
/// waits in the kernel's queue instead of having its SYNs dropped and retried a second later.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |error| ServerError::Bind { addr, error };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Connections the kernel queues for the accept loop.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Serves `/`, `/events`, `/metrics` and `/healthz` on `listener` until `shutdown` completes,
/// under the default [`Limits`].
///
/// Each scrape renders the metrics afresh (which also reads the eBPF counters), and each page
/// view reads the host files, on a blocking thread so neither stalls the runtime.
pub async fn serve(
    listener: TcpListener,
    state: impl Into<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with_limits(listener, state, Limits::default(), shutdown).await
}

/// [`serve`] under `limits`, with no TLS nor authentication.
pub async fn serve_with_limits(
    listener: TcpListener,
    state: impl Into<ServerState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(listener, state, limits, WebConfig::default(), shutdown).await
}

/// [`serve`] under `limits` and the web configuration `web` (TLS, basic authentication,
/// headers). The server's own counters (`oomwatch_http_*`) are added to the state's metrics,
/// so call this once per [`Metrics`].
pub async fn serve_with(
    listener: TcpListener,
    state: impl Into<ServerState>,
    limits: Limits,
    web: WebConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = state.into();
    let stats = Arc::new(HttpStats::default());
    state
        .metrics
        .add_collector(limits::collector(Arc::clone(&stats)));
    accept::serve(listener, router(state), limits, web, stats, shutdown).await;
    Ok(())
}

/// The routes, separate from the socket so they can be exercised on their own.
fn router(state: ServerState) -> Router {
    let r = Router::new();
    let r = match state.metrics_only {
        true => r,
        false => r.route("/", get(index)).route("/events", get(events)),
    };
    r.route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// A plain-text error answer.
fn text_error(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], body).into_response()
}

/// A page or document that changes at every event: never cached.
/// Its bytes are this request's alone: they draw on the answer budget until written.
fn fresh(content_type: &'static str, body: String) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    r.extensions_mut().insert(conn::Owned);
    r
}

async fn index(State(state): State<ServerState>) -> Response {
    let s = state.clone();
    let render = move || {
        let state = s;
        let host = state.host.as_ref().map(|h| h.snapshot());
        let events = state.recent.snapshot();
        let probes = state.metrics.probes();
        page::render(&page::Page {
            node: state.node.as_deref(),
            version: env!("CARGO_PKG_VERSION"),
            events: &events,
            seen: state.recent.seen(),
            capacity: state.recent.capacity(),
            host: host.as_ref(),
            probes: &probes,
            now: SystemTime::now(),
        })
    };
    match state.render(render).await {
        Ok(body) => fresh("text/html; charset=utf-8", body),
        Err(e) => text_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("rendering the page failed: {e}\n"),
        ),
    }
}

/// `limit` of the query string: `None` when absent, an error text when not a number.
fn limit_param(query: Option<&str>) -> Result<Option<usize>, String> {
    let Some(q) = query else {
        return Ok(None);
    };
    let mut limit = None;
    for pair in q.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "limit" {
            let n = value.parse::<usize>().map_err(|_| {
                format!("invalid limit {value:?}: expected a non-negative integer, e.g. /events?limit=10\n")
            })?;
            limit = Some(n);
        }
    }
    Ok(limit)
}

/// Events `/events` answers without `?limit=` (the ring may keep up to 10,000).
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

async fn events(State(state): State<ServerState>, uri: Uri) -> Response {
    let limit = match limit_param(uri.query()) {
        Ok(l) => l.unwrap_or(DEFAULT_EVENTS_LIMIT),
        Err(msg) => return text_error(StatusCode::BAD_REQUEST, msg),
    };
    let recent = Arc::clone(&state.recent);
    let json = move || serde_json::to_string(&recent.latest(limit));
    match state.render(json).await {
        Ok(Ok(body)) => fresh("application/json", body),
        Ok(Err(e)) => text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing events failed: {e}\n"),
        ),
        Err(e) => text_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("serializing events failed: {e}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    let metrics = Arc::clone(&state.metrics);
    match state.render(move || metrics.render_segments()).await {
        Ok(parts) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            axum::body::Body::new(segments::Segments::new(parts)),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            axum::body::Body::from(format!("rendering metrics failed: {e}\n")),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; try /, /events, /metrics or /healthz\n",
    )
}

async fn method_not_allowed() -> (StatusCode, &'static str) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; use GET\n",
    )
}

#[cfg(test)]
mod tests {
    use super::limit_param;

    #[test]
    fn limit_from_the_query_string() {
        assert_eq!(limit_param(None), Ok(None));
        assert_eq!(limit_param(Some("")), Ok(None));
        assert_eq!(limit_param(Some("limit=3")), Ok(Some(3)));
        assert_eq!(limit_param(Some("x=1&limit=0")), Ok(Some(0)));
        assert!(limit_param(Some("limit=-1")).is_err());
        assert!(limit_param(Some("limit")).is_err());
        assert!(limit_param(Some("limit=99999999999999999999999")).is_err());
    }
}
