//! The one middleware every client request passes: it refuses a head over
//! the limits ([`head`]), and records what every request leaves behind: its count and latency in the
//! metrics, and one access-log line (target `access`, written by
//! [`AccessLog`]), like the original's `http-access-log`: time, method,
//! path, parameters, code, latency and the remote address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::access_log::{redact, AccessLog, Entry};
use super::head::{self, HeadLimits};
use crate::telemetry::Metrics;

/// Bodies up to this size are read for the access log's parameters (a
/// form: what a register or set stated); larger ones are logged by size.
const LOGGED_BODY: usize = 4096;

/// The most of the parameters one line shows.
const LOGGED_PARAMS: usize = 1024;

#[derive(Clone)]
pub struct Observe {
    pub metrics: Arc<Metrics>,
    /// Bounds on the request head, checked first.
    pub head: HeadLimits,
    /// Where access-log lines go; `None`: not written at all.
    pub access_log: Option<Arc<AccessLog>>,
}

pub async fn observe(State(o): State<Observe>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Unmatched paths count as one endpoint, so a scanner cannot grow the
    // metrics without bound.
    // The matched route is shared by the router (an Arc inside), so
    // keeping it costs no copy of the path.
    let endpoint = req.extensions().get::<MatchedPath>().cloned();
    // RUST_LOG=access=off turns it off too, as for any log target.
    let logged = o.logging();
    // What stays in this future while the request is handled (a long poll
    // is held in it) is kept small: the line is boxed, and so is reading
    // the parameters.
    let (req, line) = if logged {
        let (req, line) = Box::pin(line(req)).await;
        (req, Some(Box::new(line)))
    } else {
        (req, None)
    };
    let response = match head::judge(&o.head, &req) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    };
    let took = started.elapsed();
    let endpoint = endpoint.as_ref().map_or("other", MatchedPath::as_str);
    let seen = line.as_ref().map(|line| Seen {
        method: line.method.as_str(),
        path: &line.path,
        params: &line.params,
        remote: line.remote,
    });
    o.record(endpoint, &response, took, seen);
    response
}

/// What an access-log line says of a request.
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// As [`logged_params`] makes them.
    pub params: &'a str,
    pub remote: Option<SocketAddr>,
}

impl Observe {
    /// Whether requests are to be logged at all.
    pub fn logging(&self) -> bool {
        self.access_log.is_some() && tracing::enabled!(target: "access", tracing::Level::INFO)
    }

    /// Counts an answered request under `endpoint`, and logs it when
    /// `seen`.
    pub fn record(
        &self,
        endpoint: &str,
        response: &Response,
        took: Duration,
        seen: Option<Seen<'_>>,
    ) {
        let status = response.status();
        let code = response
            .headers()
            .get(super::reply::KRATOS_CODE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| status.as_str());
        self.metrics.request(endpoint, code, took);
        if let (Some(seen), Some(log)) = (seen, &self.access_log) {
            log.log(&Entry {
                method: seen.method,
                path: seen.path,
                params: seen.params,
                code,
                status: status.as_u16(),
                latency: took,
                remote: seen.remote,
            });
        }
    }
}

/// A query as an access-log line shows it: secrets hidden, cut short.
pub fn logged_params(query: &str) -> String {
    shorten(redact(query.to_string()))
}

/// The access-log line's view of the request.
async fn line(req: Request) -> (Request, Line) {
    let (req, params) = params(req).await;
    let line = Line {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        params,
        remote: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    };
    (req, line)
}

/// What an access-log line says of the request, taken before it is handed
/// on.
struct Line {
    method: axum::http::Method,
    path: String,
    params: String,
    remote: Option<SocketAddr>,
}

/// The request's parameters as the client sent them: the query, and a
/// small body, which is put back for the handler.
async fn params(req: Request) -> (Request, String) {
    let query = req.uri().query().unwrap_or("").to_string();
    let small = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|len| *len > 0 && *len <= LOGGED_BODY);
    let Some(_) = small else {
        return (req, shorten(redact(query)));
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, LOGGED_BODY).await else {
        // Shorter than announced or cut: the handler sees the same.
        return (
            Request::from_parts(parts, Body::empty()),
            shorten(redact(query)),
        );
    };
    let mut params = query;
    if !params.is_empty() {
        params.push('&');
    }
    params.push_str(&String::from_utf8_lossy(&bytes));
    (
        Request::from_parts(parts, Body::from(bytes)),
        shorten(redact(params)),
    )
}

fn shorten(mut text: String) -> String {
    if text.len() > LOGGED_PARAMS {
        let mut end = LOGGED_PARAMS;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_parameters_are_cut_on_a_character_boundary() {
        assert_eq!(shorten("a=1".into()), "a=1");
        let long = "é".repeat(600);
        let cut = shorten(long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= 1024 + '…'.len_utf8());
    }
}
