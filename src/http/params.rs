//! Request parameters as discovery clients send them: a query string, a
//! form body or a JSON body (merged on a POST), lists repeated or
//! comma-joined.

use std::collections::HashMap;
use std::str::FromStr;

use crate::registry::RegistryError;

/// Every parameter of a request, by name, values in arrival order.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, Vec<String>>,
}

impl Params {
    /// Merges the query string with a form or JSON body.
    pub fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, RegistryError> {
        let mut params = Params::default();
        if let Some(q) = query {
            params.add_form(q.as_bytes());
        }
        if body.is_empty() {
            return Ok(params);
        }
        let is_json = content_type.is_some_and(|c| c.trim_start().starts_with("application/json"));
        if is_json {
            params.add_json(body)?;
        } else {
            params.add_form(body);
        }
        Ok(params)
    }

    fn add_form(&mut self, raw: &[u8]) {
        for (k, v) in form_urlencoded::parse(raw) {
            self.values
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
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
            let texts = self.values.entry(k).or_default();
            for item in items {
                match item {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => texts.push(s),
                    other => texts.push(other.to_string()),
                }
            }
        }
        Ok(())
    }

    /// The first non-empty value of a parameter.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)?
            .iter()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, RegistryError> {
        self.one(name)
            .ok_or_else(|| RegistryError::bad(name, "required"))
    }

    /// A list parameter: repeated, comma-joined, or both.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A list whose values may themselves hold commas (JSON metadata).
    pub fn raw_list(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .map(|s| s.as_str())
            .collect()
    }

    /// An optional number.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, RegistryError> {
        self.one(name)
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
            .map_err(IntoResponse::into_response)?;
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
        assert_eq!(p.one("env"), Some("dev"));
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
        assert_eq!(p.one("status"), Some("1"));
        assert_eq!(p.list("addrs").len(), 2);
        assert_eq!(p.raw_list("metadata"), vec![r#"{"w":"5"}"#]);
        assert!(Params::parse(None, Some("application/json"), b"[1]").is_err());
    }

    #[test]
    fn numbers_name_the_parameter_when_bad() {
        let p = Params::parse(Some("status=up"), None, b"").unwrap();
        let err = p.required_number::<u32>("status").unwrap_err();
        assert_eq!(err.to_string(), "status: \"up\" is not a number");
        assert_eq!(p.number::<u32>("missing").unwrap(), None);
    }
}
