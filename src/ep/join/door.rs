//! The conversation with the hub's enrol door, from the ep's side (the
//! protocol is in `crate::enrol`).

use crate::{
    enrol::{
        HELLO, Line, Reply, Request, fingerprint,
        lines::{self, Answer, BadAnswer, MAX_ANSWER},
    },
    proto,
    secret::Secret,
};
use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub(super) const DEADLINE: Duration = Duration::from_secs(30);

/// Asks the hub to certify `key`, each try within `DEADLINE`, asking again
/// where that can help: the CA that matched the line's fingerprint (DER)
/// and the hub's reply. `sent`: when a request with this key first went
/// out (an earlier join's); `sending` is called as one first goes out.
pub(super) async fn enrol(
    line: &Line,
    host: &str,
    key: &rcgen::KeyPair,
    sent: Option<std::time::SystemTime>,
    sending: &mut dyn FnMut(),
) -> Result<(Vec<u8>, Reply)> {
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(key)?
        .pem()?;
    // Until when asking again can still reach the hub in its window, on
    // this machine's steady clock (an earlier join's send may be older
    // than the clock: a reboot since leaves no time).
    let mut asking_until = sent.map(|at| {
        let ago = at.elapsed().unwrap_or_default();
        Instant::now() + ASKING.saturating_sub(ago)
    });
    let mut wait = Duration::from_secs(1);
    loop {
        let began = Instant::now();
        let mut once = || {
            if asking_until.is_none() {
                asking_until = Some(began + ASKING);
                sending();
            }
        };
        let tried = tokio::time::timeout(DEADLINE, exchange(line, host, &csr, &mut once)).await;
        let e = match tried {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!(
                "the hub at {} did not finish within {DEADLINE:?}",
                line.door
            ),
        };
        let busy = match e.downcast_ref::<Refused>() {
            Some(r) if !r.busy => return Err(e),
            refused => refused.is_some(),
        };
        let again = if let Some(until) = asking_until {
            // A request went out and no answer came back: the hub may have
            // enrolled this machine and lost its answer on the way, or
            // stopped halfway. It takes the same key and secret again for
            // a while (`invites::ASK_AGAIN`), so from here any failure (a
            // hub restarting, busy) is asked again, while an ask can still
            // reach the hub within that while. Counted from the try that
            // first sent it (its start: no later than the hub's use).
            if Instant::now() + wait > until {
                return Err(e.context(
                    "the hub did not answer the enrolment; if it enrolled this machine, the \
                     invite is now used: ask the hub's operator for a new one (`ferry hub \
                     invite --list` shows whether it was used)",
                ));
            }
            "the hub may have enrolled this machine and lost its answer: asking again with the \
             same key"
        } else if (busy || early(&e)) && wait <= LAST_EARLY_WAIT {
            // Before anything secret went out, a door that gave our place
            // to a newcomer (a door full of strangers' connections gives
            // its oldest away) or said it was busy: asked again, 3 times.
            "asking again"
        } else {
            return Err(e);
        };
        eprintln!("{e:#}; {again} in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(16));
    }
}

/// How long after its first request the join asks again: an ask started
/// by then reaches the hub within `DEADLINE`, inside the hub's window.
const ASKING: Duration = Duration::from_secs(crate::enrol::invites::ASK_AGAIN - 30);

/// The last wait before asking the door again when no request went out:
/// waits of 1, 2 and 4 s.
const LAST_EARLY_WAIT: Duration = Duration::from_secs(4);

/// The door said no to the invite: asking again cannot help, unless it
/// was busy.
#[derive(Debug, thiserror::Error)]
#[error("the hub refused the invite: {why}")]
struct Refused {
    why: String,
    busy: bool,
}

/// One enrolment: `sending` is called as the request (with the secret)
/// starts out.
async fn exchange(
    line: &Line,
    host: &str,
    csr: &str,
    sending: &mut dyn FnMut(),
) -> Result<(Vec<u8>, Reply)> {
    let (tcp, answer, more) = ask(line).await?;
    let ca = match answer {
        // Not yet known to be the hub: its words, shown, cannot drive the
        // terminal.
        Answer::No(why) => {
            let busy = why.contains("busy");
            let why = proto::shown(&why);
            return Err(Refused { why, busy }.into());
        }
        Answer::Ca(ca) => ca,
    };
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
    if more {
        bail!(
            "the enrol door at {} sent more than its CA line; is it a ferry hub's enrol port?",
            line.door
        );
    }
    let config = crate::tls::enrol_client_config(&ca)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| anyhow::anyhow!("{host:?} is not a host name or address"))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| {
            format!(
                "TLS with the hub at {} failed (its certificate must name {host})",
                line.door
            )
        })?;
    let req = Request {
        secret: Secret::new(&line.secret),
        csr: csr.to_string(),
    };
    sending();
    proto::write_msg(&mut tls, &req).await?;
    let reply: Reply = proto::read_msg(&mut tls)
        .await
        .context("the hub closed the enrolment without an answer")?;
    Ok((ca, reply))
}

/// The door's first answer to the invite's id.
async fn ask(line: &Line) -> Result<(TcpStream, Answer, bool)> {
    let mut tcp = TcpStream::connect(&line.door)
        .await
        .with_context(|| format!("cannot reach the hub's enrol door at {}", line.door))?;
    tcp.write_all(format!("{HELLO} {}\n", line.id).as_bytes())
        .await
        .with_context(|| format!("the connection to the enrol door at {} failed", line.door))?;
    let (answer, more) = read_answer(&mut tcp, &line.door).await?;
    Ok((tcp, answer, more))
}

/// Whether `e` ended an ask before the door answered, as a door that gave
/// our place to a newcomer does (a reset, or a close).
fn early(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::*;
    let cut = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe))
    });
    cut || e
        .to_string()
        .contains("closed the connection before answering")
}

/// The door's answer (`lines::answer`) and whether more bytes came after
/// its line; at most `MAX_ANSWER + 1` bytes are read.
async fn read_answer(tcp: &mut TcpStream, door: &str) -> Result<(Answer, bool)> {
    let too_long = || {
        anyhow::anyhow!(
            "the enrol door at {door} sent a line longer than {MAX_ANSWER} bytes; stopped reading it (is it a ferry hub's enrol port?)"
        )
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // The parser refuses a line at MAX_ANSWER + 1 bytes, so there is
        // always room here.
        let room = (MAX_ANSWER + 1 - buf.len()).min(chunk.len());
        let n = tcp
            .read(&mut chunk[..room])
            .await
            .with_context(|| format!("the connection to the enrol door at {door} failed"))?;
        if n == 0 {
            if buf.len() >= MAX_ANSWER {
                return Err(too_long());
            }
            bail!("the enrol door at {door} closed the connection before answering");
        }
        buf.extend_from_slice(&chunk[..n]);
        // Parsed once its end (or the cap) arrives: a line sent a byte at
        // a time is not scanned again for every byte.
        if !chunk[..n].contains(&b'\n') && buf.len() <= MAX_ANSWER {
            continue;
        }
        match lines::answer(&buf) {
            Ok(Some((answer, used))) => return Ok((answer, used < buf.len())),
            Ok(None) => {}
            Err(BadAnswer::TooLong) => return Err(too_long()),
            Err(BadAnswer::NotText) => bail!(
                "the enrol door at {door} answered with something that is not text; is it a ferry hub's enrol port?"
            ),
            Err(BadAnswer::Nonsense) => {
                bail!("the enrol door answered nonsense; is {door} a ferry hub's enrol port?")
            }
        }
    }
}
