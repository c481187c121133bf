//! JSON lines: one object per victim, one line each, flushed at once (docs/events.md).
use std::io::{self, Write};

use crate::event::OomEvent;

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

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    #[test]
    fn one_line_per_event() {
        let ev = OomEvent {
            time: SystemTime::UNIX_EPOCH,
            ktime_ns: 1,
            host: "h".into(),
            pid: 1,
            tgid: None,
            comm: Some("a\nb".into()),
            uid: None,
            total_vm: None,
            anon_rss: None,
            file_rss: None,
            shmem_rss: None,
            pgtables: None,
            oom_score_adj: None,
            cgroup: None,
            cgroup_id: None,
            trigger: None,
            victim: crate::event::Victim::default(),
            already_exiting: None,
            panic_on_oom: None,
            oom_kill_allocating_task: None,
            allocating_task_kill: None,
            oom_id: None,
            oom: crate::event::OomContext::default(),
            sources: BTreeMap::new(),
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
