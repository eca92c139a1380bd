//! One UDP flow at home: a connected UDP socket of its own, so the game
//! sees one peer per player exactly as without the tunnel, joined to the
//! channel the hub started the flow on.

use super::Ep;
use crate::{config::ep::LocalService, config::ep::UdpHeaders, datagram, net, proxy_header};
use std::{net::SocketAddr, sync::Arc};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    net::UdpSocket,
};

pub(super) struct Flow {
    pub service: String,
    pub player: SocketAddr,
    /// The hub's address the player sent to, for the PROXY header.
    pub public: SocketAddr,
    pub offset: u16,
}

#[derive(Default)]
struct Counts {
    datagrams: u64,
    bytes: u64,
}

impl Flow {
    pub async fn run(self, ep: &Arc<Ep>, local: &LocalService, tls: super::Tunnel) {
        let target = local.addr.at(self.offset);
        let (service, player) = (&self.service, self.player);
        let socket = match connect(&target).await {
            Ok(s) => s,
            Err(e) => {
                ep.state.dialled(service, Err(e.to_string()));
                return tracing::warn!(service, %player, local = target, "cannot open a UDP socket to the local service: {e}; flow closed");
            }
        };
        ep.state.dialled(service, Ok(()));
        let label = crate::metrics::ServiceLabel {
            service: service.clone(),
        };
        let players = ep.metrics.traffic.players.get_or_create(&label).clone();
        ep.metrics.traffic.players_total.get_or_create(&label).inc();
        players.inc();
        let meter = ep.metrics.traffic.meter(service);
        tracing::info!(service, %player, local = target, "udp flow started");
        let header = local.proxy_protocol.map(|_| {
            (
                proxy_header::udp_header(player, self.public),
                local.proxy_protocol_udp,
            )
        });
        let (mut up, mut down) = (Counts::default(), Counts::default());
        let (rd, wr) = tokio::io::split(tls);
        let why = tokio::select! {
            r = to_service(rd, &socket, header, &meter.up, &mut up) => match r {
                Ok(()) => "the hub ended it".to_string(),
                Err(e) => format!("channel broken: {e}"),
            },
            e = to_hub(wr, &socket, &meter.down, &mut down) => format!("channel broken: {e}"),
            _ = ep.hard_stop.cancelled() => "ep shutting down".into(),
        };
        players.dec();
        tracing::info!(
            service,
            %player,
            up_datagrams = up.datagrams,
            up_bytes = up.bytes,
            down_datagrams = down.datagrams,
            down_bytes = down.bytes,
            "udp flow ended: {why}"
        );
    }
}

/// A socket of the local service's family, connected to it: only its
/// answers come back, and each flow has its own source port.
async fn connect(target: &str) -> std::io::Result<UdpSocket> {
    let addr = tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{target} resolves to no address")))?;
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(addr).await?;
    net::tune_udp(&socket);
    Ok(socket)
}

/// Datagrams from the channel to the service, with the PROXY header on
/// the first (or every) one when asked for. Ends when the hub closes.
async fn to_service(
    mut rd: ReadHalf<super::Tunnel>,
    socket: &UdpSocket,
    header: Option<(Vec<u8>, UdpHeaders)>,
    meter: &prometheus_client::metrics::counter::Counter,
    n: &mut Counts,
) -> std::io::Result<()> {
    let mut header = header;
    let mut warned = false;
    while let Some(d) = datagram::read(&mut rd).await? {
        n.datagrams += 1;
        n.bytes += d.len() as u64;
        meter.inc_by(d.len() as u64);
        let sent = match &header {
            Some((h, every)) => {
                let mut with = Vec::with_capacity(h.len() + d.len());
                with.extend_from_slice(h);
                with.extend_from_slice(&d);
                if *every == UdpHeaders::First {
                    header = None;
                }
                socket.send(&with).await
            }
            None => socket.send(&d).await,
        };
        // Refused (nothing listening yet) or a full buffer: this datagram
        // is lost, as it would be on the network; the flow goes on.
        if let Err(e) = sent
            && !std::mem::replace(&mut warned, true)
        {
            tracing::warn!("cannot send to the local service: {e}");
        }
    }
    Ok(())
}

/// Datagrams from the service to the channel; returns the error that
/// ended it.
async fn to_hub(
    mut wr: WriteHalf<super::Tunnel>,
    socket: &UdpSocket,
    meter: &prometheus_client::metrics::counter::Counter,
    n: &mut Counts,
) -> std::io::Error {
    let mut buf = vec![0u8; datagram::RECV_BUF];
    let mut out = Vec::new();
    loop {
        let len = match socket.recv(&mut buf).await {
            Ok(len) => len,
            // An ICMP "port unreachable" for an earlier send: the service
            // is not up (yet); keep listening.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return e,
        };
        n.datagrams += 1;
        n.bytes += len as u64;
        meter.inc_by(len as u64);
        out.clear();
        datagram::encode(&mut out, &buf[..len]);
        // Whatever else arrived meanwhile goes in the same write.
        while out.len() < 256 * 1024 {
            match socket.try_recv(&mut buf) {
                Ok(len) => {
                    n.datagrams += 1;
                    n.bytes += len as u64;
                    meter.inc_by(len as u64);
                    datagram::encode(&mut out, &buf[..len]);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&out).await {
            return e;
        }
        if let Err(e) = wr.flush().await {
            return e;
        }
    }
}
