//! The discovery answer envelope: `{"code":…,"message":…,"ttl":1,"data":…}`
//! with the `kratos-status-code` header, rendered around pre-serialized data.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use crate::registry::RegistryError;

const JSON: &str = "application/json; charset=utf-8";

/// The header that repeats the envelope's code. Named once: a name given
/// as a string is parsed again on every insert.
pub const KRATOS_CODE: HeaderName = HeaderName::from_static("kratos-status-code");
const KRATOS_TRACE: HeaderName = HeaderName::from_static("kratos-trace-id");

/// Renders an answer whose `data` is already JSON.
pub fn answer(code: i32, message: &str, data: Option<&[u8]>) -> Response {
    let mut body = BytesMut::with_capacity(48 + message.len() + data.map_or(0, <[u8]>::len));
    body.put_slice(b"{\"code\":");
    body.put_slice(itoa::Buffer::new().format(code).as_bytes());
    body.put_slice(b",\"message\":");
    put_string(&mut body, message);
    body.put_slice(b",\"ttl\":1");
    if let Some(d) = data {
        body.put_slice(b",\"data\":");
        body.put_slice(d);
    }
    body.put_u8(b'}');
    respond(StatusCode::OK, code, body.freeze())
}

/// Success with data.
pub fn ok(data: &[u8]) -> Response {
    answer(0, "0", Some(data))
}

/// Data at least this large goes out as the shared bytes it is, not
/// copied into the answer; smaller, one copy costs less than a piece.
const SHARED_FROM: usize = 32 << 10;

