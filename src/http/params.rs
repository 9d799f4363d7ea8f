//! Request parameters as discovery clients send them: a query string, a
//! form body or a JSON body (merged on a POST), lists repeated or
//! comma-joined. Decoding is strict: a `%` not followed by two hex digits
//! is refused (as Go's `url.ParseQuery`, which the original's clients are
//! built with, refuses it), bytes that are not UTF-8 once percent-decoded
//! are refused, never replaced with U+FFFD, a JSON field holding an object
//! or a list of lists where a string belongs is refused, and a
//! single-valued parameter given twice is refused rather than guessed at.

use std::ops::Range;
use std::str::FromStr;

use crate::registry::RegistryError;

/// Every parameter of a request, names and values in arrival order.
///
/// They are decoded into one buffer, and their places kept sorted by name
/// (a stable sort: a name's values stay in arrival order) to be found by
/// binary search. A held long poll keeps its parameters for as long as it
/// is held, so two allocations instead of three per parameter (about
/// twenty for a poll) count both in its memory and in freeing it.
#[derive(Debug, Default)]
pub struct Params {
    text: String,
    /// Each parameter's name and value, as ranges of `text`, by name.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Params {
    /// Merges the query string with a form or JSON body.
    pub fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, RegistryError> {
        let mut params = Params {
            text: String::with_capacity(query.map_or(0, str::len) + body.len()),
            pairs: Vec::new(),
        };
        if let Some(q) = query {
            params.add_form(q.as_bytes())?;
        }
        if !body.is_empty() {
            if is_json(content_type) {
                params.add_json(body)?;
            } else {
                params.add_form(body)?;
            }
        }
        let Params { text, pairs } = &mut params;
        pairs.sort_by(|(a, _), (b, _)| text[a.clone()].cmp(&text[b.clone()]));
        Ok(params)
    }

    fn add_form(&mut self, raw: &[u8]) -> Result<(), RegistryError> {
        let mut scratch = Vec::new();
        for pair in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let key = decode(k, &mut scratch, &mut self.text)
                .map_err(|e| RegistryError::bad("parameters", &format!("a parameter name {e}")))?;
            let value = decode(v, &mut scratch, &mut self.text)
                .map_err(|e| RegistryError::bad(&self.text[key.clone()], &e.to_string()))?;
            self.pairs.push((key, value));
        }
        Ok(())
    }

    fn add_json(&mut self, body: &[u8]) -> Result<(), RegistryError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| RegistryError::bad("body", &format!("not a JSON object: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(RegistryError::bad("body", "not a JSON object"));
        };
        for (k, v) in map {
            let items = match v {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let value = match item {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    // Metadata is a JSON object sent as a string; sent as
                    // the object itself it means the same.
                    object @ serde_json::Value::Object(_) if k == METADATA => object.to_string(),
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        return Err(RegistryError::bad(
                            &k,
                            "a string, number or boolean (or a list of them), not an object \
                             or a nested list",
                        ))
                    }
                };
                let key = self.push(&k);
                let value = self.push(&value);
                self.pairs.push((key, value));
            }
        }
        Ok(())
    }

    fn push(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    /// The values given for `name`, in arrival order.
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let key = |(k, _): &(Range<usize>, Range<usize>)| &self.text[k.clone()];
        let from = self.pairs.partition_point(|p| key(p) < name);
        let to = from + self.pairs[from..].partition_point(|p| key(p) == name);
        self.pairs[from..to]
            .iter()
            .map(|(_, v)| &self.text[v.clone()])
    }

    /// A single-valued parameter: its value if given and not blank; given
    /// more than once, refused.
    pub fn one(&self, name: &str) -> Result<Option<&str>, RegistryError> {
        let mut values = self.values(name);
        let Some(value) = values.next() else {
            return Ok(None);
        };
        match values.count() {
            0 => Ok(Some(value.trim()).filter(|v| !v.is_empty())),
            more => Err(RegistryError::bad(
                name,
                &format!("given {} times: give it once", more + 1),
            )),
        }
    }

    pub fn required(&self, name: &str) -> Result<&str, RegistryError> {
        self.one(name)?
            .ok_or_else(|| RegistryError::bad(name, "required"))
    }

    /// A list parameter: repeated, comma-joined, or both.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A list whose values may themselves hold commas (JSON metadata).
    pub fn raw_list(&self, name: &str) -> Vec<&str> {
        self.values(name).collect()
    }

    /// An optional number.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, RegistryError> {
        self.one(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| RegistryError::bad(name, &format!("{v:?} is not a number")))
            })
            .transpose()
    }

    pub fn required_number<T: FromStr>(&self, name: &str) -> Result<T, RegistryError> {
        self.number(name)?
            .ok_or_else(|| RegistryError::bad(name, "required"))
    }
}

