//! Writes the seeds of `proto_frames` and `datagram` with ferry's own
//! encoders (`proto::write_msg`, `datagram::encode`): the frames of a
//! login, a session, a channel's opening and a UDP flow, as the hub and
//! the ep send them. The datagrams are real ones captured on loopback (a
//! bedrock-protocol ping, a dig query) and given on the command line.
//! And `enrol_csr`'s: certificate requests as `ferry ep join` makes them,
//! for other key types, and one asking for a CA's powers.
//!
//!     cargo run --example seeds -- corpus bedrock-ping.bin dig-query.bin

use ferry::{
    config::ports::ServiceKind,
    datagram,
    enrol::{Offered, Reply, Request},
    proto::{self, CloseKind, EpMsg, HomeState, HubMsg, RefusalKind, Shape, features},
    secret::Secret,
};
use ferry_fuzz::run;
use serde::Serialize;
use std::collections::BTreeMap;

/// Appends one frame to a stream.
type Frame<'a> = &'a dyn Fn(&mut Vec<u8>);

fn frames(msgs: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        m(&mut out);
    }
    out
}

fn msg<T: Serialize>(m: T) -> impl Fn(&mut Vec<u8>) {
    move |out: &mut Vec<u8>| run(proto::write_msg(out, &m)).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let corpus = std::path::Path::new(&args[0]);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let ticket = "3f9c2a7be1d04c58a6e2f10b7d9e4c21".to_string();
    let shapes = BTreeMap::from([(
        "mc".to_string(),
        Shape {
            kind: Some(ServiceKind::TcpUdp),
            ports: 1,
        },
    )]);

    // The ep's side of a control session.
    let hello = EpMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        token: Secret::new("f67c8509b008415f947b1051a5958402"),
        services: vec!["web".into(), "mc".into()],
        features: features(),
        software: Some("0.1.0 (64dd6b6b4f76)".into()),
        shapes: shapes.clone(),
    };
    write(
        "proto_frames",
        "ep-control",
        &frames(&[
            &msg(hello),
            &msg(EpMsg::Heartbeat),
            &msg(EpMsg::Home {
                services: BTreeMap::from([
                    ("mc".to_string(), HomeState::Asleep),
                    ("web".to_string(), HomeState::Up),
                ]),
            }),
            &msg(EpMsg::ChannelFailed {
                service: "web".into(),
                ticket: ticket.clone(),
                reason: "connection refused".into(),
            }),
            &msg(EpMsg::Services {
                services: vec!["mc".into()],
                shapes: shapes.clone(),
            }),
        ]),
    );
    // An ep from before feature negotiation.
    write(
        "proto_frames",
        "ep-control-wave1",
        &frames(&[&msg(EpMsg::Hello {
            version: 1,
            token: Secret::new("t"),
            services: vec!["web".into()],
            features: vec![],
            software: None,
            shapes: BTreeMap::new(),
        })]),
    );

    // A login near the frame cap (16 KiB): an ep with many services.
    let many = EpMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        token: Secret::new("f67c8509b008415f947b1051a5958402"),
        services: (0..1330).map(|i| format!("svc-{i:05}")).collect(),
        features: features(),
        software: None,
        shapes: BTreeMap::new(),
    };
    let near = frames(&[&msg(many)]);
    assert!(near.len() > 15_000 && near.len() <= 4 + proto::MAX_FRAME);
    write("proto_frames", "ep-control-near-the-cap", &near);

    // The hub's side.
    write(
        "proto_frames",
        "hub-control",
        &frames(&[
            &msg(HubMsg::Welcome {
                heartbeat_ms: 5000,
                heartbeat_timeout_ms: 15000,
                idle_timeout_ms: 60000,
                version: Some(proto::PROTOCOL_VERSION),
                features: features(),
                services: BTreeMap::from([(
                    "mc".to_string(),
                    Shape {
                        kind: None,
                        ports: 3,
                    },
                )]),
                quic: Some(7002),
            }),
            &msg(HubMsg::Open {
                service: "web".into(),
                ticket: ticket.clone(),
            }),
            &msg(HubMsg::Heartbeat),
            &msg(HubMsg::Services {
                services: BTreeMap::new(),
                refused: BTreeMap::from([("ssh".to_string(), "not granted".to_string())]),
            }),
            &msg(HubMsg::Closing {
                reason: "a newer login with this certificate".into(),
                kind: Some(CloseKind::Replaced),
            }),
        ]),
    );
    write(
        "proto_frames",
        "hub-refused",
        &frames(&[&msg(HubMsg::Refused {
            reason: "busy; retry".into(),
            retry: true,
            kind: Some(RefusalKind::Busy),
        })]),
    );

    // A channel: the ticket up, `Start` down, then the player's bytes.
    let mut channel = frames(&[&msg(EpMsg::Channel {
        service: "mc".into(),
        ticket,
    })]);
    channel.extend_from_slice(b"\x17\x00\xf2\x05\x10play.example.orgc\xdd\x01");
    write("proto_frames", "channel-ticket", &channel);
    let mut start = frames(&[&msg(HubMsg::Start {
        player: "203.0.113.7:51234".parse().unwrap(),
        service: Some("[2001:db8::1]:25565".parse().unwrap()),
        udp: true,
        offset: 2,
        flow: Some(7),
        name: Some("mc".into()),
        no_wake: true,
        pace: None,
    })]);
    datagram::encode(&mut start, b"\x01\x00\x00\x00\x00\x00\x00\x00\x01");
    write("proto_frames", "channel-start-udp", &start);
    write(
        "proto_frames",
        "channel-start-tcp",
        &frames(&[&msg(HubMsg::Start {
            player: "198.51.100.9:40000".parse().unwrap(),
            service: None,
            udp: false,
            offset: 0,
            flow: None,
            name: None,
            no_wake: false,
            pace: Some(proto::Rates {
                max_rate: 0,
                max_rate_per_player: 1_250_000,
            }),
        })]),
    );

    // The enrol exchange inside TLS.
    write(
        "proto_frames",
        "enrol-request",
        &frames(&[&msg(Request {
            secret: Secret::new("4fd1802b6a6d24d513a65e54b0a29532"),
            csr: "-----BEGIN CERTIFICATE REQUEST-----\nMIGb\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
        })]),
    );
    write(
        "proto_frames",
        "enrol-reply",
        &frames(&[&msg(Reply::Enrolled {
            ep: "cabin".into(),
            cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            token: Secret::new("t"),
            control_port: 7000,
            channel_port: 7001,
            services: vec![Offered {
                name: "mc".into(),
                kind: ServiceKind::Udp,
                first_port: 19132,
                ports: 1,
            }],
        })]),
    );

    csr_seeds(&write);

    // A UDP flow's datagrams: captured ones, then the edge sizes.
    let mut flow = Vec::new();
    for path in &args[1..] {
        datagram::encode(&mut flow, &std::fs::read(path).unwrap());
    }
    datagram::encode(&mut flow, b"");
    datagram::encode(&mut flow, &[0x5a; 1472]);
    write("datagram", "flow", &flow);
}

/// `enrol_csr`'s seeds: a mode byte (0: DER, 1: PEM text), then the request.
fn csr_seeds(write: &dyn Fn(&str, &str, &[u8])) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let seed = |name: &str, mode: u8, bytes: &[u8]| {
        write("enrol_csr", name, &[&[mode], bytes].concat());
    };
    // As `ferry ep join` asks (`ep::join::door`).
    let joins = CertificateParams::new(Vec::<String>::new()).unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = joins.serialize_request(&key).unwrap();
    seed("join-der", 0, csr.der());
    seed("join-pem", 1, csr.pem().unwrap().as_bytes());
    for (name, alg) in [
        ("p384-der", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519-der", &rcgen::PKCS_ED25519),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        seed(name, 0, joins.serialize_request(&key).unwrap().der());
    }
    let mut greedy = CertificateParams::new(vec!["hub.example".into()]).unwrap();
    greedy.distinguished_name.push(DnType::CommonName, "hub");
    greedy
        .distinguished_name
        .push(DnType::OrganizationName, "x");
    greedy
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    greedy.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    greedy.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    seed(
        "asks-ca-der",
        0,
        greedy.serialize_request(&key).unwrap().der(),
    );
}
