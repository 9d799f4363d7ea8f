//! A large value written as JSON while it is sent: serialized on a
//! blocking thread into chunks of [`CHUNK`] bytes handed over one at a
//! time, so one reader holds about two chunks however large the value is,
//! and a reader that stops reading stops the writing (the thread waits for
//! room; when the connection is cut, it stops).

use std::io::Write;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;

/// Bytes gathered before a chunk goes out.
const CHUNK: usize = 64 << 10;

/// The body of `value` as JSON. `keep` is held until the value is written
/// or the reader is gone (a place among the answers of its kind allowed
/// at once). A failure to write ends the body with an error, so that the
/// reader sees a cut answer rather than a short one.
pub fn json<T, K>(value: T, keep: K) -> Body
where
    T: Serialize + Send + 'static,
    K: Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(1);
    tokio::task::spawn_blocking(move || {
        let _keep = keep;
        let mut w = Chunks {
            buf: BytesMut::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        let written = serde_json::to_writer(&mut w, &value)
            .map_err(std::io::Error::other)
            .and_then(|()| w.flush());
        if let Err(e) = written {
            // Nobody to tell when the reader is gone.
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// Gathers written bytes into chunks and hands each full one over.
struct Chunks {
    buf: BytesMut,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[derive(Serialize)]
    struct Big {
        items: Vec<String>,
    }

    fn big() -> Big {
        Big {
            items: (0..50_000).map(|i| format!("item-{i:08}")).collect(),
        }
    }

    #[tokio::test]
    async fn the_body_is_the_values_json_in_chunks() {
        let mut body = json(big(), ()).into_data_stream();
        let mut whole = Vec::new();
        let mut chunks = 0;
        while let Some(data) = body.next().await {
            let data = data.unwrap();
            assert!(data.len() <= CHUNK + 64, "{} bytes", data.len());
            whole.extend_from_slice(&data);
            chunks += 1;
        }
        assert_eq!(whole, serde_json::to_vec(&big()).unwrap());
        assert!(chunks > 10, "{chunks} chunks");
    }

    #[tokio::test]
    async fn a_reader_that_goes_stops_the_writing_and_lets_go() {
        let keep = std::sync::Arc::new(());
        let mut body = json(big(), keep.clone()).into_data_stream();
        // One chunk read, then the reader is gone.
        body.next().await.unwrap().unwrap();
        drop(body);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::sync::Arc::strong_count(&keep) > 1 {
            assert!(std::time::Instant::now() < deadline, "still writing");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
