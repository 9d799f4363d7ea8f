//! What the accept loop knows of each connection: whether it is idle (no
//! request under way: it may be closed to make room), and a bound on how
//! long a request may take to arrive once its first byte has.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The shared state of one connection.
pub struct ConnState {
    /// True from the connection's start and from each answer on, until
    /// the next request's first byte: nothing would be lost by closing it.
    idle: AtomicBool,
    /// When the connection last turned idle, for choosing the oldest.
    idle_since: AtomicU64,
    /// Asks the connection's task to close it.
    pub close: Notify,
    epoch: Instant,
}

impl ConnState {
    pub fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(ConnState {
            idle: AtomicBool::new(true),
            idle_since: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            close: Notify::new(),
            epoch,
        })
    }

    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Milliseconds after the epoch the connection turned idle.
    pub fn idle_since(&self) -> u64 {
        self.idle_since.load(Ordering::Relaxed)
    }

    /// A request's first byte came; true if the connection was idle.
    pub fn begin_request(&self) -> bool {
        self.idle.swap(false, Ordering::AcqRel)
    }

    /// An answer is going out: the request was read in full.
    pub fn answered(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.idle_since.store(now, Ordering::Relaxed);
        self.idle.store(true, Ordering::Release);
    }
}

/// A stream that keeps its [`ConnState`] current and fails a read that
/// brings bytes of a request started more than `read_within` ago
/// (a slowloris client dripping its head one byte at a time).
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    read_within: Duration,
    request_started: Option<Instant>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, state: Arc<ConnState>, read_within: Duration) -> Self {
        Watched {
            inner,
            state,
            read_within,
            request_started: None,
        }
    }

    /// Notes a write: an answer is going out, so the request was read.
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.request_started = None;
            self.state.answered();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if self.state.begin_request() {
                self.request_started = Some(Instant::now());
            } else if self
                .request_started
                .is_some_and(|t| t.elapsed() > self.read_within)
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request not received within the read timeout",
                )));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
