//! A plain client connection with requests served outside hyper
//! ([`Lean`]): its request heads are read here, a few hundred bytes at a
//! time into a buffer that lives only until the head is parsed; a request
//! taken here is answered from here; any other request is handed to
//! hyper alone, with the bytes already read and nothing past its end, and
//! the connection comes back once it is answered. Anything not framed
//! beyond doubt ([`framing`](super::framing)) hands hyper the connection
//! to its end. While a request taken here waits, the connection holds no
//! buffer: a client that closes is seen by a one-byte peek.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tower::ServiceExt;

use super::framing::{self, Parsed};
use super::lean::{Answer, Lean};
use super::prefixed::Prefixed;
use super::slots::Slot;
use super::watch::Watched;
use super::{answer, Bounds, Conn};
use crate::shutdown::stopped;

/// The first read of a head: a poll's head is a few hundred bytes.
const FIRST_READ: usize = 1024;

/// A connection that carried this many requests in a row, none taken
/// here, is hyper's from then on: a client that fetches on a kept-alive
/// connection pays for a hyper connection made per request (4 to 9 % of
/// fetch throughput) for nothing. A Go client whose connection carries
/// renews between its polls never gets that far.
const HYPER_AFTER: u32 = 16;

/// A head not complete in this many bytes is left to hyper, whose own
/// bounds apply (it reads heads of up to about 400 KiB).
const MAX_HEAD: usize = 16 << 10;

pub(super) type Io = Watched<TcpStream>;

/// What waiting for the next request gave.
enum Next {
    /// A head, framed, at the start of these bytes.
    Head(Vec<u8>),
    /// Hyper takes the connection from these bytes on.
    Hyper(Vec<u8>),
    /// The connection is to close: the client closed it, it idled out, or
    /// the node is stopping.
    Close,
}

/// A plain connection served with [`Lean`], and all it keeps: one
/// struct, so that its task keeps each once (an `async fn`'s arguments
/// stay in its future beside what is made of them).
pub(super) struct Plain {
    pub conn: Conn,
    /// Held for as long as the connection is open.
    pub slot: Slot,
    pub io: Io,
    pub router: Router,
    pub bounds: Arc<Bounds>,
    pub stop: signal::Receiver<bool>,
    pub lean: Arc<dyn Lean>,
}

impl Plain {
    /// Serves the connection until the client closes it, it idles out,
    /// it is asked to make room or the node stops.
    // Not an `async fn`: see the block's first comment.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        // A block, not an `async fn`: an `async fn` moves its arguments
        // into a second place in its future.
        async move {
            // Named, so that the block takes the slot along: a block takes
            // only the fields it uses, and one it does not would be freed
            // (the connection uncounted) as soon as the task is made.
            let _counted = &self.slot;
            // Bytes read past the last request (a client that pipelines).
            let mut read: Vec<u8> = Vec::new();
            // Requests in a row that were not taken here.
            let mut streak = 0;
            loop {
                // Each step between requests is boxed: a task is as large as
                // its largest state, and a held poll's is this small one.
                let next = if streak < HYPER_AFTER {
                    let next =
                        Box::pin(
                            self.conn
                                .next(&mut self.io, read, &self.bounds, &mut self.stop),
                        );
                    next.await
                } else {
                    Next::Hyper(read)
                };
                let buf = match next {
                    Next::Head(buf) => buf,
                    Next::Hyper(buf) => {
                        let stream = Prefixed::new(self.io, buf);
                        let serve =
                            Box::pin(
                                self.conn
                                    .serve(stream, self.router, &self.bounds, self.stop),
                            );
                        return serve.await;
                    }
                    Next::Close => return,
                };
                let Parsed::Request { head, len } = framing::parse(&buf) else {
                    return;
                };
                let taken = if head.body == 0 && !head.expects {
                    self.lean.take(&head, self.conn.remote)
                } else {
                    None
                };
                let body = head.body;
                if let Some(answer) = taken {
                    streak = 0;
                    read = buf[len..].to_vec();
                    drop(buf);
                    let Some(response) = answered(answer, self.io.get_ref(), read.is_empty()).await
                    else {
                        return;
                    };
                    let write = Box::pin(answer::write(&mut self.io, response));
                    if write.await.is_err() {
                        return;
                    }
                } else {
                    let one = Box::pin(self.conn.one(
                        self.io,
                        buf,
                        len as u64 + body,
                        &self.router,
                        &self.bounds,
                        &mut self.stop,
                    ));
                    let Some((back, rest, whole)) = one.await else {
                        return;
                    };
                    if !whole {
                        return;
                    }
                    self.io = back;
                    read = rest;
                    streak += 1;
                }
                if *self.stop.borrow() {
                    return;
                }
            }
        }
    }
}

