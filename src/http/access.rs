//! Who may change what through the client port. Existing SDKs send no
//! credentials, so registry writes are limited by source address
//! (`allow_write_from`, as Consul's `allow_write_http_from`); cluster
//! changes need the admin bearer token. Reads and polls stay open.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use super::reply;
use crate::auth::AdminToken;

/// The rules, from the `[security]` section.
#[derive(Clone, Debug)]
pub struct Access {
    /// Networks `register`, `renew`, `cancel` and `set` are taken from.
    pub allow_write_from: Vec<IpNet>,
    /// The bearer token admin changes need.
    pub admin_token: AdminToken,
}

impl Access {
    /// Whether a write from `ip` is allowed.
    pub fn may_write(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_write_from.iter().any(|net| net.contains(&ip))
    }

    fn rule(&self) -> String {
        let nets: Vec<String> = self.allow_write_from.iter().map(IpNet::to_string).collect();
        format!("allow_write_from = [{}]", nets.join(", "))
    }
}

/// Lets a registry write through only from an allowed network.
pub async fn writes(
    State(access): State<Arc<Access>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if access.may_write(remote.ip()) {
        return next.run(request).await;
    }
    let message = format!(
        "writes from {} are not allowed by {}",
        remote.ip().to_canonical(),
        access.rule()
    );
    reply::answer(-403, &message, None)
}

/// Lets an admin change through only with the admin token.
pub async fn admin(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match access.admin_token.check(header) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!("admin change refused: {reason}");
            reply::unauthorized(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(nets: &[&str], token: Option<&str>) -> Access {
        Access {
            allow_write_from: nets.iter().map(|n| n.parse().unwrap()).collect(),
            admin_token: AdminToken::new(token.map(str::to_string)),
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
        assert_eq!(a.rule(), "allow_write_from = [127.0.0.1/32, 10.0.0.0/8]");
        let everyone = access(&["0.0.0.0/0", "::/0"], None);
        assert!(everyone.may_write("192.0.2.7".parse().unwrap()));
        assert!(everyone.may_write("2001:db8::1".parse().unwrap()));
    }
}
