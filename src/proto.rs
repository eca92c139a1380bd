//! The hub–ep wire protocol: two message enums and a length-prefixed frame.
//!
//! Control connections carry frames both ways for their whole life. A channel
//! connection carries exactly two frames (`EpMsg::Channel` up, `HubMsg::Start`
//! down) and then the player's raw bytes.
//!
//! The protocol grows without breaking: `Hello` and `Welcome` carry the
//! version and the features each side has; both ends ignore fields they do
//! not know and skip message types they do not know (logged at debug), so a
//! hub and an ep can be upgraded one at a time. A sender uses a feature only
//! once the peer has named it.

use crate::config::ports::ServiceKind;
use crate::secret::Secret;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{collections::BTreeMap, net::SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The highest protocol version this build speaks. A peer with a higher
/// version talks down to this one; one lower than `MIN_PROTOCOL_VERSION` is
/// refused.
pub const PROTOCOL_VERSION: u32 = 1;
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Features this build has, named in `Hello` and `Welcome`.
pub mod feature {
    /// The ep reports a channel it could not open (`EpMsg::ChannelFailed`).
    pub const CHANNEL_FAILED: &str = "channel_failed";
    /// `Refused` and `Closing` carry a machine-readable `kind`.
    pub const REASON_KINDS: &str = "reason_kinds";
    /// UDP services and port ranges: `Hello`/`Welcome` carry each
    /// service's shape, `Start` a flow's protocol and port offset.
    pub const UDP: &str = "udp";
    /// The ep re-announces its services on a live session
    /// (`EpMsg::Services`), answered with `HubMsg::Services`.
    pub const LIVE_SERVICES: &str = "live_services";
    /// The hub has a QUIC door (`Welcome.quic`); UDP flows over QUIC use
    /// datagrams (`Start.flow`).
    pub const QUIC: &str = "quic";
    /// The ep reports how its services at home are doing (`EpMsg::Home`)
    /// and honours `Start.no_wake`.
    pub const HOME: &str = "home";
    /// The hub answers `EpMsg::Ping` with `HubMsg::Pong` on control, so an
    /// ep on TLS knows its round trip to each hub.
    pub const PING: &str = "ping";
    /// The ep reports how long it took to dial home for a player
    /// (`EpMsg::Dialed`), for the hub's players table.
    pub const DIALED: &str = "dialed";
    /// The hub tells the ep its services' byte-rate caps (`HubMsg::Pace`)
    /// and which players it caps (`Start.pace`); the ep sends those
    /// players' bytes home → hub no faster, so a capped download never
    /// fills the home uplink in bursts.
    pub const PACE: &str = "pace";
    pub const ALL: &[&str] = &[
        CHANNEL_FAILED,
        REASON_KINDS,
        UDP,
        LIVE_SERVICES,
        QUIC,
        HOME,
        PING,
        DIALED,
        PACE,
    ];
}

/// This build's feature list, as sent on the wire.
pub fn features() -> Vec<String> {
    feature::ALL.iter().map(|f| f.to_string()).collect()
}

/// Largest frame either side accepts. Control messages are tiny; the cap keeps
/// a hostile length prefix from allocating anything large.
pub const MAX_FRAME: usize = 16 * 1024;

/// ALPN name on the control and channel ports, so a stray TLS client that
/// speaks something else fails the handshake instead of reaching our parser.
pub const ALPN: &[u8] = b"ferry/1";

/// ALPN on the enrol door's TLS.
pub const ENROL_ALPN: &[u8] = b"ferry-enrol/1";

/// Messages an ep sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EpMsg {
    /// First frame on a control connection: the token and the services served.
    Hello {
        version: u32,
        token: Secret,
        services: Vec<String>,
        /// Absent from eps older than feature negotiation.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// The ep's ferry version, for the operator's status page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        software: Option<String>,
        /// (feature `udp`) Each service's shape as ep.toml has it.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        shapes: BTreeMap<String, Shape>,
    },
    /// Keeps the control connection alive and proves the ep is responsive.
    Heartbeat,
    /// First frame on a channel connection: the one-time ticket from `Open`.
    Channel { service: String, ticket: String },
    /// On control (feature `channel_failed`): the channel asked for with
    /// `ticket` will not come, so the hub stops counting on it.
    ChannelFailed {
        service: String,
        ticket: String,
        reason: String,
    },
    /// On control (feature `live_services`): the services this ep serves
    /// now, after its configuration changed; replaces the `Hello`'s list.
    Services {
        services: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        shapes: BTreeMap<String, Shape>,
    },
    /// On control (feature `home`): how the services at home are doing,
    /// each one the ep has seen since it logged in (the rest: unknown).
    Home {
        services: BTreeMap<String, HomeState>,
    },
    /// On control (feature `ping`): a heartbeat the hub answers with
    /// `Pong` carrying the same `n`; `rtt_us` is the last round trip it
    /// measured, for the hub's players table.
    Ping {
        n: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_us: Option<u64>,
    },
    /// On control (feature `dialed`): the service at home answered the
    /// dial for the TCP player at `player` after `us` microseconds
    /// (including a wake, if it slept).
    Dialed {
        service: String,
        player: SocketAddr,
        us: u64,
    },
    /// A message type from a newer ep; skipped.
    #[serde(other)]
    Unknown,
}

