//! An instance of a service and the identity and status types around it.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::metadata::Metadata;
use super::name::Name;

/// Nanoseconds since the Unix epoch: the unit of every discovery timestamp.
pub type Timestamp = i64;

/// Whether an instance takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum Status {
    /// `1`: registered and taking traffic.
    Up,
    /// `2`: registered, taking no traffic.
    Waiting,
}

impl Status {
    /// The bit this status has in a fetch `status` mask.
    pub fn bit(self) -> u32 {
        u32::from(self)
    }
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        match s {
            Status::Up => 1,
            Status::Waiting => 2,
        }
    }
}

impl TryFrom<u32> for Status {
    type Error = RegistryError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Status::Up),
            2 => Ok(Status::Waiting),
            _ => Err(RegistryError::bad(
                "status",
                "must be 1 (up) or 2 (waiting)",
            )),
        }
    }
}

/// A fetch filter over instance statuses: `1` up, `2` waiting, `3` both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusMask(u32);

impl StatusMask {
    pub const UP: StatusMask = StatusMask(1);

    /// Accepts the masks clients send: 1, 2 or 3.
    pub fn new(bits: u32) -> Result<Self, RegistryError> {
        if (1..=3).contains(&bits) {
            Ok(StatusMask(bits))
        } else {
            Err(RegistryError::bad("status", "must be 1, 2 or 3"))
        }
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn admits(self, status: Status) -> bool {
        self.0 & status.bit() != 0
    }
}

/// Identifies one instance: `(env, appid, zone, hostname)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub env: String,
    pub appid: String,
    pub zone: String,
    pub hostname: String,
}

/// What a client states when it registers; the registry adds the timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub region: String,
    pub zone: String,
    pub env: String,
    pub appid: String,
    pub hostname: String,
    pub addrs: Vec<String>,
    pub version: String,
    pub metadata: Metadata,
    pub status: Status,
}

impl Registration {
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            env: self.env.clone(),
            appid: self.appid.clone(),
            zone: self.zone.clone(),
            hostname: self.hostname.clone(),
        }
    }
}

/// A registered instance, in the field order of the wire format. The names
/// its app's instances have in common are shared between them (see
/// [`Name`] and [`Instance::share_with`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub region: Name,
    pub zone: Name,
    pub env: Name,
    pub appid: Name,
    pub hostname: Name,
    /// Exactly as long as it is (no spare capacity), 8 bytes shorter than
    /// a `Vec`: what keeps an instance in its size class.
    pub addrs: Box<[String]>,
    pub version: Name,
    pub metadata: Metadata,
    pub status: Status,
    pub reg_timestamp: Timestamp,
    pub up_timestamp: Timestamp,
    pub renew_timestamp: Timestamp,
    pub dirty_timestamp: Timestamp,
    pub latest_timestamp: Timestamp,
}

impl Instance {
    /// A first registration: every timestamp is `at`.
    pub fn new(reg: Registration, at: Timestamp) -> Self {
        Instance {
            region: reg.region.into(),
            zone: reg.zone.into(),
            env: reg.env.into(),
            appid: reg.appid.into(),
            hostname: reg.hostname.into(),
            addrs: reg.addrs.into_boxed_slice(),
            version: reg.version.into(),
            metadata: reg.metadata,
            status: reg.status,
            reg_timestamp: at,
            up_timestamp: at,
            renew_timestamp: at,
            dirty_timestamp: at,
            latest_timestamp: at,
        }
    }

    /// A registration over an existing instance: the new data replaces the
    /// old, the first-registration time stays, and `up_timestamp` moves only
    /// when the status becomes up.
    pub fn reregistered(&self, reg: Registration, at: Timestamp) -> Self {
        let up_timestamp = if reg.status == Status::Up && self.status != Status::Up {
            at
        } else {
            self.up_timestamp
        };
        Instance {
            reg_timestamp: self.reg_timestamp,
            up_timestamp,
            ..Instance::new(reg, at)
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            env: self.env.to_string(),
            appid: self.appid.to_string(),
            zone: self.zone.to_string(),
            hostname: self.hostname.to_string(),
        }
    }

    /// Points every name and the metadata this instance has in common with
    /// `other` (an instance of the same app) at `other`'s copy.
    pub fn share_with(&mut self, other: &Instance) {
        self.region.share(&other.region);
        self.zone.share(&other.zone);
        self.env.share(&other.env);
        self.appid.share(&other.appid);
        self.version.share(&other.version);
        self.metadata.share(&other.metadata);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mask_filters_by_bit() {
        let up = StatusMask::new(1).unwrap();
        let both = StatusMask::new(3).unwrap();
        assert!(up.admits(Status::Up) && !up.admits(Status::Waiting));
        assert!(both.admits(Status::Up) && both.admits(Status::Waiting));
        assert!(StatusMask::new(0).is_err() && StatusMask::new(4).is_err());
    }

    #[test]
    fn an_instance_fits_jemallocs_160_byte_size_class() {
        // A million of them, each behind an `Arc` (two counts, 16 bytes):
        // 161 bytes in all would cost 192.
        assert_eq!(std::mem::size_of::<std::sync::Arc<Instance>>(), 8);
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert!(std::mem::size_of::<Instance>() + 16 <= 160);
    }

    #[test]
    fn status_serializes_as_number() {
        assert_eq!(serde_json::to_string(&Status::Waiting).unwrap(), "2");
        assert!(serde_json::from_str::<Status>("3").is_err());
    }
}
