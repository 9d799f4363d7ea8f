//! What makes a command acceptable, checked wherever a command is created
//! or received: the handler of a client's write and the leader taking a
//! peer's proposal run this one function, so a peer can propose nothing a
//! client could not.

use serde::{Deserialize, Serialize};

use super::command::{Change, Command};
use super::error::RegistryError;
use super::instance::{Instance, InstanceKey, Registration, Timestamp};
use super::metadata::Metadata;
use super::scheduler::SchedulerRule;
use super::zones::{ZoneBatch, ZoneChange};
use super::{restore, RegistrySnapshot};

/// The app the cluster publishes its own nodes as; no client registers it.
pub const CLUSTER_APPID: &str = "infra.discovery";

/// The bounds a command is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// How far ahead of the checking node's clock a command may be stamped
    /// (nanoseconds): a proposer's clock may run a little ahead, a forged
    /// stamp far in the future would pin an instance's timestamps there.
    pub max_clock_skew: Timestamp,
    pub limits: Limits,
}

/// How large what a client states may be: far above what real deployments
/// use, far below what would let one client bloat every replica (the
/// `[limits]` section of a node's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of `env`, `appid`, `zone`, `hostname` and `region` each: a
    /// DNS name has at most 253.
    pub name_bytes: usize,
    /// Addresses one instance may register (services expose a few
    /// protocols: grpc, http, ...).
    pub addrs: usize,
    /// Bytes of one address.
    pub addr_bytes: usize,
    /// Bytes of `version`.
    pub version_bytes: usize,
    /// Keys of one instance's metadata.
    pub metadata_keys: usize,
    /// Bytes of one instance's metadata, keys and values together.
    pub metadata_bytes: usize,
    /// Instances one `set` may change.
    pub set_hostnames: usize,
    /// The most bytes one command may take in the log (as estimated by
    /// [`Command::approx_bytes`]): a follower must take one entry within
    /// one heartbeat, and an entry of megabytes stalled replication for
    /// every writer (etcd bounds requests at 1.5 MiB for the same reason).
    /// A client's `set` past it is refused; the cluster's own batches
    /// (renews, evictions) are cut to fit.
    pub entry_bytes: usize,
}

