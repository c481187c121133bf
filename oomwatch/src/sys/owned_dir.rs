//! A directory only the agent writes (`--state-dir`), used through a descriptor so nothing
//! planted in it is ever followed: every file is opened relative to the directory with
//! `O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK` (a FIFO never blocks the open), must be a regular
//! file owned by the agent's uid, is read with a size limit, and is created with `O_EXCL`
//! (mode 0600) under a temporary name and renamed into place.
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An open directory that only its owner, the agent's uid, can write.
#[derive(Debug)]
pub struct OwnedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The agent's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain file name",
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Why `meta` is not an acceptable file of the agent's own, if it is not.
fn refuse_file(meta: &std::fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    if !ft.is_file() {
        return Some(format!("is not a regular file ({})", kind_of(ft)));
    }
    if meta.uid() != euid() {
        return Some(format!(
            "is owned by uid {}, not the agent's uid {}",
            meta.uid(),
            euid()
        ));
    }
    None
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        () if ft.is_dir() => "a directory",
        () if ft.is_fifo() => "a FIFO",
        () if ft.is_char_device() => "a character device",
        () if ft.is_block_device() => "a block device",
        () if ft.is_socket() => "a socket",
        () if ft.is_symlink() => "a symbolic link",
        () => "not a file",
    }
}

impl OwnedDir {
    /// Creates `path` (mode 0700) if needed and opens it. Refused when it is not a directory,
    /// not owned by the agent's uid, or writable by group or others (anyone else could plant
    /// files in it).
    pub fn open(path: &Path) -> io::Result<OwnedDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path"))?;
        // SAFETY: a valid NUL-terminated path; the returned descriptor is checked below.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let meta = File::from(fd.try_clone()?).metadata()?;
        let mode = meta.permissions().mode();
        if meta.uid() != euid() {
            return Err(other(format!(
                "owned by uid {}, not the agent's uid {}",
                meta.uid(),
                euid()
            )));
        }
        if mode & 0o022 != 0 {
            return Err(other(format!(
                "writable by others (mode {:o}): chmod go-w it",
                mode & 0o7777
            )));
        }
        Ok(OwnedDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat(&self, name: &str, flags: libc::c_int) -> io::Result<File> {
        let c = c_name(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: a valid directory descriptor and NUL-terminated name; mode is used only
        // with O_CREAT.
        let raw = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o600) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nobody else.
        Ok(unsafe { File::from_raw_fd(raw) })
    }

    /// Opens `name` for reading and writing if it is a regular file of the agent's own;
    /// `Ok(None)` when it does not exist. The error says what it is instead.
    pub fn open_own(&self, name: &str) -> io::Result<Option<File>> {
        let f = match self.openat(name, libc::O_RDWR) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Opening a directory or a device for writing fails: say what it is.
            Err(e) => return Err(self.describe(name).unwrap_or_else(|| explain(e))),
        };
        match refuse_file(&f.metadata()?) {
            Some(why) => Err(other(why)),
            None => Ok(Some(f)),
        }
    }

    /// What `name` is, when it is not an acceptable file (without following it).
    fn describe(&self, name: &str) -> Option<io::Error> {
        let f = self.openat(name, libc::O_PATH).ok()?;
        refuse_file(&f.metadata().ok()?).map(other)
    }

    /// The content of `name`, at most `max` bytes; `Ok(None)` when it does not exist. An
    /// error when it is not a regular file of the agent's own or is larger than `max`.
    pub fn read_own(&self, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let f = match self.openat(name, libc::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(explain(e)),
        };
        let meta = f.metadata()?;
        if let Some(why) = refuse_file(&meta) {
            return Err(other(why));
        }
        if meta.len() > max {
            return Err(other(format!(
                "is larger than {max} bytes ({} bytes)",
                meta.len()
            )));
        }
        let mut out = Vec::new();
        f.take(max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(other(format!("is larger than {max} bytes")));
        }
        Ok(Some(out))
    }

    /// Creates `name` anew (`O_EXCL`, mode 0600), for reading and writing. Whatever was at
    /// that name (a stale file, a planted link) is unlinked first, never followed.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        match self.openat(name, flags) {
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                self.remove(name)?;
                self.openat(name, flags)
            }
            r => r,
        }
    }

    /// Renames `from` to `to` within the directory (replacing `to`, whatever it is, without
    /// following it).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        let d = self.fd.as_raw_fd();
        // SAFETY: a valid directory descriptor and NUL-terminated names.
        if unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unlinks `name` (a link itself, never its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `O_NOFOLLOW`'s refusal in words.
fn explain(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => other("is a symbolic link (not followed)".into()),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_fifos_and_big_files_are_refused_and_replaced() {
        let t = tempfile::tempdir().unwrap();
        let d = OwnedDir::open(&t.path().join("s")).unwrap();
        assert_eq!(
            std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let target = t.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        symlink(&target, d.path().join("f")).unwrap();
        let e = d.read_own("f", 10).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = d.open_own("f").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let mut f = d.create_new("f").unwrap();
        std::io::Write::write_all(&mut f, b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(d.read_own("f", 10).unwrap().unwrap(), b"mine");
        assert!(d.read_own("f", 3).is_err());
        assert_eq!(d.read_own("none", 3).unwrap(), None);
        assert!(d.open_own("none").unwrap().is_none());
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let e = d.read_own("sub", 10).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        assert!(d.read_own("../x", 10).is_err());
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = OwnedDir::open(t.path()).unwrap_err().to_string();
        assert!(e.contains("writable by others (mode 777)"), "{e}");
    }
}
