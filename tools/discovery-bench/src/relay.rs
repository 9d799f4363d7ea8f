//! The link between two zones on one machine: a TCP relay per remote node,
//! which the other zone is configured to reach instead, and which the
//! bench can cut (every connection held open and silent, as a dead WAN
//! link) and heal (what was held is dropped; new connections pass).

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    cut: watch::Sender<bool>,
}

impl Link {
    pub fn new() -> Link {
        Link {
            cut: watch::channel(false).0,
        }
    }

    /// A relay to `target` on a port of its own: its address.
    pub async fn relay(&self, target: SocketAddr) -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = self.cut.subscribe();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(pass(inbound, target, cut.clone()));
            }
        });
        Ok(addr)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

async fn pass(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        let _ = outbound.set_nodelay(true);
        let _ = inbound.set_nodelay(true);
        tokio::select! {
            _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = cut.wait_for(|c| *c) => {}
        }
    }
    let _ = cut.wait_for(|c| !*c).await;
}
