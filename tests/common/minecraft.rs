//! A Minecraft Java client and server just big enough for tests of the
//! game door, written from wiki.vg's packet layouts (not from ferry's own
//! encoder, so a mistake there cannot hide here).

use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub fn varint(out: &mut Vec<u8>, v: i32) {
    let mut v = v as u32;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn packet(id: i32, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    varint(&mut inner, id);
    inner.extend_from_slice(body);
    let mut out = Vec::new();
    varint(&mut out, inner.len() as i32);
    out.extend(inner);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, s.len() as i32);
    out.extend_from_slice(s.as_bytes());
    out
}

/// The Handshake: protocol 765 (1.20.4), `host`, port 25565, next state
/// 1 (status) or 2 (login).
pub fn handshake(host: &str, next: i32) -> Vec<u8> {
    let mut body = Vec::new();
    varint(&mut body, 765);
    body.extend(string(host));
    body.extend(25565u16.to_be_bytes());
    varint(&mut body, next);
    packet(0, &body)
}

async fn read_varint(s: &mut TcpStream) -> std::io::Result<i32> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let b = s.read_u8().await?;
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v as i32);
        }
    }
    Err(std::io::Error::other("varint too long"))
}

/// One packet: its id and body.
pub async fn read_packet(s: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
    let len = read_varint(s).await? as usize;
    let mut frame = vec![0u8; len];
    s.read_exact(&mut frame).await?;
    let mut id: u32 = 0;
    let mut i = 0;
    loop {
        let b = frame[i];
        id |= u32::from(b & 0x7f) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok((id as i32, frame[i..].to_vec()))
}

/// A string field at the start of `body`.
pub fn read_string(body: &[u8]) -> String {
    let mut len: u32 = 0;
    let mut i = 0;
    loop {
        let b = body[i];
        len |= u32::from(b & 0x7f) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&body[i..i + len as usize]).into_owned()
}

/// What a server-list ping of `to` (typing `host`) shows: the status JSON.
pub async fn ping(to: SocketAddr, host: &str) -> std::io::Result<serde_json::Value> {
    let talk = async {
        let mut s = TcpStream::connect(to).await?;
        let mut out = handshake(host, 1);
        out.extend(packet(0, &[]));
        s.write_all(&out).await?;
        let (id, body) = read_packet(&mut s).await?;
        assert_eq!(id, 0, "a status response");
        let json: serde_json::Value = serde_json::from_str(&read_string(&body))?;
        s.write_all(&packet(1, &42i64.to_be_bytes())).await?;
        let (id, body) = read_packet(&mut s).await?;
        assert_eq!((id, body), (1, 42i64.to_be_bytes().to_vec()), "the pong");
        Ok(json)
    };
    tokio::time::timeout(Duration::from_secs(20), talk)
        .await
        .map_err(|_| std::io::Error::other("ping timed out"))?
}

/// The MOTD of a status JSON, as plain text.
pub fn motd(status: &serde_json::Value) -> String {
    match &status["description"] {
        serde_json::Value::String(s) => s.clone(),
        d => d["text"].as_str().unwrap_or_default().to_string(),
    }
}

/// A join of `to` typing `host`: `Ok(first packet's id and body)`.
pub async fn join(to: SocketAddr, host: &str) -> std::io::Result<(i32, Vec<u8>)> {
    let talk = async {
        let mut s = TcpStream::connect(to).await?;
        let mut out = handshake(host, 2);
        // Login Start: name and (1.20.2+) a UUID.
        let mut body = string("steve");
        body.extend([0u8; 16]);
        out.extend(packet(0, &body));
        s.write_all(&out).await?;
        read_packet(&mut s).await
    };
    tokio::time::timeout(Duration::from_secs(40), talk)
        .await
        .map_err(|_| std::io::Error::other("join timed out"))?
}

/// The text of a login Disconnect's JSON.
pub fn disconnect_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_str(&read_string(body)).unwrap();
    v["text"].as_str().unwrap_or_default().to_string()
}

/// A stand-in server: answers a status ping with `motd`, and a login with
/// a Disconnect saying `motd` (so a test sees which server it reached)
/// and the host the player typed.
pub async fn fake_server(motd: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    serve_fake(l, motd);
    at
}

pub fn serve_fake(l: TcpListener, motd: &'static str) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok((0, hs)) = read_packet(&mut s).await else {
                    return;
                };
                let next = *hs.last().unwrap();
                let host = read_string(&hs[2..]);
                if next == 1 {
                    let _ = read_packet(&mut s).await;
                    let json = serde_json::json!({
                        "version": {"name": "1.20.4", "protocol": 765},
                        "players": {"max": 20, "online": 3},
                        "description": {"text": motd},
                    });
                    let _ = s.write_all(&packet(0, &string(&json.to_string()))).await;
                    if let Ok((1, p)) = read_packet(&mut s).await {
                        let _ = s.write_all(&packet(1, &p)).await;
                    }
                } else {
                    let _ = read_packet(&mut s).await;
                    let json = serde_json::json!({"text": format!("{motd} {host}")});
                    let _ = s.write_all(&packet(0, &string(&json.to_string()))).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
}
