//! The accept loop both listeners run: plain TCP or TLS, HTTP/1.1 with
//! keep-alive, the remote address handed to handlers, and a graceful stop;
//! with bounds on how long a request may take to arrive, how long a
//! connection may sit idle, and how many may be open.
//!
//! - [`watch`]: a connection's idle state and its request-read deadline;
//! - [`lean`]: requests served outside hyper while they wait (held polls),
//!   on plain connections whose heads are read by [`plain`] and framed by
//!   [`framing`], answered by [`answer`]; hyper gets the others, one at a
//!   time, through [`prefixed`];
//! - [`slots`]: the cap on open connections;
//! - [`open_files`]: raising the open-files limit;
//! - [`listen`]: binding with the system's accept backlog.

mod answer;
mod framing;
pub mod lean;
pub mod listen;
pub mod open_files;
mod plain;
mod prefixed;
pub mod slots;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch as signal, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::fair::{Shares, Throttle};
use crate::shutdown::stopped;
use plain::Plain;
use slots::Slots;
use watch::{ConnState, Watched};

/// Connections past the cap that are still answered "overloaded"; past
/// these, a connection is closed unanswered.
const OVERLOAD_ANSWERS: usize = 256;

/// What a TLS listener's handshakes use; a new one (certificates
/// rotated) takes effect from the next connection on.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// Reads who the other side is from its certificate chain, once per
    /// connection; what it returns marks each of that connection's
    /// requests.
    pub identify: Option<Identify>,
}

