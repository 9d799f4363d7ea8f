//! Bounds on a request's head (its target and its headers), answered with
//! the JSON envelope. hyper refuses on its own, with a bare 414 / 431,
//! only what is past its own buffers (a 64 KiB target, about 400 KiB of
//! head); these bounds sit well below, so a client over them gets an
//! answer it can parse.

use axum::extract::Request;
use axum::response::Response;

use super::reply;

/// The configured bounds.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Bytes of the request target (path and query).
    pub uri_bytes: usize,
    /// Bytes of the header block: each name, value and `: ` plus CRLF.
    pub header_bytes: usize,
}

/// The refusal of a request whose head is over the limits, if it is.
/// (Checked by [`super::observe`], in the one middleware every request
/// passes.)
pub fn judge(limits: &HeadLimits, req: &Request) -> Option<Response> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > limits.uri_bytes {
        return Some(reply::head_too_large(
            axum::http::StatusCode::URI_TOO_LONG,
            -414,
            &format!(
                "request target of {uri} bytes, at most {} (connections.max_uri_bytes)",
                limits.uri_bytes
            ),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > limits.header_bytes {
        return Some(reply::head_too_large(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            -431,
            &format!(
                "headers of {headers} bytes, at most {} (connections.max_header_bytes)",
                limits.header_bytes
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            uri_bytes: 32,
            header_bytes: 64,
        }
    }

    #[test]
    fn a_long_target_is_414_and_long_headers_431() {
        let ok = Request::builder()
            .uri("/discovery/fetch?appid=a")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(judge(&limits(), &ok).is_none());
        let long = Request::builder()
            .uri(format!("/discovery/fetch?appid={}", "a".repeat(40)))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(judge(&limits(), &long).unwrap().status(), 414);
        let heavy = Request::builder()
            .uri("/")
            .header("x-filler", "b".repeat(60))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(judge(&limits(), &heavy).unwrap().status(), 431);
    }
}
