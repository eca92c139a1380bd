//! Real UDP programs through ferry: a DNS server (dnsmasq) asked by dig
//! and loaded by dnsperf, and iperf3's UDP test both ways over a
//! `tcp+udp` service (TCP for its control, UDP for the data).

mod common;

use common::programs::{Running, find, output};
use common::udp::*;
use common::*;
use std::{net::SocketAddr, process::Command, time::Duration};

/// A hub whose service `echo` has `kind`, and an ep serving it from `local`.
async fn tunnel(certs: &Certs, kind: &str, local: SocketAddr) -> (TestHub, TestEp) {
    service_tunnel(certs, &format!("type = \"{kind}\"\n"), local).await
}

/// dnsmasq answering `ferry.test` with 10.1.2.3 on a free port; ready
/// once it answers a direct query.
async fn dnsmasq(dir: &std::path::Path) -> Option<(Running, SocketAddr)> {
    let bin = find("dnsmasq")?;
    let port = free_range(1);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let run = Running::start(
        Command::new(bin)
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg("--address=/ferry.test/10.1.2.3")
            .arg("--cache-size=0"),
    );
    let probe = player().await;
    // A DNS query for ferry.test A, asked until dnsmasq is up.
    let query = dns_query(0x1234, "ferry.test");
    ask_until(&probe, addr, &query, Duration::from_secs(10)).await;
    Some((run, addr))
}

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_dnsperf_reach_dnsmasq_through_ferry() {
    let (Some(dig), Some(dnsperf)) = (find("dig"), find("dnsperf")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some((_dns, home)) = dnsmasq(dir.path()).await else {
        return;
    };
    let certs = Certs::new();
    let (hub, _ep) = tunnel(&certs, "udp", home).await;
    let public = hub.service("echo");
    let mut cmd = Command::new(&dig);
    cmd.args(["@127.0.0.1", "-p", &public.port().to_string()])
        .args(["ferry.test", "A", "+short", "+tries=1", "+time=5"]);
    assert_eq!(output(cmd).await.trim(), "10.1.2.3");

    let queries = dir.path().join("queries");
    std::fs::write(&queries, "ferry.test A\nwww.ferry.test A\nx.ferry.test A\n").unwrap();
    let mut cmd = Command::new(&dnsperf);
    cmd.args(["-s", "127.0.0.1", "-p", &public.port().to_string()])
        .arg("-d")
        .arg(&queries)
        .args(["-c", "8", "-l", "3", "-Q", "2000", "-t", "5"]);
    let report = output(cmd).await;
    let field = |name: &str| -> u64 {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in:\n{report}"));
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line:?}"))
    };
    let (sent, completed, lost) = (
        field("Queries sent:"),
        field("Queries completed:"),
        field("Queries lost:"),
    );
    let qps = report
        .lines()
        .find(|l| l.contains("Queries per second"))
        .unwrap_or_default()
        .trim()
        .to_string();
    println!("figure: dnsperf through ferry: {completed}/{sent} completed, {lost} lost; {qps}");
    assert!(sent > 1000, "{report}");
    assert_eq!(lost, 0, "{report}");
    // Eight dnsperf sockets: eight flows, each a peer of its own at home.
    assert!(hub.handle.udp_flows("echo").unwrap() >= 8);
}

on_every_udp_door!(dig_gets_a_thousand_answers_in_a_row_from_one_address);

/// dig asking one query after another, each from a fresh source port: a
/// flow per query, answered once and never spoken to again.
async fn dig_gets_a_thousand_answers_in_a_row_from_one_address(door: Door) {
    let Some(dig) = find("dig") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some((_dns, home)) = dnsmasq(dir.path()).await else {
        return;
    };
    let certs = Certs::new();
    // The built-in per-address cap, not the test suite's lifted one.
    let keys = "type = \"udp\"\nmax_udp_flows_per_ip = 64\n";
    let (hub, _ep) = door_tunnel(&certs, door, keys, home).await;
    let public = hub.service("echo");
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "ferry.test A\n".repeat(1_000)).unwrap();
    let mut cmd = Command::new(&dig);
    cmd.args(["@127.0.0.1", "-p", &public.port().to_string()])
        .args(["+short", "+tries=1", "+time=5", "-f"])
        .arg(&batch);
    let out = output(cmd).await;
    let answered = out.lines().filter(|l| l.trim() == "10.1.2.3").count();
    println!("figure ({door:?}): dig, 1,000 queries one after another: {answered} answered");
    assert_eq!(
        answered,
        1_000,
        "{}",
        out.lines().find(|l| l.trim() != "10.1.2.3").unwrap_or("")
    );
}

/// iperf3 at home (TCP control and UDP data on one port), its JSON report
/// for a client run through the hub's `tcp+udp` service.
async fn iperf3_udp(client_args: &[&str]) -> Option<serde_json::Value> {
    let bin = find("iperf3")?;
    let port = free_range(1);
    let home: SocketAddr = ([127, 0, 0, 1], port).into();
    let _server = Running::start(
        Command::new(&bin)
            .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            // The readiness probe below is a client that says nothing.
            .stderr(std::process::Stdio::null()),
    );
    // Ready once its TCP port accepts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(home).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "iperf3 did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let certs = Certs::new();
    let (hub, _ep) = tunnel(&certs, "tcp+udp", home).await;
    let public = hub.service("echo");
    let mut cmd = Command::new(&bin);
    cmd.args(["-c", "127.0.0.1", "-p", &public.port().to_string()])
        .args(["-u", "-l", "1200", "-t", "3", "--json"])
        .args(client_args);
    Some(serde_json::from_str(&output(cmd).await).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iperf3_udp_both_ways_over_a_tcp_and_udp_service() {
    for (way, args) in [("up", vec!["-b", "50M"]), ("down", vec!["-b", "50M", "-R"])] {
        let Some(report) = iperf3_udp(&args).await else {
            return;
        };
        let sum = &report["end"]["sum"];
        let lost = sum["lost_percent"].as_f64().unwrap();
        let packets = sum["packets"].as_u64().unwrap();
        let jitter = sum["jitter_ms"].as_f64().unwrap();
        println!(
            "figure: iperf3 -u 50 Mbit/s {way} through ferry: {packets} datagrams, {lost:.3} % lost, jitter {jitter:.3} ms"
        );
        assert!(packets > 10_000, "{sum}");
        // Loopback loses nothing; allow a debug build's scheduling hiccup.
        assert!(lost < 1.0, "{way}: {lost} % lost");
    }
}
