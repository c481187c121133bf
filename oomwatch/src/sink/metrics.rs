//! Prometheus metrics (filled by the metrics work).
