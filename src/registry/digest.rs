//! The registry's digest, kept current as it changes: each instance hashes
//! to 128 bits (SHA-256 of its canonical encoding, first 16 bytes), and an
//! app's digest is the sum of its instances' hashes modulo 2^128. A sum
//! does not depend on the order instances came in, and one change costs
//! one hash out and one in, so a registry of a million instances is no
//! dearer to keep digested than a small one. What is not an instance (an
//! app's change timestamp, other zones' cursors, schedules, the log's
//! name) is small, and hashed whole when a digest is asked for.
//!
//! The canonical encoding of an instance, which replicas must agree on
//! (docs/design.md): every field in the wire format's order, each string
//! as its length (u32, little-endian) then its UTF-8 bytes; `addrs` as
//! their count then each string; `metadata` as its count then each key and
//! value (sorted by key, as kept); `status` as one byte (1 up, 2 waiting);
//! each timestamp as an i64, little-endian.

use sha2::{Digest as _, Sha256};

use super::instance::Instance;

/// A sum of instance hashes: of one app, or of a whole registry. Sent as
/// 32 hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sum(pub u128);

impl serde::Serialize for Sum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        u128::from_str_radix(&text, 16)
            .map(Sum)
            .map_err(serde::de::Error::custom)
    }
}

impl Sum {
    /// The sum with `instance` added.
    pub fn add(&mut self, instance: &Instance) {
        self.0 = self.0.wrapping_add(hash(instance));
    }

    /// The sum with `instance` taken out.
    pub fn remove(&mut self, instance: &Instance) {
        self.0 = self.0.wrapping_sub(hash(instance));
    }

    /// Two sums as one (an app's into a registry's).
    pub fn plus(self, other: Sum) -> Sum {
        Sum(self.0.wrapping_add(other.0))
    }

    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// An instance's 128-bit hash over its canonical encoding.
pub fn hash(instance: &Instance) -> u128 {
    let mut h = Sha256::new();
    for s in [
        &*instance.region,
        &*instance.zone,
        &*instance.env,
        &*instance.appid,
        &*instance.hostname,
    ] {
        text(&mut h, s);
    }
    h.update((instance.addrs.len() as u32).to_le_bytes());
    for addr in &instance.addrs {
        text(&mut h, addr);
    }
    text(&mut h, &instance.version);
    h.update((instance.metadata.iter().count() as u32).to_le_bytes());
    for (k, v) in instance.metadata.iter() {
        text(&mut h, k);
        text(&mut h, v);
    }
    h.update([instance.status.bit() as u8]);
    for t in [
        instance.reg_timestamp,
        instance.up_timestamp,
        instance.renew_timestamp,
        instance.dirty_timestamp,
        instance.latest_timestamp,
    ] {
        h.update(t.to_le_bytes());
    }
    let bytes = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(first)
}

/// A string: its length, then its bytes.
fn text(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_le_bytes());
    h.update(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{parse_metadata, Registration, Status};

    fn instance(host: &str, metadata: &str) -> Instance {
        Instance::new(
            Registration {
                region: "sh".into(),
                zone: "sh001".into(),
                env: "dev".into(),
                appid: "a.b".into(),
                hostname: host.into(),
                addrs: vec!["http://10.0.0.1:80".into()],
                version: "v1".into(),
                metadata: parse_metadata(metadata).unwrap(),
                status: Status::Up,
            },
            100,
        )
    }

    #[test]
    fn a_sum_does_not_depend_on_order_and_a_removal_undoes_an_addition() {
        let (a, b, c) = (instance("a", ""), instance("b", ""), instance("c", ""));
        let mut one = Sum::default();
        for i in [&a, &b, &c] {
            one.add(i);
        }
        let mut other = Sum::default();
        for i in [&c, &a, &b] {
            other.add(i);
        }
        assert_eq!(one, other);
        other.remove(&b);
        assert_ne!(one, other);
        other.add(&b);
        assert_eq!(one, other);
    }

    #[test]
    fn every_field_counts_and_fields_do_not_run_into_each_other() {
        let base = instance("a", r#"{"k":"v"}"#);
        let mut changed = vec![];
        let mut i = base.clone();
        i.renew_timestamp += 1;
        changed.push(i);
        let mut i = base.clone();
        i.status = Status::Waiting;
        changed.push(i);
        changed.push(instance("a", r#"{"k":"w"}"#));
        changed.push(instance("a", r#"{"kv":""}"#));
        let mut i = base.clone();
        i.addrs = [&i.addrs[..], &[String::new()]].concat().into();
        changed.push(i);
        // "ab" + "" is not "a" + "b".
        let mut i = base.clone();
        i.region = "sha".into();
        i.zone = "h001".into();
        let mut j = base.clone();
        j.region = "s".into();
        j.zone = "hsh001".into();
        assert_ne!(hash(&i), hash(&j));
        for c in &changed {
            assert_ne!(hash(c), hash(&base), "{c:?}");
        }
        // The same instance, however built, hashes the same.
        assert_eq!(hash(&base), hash(&instance("a", r#"{"k":"v"}"#)));
    }
}
