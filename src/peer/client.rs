//! The calling side of the peer surface: one HTTP client per node, over
//! mutual TLS unless the configuration explicitly says plain, carrying the
//! cluster's calls ([`PeerLink`]) and openraft's RPCs ([`super::network`]);
//! calls to other zones show the zone link's certificate, never the
//! node's.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::framed::Encoding;
use super::paths;
use super::tls::PeerTls;
use crate::auth::Operator;
use crate::cluster::bootstrap::BootstrapState;
use crate::cluster::catch_up::ReadIndex;
use crate::cluster::handover::{ElectRequest, HandoverError};
use crate::cluster::identity;
use crate::cluster::link::{LinkError, PeerLink};
use crate::cluster::membership::{Change, Changed};
use crate::cluster::renewer::{ForwardedRenews, Renews};
use crate::cluster::repair::RepairStep;
use crate::cluster::writer::{Committed, Forward, ForwardError, WriteError};
use crate::local::CheckRecord;
use crate::raft::{Member, NodeId};
use crate::self_discovery::NodeView;
use crate::wire;
use crate::zones::router::{ZoneWrite, ZoneWritten};
use crate::zones::{ZoneAnswer, ZoneCursor};

/// How long a peer may take to accept a connection (and finish the TLS
/// handshake) before it counts as unreachable. A live peer on the same
/// network accepts within a millisecond; the address of a dead one (a
/// killed container's) may not answer at all, and a request waiting on it
/// would hold a forwarded write for its whole bounded wait instead of
/// moving on to the new leader.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A node's client of its peers; cheap to clone (one connection pool per
/// kind of peer). Certificates rotated, [`PeerClient::reload`] swaps the
/// pools: calls already under way finish on the old ones.
#[derive(Clone)]
pub struct PeerClient {
    pools: Arc<RwLock<Pools>>,
    scheme: &'static str,
    /// What the pools are built with: the TLS configurations, and this
    /// node's cluster id once known, sent with every call
    /// ([`identity::HEADER`]).
    built: Arc<RwLock<(Option<PeerTls>, Option<HeaderValue>)>>,
    /// Names dialled at fixed addresses instead of asking DNS.
    hosts: Arc<Hosts>,
    /// Peers that refused a frame lately: spoken to in JSON.
    json_only: Arc<JsonOnly>,
}

/// How long a peer that refused a frame (an earlier build, or one that
/// does not read this build's frame version) is spoken to in JSON before a
/// frame is tried again: a rolling upgrade replaces it meanwhile, and one
/// refused call a minute costs it nothing.
pub const JSON_ONLY_FOR: Duration = Duration::from_secs(60);

