//! Peer bodies in either encoding: a binary frame ([`crate::wire`]) from
//! nodes of this build, JSON from earlier ones, each answered in the
//! encoding it asked in. A frame of a version this build does not read is
//! refused with 415, as an earlier build refuses every frame: the sender
//! then speaks JSON to this node (see `super::client`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{self, FrameError};

/// How a request's body came, and so how it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Frame,
    Json,
}

impl Encoding {
    /// The encoding a body with these headers came in; none for a media
    /// type neither.
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let media = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        let media = media.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case(wire::MEDIA_TYPE) {
            Some(Encoding::Frame)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// Answers `value` in this encoding.
    pub fn answer<T: Serialize>(self, value: T) -> Response {
        match self {
            Encoding::Json => axum::Json(value).into_response(),
            Encoding::Frame => match wire::encode(&value) {
                Ok(frame) => (
                    [(CONTENT_TYPE, HeaderValue::from_static(wire::MEDIA_TYPE))],
                    frame,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            },
        }
    }
}

/// A request body decoded from either encoding, with the encoding it came
/// in. The route's body limit holds for both (413 past it).
pub struct Framed<T> {
    pub value: T,
    pub encoding: Encoding,
}

#[axum::async_trait]
impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Framed<T> {
    type Rejection = (StatusCode, String);

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let encoding = Encoding::of(req.headers()).ok_or((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type: expected {} or application/json",
                wire::MEDIA_TYPE
            ),
        ))?;
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| (e.status(), e.body_text()))?;
        let value = match encoding {
            Encoding::Json => serde_json::from_slice(&body)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}")))?,
            Encoding::Frame => wire::decode(&body).map_err(|e| match e {
                FrameError::UnknownVersion(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
                }
                e => (StatusCode::BAD_REQUEST, format!("body: {e}")),
            })?,
        };
        Ok(Framed { value, encoding })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    async fn read(media: Option<&str>, body: Vec<u8>) -> Result<Framed<u64>, (StatusCode, String)> {
        let mut req = Request::builder().method("POST").uri("/");
        if let Some(media) = media {
            req = req.header(CONTENT_TYPE, media);
        }
        Framed::from_request(req.body(Body::from(body)).unwrap(), &()).await
    }

    #[tokio::test]
    async fn bodies_are_read_in_the_encoding_they_say() {
        let frame = wire::encode(&300u64).unwrap();
        let read_frame = read(Some(wire::MEDIA_TYPE), frame).await.unwrap();
        assert_eq!(
            (read_frame.value, read_frame.encoding),
            (300, Encoding::Frame)
        );
        let json = read(Some("application/json; charset=utf-8"), b"300".to_vec())
            .await
            .unwrap();
        assert_eq!((json.value, json.encoding), (300, Encoding::Json));
        // A version this build does not read: 415, as an earlier build
        // refuses any frame, so the sender speaks JSON.
        let newer = read(Some(wire::MEDIA_TYPE), vec![wire::VERSION + 1, 1]).await;
        assert_eq!(newer.err().unwrap().0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // Garbage in either encoding, or no media type: refused, named.
        let (status, why) = read(Some(wire::MEDIA_TYPE), vec![wire::VERSION])
            .await
            .err()
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.starts_with("body:"), "{why}");
        let bad_json = read(Some("application/json"), b"{".to_vec()).await;
        assert_eq!(bad_json.err().unwrap().0, StatusCode::BAD_REQUEST);
        let none = read(None, b"300".to_vec()).await;
        assert_eq!(none.err().unwrap().0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
