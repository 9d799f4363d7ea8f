//! A connection as hyper sees it once its first bytes were read here:
//! those bytes first, then the stream; and, for a request hyper serves
//! alone, no byte past that request's end, so that hyper ends after it (an
//! end of stream at a request's boundary is a client that closed a
//! kept-alive connection) and hands the connection back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Prefixed<S> {
    inner: S,
    /// Read already; `at` of them handed on.
    read: Vec<u8>,
    at: usize,
    /// Bytes still to hand on before the end.
    left: u64,
}

impl<S> Prefixed<S> {
    /// `read` then `inner`, all of it.
    pub fn new(inner: S, read: Vec<u8>) -> Self {
        Self::bounded(inner, read, u64::MAX)
    }

    /// `read` then `inner`, ending after `len` bytes.
    pub fn bounded(inner: S, read: Vec<u8>, len: u64) -> Self {
        Prefixed {
            inner,
            read,
            at: 0,
            left: len,
        }
    }

    /// The stream, the bytes read past the bound (what follows the
    /// request), and whether the bound was reached (the request was read
    /// in full).
    pub fn into_parts(mut self) -> (S, Vec<u8>, bool) {
        let rest = if self.at == 0 {
            self.read
        } else if self.at < self.read.len() {
            self.read.split_off(self.at)
        } else {
            Vec::new()
        };
        (self.inner, rest, self.left == 0)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let room = (buf.remaining() as u64).min(this.left) as usize;
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.at < this.read.len() {
            let n = room.min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            this.left -= n as u64;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if room == buf.remaining() {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.left -= (buf.filled().len() - before) as u64;
            return polled;
        }
        // The last bytes of the request: no more than it has left.
        let mut bounded = ReadBuf::new(buf.initialize_unfilled_to(room));
        let polled = Pin::new(&mut this.inner).poll_read(cx, &mut bounded);
        let n = bounded.filled().len();
        buf.advance(n);
        this.left -= n as u64;
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hands_on_what_was_read_then_the_stream_up_to_the_bound() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"defgh")
            .await
            .unwrap();
        let mut p = Prefixed::bounded(server, b"abc".to_vec(), 6);
        let mut got = Vec::new();
        p.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcdef");
        let (mut server, rest, whole) = p.into_parts();
        assert!(rest.is_empty());
        assert!(whole);
        let mut more = [0u8; 2];
        server.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"gh");
    }

    #[tokio::test]
    async fn keeps_what_was_read_past_the_bound() {
        let (_client, server) = tokio::io::duplex(64);
        let mut p = Prefixed::bounded(server, b"abcNEXT".to_vec(), 3);
        let mut got = Vec::new();
        p.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
        let (_, rest, whole) = p.into_parts();
        assert_eq!(rest, b"NEXT");
        assert!(whole);
    }

    #[tokio::test]
    async fn a_request_cut_short_is_not_whole() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut p = Prefixed::bounded(server, b"ab".to_vec(), 5);
        let mut got = Vec::new();
        p.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ab");
        assert!(!p.into_parts().2);
    }
}
