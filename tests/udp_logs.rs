//! What a flood of forged UDP sources writes to the logs of the real hub
//! and ep processes: a source costs nothing to forge, so a line per
//! source would let a stranger fill the disk or have journald throttle
//! the real warnings. A player who holds a conversation is still logged.

mod common;

use common::{procs::*, udp::*, *};
use std::time::Duration;

on_every_transport!(a_flood_of_forged_sources_is_logged_in_a_few_lines);

/// How many of `lines` are about UDP flows.
fn flow_lines(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains("udp flow")).count()
}

async fn a_flood_of_forged_sources_is_logged_in_a_few_lines(t: Transport) {
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let o = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        extra: t.hub_extra().into(),
        service_extra: "type = \"udp\"\n".into(),
        ..Default::default()
    };
    let mut hub = HubProc::start(&write_hub_toml(&certs, &o, None), &[], 1);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.extra = t.ep_extra(hub.quic);
    let mut ep = Ferry::spawn(
        "ep",
        &write_ep_toml(&certs, hub.control, hub.channel, &eo),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    let to = hub.services["echo"];

    // 320 forged sources over five networks, one datagram each from 256
    // of them and two from the rest (a forger can send twice without
    // hearing the answer); home answers each, and no one hears it.
    let mut forged = Vec::new();
    for net in 0..5 {
        for _ in 0..64 {
            let s = player_from(&format!("127.30.{net}.1")).await;
            for _ in 0..1 + usize::from(net == 4) {
                s.send_to(b"forged", to).await.unwrap();
            }
            forged.push(s);
        }
    }
    // A real player holds a conversation meanwhile.
    let player = player_from("127.0.5.1").await;
    for i in 0..3 {
        let msg = format!("move {i}");
        assert_eq!(
            ask_until(&player, to, msg.as_bytes(), Duration::from_secs(30)).await,
            msg.as_bytes()
        );
    }
    // Every flow ends with the hub and the ep: a line each, before.
    let hub_lines = hub.proc.lines_to_exit();
    let ep_lines = ep.lines_to_exit();
    let (on_hub, on_ep) = (flow_lines(&hub_lines), flow_lines(&ep_lines));
    println!(
        "figure ({t:?}): 320 forged sources and a player: {on_hub} flow lines on the hub, {on_ep} on the ep"
    );
    // A few a second per service and kind of line: the whole run takes
    // seconds, not the hundreds of lines a line each is.
    assert!(on_hub <= 40, "{on_hub} flow lines on the hub");
    assert!(on_ep <= 40, "{on_ep} flow lines on the ep");
    drop(forged);
}