impl Conn {
    /// Waits for the next request's head, reading it as it comes.
    async fn next(
        &self,
        io: &mut Io,
        read: Vec<u8>,
        bounds: &Bounds,
        stop: &mut signal::Receiver<bool>,
    ) -> Next {
        // As hyper's header timeout: the whole head within the idle bound
        // of the last answer (the slow-head bound is the stream's).
        let deadline = Instant::now() + bounds.idle;
        let mut buf = read;
        // No buffer while idle: one is made once the socket says it has
        // bytes, and dropped again if it had none after all (readiness
        // can be left over from the last request's reads).
        while buf.is_empty() {
            tokio::select! {
                ready = tokio::time::timeout_at(deadline, io.get_ref().readable()) => {
                    if !matches!(ready, Ok(Ok(()))) {
                        return Next::Close;
                    }
                }
                _ = stopped(stop) => return Next::Close,
                _ = self.state.close.notified() => return Next::Close,
            }
            let mut first = Vec::with_capacity(FIRST_READ);
            match io.try_read_buf(&mut first) {
                Ok(0) => return Next::Close,
                Ok(_) => buf = first,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Next::Close,
            }
        }
        loop {
            match framing::parse(&buf) {
                Parsed::Request { .. } => return Next::Head(buf),
                Parsed::Hyper => return Next::Hyper(buf),
                Parsed::Partial if buf.len() >= MAX_HEAD => return Next::Hyper(buf),
                Parsed::Partial => {}
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity().max(FIRST_READ));
            }
            // A request under way: it arrives within the bounds, or the
            // connection closes (as hyper, without an answer); a node that
            // stops closes it too, as hyper's graceful stop closes a
            // connection whose head has not come whole.
            let got = tokio::select! {
                got = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)) => got,
                _ = stopped(stop) => return Next::Close,
            };
            match got {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Next::Close,
            }
        }
    }

    /// Has hyper serve the one request of `len` bytes at the start of
    /// `buf` (and what follows on `io`); gives the connection back, with
    /// the bytes read past the request and whether it was read whole.
    async fn one(
        &self,
        io: Io,
        buf: Vec<u8>,
        len: u64,
        router: &Router,
        bounds: &Bounds,
        stop: &mut signal::Receiver<bool>,
    ) -> Option<(Io, Vec<u8>, bool)> {
        let remote: SocketAddr = self.remote;
        let service = router
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                req
            });
        let mut conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.idle)
            // The stream ends where the request does: that end is not a
            // client gone before its answer.
            .half_close(true)
            .serve_connection(
                TokioIo::new(Prefixed::bounded(io, buf, len)),
                TowerToHyperService::new(service),
            );
        let served = tokio::select! {
            served = poll_fn(|cx| conn.poll_without_shutdown(cx)) => served,
            _ = stopped(stop) => {
                Pin::new(&mut conn).graceful_shutdown();
                poll_fn(|cx| conn.poll_without_shutdown(cx)).await
            }
        };
        served.ok()?;
        let parts = conn.into_parts();
        let (io, rest, whole) = parts.io.into_inner().into_parts();
        // hyper processed everything it read: the stream ended there.
        let whole = whole && parts.read_buf.is_empty();
        Some((io, rest, whole))
    }
}

/// The answer; `None` if the client closes the connection first, which
/// is watched for while it has sent nothing more (bytes it sends are its
/// next request, read after this answer). Polled in place, with a
/// one-byte peek: a select of futures would keep a waiter and the
/// answer's room in every held poll's task.
async fn answered(mut answer: Answer, stream: &TcpStream, mut watch: bool) -> Option<Response> {
    let mut byte = [0u8; 1];
    poll_fn(|cx| {
        if let Poll::Ready(response) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        if watch {
            match stream.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => watch = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    impl Lean for Never {
        fn take(&self, _: &framing::Head<'_>, _: SocketAddr) -> Option<Answer> {
            None
        }
    }

    /// A held poll keeps its connection's task: what is only needed
    /// between requests (hyper, reading a head, writing an answer) is
    /// boxed, not laid out in it.
    #[tokio::test]
    async fn a_plain_connection_s_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (stream, remote)) = (client.unwrap(), accepted.unwrap());
        let second = std::time::Duration::from_secs(1);
        let slots = super::super::slots::Slots::new(1, 1);
        let slot = slots.admit(remote.ip()).unwrap();
        let conn = Conn {
            remote,
            state: slot.state.clone(),
            keep_alive: true,
            tag: None,
        };
        let io = Watched::new(stream, conn.state.clone(), second, second);
        let bounds = Arc::new(Bounds {
            read_within: second,
            idle: second,
            send_within: second,
            max_connections: 1,
            per_client: 1,
            handshakes: 1,
            handshake_within: second,
            overloaded: Router::new(),
        });
        let (_tx, stop) = signal::channel(false);
        let plain = Plain {
            conn,
            slot,
            io,
            router: Router::new(),
            bounds,
            stop,
            lean: Arc::new(Never),
        };
        let size = std::mem::size_of_val(&plain.run());
        eprintln!("a plain connection's future: {size} B");
        assert!(size <= 512, "a plain connection's future is {size} B");
    }
}
