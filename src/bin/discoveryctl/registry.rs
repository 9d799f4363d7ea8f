//! The registry as an operator looks at it: apps, one app's instances, and
//! a `tail -f` of one app's changes, through the public discovery API.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;

/// One instance as the table shows it.
struct Row {
    zone: String,
    hostname: String,
    status: String,
    addrs: String,
    version: String,
    renewed: String,
    metadata: String,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn status_name(v: &Value) -> String {
    match v.as_i64() {
        Some(1) => "up".into(),
        Some(2) => "waiting".into(),
        _ => text(v),
    }
}

/// How long ago a nanosecond timestamp was, as `12s` / `3m` / `2h`.
fn age(ns: &Value) -> String {
    let Some(ns) = ns.as_i64() else {
        return "-".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let secs = (now - ns).max(0) / 1_000_000_000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

fn row(i: &Value) -> Row {
    let addrs = i["addrs"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let metadata = i["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Row {
        zone: text(&i["zone"]),
        hostname: text(&i["hostname"]),
        status: status_name(&i["status"]),
        addrs,
        version: text(&i["version"]),
        renewed: age(&i["renew_timestamp"]),
        metadata,
    }
}

/// Every instance in a fetch answer's `data`, by zone then hostname.
fn instances_of(data: &Value) -> Vec<&Value> {
    let mut all: Vec<&Value> = data["instances"]
        .as_object()
        .into_iter()
        .flat_map(|zones| zones.values())
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    all.sort_by_key(|i| (text(&i["zone"]), text(&i["hostname"])));
    all
}

async fn get(http: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
    http.get(url)
        .query(query)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))
}

/// `apps`: every app with its instance count, zones and how many are up.
pub async fn apps(
    http: &reqwest::Client,
    base: &str,
    env: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let answer = get(http, &format!("{base}/discovery/fetch/all"), &[]).await?;
    anyhow::ensure!(answer["code"] == 0, "refused: {}", text(&answer["message"]));
    // appid -> env -> instances
    let mut apps: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for (appid, list) in answer["data"].as_object().into_iter().flatten() {
        for i in list.as_array().into_iter().flatten() {
            let e = text(&i["env"]);
            if env.is_some_and(|want| want != e) {
                continue;
            }
            apps.entry((e, appid.clone())).or_default().push(i);
        }
    }
    if json {
        let out: Vec<Value> = apps
            .iter()
            .map(|((env, appid), list)| {
                serde_json::json!({
                    "env": env,
                    "appid": appid,
                    "instances": list.len(),
                    "up": list.iter().filter(|i| i["status"] == 1).count(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<32} {:>9} {:>5}  zones",
        "env", "appid", "instances", "up"
    );
    for ((env, appid), list) in &apps {
        let mut zones: Vec<String> = list.iter().map(|i| text(&i["zone"])).collect();
        zones.sort();
        zones.dedup();
        let up = list.iter().filter(|i| i["status"] == 1).count();
        println!(
            "{:<8} {:<32} {:>9} {:>5}  {}",
            env,
            appid,
            list.len(),
            up,
            zones.join(",")
        );
    }
    Ok(())
}

/// `instances APPID`: one app's instances, every status, every zone.
pub async fn instances(
    http: &reqwest::Client,
    base: &str,
    appid: &str,
    env: &str,
    json: bool,
) -> anyhow::Result<()> {
    let url = format!("{base}/discovery/fetch");
    let query = [("appid", appid), ("env", env), ("status", "3")];
    let answer = get(http, &url, &query).await?;
    if answer["code"] == -404 {
        anyhow::bail!("no app {appid} in env {env}");
    }
    anyhow::ensure!(answer["code"] == 0, "refused: {}", text(&answer["message"]));
    if json {
        println!("{}", serde_json::to_string_pretty(&answer["data"])?);
        return Ok(());
    }
    print_rows(instances_of(&answer["data"]).into_iter().map(row));
    Ok(())
}

fn print_rows(rows: impl Iterator<Item = Row>) {
    println!(
        "{:<8} {:<24} {:<8} {:<10} {:<10} {:<34} metadata",
        "zone", "hostname", "status", "renewed", "version", "addrs"
    );
    for r in rows {
        println!(
            "{:<8} {:<24} {:<8} {:<10} {:<10} {:<34} {}",
            r.zone, r.hostname, r.status, r.renewed, r.version, r.addrs, r.metadata
        );
    }
}

/// What changed between two answers of one app, as lines: `+` added,
/// `-` gone, `~` changed (status, addresses, metadata or version).
fn changes(before: &[&Value], after: &[&Value]) -> Vec<String> {
    let key = |i: &Value| (text(&i["zone"]), text(&i["hostname"]));
    let same = |a: &Value, b: &Value| {
        ["status", "addrs", "metadata", "version"]
            .iter()
            .all(|f| a[f] == b[f])
    };
    let old: BTreeMap<_, _> = before.iter().map(|i| (key(i), *i)).collect();
    let new: BTreeMap<_, _> = after.iter().map(|i| (key(i), *i)).collect();
    let mut lines = Vec::new();
    for (k, i) in &new {
        let r = row(i);
        let what = format!("{} {} {} {} {}", k.0, k.1, r.status, r.addrs, r.metadata);
        match old.get(k) {
            None => lines.push(format!("+ {what}")),
            Some(o) if !same(o, i) => lines.push(format!("~ {what}")),
            Some(_) => {}
        }
    }
    for (k, _) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
        lines.push(format!("- {} {}", k.0, k.1));
    }
    lines
}

/// `watch APPID`: long-polls the app and prints each change as it comes,
/// until interrupted; rides out a node's restarts.
pub async fn watch(
    http: &reqwest::Client,
    base: &str,
    appid: &str,
    env: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut since = 0i64;
    let mut last: Option<Value> = None;
    loop {
        let url = format!("{base}/discovery/poll");
        let stamp = since.to_string();
        let query = [
            ("appid", appid),
            ("env", env),
            ("hostname", "discoveryctl"),
            ("latest_timestamp", stamp.as_str()),
        ];
        let answer = match get(http, &url, &query).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match answer["code"].as_i64() {
            Some(0) => {
                let data = answer["data"].clone();
                since = data["latest_timestamp"].as_i64().unwrap_or(since);
                if json {
                    println!("{}", serde_json::to_string(&data)?);
                    continue;
                }
                // A poll answers up instances only: one set to waiting
                // would look gone. The app as it is now, waiting ones too,
                // is what the change is read from.
                let fetch = format!("{base}/discovery/fetch");
                let every = [("appid", appid), ("env", env), ("status", "3")];
                let now = match get(http, &fetch, &every).await {
                    Ok(a) if a["code"].as_i64() == Some(0) => a["data"].clone(),
                    _ => data,
                };
                let before = last.as_ref().map(instances_of).unwrap_or_default();
                for line in changes(&before, &instances_of(&now)) {
                    println!("{line}");
                }
                last = Some(now);
            }
            Some(-304) => {}
            Some(-404) => {
                eprintln!("no app {appid} in env {env} yet; waiting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => {
                eprintln!("refused: {}; trying again", text(&answer["message"]));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_what_was_added_changed_and_removed() {
        let a = json!({"zone": "sh001", "hostname": "h1", "status": 1, "addrs": ["http://a:1"]});
        let b = json!({"zone": "sh001", "hostname": "h2", "status": 1, "addrs": ["http://b:1"]});
        let b2 = json!({"zone": "sh001", "hostname": "h2", "status": 2, "addrs": ["http://b:1"]});
        assert_eq!(changes(&[], &[&a]), ["+ sh001 h1 up http://a:1 "]);
        assert_eq!(
            changes(&[&a, &b], &[&a, &b2]),
            ["~ sh001 h2 waiting http://b:1 "]
        );
        assert_eq!(changes(&[&a, &b], &[&b]), ["- sh001 h1"]);
        assert!(changes(&[&a], &[&a]).is_empty());
    }
}
