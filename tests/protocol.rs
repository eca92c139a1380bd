//! The wire protocol grows without breaking: a newer ep with a this-build
//! hub, a this-build ep with a newer hub, and an ep older than negotiation.
//! And per-ep credentials.

mod common;

use common::*;
use ferry::proto::{self, EpMsg, FrameReader, HubMsg};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

async fn raw_frame(w: &mut (impl AsyncWrite + Unpin), json: &str) {
    w.write_all(&(json.len() as u32).to_be_bytes())
        .await
        .unwrap();
    w.write_all(json.as_bytes()).await.unwrap();
    w.flush().await.unwrap();
}

async fn read_json(r: &mut (impl AsyncRead + Unpin)) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(10), proto::read_msg(r))
        .await
        .expect("no frame")
        .expect("a frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_ep_with_unknown_fields_features_and_messages_is_served() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut tls = raw_control(&certs, &hub).await;
    let hello = format!(
        r#"{{"type":"hello","version":9,"token":"{TOKEN}","services":["echo"],"features":["channel_failed","teleport"],"favourite_colour":"blue"}}"#
    );
    raw_frame(&mut tls, &hello).await;
    let welcome = read_json(&mut tls).await;
    println!("figure: the hub welcomed a version-9 ep with {welcome}");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        welcome["version"], 1,
        "the hub talks down to its own version"
    );
    assert!(
        welcome["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "channel_failed")
    );
    // A message type this hub does not know, then a heartbeat: the session
    // goes on (the hub keeps asking for channels).
    raw_frame(&mut tls, r#"{"type":"telemetry","cpu":0.5}"#).await;
    raw_frame(&mut tls, r#"{"type":"heartbeat","seq":1}"#).await;
    let (rd, _wr) = tokio::io::split(tls);
    let mut rd = FrameReader::new(rd);
    let mut opens = 0;
    while opens < 2 {
        match tokio::time::timeout(Duration::from_secs(10), rd.read::<HubMsg>()).await {
            Ok(Ok(HubMsg::Open { .. })) => opens += 1,
            Ok(Ok(_)) => {}
            other => panic!("the session ended: {other:?}"),
        }
    }
    assert_eq!(*hub.handle.sessions().borrow(), 1);
}

/// The Welcome of the ep before negotiation, which refused unknown fields.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
enum Wave1HubMsg {
    Welcome {
        heartbeat_ms: u64,
        heartbeat_timeout_ms: u64,
        idle_timeout_ms: u64,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_older_than_negotiation_gets_a_welcome_it_can_read() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut tls = raw_control(&certs, &hub).await;
    let hello = format!(r#"{{"type":"hello","version":1,"token":"{TOKEN}","services":["echo"]}}"#);
    raw_frame(&mut tls, &hello).await;
    let welcome: Result<Wave1HubMsg, _> =
        tokio::time::timeout(Duration::from_secs(10), proto::read_msg(&mut tls))
            .await
            .unwrap();
    assert!(
        welcome.is_ok(),
        "an old ep could not read: {:?}",
        welcome.err()
    );
}

/// A hub from the future: TLS like ferry's, frames written by hand.
use common::fake_hub::FakeHub as FutureHub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_ep_follows_a_future_hub_through_unknown_fields_and_messages() {
    let certs = Certs::new();
    let fake = FutureHub::start(&certs).await;
    let (control, channel) = (
        fake.control.local_addr().unwrap(),
        fake.channel.local_addr().unwrap(),
    );
    let _ep = TestEp::start(ep_settings_for(
        &certs,
        control,
        channel,
        &EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    ));
    let (tcp, _) = fake.control.accept().await.unwrap();
    let mut tls = fake.acceptor.accept(tcp).await.unwrap();
    let hello: EpMsg = proto::read_msg(&mut tls).await.unwrap();
    let EpMsg::Hello { features, .. } = hello else {
        panic!("not a hello: {hello:?}")
    };
    assert!(
        features.iter().any(|f| f == "channel_failed"),
        "{features:?}"
    );
    raw_frame(
        &mut tls,
        r#"{"type":"welcome","heartbeat_ms":200,"heartbeat_timeout_ms":5000,"idle_timeout_ms":60000,"version":4,"features":["warp_drive"],"motd":"hi"}"#,
    )
    .await;
    raw_frame(&mut tls, r#"{"type":"quic_offer","port":7002}"#).await;
    raw_frame(
        &mut tls,
        r#"{"type":"open","service":"echo","ticket":"t-123","priority":"high"}"#,
    )
    .await;
    // The ep skipped what it does not know and opened the channel.
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), fake.channel.accept())
        .await
        .expect("the ep never opened the channel")
        .unwrap();
    let mut ch = fake.acceptor.accept(tcp).await.unwrap();
    let first: EpMsg = proto::read_msg(&mut ch).await.unwrap();
    assert_eq!(
        first,
        EpMsg::Channel {
            service: "echo".into(),
            ticket: "t-123".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ep_can_have_its_own_token() {
    let certs = Certs::new();
    let other_hash = ferry::token::hash(&ferry::secret::Secret::new("other-token")).unwrap();
    let opts = HubOpts {
        services: vec!["echo".into(), "beta".into()],
        extra: format!("[eps.other]\ntoken_hash = {other_hash:?}\n"),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let echo = echo_server().await;
    // `home` has no entry: the top-level token_hash.
    let home = EpOpts::new(&certs, vec![("echo".into(), echo)]);
    let r = ferry::ep::login(&ep_settings(&certs, &hub, &home)).await;
    assert!(r.is_ok(), "{:?}", r.err());
    // `other` has its own; the shared token is not it.
    let mut other = EpOpts::new(&certs, vec![("beta".into(), echo)]);
    other.cert = "other".into();
    let err = login_error(&ep_settings(&certs, &hub, &other)).await;
    assert!(err.to_string().contains("wrong token"), "{err}");
    // A fresh hub (the failure penalised `other` for a while).
    let hub = TestHub::start(&certs, &opts).await;
    other.token = "other-token".into();
    assert!(
        ferry::ep::login(&ep_settings(&certs, &hub, &other))
            .await
            .is_ok()
    );
    // With per-ep entries only, an ep without one is refused by name.
    let file = write_hub_toml(&certs, &opts, None);
    let text = std::fs::read_to_string(&file).unwrap();
    // Drop the top-level hash (the first one); keep the [eps.other] one.
    let top = text.find("token_hash = ").unwrap();
    let end = top + text[top..].find('\n').unwrap() + 1;
    let text = format!("{}{}", &text[..top], &text[end..]);
    std::fs::write(&file, text).unwrap();
    let settings = ferry::config::hub::HubConfig::load(&file, Default::default())
        .unwrap()
        .check(&file)
        .unwrap();
    let hub = TestHub::from_settings(settings, &opts).await;
    let err = login_error(&ep_settings(&certs, &hub, &home)).await;
    println!("figure: an ep with no credential → {err}");
    assert!(
        err.to_string().contains("no token_hash for ep \"home\""),
        "{err}"
    );
    assert!(
        ferry::ep::login(&ep_settings(&certs, &hub, &other))
            .await
            .is_ok()
    );
}

/// An ep configuration saved while the ep's login is in flight (after its
/// hello, before the hub's welcome) is announced on the session at once,
/// not lost until the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_the_login_is_announced_once_the_session_starts() {
    let certs = Certs::new();
    let fake = FutureHub::start(&certs).await;
    let (control, channel) = (
        fake.control.local_addr().unwrap(),
        fake.channel.local_addr().unwrap(),
    );
    let home = echo_server().await;
    let eo = |services: &[&str]| {
        let list = services.iter().map(|s| (s.to_string(), home)).collect();
        EpOpts::new(&certs, list)
    };
    let file = write_ep_toml(&certs, control, channel, &eo(&["a"]));
    let settings = load_ep_file(&file);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    let (tcp, _) = fake.control.accept().await.unwrap();
    let mut tls = fake.acceptor.accept(tcp).await.unwrap();
    let EpMsg::Hello { services, .. } = proto::read_msg(&mut tls).await.unwrap() else {
        panic!("no hello")
    };
    assert_eq!(services, vec!["a".to_string()]);
    // Saved while the hub has not answered yet.
    let mut reloads = handle.reloads();
    let fresh = write_ep_toml(&certs, control, channel, &eo(&["a", "b"]));
    std::fs::rename(fresh, &file).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the ep reloaded")
        .unwrap();
    let welcome = common::fake_hub::welcome();
    proto::write_msg(&mut tls, &welcome).await.unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match proto::read_msg::<_, EpMsg>(&mut tls).await.unwrap() {
                EpMsg::Services { services, .. } => return services,
                _ => continue,
            }
        }
    })
    .await
    .expect("the change saved during the login was announced");
    assert_eq!(announced, vec!["a".to_string(), "b".to_string()]);
}
