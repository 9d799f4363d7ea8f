//! Requests a listener serves itself, outside hyper: those that wait long
//! (a held long poll) and so should hold nothing but their own state while
//! they wait. hyper keeps two 8 KiB buffers and a task's worth of layers
//! per request in flight; a request served here keeps its parameters,
//! its watch and the connection's socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::response::Response;

pub use super::framing::Head;

/// An answer on its way.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Which requests a listener serves itself.
pub trait Lean: Send + Sync {
    /// The answer to `head` from `remote`, if it is served here; `None`
    /// leaves the request to hyper and the router. Called with a head
    /// that is framed (HTTP/1.1, no body or one plain length); a request
    /// taken here must not have a body.
    fn take(&self, head: &Head<'_>, remote: SocketAddr) -> Option<Answer>;
}
