//! The HTTP layer: the public discovery API, the internal routes peers use,
//! and admin routes, all on one listener.

pub mod admin;
pub mod discovery;
pub mod internal;
pub mod params;
pub mod reply;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::bootstrap::STATE_PATH;
use crate::cluster::catch_up::READ_INDEX_PATH;
use crate::cluster::membership::MEMBERSHIP_PATH;
use crate::cluster::peers::HEALTH_PATH;
use crate::cluster::renewer::RENEW_PATH;
use crate::raft::network::{
    APPEND_PATH, FULL_SNAPSHOT_PATH, PROPOSE_PATH, SNAPSHOT_PATH, VOTE_PATH,
};
use admin::Admin;
use discovery::Api;
use internal::PeerApi;

/// Peers send log entries and snapshot chunks; allow them room.
const INTERNAL_BODY_LIMIT: usize = 512 << 20;

/// Answers a wrong method as the original does.
fn only<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S, Infallible>,
) -> MethodRouter<S, Infallible> {
    route.fallback(|| async { reply::method_not_allowed() })
}

/// Every route of a node.
pub fn router(api: Arc<Api>, peers: Arc<PeerApi>, admin: Admin) -> Router {
    let public = Router::new()
        .route("/discovery/register", only(post(discovery::register)))
        .route("/discovery/renew", only(post(discovery::renew)))
        .route("/discovery/cancel", only(post(discovery::cancel)))
        .route("/discovery/set", only(post(discovery::set)))
        .route("/discovery/fetch", only(get(discovery::fetch)))
        .route("/discovery/fetchs", only(get(discovery::fetchs)))
        .route("/discovery/fetch/all", only(get(discovery::fetch_all)))
        .route("/discovery/poll", only(get(discovery::poll)))
        .route("/discovery/polls", only(get(discovery::polls)))
        .route("/discovery/nodes", only(get(discovery::nodes)))
        .with_state(api.clone());
    let internal = Router::new()
        .route(APPEND_PATH, post(internal::append))
        .route(VOTE_PATH, post(internal::vote))
        .route(SNAPSHOT_PATH, post(internal::snapshot))
        .route(FULL_SNAPSHOT_PATH, post(internal::full_snapshot))
        .route(PROPOSE_PATH, post(internal::propose))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .route(STATE_PATH, get(internal::bootstrap_state))
        .route(READ_INDEX_PATH, get(internal::read_index))
        .route(RENEW_PATH, post(internal::renew))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT))
        .with_state(peers);
    let admin = Router::new()
        .route("/admin/status", get(admin::status))
        .route("/admin/digest", get(admin::digest))
        .route(MEMBERSHIP_PATH, post(admin::membership))
        .with_state(admin);
    public
        .merge(internal)
        .merge(admin)
        .fallback(|| async { reply::not_found() })
}

/// Serves `router` on `listener` until `shutdown` turns true; each
/// connection then finishes the request in flight and closes.
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let mut stop = shutdown.clone();
                connections.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
