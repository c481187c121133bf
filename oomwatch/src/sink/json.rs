//! JSON-lines writer.
