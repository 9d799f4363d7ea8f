//! The requests the client listener serves outside hyper and the router
//! ([`crate::server::lean`]): `poll` and `polls`, which wait up to the hold
//! time. Each runs the same handler as through the router, and is counted
//! and logged as the router's middleware would (same endpoint names, same
//! access-log line); a head over the limits, or a target that is not a
//! valid URI, is left to the router, which answers it as before.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::uri::PathAndQuery;
use axum::response::Response;

use super::discovery::{self, Api};
use super::observe::{self, Observe, Seen};
use super::params::Params;
use super::reply;
use super::{POLLS_PATH, POLL_PATH};
use crate::server::lean::{Answer, Head, Lean};

/// `poll` and `polls`, served outside the router.
pub struct HeldPolls(Arc<Polls>);

/// What each answer shares.
struct Polls {
    api: Arc<Api>,
    observe: Observe,
}

impl HeldPolls {
    pub fn new(api: Arc<Api>, observe: Observe) -> Self {
        HeldPolls(Arc::new(Polls { api, observe }))
    }
}

impl Lean for HeldPolls {
    fn take(&self, head: &Head<'_>, remote: SocketAddr) -> Option<Answer> {
        if head.method != "GET" {
            return None;
        }
        let limits = &self.0.observe.head;
        if head.target.len() > limits.uri_bytes || head.header_bytes > limits.header_bytes {
            return None;
        }
        let target = PathAndQuery::from_str(head.target).ok()?;
        let endpoint = match target.path() {
            POLLS_PATH => POLLS_PATH,
            POLL_PATH => POLL_PATH,
            _ => return None,
        };
        Some(Box::pin(answer(self.0.clone(), endpoint, target, remote)))
    }
}

/// What the router's handler and middleware would answer and record.
async fn answer(
    polls: Arc<Polls>,
    endpoint: &'static str,
    target: PathAndQuery,
    remote: SocketAddr,
) -> Response {
    let started = Instant::now();
    let response = match Params::parse(target.query(), None, b"") {
        Err(e) => reply::error(&e),
        Ok(p) if endpoint == POLLS_PATH => {
            Box::pin(discovery::held_polls(&polls.api, remote, &p)).await
        }
        Ok(p) => Box::pin(discovery::held_poll(&polls.api, remote, &p)).await,
    };
    let took = started.elapsed();
    let o = &polls.observe;
    if o.logging() {
        let params = observe::logged_params(target.query().unwrap_or(""));
        let seen = Seen {
            method: "GET",
            path: endpoint,
            params: &params,
            remote: Some(remote),
        };
        o.record(endpoint, &response, took, Some(seen));
    } else {
        o.record(endpoint, &response, took, None);
    }
    response
}