/// Success with data that is shared (an app's cached encoding): a large
/// one is sent as is, between the envelope's head and tail, so any number
/// of readers of one app's state hold one copy of it, not one each.
pub fn ok_shared(data: Bytes) -> Response {
    if data.len() < SHARED_FROM {
        return ok(&data);
    }
    let head = Bytes::from_static(br#"{"code":0,"message":"0","ttl":1,"data":"#);
    respond(
        StatusCode::OK,
        0,
        axum::body::Body::new(Pieces::new(vec![head, data, Bytes::from_static(b"}")])),
    )
}

/// Success with data made of pieces (`fetchs`: each app's shared
/// encoding between the keys); joined when small, sent as they are when
/// large.
pub fn ok_pieces(pieces: Vec<Bytes>) -> Response {
    let len: usize = pieces.iter().map(Bytes::len).sum();
    if len < SHARED_FROM {
        return ok(&pieces.concat());
    }
    let mut all = Vec::with_capacity(pieces.len() + 2);
    all.push(Bytes::from_static(
        br#"{"code":0,"message":"0","ttl":1,"data":"#,
    ));
    all.extend(pieces);
    all.push(Bytes::from_static(b"}"));
    respond(StatusCode::OK, 0, axum::body::Body::new(Pieces::new(all)))
}

/// A body of pieces sent one after the other, never joined, with its
/// length known (so `Content-Length`, as a whole body has).
pub struct Pieces {
    left: std::collections::VecDeque<Bytes>,
    len: u64,
}

impl Pieces {
    pub fn new(pieces: Vec<Bytes>) -> Self {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Pieces {
            left: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            len,
        }
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.left.pop_front();
        if let Some(piece) = &next {
            self.len -= piece.len() as u64;
        }
        std::task::Poll::Ready(next.map(|piece| Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// Success without data.
pub fn done() -> Response {
    answer(0, "0", None)
}

/// A refusal whose message is just its code.
pub fn code(code: i32) -> Response {
    answer(code, &code.to_string(), None)
}

/// A registry error: `-400` names the parameter, others carry their code.
pub fn error(e: &RegistryError) -> Response {
    match e {
        RegistryError::BadRequest { .. } | RegistryError::Forbidden(_) => {
            answer(e.code(), &e.to_string(), None)
        }
        RegistryError::NotFound => code(e.code()),
    }
}

/// The long poll timed out with nothing new.
pub fn not_modified() -> Response {
    code(-304)
}

/// Start-up protection: HTTP 503 so clients try another node.
pub fn protected(reason: &str) -> Response {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        -503,
        &format!("protected: {reason}"),
    )
}

/// The node is at one of its limits: HTTP 503, so the client tries
/// another node.
pub fn overloaded(reason: &str) -> Response {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        -503,
        &format!("overloaded: {reason}"),
    )
}

/// A client over its pace (new instances): HTTP 429 with the envelope,
/// whose `-503` every SDK takes as "try again later".
pub fn too_many(reason: &str) -> Response {
    refused(StatusCode::TOO_MANY_REQUESTS, -503, reason)
}

/// A request body over the limit.
pub fn too_large() -> Response {
    refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        -413,
        "request body over the limit (connections.max_body_bytes)",
    )
}

/// A request target or header block over the limits (414 / 431).
pub fn head_too_large(status: StatusCode, code: i32, message: &str) -> Response {
    refused(status, code, message)
}

/// An admin change without the right token: HTTP 401, nothing changed.
pub fn unauthorized(reason: &str) -> Response {
    refused(StatusCode::UNAUTHORIZED, -401, reason)
}

/// The envelope under an HTTP status of its own, for refusals that clients
/// and proxies should see as such.
fn refused(status: StatusCode, code: i32, message: &str) -> Response {
    let mut body = BytesMut::with_capacity(48 + message.len());
    body.put_slice(b"{\"code\":");
    body.put_slice(itoa::Buffer::new().format(code).as_bytes());
    body.put_slice(b",\"message\":");
    put_string(&mut body, message);
    body.put_slice(b",\"ttl\":1}");
    respond(status, code, body.freeze())
}

/// The answer of `polls`: the original builds it as a map, so its keys come
/// sorted and there is no `ttl`.
pub fn polls(changed: &[(&str, Bytes)], missing: &[&str]) -> Response {
    let shared = changed.iter().map(|(_, data)| data.len()).sum::<usize>() >= SHARED_FROM;
    // Sized up front: a woken poll's answer is built without growing.
    let size = 64
        + changed
            .iter()
            .map(|(appid, data)| appid.len() + if shared { 0 } else { data.len() } + 4)
            .sum::<usize>()
        + missing.iter().map(|appid| appid.len() + 3).sum::<usize>();
    let mut body = BytesMut::with_capacity(size);
    // Large apps' encodings go out as the shared bytes they are.
    let mut pieces = Vec::new();
    body.put_slice(b"{\"code\":0,\"data\":{");
    for (i, (appid, data)) in changed.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        put_string(&mut body, appid);
        body.put_u8(b':');
        if shared {
            pieces.push(body.split().freeze());
            pieces.push(data.clone());
        } else {
            body.put_slice(data);
        }
    }
    body.put_slice(b"},\"error\":{\"-404\":");
    if missing.is_empty() {
        body.put_slice(b"null");
    } else {
        body.put_u8(b'[');
        for (i, appid) in missing.iter().enumerate() {
            if i > 0 {
                body.put_u8(b',');
            }
            put_string(&mut body, appid);
        }
        body.put_u8(b']');
    }
    body.put_slice(b"},\"message\":\"0\"}");
    if shared {
        pieces.push(body.freeze());
        return respond(
            StatusCode::OK,
            0,
            axum::body::Body::new(Pieces::new(pieces)),
        );
    }
    respond(StatusCode::OK, 0, body.freeze())
}

/// `poll` of an unknown app: the original's exact words, without `ttl`.
pub fn poll_unknown(appid: &str) -> Response {
    let mut body = BytesMut::with_capacity(48 + appid.len());
    body.put_slice(b"{\"code\":-404,\"message\":");
    put_string(&mut body, &format!("{appid} not found"));
    body.put_u8(b'}');
    respond(StatusCode::OK, -404, body.freeze())
}

/// Plain-text answers for unknown paths and wrong methods, as the original.
pub fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

pub fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `s` as a JSON string, escaped straight into `body`.
fn put_string(body: &mut BytesMut, s: &str) {
    // Writing to memory cannot fail.
    let _ = serde_json::to_writer(body.writer(), s);
}

/// Success whose envelope and data `body` streams whole (`fetch/all`).
pub fn ok_streamed(body: axum::body::Body) -> Response {
    respond(StatusCode::OK, 0, body)
}

fn respond(status: StatusCode, code: i32, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert(KRATOS_CODE, code_value(code));
    headers.insert(KRATOS_TRACE, HeaderValue::from_static(""));
    response
}

/// The code header's value; the codes every poll and fetch answers with
/// are static, others are formatted.
fn code_value(code: i32) -> HeaderValue {
    match code {
        0 => HeaderValue::from_static("0"),
        -304 => HeaderValue::from_static("-304"),
        -404 => HeaderValue::from_static("-404"),
        _ => HeaderValue::from(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn envelopes_match_the_original_bytes() {
        assert_eq!(body(done()).await, r#"{"code":0,"message":"0","ttl":1}"#);
        assert_eq!(
            body(code(-404)).await,
            r#"{"code":-404,"message":"-404","ttl":1}"#
        );
        assert_eq!(
            body(answer(-404, "-404", Some(b"null"))).await,
            r#"{"code":-404,"message":"-404","ttl":1,"data":null}"#
        );
        assert_eq!(
            body(not_modified()).await,
            r#"{"code":-304,"message":"-304","ttl":1}"#
        );
        assert_eq!(
            body(poll_unknown("no.such.app")).await,
            r#"{"code":-404,"message":"no.such.app not found"}"#
        );
        assert_eq!(
            body(polls(&[("a", Bytes::from_static(b"{}"))], &[])).await,
            r#"{"code":0,"data":{"a":{}},"error":{"-404":null},"message":"0"}"#
        );
        assert_eq!(
            body(polls(&[], &["x"])).await,
            r#"{"code":0,"data":{},"error":{"-404":["x"]},"message":"0"}"#
        );
    }

    #[tokio::test]
    async fn headers_carry_the_code() {
        let r = error(&RegistryError::bad("zone", "required"));
        assert_eq!(r.headers()["kratos-status-code"], "-400");
        assert_eq!(r.headers()["content-type"], JSON);
        assert_eq!(
            body(r).await,
            r#"{"code":-400,"message":"zone: required","ttl":1}"#
        );
        let p = protected("catching up");
        assert_eq!(p.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(p).await.contains("protect"));
    }
}
