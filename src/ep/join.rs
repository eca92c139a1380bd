//! `ferry ep join LINE`: enrols this home machine with the hub the invite
//! line names. The key is made here and never leaves; the hub is trusted
//! only once its CA matches the line's fingerprint, and the secret is sent
//! only inside TLS to that hub. Writes a working `ep.toml` and `certs/`.

use crate::{
    certgen::write_file,
    config::join_host_port,
    enrol::{HELLO, Line, Offered, Reply, Request, fingerprint, unhex},
    proto,
    secret::Secret,
};
use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// What `join` wrote.
pub struct Joined {
    pub ep: String,
    pub config: PathBuf,
}

/// Enrols with the hub in `line`, writing `dir/ep.toml` and `dir/certs/`.
/// Existing files are kept unless `force`.
pub async fn join(line: &str, dir: &Path, force: bool) -> Result<Joined> {
    let line = Line::parse(line)?;
    let config = dir.join("ep.toml");
    let certs = dir.join("certs");
    if !force {
        refuse_existing([config.clone(), certs.join("ep.key"), certs.join("ep.pem")])?;
    }
    let (host, _) = crate::config::split_host_port(&line.door).map_err(anyhow::Error::msg)?;
    let (key, reply) = enrol(&line, &host).await?;
    let (ep, cert, ca, token, control, channel, services) = match reply {
        Reply::Enrolled {
            ep,
            cert,
            ca,
            token,
            control_port,
            channel_port,
            services,
        } => (ep, cert, ca, token, control_port, channel_port, services),
        Reply::Refused { reason } => bail!("the hub refused the enrolment: {reason}"),
    };
    std::fs::create_dir_all(&certs)
        .with_context(|| format!("cannot create {}", certs.display()))?;
    write_file(
        &certs.join("ep.key"),
        key.serialize_pem().as_bytes(),
        0o600,
        force,
    )?;
    write_file(&certs.join("ep.pem"), cert.as_bytes(), 0o644, force)?;
    write_file(&certs.join("ca.pem"), ca.as_bytes(), 0o644, force)?;
    write_file(
        &certs.join("token"),
        format!("{}\n", token.expose()).as_bytes(),
        0o600,
        force,
    )?;
    let toml = ep_toml(&ep, &config, &host, (control, channel), &services);
    write_file(&config, toml.as_bytes(), 0o644, force)?;
    Ok(Joined { ep, config })
}

fn refuse_existing(files: [PathBuf; 3]) -> Result<()> {
    for f in files {
        if f.exists() {
            bail!("{} already exists; pass --force to replace it", f.display());
        }
    }
    Ok(())
}

/// Makes the ep's key and asks the hub to certify it, within `DEADLINE`.
async fn enrol(line: &Line, host: &str) -> Result<(rcgen::KeyPair, Reply)> {
    // The key is made before anything is sent, so a failure leaves no
    // half-enrolled state on the hub.
    let key = rcgen::KeyPair::generate().context("cannot generate the ep's key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let reply = tokio::time::timeout(DEADLINE, exchange(line, host, csr))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub at {} did not finish within {DEADLINE:?}",
                line.door
            )
        })??;
    Ok((key, reply))
}

/// The `ep.toml` a join writes: the hub's doors on `host`, the files in
/// `certs/`, and each offered service on loopback for a person to check.
fn ep_toml(
    ep: &str,
    config: &Path,
    host: &str,
    (control, channel): (u16, u16),
    services: &[Offered],
) -> String {
    let mut toml = format!(
        "# Written by `ferry ep join` for ep {ep}. Run: ferry ep -c {}\n\
         hub = {:?}\nchannel = {:?}\ntoken_file = \"certs/token\"\n\n\
         [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/ep.pem\"\nkey = \"certs/ep.key\"\n",
        config.display(),
        join_host_port(host, control),
        join_host_port(host, channel),
    );
    for s in services {
        let last = s.first_port + s.ports.saturating_sub(1);
        let ports = if s.ports > 1 {
            format!("{}-{last}", s.first_port)
        } else {
            s.first_port.to_string()
        };
        toml += &format!(
            "\n[services.{}]                 # {} on the hub\nlocal = \"127.0.0.1:{ports}\"   # where it listens at home: change if it differs\n",
            s.name, s.kind
        );
    }
    if services.is_empty() {
        toml +=
            "\n# The hub has no services yet: add [services.NAME] with local = \"host:port\".\n";
    }
    toml
}

/// The conversation with the enrol door (see `crate::enrol`).
async fn exchange(line: &Line, host: &str, csr: String) -> Result<Reply> {
    let tcp = TcpStream::connect(&line.door)
        .await
        .with_context(|| format!("cannot reach the hub's enrol door at {}", line.door))?;
    let mut tcp = BufReader::new(tcp);
    tcp.get_mut()
        .write_all(format!("{HELLO} {}\n", line.id).as_bytes())
        .await?;
    let mut answer = String::new();
    tcp.read_line(&mut answer)
        .await
        .context("the enrol door closed the connection")?;
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
    let config = crate::tls::enrol_client_config(&ca)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| anyhow::anyhow!("{host:?} is not a host name or address"))?;
    // A buffered byte beyond the CA line would be TLS; there is none, the
    // hub waits for our ClientHello.
    let tcp = tcp.into_inner();
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
        csr,
    };
    proto::write_msg(&mut tls, &req).await?;
    let reply: Reply = proto::read_msg(&mut tls)
        .await
        .context("the hub closed the enrolment without an answer")?;
    Ok(reply)
}
