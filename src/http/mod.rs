//! The client listener: the public discovery API and the operators'
//! routes (read-only status and digest, and membership changes behind the
//! admin token). Nothing peers use is served here: that is [`crate::peer`].

pub mod access;
pub mod access_log;
pub mod admin;
pub mod all;
pub mod console;
pub mod discovery;
pub mod head;
pub mod lean;
pub mod observe;
pub mod origins;
pub mod params;
pub mod probes;
pub mod reply;
pub mod scheduler;
pub mod streamed;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use access::Access;
use admin::Admin;
use discovery::Api;
use observe::Observe;

/// A backup's body may be this large (a log entry takes at most 64 MiB
/// of it; JSON adds its field names).
const RESTORE_BODY: usize = 192 << 20;

/// Where clients hold long polls (served outside the router too: [`lean`]).
pub const POLL_PATH: &str = "/discovery/poll";
pub const POLLS_PATH: &str = "/discovery/polls";

/// Liveness and readiness probes (see [`probes`]).
pub const LIVE_PATH: &str = "/admin/live";
pub const READY_PATH: &str = "/admin/ready";
/// Where operators post membership changes.
pub const MEMBERSHIP_PATH: &str = "/admin/membership";

/// Where operators set, clear (POST, admin token) and list (GET) the
/// schedulers set at run time.
pub const SCHEDULER_PATH: &str = "/admin/scheduler";

/// Where operators ask the leader to hand its leadership over.
pub const TRANSFER_LEADER_PATH: &str = "/admin/transfer-leader";

/// Where an operator starts a repair of a node (POST, admin token).
pub const REPAIR_PATH: &str = "/admin/repair";

/// Answers a wrong method as the original does.
fn only<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S, Infallible>,
) -> MethodRouter<S, Infallible> {
    route.fallback(|| async { reply::method_not_allowed() })
}

/// What every request of a connection past the cap gets.
pub fn overloaded() -> Router {
    Router::new().fallback(|| async { reply::overloaded("too many connections") })
}

/// Every route of the client listener; request bodies up to `max_body`,
/// each request's head checked, counted and logged by `observe`. With
/// `original_only`, the original discovery's routes alone (a stand-in for
/// an original cluster, `node.original_api`).
pub fn router(
    api: Arc<Api>,
    admin: Admin,
    access: Arc<Access>,
    max_body: usize,
    observe: Observe,
    original_only: bool,
) -> Router {
    let writes = Router::new()
        .route("/discovery/register", only(post(discovery::register)))
        .route("/discovery/renew", only(post(discovery::renew)))
        .route("/discovery/cancel", only(post(discovery::cancel)))
        .route("/discovery/set", only(post(discovery::set)))
        .route_layer(from_fn_with_state(access.clone(), access::writes))
        .with_state(api.clone());
    let reads = Router::new()
        .route("/discovery/fetch", only(get(discovery::fetch)))
        .route("/discovery/fetchs", only(get(discovery::fetchs)))
        .route("/discovery/fetch/all", only(get(discovery::fetch_all)))
        .route(POLL_PATH, only(get(discovery::poll)))
        .route(POLLS_PATH, only(get(discovery::polls)))
        .route("/discovery/nodes", only(get(discovery::nodes)))
        .with_state(api.clone());
    if original_only {
        return writes
            .merge(reads)
            .fallback(|| async { reply::not_found() })
            .layer(DefaultBodyLimit::max(max_body))
            .layer(from_fn_with_state(observe, observe::observe));
    }
    let probes = Router::new()
        .route(LIVE_PATH, get(probes::live))
        .route(READY_PATH, get(probes::ready))
        .with_state(api);
    let changes = Router::new()
        .route(MEMBERSHIP_PATH, post(admin::membership))
        .route(TRANSFER_LEADER_PATH, post(admin::transfer_leader))
        .route(REPAIR_PATH, post(admin::repair))
        .route(upstream::FORGET_PATH, post(upstream::forget))
        .route(SCHEDULER_PATH, post(scheduler::set))
        .route("/admin/backup", get(admin::backup))
        .route(
            "/admin/restore",
            post(admin::restore).layer(DefaultBodyLimit::max(RESTORE_BODY)),
        )
        .route_layer(from_fn_with_state(access.clone(), access::admin))
        .with_state(admin.clone());
    let status = Router::new()
        .route("/admin/status", get(admin::status))
        .route("/admin/digest", get(admin::digest))
        .route(SCHEDULER_PATH, get(scheduler::list))
        .route(
            "/metrics",
            get(admin::metrics).route_layer(from_fn_with_state(access, access::metrics)),
        )
        .route("/admin/changes", get(admin::changes))
        .route("/admin/origins", get(origins::origins))
        .route("/", get(console::page))
        .route("/console.css", get(console::style))
        .route("/console.js", get(console::script))
        .with_state(admin);
    writes
        .merge(reads)
        .merge(probes)
        .merge(changes)
        .merge(status)
        .fallback(|| async { reply::not_found() })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(observe, observe::observe))
}