/// A service at home as the ep last found it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HomeState {
    /// It answered the last dial.
    Up,
    /// It refused the last dial and the ep cannot start it.
    Down,
    /// It refused the last dial; a joining player makes the ep start it.
    Asleep,
    /// The ep ran its `wake` command and waits for it to answer.
    Waking,
    /// A state from a newer ep: treated as no report.
    #[serde(other)]
    Unknown,
}

/// A service's protocols and how many ports its range has.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shape {
    /// From the ep: absent unless ep.toml repeats `type`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ServiceKind>,
    pub ports: u16,
}

/// Why the hub refused a login, for the ep to act on (feature `reason_kinds`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    WrongToken,
    UnknownService,
    ServiceTaken,
    /// The ep's `type` or port range differs from the hub's.
    ServiceMismatch,
    /// Sent by earlier hubs for an ep offering nothing (now logged in,
    /// serving nothing); still read.
    NoServices,
    Version,
    /// Too many failed logins with this ep's certificate; passing.
    Penalised,
    Busy,
    #[serde(other)]
    Other,
}

/// Why the hub ended a session on purpose.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CloseKind {
    /// A newer login with the same certificate took over.
    Replaced,
    Revoked,
    ShuttingDown,
    #[serde(other)]
    Other,
}

/// Messages the hub sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    /// Login accepted; timings the ep must follow for this session. Eps that
    /// sent no features get exactly the three timings (they predate
    /// negotiation and refuse unknown fields).
    Welcome {
        heartbeat_ms: u64,
        heartbeat_timeout_ms: u64,
        idle_timeout_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// (feature `udp`) The hub's shape of each service of this session.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        services: BTreeMap<String, Shape>,
        /// (feature `quic`) The hub's QUIC port, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quic: Option<u16>,
    },
    /// Login refused; `reason` is safe to show to the ep's operator.
    /// `retry` says the cause is passing (the hub is busy), not the ep's.
    Refused {
        reason: String,
        #[serde(default)]
        retry: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<RefusalKind>,
    },
    /// Keeps the control connection alive.
    Heartbeat,
    /// Asks the ep to open one channel for `service`, presenting `ticket`.
    Open { service: String, ticket: String },
    /// On a channel: a player arrived; the ep dials the service now.
    /// `service` is the hub's address the player reached (for the PROXY
    /// header's destination); sent only to eps that negotiate.
    Start {
        player: SocketAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<SocketAddr>,
        /// (feature `udp`) The channel carries a UDP flow as framed
        /// datagrams (see `datagram`), not a byte stream.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        udp: bool,
        /// (feature `udp`) The player's port within the service's range.
        #[serde(default, skip_serializing_if = "is_zero")]
        offset: u16,
        /// (feature `quic`) The UDP flow's datagrams ride QUIC datagrams
        /// tagged with this id (those too large for the path, the stream).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<u32>,
        /// (feature `quic`) On a stream the hub opened: which service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A server-list ping, not a join: a service that is asleep at
        /// home stays asleep (the ep does not run its `wake` command).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_wake: bool,
        /// (feature `pace`) The hub caps this player, at these rates as it
        /// began: the ep paces what it sends of it home → hub to the
        /// service's caps (as the last `HubMsg::Pace` said; these until
        /// one has).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pace: Option<Rates>,
    },
    /// On control: the hub is ending this session on purpose (replaced by a
    /// newer login, certificate revoked, hub shutting down).
    Closing {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<CloseKind>,
    },
    /// On control (feature `live_services`): the answer to
    /// `EpMsg::Services`: what this session serves now, and why the rest
    /// is not served.
    Services {
        services: BTreeMap<String, Shape>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        refused: BTreeMap<String, String>,
    },
    /// On control (feature `ping`): the answer to `EpMsg::Ping`.
    Pong { n: u64 },
    /// On control (feature `pace`): the caps of the services this session
    /// serves, at login and after a reload changes them.
    Pace { services: BTreeMap<String, Rates> },
    /// A message type from a newer hub; skipped.
    #[serde(other)]
    Unknown,
}

