//! A hostile client holding as many idle connections as it can open does
//! not shut a node out: past its cap the node closes the longest-idle
//! connection for each newcomer, and a fetch is answered within 100 ms.
//! (Its own file: it lowers this process's open-files limit.)

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sets this process's soft open-files limit.
fn limit_open_files(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and writing our own process's limit through a struct
    // we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// One fetch on a new connection: how long it took and the raw answer.
async fn fetch(addr: &str) -> std::io::Result<(Duration, String)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        b"GET /discovery/fetch?env=dev&appid=infra.discovery&status=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    Ok((
        started.elapsed(),
        String::from_utf8_lossy(&answer).to_string(),
    ))
}

#[tokio::test]
async fn a_fetch_is_answered_within_100_ms_while_a_client_holds_every_connection_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nlisten = \"{addr}\"\npeer_listen = \"127.0.0.1:{}\"\nadvertise = \"{addr}\"\n\
             data_dir = \"{}\"\n[tls]\ninsecure_peers = true\n[connections]\nmax_connections = 1000\nmax_connections_per_client = 1000\n",
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_discovery"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("discovery starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if fetch(&addr)
            .await
            .is_ok_and(|(_, a)| a.contains("\"code\":0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The hostile client: every descriptor this process may have.
    limit_open_files(3000);
    let mut hostile = Vec::new();
    while let Ok(s) = TcpStream::connect(&addr).await {
        hostile.push(s);
    }
    assert!(hostile.len() > 1000, "only {} connections", hostile.len());
    // Room for the measuring client's own socket.
    hostile.truncate(hostile.len() - 20);

    for _ in 0..5 {
        let (took, answer) = fetch(&addr).await.expect("fetch");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"code\":0"), "{answer}");
        assert!(
            took < Duration::from_millis(100),
            "fetch took {took:?} with {} hostile connections",
            hostile.len()
        );
    }
    drop(hostile);
    let _ = node.kill();
    let _ = node.wait();
}