/// The peers (by address) that refused a frame, and when.
#[derive(Default)]
struct JsonOnly(parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl JsonOnly {
    fn speaks_frames(&self, addr: &str) -> bool {
        let mut refused = self.0.lock();
        match refused.get(addr) {
            Some(at) if at.elapsed() < JSON_ONLY_FOR => false,
            Some(_) => {
                refused.remove(addr);
                true
            }
            None => true,
        }
    }

    fn refused(&self, addr: &str) {
        self.0
            .lock()
            .insert(addr.to_string(), std::time::Instant::now());
    }
}

/// Names and the addresses they are dialled at, read from a file in
/// `/etc/hosts` format (`node.hosts_file`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts(Vec<(String, std::net::IpAddr)>);

impl Hosts {
    /// Parses `/etc/hosts` lines: an address, then its names; `#` starts a
    /// comment.
    pub fn parse(text: &str) -> Result<Hosts, String> {
        let mut hosts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(addr) = words.next() else { continue };
            let ip = addr
                .parse()
                .map_err(|_| format!("line {}: {addr:?} is no IP address", n + 1))?;
            let names: Vec<&str> = words.collect();
            if names.is_empty() {
                return Err(format!("line {}: {addr} has no name", n + 1));
            }
            hosts.extend(names.into_iter().map(|name| (name.to_string(), ip)));
        }
        Ok(Hosts(hosts))
    }

    /// Reads `path`; none when the path is empty.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Hosts> {
        if path.as_os_str().is_empty() {
            return Ok(Hosts::default());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Hosts::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

struct Pools {
    /// This zone's nodes, shown the node's certificate.
    nodes: reqwest::Client,
    /// Other zones' nodes, shown the zone link's certificate.
    zones: reqwest::Client,
}

fn pool(
    tls: Option<ClientConfig>,
    cluster: Option<&HeaderValue>,
    hosts: &Hosts,
) -> reqwest::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(cluster) = cluster {
        headers.insert(identity::HEADER, cluster.clone());
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    // The port of the address given is not used: the URL's is.
    for (name, ip) in &hosts.0 {
        builder = builder.resolve(name, std::net::SocketAddr::new(*ip, 0));
    }
    match tls {
        Some(tls) => builder.use_preconfigured_tls(tls),
        None => builder,
    }
    .build()
}

fn pools(
    tls: Option<&PeerTls>,
    cluster: Option<&HeaderValue>,
    hosts: &Hosts,
) -> reqwest::Result<Pools> {
    let nodes = pool(tls.map(|t| t.client.clone()), cluster, hosts)?;
    // Without a link certificate other zones are called as this zone's
    // nodes are (and refuse, unless peers are insecure).
    let zones = match tls.and_then(|t| t.link.clone()) {
        Some(link) => pool(Some(link), cluster, hosts)?,
        None => nodes.clone(),
    };
    Ok(Pools { nodes, zones })
}

impl PeerClient {
    /// Calls peers over mutual TLS with `tls`, or in plain HTTP without.
    pub fn new(tls: Option<&PeerTls>) -> reqwest::Result<Self> {
        Self::resolving(tls, Hosts::default())
    }

    /// As [`PeerClient::new`], dialling the names of `hosts` at their
    /// addresses.
    pub fn resolving(tls: Option<&PeerTls>, hosts: Hosts) -> reqwest::Result<Self> {
        Ok(PeerClient {
            pools: Arc::new(RwLock::new(pools(tls, None, &hosts)?)),
            scheme: if tls.is_some() { "https" } else { "http" },
            built: Arc::new(RwLock::new((tls.cloned(), None))),
            hosts: Arc::new(hosts),
            json_only: Arc::default(),
        })
    }

    /// Calls with `tls` from now on.
    pub fn reload(&self, tls: &PeerTls) -> reqwest::Result<()> {
        let mut built = self.built.write();
        *self.pools.write() = pools(Some(tls), built.1.as_ref(), &self.hosts)?;
        built.0 = Some(tls.clone());
        Ok(())
    }

    /// Says this node is of cluster `id` in every call from now on.
    pub fn set_cluster(&self, id: &str) -> anyhow::Result<()> {
        let value = HeaderValue::from_str(id)?;
        let mut built = self.built.write();
        *self.pools.write() = pools(built.0.as_ref(), Some(&value), &self.hosts)?;
        built.1 = Some(value);
        Ok(())
    }

    /// The URL of `path` on `member`'s peer listener.
    pub fn url(&self, member: &Member, path: &str) -> String {
        format!("{}://{}{}", self.scheme, member.raft_addr, path)
    }

    /// The pool for this zone's nodes.
    pub fn http(&self) -> reqwest::Client {
        self.pools.read().nodes.clone()
    }

    /// The pool for other zones' nodes.
    fn zones(&self) -> reqwest::Client {
        self.pools.read().zones.clone()
    }

    /// POSTs `body` as JSON and reads the JSON answer.
    pub async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        to: &Member,
        path: &str,
        body: &Req,
        within: Duration,
    ) -> Result<Resp, LinkError> {
        let request = self.http().post(self.url(to, path)).json(body);
        exchange(request, within).await
    }

    /// POSTs `body` as a binary frame ([`crate::wire`]) and reads the
    /// answer in the encoding it comes in; to a peer that refuses frames
    /// (415: an earlier build), sends it again as JSON, which it read
    /// nothing of, and keeps to JSON with it for [`JSON_ONLY_FOR`].
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        to: &Member,
        path: &str,
        body: &Req,
        within: Duration,
    ) -> Result<Resp, LinkError> {
        if self.json_only.speaks_frames(&to.raft_addr) {
            let frame = wire::encode(body).map_err(|e| LinkError::NotSent(e.to_string()))?;
            let response = self
                .http()
                .post(self.url(to, path))
                .header(CONTENT_TYPE, wire::MEDIA_TYPE)
                .body(frame)
                .timeout(within)
                .send()
                .await
                .map_err(link_error)?;
            if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
                return read(response).await;
            }
            let why = response.text().await.unwrap_or_default();
            tracing::info!(peer = %to, %why, "peer refused a frame: speaking JSON to it");
            self.json_only.refused(&to.raft_addr);
        }
        self.post(to, path, body, within).await
    }

    async fn get<Resp: DeserializeOwned>(
        &self,
        to: &Member,
        path: &str,
        within: Duration,
    ) -> Result<Resp, LinkError> {
        exchange(self.http().get(self.url(to, path)), within).await
    }
}

