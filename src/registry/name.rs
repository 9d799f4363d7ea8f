//! A string an instance shares with the other instances of its app.
//!
//! A million instances spread over ten thousand apps repeat the same few
//! regions, zones, environments, appids and versions a hundred times each.
//! A `Name` is a reference-counted string: cloning it shares the text, so
//! an app keeps one copy of each and its instances point at it (see
//! [`super::app::App::insert`]). It reads, compares, hashes, orders and
//! serializes exactly as the string it holds. One pointer wide (the length
//! lives with the count and the text), where `Arc<str>` takes two.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use arcstr::ArcStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(ArcStr);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Makes `self` share `other`'s text when the two read the same.
    pub fn share(&mut self, other: &Name) {
        if !ArcStr::ptr_eq(&self.0, &other.0) && *self.0 == *other.0 {
            *self = other.clone();
        }
    }

    /// Whether the two share one copy of their text.
    #[cfg(test)]
    pub fn is_shared_with(&self, other: &Name) -> bool {
        ArcStr::ptr_eq(&self.0, &other.0)
    }

    /// The `Name` for `text` when read from a snapshot or the log: a name
    /// read moments ago on this thread is shared rather than allocated
    /// again. Reading a snapshot meets each app's region, zone, env, appid
    /// and version a hundred times in a row; this keeps a small table of
    /// the last names read, by a hash of their text.
    fn read(text: &str) -> Name {
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            let slot = &mut recent[slot_of(text)];
            match slot {
                Some(name) if name.as_str() == text => name.clone(),
                _ => slot.insert(Name::from(text)).clone(),
            }
        })
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::from("")
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(ArcStr::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(ArcStr::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name::from(s.as_str())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0.to_string()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // As a `String` would be read (the visitor copies the text out at
        // once): a frame read from a stream lends a name's bytes only
        // until the next one.
        d.deserialize_string(NameVisitor)
    }
}

/// Makes the `Name` straight from the text read, with no `String` between.
struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = Name;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
        Ok(Name::read(v))
    }
}

/// Slots in each thread's table of names read.
const RECENT_SLOTS: usize = 64;

thread_local! {
    static RECENT: RefCell<[Option<Name>; RECENT_SLOTS]> =
        const { RefCell::new([const { None }; RECENT_SLOTS]) };
}

/// FNV-1a over the text: cheap, and spreads names that differ in one digit.
fn slot_of(text: &str) -> usize {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash as usize) % RECENT_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compares_and_serializes_as_its_text() {
        let n = Name::from("sh001");
        assert_eq!(n, "sh001");
        assert_eq!(n.len(), 5);
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""sh001""#);
        let back: Name = serde_json::from_str(r#""sh\u0030""#).unwrap();
        assert_eq!(back, "sh0");
        let (a, b) = (Name::from("a"), Name::from("b"));
        assert!(a < b);
        assert_eq!(format!("{n} {n:?}"), r#"sh001 "sh001""#);
    }

    #[test]
    fn share_points_at_the_same_text_only_when_equal() {
        let first = Name::from("dev");
        let mut same = Name::from(String::from("dev"));
        let mut other = Name::from("prod");
        same.share(&first);
        other.share(&first);
        assert!(same.is_shared_with(&first));
        assert_eq!(other, "prod");
    }

    #[test]
    fn names_read_in_a_row_share_their_text() {
        let a: Name = serde_json::from_str(r#""zone-a""#).unwrap();
        let b: Name = serde_json::from_str(r#""zone-a""#).unwrap();
        let c: Name = serde_json::from_str(r#""zone-b""#).unwrap();
        assert!(a.is_shared_with(&b));
        assert_eq!((a.as_str(), c.as_str()), ("zone-a", "zone-b"));
    }
}
