//! One connection's state as the accept loop sees it, and what keeps a slow reader from
//! pinning memory: an answer counts as in progress until its last byte is in the kernel's
//! hands (not only until its handler returned), it must get there within the write timeout,
//! per-request answers draw on a shared byte budget, and the kernel's send buffer is capped.
//!
//! * [`InFlight`] marks a request in progress from its arrival; it moves into the answer's
//!   body ([`Tracked`]) and, once hyper has taken the whole body, is finished by the next
//!   successful flush of the socket ([`Watched`]).
//! * [`Conn::arm`] sets the deadline by which the answer must be written; the connection task
//!   resets the connection (`SO_LINGER` 0, so the kernel drops what it still holds) when it
//!   passes.
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Marks an answer built for one request (`/`, `/events`): its bytes are held by this
/// connection alone until written, so they draw on the answer budget. `/metrics` is sent from
/// buffers shared between scrapes and does not carry it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Owned;

/// One open connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// Requests of this connection not yet answered to the last byte.
    in_flight: AtomicUsize,
    /// Answers whose whole body hyper has taken, waiting for a flush to be done.
    handed: AtomicUsize,
    /// Requests of this connection answered so far.
    served: AtomicU64,
    /// Set once the connection was told to close.
    closing: AtomicBool,
    /// Close by reset, at once (a slow reader evicted to make room).
    reset: AtomicBool,
    pub(super) close: Notify,
    /// When the answer in progress must be written, in ms after `born` (+1); 0: none.
    deadline: AtomicU64,
    /// Woken when a deadline is set.
    pub(super) armed: Notify,
    born: Instant,
    /// Bytes of [`Owned`] answers this connection holds, and the budget they come from.
    held: AtomicUsize,
    budget: Arc<AtomicUsize>,
}

