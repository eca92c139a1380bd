//! What a compromised ep's messages write to the real hub's log: an ep
//! with a valid certificate and token can send them as fast as it likes,
//! so a line per message would let it fill the hub's disk, or have
//! journald throttle the hub's real warnings.

mod common;

use common::{procs::*, *};
use ferry::proto::{self, EpMsg, FrameReader, HubMsg};
use std::time::{Duration, Instant};

/// An ep that says it failed every channel the hub asks for, each with a
/// long reason: the hub's log says so a few times a second, not once a
/// ticket (the hub asks again a quarter of a second later, a pool's worth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_failing_every_channel_is_logged_in_a_few_lines() {
    let certs = Certs::new();
    let mut hub = HubProc::start(&hub_toml(&certs, &["echo"], ""), &[], 1);
    let eo = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    let settings = ep_settings_for(&certs, hub.control, hub.channel, &eo);
    let mut tls = ferry::ep::connect_for_tests(&settings, &hub.control.to_string()).await;
    let hello = hello(TOKEN, proto::PROTOCOL_VERSION);
    proto::write_msg(&mut tls, &hello).await.unwrap();
    let (rd, mut wr) = tokio::io::split(tls);
    let mut rd = FrameReader::new(rd);
    let began = Instant::now();
    let mut failed = 0;
    while failed < 60 {
        let msg = tokio::time::timeout(Duration::from_secs(10), rd.read::<HubMsg>())
            .await
            .expect("the hub went quiet")
            .expect("the session ended");
        if let HubMsg::Open { service, ticket } = msg {
            let failure = EpMsg::ChannelFailed {
                service,
                ticket,
                reason: "no route to the local service ".repeat(30),
            };
            proto::write_msg(&mut wr, &failure).await.unwrap();
            failed += 1;
        }
        proto::write_msg(&mut wr, &EpMsg::Heartbeat).await.unwrap();
    }
    let took = began.elapsed();
    let lines = hub.proc.lines_to_exit();
    let said = lines
        .iter()
        .filter(|l| l.contains("could not open a channel"))
        .count();
    println!("figure: 60 channels failed in {took:?}: {said} lines on the hub");
    assert!(said > 0, "not said at all");
    assert!(
        said as u64 <= 3 * (took.as_secs() + 2),
        "{said} lines in {took:?}"
    );
}
