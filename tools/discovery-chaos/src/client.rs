//! A discovery client as the SDKs are: plain HTTP to one node at a time,
//! each answer classified as acknowledged, not found, refused, or "maybe".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::check::{AppState, Seen};
use crate::history::{Answer, Key};

/// The env every chaos instance lives in.
pub const ENV: &str = "chaos";
pub const ZONE: &str = "sh001";

/// A write waits up to the server's bounded wait for a leader (3 s by
/// default) and then answers -503; past this it counts as unanswered.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The data every register of `key` sends, derived from the key so the
/// checker knows it without storing it.
pub fn sent(key: &Key) -> Seen {
    Seen {
        addrs: vec![format!("grpc://{}:9000", key.hostname)],
        status: 1,
        version: "v1".into(),
        metadata: BTreeMap::from([("owner".to_string(), "chaos".to_string())]),
    }
}

/// The answer to a long poll.
pub enum Polled {
    /// Apps that changed: their new timestamp and up instances.
    Changed(HashMap<String, AppState>),
    /// -304: held until the hold time passed.
    NotModified,
}

/// An HTTP client shared by the workload's tasks.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(20))
            .build()?;
        Ok(Client { http })
    }

    async fn write(&self, node: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let sent = self
            .http
            .post(format!("http://{node}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .timeout(WRITE_TIMEOUT)
            .body(body)
            .send()
            .await;
        let body: Value = match sent {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => return Answer::Maybe(format!("unreadable answer: {e}")),
            },
            Err(e) if e.is_timeout() => return Answer::Maybe("timed out".into()),
            Err(e) if e.is_connect() => return Answer::Maybe("no connection".into()),
            Err(e) => return Answer::Maybe(e.to_string()),
        };
        match body["code"].as_i64() {
            Some(0) => Answer::Acked,
            Some(-404) => Answer::NotFound,
            Some(-400) => Answer::Refused(-400),
            Some(code) => Answer::Maybe(format!("code {code}")),
            None => Answer::Maybe(format!("no code in {body}")),
        }
    }

    pub async fn register(&self, node: &str, key: &Key) -> Answer {
        let data = sent(key);
        let metadata = serde_json::to_string(&data.metadata).unwrap_or_default();
        let status = data.status.to_string();
        let mut form = vec![
            ("zone", key.zone.as_str()),
            ("env", key.env.as_str()),
            ("appid", key.appid.as_str()),
            ("hostname", key.hostname.as_str()),
            ("status", status.as_str()),
            ("version", data.version.as_str()),
            ("metadata", metadata.as_str()),
        ];
        form.extend(data.addrs.iter().map(|a| ("addrs", a.as_str())));
        self.write(node, "/discovery/register", &form).await
    }

    fn key_form(key: &Key) -> [(&str, &str); 4] {
        [
            ("zone", key.zone.as_str()),
            ("env", key.env.as_str()),
            ("appid", key.appid.as_str()),
            ("hostname", key.hostname.as_str()),
        ]
    }

    pub async fn renew(&self, node: &str, key: &Key) -> Answer {
        self.write(node, "/discovery/renew", &Self::key_form(key))
            .await
    }

    pub async fn cancel(&self, node: &str, key: &Key) -> Answer {
        self.write(node, "/discovery/cancel", &Self::key_form(key))
            .await
    }

    /// A long poll of `apps` (appid, last timestamp seen), held at most
    /// `hold` by the node.
    pub async fn poll(
        &self,
        node: &str,
        hostname: &str,
        apps: &[(String, i64)],
        hold: Duration,
    ) -> Result<Polled, String> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("env", ENV).append_pair("hostname", hostname);
            for (appid, _) in apps {
                q.append_pair("appid", appid);
            }
            for (_, ts) in apps {
                q.append_pair("latest_timestamp", &ts.to_string());
            }
            q.finish()
        };
        let body = self
            .get(
                format!("http://{node}/discovery/polls?{query}"),
                hold + Duration::from_secs(5),
            )
            .await?;
        match body["code"].as_i64() {
            Some(0) => {
                let data = body["data"].as_object().ok_or("no data")?;
                Ok(Polled::Changed(
                    data.iter()
                        .map(|(appid, app)| (appid.clone(), app_state(app)))
                        .collect(),
                ))
            }
            Some(-304) => Ok(Polled::NotModified),
            _ => Err(format!("answered {body}")),
        }
    }

    /// The app's timestamp and up instances, as `fetch` shows them.
    pub async fn fetch(&self, node: &str, appid: &str) -> Result<AppState, String> {
        let body = self
            .get(
                format!("http://{node}/discovery/fetch?env={ENV}&appid={appid}&status=1"),
                Duration::from_secs(5),
            )
            .await?;
        match body["code"].as_i64() {
            Some(0) => Ok(app_state(&body["data"])),
            _ => Err(format!("answered {body}")),
        }
    }

    /// Every instance the node holds (`fetch/all`), but the cluster's own.
    pub async fn all(&self, node: &str) -> Result<HashMap<Key, Seen>, String> {
        let body = self
            .get(
                format!("http://{node}/discovery/fetch/all"),
                Duration::from_secs(10),
            )
            .await?;
        if body["code"] != 0 {
            return Err(format!("answered {body}"));
        }
        let data = body["data"].as_object().ok_or("no data")?;
        Ok(data
            .iter()
            .filter(|(appid, _)| appid.as_str() != "infra.discovery")
            .flat_map(|(_, list)| list.as_array().into_iter().flatten())
            .map(|i| (instance_key(i), seen(i)))
            .collect())
    }

    /// A GET whose answer is JSON.
    async fn get(&self, url: String, timeout: Duration) -> Result<Value, String> {
        self.http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn instance_key(i: &Value) -> Key {
    Key {
        env: text(&i["env"]),
        appid: text(&i["appid"]),
        zone: text(&i["zone"]),
        hostname: text(&i["hostname"]),
    }
}

fn seen(i: &Value) -> Seen {
    Seen {
        addrs: i["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect(),
        status: i["status"].as_u64().unwrap_or(0),
        version: text(&i["version"]),
        metadata: i["metadata"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
    }
}

/// Fetch data (`{"instances":{zone:[..]},"latest_timestamp":N}`) as a
/// watcher keeps it.
fn app_state(data: &Value) -> AppState {
    let hosts: BTreeSet<String> = data["instances"]
        .as_object()
        .into_iter()
        .flat_map(|zones| zones.values())
        .flat_map(|list| list.as_array().into_iter().flatten())
        .filter(|i| i["status"] == 1)
        .map(|i| text(&i["hostname"]))
        .collect();
    AppState {
        latest_timestamp: data["latest_timestamp"].as_i64().unwrap_or(0),
        hosts,
    }
}
