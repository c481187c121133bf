//! JSON lines: one object per victim, one line each, flushed at once (docs/events.md).
use std::io::{self, Write};

use crate::record::OomEvent;

/// Writes events as JSON lines.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes and flushes one line, so a reader sees each kill as it happens.
    pub fn write(&mut self, ev: &OomEvent) -> io::Result<()> {
        let mut line = ev.to_json_line();
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }

    /// Writes and flushes one line of other JSON (the kill-lifecycle records).
    pub fn write_line(&mut self, json: &str) -> io::Result<()> {
        self.out.write_all(json.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn one_line_per_event() {
        let ev = OomEvent {
            time: SystemTime::UNIX_EPOCH,
            ktime_ns: 1,
            comm: Some("a\nb".into()),
            ..OomEvent::new(1, 1, SystemTime::UNIX_EPOCH, "h".into())
        };
        let mut w = JsonLines::new(Vec::new());
        w.write(&ev).unwrap();
        w.write(&ev).unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(text.lines().count(), 2, "a newline in comm is escaped");
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["comm"], "a\nb");
        }
    }
}
