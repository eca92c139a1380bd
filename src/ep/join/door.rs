//! The conversation with the hub's enrol door, from the ep's side (the
//! protocol is in `crate::enrol`).

use crate::{
    enrol::{HELLO, Line, Reply, Request, fingerprint, unhex},
    proto,
    secret::Secret,
};
use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// The door's first answer is `ca HEX` (one certificate: a few kilobytes
/// in hex) or `no REASON`. It comes before anything is authenticated, so
/// whoever answers on that port could otherwise send one endless line
/// into this machine's memory.
pub(super) const MAX_ANSWER: usize = 64 * 1024;

/// Asks the hub to certify `key`, within `DEADLINE`: the CA that matched
/// the line's fingerprint (DER) and the hub's reply.
pub(super) async fn enrol(
    line: &Line,
    host: &str,
    key: &rcgen::KeyPair,
) -> Result<(Vec<u8>, Reply)> {
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(key)?
        .pem()?;
    tokio::time::timeout(DEADLINE, exchange(line, host, csr))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub at {} did not finish within {DEADLINE:?}",
                line.door
            )
        })?
}

async fn exchange(line: &Line, host: &str, csr: String) -> Result<(Vec<u8>, Reply)> {
    let tcp = TcpStream::connect(&line.door)
        .await
        .with_context(|| format!("cannot reach the hub's enrol door at {}", line.door))?;
    let mut tcp = BufReader::new(tcp);
    tcp.get_mut()
        .write_all(format!("{HELLO} {}\n", line.id).as_bytes())
        .await?;
    let answer = read_answer(&mut tcp, &line.door).await?;
    let answer = answer.trim();
    if let Some(why) = answer.strip_prefix("no ") {
        bail!("the hub refused the invite: {why}");
    }
    let ca = answer.strip_prefix("ca ").and_then(unhex).ok_or_else(|| {
        anyhow::anyhow!(
            "the enrol door answered nonsense; is {} a ferry hub's enrol port?",
            line.door
        )
    })?;
    // Nothing secret has been sent yet: a hub (or a man in the middle)
    // without the invite's CA learns only the invite id.
    if fingerprint(&ca) != line.ca {
        bail!(
            "the hub's CA is not the one in the invite (fingerprint {} instead of {}): nothing was sent; check the line, or someone is in the middle",
            fingerprint(&ca),
            line.ca
        );
    }
    // The hub sends nothing more until our ClientHello; a byte already
    // buffered would be lost to TLS, so it is not a ferry hub talking.
    if !tcp.buffer().is_empty() {
        bail!(
            "the enrol door at {} sent more than its CA line; is it a ferry hub's enrol port?",
            line.door
        );
    }
    let config = crate::tls::enrol_client_config(&ca)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| anyhow::anyhow!("{host:?} is not a host name or address"))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp.into_inner())
        .await
        .with_context(|| {
            format!(
                "TLS with the hub at {} failed (its certificate must name {host})",
                line.door
            )
        })?;
    let req = Request {
        secret: Secret::new(&line.secret),
        csr,
    };
    proto::write_msg(&mut tls, &req).await?;
    let reply: Reply = proto::read_msg(&mut tls)
        .await
        .context("the hub closed the enrolment without an answer")?;
    Ok((ca, reply))
}

/// The door's first line, without its `\n`; at most `MAX_ANSWER` bytes
/// are read.
async fn read_answer(tcp: &mut BufReader<TcpStream>, door: &str) -> Result<String> {
    let mut answer = Vec::new();
    (&mut *tcp)
        .take(MAX_ANSWER as u64 + 1)
        .read_until(b'\n', &mut answer)
        .await
        .with_context(|| format!("the connection to the enrol door at {door} failed"))?;
    if answer.pop() != Some(b'\n') {
        if answer.len() >= MAX_ANSWER {
            bail!(
                "the enrol door at {door} sent a line longer than {MAX_ANSWER} bytes; stopped reading it (is it a ferry hub's enrol port?)"
            );
        }
        bail!("the enrol door at {door} closed the connection before answering");
    }
    String::from_utf8(answer).map_err(|_| {
        anyhow::anyhow!("the enrol door at {door} answered with something that is not text; is it a ferry hub's enrol port?")
    })
}
