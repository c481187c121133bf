//! Host memory telemetry: one collector per concern, each read through a configurable root so
//! a DaemonSet reads the host's `/proc` and `/sys`.
