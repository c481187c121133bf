//! What the HTTP server allows a client ([`Limits`]) and its own health counters
//! ([`HttpStats`], exposed as the `oomwatch_http_*` families, see `docs/metrics.md`).
//!
//! The limits keep memory and file descriptors bounded whatever the clients do: at most
//! [`Limits::max_connections`] sockets are open (plus the one being accepted), each reads at
//! most [`Limits::max_header_bytes`] of request head, a head must arrive within
//! [`Limits::header_read_timeout`] (which also closes idle keep-alive connections), and at most
//! [`Limits::max_concurrent_requests`] requests are handled at once, each within
//! [`Limits::request_timeout`], and each answer must be written within
//! [`Limits::write_timeout`] into a send buffer of [`Limits::send_buffer_bytes`].
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use crate::sink::metrics::prom::{counter, family, gauge};

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The smallest head buffer hyper accepts (it panics below this).
const MIN_HEADER_BYTES: usize = 8192;

/// Limits on what one client, and all clients together, can make the server hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most. A new connection beyond it closes the oldest connection that
    /// has no request in progress (preferring one that never completed a request); when every
    /// connection is busy, the new one is closed at once.
    pub max_connections: usize,
    /// Time a client has to send a whole request head, from the connection's start or the end
    /// of the previous response: slow (slowloris) and idle keep-alive connections are closed
    /// after it.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers read at most; more is answered 431 (414 for the
    /// request line alone) and the connection is closed. At least 8192.
    pub max_header_bytes: usize,
    /// Time a handler has to produce its response before the request is answered 503.
    pub request_timeout: Duration,
    /// Requests handled at once (over all connections); the others wait their turn, within
    /// their `request_timeout`.
    pub max_concurrent_requests: usize,
    /// At shutdown (and when a connection is closed to make room), how long a request already
    /// in progress may take to finish before its connection is dropped.
    pub shutdown_grace: Duration,
    /// Time an answer has, from its handler's return, to be written to the last byte into the
    /// kernel's send buffer; a client that does not read it is reset after it.
    pub write_timeout: Duration,
    /// The kernel send buffer of each connection (`SO_SNDBUF`; the kernel doubles it).
    pub send_buffer_bytes: usize,
    /// Bytes of answers built for one request (`/`, `/events`) all connections may hold until
    /// written; an answer beyond it is replaced by a 503.
    pub max_answer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 4,
            shutdown_grace: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            send_buffer_bytes: 32 * 1024,
            max_answer_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// The defaults with `max_connections` open connections at most (at least 1).
    pub fn with_max_connections(self, max_connections: usize) -> Self {
        Limits {
            max_connections: max_connections.max(1),
            ..self
        }
    }

    /// The same limits with every value in the range the server can use (no zero counts, a
    /// head buffer hyper accepts).
    pub(crate) fn sanitized(self) -> Self {
        Limits {
            max_connections: self.max_connections.max(1),
            max_header_bytes: self.max_header_bytes.max(MIN_HEADER_BYTES),
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            send_buffer_bytes: self.send_buffer_bytes.max(4096),
            ..self
        }
    }
}

/// Why a connection ended with an error (the `reason` label of
/// `oomwatch_http_connection_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ConnError {
    /// No complete request head within the header timeout (slow or idle client).
    HeaderTimeout,
    /// Request head larger than the limit (answered 431 or 414).
    HeaderTooLarge,
    /// Bytes that are not HTTP/1 (answered 400 when possible).
    Malformed,
    /// The client went away mid-request, or a socket error.
    Io,
    /// An answer not read by the client within the write timeout (the connection is reset).
    WriteTimeout,
    /// A TLS handshake that failed or did not finish within the header timeout.
    TlsHandshake,
}

impl ConnError {
    const ALL: [ConnError; 6] = [
        ConnError::HeaderTimeout,
        ConnError::HeaderTooLarge,
        ConnError::Malformed,
        ConnError::Io,
        ConnError::WriteTimeout,
        ConnError::TlsHandshake,
    ];

    pub(crate) fn of(e: &hyper::Error) -> ConnError {
        if e.is_timeout() {
            ConnError::HeaderTimeout
        } else if e.is_parse_too_large() {
            ConnError::HeaderTooLarge
        } else if e.is_parse() {
            ConnError::Malformed
        } else {
            ConnError::Io
        }
    }