/// Sends a request and reads its answer, sorting failures by whether
/// the peer may have seen the request.
async fn exchange<Resp: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    within: Duration,
) -> Result<Resp, LinkError> {
    let response = request.timeout(within).send().await.map_err(link_error)?;
    read(response).await
}

/// Reads an answer: its value, in the encoding it came in (a frame or
/// JSON), or why there is none.
async fn read<Resp: DeserializeOwned>(response: reqwest::Response) -> Result<Resp, LinkError> {
    let status = response.status();
    if status == StatusCode::INSUFFICIENT_STORAGE {
        // The peer took nothing (its disk is short of room): safe to send
        // again later, as if it had not been reached.
        let why = response.text().await.unwrap_or_default();
        return Err(LinkError::NotSent(format!("HTTP {status}: {why}")));
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Err(LinkError::TooLarge);
    }
    if status == StatusCode::CONFLICT {
        // Another cluster's node: what it said is the reason.
        let why = response.text().await.unwrap_or_default();
        return Err(LinkError::Failed(format!("HTTP {status}: {why}")));
    }
    if status == StatusCode::FORBIDDEN {
        return Err(refusal(response).await);
    }
    if !status.is_success() {
        return Err(LinkError::Failed(format!("HTTP {status}")));
    }
    if Encoding::of(response.headers()) != Some(Encoding::Frame) {
        return response.json().await.map_err(link_error);
    }
    let body = response.bytes().await.map_err(link_error)?;
    wire::decode(&body).map_err(|e| LinkError::Failed(e.to_string()))
}

/// A peer's 403: its guard refused this node, and said why (`refused: …`).
async fn refusal(response: reqwest::Response) -> LinkError {
    let why = response.text().await.unwrap_or_default();
    LinkError::Refused(why.strip_prefix("refused: ").unwrap_or(&why).to_string())
}

/// Sorts a transport error: never connected (safe to resend), timed out,
/// or failed on the way.
pub fn link_error(e: reqwest::Error) -> LinkError {
    if e.is_connect() {
        LinkError::NotSent(error_chain(&e))
    } else if e.is_timeout() {
        LinkError::TimedOut
    } else {
        LinkError::Failed(error_chain(&e))
    }
}

