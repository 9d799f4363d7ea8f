//! The shutdown signal every long-lived task of a node watches: a
//! `watch` flag that turns true once, when the node stops.

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
