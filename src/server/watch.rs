//! What the accept loop knows of each connection: whether it is idle (no
//! request under way: it may be closed to make room), a bound on how long
//! a request may take to arrive once its first byte has, and a bound on
//! how long an answer may wait for the client to read (nginx's
//! `send_timeout`): a client that stops reading keeps nothing in memory
//! for longer than that.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use std::future::Future;

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

/// A stream that keeps its [`ConnState`] current, fails a read that
/// brings bytes of a request started more than `read_within` ago
/// (a slowloris client dripping its head one byte at a time), and fails a
/// write that could not go out for `send_within` (a client that asked for
/// a large answer and does not read it).
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    read_within: Duration,
    request_started: Option<Instant>,
    send_within: Duration,
    /// Armed while a write waits for the client to read; made on the
    /// first stall only.
    stalled: Option<Pin<Box<Sleep>>>,
    stalled_armed: bool,
}

impl<S> Watched<S> {
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        read_within: Duration,
        send_within: Duration,
    ) -> Self {
        Watched {
            inner,
            state,
            read_within,
            request_started: None,
            send_within,
            stalled: None,
            stalled_armed: false,
        }
    }

    /// The stream itself.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Notes a write: an answer is going out, so the request was read; a
    /// write that waits arms the send timeout, one that makes progress
    /// disarms it. Turns a write that waited too long into an error.
    fn wrote<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>>
    where
        T: Progress,
    {
        match &polled {
            Poll::Ready(Ok(n)) if n.made() => {
                self.request_started = None;
                self.state.answered();
                self.stalled_armed = false;
                polled
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.send_within;
                if !self.stalled_armed {
                    self.stalled_armed = true;
                    match &mut self.stalled {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => self.stalled = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                match self.stalled.as_mut().map(|s| s.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing of the answer within the send timeout",
                    ))),
                    _ => Poll::Pending,
                }
            }
            _ => polled,
        }
    }
}

/// Whether a write or flush that completed moved bytes.
trait Progress {
    fn made(&self) -> bool;
}

impl Progress for usize {
    fn made(&self) -> bool {
        *self > 0
    }
}

impl Progress for () {
    fn made(&self) -> bool {
        false
    }
}

impl<S> Watched<S> {
    /// Notes bytes of a request read: the first starts its clock; one
    /// that comes after `read_within` is an error.
    fn arrived(&mut self) -> io::Result<()> {
        if self.state.begin_request() {
            self.request_started = Some(Instant::now());
        } else if self
            .request_started
            .is_some_and(|t| t.elapsed() > self.read_within)
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request not received within the read timeout",
            ));
        }
        Ok(())
    }
}

impl Watched<tokio::net::TcpStream> {
    /// Reads what the socket has now into `buf`, without waiting
    /// (`WouldBlock` when it has nothing: readiness can be stale).
    pub fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let n = self.inner.try_read_buf(buf)?;
        if n > 0 {
            self.arrived()?;
        }
        Ok(n)
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
            if let Err(e) = self.arrived() {
                return Poll::Ready(Err(e));
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
        self.wrote(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if polled.is_ready() {
            self.stalled_armed = false;
            return polled;
        }
        self.wrote(cx, polled)
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
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
