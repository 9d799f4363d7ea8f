//! Replacing a node's certificates without a restart: on SIGHUP, or when
//! one of the files changes, they are read and checked again exactly as at
//! start (the node's own identity included). A set that passes serves
//! every new connection from then on, and new calls to peers use it;
//! connections already open finish on the old one. A set that fails is
//! logged and the node keeps the one it has.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::client::PeerClient;
use super::identity::Identity;
use super::tls::{CertFiles, PeerTls};
use crate::server::{Identify, Tag, Tls, TlsSource};
use crate::shutdown::stopped;

/// How often the files' modification times are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// What the peer listener serves with, built from a loaded set: the
/// handshake's configuration and who its certificate proves the caller is.
fn serving(tls: &PeerTls) -> Arc<Tls> {
    let callers = tls.callers.clone();
    let identify: Identify = Arc::new(move |chain| {
        let caller = callers.caller(chain);
        let tag: Tag = Arc::new(move |extensions| {
            extensions.insert(caller.clone());
        });
        tag
    });
    Arc::new(Tls {
        config: tls.server.clone(),
        identify: Some(identify),
    })
}

/// Swaps a node's certificates.
pub struct Rotation {
    serving: watch::Sender<Arc<Tls>>,
    client: PeerClient,
}

/// Serves with `tls` until rotated; the peer listener reads the source.
pub fn start(tls: &PeerTls, client: PeerClient) -> (TlsSource, Rotation) {
    let (serving, source) = watch::channel(serving(tls));
    (source, Rotation { serving, client })
}

impl Rotation {
    /// Reads `files` again and, if they pass, serves and calls with them.
    pub fn reload(&self, files: &CertFiles, me: &Identity) -> anyhow::Result<PeerTls> {
        let tls = PeerTls::load(files, me)?;
        self.client.reload(&tls)?;
        self.serving.send_replace(serving(&tls));
        Ok(tls)
    }

    /// Reloads on SIGHUP and whenever a file's modification time changes,
    /// until the node stops.
    pub async fn reload_when_asked(
        self,
        files: CertFiles,
        me: Identity,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("certificates reload on file change only: no SIGHUP handler: {e}");
                None
            }
        };
        let mut seen = modified(&files);
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.tick().await;
        loop {
            let why = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = look.tick() => {
                    let now = modified(&files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "a certificate file changed"
                }
                _ = stopped(&mut stop) => return,
            };
            match self.reload(&files, &me) {
                Ok(tls) => tracing::info!(
                    identity = %tls.me.uri(),
                    expires = %tls.expires,
                    "{why}: peer certificates reloaded; new connections use them"
                ),
                Err(e) => tracing::error!(
                    "{why}: peer certificates not reloaded, the ones in use stay: {e:#}"
                ),
            }
        }
    }
}

/// The modification time of each file, as far as it can be read.
fn modified(files: &CertFiles) -> Vec<Option<SystemTime>> {
    let mut paths = vec![&files.ca, &files.cert, &files.key];
    if let Some((cert, key)) = &files.link {
        paths.extend([cert, key]);
    }
    paths.extend(files.zone_cas.values());
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}