/// A service's byte-rate caps, bytes/s each direction (0: none).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rates {
    #[serde(default)]
    pub max_rate: u64,
    #[serde(default)]
    pub max_rate_per_player: u64,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// Messages with a catch-all for types from a newer peer.
pub trait Message: DeserializeOwned {
    fn is_unknown(&self) -> bool;
}

impl Message for EpMsg {
    fn is_unknown(&self) -> bool {
        matches!(self, EpMsg::Unknown)
    }
}

impl Message for HubMsg {
    fn is_unknown(&self) -> bool {
        matches!(self, HubMsg::Unknown)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Why, as it may be shown: serde's words echo what the peer sent (an
    /// unknown variant's name), which must not forge a log line.
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        FrameError::Malformed(shown(&e.to_string()))
    }
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

/// Reads exactly one frame and nothing beyond it, for the first frames of a
/// connection whose later bytes belong to someone else (a channel's player
/// bytes). Not cancel-safe: use `FrameReader` where a read is raced.
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

/// Reads frames from a stream it owns together with its buffer, so `read`
/// can be raced in `select!`: a read cancelled halfway loses nothing, the
/// next call carries on from the bytes already buffered.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next frame, skipping message types from a newer peer.
    pub async fn read<T: Message>(&mut self) -> Result<T, FrameError> {
        loop {
            if let Some(body) = self.take_frame()? {
                let msg: T = serde_json::from_slice(&body)?;
                if msg.is_unknown() {
                    tracing::debug!(
                        "skipping a message type this build does not know: {}",
                        shown(&String::from_utf8_lossy(&body[..body.len().min(64)]))
                    );
                    continue;
                }
                return Ok(msg);
            }
            // The length was checked, so the buffer stays below one frame
            // plus one read.
            self.buf.reserve(4096);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Closed);
            }
        }
    }

    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }
}

