//! The task table of an OOM report (`vm.oom_dump_tasks=1`), mapped by column *name*.
//!
//! Headers across versions (`dump_tasks()` in `mm/oom_kill.c`):
//!
//! ```text
//! 2.6.32 (RHEL 6), 3.x  [ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name
//! 4.14                  [ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name
//! 4.15–4.18             [ pid ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
//! 4.19–6.7              [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
//! 6.8+                  [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
//! ```
//!
//! and rows such as `[  12355]     0 12355    17037    16735    16320      415         0   172032        0           500 tail`.
//! The name is the rest of the row after the last numeric column and one space, so it may hold
//! spaces.
use super::report::{DumpRow, TaskDump};

/// Rows kept per table; further rows are counted in [`TaskDump::dropped_rows`].
pub const MAX_DUMP_ROWS: usize = 100_000;

/// The longest task name accepted in a row. The kernel's `comm` is at most 15 bytes; a longer
/// name means the line is not a task row.
pub const MAX_NAME_BYTES: usize = 64;

/// Columns more than this are not a task table header.
const MAX_COLUMNS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Uid,
    Tgid,
    TotalVm,
    Rss,
    RssAnon,
    RssFile,
    RssShmem,
    PgtablesBytes,
    NrPtes,
    NrPmds,
    Swapents,
    OomScoreAdj,
    Other,
}

/// A table being collected.
#[derive(Debug)]
pub struct DumpState {
    /// Numeric columns after the bracketed pid, in order (the name column is last).
    columns: Vec<Column>,
    dump: TaskDump,
}

/// `"[ pid ]"` or `"[  pid  ]"` followed by column names ending in `name`.
pub fn parse_header(line: &str) -> Option<DumpState> {
    let rest = line.strip_prefix('[')?;
    let (pid, rest) = rest.split_once(']')?;
    if pid.trim() != "pid" {
        return None;
    }
    let names: Vec<&str> = rest.split_whitespace().collect();
    if names.len() > MAX_COLUMNS || names.last() != Some(&"name") {
        return None;
    }
    let columns: Vec<Column> = names[..names.len() - 1]
        .iter()
        .map(|n| match *n {
            "uid" => Column::Uid,
            "tgid" => Column::Tgid,
            "total_vm" => Column::TotalVm,
            "rss" => Column::Rss,
            "rss_anon" => Column::RssAnon,
            "rss_file" => Column::RssFile,
            "rss_shmem" => Column::RssShmem,
            "pgtables_bytes" => Column::PgtablesBytes,
            "nr_ptes" => Column::NrPtes,
            "nr_pmds" => Column::NrPmds,
            "swapents" => Column::Swapents,
            "oom_score_adj" => Column::OomScoreAdj,
            _ => Column::Other,
        })
        .collect();
    for needed in [Column::Uid, Column::Tgid, Column::TotalVm, Column::Rss] {
        if !columns.contains(&needed) {
            return None;
        }
    }
    Some(DumpState {
        columns,
        dump: TaskDump::default(),
    })
}

/// True for a line shaped like a task row: `[`, optional spaces, digits, `]`.
pub fn looks_like_row(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let rest = rest.trim_start_matches(' ');
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest.as_bytes().get(digits) == Some(&b']')
}

impl DumpState {
    /// Adds one row (a line for which [`looks_like_row`] is true).
    pub fn push_row(&mut self, line: &str) {
        if self.dump.rows.len() >= MAX_DUMP_ROWS {
            self.dump.dropped_rows += 1;
            return;
        }
        match parse_row(&self.columns, line) {
            Some(row) => self.dump.rows.push(row),
            None => self.dump.malformed_rows += 1,
        }
    }

    /// The finished table.
    pub fn finish(self) -> TaskDump {
        self.dump
    }
}

fn parse_row(columns: &[Column], line: &str) -> Option<DumpRow> {
    let rest = line.strip_prefix('[')?;
    let (pid, mut rest) = rest.split_once(']')?;
    let pid = i32::try_from(pid.trim_start().parse::<i64>().ok()?).ok()?;
    let mut row = DumpRow {
        pid,
        uid: 0,
        tgid: 0,
        total_vm_pages: 0,
        rss_pages: 0,
        rss_anon_pages: None,
        rss_file_pages: None,
        rss_shmem_pages: None,
        pgtables_bytes: None,
        nr_ptes: None,
        nr_pmds: None,
        swapents: None,
        oom_score_adj: None,
        name: String::new(),
    };
    for col in columns {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let token = &trimmed[..end];
        rest = &trimmed[end..];
        let v: i64 = token.parse().ok()?;
        let unsigned = || u64::try_from(v).ok();
        match col {
            Column::Uid => row.uid = super::lines::leading_uid(token)?,
            Column::Tgid => row.tgid = i32::try_from(v).ok()?,
            Column::TotalVm => row.total_vm_pages = unsigned()?,
            Column::Rss => row.rss_pages = unsigned()?,
            Column::RssAnon => row.rss_anon_pages = Some(unsigned()?),
            Column::RssFile => row.rss_file_pages = Some(unsigned()?),
            Column::RssShmem => row.rss_shmem_pages = Some(unsigned()?),
            Column::PgtablesBytes => row.pgtables_bytes = Some(unsigned()?),
            Column::NrPtes => row.nr_ptes = Some(unsigned()?),
            Column::NrPmds => row.nr_pmds = Some(unsigned()?),
            Column::Swapents => row.swapents = Some(unsigned()?),
            Column::OomScoreAdj => row.oom_score_adj = Some(i16::try_from(v).ok()?),
            Column::Other => {}
        }
    }
    // "%5hd %s": exactly one space before the name, which may itself start with spaces.
    let name = rest.strip_prefix(' ')?;
    if name.len() > MAX_NAME_BYTES {
        return None;
    }
    row.name = name.to_string();
    Some(row)
}
