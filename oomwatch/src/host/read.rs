//! Reading the host's files: bounded, invalid UTF-8 replaced, absence told apart from failure.
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Files larger than this are refused: every file read here is a few kB to a few MB
/// (`/proc/zoneinfo` on a large machine); a bigger one means the root points somewhere wrong.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a collector (or [`super::kernel_oom_kills`]) could not produce its values.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl HostError {
    pub(crate) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        HostError::Parse {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads a whole file (at most [`MAX_FILE_BYTES`]), replacing invalid UTF-8.
pub(crate) fn read_text_io(path: &Path) -> io::Result<Result<String, HostError>> {
    let file = File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Ok(Err(HostError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        }));
    }
    Ok(Ok(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads a file the collector needs.
pub(crate) fn read_text(path: &Path) -> Result<String, HostError> {
    read_text_io(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })?
}

/// Reads a file that may legitimately be absent (`None` when it does not exist).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, HostError> {
    match read_text_io(path) {
        Ok(r) => r.map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}
