//! The reference `polls` measures the server against: a bare server on the
//! server's own stack (tokio, hyper's HTTP/1 with its defaults, jemalloc)
//! that does nothing but hold requests and answer them all with one
//! prepared body. It runs as a process of its own (`discovery-bench
//! bare-server`), so its memory and CPU are measured as the server's are.
//!
//! - `GET /held`: how many requests are held, at once;
//! - `POST /wake`: answers every held request with this request's body;
//! - any other request is held until the next wake.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Where to listen.
    #[arg(long)]
    pub listen: SocketAddr,
}

struct Shared {
    held: AtomicU64,
    /// The body of the last wake; held requests wait for it to change.
    woken: watch::Sender<Bytes>,
}

/// Serves until killed; its own runtime, with a worker per core as the
/// server's.
pub fn serve(args: &Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let tcp = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let shared = Arc::new(Shared {
            held: AtomicU64::new(0),
            woken: watch::channel(Bytes::new()).0,
        });
        loop {
            let (stream, _) = tcp.accept().await?;
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A held request, counted while it lives (a client that leaves drops it).
struct Holding(Arc<Shared>);

impl Holding {
    fn new(shared: Arc<Shared>) -> Holding {
        shared.held.fetch_add(1, Ordering::Relaxed);
        Holding(shared)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let body = match (req.method(), req.uri().path()) {
        (&Method::GET, "/held") => Bytes::from(shared.held.load(Ordering::Relaxed).to_string()),
        (&Method::POST, "/wake") => {
            let body = axum::body::to_bytes(Body::new(req.into_body()), 1 << 20).await;
            shared.woken.send_replace(body.unwrap_or_default());
            Bytes::from_static(b"{\"code\":0,\"message\":\"0\"}")
        }
        _ => {
            let mut woken = shared.woken.subscribe();
            let holding = Holding::new(shared.clone());
            let _ = woken.changed().await;
            drop(holding);
            let body = woken.borrow().clone();
            body
        }
    };
    let mut reply = Response::new(Body::from(body));
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(reply)
}
