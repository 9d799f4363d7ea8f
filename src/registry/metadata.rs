//! Instance metadata: a small string map kept as one sorted array.
//!
//! Almost every instance carries a handful of entries, often one or none.
//! A `BTreeMap` spends a whole node (over 500 bytes) on a single entry; a
//! boxed slice sorted by key costs the entries alone, renders with sorted
//! keys as the original server's Go maps do, and looks a key up by binary
//! search.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::RegistryError;

/// Free-form string metadata, sorted by key, each key once. Immutable and
/// shared: the instances of an app often carry the same metadata, and
/// keep one copy of it between them ([`Metadata::share`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata(Arc<[(String, String)]>);

impl Default for Metadata {
    fn default() -> Self {
        Metadata(Arc::new([]))
    }
}

impl Metadata {
    pub fn new() -> Self {
        Metadata::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the two share one copy of their entries.
    #[cfg(test)]
    pub fn is_shared_with(&self, other: &Metadata) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Makes `self` share `other`'s entries when the two hold the same.
    pub fn share(&mut self, other: &Metadata) {
        if !Arc::ptr_eq(&self.0, &other.0) && self.0 == other.0 {
            *self = other.clone();
        }
    }
}

/// Like collecting into a map: of repeated keys the last value wins.
impl FromIterator<(String, String)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut entries: Vec<(String, String)> = iter.into_iter().collect();
        // A stable sort keeps repeated keys in arrival order; keep the last.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, String)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match unique.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => unique.push(entry),
            }
        }
        Metadata(unique.into())
    }
}

impl<const N: usize> From<[(String, String); N]> for Metadata {
    fn from(entries: [(String, String); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl Index<&str> for Metadata {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no metadata key {key:?}"),
        }
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metadata, A::Error> {
                // A binary frame states the count before the entries: what
                // is reserved ahead is bounded, the rest grows as read.
                let ahead = access.size_hint().unwrap_or(0).min(64);
                let mut entries = Vec::with_capacity(ahead);
                while let Some(entry) = access.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }

        deserializer.deserialize_map(Entries)
    }
}

/// Parses the `metadata` parameter: a JSON object whose scalar values are
/// kept as text. Empty means none.
pub fn parse_metadata(raw: &str) -> Result<Metadata, RegistryError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Metadata::new());
    }
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| RegistryError::bad("metadata", &format!("not a JSON object: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(RegistryError::bad("metadata", "not a JSON object"));
    };
    map.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => {
                    return Err(RegistryError::bad(
                        "metadata",
                        &format!("value of {k:?} must be a string, number or boolean"),
                    ))
                }
            };
            Ok((k, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(m: &Metadata) -> Vec<(&str, &str)> {
        m.iter().collect()
    }

    #[test]
    fn keeps_scalars_as_text_and_refuses_nesting() {
        let m = parse_metadata(r#"{"weight":10,"x":"y","on":true}"#).unwrap();
        assert_eq!(&m["weight"], "10");
        assert_eq!(&m["x"], "y");
        assert_eq!(&m["on"], "true");
        assert!(parse_metadata(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_metadata(r#"{not json"#).is_err());
        assert!(parse_metadata(r#"[1,2]"#).is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn sorted_by_key_and_the_last_of_a_repeated_key_wins() {
        let m: Metadata = [
            ("b".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
            ("b".to_string(), "3".to_string()),
        ]
        .into();
        assert_eq!(pairs(&m), vec![("a", "2"), ("b", "3")]);
        assert_eq!(m.get("c"), None);
    }

    #[test]
    fn renders_and_reads_back_as_a_json_object() {
        let m = parse_metadata(r#"{"z":"1","a":"2"}"#).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"a":"2","z":"1"}"#);
        let back: Metadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(serde_json::to_string(&Metadata::new()).unwrap(), "{}");
    }
}
