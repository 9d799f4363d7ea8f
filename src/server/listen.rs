//! Binding a listener with an accept backlog that follows the system's,
//! as nginx does: 511 (nginx's default on Linux), or `net.core.somaxconn`
//! where that is lower (the kernel silently cuts a larger request to it;
//! the node logs what it asked for at start). std binds with 128, tokio
//! with 1,024. A deeper queue absorbs a larger burst of reconnecting
//! clients, but every connection queued in front of a newcomer is one it
//! waits for: under a connection flood from one address, 4,096 queued
//! tripled a fetch's wait against 1,024 (tests/connection_flood.rs).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Where Linux keeps the most a listener's backlog may hold.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// nginx's default backlog on Linux: the deepest queue asked for.
const NGINX: u32 = 511;

/// The backlog to ask for, given what the system says its maximum is.
pub fn backlog(somaxconn: Option<&str>) -> u32 {
    somaxconn
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .map_or(NGINX, |n| n.min(NGINX))
}

/// The backlog [`bind`] asks for on this machine.
pub fn system_backlog() -> u32 {
    backlog(std::fs::read_to_string(SOMAXCONN).ok().as_deref())
}

/// Listens on `addr` (`host:port`, resolved) with [`backlog`].
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let backlog = system_backlog();
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted node binds its port again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_follows_the_system_up_to_nginx_s() {
        assert_eq!(backlog(Some("128\n")), 128);
        assert_eq!(backlog(Some("511")), 511);
        assert_eq!(backlog(Some("4096")), 511);
        assert_eq!(backlog(None), 511);
        assert_eq!(backlog(Some("junk")), 511);
    }

    #[tokio::test]
    async fn binds_and_accepts() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        connected.unwrap();
        accepted.unwrap();
    }
}
