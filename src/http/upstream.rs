//! The links with original discovery clusters, as operators see them: in
//! `/admin/status` and the metrics, and `forget` (admin token), which
//! drops what this cluster holds of an original once its link is off.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::admin::{operator, Admin};
use super::params::Params;
use super::reply;
use crate::clock::now;
use crate::cluster::writer::WriteError;
use crate::registry::{upstream_name_ok, Command, RegistryError};

/// Where operators drop what is held of an original (POST, admin token).
pub const FORGET_PATH: &str = "/admin/upstream/forget";

/// Drops everything held of the original `name`: refused while this node
/// still has a link with it configured (switch it off on every node
/// first, or the next leader imports it again).
pub async fn forget(State(admin): State<Admin>, headers: HeaderMap, p: Params) -> Response {
    let name = match p.required("name") {
        Ok(name) => name.to_string(),
        Err(e) => return reply::error(&e),
    };
    if let Err(e) = upstream_name_ok(&name) {
        return reply::error(&e);
    }
    if admin.upstreams.iter().any(|l| l.name == name) {
        return reply::answer(
            -409,
            &format!(
                "{name} is still configured here ([[upstream]]): remove it from every node's \
                 configuration and restart them first"
            ),
            None,
        );
    }
    let command = Command::UpstreamForget {
        upstream: name.clone(),
        at: now(),
    };
    match admin
        .api
        .writer
        .write(command, operator(&headers).into())
        .await
    {
        Ok(Ok(_)) => reply::answer(0, &format!("{name} forgotten"), None),
        Ok(Err(RegistryError::NotFound)) => {
            reply::answer(-404, &format!("nothing is held of {name}"), None)
        }
        Ok(Err(e)) | Err(WriteError::Invalid(e)) => reply::error(&e),
        Err(e) => reply::answer(-503, &e.to_string(), None),
    }
}
