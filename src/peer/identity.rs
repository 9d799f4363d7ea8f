//! Who a peer is. A certificate names its holder for machines in one
//! URI subject-alternative name, and that name, not anything a request
//! body says, is who the caller is:
//!
//! - `discovery://<zone>/node/<id>`: node `<id>` of zone `<zone>`'s
//!   cluster, which may take part in Raft as far as membership allows;
//! - `discovery://<zone>/link`: zone `<zone>`'s link to other zones,
//!   which may read a zone's change stream and nodes and hand it writes for
//!   its own instances, never call a Raft route.
//!
//! Each zone is its own trust domain: its CA signs its nodes and its link,
//! and another zone trusts that CA for links of that zone only.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use x509_parser::extensions::GeneralName;

use crate::raft::NodeId;

/// The URI scheme of identities.
pub const SCHEME: &str = "discovery";

/// Bytes a zone keeps as they are in the URI (the rest is %-encoded).
const ZONE_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// What a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A node of a zone's cluster.
    Node { zone: String, id: NodeId },
    /// A zone's link to the other zones.
    Link { zone: String },
}

impl Identity {
    /// The zone whose CA vouches for this identity.
    pub fn zone(&self) -> &str {
        match self {
            Identity::Node { zone, .. } | Identity::Link { zone } => zone,
        }
    }

    /// The identity as a SAN URI.
    pub fn uri(&self) -> String {
        let zone = utf8_percent_encode(self.zone(), ZONE_KEEP);
        match self {
            Identity::Node { id, .. } => format!("{SCHEME}://{zone}/node/{id}"),
            Identity::Link { .. } => format!("{SCHEME}://{zone}/link"),
        }
    }

    /// Reads an identity URI; `None` for a URI of another scheme, an error
    /// for a `discovery://` URI that is not well formed.
    pub fn parse(uri: &str) -> Option<Result<Identity, String>> {
        let rest = uri.strip_prefix(SCHEME)?.strip_prefix("://")?;
        Some(parse_rest(rest).ok_or_else(|| format!("{uri:?} is not a peer identity")))
    }

    /// The one identity a certificate (DER) carries.
    pub fn of_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let subject = cert.subject().to_string();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| format!("{subject}: unreadable subject alternative names: {e}"))?;
        let mut found = Vec::new();
        for name in sans.iter().flat_map(|s| s.value.general_names.iter()) {
            if let GeneralName::URI(uri) = name {
                if let Some(identity) = Identity::parse(uri) {
                    found.push(identity.map_err(|e| format!("{subject}: {e}"))?);
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "{subject} carries no peer identity (a {SCHEME}:// URI; \
                 made by `discoveryctl certs node` since identities exist)"
            )),
            n => Err(format!("{subject} carries {n} peer identities, not one")),
        }
    }
}

fn parse_rest(rest: &str) -> Option<Identity> {
    let (zone, path) = rest.split_once('/')?;
    let zone = percent_decode_str(zone).decode_utf8().ok()?.into_owned();
    if zone.is_empty() {
        return None;
    }
    match path.split_once('/') {
        Some(("node", id)) if id.bytes().all(|b| b.is_ascii_digit()) => Some(Identity::Node {
            zone,
            id: id.parse().ok()?,
        }),
        None if path == "link" => Some(Identity::Link { zone }),
        _ => None,
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { zone, id } => write!(f, "node {id} of zone {zone}"),
            Identity::Link { zone } => write!(f, "the link of zone {zone}"),
        }
    }
}

/// Who a request on the peer port comes from, as the handshake proved
/// it: what every peer route is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node of this zone: its certificate is this zone's CA's, for this
    /// id.
    Node(NodeId),
    /// Another zone's link, vouched for by that zone's CA.
    Link(String),
    /// A certificate a trusted CA signed that proves no identity this node
    /// takes (none at all, a node of another zone...): why.
    Nobody(std::sync::Arc<str>),
    /// Peers talk plain HTTP (`tls.insecure_peers`): nothing is proven
    /// and every caller is trusted, as that setting says.
    Unproven,
}

impl Caller {
    pub fn nobody(why: String) -> Caller {
        Caller::Nobody(why.into())
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Node(id) => write!(f, "node {id}"),
            Caller::Link(zone) => write!(f, "the link of zone {zone}"),
            Caller::Nobody(why) => write!(f, "a certificate that proves no identity ({why})"),
            Caller::Unproven => write!(f, "an unproven peer (tls.insecure_peers)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for identity in [
            Identity::Node {
                zone: "sh001".into(),
                id: 3,
            },
            Identity::Link {
                zone: "sh002".into(),
            },
            Identity::Node {
                zone: "a zone/with:odd%chars".into(),
                id: u64::MAX,
            },
        ] {
            let uri = identity.uri();
            assert!(uri.is_ascii(), "{uri}");
            assert_eq!(Identity::parse(&uri), Some(Ok(identity)), "{uri}");
        }
        assert_eq!(
            Identity::Node {
                zone: "sh001".into(),
                id: 3
            }
            .uri(),
            "discovery://sh001/node/3"
        );
    }

    #[test]
    fn other_uris_are_not_identities_and_malformed_ones_are_errors() {
        assert_eq!(Identity::parse("spiffe://sh001/node/1"), None);
        assert_eq!(Identity::parse("https://example.com/"), None);
        for bad in [
            "discovery://sh001/node/",
            "discovery://sh001/node/-1",
            "discovery://sh001/node/1/x",
            "discovery://sh001/node/+1",
            "discovery:///node/1",
            "discovery://sh001/links",
            "discovery://sh001",
            "discovery://sh001/node/99999999999999999999999",
        ] {
            assert!(matches!(Identity::parse(bad), Some(Err(_))), "{bad}");
        }
    }
}
