//! Per-app schedulers set at run time: through the log, so every node of
//! the zone serves the same one, and it wins over the configuration
//! file's. Setting or clearing one needs the admin token.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::admin::{operator, Admin};
use super::reply;
use crate::clock::now;
use crate::cluster::writer::WriteError;
use crate::registry::{Command, RegistryError, Schedule, SchedulerRule};

/// `POST /admin/scheduler`: `{"appid", "env"?, "scheduler"?}`; without
/// `env` it applies in every env, without `scheduler` (or `null`) it clears
/// what was set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    pub appid: String,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub scheduler: Option<Vec<SchedulerRule>>,
}

/// `GET /admin/scheduler`: the schedules set at run time, which win, and
/// the configuration file's.
#[derive(Serialize)]
struct Listed<'a> {
    set: &'a [Schedule],
    configured: &'a [Schedule],
}

pub async fn set(
    State(Admin { api, .. }): State<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: SetSchedule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return reply::error(&RegistryError::bad(
                "scheduler",
                &format!("expected {{\"appid\", \"env\", \"scheduler\": [{{src, dst}}]}}: {e}"),
            ))
        }
    };
    let cleared = request.scheduler.is_none();
    let command = Command::Schedule {
        appid: request.appid,
        env: request.env,
        rules: request.scheduler,
        at: now(),
    };
    match api.writer.write(command, operator(&headers).into()).await {
        Ok(Ok(_)) if cleared => reply::answer(0, "scheduler cleared", None),
        Ok(Ok(_)) => reply::answer(0, "scheduler set", None),
        Ok(Err(e)) | Err(WriteError::Invalid(e)) => reply::error(&e),
        Err(e) => reply::answer(-503, &e.to_string(), None),
    }
}

pub async fn list(State(Admin { api, .. }): State<Admin>) -> Response {
    let registry = api.local.read();
    let (set, configured) = registry.schedules();
    let body = serde_json::to_vec(&Listed { set, configured }).unwrap_or_default();
    reply::ok(&body)
}
