//! ferry: a self-hosted reverse tunnel. A hub on a public server accepts
//! players on plain TCP ports and carries each connection over mutual TLS to
//! an ep at home, which dials the real service.
//!
//! `main` only parses arguments; everything runs through this library so that
//! tests drive the same code with listeners bound to port 0.

pub mod admin;
pub mod bans;
pub mod certgen;
pub mod cli;
pub mod config;
pub mod dark_path;
pub mod datagram;
pub mod demo;
pub mod enrol;
pub mod ep;
pub mod fdlimit;
pub mod files;
pub mod game;
pub mod history;
pub mod hub;
pub mod log_rate;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod penalties;
pub mod places;
pub mod proto;
pub mod proxy_header;
pub mod quic;
pub mod rate;
pub mod relay;
pub mod reload;
pub mod sdnotify;
pub mod secret;
pub mod secret_file;
pub mod shutdown;
pub mod sources;
pub mod swap;
pub mod tcp_info;
pub mod tcp_pacing;
pub mod tls;
pub mod token;
pub mod uplink_guard;