/// Whether the media type is JSON; media types are case-insensitive.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The parameter whose JSON value may be an object.
const METADATA: &str = "metadata";

/// Why a form component could not be decoded.
#[derive(Debug, PartialEq, Eq)]
enum Undecodable {
    /// A `%` not followed by two hex digits.
    Escape,
    /// Not UTF-8 once percent-decoded.
    Utf8,
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Undecodable::Escape => "has a % not followed by two hex digits",
            Undecodable::Utf8 => "not valid UTF-8 once percent-decoded",
        })
    }
}

/// Percent-decodes a form component (`+` is a space) onto the end of
/// `text` (by way of `scratch`), and says where it went.
fn decode(
    raw: &[u8],
    scratch: &mut Vec<u8>,
    text: &mut String,
) -> Result<Range<usize>, Undecodable> {
    let escapes_ok = raw.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err(Undecodable::Escape);
    }
    scratch.clear();
    scratch.extend(raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }));
    let decoded: std::borrow::Cow<[u8]> = percent_encoding::percent_decode(scratch).into();
    let decoded = std::str::from_utf8(&decoded).map_err(|_| Undecodable::Utf8)?;
    let start = text.len();
    text.push_str(decoded);
    Ok(start..text.len())
}

#[axum::async_trait]
impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let query = req.uri().query().map(str::to_owned);
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    super::reply::too_large()
                } else {
                    rejection.into_response()
                }
            })?;
        Params::parse(query.as_deref(), content_type.as_deref(), &body)
            .map_err(|e| super::reply::error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body_merge() {
        let p = Params::parse(
            Some("addrs=grpc://a:1&zone=z1"),
            Some("application/x-www-form-urlencoded"),
            b"addrs=http%3A%2F%2Fa%3A2&env=dev",
        )
        .unwrap();
        assert_eq!(p.list("addrs"), vec!["grpc://a:1", "http://a:2"]);
        assert_eq!(p.one("env").unwrap(), Some("dev"));
    }

    #[test]
    fn lists_come_repeated_or_comma_joined() {
        let p = Params::parse(Some("appid=a,b&appid=c&appid="), None, b"").unwrap();
        assert_eq!(p.list("appid"), vec!["a", "b", "c"]);
        assert!(p.list("none").is_empty());
    }

    #[test]
    fn json_body_carries_the_same_fields() {
        let p = Params::parse(
            None,
            Some("application/json; charset=utf-8"),
            br#"{"zone":"z1","status":1,"addrs":["grpc://a:1","http://a:2"],"metadata":"{\"w\":\"5\"}"}"#,
        )
        .unwrap();
        assert_eq!(p.one("status").unwrap(), Some("1"));
        assert_eq!(p.list("addrs").len(), 2);
        assert_eq!(p.raw_list("metadata"), vec![r#"{"w":"5"}"#]);
        assert!(Params::parse(None, Some("application/json"), b"[1]").is_err());
    }

    #[test]
    fn invalid_utf8_is_refused_never_replaced() {
        for raw in ["appid=%FF%FE", "appid=%C0%AF", "appid=a%ED%A0%80"] {
            let err = Params::parse(Some(raw), None, b"").unwrap_err();
            assert_eq!(
                err.to_string(),
                "appid: not valid UTF-8 once percent-decoded",
                "{raw}"
            );
        }
        let err = Params::parse(None, None, b"zone=sh001&\xff=1").unwrap_err();
        assert!(err.to_string().starts_with("parameters: "), "{err}");
        let p = Params::parse(Some("hostname=a+b%20c&x=%E4%B8%AD"), None, b"").unwrap();
        assert_eq!(p.required("hostname").unwrap(), "a b c");
        assert_eq!(p.required("x").unwrap(), "中");
    }

    #[test]
    fn a_bad_percent_escape_is_refused_naming_the_parameter() {
        for raw in [
            "hostname=h%G0",
            "hostname=h%",
            "hostname=h%4",
            "hostname=%%41",
        ] {
            let err = Params::parse(Some(raw), None, b"").unwrap_err();
            assert_eq!(
                err.to_string(),
                "hostname: has a % not followed by two hex digits",
                "{raw}"
            );
        }
        let err = Params::parse(None, None, b"zone=sh001&a%Z=1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("parameters: a parameter name has a %"),
            "{err}"
        );
        let p = Params::parse(Some("hostname=a%2Fb%41"), None, b"").unwrap();
        assert_eq!(p.required("hostname").unwrap(), "a/bA");
    }

    #[test]
    fn a_json_object_where_a_string_belongs_is_refused_naming_the_field() {
        let json = Some("application/json");
        for (body, field) in [
            (&br#"{"hostname":{"a":"b"}}"#[..], "hostname"),
            (br#"{"appid":[["a"]]}"#, "appid"),
            (br#"{"addrs":["http://a:1",{"x":1}]}"#, "addrs"),
        ] {
            let err = Params::parse(None, json, body).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
        // Numbers and booleans are their text; metadata may be the object.
        let p =
            Params::parse(None, json, br#"{"status":1,"metadata":{"w":"5"},"x":true}"#).unwrap();
        assert_eq!(p.one("status").unwrap(), Some("1"));
        assert_eq!(p.one("x").unwrap(), Some("true"));
        assert_eq!(p.raw_list("metadata"), vec![r#"{"w":"5"}"#]);
    }

    #[test]
    fn a_single_valued_parameter_given_twice_is_refused() {
        let p = Params::parse(Some("hostname=a&hostname=b&status=&status="), None, b"").unwrap();
        let err = p.required("hostname").unwrap_err();
        assert_eq!(err.to_string(), "hostname: given 2 times: give it once");
        assert!(p.one("status").is_err());
        // Lists still come repeated.
        assert_eq!(p.list("hostname"), vec!["a", "b"]);
        // Query and body together count too.
        let p = Params::parse(Some("env=dev"), None, b"env=prod").unwrap();
        assert!(p.one("env").is_err());
    }

    #[test]
    fn media_types_are_case_insensitive() {
        let body = br#"{"zone":"z1"}"#;
        for ct in [
            "Application/JSON",
            "APPLICATION/json; charset=UTF-8",
            " application/json",
        ] {
            let p = Params::parse(None, Some(ct), body).unwrap();
            assert_eq!(p.one("zone").unwrap(), Some("z1"), "{ct}");
        }
        assert!(!is_json(Some("application/jsonp")));
        assert!(!is_json(Some("text/plain")));
    }

    proptest::proptest! {
        /// Any bytes in: parsing answers parameters or a -400 naming what
        /// is wrong, never a panic; what parses reads back without one.
        #[test]
        fn any_bytes_parse_or_are_refused(
            query in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            json in proptest::bool::ANY,
        ) {
            let query = String::from_utf8_lossy(&query).to_string();
            let ct = if json { "application/json" } else { "application/x-www-form-urlencoded" };
            match Params::parse(Some(&query), Some(ct), &body) {
                Ok(p) => {
                    for name in ["zone", "env", "appid", "hostname", "status", "addrs", "metadata"] {
                        let _ = p.one(name);
                        let _ = p.list(name);
                        let _ = p.number::<u32>(name);
                    }
                }
                Err(e) => proptest::prop_assert_eq!(e.code(), -400),
            }
        }

        /// Forms built from hostile pieces: whatever parses either
        /// validates or is refused with -400, never a panic.
        #[test]
        fn hostile_forms_validate_or_are_refused(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "zone=sh001", "env=dev", "appid=a", "hostname=h", "status=1", "status=3",
                    "addrs=http%3A%2F%2Fh%3A1", "addrs=not%20a%20url", "addrs=", "appid=%00",
                    "appid=%FF", "metadata=%7B%22k%22%3A1%7D", "metadata=%7B", "version=v",
                    "region=%0D%0A", "hostname=", "&", "=", "%", "%E4%B8",
                ]),
                0..14,
            ),
        ) {
            use crate::registry::{parse_metadata, validate, Command, Registration, Rules, Status};
            let form = pieces.join("&");
            let Ok(p) = Params::parse(None, None, form.as_bytes()) else { return Ok(()) };
            let built = (|| -> Result<Command, RegistryError> {
                Ok(Command::Register {
                    registration: Registration {
                        region: p.one("region")?.unwrap_or_default().into(),
                        zone: p.required("zone")?.into(),
                        env: p.required("env")?.into(),
                        appid: p.required("appid")?.into(),
                        hostname: p.required("hostname")?.into(),
                        addrs: p.list("addrs").into_iter().map(str::to_string).collect(),
                        version: p.one("version")?.unwrap_or_default().into(),
                        metadata: parse_metadata(p.one("metadata")?.unwrap_or_default())?,
                        status: Status::try_from(p.required_number::<u32>("status")?)?,
                    },
                    at: 1,
                })
            })();
            let rules = Rules { max_clock_skew: 0, limits: Default::default() };
            if let Err(e) = built.and_then(|c| validate(&c, 1, &rules)) {
                proptest::prop_assert_eq!(e.code(), -400);
            }
        }
    }

    #[test]
    fn numbers_name_the_parameter_when_bad() {
        let p = Params::parse(Some("status=up"), None, b"").unwrap();
        let err = p.required_number::<u32>("status").unwrap_err();
        assert_eq!(err.to_string(), "status: \"up\" is not a number");
        assert_eq!(p.number::<u32>("missing").unwrap(), None);
    }
}
