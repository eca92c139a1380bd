//! The ferry processes under test: certificates and a token made here,
//! the hub and ep settings every bench shares, and the processes started
//! (and killed on drop) by the tests' harness.

use super::ferryproc::{Ferry, HubProc};

/// A temporary folder with a CA, the hub's certificate and one per ep
/// name, and the token every ep logs in with; removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    token: ferry::secret::Secret,
    /// The loopback address the hub's control, channel and QUIC doors
    /// bind (players' ports stay on 127.0.0.1).
    pub hub_ip: &'static str,
    /// Where the ep dials those doors and where the hub sees it from,
    /// when a router between them rewrites addresses (the fairness
    /// bench's emulated home router); `None` on plain loopback.
    pub routed: Option<(&'static str, &'static str)>,
}

impl Cluster {
    pub fn new(eps: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        ferry::certgen::GenCert {
            dir: dir.path().to_path_buf(),
            eps: eps.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        }
        .run()
        .unwrap();
        let token = ferry::token::generate();
        Cluster {
            dir,
            token,
            hub_ip: "127.0.0.1",
            routed: None,
        }
    }

    /// Starts a hub on loopback that serves `services` services; `top` adds
    /// top-level keys, `tables` the services and limits.
    pub fn hub(&self, top: &str, tables: &str, services: usize) -> HubProc {
        self.hub_named("hub", top, tables, services)
    }

    /// `hub`, configured in `NAME.toml`, for benches with several hubs.
    pub fn hub_named(&self, name: &str, top: &str, tables: &str, services: usize) -> HubProc {
        let hash = ferry::token::hash(&self.token).unwrap();
        let toml = format!(
            "control = \"{ip}:0\"\nchannel = \"{ip}:0\"\n{top}ep_allowlist = [\"127.0.0.1\"{also}]\n\
             token_hash = \"{hash}\"\nplayer_wait = \"60s\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"hub.pem\"\nkey = \"hub.key\"\n{tables}",
            ip = self.hub_ip,
            also = match self.routed {
                Some((_, seen)) => format!(", \"{seen}\""),
                None => String::new(),
            }
        );
        let file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, toml).unwrap();
        HubProc::start(&file, &[], services)
    }

    /// Starts the ep certified as `name` against `hub` and returns once the
    /// hub has logged it in, so no figure includes the login.
    pub fn ep(&self, hub: &HubProc, name: &str, top: &str, tables: &str) -> Ferry {
        let doors = format!(
            "hub = \"{}\"\nchannel = \"{}\"\nserver_name = \"localhost\"\n",
            self.dialed(hub.control),
            self.dialed(hub.channel)
        );
        self.spawn_ep(&[hub], name, &format!("{doors}{top}"), "", tables)
    }

    /// The address the ep dials for the hub's door at `a`.
    pub fn dialed(&self, a: std::net::SocketAddr) -> String {
        match self.routed {
            Some((dialed, _)) => format!("{dialed}:{}", a.port()),
            None => a.to_string(),
        }
    }

    /// The ep's `transport` keys for `hub`: QUIC to its QUIC door when
    /// `quic` and it has one, else TLS over TCP.
    pub fn transport(&self, hub: &HubProc, quic: bool) -> String {
        match hub.quic {
            Some(q) if quic => format!("transport = \"quic\"\nquic = \"{}\"\n", self.dialed(q)),
            _ => "transport = \"tls\"\n".into(),
        }
    }

    /// `ep`, serving every hub in `hubs` (a `[[hubs]]` table each).
    pub fn ep_of(&self, hubs: &[&HubProc], name: &str, top: &str, tables: &str) -> Ferry {
        let listed: String = hubs
            .iter()
            .map(|h| {
                format!(
                    "[[hubs]]\nhub = \"{}\"\nchannel = \"{}\"\nserver_name = \"localhost\"\n",
                    h.control, h.channel
                )
            })
            .collect();
        self.spawn_ep(hubs, name, top, &listed, tables)
    }

    fn spawn_ep(
        &self,
        hubs: &[&HubProc],
        name: &str,
        top: &str,
        listed: &str,
        tables: &str,
    ) -> Ferry {
        let toml = format!(
            "token = \"{}\"\n{top}{listed}\
             [tls]\nca = \"ca.pem\"\ncert = \"ep-{name}.pem\"\nkey = \"ep-{name}.key\"\n{tables}",
            self.token.expose()
        );
        let file = self.dir.path().join(format!("ep-{name}.toml"));
        std::fs::write(&file, toml).unwrap();
        let ep = Ferry::spawn("ep", &file, &[]);
        for hub in hubs {
            hub.proc.wait_line("ep logged in");
        }
        ep
    }
}
