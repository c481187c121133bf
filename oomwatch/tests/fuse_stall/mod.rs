//! A FUSE file system (raw `/dev/fuse` protocol, no libfuse) with one file, `f`, whose reads
//! the server takes and never answers until [`StalledFuse::release`]. A reader killed while its
//! read is with the server waits in uninterruptible sleep (`D`) until the answer comes: the
//! classic OOM victim that cannot exit.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;
/// `FOPEN_DIRECT_IO`: every read goes to the server.
const FOPEN_DIRECT_IO: u32 = 1;

pub struct StalledFuse {
    dir: tempfile::TempDir,
    dev: Arc<File>,
    /// `unique` of each READ taken and not answered.
    stalled: Arc<Mutex<Vec<u64>>>,
    reads: Receiver<()>,
    server: Option<JoinHandle<()>>,
}

impl StalledFuse {
    /// Mounts it on a fresh directory; the reason where FUSE is missing.
    pub fn mount() -> Result<StalledFuse, String> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("/dev/fuse: {e}"))?;
        let dev = Arc::new(dev);
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            dev.as_raw_fd()
        ))
        .unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"oomwatch-test".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!("mount: {}", std::io::Error::last_os_error()));
        }
        let stalled = Arc::new(Mutex::new(Vec::new()));
        let (tx, reads) = channel();
        let server = {
            let dev = Arc::clone(&dev);
            let stalled = Arc::clone(&stalled);
            thread::spawn(move || serve(&dev, &stalled, &tx))
        };
        Ok(StalledFuse {
            dir,
            dev,
            stalled,
            reads,
            server: Some(server),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("f")
    }

    /// Waits until the server holds a read.
    pub fn wait_read(&self, timeout: std::time::Duration) -> bool {
        self.reads.recv_timeout(timeout).is_ok()
    }

    /// Answers every held read with EIO: the stalled readers go on (and die, if killed).
    pub fn release(&self) {
        let held: Vec<u64> = self.stalled.lock().unwrap().drain(..).collect();
        for unique in held {
            reply(&self.dev, unique, -libc::EIO, &[]);
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for StalledFuse {
    fn drop(&mut self) {
        self.release();
        let target = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path. MNT_FORCE aborts the connection (the server's
        // read then fails and it returns); MNT_DETACH unmounts even if still busy.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_FORCE);
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

fn reply(mut dev: &File, unique: u64, error: i32, body: &[u8]) {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(body);
    // ENOENT here means the request was already gone (interrupted and aborted): fine.
    let _ = dev.write_all(&out);
}

/// `struct fuse_attr` (88 bytes) of the root directory (1) or the file (2).
fn attr(node: u64) -> Vec<u8> {
    let mut a = vec![0u8; 88];
    let (mode, nlink, size) = match node {
        1 => (libc::S_IFDIR | 0o755, 2u32, 0u64),
        _ => (libc::S_IFREG | 0o444, 1, 1 << 20),
    };
    a[0..8].copy_from_slice(&node.to_ne_bytes());
    a[8..16].copy_from_slice(&size.to_ne_bytes());
    a[60..64].copy_from_slice(&mode.to_ne_bytes());
    a[64..68].copy_from_slice(&nlink.to_ne_bytes());
    a[80..84].copy_from_slice(&4096u32.to_ne_bytes());
    a
}

fn serve(dev: &File, stalled: &Mutex<Vec<u64>>, reads: &Sender<()>) {
    let mut buf = vec![0u8; (1 << 20) + 4096];
    let mut dev_r = dev;
    loop {
        let n = match dev_r.read(&mut buf) {
            Ok(n) if n >= 40 => n,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return, // ENODEV: unmounted or aborted
        };
        let req = &buf[..n];
        let u32_at = |o: usize| u32::from_ne_bytes(req[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(req[o..o + 8].try_into().unwrap());
        let (opcode, unique, node) = (u32_at(4), u64_at(8), u64_at(16));
        match opcode {
            INIT => {
                let mut out = vec![0u8; 64];
                out[0..4].copy_from_slice(&7u32.to_ne_bytes());
                out[4..8].copy_from_slice(&31u32.to_ne_bytes());
                out[8..12].copy_from_slice(&u32_at(48).to_ne_bytes()); // max_readahead
                out[16..18].copy_from_slice(&16u16.to_ne_bytes()); // max_background
                out[18..20].copy_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out[20..24].copy_from_slice(&(1u32 << 20).to_ne_bytes()); // max_write
                out[24..28].copy_from_slice(&1u32.to_ne_bytes()); // time_gran
                reply(dev, unique, 0, &out);
            }
            LOOKUP => {
                let name = req[40..].split(|&b| b == 0).next().unwrap_or(&[]);
                if node == 1 && name == b"f" {
                    let mut out = vec![0u8; 40];
                    out[0..8].copy_from_slice(&2u64.to_ne_bytes());
                    out[16..24].copy_from_slice(&60u64.to_ne_bytes());
                    out[24..32].copy_from_slice(&60u64.to_ne_bytes());
                    out.extend(attr(2));
                    reply(dev, unique, 0, &out);
                } else {
                    reply(dev, unique, -libc::ENOENT, &[]);
                }
            }
            GETATTR => {
                let mut out = vec![0u8; 16];
                out[0..8].copy_from_slice(&60u64.to_ne_bytes());
                out.extend(attr(node));
                reply(dev, unique, 0, &out);
            }
            OPEN | OPENDIR => {
                let mut out = vec![0u8; 16];
                out[0..8].copy_from_slice(&1u64.to_ne_bytes());
                out[8..12].copy_from_slice(&FOPEN_DIRECT_IO.to_ne_bytes());
                reply(dev, unique, 0, &out);
            }
            READ => {
                stalled.lock().unwrap().push(unique);
                let _ = reads.send(());
            }
            RELEASE | RELEASEDIR | FLUSH => reply(dev, unique, 0, &[]),
            FORGET | BATCH_FORGET | INTERRUPT => {}
            _ => reply(dev, unique, -libc::ENOSYS, &[]),
        }
    }
}

/// The victim's body (in a child process): a thread reads `file` (and gets stuck in the
/// server), then the calling thread allocates until the OOM killer kills the process.
pub fn stuck_reader_then_hog(file: &Path) -> ! {
    let path = file.to_path_buf();
    thread::spawn(move || {
        let mut f = File::open(&path).expect("open the FUSE file");
        let mut b = [0u8; 4096];
        let _ = f.read(&mut b);
    });
    thread::sleep(std::time::Duration::from_millis(300));
    let mut hog: Vec<Vec<u8>> = Vec::new();
    loop {
        hog.push(vec![1u8; 1 << 20]);
    }
}