/// Words the other side sent for a person to read (a refusal's or a
/// close's reason), as they may be shown: control characters (a terminal's
/// escape sequences, a line break forging a log line) as `?`, and no more
/// than `SHOWN` characters (then an ellipsis).
pub fn shown(words: &str) -> String {
    let mut out: String = words
        .chars()
        .take(SHOWN)
        .map(|c| if unshowable(c) { '?' } else { c })
        .collect();
    if words.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// A character that must not reach a terminal or a log from another
/// party: a control character, or an invisible one that reorders or hides
/// what is shown around it (the bidirectional overrides and isolates, the
/// zero-width ones, the line separators, the invisible fillers and tags),
/// with which a typed name could make a line read as something else.
pub fn unshowable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// What `shown` keeps of longer words (a frame holds at most 16 KiB).
const SHOWN: usize = 1000;

#[cfg(test)]
mod tests {
    #[test]
    fn words_from_the_other_side_are_shown_without_control_characters() {
        assert_eq!(super::shown("wrong token"), "wrong token");
        assert_eq!(
            super::shown("a\x1b]52;c;eA==\x07b\nc\u{9b}d"),
            "a?]52;c;eA==?b?c?d"
        );
        assert_eq!(super::shown("admin\u{202E}nimda\u{200B}"), "admin?nimda?");
        assert_eq!(super::shown(&"é".repeat(1000)), "é".repeat(1000));
        assert_eq!(super::shown(&"é".repeat(5000)).chars().count(), 1001);
    }

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
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = FrameReader::new(b).read::<HubMsg>().await.unwrap_err();
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
    /// A peer's words inside a decoding error (an unknown variant's name)
    /// cannot break the log line it ends up in.
    #[tokio::test]
    async fn a_malformed_message_cannot_forge_a_log_line() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let body = br#"{"type":"open","service":"x\nERROR forged","ticket":7}"#;
        let evil = br#"{"type":"services","services":{"a":{"type":"x\nERROR: forged","ports":1}}}"#;
        for body in [&body[..], &evil[..]] {
            a.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(body).await.unwrap();
            let err = read_msg::<_, HubMsg>(&mut b).await.unwrap_err();
            let said = err.to_string();
            assert!(matches!(err, FrameError::Malformed(_)), "{said}");
            assert!(!said.contains('\n'), "{said}");
        }
    }

    async fn raw_frame(w: &mut (impl AsyncWrite + Unpin), json: &str) {
        w.write_all(&(json.len() as u32).to_be_bytes())
            .await
            .unwrap();
        w.write_all(json.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn unknown_fields_and_message_types_from_a_newer_peer_are_tolerated() {
        let (mut a, b) = tokio::io::duplex(4096);
        raw_frame(&mut a, r#"{"type":"quic_offer","port":7002}"#).await;
        raw_frame(
            &mut a,
            r#"{"type":"closing","reason":"bye","kind":"moved_to_mars","extra":[1,2]}"#,
        )
        .await;
        let mut r = FrameReader::new(b);
        let got: HubMsg = r.read().await.unwrap();
        assert_eq!(
            got,
            HubMsg::Closing {
                reason: "bye".into(),
                kind: Some(CloseKind::Other)
            }
        );
    }

    #[tokio::test]
    async fn a_read_cancelled_midway_loses_nothing() {
        let (mut a, b) = tokio::io::duplex(4096);
        let mut r = FrameReader::new(b);
        let body = serde_json::to_vec(&EpMsg::Heartbeat).unwrap();
        a.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&body[..3]).await.unwrap();
        // Half a frame is buffered when the read is cancelled.
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.read::<EpMsg>()).await;
        assert!(cut.is_err());
        a.write_all(&body[3..]).await.unwrap();
        assert_eq!(r.read::<EpMsg>().await.unwrap(), EpMsg::Heartbeat);
    }

    #[test]
    fn an_old_ep_gets_a_welcome_without_new_fields() {
        let w = HubMsg::Welcome {
            heartbeat_ms: 1,
            heartbeat_timeout_ms: 2,
            idle_timeout_ms: 3,
            version: None,
            features: vec![],
            services: BTreeMap::new(),
            quic: None,
        };
        let v: serde_json::Value = serde_json::to_value(&w).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
    }

    #[test]
    fn token_never_in_debug() {
        let m = EpMsg::Hello {
            version: 1,
            token: Secret::new("s3cret"),
            services: vec![],
            features: vec![],
            software: None,
            shapes: BTreeMap::new(),
        };
        assert!(!format!("{m:?}").contains("s3cret"));
    }
}