/// An error with its causes, so a refused handshake says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl PeerLink for PeerClient {
    async fn propose(
        &self,
        to: &Member,
        forward: &Forward,
        within: Duration,
    ) -> Result<Result<Committed, ForwardError>, LinkError> {
        self.call(to, paths::PROPOSE, forward, within).await
    }

    async fn renew(
        &self,
        to: &Member,
        renews: &Renews,
        within: Duration,
    ) -> Result<ForwardedRenews, LinkError> {
        self.call(to, paths::RENEW, renews, within).await
    }

    async fn bootstrap_state(
        &self,
        to: &Member,
        asker: Option<NodeId>,
        within: Duration,
    ) -> Result<BootstrapState, LinkError> {
        let mut request = self.http().get(self.url(to, paths::BOOTSTRAP));
        if let Some(asker) = asker {
            request = request.query(&[("from", asker)]);
        }
        exchange(request, within).await
    }

    async fn read_index(&self, to: &Member, within: Duration) -> Result<ReadIndex, LinkError> {
        self.get(to, paths::READ_INDEX, within).await
    }

    async fn health(&self, to: &Member, within: Duration) -> Result<bool, LinkError> {
        let response = self
            .http()
            .get(self.url(to, paths::HEALTH))
            .timeout(within)
            .send()
            .await
            .map_err(link_error)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            reqwest::StatusCode::FORBIDDEN => Err(refusal(response).await),
            s => Err(LinkError::Failed(format!(
                "HTTP {s}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }

    async fn membership(
        &self,
        to: &Member,
        change: &Change,
        operator: &Operator,
        within: Duration,
    ) -> Result<Result<Changed, String>, LinkError> {
        let request = self
            .http()
            .post(self.url(to, paths::MEMBERSHIP))
            .header(AUTHORIZATION, &operator.0)
            .json(change);
        exchange(request, within).await
    }

    async fn elect(
        &self,
        to: &Member,
        request: &ElectRequest,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError> {
        self.post(to, paths::ELECT, request, within).await
    }

    async fn zone_changes(
        &self,
        to: &Member,
        cursor: &ZoneCursor,
        bytes: usize,
        hold: Duration,
        within: Duration,
    ) -> Result<ZoneAnswer, LinkError> {
        let mut path = format!(
            "{}?after={}&term={}&bytes={bytes}&hold_ms={}",
            paths::ZONE_CHANGES,
            cursor.after,
            cursor.term,
            hold.as_millis()
        );
        if let Some(log) = &cursor.log {
            path.push_str("&log=");
            path.extend(form_urlencoded::byte_serialize(log.as_bytes()));
        }
        exchange(self.zones().get(self.url(to, &path)), within).await
    }

    async fn check(
        &self,
        to: &Member,
        index: u64,
        apps: bool,
        hold: Duration,
    ) -> Result<Option<CheckRecord>, LinkError> {
        let path = format!(
            "{}?index={index}&apps={apps}&hold_ms={}",
            paths::CHECK,
            hold.as_millis()
        );
        // Every app's digest can take a while to send.
        self.get(to, &path, hold + Duration::from_secs(5)).await
    }

    async fn repair(
        &self,
        to: &Member,
        step: &RepairStep,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError> {
        self.post(to, paths::REPAIR, step, within).await
    }

    async fn replica(
        &self,
        to: &Member,
        request: &crate::cluster::replica::Request,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError> {
        self.post(to, paths::REPLICA, request, within).await
    }

    async fn zone_nodes(&self, to: &Member, within: Duration) -> Result<Vec<NodeView>, LinkError> {
        let url = self.url(to, paths::ZONE_NODES);
        exchange(self.zones().get(url), within).await
    }

    async fn zone_write(
        &self,
        to: &Member,
        write: &ZoneWrite,
        within: Duration,
    ) -> Result<Result<ZoneWritten, WriteError>, LinkError> {
        let url = self.url(to, paths::ZONE_WRITE);
        exchange(self.zones().post(url).json(write), within).await
    }

    async fn transfer_leader(
        &self,
        to: &Member,
        successor: Option<NodeId>,
        operator: &Operator,
        within: Duration,
    ) -> Result<Result<NodeId, HandoverError>, LinkError> {
        let request = self
            .http()
            .post(self.url(to, paths::TRANSFER_LEADER))
            .header(AUTHORIZATION, &operator.0)
            .json(&successor);
        exchange(request, within).await
    }
}

#[cfg(test)]
mod tests {
    use super::Hosts;

    #[test]
    fn a_hosts_file_names_addresses() {
        let hosts = Hosts::parse("# pods\n127.0.1.10 a a.svc  # first\n\n::1 b\n").unwrap();
        let names: Vec<(&str, String)> = hosts
            .0
            .iter()
            .map(|(n, ip)| (n.as_str(), ip.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "127.0.1.10".to_string()),
                ("a.svc", "127.0.1.10".to_string()),
                ("b", "::1".to_string())
            ]
        );
        assert!(Hosts::parse("nowhere a").unwrap_err().contains("line 1"));
        assert!(Hosts::parse("127.0.0.1").unwrap_err().contains("no name"));
    }
}

#[cfg(test)]
mod framing_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::Request;
    use axum::middleware::{self, Next};
    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;
    use crate::peer::framed::Framed;
    use crate::raft::{Proposal, ProposalResult};
    use crate::registry::{Applied, Command};

    fn committed() -> Result<Committed, ForwardError> {
        Ok(Committed {
            result: ProposalResult {
                outcomes: vec![Ok(Applied::Done)],
            },
            index: 7,
        })
    }

    /// A peer listening with `routes`; counts the requests it gets as
    /// (frames, others).
    async fn peer(routes: Router) -> (Member, Arc<(AtomicUsize, AtomicUsize)>) {
        let seen = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let counts = seen.clone();
        let app = routes.layer(middleware::from_fn(move |req: Request, next: Next| {
            let counts = counts.clone();
            async move {
                let framed = Encoding::of(req.headers()) == Some(Encoding::Frame);
                let count = if framed { &counts.0 } else { &counts.1 };
                count.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let member = Member {
            raft_addr: addr.to_string(),
            ..Member::default()
        };
        (member, seen)
    }

    fn forward() -> Forward {
        Forward {
            proposal: Proposal {
                commands: vec![Command::Check { round: 1 }],
            },
            origins: vec![crate::auth::Origin::Cluster],
        }
    }

    #[tokio::test]
    async fn an_earlier_build_that_reads_json_only_is_spoken_to_in_json() {
        // The route as an earlier build served it: axum's JSON extractor,
        // which refuses any other media type with 415 before the handler.
        let (old, seen) = peer(Router::new().route(
            paths::PROPOSE,
            post(|Json(_): Json<Forward>| async { Json(committed()) }),
        ))
        .await;
        let client = PeerClient::new(None).unwrap();
        let within = Duration::from_secs(5);
        let answer = client.propose(&old, &forward(), within).await.unwrap();
        assert_eq!(answer.unwrap().index, 7);
        // A frame, refused; then the same as JSON.
        assert_eq!(seen.0.load(Ordering::SeqCst), 1);
        assert_eq!(seen.1.load(Ordering::SeqCst), 1);
        // From then on, JSON only.
        client
            .propose(&old, &forward(), within)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.0.load(Ordering::SeqCst), 1);
        assert_eq!(seen.1.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_peer_of_this_build_gets_frames_and_answers_in_frames() {
        let (new, seen) = peer(Router::new().route(
            paths::PROPOSE,
            post(|body: Framed<Forward>| async move {
                assert_eq!(body.value, forward());
                body.encoding.answer(committed())
            }),
        ))
        .await;
        let client = PeerClient::new(None).unwrap();
        for _ in 0..2 {
            let answer = client
                .propose(&new, &forward(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(answer.unwrap().index, 7);
        }
        assert_eq!(seen.0.load(Ordering::SeqCst), 2);
        assert_eq!(seen.1.load(Ordering::SeqCst), 0);
    }
}
