//! Just enough HTTP/1.1 for the admin door: one GET per connection, small
//! requests, the answer, close.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A request line and headers may not exceed this.
const MAX_REQUEST: usize = 8 * 1024;

pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// From `Authorization: Bearer …` or `?token=…` (an `EventSource`
    /// cannot set headers).
    pub token: Option<String>,
}

pub async fn read_request(tcp: &mut TcpStream) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return Err("request too large\n".into());
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("incomplete request\n".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
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
        .map(|t| t.to_string());
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("authorization")
            && let Some(t) = value.trim().strip_prefix("Bearer ")
        {
            token = Some(t.trim().to_string());
        }
    }
    Ok(Request {
        method,
        path: path.to_string(),
        token,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
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
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    tcp.shutdown().await
}
