//! BTF reader (filled by the BTF work).
