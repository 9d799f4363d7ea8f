//! The answer of `fetch/all`, streamed: every instance by appid, written
//! app by app from the apps as they were when it was asked (shared, not
//! copied), in chunks of about [`CHUNK`] bytes. A million instances make
//! over 300 MB of JSON, which is never whole in memory, and the registry's
//! lock is held only while the apps are listed, not while they are written.

use std::sync::Arc;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::registry::{App, Instance};

/// Bytes gathered before a chunk goes out.
const CHUNK: usize = 64 << 10;

/// What one appid lists: its apps in every env, or this cluster's own
/// nodes (`infra.discovery`).
enum Group {
    Apps(String, Vec<Arc<App>>),
    Ours(&'static str, Vec<Instance>),
}

/// The body of `{"code":0,"message":"0","ttl":1,"data":{appid:[…],…}}`,
/// appids sorted; `apps` is `(env, appid, app)` in any order; `ours`, if
/// not empty, is listed under `ours_appid` instead of any app of that name.
/// `keep` is held until the body is sent or dropped (what the answer took
/// from the node's budget).
pub fn body<K: Send + Sync + 'static>(
    mut apps: Vec<(String, String, Arc<App>)>,
    ours_appid: &'static str,
    ours: Vec<Instance>,
    keep: K,
) -> Body {
    apps.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let mut groups: Vec<Group> = Vec::new();
    let mut ours = (!ours.is_empty()).then_some(ours);
    for (_, appid, app) in apps {
        if ours.is_some() && appid.as_str() >= ours_appid {
            if let Some(ours) = ours.take() {
                groups.push(Group::Ours(ours_appid, ours));
            }
        }
        if appid == ours_appid && matches!(groups.last(), Some(Group::Ours(..))) {
            continue;
        }
        match groups.last_mut() {
            Some(Group::Apps(last, same)) if *last == appid => same.push(app),
            _ => groups.push(Group::Apps(appid, vec![app])),
        }
    }
    if let Some(ours) = ours {
        groups.push(Group::Ours(ours_appid, ours));
    }
    let chunks = Chunks {
        groups: groups.into_iter(),
        buf: BytesMut::from(&b"{\"code\":0,\"message\":\"0\",\"ttl\":1,\"data\":{"[..]),
        first: true,
        done: false,
    };
    Body::from_stream(futures::stream::iter(chunks.map(move |chunk| {
        let _ = &keep;
        Ok::<Bytes, std::convert::Infallible>(chunk)
    })))
}

/// About what `fetch/all` holds per instance it lists while it is sent:
/// the apps as they were when asked, once the registry has moved on.
pub const HELD_PER_INSTANCE: usize = 512;

/// Renders groups until a chunk is full.
struct Chunks {
    groups: std::vec::IntoIter<Group>,
    buf: BytesMut,
    first: bool,
    done: bool,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        while self.buf.len() < CHUNK {
            let Some(group) = self.groups.next() else {
                self.buf.put_slice(b"}}");
                self.done = true;
                break;
            };
            if !self.first {
                self.buf.put_u8(b',');
            }
            self.first = false;
            let mut w = (&mut self.buf).writer();
            // Our own types always serialize.
            let _ = match &group {
                Group::Apps(appid, apps) => {
                    write_group(&mut w, appid, apps.iter().flat_map(|a| a.instances()))
                }
                Group::Ours(appid, ours) => write_group(&mut w, appid, ours.iter()),
            };
        }
        Some(self.buf.split().freeze())
    }
}

/// `"appid":[instance,…]`.
fn write_group<'a>(
    w: &mut impl std::io::Write,
    appid: &str,
    instances: impl Iterator<Item = &'a Instance>,
) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *w, appid)?;
    w.write_all(b":").map_err(serde_json::Error::io)?;
    serde_json::to_writer(w, &Seq(std::cell::Cell::new(Some(instances))))
}

/// A sequence serialized from an iterator, once, without collecting it.
struct Seq<I>(std::cell::Cell<Option<I>>);

impl<'a, I: Iterator<Item = &'a Instance>> Serialize for Seq<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.take().into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Command, Registration, Registry, Status};

    fn register(r: &mut Registry, env: &str, appid: &str, hostname: &str, at: i64) {
        let registration = Registration {
            region: "sh".into(),
            zone: "z1".into(),
            env: env.into(),
            appid: appid.into(),
            hostname: hostname.into(),
            addrs: vec![format!("http://{hostname}")],
            version: String::new(),
            metadata: Default::default(),
            status: Status::Up,
        };
        r.apply(&Command::Register { registration, at });
    }

    async fn text(body: Body) -> String {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn lists_every_instance_by_appid_with_our_nodes_in_their_place() {
        let mut r = Registry::default();
        register(&mut r, "dev", "b.app", "b1", 10);
        register(&mut r, "dev", "a.app", "a1", 20);
        register(&mut r, "dev", "a.app", "a2", 30);
        register(&mut r, "prod", "a.app", "a3", 40);
        register(&mut r, "dev", "infra.discovery", "stale", 50);
        register(&mut r, "dev", "z.app", "z1", 60);
        let ours: Vec<Instance> = r
            .get(&key("dev", "b.app", "b1"))
            .into_iter()
            .cloned()
            .collect();
        let json: serde_json::Value =
            serde_json::from_str(&text(body(r.shared_apps(), "infra.discovery", ours, ())).await)
                .unwrap();
        assert_eq!(json["code"], 0);
        let data = json["data"].as_object().unwrap();
        let appids: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(appids, ["a.app", "b.app", "infra.discovery", "z.app"]);
        let hosts = |appid: &str| -> Vec<String> {
            data[appid]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["hostname"].as_str().unwrap().to_string())
                .collect()
        };
        // Every env's instances under one appid, env by env.
        assert_eq!(hosts("a.app"), ["a1", "a2", "a3"]);
        assert_eq!(hosts("infra.discovery"), ["b1"]);
    }

    #[tokio::test]
    async fn a_large_registry_goes_out_in_chunks_that_join_into_valid_json() {
        let mut r = Registry::default();
        for i in 0..3000 {
            register(
                &mut r,
                "dev",
                &format!("app.{}", i % 7),
                &format!("host-{i}"),
                i + 1,
            );
        }
        let mut chunks = 0;
        let mut all = Vec::new();
        let mut stream =
            body(r.shared_apps(), "infra.discovery", Vec::new(), ()).into_data_stream();
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() < 2 * CHUNK);
            all.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert!(chunks > 3, "{chunks} chunks");
        let json: serde_json::Value = serde_json::from_slice(&all).unwrap();
        let total: usize = json["data"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_array().unwrap().len())
            .sum();
        assert_eq!(total, 3000);
    }

    #[tokio::test]
    async fn an_empty_registry_is_an_empty_map() {
        let r = Registry::default();
        assert_eq!(
            text(body(r.shared_apps(), "infra.discovery", Vec::new(), ())).await,
            r#"{"code":0,"message":"0","ttl":1,"data":{}}"#
        );
    }

    fn key(env: &str, appid: &str, hostname: &str) -> crate::registry::InstanceKey {
        crate::registry::InstanceKey {
            env: env.into(),
            appid: appid.into(),
            zone: "z1".into(),
            hostname: hostname.into(),
        }
    }
}
