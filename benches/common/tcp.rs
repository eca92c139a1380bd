//! The TCP services at "home", in the bench's own process: a sink and
//! an echo, reached directly, through ferry and through the baselines.

use std::net::SocketAddr;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Reads until EOF, then answers with the byte count (8 bytes, BE).
pub async fn sink() -> SocketAddr {
    serve("127.0.0.1", |mut s| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Echoes until EOF.
pub async fn echo() -> SocketAddr {
    echo_at("127.0.0.1").await
}

/// `echo` listening on `ip` (a namespace's other address).
pub async fn echo_at(ip: &str) -> SocketAddr {
    serve(ip, |mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

async fn serve<F, Fut>(ip: &str, handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(handler(s));
            }
        }
    });
    addr
}
