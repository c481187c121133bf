//! Where records go: JSON lines on stdout, Prometheus metrics.
pub mod json;
pub mod metrics;
pub mod missed;