impl Limits {
    /// The defaults, as `configs/single.toml` shows them.
    pub const DEFAULT: Limits = Limits {
        name_bytes: 255,
        addrs: 16,
        addr_bytes: 512,
        version_bytes: 128,
        metadata_keys: 64,
        metadata_bytes: 8192,
        set_hostnames: 1024,
        entry_bytes: 512 << 10,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Checks `command` as stamped against the checker's clock `now`.
pub fn validate(command: &Command, now: Timestamp, rules: &Rules) -> Result<(), RegistryError> {
    match command {
        Command::Register { registration, at } => {
            stamped(*at, now, rules)?;
            registration_ok(registration, &rules.limits)
        }
        Command::Renew { keys, at } | Command::Evict { keys, at, .. } => {
            stamped(*at, now, rules)?;
            keys.iter().try_for_each(|k| key_ok(k, &rules.limits))?;
            fits_an_entry("hostname", command, &rules.limits)
        }
        Command::Cancel { key, at } => {
            stamped(*at, now, rules)?;
            key_ok(key, &rules.limits)
        }
        Command::Set {
            env,
            appid,
            zone,
            changes,
            at,
        } => {
            stamped(*at, now, rules)?;
            let l = &rules.limits;
            identity("env", env, l)?;
            identity("appid", appid, l)?;
            identity("zone", zone, l)?;
            if changes.is_empty() {
                return Err(RegistryError::bad("hostname", "required"));
            }
            at_most(
                "hostname",
                "instances in one set",
                changes.len(),
                l.set_hostnames,
            )?;
            changes.iter().try_for_each(|c| change_ok(c, l))?;
            let metadata: usize = changes
                .iter()
                .filter_map(|c| c.metadata.as_ref())
                .flat_map(|m| m.iter())
                .map(|(k, v)| k.len() + v.len())
                .sum();
            let param = if metadata * 2 > command.approx_bytes() {
                "metadata"
            } else {
                "hostname"
            };
            fits_an_entry(param, command, l)
        }
        Command::RestorePart {
            part,
            of,
            backup,
            at,
            ..
        } => {
            stamped(*at, now, rules)?;
            if *of == 0 || *of > restore::MAX_PARTS || part >= of {
                return Err(RegistryError::bad(
                    "backup",
                    &format!("part {part} of {of}: at most {} parts", restore::MAX_PARTS),
                ));
            }
            backup_ok(backup, command.approx_bytes(), &rules.limits)?;
            fits_an_entry("backup", command, &rules.limits)?;
            backup_stamps_ok(backup, now, rules)
        }
        Command::Restore { backup, at } => {
            stamped(*at, now, rules)?;
            backup_ok(backup, command.approx_bytes(), &rules.limits)?;
            backup_stamps_ok(backup, now, rules)
        }
        Command::Schedule {
            appid,
            env,
            rules: scheduler,
            at,
        } => {
            stamped(*at, now, rules)?;
            identity("appid", appid, &rules.limits)?;
            if let Some(env) = env {
                identity("env", env, &rules.limits)?;
            }
            scheduler
                .as_deref()
                .map_or(Ok(()), |s| scheduler_ok(s, &rules.limits))
        }
        Command::Check { .. } => Ok(()),
        Command::NameLog { log } => {
            if log.is_empty()
                || log.len() > 64
                || !log.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(RegistryError::bad("log", "1 to 64 letters, digits or '-'"));
            }
            Ok(())
        }
        Command::UpstreamApply {
            upstream,
            changes,
            at,
            ..
        } => {
            stamped(*at, now, rules)?;
            upstream_name_ok(upstream)?;
            for change in changes {
                match change {
                    ZoneChange::Upsert(i) => instance_ok(i, &rules.limits)?,
                    ZoneChange::Renew { key, .. } | ZoneChange::Remove(key) => {
                        key_ok(key, &rules.limits)?
                    }
                }
            }
            fits_an_entry("upstream", command, &rules.limits)
        }
        Command::UpstreamExported {
            upstream,
            exported,
            withdrawn,
            at,
        } => {
            stamped(*at, now, rules)?;
            upstream_name_ok(upstream)?;
            exported
                .iter()
                .map(|(k, _)| k)
                .chain(withdrawn)
                .try_for_each(|k| key_ok(k, &rules.limits))?;
            fits_an_entry("upstream", command, &rules.limits)
        }
        Command::UpstreamForget { upstream, at } => {
            stamped(*at, now, rules)?;
            upstream_name_ok(upstream)
        }
        Command::ZoneApply {
            origin,
            batch,
            at,
            log,
            ..
        } => {
            if log.as_ref().is_some_and(|l| l.len() > 64) {
                return Err(RegistryError::bad("log", "at most 64 bytes"));
            }
            stamped(*at, now, rules)?;
            identity("zone", origin, &rules.limits)?;
            if let ZoneBatch::FullPart { part, of, .. } = batch {
                if part >= of {
                    return Err(RegistryError::bad(
                        "zone",
                        &format!("part {part} of {of} of a copy of {origin}"),
                    ));
                }
            }
            if command.approx_bytes() > MAX_RESTORE_BYTES {
                return Err(RegistryError::bad(
                    "zone",
                    &format!("a batch from {origin} over {} MiB", MAX_RESTORE_BYTES >> 20),
                ));
            }
            let keys: Vec<InstanceKey> = match batch {
                ZoneBatch::Full(instances) | ZoneBatch::FullPart { instances, .. } => {
                    instances.iter().map(Instance::key).collect()
                }
                ZoneBatch::Changes { changes, .. } => changes
                    .iter()
                    .map(|c| match c {
                        ZoneChange::Upsert(i) => i.key(),
                        ZoneChange::Renew { key, .. } | ZoneChange::Remove(key) => key.clone(),
                    })
                    .collect(),
            };
            keys.iter().try_for_each(|k| key_ok(k, &rules.limits))
        }
    }
}

/// The most rules one app's scheduler may hold, and zones one rule may
/// send traffic to.
pub const MAX_SCHEDULER_RULES: usize = 64;

/// A scheduler as the SDKs read it: one rule per source zone, each sending
/// to named zones by non-negative weights, not all zero.
fn scheduler_ok(scheduler: &[SchedulerRule], l: &Limits) -> Result<(), RegistryError> {
    const P: &str = "scheduler";
    if scheduler.is_empty() {
        return Err(RegistryError::bad(
            P,
            "no rule: clear the scheduler instead",
        ));
    }
    at_most(P, "rules", scheduler.len(), MAX_SCHEDULER_RULES)?;
    let mut sources = std::collections::BTreeSet::new();
    for rule in scheduler {
        identity(P, &rule.src, l)?;
        if !sources.insert(rule.src.as_str()) {
            return Err(RegistryError::bad(
                P,
                &format!("two rules for src {}", rule.src),
            ));
        }
        at_most(P, "dst zones", rule.dst.len(), MAX_SCHEDULER_RULES)?;
        for (zone, weight) in &rule.dst {
            identity(P, zone, l)?;
            if *weight < 0 {
                return Err(RegistryError::bad(
                    P,
                    &format!("weight {weight} for {zone}: weights are 0 or more"),
                ));
            }
        }
        if rule.dst.values().all(|w| *w == 0) {
            return Err(RegistryError::bad(
                P,
                &format!("the rule for src {} sends traffic nowhere", rule.src),
            ));
        }
    }
    Ok(())
}

/// The most a backup restored through the log may take: it travels as one
/// log entry, which every follower must take in one append.
pub const MAX_RESTORE_BYTES: usize = 64 << 20;

/// Every instance of a backup as a registration would be checked, filed
/// under its own app, and the whole within one log entry.
fn backup_ok(backup: &RegistrySnapshot, bytes: usize, l: &Limits) -> Result<(), RegistryError> {
    if bytes > MAX_RESTORE_BYTES {
        return Err(RegistryError::bad(
            "backup",
            &format!(
                "about {} MiB, over the {} MiB one log entry may carry: restore a copy of a \
                 data directory instead (docs/operations.md, Backup and restore)",
                bytes >> 20,
                MAX_RESTORE_BYTES >> 20
            ),
        ));
    }
    for app in &backup.apps {
        for i in &app.instances {
            if i.env != app.env || i.appid != app.appid {
                return Err(RegistryError::bad(
                    "backup",
                    &format!(
                        "instance {}/{}/{} filed under {}/{}",
                        i.env, i.appid, i.hostname, app.env, app.appid
                    ),
                ));
            }
            instance_ok(i, l)?;
        }
    }
    Ok(())
}

/// Checks an instance by the rules its registration would meet.
pub fn instance_ok(i: &Instance, l: &Limits) -> Result<(), RegistryError> {
    let as_registered = Registration {
        region: i.region.to_string(),
        zone: i.zone.to_string(),
        env: i.env.to_string(),
        appid: i.appid.to_string(),
        hostname: i.hostname.to_string(),
        addrs: i.addrs.to_vec(),
        version: i.version.to_string(),
        metadata: i.metadata.clone(),
        status: i.status,
    };
    registration_ok(&as_registered, l)
}

/// The name an original discovery cluster is followed under: 1 to 64
/// letters, digits, '.', '_' or '-'.
pub fn upstream_name_ok(name: &str) -> Result<(), RegistryError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(RegistryError::bad(
            "upstream",
            "1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(())
}

/// A backup's timestamps are no later than this node's clock allows a
/// command's: one from the far future would hold every app's timestamp
/// there (watchers could never catch up) and push the counters to their
/// end.
fn backup_stamps_ok(
    backup: &RegistrySnapshot,
    now: Timestamp,
    rules: &Rules,
) -> Result<(), RegistryError> {
    let latest = now.saturating_add(rules.max_clock_skew);
    let ahead = |what: &str, at: Timestamp| {
        if at > latest {
            Err(RegistryError::bad(
                "backup",
                &format!(
                    "{what} is stamped {} s ahead of this node's clock (at most {} ms allowed)",
                    at.saturating_sub(now) / 1_000_000_000,
                    rules.max_clock_skew / 1_000_000
                ),
            ))
        } else {
            Ok(())
        }
    };
    ahead("high_water", backup.high_water)?;
    for app in &backup.apps {
        ahead(&format!("{}/{}", app.env, app.appid), app.latest_timestamp)?;
        for i in &app.instances {
            let stamps = [
                i.reg_timestamp,
                i.up_timestamp,
                i.renew_timestamp,
                i.dirty_timestamp,
                i.latest_timestamp,
            ];
            let what = format!("instance {}/{}/{}", i.env, i.appid, i.hostname);
            stamps.into_iter().try_for_each(|at| ahead(&what, at))?;
        }
    }
    Ok(())
}

/// Checks an instance's identity.
pub fn key_ok(key: &InstanceKey, limits: &Limits) -> Result<(), RegistryError> {
    identity("env", &key.env, limits)?;
    identity("appid", &key.appid, limits)?;
    identity("zone", &key.zone, limits)?;
    identity("hostname", &key.hostname, limits)
}

fn registration_ok(r: &Registration, l: &Limits) -> Result<(), RegistryError> {
    key_ok(&r.key(), l)?;
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
    at_most("addrs", "addresses", r.addrs.len(), l.addrs)?;
    for addr in &r.addrs {
        text("addrs", addr, l.addr_bytes)?;
        address(addr)?;
    }
    // The region is optional (the SDKs send it, curl users often not).
    text("region", &r.region, l.name_bytes)?;
    text("version", &r.version, l.version_bytes)?;
    metadata_ok(&r.metadata, l)
}

fn change_ok(c: &Change, l: &Limits) -> Result<(), RegistryError> {
    identity("hostname", &c.hostname, l)?;
    if let Some(m) = &c.metadata {
        metadata_ok(m, l)?;
    }
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

/// A name that identifies something: present, bounded, free of control
/// characters.
fn identity(param: &str, value: &str, limits: &Limits) -> Result<(), RegistryError> {
    if value.trim().is_empty() {
        return Err(RegistryError::bad(param, "required"));
    }
    text(param, value, limits.name_bytes)
}

/// Free text: bounded, free of control characters.
fn text(param: &str, value: &str, max_bytes: usize) -> Result<(), RegistryError> {
    if value.len() > max_bytes {
        return Err(RegistryError::bad(
            param,
            &format!("{} bytes, at most {max_bytes} allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(RegistryError::bad(
            param,
            "must not hold control characters",
        ));
    }
    Ok(())
}

/// One command must fit one log entry (see [`Limits::entry_bytes`]).
fn fits_an_entry(param: &str, command: &Command, l: &Limits) -> Result<(), RegistryError> {
    let bytes = command.approx_bytes();
    if bytes > l.entry_bytes {
        return Err(RegistryError::bad(
            param,
            &format!(
                "about {bytes} bytes in one write, at most {} allowed in one log entry: split it",
                l.entry_bytes
            ),
        ));
    }
    Ok(())
}

fn at_most(param: &str, what: &str, count: usize, max: usize) -> Result<(), RegistryError> {
    if count > max {
        return Err(RegistryError::bad(
            param,
            &format!("{count} {what}, at most {max} allowed"),
        ));
    }
    Ok(())
}

fn metadata_ok(m: &Metadata, l: &Limits) -> Result<(), RegistryError> {
    at_most("metadata", "keys", m.iter().count(), l.metadata_keys)?;
    let bytes: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > l.metadata_bytes {
        return Err(RegistryError::bad(
            "metadata",
            &format!("{bytes} bytes, at most {} allowed", l.metadata_bytes),
        ));
    }
    for (k, v) in m.iter() {
        if k.is_empty() {
            return Err(RegistryError::bad("metadata", "a key is empty"));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(RegistryError::bad(
                "metadata",
                &format!("{k:?}: must not hold control characters"),
            ));
        }
    }
    Ok(())
}

/// An address as clients dial it: `scheme://host:port`, optionally
/// followed by a path.
fn address(addr: &str) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        Err(RegistryError::bad(
            "addrs",
            &format!("{addr:?} is not scheme://host:port: {why}"),
        ))
    };
    let Some((scheme, rest)) = addr.split_once("://") else {
        return bad("no scheme");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return bad("bad scheme");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return bad("no port");
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("bad port");
    }
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        }
    };
    if !host_ok {
        return bad("bad host");
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
        limits: Limits::DEFAULT,
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

    fn refused(r: Registration) -> String {
        validate(&register(r, NOW), NOW, &RULES)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_size_is_bounded_and_the_refusal_names_param_and_limit() {
        let mut long = registration(&"a".repeat(256));
        assert_eq!(
            refused(long.clone()),
            "appid: 256 bytes, at most 255 allowed"
        );
        long.appid = "a".into();
        long.addrs = (0..17).map(|i| format!("http://h:{}", 1000 + i)).collect();
        assert_eq!(
            refused(long.clone()),
            "addrs: 17 addresses, at most 16 allowed"
        );
        long.addrs = vec![format!("http://{}:1", "h".repeat(600))];
        assert!(refused(long.clone()).starts_with("addrs: "));
        let mut r = registration("a");
        r.version = "v".repeat(129);
        assert_eq!(refused(r), "version: 129 bytes, at most 128 allowed");
        let mut r = registration("a");
        r.metadata = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(refused(r), "metadata: 65 keys, at most 64 allowed");
        let mut r = registration("a");
        r.metadata = [("k".to_string(), "v".repeat(9000))].into_iter().collect();
        assert_eq!(refused(r), "metadata: 9001 bytes, at most 8192 allowed");
    }

    #[test]
    fn addresses_are_scheme_host_port() {
        for good in [
            "grpc://10.0.0.1:9000",
            "http://svc-a.default.svc:8080",
            "http://[::1]:80",
            "http://host:8080/api?x=1",
        ] {
            let mut r = registration("a");
            r.addrs = vec![good.into()];
            assert!(validate(&register(r, NOW), NOW, &RULES).is_ok(), "{good}");
        }
        for bad in [
            "not a url",
            "javascript:alert(1)",
            "http://host",
            "http://:80",
            "http://host:0",
            "http://host:99999",
            "1http://host:80",
            "http://ho st:80",
            "http://[::1:80",
        ] {
            let mut r = registration("a");
            r.addrs = vec![bad.into()];
            let e = refused(r);
            assert!(e.starts_with("addrs: "), "{bad}: {e}");
        }
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
