//! `discoveryctl upstream`: the links with original discovery clusters
//! (`[[upstream]]`), as the leader works them, and `forget`.

use anyhow::Context;
use raft_discovery::http::upstream::FORGET_PATH;
use serde_json::Value;

/// The leader's status, asked of the node at `base` and then of the
/// leader it names (only the leader works the links).
async fn leaders_status(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let ask = |url: String| async move {
        http.get(&url)
            .send()
            .await
            .with_context(|| format!("asking {url}"))?
            .json::<Value>()
            .await
            .with_context(|| format!("reading {url}"))
    };
    let status = ask(format!("{base}/admin/status")).await?;
    if status["state"] == "Leader" {
        return Ok(status);
    }
    let leader = status["leader"].to_string();
    match status["members"][&leader]["api_addr"].as_str() {
        Some(addr) => {
            let scheme = if base.starts_with("https://") {
                "https"
            } else {
                "http"
            };
            ask(format!("{scheme}://{addr}/admin/status")).await
        }
        None => Ok(status),
    }
}

/// Prints each link, each direction: state, lag, instances, errors.
pub async fn status(http: &reqwest::Client, base: &str, raw: bool) -> anyhow::Result<()> {
    let status = leaders_status(http, base).await?;
    let upstreams = &status["upstreams"];
    if raw {
        println!("{}", serde_json::to_string_pretty(upstreams)?);
        return Ok(());
    }
    let Some(links) = upstreams.as_object().filter(|l| !l.is_empty()) else {
        println!("no original discovery is followed ([[upstream]] is not configured)");
        return Ok(());
    };
    println!(
        "{:<12} {:<9} {:<10} {:>9} {:>10} {:>7}  LAST ERROR",
        "UPSTREAM", "DIRECTION", "STATE", "LAG_MS", "INSTANCES", "ERRORS"
    );
    for (name, link) in links {
        for (direction, count) in [("import", "imported"), ("export", "exported")] {
            let side = &link[direction];
            // Numbers as text, so the columns' widths apply.
            let number = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
            println!(
                "{:<12} {:<9} {:<10} {:>9} {:>10} {:>7}  {}",
                name,
                direction,
                side["state"].as_str().unwrap_or("-"),
                number(&side["lag_ms"]),
                number(&link[count]),
                number(&side["errors"]),
                side["error"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(())
}

/// Drops what the cluster holds of the original `name` (its link off).
pub async fn forget(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let request = http
        .post(format!("{base}{FORGET_PATH}"))
        .query(&[("name", name)]);
    let message = super::admin_envelope(request, token, base).await?;
    println!("{message}");
    Ok(())
}
