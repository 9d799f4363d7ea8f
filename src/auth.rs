//! Who may change what: registry writes only from the networks of
//! `allow_write_from` (existing SDKs send no credentials), and membership
//! changes, leadership transfers, restores and schedules only with the
//! admin bearer token. Checked by the node a client or an operator calls,
//! and again by the leader a write or change is handed to: the sender
//! ([`Origin`]) travels with it. Plain logic, no I/O: both listeners and
//! the write path use it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::registry::RegistryError;

/// Who asked for a write, carried with it to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A client at this address.
    Client(IpAddr),
    /// An operator, with the `Authorization` header they sent.
    Operator(String),
    /// The cluster itself (evictions, renew batches, the zone stream, the
    /// log's name), or another zone's link handing over a write of one of
    /// this zone's instances.
    Cluster,
}

impl From<Operator> for Origin {
    fn from(operator: Operator) -> Self {
        Origin::Operator(operator.0)
    }
}

/// The rules, from the `[security]` section.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Networks `register`, `renew`, `cancel` and `set` are taken from.
    pub allow_write_from: Vec<IpNet>,
    /// The bearer token admin changes need.
    pub admin_token: AdminToken,
    /// When set, `/metrics` needs it (or the admin token).
    pub metrics_token: AdminToken,
    /// Whether `/admin/status` shows peer addresses and storage figures to
    /// anyone; when false, only to a holder of either token.
    pub public_status: bool,
}

impl Access {
    /// Whether a write from `ip` is allowed.
    pub fn may_write(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_write_from.iter().any(|net| net.contains(&ip))
    }

    /// The `-403` a write from `ip` gets: it names the rule, never the
    /// networks it lists.
    pub fn refused(ip: IpAddr) -> RegistryError {
        RegistryError::Forbidden(format!(
            "writes from {} are refused by this cluster's allow_write_from rule",
            ip.to_canonical()
        ))
    }

    /// Checks a write's sender.
    pub fn check(&self, origin: &Origin) -> Result<(), RegistryError> {
        match origin {
            Origin::Client(ip) if self.may_write(*ip) => Ok(()),
            Origin::Client(ip) => Err(Self::refused(*ip)),
            Origin::Operator(authorization) => self
                .admin_token
                .check(Some(authorization))
                .map_err(|e| RegistryError::Forbidden(e.to_string())),
            Origin::Cluster => Ok(()),
        }
    }
}

/// The admin token this node was given; none means admin changes are
/// refused.
#[derive(Clone, Debug, Default)]
pub struct AdminToken(Option<String>);

/// The `Authorization` header value of the operator who asked for a change,
/// carried with the change when it is handed to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator(pub String);

impl AdminToken {
    pub fn new(token: Option<String>) -> Self {
        AdminToken(token)
    }

    /// Checks an `Authorization` header against the admin token.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), &'static str> {
        let Some(token) = &self.0 else {
            return Err("admin changes are disabled: no admin token is configured on this node (security.admin_token or DISCOVERY_ADMIN_TOKEN)");
        };
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(
                "admin changes need the admin token: Authorization: Bearer <token> \
                 (discoveryctl --token, or DISCOVERY_ADMIN_TOKEN)",
            );
        };
        if same(given.trim().as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err("wrong admin token: give the node's security.admin_token \
                 (discoveryctl --token, or DISCOVERY_ADMIN_TOKEN)")
        }
    }
}

impl Access {
    /// Whether `authorization` carries the admin token, or the metrics
    /// token when one is set: what lets a caller see what strangers do not.
    pub fn insider(&self, authorization: Option<&str>) -> bool {
        self.admin_token.check(authorization).is_ok()
            || (self.metrics_token.is_set() && self.metrics_token.check(authorization).is_ok())
    }
}

impl AdminToken {
    /// Whether a token is configured at all.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(nets: &[&str], token: Option<&str>) -> Access {
        Access {
            allow_write_from: nets.iter().map(|n| n.parse().unwrap()).collect(),
            admin_token: AdminToken::new(token.map(str::to_string)),
            ..Access::default()
        }
    }

    #[test]
    fn writes_come_only_from_listed_networks() {
        let a = access(&["127.0.0.1/32", "10.0.0.0/8"], None);
        assert!(a.may_write("127.0.0.1".parse().unwrap()));
        assert!(a.may_write("10.20.30.40".parse().unwrap()));
        assert!(!a.may_write("127.0.0.2".parse().unwrap()));
        // An IPv4 client on a dual-stack socket shows as IPv4-mapped IPv6.
        assert!(a.may_write("::ffff:10.1.2.3".parse().unwrap()));
        let everyone = access(&["0.0.0.0/0", "::/0"], None);
        assert!(everyone.may_write("192.0.2.7".parse().unwrap()));
        assert!(everyone.may_write("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn a_write_handed_on_is_checked_by_its_origin() {
        let a = access(&["10.0.0.0/8"], Some("s3cret"));
        assert!(a
            .check(&Origin::Client("10.1.1.1".parse().unwrap()))
            .is_ok());
        let refused = a.check(&Origin::Client("192.0.2.1".parse().unwrap()));
        let Err(RegistryError::Forbidden(message)) = refused else {
            panic!("{refused:?}");
        };
        assert!(
            message.contains("192.0.2.1") && !message.contains("10.0.0.0"),
            "{message}"
        );
        assert!(a.check(&Origin::Operator("Bearer s3cret".into())).is_ok());
        assert!(a.check(&Origin::Operator("Bearer nope".into())).is_err());
        assert!(a.check(&Origin::Cluster).is_ok());
    }

    #[test]
    fn admin_changes_need_the_exact_token() {
        let a = AdminToken::new(Some("s3cret".into()));
        assert!(a.check(Some("Bearer s3cret")).is_ok());
        assert!(a.check(Some("Bearer s3cre")).is_err());
        assert!(a.check(Some("Bearer s3cretX")).is_err());
        assert!(a.check(Some("s3cret")).is_err());
        assert!(a.check(None).is_err());
        let none = AdminToken::new(None);
        assert!(none.check(Some("Bearer ")).is_err());
    }
}
