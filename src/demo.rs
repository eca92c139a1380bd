//! `ferry demo`: the whole tunnel on one machine, for a first look.
//! Generates certificates and a token on first run, then runs the hub and
//! the ep from the shipped configs plus a small web service for the ep to
//! expose.

use crate::{
    certgen::GenCert,
    config::{
        ep::{EpConfig, EpFlags},
        hub::{HubConfig, HubFlags},
    },
    files::write_file,
    token,
};
use anyhow::{Context, Result};
use std::path::PathBuf;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

/// Creates `certs/` (CA, hub and `home` ep certificates, a token and its
/// hash) unless it is already there.
pub fn first_run(root: &std::path::Path) -> Result<()> {
    let dir = root.join("certs");
    let fresh = !dir.join("ca.pem").exists();
    // Also fills in what an older ferry did not write (crl.pem).
    if fresh || !dir.join("crl.pem").exists() {
        let eps = if dir.join("ep-home.pem").exists() {
            vec![]
        } else {
            vec!["home".into()]
        };
        GenCert {
            dir: dir.clone(),
            eps,
            ..Default::default()
        }
        .run()?;
        if fresh {
            eprintln!("created a CA and certificates in {}", dir.display());
        }
    }
    if !dir.join("ep-token").exists() {
        let t = token::generate();
        let hash = token::hash(&t).map_err(anyhow::Error::msg)?;
        write_file(
            &dir.join("ep-token"),
            format!("{}\n", t.expose()).as_bytes(),
            0o600,
            true,
        )?;
        write_file(
            &dir.join("token.hash"),
            format!("{hash}\n").as_bytes(),
            0o600,
            true,
        )?;
    }
    Ok(())
}

/// `ferry demo`'s flags.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder holding config/ and certs/.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    first_run(&args.root)?;
    let hub_file = args.root.join("config/hub.toml");
    let ep_file = args.root.join("config/ep.toml");
    let hub_settings = HubConfig::load(&hub_file, HubFlags::default())?.check(&hub_file)?;
    let mut ep_settings = EpConfig::load(&ep_file, EpFlags::default())?.check(&ep_file)?;
    let local = ep_settings
        .services
        .get("web")
        .map(|l| l.addr.at(0))
        .context("config/ep.toml has no [services.web] for the demo to serve")?;

    let (shutdown, immediate) = (CancellationToken::new(), CancellationToken::new());
    crate::shutdown::on_signal(shutdown.clone(), immediate.clone());
    let hub = crate::hub::Hub::bind(hub_settings).await?;
    let player_addr = hub
        .service_addr("web")
        .context("config/hub.toml has no [services.web]")?;
    // Both sides run here, so the ep dials whatever the hub really bound.
    ep_settings.hubs[0].hub = hub.control_addr().to_string();
    ep_settings.hubs[0].channel = hub.channel_addr().to_string();
    let web = TcpListener::bind(&local)
        .await
        .with_context(|| format!("cannot start the demo web service on {local}"))?;
    let pages = [hub.admin_addr(), ep_settings.admin.as_ref().map(|a| a.bind)];
    let pages = match pages {
        [Some(h), Some(e)] => format!("Status pages: http://{h}/ (hub), http://{e}/ (ep)\n"),
        [Some(h), None] => format!("Status page: http://{h}/\n"),
        _ => String::new(),
    };
    eprintln!(
        "\nferry demo is up. In another terminal try:\n    curl http://{player_addr}/\n{pages}Ctrl-C stops it.\n"
    );
    let (h, e, _) = tokio::join!(
        hub.run_until(shutdown.clone(), immediate.clone()),
        crate::ep::run_until(ep_settings, shutdown.clone(), immediate.clone()),
        serve_web(web, shutdown.clone()),
    );
    h?;
    e
}

/// A tiny HTTP responder standing in for the service at home.
async fn serve_web(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (mut tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let body = "hello from home, through ferry\n";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}
