//! The hub–ep wire protocol: two message enums and a length-prefixed frame.
//!
//! Control connections carry frames both ways for their whole life. A channel
//! connection carries exactly two frames (`EpMsg::Channel` up, `HubMsg::Start`
//! down) and then the player's raw bytes.

use crate::secret::Secret;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped when a message changes incompatibly; the hub refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts. Control messages are tiny; the cap keeps
/// a hostile length prefix from allocating anything large.
pub const MAX_FRAME: usize = 16 * 1024;

/// ALPN name on the control and channel ports, so a stray TLS client that
/// speaks something else fails the handshake instead of reaching our parser.
pub const ALPN: &[u8] = b"ferry/1";

/// Messages an ep sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EpMsg {
    /// First frame on a control connection: the token and the services served.
    Hello {
        version: u32,
        token: Secret,
        services: Vec<String>,
    },
    /// Keeps the control connection alive and proves the ep is responsive.
    Heartbeat,
    /// First frame on a channel connection: the one-time ticket from `Open`.
    Channel { service: String, ticket: String },
}

/// Messages the hub sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HubMsg {
    /// Login accepted; timings the ep must follow for this session.
    Welcome {
        heartbeat_ms: u64,
        heartbeat_timeout_ms: u64,
        idle_timeout_ms: u64,
    },
    /// Login refused; `reason` is safe to show to the ep's operator.
    /// `retry` says the cause is passing (the hub is busy), not the ep's.
    Refused {
        reason: String,
        #[serde(default)]
        retry: bool,
    },
    /// Keeps the control connection alive.
    Heartbeat,
    /// Asks the ep to open one channel for `service`, presenting `ticket`.
    Open { service: String, ticket: String },
    /// On a channel: a player arrived; the ep dials the service now.
    Start { player: SocketAddr },
    /// On control: the hub is ending this session on purpose (replaced by a
    /// newer login, certificate revoked, hub shutting down).
    Closing { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

/// Writes one frame and flushes it (frames are latency-sensitive signals).
pub async fn write_msg<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame. Not cancel-safe: callers keep the future alive until it
/// completes (a long-lived reader loop), never race it in a `select!` loop.
pub async fn read_msg<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let msg = HubMsg::Open {
            service: "web".into(),
            ticket: "ab".into(),
        };
        write_msg(&mut a, &msg).await.unwrap();
        let got: HubMsg = read_msg(&mut b).await.unwrap();
        assert_eq!(got, msg);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_msg::<_, HubMsg>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        let err = read_msg::<_, EpMsg>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn token_never_in_debug() {
        let m = EpMsg::Hello {
            version: 1,
            token: Secret::new("s3cret"),
            services: vec![],
        };
        assert!(!format!("{m:?}").contains("s3cret"));
    }
}
