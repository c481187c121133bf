//! HTTP server (filled by the server work).
