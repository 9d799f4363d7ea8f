//! `discoveryctl scheduler`: the per-app scheduler set at run time.

use std::collections::BTreeMap;

use anyhow::Context;
use raft_discovery::http::SCHEDULER_PATH;
use raft_discovery::registry::SchedulerRule;
use serde_json::{json, Value};

/// Parses `SRC=DST:WEIGHT,DST:WEIGHT`: clients in zone SRC send traffic to
/// each DST in proportion to its weight.
pub fn parse_rule(text: &str) -> anyhow::Result<SchedulerRule> {
    let (src, dsts) = text
        .split_once('=')
        .with_context(|| format!("{text:?}: expected SRC=DST:WEIGHT[,DST:WEIGHT...]"))?;
    let mut dst = BTreeMap::new();
    for part in dsts.split(',') {
        let (zone, weight) = part
            .split_once(':')
            .with_context(|| format!("{part:?} in {text:?}: expected DST:WEIGHT"))?;
        let weight: i64 = weight
            .trim()
            .parse()
            .with_context(|| format!("{weight:?} in {text:?} is not a whole number"))?;
        dst.insert(zone.trim().to_string(), weight);
    }
    Ok(SchedulerRule {
        src: src.trim().to_string(),
        dst,
    })
}

/// Sets (`rules` given) or clears the scheduler of `appid`.
pub async fn change(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    appid: &str,
    env: Option<&str>,
    rules: Option<Vec<SchedulerRule>>,
) -> anyhow::Result<()> {
    let request = http
        .post(format!("{base}{SCHEDULER_PATH}"))
        .json(&json!({ "appid": appid, "env": env, "scheduler": rules }));
    let message = super::admin_envelope(request, token, base).await?;
    println!("{appid}: {message}");
    Ok(())
}

/// Prints the schedulers set at run time and the configuration file's.
pub async fn list(http: &reqwest::Client, base: &str, raw: bool) -> anyhow::Result<()> {
    let answer: Value = http
        .get(format!("{base}{SCHEDULER_PATH}"))
        .send()
        .await
        .with_context(|| format!("asking {base}"))?
        .json()
        .await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&answer["data"])?);
        return Ok(());
    }
    println!("{:<10} {:<24} {:<8} RULES", "SOURCE", "APPID", "ENV");
    for (source, key) in [("set", "set"), ("config", "configured")] {
        for s in answer["data"][key].as_array().into_iter().flatten() {
            let rules: Vec<String> = s["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let dst: Vec<String> = r["dst"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(z, w)| format!("{z}:{w}"))
                        .collect();
                    format!("{}={}", r["src"].as_str().unwrap_or(""), dst.join(","))
                })
                .collect();
            println!(
                "{:<10} {:<24} {:<8} {}",
                source,
                s["appid"].as_str().unwrap_or(""),
                s["env"].as_str().unwrap_or("*"),
                rules.join(" ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_as_source_equals_weighted_destinations() {
        let r = parse_rule("sh001=sh001:3, sh002:1").unwrap();
        assert_eq!(r.src, "sh001");
        assert_eq!(
            r.dst,
            BTreeMap::from([("sh001".into(), 3), ("sh002".into(), 1)])
        );
        assert!(parse_rule("sh001").is_err());
        assert!(parse_rule("sh001=sh002").is_err());
        assert!(parse_rule("sh001=sh002:x").is_err());
    }
}
