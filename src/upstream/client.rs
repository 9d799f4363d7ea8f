//! Calling an original discovery cluster through its public HTTP API, as
//! its own SDKs do: `fetch/all`, `fetchs`, `polls`, and `register`,
//! `renew`, `cancel` for what this cluster exports. Any of its nodes
//! answers; a node that fails is left for the next.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::registry::{parse_metadata, Instance, InstanceKey, Status, Timestamp};

/// The most bytes one answer of the original may take: a `fetch/all` of a
/// registry of 100,000 instances is about 40 MiB.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The most bytes of appids and timestamps one `polls` or `fetchs`
/// request carries in its query: the original's HTTP server takes 1 MiB
/// of head; ours 64 KiB of URI.
pub const MAX_QUERY_BYTES: usize = 16 << 10;

/// What a long poll on some apps answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// These apps changed, now at these timestamps.
    Changed(BTreeMap<String, Timestamp>),
    /// Nothing changed within the original's hold (`-304`).
    NotModified,
}

/// An original discovery cluster, by some of its nodes' client addresses.
pub struct Original {
    http: reqwest::Client,
    /// `http://host:port` of each node.
    nodes: Vec<String>,
    next: AtomicUsize,
    /// The bound on a call; a poll's is the original's hold and this.
    within: Duration,
    poll_within: Duration,
}

/// The envelope every answer of the original comes in.
#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// An instance as the original renders it (`metadata` may be `null`,
/// values of any scalar type).
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    region: String,
    zone: String,
    env: String,
    appid: String,
    hostname: String,
    #[serde(default)]
    addrs: Option<Vec<String>>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    status: u32,
    #[serde(default)]
    reg_timestamp: Timestamp,
    #[serde(default)]
    up_timestamp: Timestamp,
    #[serde(default)]
    renew_timestamp: Timestamp,
    #[serde(default)]
    dirty_timestamp: Timestamp,
    #[serde(default)]
    latest_timestamp: Timestamp,
}

impl Wire {
    fn instance(self) -> anyhow::Result<Instance> {
        let status = Status::try_from(self.status).map_err(|e| anyhow!("{e}"))?;
        let metadata = match self.metadata {
            None | Some(serde_json::Value::Null) => Default::default(),
            Some(m) => parse_metadata(&m.to_string()).map_err(|e| anyhow!("{e}"))?,
        };
        Ok(Instance {
            region: self.region.into(),
            zone: self.zone.into(),
            env: self.env.into(),
            appid: self.appid.into(),
            hostname: self.hostname.into(),
            addrs: self.addrs.unwrap_or_default().into(),
            version: self.version.into(),
            metadata,
            status,
            reg_timestamp: self.reg_timestamp,
            up_timestamp: self.up_timestamp,
            renew_timestamp: self.renew_timestamp,
            dirty_timestamp: self.dirty_timestamp,
            latest_timestamp: self.latest_timestamp,
        })
    }
}

/// Instances as read, and how many could not be (a status or metadata
/// this registry does not hold).
#[derive(Debug, Default)]
pub struct Read {
    pub instances: Vec<Instance>,
    pub unreadable: usize,
}

impl Read {
    fn take(&mut self, wire: Vec<Wire>) {
        for w in wire {
            match w.instance() {
                Ok(i) => self.instances.push(i),
                Err(_) => self.unreadable += 1,
            }
        }
    }
}

/// One app as `fetch`/`fetchs` renders it.
#[derive(Deserialize)]
struct FetchData {
    #[serde(default)]
    instances: BTreeMap<String, Vec<Wire>>,
    latest_timestamp: Timestamp,
}

/// `http://` added to a bare `host:port`.
fn base(node: &str) -> String {
    let node = node.trim_end_matches('/');
    if node.starts_with("http://") || node.starts_with("https://") {
        node.to_string()
    } else {
        format!("http://{node}")
    }
}

/// Cuts `(appid, timestamp)` pairs into groups whose query stays within
/// [`MAX_QUERY_BYTES`].
pub fn in_queries<T: Clone>(apps: &[(String, T)]) -> Vec<Vec<(String, T)>> {
    crate::cluster::batches::split_by_size(
        apps.iter().cloned(),
        |(appid, _)| appid.len() * 3 + 48,
        MAX_QUERY_BYTES,
    )
}

impl Original {
    pub fn new(nodes: &[String], within: Duration, poll_within: Duration) -> anyhow::Result<Self> {
        if nodes.is_empty() {
            bail!("no node of the original discovery is given");
        }
        Ok(Original {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .build()?,
            nodes: nodes.iter().map(|n| base(n)).collect(),
            next: AtomicUsize::new(0),
            within,
            poll_within,
        })
    }

