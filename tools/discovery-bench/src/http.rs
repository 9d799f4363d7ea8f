//! A minimal HTTP/1.1 keep-alive client: one request at a time per
//! connection, bodies framed by content-length or chunked encoding. It does
//! far less work per request than a general client, which matters because
//! the load generator shares two cores with the server it measures; and it
//! never consults proxy settings, so traffic stays on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a URL points: a loopback socket address and the request target.
#[derive(Clone, Debug)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

impl Url {
    /// Parses `http://host[:port][/path]`. The host must be a loopback IP
    /// or `localhost`; no name is looked up, so the bench never sends
    /// anything, not even a DNS query, off the machine.
    pub fn parse(url: &str) -> Result<Url> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port),
            _ => (authority, "80"),
        };
        let port: u16 = port
            .parse()
            .with_context(|| format!("{url}: bad port {port:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse()
                .with_context(|| format!("{url}: the host must be an IP address or localhost"))?
        };
        ensure!(
            ip.is_loopback(),
            "{url}: the host must be a loopback address"
        );
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }
}

/// An answer; the body borrows the connection's buffer.
pub struct Reply<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// How the body of an answer is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read from the socket for the answer being parsed.
    buf: Vec<u8>,
    /// The decoded body of a chunked answer.
    body: Vec<u8>,
    /// The server said it closes the connection after this answer.
    closing: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            body: Vec::new(),
            closing: false,
        })
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Sends a complete request and reads its answer.
    pub async fn send(&mut self, request: &[u8]) -> Result<Reply<'_>> {
        self.write(request).await?;
        self.read().await
    }

    pub async fn write(&mut self, request: &[u8]) -> Result<()> {
        self.stream.write_all(request).await?;
        Ok(())
    }

    /// Reads one answer.
    pub async fn read(&mut self) -> Result<Reply<'_>> {
        self.buf.clear();
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(1024).await?;
        };
        let (status, framing, closing) = parse_head(&self.buf[..head_len])?;
        self.closing = closing;
        match framing {
            Framing::Length(n) => {
                while self.buf.len() < head_len + n {
                    self.fill(head_len + n - self.buf.len()).await?;
                }
                Ok(Reply {
                    status,
                    body: &self.buf[head_len..head_len + n],
                })
            }
            Framing::Chunked => {
                self.read_chunks(head_len).await?;
                Ok(Reply {
                    status,
                    body: &self.body,
                })
            }
        }
    }

    /// Decodes a chunked body that starts at `pos` of the buffer.
    async fn read_chunks(&mut self, mut pos: usize) -> Result<()> {
        self.body.clear();
        loop {
            let line_end = self.line_at(pos).await?;
            let line = std::str::from_utf8(&self.buf[pos..line_end])?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            pos = line_end + 2;
            if size == 0 {
                // Trailer lines end with an empty line.
                loop {
                    let end = self.line_at(pos).await?;
                    if end == pos {
                        return Ok(());
                    }
                    pos = end + 2;
                }
            }
            while self.buf.len() < pos + size + 2 {
                self.fill(pos + size + 2 - self.buf.len()).await?;
            }
            self.body.extend_from_slice(&self.buf[pos..pos + size]);
            pos += size + 2;
        }
    }

    /// Where the line starting at `pos` ends (the index of its `\r\n`).
    async fn line_at(&mut self, pos: usize) -> Result<usize> {
        loop {
            if let Some(i) = self.buf.get(pos..).and_then(|b| find(b, b"\r\n")) {
                return Ok(pos + i);
            }
            self.fill(1024).await?;
        }
    }

    /// Reads more bytes, making room for at least `want` of them.
    async fn fill(&mut self, want: usize) -> Result<()> {
        self.buf.reserve(want.max(1024));
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status, body framing and whether the server closes afterwards.
fn parse_head(head: &[u8]) -> Result<(u16, Framing, bool)> {
    let text = std::str::from_utf8(head).context("answer head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1 answer: {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut framing = None;
    let mut closing = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            framing = Some(Framing::Length(
                value
                    .parse()
                    .with_context(|| format!("bad content-length {value:?}"))?,
            ));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Some(Framing::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            closing = value.eq_ignore_ascii_case("close");
        }
    }
    // Answers without a body (1xx, 204, 304) carry no framing header.
    let framing = match framing {
        Some(f) => f,
        None if status < 200 || status == 204 || status == 304 => Framing::Length(0),
        None => bail!("answer with status {status} has neither content-length nor chunked body"),
    };
    Ok((status, framing, closing))
}
