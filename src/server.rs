//! The accept loop both listeners run: plain TCP or TLS, HTTP/1.1 with
//! keep-alive, the remote address handed to handlers, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::shutdown::stopped;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener: its socket, its routes, and TLS if it speaks it.
pub struct Listener {
    pub tcp: TcpListener,
    pub router: Router,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Names the listener in logs ("client", "peer").
    pub name: &'static str,
}

/// Serves `listener` until `shutdown` turns true; each connection then
/// finishes the request in flight and closes.
pub async fn serve(listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let Listener {
        tcp,
        router,
        tls,
        name,
    } = listener;
    let tls = tls.map(TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = tcp.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let tls = tls.clone();
                let stop = shutdown.clone();
                connections.spawn(async move {
                    match tls {
                        None => connection(stream, remote, router, stop).await,
                        Some(tls) => {
                            if let Some(stream) = handshake(&tls, stream, remote, name).await {
                                connection(stream, remote, router, stop).await;
                            }
                        }
                    }
                });
            }
            _ = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(tcp);
    while connections.join_next().await.is_some() {}
}

/// Completes the TLS handshake, or logs why not: a refusal (rustls turned
/// the peer down: no certificate, an unknown issuer, expired...) as a
/// warning, a handshake the other side abandoned (it gave up, the link
/// dropped) only at debug level, as faults leave many.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    name: &'static str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                tracing::warn!(listener = name, %remote, "TLS handshake refused: {e}");
            } else {
                tracing::debug!(listener = name, %remote, "TLS handshake abandoned: {e}");
            }
            None
        }
        Err(_) => {
            tracing::warn!(listener = name, %remote, "TLS handshake timed out");
            None
        }
    }
}

/// Serves one connection, handing its remote address to the handlers.
async fn connection<S>(
    stream: S,
    remote: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