/// See [`Tls::identify`].
pub type Identify = Arc<dyn Fn(&[CertificateDer<'static>]) -> Tag + Send + Sync>;

/// Marks a request with what the handshake proved.
pub type Tag = Arc<dyn Fn(&mut axum::http::Extensions) + Send + Sync>;

/// A listener's current TLS.
pub type TlsSource = signal::Receiver<Arc<Tls>>;

impl Tls {
    /// TLS that never changes, proving nothing about the other side.
    pub fn fixed(config: Arc<rustls::ServerConfig>) -> TlsSource {
        signal::channel(Arc::new(Tls {
            config,
            identify: None,
        }))
        .1
    }
}

/// One listener: its socket, its routes, and TLS if it speaks it.
pub struct Listener {
    pub tcp: TcpListener,
    pub router: Router,
    pub tls: Option<TlsSource>,
    /// Names the listener in logs ("client", "peer").
    pub name: &'static str,
    pub bounds: Bounds,
    /// Requests served outside hyper on plain connections.
    pub lean: Option<Arc<dyn lean::Lean>>,
}

/// How long and how many.
#[derive(Clone)]
pub struct Bounds {
    /// A request must arrive in full within this of its first byte.
    pub read_within: Duration,
    /// A kept-alive connection idle this long is closed.
    pub idle: Duration,
    /// An answer the client reads nothing of for this long is cut, and its
    /// connection closed.
    pub send_within: Duration,
    /// The most connections open at once: past it the longest-idle one
    /// makes room, or with none idle, `overloaded` answers.
    pub max_connections: usize,
    /// The most from one client (an address, an IPv6 /64): past it that
    /// client's own longest-idle connection makes room.
    pub per_client: usize,
    /// TLS only: handshakes under way at once, a quarter of them from one
    /// address (a connection that sends nothing holds one until
    /// `handshake_within`); past it a new connection is closed at once. A connection is never closed to make
    /// room while its handshake is under way.
    pub handshakes: usize,
    pub handshake_within: Duration,
    /// Answers every request of a connection past the cap.
    pub overloaded: Router,
}

/// Serves `listener` until `shutdown` turns true; each connection then
/// finishes the request in flight and closes.
pub async fn serve(listener: Listener, mut shutdown: signal::Receiver<bool>) {
    let Listener {
        tcp,
        router,
        tls,
        name,
        bounds,
        lean,
    } = listener;
    let slots = Slots::new(bounds.max_connections, bounds.per_client);
    // A quarter of the handshakes for one address: one that opens
    // sockets and sends nothing does not hold up its peers' handshakes.
    let handshakes = Shares::new(bounds.handshakes.max(1), (bounds.handshakes / 4).max(1));
    // A flood of one fault (sockets that never finish a handshake) logs
    // one line a minute, with how many it held back.
    let warnings = Arc::new(Throttle::new(Duration::from_secs(60)));
    let overload_answers = Arc::new(Semaphore::new(OVERLOAD_ANSWERS));
    // Past the cap a connection gets one answer, quickly, and is closed.
    let overload_bounds = Arc::new(Bounds {
        read_within: bounds.read_within.min(Duration::from_secs(1)),
        idle: Duration::from_secs(1),
        ..bounds.clone()
    });
    // Shared: each connection's task keeps a pointer, not a copy.
    let bounds = Arc::new(bounds);
    // Connections run as tasks of their own, only counted: one that ends
    // wakes nobody (reaping them from a set woke this loop once per
    // connection, a tenth of a woken poll's own instructions).
    let connections = TaskTracker::new();
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
                let Some(slot) = slots.admit(remote.ip()) else {
                    // Every connection is busy. Over TLS the answer would
                    // cost a handshake: those are simply closed.
                    let permit = overload_answers.clone().try_acquire_owned();
                    if let (Ok(permit), None) = (permit, &tls) {
                        tracing::debug!(listener = name, %remote, "overloaded: every connection busy");
                        let conn = Conn {
                            remote,
                            state: ConnState::new(Instant::now()),
                            keep_alive: false,
                            tag: None,
                        };
                        let bounds = overload_bounds.clone();
                        let stop = shutdown.clone();
                        connections.spawn(async move {
                            let _permit = permit;
                            conn.serve(stream, bounds.overloaded.clone(), &bounds, stop).await;
                        });
                    }
                    continue;
                };
                let mut conn = Conn { remote, state: slot.state.clone(), keep_alive: true, tag: None };
                let tls = tls.as_ref().map(|source| source.borrow().clone());
                let (router, bounds, stop) = (router.clone(), bounds.clone(), shutdown.clone());
                let lean = lean.clone();
                // Two tasks of their own: a task is as large as its
                // largest state, and a TLS connection's (rustls' buffers
                // inline) would make every plain one as large.
                match tls {
                    None => match lean {
                        Some(lean) => {
                            let io = Watched::new(stream, conn.state.clone(), bounds.read_within, bounds.send_within);
                            connections.spawn(Plain { conn, slot, io, router, bounds, stop, lean }.run())
                        }
                        None => connections.spawn(async move {
                            let _slot = slot;
                            conn.serve(stream, router, &bounds, stop).await;
                        }),
                    },
                    Some(tls) => {
                        let handshaking = match handshakes.take(remote.ip()) {
                            Ok(share) => share,
                            Err(refused) => {
                                if let Some(held_back) = warnings.allow("handshakes", Instant::now()) {
                                    tracing::warn!(
                                        listener = name,
                                        %remote,
                                        held_back,
                                        "TLS handshakes under way: {refused}: connection closed"
                                    );
                                }
                                continue;
                            }
                        };
                        let warnings = warnings.clone();
                        let within = bounds.handshake_within;
                        // Busy while it shakes hands: never closed to make
                        // room half-way, and counted against its client.
                        slot.state.begin_request();
                        connections.spawn(async move {
                        let _slot = slot;
                        let acceptor = TlsAcceptor::from(tls.config.clone());
                        let shaken = handshake(&acceptor, stream, remote, name, within, &warnings).await;
                        drop(handshaking);
                        conn.state.answered();
                        if let Some(stream) = shaken {
                            if let Some(identify) = &tls.identify {
                                let chain = stream.get_ref().1.peer_certificates().unwrap_or(&[]);
                                conn.tag = Some(identify(chain));
                            }
                            conn.serve(stream, router, &bounds, stop).await;
                        }
                    })},
                };
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(tcp);
    connections.close();
    connections.wait().await;
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
    within: Duration,
    warnings: &Throttle,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    // One line a minute per kind of fault: the message, which names the
    // reason (an unknown issuer, an expired certificate), not the address.
    let warn = |message: String| {
        if let Some(held_back) = warnings.allow(&message, Instant::now()) {
            tracing::warn!(listener = name, %remote, held_back, "{message}");
        }
    };
    match tokio::time::timeout(within, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                warn(format!("TLS handshake refused: {e}"));
            } else {
                tracing::debug!(listener = name, %remote, "TLS handshake abandoned: {e}");
            }
            None
        }
        Err(_) => {
            warn(format!("TLS handshake not finished within {within:?}"));
            None
        }
    }
}

/// One accepted connection.
struct Conn {
    remote: SocketAddr,
    state: Arc<ConnState>,
    keep_alive: bool,
    /// What the handshake proved, for each request.
    tag: Option<Tag>,
}

impl Conn {
    /// Serves the connection, handing its remote address to the handlers,
    /// until the client closes it, it idles out, it is asked to make room
    /// or the node stops.
    async fn serve<S>(
        self,
        stream: S,
        router: Router,
        bounds: &Bounds,
        mut stop: signal::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote = self.remote;
        let tag = self.tag.clone();
        let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            if let Some(tag) = &tag {
                tag(req.extensions_mut());
            }
            req
        });
        let stream = Watched::new(
            stream,
            self.state.clone(),
            bounds.read_within,
            bounds.send_within,
        );
        // hyper's header timer runs from when it waits for a request head:
        // between requests too, so it is the idle timeout; the slow-head
        // bound is the stream's.
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(self.keep_alive)
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.idle)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            _ = self.state.close.notified() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}