    /// One call, to the node in turn and then to each other one while
    /// they fail to answer; the envelope of the first that answers.
    async fn call(
        &self,
        post: bool,
        path: &str,
        query: &[(&str, String)],
        within: Duration,
    ) -> anyhow::Result<Envelope> {
        let first = self.next.load(Ordering::Relaxed);
        let mut last = None;
        for n in 0..self.nodes.len() {
            let at = (first + n) % self.nodes.len();
            let url = format!("{}{path}", self.nodes[at]);
            let request = if post {
                self.http.post(&url).form(query)
            } else {
                self.http.get(&url).query(query)
            };
            match self.answer(request.timeout(within)).await {
                Ok(envelope) => return Ok(envelope),
                Err(e) => {
                    // The next call starts at the next node.
                    self.next.store(at + 1, Ordering::Relaxed);
                    last = Some(e.context(url));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no node")))
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Envelope> {
        let mut response = request.send().await?;
        // 503: start-up protection, or a node that cannot serve: the next.
        if !response.status().is_success() {
            bail!("HTTP {}", response.status());
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_ANSWER_BYTES)
        {
            bail!("an answer over {} MiB", MAX_ANSWER_BYTES >> 20);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                bail!("an answer over {} MiB", MAX_ANSWER_BYTES >> 20);
            }
            body.extend_from_slice(&chunk);
        }
        let envelope: Envelope = serde_json::from_slice(&body).context("not a discovery answer")?;
        // -500 is the original's start-up protection by a bug; -503 ours.
        if envelope.code == -500 || envelope.code == -503 {
            bail!("code {}: {}", envelope.code, envelope.message);
        }
        Ok(envelope)
    }

    fn data<T: serde::de::DeserializeOwned>(envelope: Envelope, what: &str) -> anyhow::Result<T> {
        if envelope.code != 0 {
            bail!("{what}: code {} {}", envelope.code, envelope.message);
        }
        serde_json::from_value(envelope.data.unwrap_or(serde_json::Value::Null))
            .with_context(|| format!("{what}: unexpected data"))
    }

    /// Every instance the original holds, of every env.
    pub async fn fetch_all(&self) -> anyhow::Result<Read> {
        let envelope = self
            .call(false, "/discovery/fetch/all", &[], self.within)
            .await?;
        let apps: BTreeMap<String, Vec<Wire>> = Self::data(envelope, "fetch/all")?;
        let mut read = Read::default();
        for (_, wire) in apps {
            read.take(wire);
        }
        Ok(read)
    }

    /// Every instance, waiting ones too, of some apps of one env, with
    /// each app's timestamp; an app the original no longer has is left out.
    pub async fn fetchs(
        &self,
        env: &str,
        appids: &[String],
    ) -> anyhow::Result<(Read, BTreeMap<String, Timestamp>)> {
        let mut query = vec![("env", env.to_string()), ("status", "3".to_string())];
        query.extend(appids.iter().map(|a| ("appid", a.clone())));
        let envelope = self
            .call(false, "/discovery/fetchs", &query, self.within)
            .await?;
        // Every app unknown: the original answers -404.
        if envelope.code == -404 {
            return Ok((Read::default(), BTreeMap::new()));
        }
        let apps: BTreeMap<String, FetchData> = Self::data(envelope, "fetchs")?;
        let mut read = Read::default();
        let mut stamps = BTreeMap::new();
        for (appid, app) in apps {
            stamps.insert(appid, app.latest_timestamp);
            for (_, wire) in app.instances {
                read.take(wire);
            }
        }
        Ok((read, stamps))
    }

    /// A long poll on some apps of one env, from `hostname`.
    pub async fn polls(
        &self,
        env: &str,
        hostname: &str,
        apps: &[(String, Timestamp)],
    ) -> anyhow::Result<Polled> {
        let mut query = vec![("env", env.to_string()), ("hostname", hostname.to_string())];
        query.extend(apps.iter().map(|(a, _)| ("appid", a.clone())));
        query.extend(
            apps.iter()
                .map(|(_, t)| ("latest_timestamp", t.to_string())),
        );
        let envelope = self
            .call(false, "/discovery/polls", &query, self.poll_within)
            .await?;
        match envelope.code {
            -304 => Ok(Polled::NotModified),
            0 => {
                let apps: BTreeMap<String, Stamp> = Self::data(envelope, "polls")?;
                Ok(Polled::Changed(
                    apps.into_iter()
                        .map(|(a, s)| (a, s.latest_timestamp))
                        .collect(),
                ))
            }
            code => bail!("polls: code {code} {}", envelope.message),
        }
    }

    /// Registers (or registers again) one of this cluster's instances.
    pub async fn register(&self, i: &Instance) -> anyhow::Result<()> {
        let mut form = vec![
            ("region", i.region.to_string()),
            ("zone", i.zone.to_string()),
            ("env", i.env.to_string()),
            ("appid", i.appid.to_string()),
            ("hostname", i.hostname.to_string()),
            ("status", u32::from(i.status).to_string()),
            ("version", i.version.to_string()),
            ("metadata", serde_json::to_string(&i.metadata)?),
            // The original keeps the newer of two copies by this.
            ("dirty_timestamp", i.dirty_timestamp.to_string()),
        ];
        form.extend(i.addrs.iter().map(|a| ("addrs", a.clone())));
        let envelope = self
            .call(true, "/discovery/register", &form, self.within)
            .await?;
        if envelope.code != 0 {
            bail!("register: code {} {}", envelope.code, envelope.message);
        }
        Ok(())
    }

    /// Renews one exported instance: `false` when the original does not
    /// hold it (it is to be registered again).
    pub async fn renew(&self, key: &InstanceKey) -> anyhow::Result<bool> {
        let envelope = self
            .call(true, "/discovery/renew", &key_form(key), self.within)
            .await?;
        match envelope.code {
            0 => Ok(true),
            -404 => Ok(false),
            code => bail!("renew: code {code} {}", envelope.message),
        }
    }

    /// Cancels one instance this cluster exported; one the original no
    /// longer holds is cancelled already.
    pub async fn cancel(&self, key: &InstanceKey) -> anyhow::Result<()> {
        let envelope = self
            .call(true, "/discovery/cancel", &key_form(key), self.within)
            .await?;
        match envelope.code {
            0 | -404 => Ok(()),
            code => bail!("cancel: code {code} {}", envelope.message),
        }
    }
}

#[derive(Deserialize)]
struct Stamp {
    latest_timestamp: Timestamp,
}

fn key_form(key: &InstanceKey) -> Vec<(&'static str, String)> {
    vec![
        ("zone", key.zone.clone()),
        ("env", key.env.clone()),
        ("appid", key.appid.clone()),
        ("hostname", key.hostname.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_rendering_reads_back_as_instances() {
        // From `spec/wire/13_fetch_all.txt`: metadata null, and an address
        // the original stored comma-joined.
        let wire: Vec<Wire> = serde_json::from_str(
            r#"[{"region":"","zone":"sh001","env":"dev","appid":"change.app","hostname":"c1",
                 "addrs":["grpc://127.0.0.1:9200"],"version":"","metadata":null,"status":1,
                 "reg_timestamp":1,"up_timestamp":2,"renew_timestamp":3,"dirty_timestamp":4,
                 "latest_timestamp":5},
                {"region":"sh","zone":"sh001","env":"dev","appid":"demo.app","hostname":"host1",
                 "addrs":["grpc://127.0.0.1:9001,http://127.0.0.1:8001"],"version":"v1",
                 "metadata":{"weight":"30","n":7},"status":2,"reg_timestamp":1,
                 "up_timestamp":1,"renew_timestamp":1,"dirty_timestamp":1,"latest_timestamp":1},
                {"zone":"sh001","env":"dev","appid":"bad","hostname":"h","status":3}]"#,
        )
        .unwrap();
        let mut read = Read::default();
        read.take(wire);
        assert_eq!(read.unreadable, 1, "status 3 is not an instance here");
        let [a, b] = &read.instances[..] else {
            panic!("{:?}", read.instances);
        };
        assert!(a.metadata.is_empty());
        assert_eq!((a.dirty_timestamp, a.latest_timestamp), (4, 5));
        assert_eq!(b.status, Status::Waiting);
        assert_eq!(b.metadata.get("n"), Some("7"));
        assert_eq!(b.addrs[..], ["grpc://127.0.0.1:9001,http://127.0.0.1:8001"]);
    }

    #[test]
    fn long_app_lists_are_cut_into_queries_of_bounded_size() {
        let apps: Vec<(String, i64)> = (0..2000)
            .map(|n| {
                (
                    format!("some.rather.long.app.name-{n}"),
                    1_795_535_487_011_566_506,
                )
            })
            .collect();
        let groups = in_queries(&apps);
        assert!(groups.len() > 1);
        let back: Vec<_> = groups.concat();
        assert_eq!(back, apps);
        for g in &groups {
            let query: usize = g
                .iter()
                .map(|(a, t)| a.len() + t.to_string().len() + 30)
                .sum();
            assert!(query <= MAX_QUERY_BYTES, "{query}");
        }
    }

    /// A node answering `head` and then `body_bytes` of zeros, once.
    async fn answering(head: String, body_bytes: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let head = head.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(head.as_bytes()).await;
                    let chunk = vec![b' '; 1 << 20];
                    let mut sent = 0;
                    while sent < body_bytes {
                        if stream.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_original_answering_without_end_is_cut_off_at_the_cap() {
        let within = Duration::from_secs(20);
        // A declared length past the cap: refused before a byte is read.
        let declared = answering(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                MAX_ANSWER_BYTES + 1
            ),
            0,
        )
        .await;
        let original = Original::new(&[declared], within, within).unwrap();
        let e = original.fetch_all().await.unwrap_err();
        assert!(format!("{e:#}").contains("over 256 MiB"), "{e:#}");
        // No length, a body without end: cut off at the cap.
        let endless = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n".into(),
            MAX_ANSWER_BYTES + (8 << 20),
        )
        .await;
        let original = Original::new(&[endless], within, within).unwrap();
        let e = original.fetch_all().await.unwrap_err();
        assert!(format!("{e:#}").contains("over 256 MiB"), "{e:#}");
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(base("10.0.0.1:7171"), "http://10.0.0.1:7171");
        assert_eq!(base("http://a:1/"), "http://a:1");
    }
}
