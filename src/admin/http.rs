//! Just enough HTTP/1.1 for the admin door: one GET per connection, small
//! requests, the answer, close.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A request line and headers, with the blank line that ends them, may not
/// exceed this; the reader stops there.
pub const MAX_REQUEST: usize = 8 * 1024;

/// No `Debug`: the token must not reach a log line.
#[derive(PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// From `Authorization: Bearer …` or `?token=…` (an `EventSource`
    /// cannot set headers).
    pub token: Option<String>,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// Sent by a browser for another site's page (`Sec-Fetch-Site`), and
    /// not as the top-level page a person opened from there: an image, a
    /// frame or a script's fetch, which any page the operator visits can
    /// make with a wrong token to have the operator's own address
    /// penalised.
    pub cross_site: bool,
}

impl Request {
    /// Whether the request names the door by an address (or `localhost`),
    /// not by a DNS name: a page elsewhere that rebinds its own name to
    /// 127.0.0.1 sends its name, and must not read a door without a token.
    pub fn names_an_address(&self) -> bool {
        let Some(host) = self.host.as_deref() else {
            return true;
        };
        // An address and nothing else: after it at most `:PORT`, in digits
        // (`127.0.0.1:80@evil.example` is a name, not an address).
        let (bare, port) = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((a, "")) => (a, None),
                Some((a, rest)) => match rest.strip_prefix(':') {
                    Some(p) => (a, Some(p)),
                    None => return false,
                },
                None => return false,
            },
            None => match host.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host, None),
            },
        };
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        port_ok
            && (bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok())
    }
}

