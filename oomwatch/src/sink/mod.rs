//! Where records go: JSON lines on stdout, Prometheus metrics, the recent-events ring.
pub mod json;
pub mod metrics;
pub mod missed;
pub mod recent;
