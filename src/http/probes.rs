//! What an orchestrator asks a node (Kubernetes' probes, a load
//! balancer's health check): open to anyone, answered from memory, no
//! bigger than a line.
//!
//! - `/admin/live`: the process serves HTTP. Never fails while the node
//!   catches up or installs a snapshot (that can take minutes): a liveness
//!   probe that failed then would kill the node and start the catch-up
//!   again.
//! - `/admin/ready`: the node serves reads, the start-up protection state:
//!   caught up with its cluster, not found diverged, not removed. 503 with
//!   the reason otherwise, so a client Service sends no one a node that
//!   would answer `-503`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::discovery::Api;

/// `GET /admin/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /admin/ready`.
pub async fn ready(State(api): State<Arc<Api>>) -> (StatusCode, Json<Value>) {
    match api.protection.reason() {
        None if !api.protection.is_on() => (StatusCode::OK, Json(json!({ "ready": true }))),
        why => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "why": why.unwrap_or_else(|| "catching up".into()) })),
        ),
    }
}
