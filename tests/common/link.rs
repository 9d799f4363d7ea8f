//! A link between zones that a test can cut: TCP relays on 127.0.0.1, one
//! per remote node, that the other zone is configured to reach instead of
//! the node itself. Cut, a relay forwards nothing and holds every
//! connection open and silent, as a dead WAN link does (requests hang until
//! their own timeouts); healed, it drops what it held and relays again.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Every relay between the zones; cut or healed together.
pub struct ZoneLink {
    cut: watch::Sender<bool>,
}

impl ZoneLink {
    pub fn new() -> ZoneLink {
        ZoneLink {
            cut: watch::channel(false).0,
        }
    }

    /// A relay to `target`, listening on a port of its own: the port.
    pub fn relay(&self, target: SocketAddr) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay port");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("relay address").port();
        let cut = self.cut.subscribe();
        tokio::spawn(async move {
            let listener = TcpListener::from_std(listener).expect("relay listener");
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target, cut.clone()));
            }
        });
        port
    }

    /// Cuts the link: nothing passes until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = cut.wait_for(|c| *c) => {}
        }
    }
    // Cut: hold the connection, silent, until the link heals.
    let _ = cut.wait_for(|c| !*c).await;
}
