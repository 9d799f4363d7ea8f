//! Per-app traffic schedules, returned inside fetch and poll data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One rule: clients in zone `src` send traffic to the zones of `dst` in
/// proportion to their weights. This is the `[{src,dst}]` shape the Go SDK
/// parses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerRule {
    pub src: String,
    pub dst: BTreeMap<String, i64>,
}

impl SchedulerRule {
    /// About how many bytes the rule takes serialised.
    pub fn approx_bytes(&self) -> usize {
        self.src.len() + self.dst.keys().map(|z| z.len() + 24).sum::<usize>() + 32
    }
}

/// The schedule of one app, optionally limited to one env.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub appid: String,
    /// When absent the schedule applies in every env.
    #[serde(default)]
    pub env: Option<String>,
    pub rules: Vec<SchedulerRule>,
}

/// The configured schedules, looked up by `(env, appid)`.
#[derive(Clone, Debug, Default)]
pub struct Schedules(Vec<Schedule>);

impl Schedules {
    pub fn new(schedules: Vec<Schedule>) -> Self {
        Schedules(schedules)
    }

    /// Every schedule, in the order they were given or set.
    pub fn all(&self) -> &[Schedule] {
        &self.0
    }

    /// Sets the schedule of its `(appid, env)`, replacing any before.
    pub fn put(&mut self, schedule: Schedule) {
        match self
            .0
            .iter_mut()
            .find(|s| s.appid == schedule.appid && s.env == schedule.env)
        {
            Some(old) => *old = schedule,
            None => self.0.push(schedule),
        }
    }

    /// Drops the schedule of `(appid, env)`; whether there was one.
    pub fn clear(&mut self, appid: &str, env: Option<&str>) -> bool {
        let before = self.0.len();
        self.0
            .retain(|s| !(s.appid == appid && s.env.as_deref() == env));
        self.0.len() != before
    }

    /// The rules for an app; a schedule naming the env wins over one for
    /// every env.
    pub fn rules(&self, env: &str, appid: &str) -> Option<&[SchedulerRule]> {
        let for_app = || self.0.iter().filter(|s| s.appid == appid);
        for_app()
            .find(|s| s.env.as_deref() == Some(env))
            .or_else(|| for_app().find(|s| s.env.is_none()))
            .map(|s| s.rules.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_specific_schedule_wins() {
        let rule = |src: &str| SchedulerRule {
            src: src.into(),
            dst: BTreeMap::from([("sh001".to_string(), 1)]),
        };
        let s = Schedules::new(vec![
            Schedule {
                appid: "a".into(),
                env: None,
                rules: vec![rule("any")],
            },
            Schedule {
                appid: "a".into(),
                env: Some("prod".into()),
                rules: vec![rule("prod")],
            },
        ]);
        assert_eq!(s.rules("prod", "a").unwrap()[0].src, "prod");
        assert_eq!(s.rules("dev", "a").unwrap()[0].src, "any");
        assert!(s.rules("dev", "b").is_none());
    }
}