pub async fn read_request(tcp: &mut TcpStream) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Where the blank line is looked for: only in what came since the last
    // look (and the three bytes before it), so a request sent a byte at a
    // time costs its length, not its length squared.
    let mut looked: usize = 0;
    loop {
        let from = looked.saturating_sub(3);
        if (buf.len() >= MAX_REQUEST || buf[from..].windows(4).any(|w| w == b"\r\n\r\n"))
            && let Some(req) = parse(&buf)?
        {
            return Ok(req);
        }
        looked = buf.len();
        // `parse` refuses a head without its end at MAX_REQUEST bytes, so
        // there is room, and how the bytes were split never matters.
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        match tcp.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err("incomplete request\n".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The request in the bytes read so far; `Ok(None)` until its head ends
/// (a blank line). Only the first `MAX_REQUEST` bytes count. A pure
/// function, for the tests and the fuzz target (`fuzz/`).
pub fn parse(buf: &[u8]) -> Result<Option<Request>, String> {
    let seen = &buf[..buf.len().min(MAX_REQUEST)];
    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_REQUEST {
            return Err("request too large\n".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "request is not text\n".to_string())?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = match (first.next(), first.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Err("malformed request line\n".into()),
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .and_then(form_decode);
    let mut host = None;
    let (mut site, mut mode, mut dest) = ("", "", "");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let fetch = |what: &str| name.eq_ignore_ascii_case(&format!("sec-fetch-{what}"));
        if fetch("site") {
            site = value.trim();
        } else if fetch("mode") {
            mode = value.trim();
        } else if fetch("dest") {
            dest = value.trim();
        } else if name.eq_ignore_ascii_case("authorization")
            && let Some(t) = bearer(value)
        {
            token = Some(t.to_string());
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(value.trim().to_string());
        }
    }
    Ok(Some(Request {
        method,
        path: path.to_string(),
        token,
        host,
        cross_site: matches!(site, "cross-site" | "same-site")
            && !(mode == "navigate" && dest == "document"),
    }))
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme's
/// name is case-insensitive (RFC 9110 §11.1): a client that writes
/// `bearer` must not be told it sent no token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    }
}

pub async fn respond(
    tcp: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    write_within(tcp, head.as_bytes(), STALL).await?;
    write_within(tcp, body, STALL).await?;
    tokio::time::timeout(STALL, tcp.shutdown())
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// A reader that takes nothing of an answer for this long is dropped: one
/// that asks and never reads must not hold its place at the door (nor the
/// hub's shutdown, which waits for the door's connections) for ever.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes `bytes` as long as the reader takes some within every `stall`.
pub async fn write_within(
    tcp: &mut TcpStream,
    mut bytes: &[u8],
    stall: std::time::Duration,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = tokio::time::timeout(stall, tcp.write(bytes))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// A query value as a browser writes it (`%XX` escapes, `+` for a space):
/// the page hands its `?token=` to its event stream re-encoded, so a
/// token with `+`, `%`, `&` or a space must read the same both ways.
/// None if an escape is broken or the bytes are not UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token with characters a URL reserves reads the same typed
    /// escaped in the page's address and as the page's script re-encodes
    /// it for its event stream.
    #[test]
    fn a_query_token_is_read_as_a_browser_wrote_it() {
        let token = |target: &str| {
            let req = format!("GET {target} HTTP/1.1\r\n\r\n");
            parse(req.as_bytes()).unwrap().unwrap().token
        };
        let want = Some("a+b c&d%é".to_string());
        assert_eq!(token("/?token=a%2Bb+c%26d%25%C3%A9"), want);
        assert_eq!(token("/events?x=1&token=a%2Bb%20c%26d%25%c3%a9"), want);
        assert_eq!(
            token("/?token=plain-hex-0123"),
            Some("plain-hex-0123".into())
        );
        for broken in ["%", "%2", "%zz", "%+1", "%C3"] {
            assert_eq!(token(&format!("/?token={broken}")), None, "{broken}");
        }
    }

    /// A reader that asks and never reads is dropped once it has taken
    /// nothing for `stall`, however large the answer; one that reads gets
    /// all of it.
    #[tokio::test]
    async fn an_answer_nobody_reads_is_given_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pair = || async {
            let client = tokio::net::TcpSocket::new_v4().unwrap();
            client.set_recv_buffer_size(4096).unwrap();
            let client = client
                .connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (door, _) = listener.accept().await.unwrap();
            socket2::SockRef::from(&door)
                .set_send_buffer_size(4096)
                .unwrap();
            (client, door)
        };
        let body = vec![b'x'; 8 << 20];
        let stall = std::time::Duration::from_millis(200);

        let (_silent, mut door) = pair().await;
        let t = std::time::Instant::now();
        let e = write_within(&mut door, &body, stall).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));

        let (mut client, mut door) = pair().await;
        let stall = std::time::Duration::from_secs(5);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.map(|_| all.len())
        });
        write_within(&mut door, &body, stall).await.unwrap();
        drop(door);
        assert_eq!(reader.await.unwrap().unwrap(), body.len());
    }

    /// Before, the reader checked the size only between reads of up to
    /// 1 KiB: a head ending at byte 9000 was refused when the bytes came
    /// in small segments and served when they came in 1 KiB ones. Now the
    /// first MAX_REQUEST bytes decide, however they were split.
    #[test]
    fn the_cap_is_exact_whatever_the_split() {
        let mut req = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        req.resize(MAX_REQUEST - 4, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        assert!(parse(&req).unwrap().is_some_and(|r| r.path == "/x"));
        for cut in [0, 1, 17, MAX_REQUEST - 1] {
            assert!(parse(&req[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut over = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        over.resize(MAX_REQUEST - 3, b'a');
        over.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&over).err().unwrap(), "request too large\n");
        assert_eq!(
            parse(&over[..MAX_REQUEST]).err().unwrap(),
            "request too large\n"
        );
    }

    #[test]
    fn only_an_address_or_localhost_names_the_door() {
        let named = |host: &str| {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            parse(req.as_bytes()).unwrap().unwrap().names_an_address()
        };
        for yes in [
            "127.0.0.1",
            "127.0.0.1:7080",
            "[::1]",
            "[::1]:7080",
            "localhost",
            "LOCALHOST:80",
        ] {
            assert!(named(yes), "{yes}");
        }
        for no in [
            "evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.1:80@evil.example",
            "localhost.evil.example",
            "[::1]evil",
            "[::1",
            "127.0.0.1:",
            "127.0.0.1:x",
        ] {
            assert!(!named(no), "{no}");
        }
    }

    #[test]
    fn the_token_from_the_query_or_the_header() {
        let r = parse(b"GET /api?a=1&token=t1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api"));
        assert_eq!(r.token.as_deref(), Some("t1"));
        let r = parse(b"GET /?token=t1 HTTP/1.1\r\nauthorization:  Bearer  t2 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.token.as_deref(), Some("t2"));
        for scheme in ["bearer", "BEARER"] {
            let req = format!("GET / HTTP/1.1\r\nAuthorization: {scheme} t3\r\n\r\n");
            let r = parse(req.as_bytes()).unwrap().unwrap();
            assert_eq!(r.token.as_deref(), Some("t3"), "{scheme}");
        }
        let r = parse(b"GET / HTTP/1.1\r\nAuthorization: Basic dDo=\r\n\r\n");
        assert_eq!(r.unwrap().unwrap().token, None);
        assert!(parse(b"GET\r\n\r\n").is_err());
        assert!(parse(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
    }
}
