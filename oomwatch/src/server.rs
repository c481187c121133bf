//! HTTP server: `GET /metrics` (Prometheus text format), `GET /healthz`.
//!
//! Any other path answers 404 with a short text body; another method on a known path
//! answers 405 with an `Allow` header. The server stops accepting connections when the
//! shutdown future completes and returns once in-flight requests are done.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::sink::metrics::{Metrics, CONTENT_TYPE};

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
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
///
/// Each scrape renders `metrics` afresh (which also reads the eBPF counters), on a blocking
/// thread so a large exposition does not stall the runtime.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().ok();
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| ServerError::Serve { addr, error })
}

/// The routes, separate from the socket so they can be exercised on their own.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(metrics)
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("rendering metrics failed: {e}\n"),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; try /metrics or /healthz\n",
    )
}

async fn method_not_allowed() -> (StatusCode, &'static str) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; use GET\n",
    )
}
