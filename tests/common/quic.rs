//! QUIC clients that are not ferry's ep: one holding an ep's certificate
//! (for a login that goes wrong on purpose), one with no certificate, and
//! a source of QUIC Initials that never go further (a stalled handshake).

use super::Certs;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

fn endpoint(tls: rustls::ClientConfig) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A QUIC client with ep `name`'s certificate (ALPN and CA as ferry's ep).
pub fn ep_client(certs: &Certs, name: &str) -> quinn::Endpoint {
    ep_client_with(certs, name, quinn::TransportConfig::default())
}

/// The same with its own transport settings (windows, say).
pub fn ep_client_with(
    certs: &Certs,
    name: &str,
    transport: quinn::TransportConfig,
) -> quinn::Endpoint {
    let tls = ferry::tls::client_config(
        &certs.path("ca.pem"),
        &certs.path(&format!("ep-{name}.pem")),
        &certs.path(&format!("ep-{name}.key")),
    )
    .unwrap();
    let mut endpoint = endpoint((*tls).clone());
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from((*tls).clone()).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
}

/// A QUIC client with no certificate at all.
pub fn anonymous_client(certs: &Certs) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for c in ferry::tls::load_certs(&certs.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ferry::proto::ALPN.to_vec()];
    endpoint(tls)
}

/// Sends `to` a fresh QUIC Initial (a new connection id each) from one
/// UDP socket every `every` until `stop`, and never answers what comes
/// back: handshakes that stall after their first packet, from any address
/// a sender can put on a datagram. How many were sent.
pub fn stalled_initials(
    certs: &Certs,
    to: SocketAddr,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let client = anonymous_client(certs);
    tokio::spawn(async move {
        // The client's Initials go to `sink`; `raw` sends them on.
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let mut buf = vec![0u8; 2048];
        let mut sent = 0;
        let mut pace = tokio::time::interval(every);
        while !stop.is_cancelled() {
            pace.tick().await;
            let connecting = client.connect(sink_addr, "localhost").unwrap();
            let got = tokio::time::timeout(Duration::from_secs(1), sink.recv_from(&mut buf)).await;
            if let Ok(Ok((n, _))) = got {
                let _ = raw.send_to(&buf[..n], to).await;
                sent += 1;
            }
            drop(connecting);
        }
        sent
    })
}

/// Certificate-less handshakes to `to`, one after another, until `stop`
/// (or `n` of them); how many were made.
pub async fn anonymous_handshakes(
    certs: &Certs,
    to: SocketAddr,
    n: usize,
    stop: CancellationToken,
) -> usize {
    let client = anonymous_client(certs);
    let mut made = 0;
    while made < n && !stop.is_cancelled() {
        if let Ok(c) = client.connect(to, "localhost") {
            let conn = tokio::time::timeout(Duration::from_secs(2), c).await;
            if let Ok(Ok(conn)) = conn {
                // TLS 1.3: the hub's refusal comes just after the handshake.
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            }
        }
        made += 1;
    }
    made
}