    fn label(self) -> &'static str {
        match self {
            ConnError::HeaderTimeout => "header_timeout",
            ConnError::HeaderTooLarge => "header_too_large",
            ConnError::Malformed => "malformed",
            ConnError::Io => "io",
            ConnError::WriteTimeout => "write_timeout",
            ConnError::TlsHandshake => "tls_handshake",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The server's own counters, shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub struct HttpStats {
    open: AtomicU64,
    accepted: AtomicU64,
    evicted: AtomicU64,
    rejected: AtomicU64,
    accept_errors: AtomicU64,
    errors: [AtomicU64; 6],
    over_budget: AtomicU64,
    /// Answers by status code: the router only produces a handful of codes.
    requests: Mutex<BTreeMap<u16, u64>>,
}

impl HttpStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn set_open(&self, n: usize) {
        self.open
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn conn_error(&self, e: ConnError) {
        self.errors[e.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn over_budget(&self) {
        self.over_budget.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *r.entry(status).or_insert(0) += 1;
    }

    /// The `oomwatch_http_*` families, for `Metrics::add_collector`.
    pub fn families(&self) -> Vec<MetricFamily> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let requests: Vec<Metric> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(code, n)| counter(&[("code", &code.to_string())], *n as f64))
            .collect();
        let errors = ConnError::ALL
            .iter()
            .map(|e| counter(&[("reason", e.label())], get(&self.errors[e.index()])))
            .collect();
        vec![
            family(
                "oomwatch_http_accept_errors_total",
                "Failed accepts of the HTTP listener (e.g. out of file descriptors); the server \
                 backs off 100 ms after each.",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.accept_errors))],
            ),
            family(
                "oomwatch_http_connection_errors_total",
                "HTTP connections that ended in error, by reason: header_timeout (no complete \
                 request head in time: slow or idle clients), header_too_large (431/414), \
                 malformed (400), io (client gone, socket error), write_timeout (an answer \
                 not read within 10 s: the connection is reset), tls_handshake (failed or \
                 not done within 5 s).",
                MetricType::COUNTER,
                errors,
            ),
            family(
                "oomwatch_http_answers_over_budget_total",
                "Answers of / and /events replaced by a 503 because the answers not yet read \
                 by their clients already held 16 MiB.",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.over_budget))],
            ),
            family(
                "oomwatch_http_connections",
                "HTTP connections open now (at most --max-connections).",
                MetricType::GAUGE,
                vec![gauge(&[], get(&self.open))],
            ),
            family(
                "oomwatch_http_connections_accepted_total",
                "HTTP connections accepted.",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.accepted))],
            ),
            family(
                "oomwatch_http_connections_evicted_total",
                "HTTP connections without a request in progress closed to make room for a new \
                 one at --max-connections.",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.evicted))],
            ),
            family(
                "oomwatch_http_connections_rejected_total",
                "New HTTP connections closed at once: --max-connections open and all of them \
                 busy with a request.",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.rejected))],
            ),
            family(
                "oomwatch_http_requests_total",
                "HTTP requests answered by the handlers, by status code (503: handler timed \
                 out). Requests hyper refuses itself (400, 414, 431) are in \
                 oomwatch_http_connection_errors_total.",
                MetricType::COUNTER,
                requests,
            ),
        ]
    }
}

/// A collector of `stats` for `Metrics::add_collector`.
pub fn collector(stats: Arc<HttpStats>) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || stats.families())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::metrics::{BuildInfo, Metrics};

    #[test]
    fn limits_are_sanitized() {
        let l = Limits {
            max_connections: 0,
            max_header_bytes: 10,
            max_concurrent_requests: 0,
            ..Limits::default()
        }
        .sanitized();
        assert_eq!(l.max_connections, 1);
        assert_eq!(l.max_header_bytes, 8192);
        assert_eq!(l.max_concurrent_requests, 1);
        assert_eq!(Limits::default().with_max_connections(0).max_connections, 1);
    }

    #[test]
    fn stats_render_as_prometheus_text() {
        let stats = Arc::new(HttpStats::default());
        stats.set_open(3);
        stats.accepted();
        stats.evicted();
        stats.conn_error(ConnError::HeaderTimeout);
        stats.answered(200);
        stats.answered(200);
        stats.answered(404);
        let m = Metrics::new(
            1,
            BuildInfo {
                version: "0",
                git_commit: "t",
            },
        );
        m.add_collector(collector(Arc::clone(&stats)));
        let text = m.render();
        for line in [
            "oomwatch_http_connections 3\n",
            "oomwatch_http_connections_accepted_total 1\n",
            "oomwatch_http_connections_evicted_total 1\n",
            "oomwatch_http_connections_rejected_total 0\n",
            "oomwatch_http_connection_errors_total{reason=\"header_timeout\"} 1\n",
            "oomwatch_http_connection_errors_total{reason=\"malformed\"} 0\n",
            "oomwatch_http_requests_total{code=\"200\"} 2\n",
            "oomwatch_http_requests_total{code=\"404\"} 1\n",
            "# TYPE oomwatch_http_connections gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
    }
}