impl Conn {
    pub(super) fn new(budget: Arc<AtomicUsize>) -> Self {
        Conn {
            in_flight: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            close: Notify::new(),
            deadline: AtomicU64::new(0),
            armed: Notify::new(),
            born: Instant::now(),
            held: AtomicUsize::new(0),
            budget,
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    pub(super) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(super) fn tell_to_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// Tells the connection to close by reset, at once.
    pub(super) fn tell_to_reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.tell_to_close();
    }

    pub(super) fn resetting(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    /// The answer in progress must be written within `timeout` (an earlier deadline stays).
    pub(super) fn arm(&self, timeout: Duration) {
        let at = (self.born.elapsed() + timeout).as_millis() as u64 + 1;
        if self
            .deadline
            .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.armed.notify_one();
        }
    }

    /// When the answer in progress must be written, if one is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.born + Duration::from_millis(ms - 1)),
        }
    }

    /// True when an answer is still being written past its deadline.
    pub(super) fn overdue(&self, now: Instant) -> bool {
        !self.idle() && self.deadline().is_some_and(|d| now >= d)
    }

    /// Takes `n` bytes of the answer budget of at most `cap`; false (nothing taken) beyond it.
    pub(super) fn hold(&self, n: usize, cap: usize) -> bool {
        let before = self.budget.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > cap {
            self.budget.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.held.fetch_add(n, Ordering::AcqRel);
        true
    }

    /// Gives back the budget this connection holds.
    pub(super) fn release(&self) {
        let n = self.held.swap(0, Ordering::AcqRel);
        self.budget.fetch_sub(n, Ordering::AcqRel);
    }

    /// A flush completed: the answers hyper had taken whole are written.
    fn flushed(&self) {
        let n = self.handed.swap(0, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        self.served.fetch_add(n as u64, Ordering::Relaxed);
        if self.in_flight.fetch_sub(n, Ordering::AcqRel) == n {
            self.deadline.store(0, Ordering::Release);
            self.release();
        }
    }
}

/// Marks a request in progress on its connection until its answer is written (or, if it never
/// gets that far, until dropped).
pub(super) struct InFlight(Option<Arc<Conn>>);

impl InFlight {
    pub(super) fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Some(conn))
    }

    /// hyper took the whole body: the next completed flush ends the request.
    fn handed(mut self) {
        if let Some(c) = self.0.take() {
            c.handed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
            c.served.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An answer's body carrying its request's [`InFlight`] mark until hyper has taken all of it.
pub(super) struct Tracked {
    inner: Body,
    mark: Option<InFlight>,
}

impl Tracked {
    pub(super) fn new(inner: Body, mark: InFlight) -> Self {
        Tracked {
            inner,
            mark: Some(mark),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(m) = self.mark.take() {
            m.handed();
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, telling its [`Conn`] when a flush completed.
pub(super) struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, conn: Arc<Conn>) -> Self {
        Watched { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes its socket only once its own buffer is empty: every byte it was given is
    /// then in the kernel's hands.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.conn.flushed();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn set_int_option(fd: RawFd, name: libc::c_int, value: libc::c_int) {
    set_option_at(fd, libc::SOL_SOCKET, name, value);
}

fn set_option_at(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the
    // option value is a valid c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Caps the kernel's send buffer of the socket (the kernel doubles it for its bookkeeping and
/// stops growing it on its own).
pub(super) fn cap_send_buffer(fd: RawFd, bytes: usize) {
    set_int_option(
        fd,
        libc::SO_SNDBUF,
        i32::try_from(bytes).unwrap_or(i32::MAX),
    );
}

/// Caps the segments of the connections `listener` accepts from now on (`TCP_MAXSEG`: the
/// MSS the peer announced is clamped to it) to half the send buffer asked for (a quarter of
/// what the kernel keeps). On loopback (MSS 65483) one segment would fill the whole buffer: the next write then waits
/// for the reader's ACK, which a reader with one segment in hand delays by 40 ms, and a
/// 13 MB `/metrics` took 7 s instead of 10 ms. Across a network the MSS is far below it.
pub(super) fn cap_segment_size(listener: RawFd, send_buffer: usize) {
    let mss = i32::try_from(send_buffer / 2).unwrap_or(i32::MAX).max(536);
    set_option_at(listener, libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss);
}

/// Makes the socket's close a reset: the kernel drops what it still has to send at once
/// instead of keeping it for a client that does not read.
pub(super) fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the
    // option value is a valid `struct linger` of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_answer_is_flushed() {
        let budget = Arc::new(AtomicUsize::new(0));
        let conn = Arc::new(Conn::new(Arc::clone(&budget)));
        let mark = InFlight::new(Arc::clone(&conn));
        assert!(conn.hold(10, 100));
        assert!(!conn.hold(91, 100), "beyond the budget");
        conn.arm(Duration::from_secs(10));
        assert!(conn.deadline().is_some());
        let body = Tracked::new(Body::from("x"), mark);
        conn.flushed();
        assert!(!conn.idle(), "body not taken yet");
        drop(body);
        assert!(!conn.idle(), "taken, not flushed yet");
        conn.flushed();
        assert!(conn.idle());
        assert_eq!(conn.served(), 1);
        assert_eq!(conn.deadline(), None);
        assert_eq!(budget.load(Ordering::Relaxed), 0);
        assert!(!conn.overdue(Instant::now()));
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_ends() {
        let conn = Arc::new(Conn::new(Arc::default()));
        drop(InFlight::new(Arc::clone(&conn)));
        assert!(conn.idle());
    }

    /// The connections a capped listener accepts send segments of at most half the send
    /// buffer asked for (loopback would use 65483 bytes).
    #[test]
    fn accepted_connections_send_small_segments() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cap_segment_size(listener.as_raw_fd(), 32 * 1024);
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut mss: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `conn` is an open socket; `mss` and `len` are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MAXSEG,
                std::ptr::from_mut(&mut mss).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert!(mss > 0 && mss <= 16 * 1024, "{mss}");
    }
}
