//! Writes an answer served outside hyper exactly as hyper writes one: the
//! status line, the answer's headers in their order, `content-length`
//! and `date` last, as hyper adds them. A unit test holds the bytes
//! against hyper's own for the same answer.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::response::Response;
use bytes::Bytes;
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bodies up to this size are copied behind the head and written in one
/// call; larger ones (an app's shared encoding) go out as they are.
const COPIED: usize = 32 << 10;

/// Writes `response` to `io`, whole.
pub async fn write<S: AsyncWrite + Unpin>(io: &mut S, response: Response) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let mut pieces: Vec<Bytes> = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(io::Error::other)?;
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                pieces.push(data);
            }
        }
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let mut out = head(&parts, len);
    if len <= COPIED {
        pieces.iter().for_each(|p| out.extend_from_slice(p));
        return io.write_all(&out).await;
    }
    io.write_all(&out).await?;
    for piece in &pieces {
        io.write_all(piece).await?;
    }
    Ok(())
}

/// The status line and headers of an answer whose body is `len` bytes.
fn head(parts: &axum::http::response::Parts, len: usize) -> Vec<u8> {
    let headers: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(96 + headers + len.min(COPIED));
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("<unknown status code>")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in &parts.headers {
        // The length is the body's, whatever a handler said.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        dated |= name == DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !dated {
        out.extend_from_slice(b"date: ");
        now(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

thread_local! {
    /// The date line's value, made once a second per thread (as hyper's).
    static DATE_NOW: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Hands `f` the current time as an HTTP date.
fn now(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE_NOW.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            cached.1.clear();
            cached
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cached.0 = second;
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::reply;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncReadExt;

    /// hyper's bytes for `make()`'s answer to one request.
    async fn hypers(make: fn() -> Response) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service = hyper::service::service_fn(move |_req| async move {
            Ok::<_, std::convert::Infallible>(make())
        });
        let serving = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        serving.await.unwrap().unwrap();
        got
    }

    async fn ours(make: fn() -> Response) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, make()).await.unwrap();
        out
    }

    /// Both without their date line, hyper's without the `connection:
    /// close` the test's request asked for.
    fn undated(raw: &[u8]) -> String {
        String::from_utf8_lossy(raw)
            .split("\r\n")
            .filter(|l| !l.starts_with("date: ") && *l != "connection: close")
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[tokio::test]
    async fn answers_are_written_byte_for_byte_as_hyper_writes_them() {
        let answers: [fn() -> Response; 6] = [
            || reply::not_modified(),
            || reply::polls(&[("a", Bytes::from_static(b"{\"instances\":[]}"))], &["b"]),
            || reply::polls(&[("big", Bytes::from(vec![b'x'; 100 << 10]))], &[]),
            || reply::overloaded("polls: too many"),
            || reply::poll_unknown("nope"),
            || reply::not_found(),
        ];
        for make in answers {
            let (h, o) = (hypers(make).await, ours(make).await);
            assert_eq!(undated(&h), undated(&o));
            let date = |raw: &[u8]| {
                String::from_utf8_lossy(raw)
                    .split("\r\n")
                    .find(|l| l.starts_with("date: "))
                    .map(|l| l.len())
            };
            assert_eq!(date(&h), date(&o), "a date line of the same shape");
        }
    }
}
