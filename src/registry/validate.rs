//! What makes a command acceptable, checked wherever a command is created
//! or received: the handler of a client's write and the leader taking a
//! peer's proposal run this one function, so a peer can propose nothing a
//! client could not.

use super::command::{Change, Command};
use super::error::RegistryError;
use super::instance::{InstanceKey, Registration, Timestamp};

/// The app the cluster publishes its own nodes as; no client registers it.
pub const CLUSTER_APPID: &str = "infra.discovery";

/// The bounds a command is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// How far ahead of the checking node's clock a command may be stamped
    /// (nanoseconds): a proposer's clock may run a little ahead, a forged
    /// stamp far in the future would pin an instance's timestamps there.
    pub max_clock_skew: Timestamp,
}

/// Checks `command` as stamped against the checker's clock `now`.
pub fn validate(command: &Command, now: Timestamp, rules: &Rules) -> Result<(), RegistryError> {
    match command {
        Command::Register { registration, at } => {
            stamped(*at, now, rules)?;
            registration_ok(registration)
        }
        Command::Renew { keys, at } | Command::Evict { keys, at, .. } => {
            stamped(*at, now, rules)?;
            keys.iter().try_for_each(key_ok)
        }
        Command::Cancel { key, at } => {
            stamped(*at, now, rules)?;
            key_ok(key)
        }
        Command::Set {
            env,
            appid,
            zone,
            changes,
            at,
        } => {
            stamped(*at, now, rules)?;
            identity("env", env)?;
            identity("appid", appid)?;
            identity("zone", zone)?;
            if changes.is_empty() {
                return Err(RegistryError::bad("hostname", "required"));
            }
            changes.iter().try_for_each(change_ok)
        }
    }
}

/// Checks an instance's identity.
pub fn key_ok(key: &InstanceKey) -> Result<(), RegistryError> {
    identity("env", &key.env)?;
    identity("appid", &key.appid)?;
    identity("zone", &key.zone)?;
    identity("hostname", &key.hostname)
}

fn registration_ok(r: &Registration) -> Result<(), RegistryError> {
    key_ok(&r.key())?;
    if r.appid == CLUSTER_APPID {
        return Err(RegistryError::bad(
            "appid",
            "infra.discovery is the cluster's own app",
        ));
    }
    if r.addrs.is_empty() {
        return Err(RegistryError::bad(
            "addrs",
            "at least one address is required",
        ));
    }
    if r.addrs.iter().any(|a| a.trim().is_empty()) {
        return Err(RegistryError::bad("addrs", "an address is empty"));
    }
    text("region", &r.region)?;
    text("version", &r.version)?;
    r.addrs.iter().try_for_each(|a| text("addrs", a))
}

fn change_ok(c: &Change) -> Result<(), RegistryError> {
    identity("hostname", &c.hostname)?;
    if c.status.is_none() && c.metadata.is_none() {
        return Err(RegistryError::bad(
            "status",
            &format!(
                "nothing to change for {}: give status or metadata",
                c.hostname
            ),
        ));
    }
    Ok(())
}

fn stamped(at: Timestamp, now: Timestamp, rules: &Rules) -> Result<(), RegistryError> {
    if at > now.saturating_add(rules.max_clock_skew) {
        return Err(RegistryError::bad(
            "timestamp",
            &format!(
                "stamped {} ms ahead of this node's clock (at most {} ms allowed)",
                (at - now) / 1_000_000,
                rules.max_clock_skew / 1_000_000
            ),
        ));
    }
    if at <= 0 {
        return Err(RegistryError::bad("timestamp", "must be above 0"));
    }
    Ok(())
}

/// A name that identifies something: present and free of control characters.
fn identity(param: &str, value: &str) -> Result<(), RegistryError> {
    if value.trim().is_empty() {
        return Err(RegistryError::bad(param, "required"));
    }
    text(param, value)
}

fn text(param: &str, value: &str) -> Result<(), RegistryError> {
    if value.chars().any(char::is_control) {
        return Err(RegistryError::bad(
            param,
            "must not hold control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Metadata, Status};

    const NOW: Timestamp = 1_700_000_000_000_000_000;
    const RULES: Rules = Rules {
        max_clock_skew: 60_000_000_000,
    };

    fn registration(appid: &str) -> Registration {
        Registration {
            region: "sh".into(),
            zone: "sh001".into(),
            env: "dev".into(),
            appid: appid.into(),
            hostname: "h1".into(),
            addrs: vec!["grpc://10.0.0.1:9000".into()],
            version: "v1".into(),
            metadata: Metadata::new(),
            status: Status::Up,
        }
    }

    fn register(registration: Registration, at: Timestamp) -> Command {
        Command::Register { registration, at }
    }

    #[test]
    fn a_plain_registration_passes() {
        assert_eq!(
            validate(&register(registration("a"), NOW), NOW, &RULES),
            Ok(())
        );
    }

    #[test]
    fn a_stamp_beyond_the_allowed_skew_is_refused() {
        let ahead = NOW + RULES.max_clock_skew + 1;
        let err = validate(&register(registration("a"), ahead), NOW, &RULES).unwrap_err();
        assert!(err.to_string().starts_with("timestamp: "), "{err}");
        let forged = register(registration("a"), 9_000_000_000_000_000_000);
        assert!(validate(&forged, NOW, &RULES).is_err());
        let within = NOW + RULES.max_clock_skew;
        assert!(validate(&register(registration("a"), within), NOW, &RULES).is_ok());
    }

    #[test]
    fn empty_identities_and_the_clusters_own_app_are_refused() {
        let err = validate(&register(registration(""), NOW), NOW, &RULES).unwrap_err();
        assert_eq!(err, RegistryError::bad("appid", "required"));
        assert!(validate(&register(registration(CLUSTER_APPID), NOW), NOW, &RULES).is_err());
        let mut no_addrs = registration("a");
        no_addrs.addrs.clear();
        assert!(validate(&register(no_addrs, NOW), NOW, &RULES).is_err());
        let mut injected = registration("a");
        injected.hostname = "h1\r\nX-Injected: 1".into();
        let err = validate(&register(injected, NOW), NOW, &RULES).unwrap_err();
        assert!(err.to_string().starts_with("hostname: "), "{err}");
    }

    #[test]
    fn a_set_that_changes_nothing_is_refused() {
        let set = |changes| Command::Set {
            env: "dev".into(),
            appid: "a".into(),
            zone: "sh001".into(),
            changes,
            at: NOW,
        };
        assert!(validate(&set(vec![]), NOW, &RULES).is_err());
        let nothing = Change {
            hostname: "h1".into(),
            status: None,
            metadata: None,
        };
        assert!(validate(&set(vec![nothing.clone()]), NOW, &RULES).is_err());
        let status = Change {
            status: Some(Status::Waiting),
            ..nothing
        };
        assert!(validate(&set(vec![status]), NOW, &RULES).is_ok());
    }

    #[test]
    fn renews_and_evictions_check_every_key() {
        let key = |hostname: &str| InstanceKey {
            env: "dev".into(),
            appid: "a".into(),
            zone: "sh001".into(),
            hostname: hostname.into(),
        };
        let renew = Command::Renew {
            keys: vec![key("h1"), key("")],
            at: NOW,
        };
        assert!(validate(&renew, NOW, &RULES).is_err());
        let evict = Command::Evict {
            keys: vec![key("h1")],
            silent_since: NOW - 1,
            at: NOW,
        };
        assert!(validate(&evict, NOW, &RULES).is_ok());
    }
}
