//! The `ep.toml` a join writes: the hub's doors on the line's host (a
//! `[[hubs]]` table per host when the line names several), the files in
//! `certs/`, and each offered service on loopback for a person
//! to check. The names come from the hub: each is written as a TOML key or
//! string with escapes, so a quote or a line break in one cannot end it
//! and add keys of its own (a `local` that sends players to another
//! machine at home, say).

use super::answer::Enrolled;
use crate::config::join_host_port;
use crate::enrol::Offered;
use std::path::Path;

pub(super) fn render(e: &Enrolled, config: &Path, hosts: &[String]) -> String {
    let doors = |host: &str| {
        format!(
            "hub = {}\nchannel = {}\n",
            string(&join_host_port(host, e.control)),
            string(&join_host_port(host, e.channel)),
        )
    };
    let mut toml = format!(
        "# Written by `ferry ep join` for ep {}. Run: ferry ep -c {}\n\
         token_file = \"certs/token\"\n",
        comment(&e.ep),
        comment(&config.display().to_string()),
    );
    match hosts {
        [one] => toml += &doors(one),
        several => {
            toml += "\n# Served at once, each through its own session.\n";
            for h in several {
                toml += &format!("[[hubs]]\n{}", doors(h));
            }
        }
    }
    toml += "\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/ep.pem\"\nkey = \"certs/ep.key\"\n";
    for (s, left_out) in e.services.iter().zip(left_out(&e.services)) {
        let block = format!(
            "[services.{}]                 # {} on the hub\nlocal = {}   # where it listens at home: change if it differs\n",
            key(&s.name),
            s.kind,
            string(&local(s)),
        );
        toml += &match left_out {
            None => format!("\n{block}"),
            Some(why) => format!(
                "\n# Left out by `ferry ep join`: the hub named {why}. Uncomment it if\n\
                 # that is what you serve to players.\n{}",
                block
                    .lines()
                    .map(|l| format!("# {l}\n"))
                    .collect::<String>()
            ),
        };
    }
    if e.services.is_empty() {
        toml += "\n# The invite granted no service: once hub.toml grants one ([eps.NAME] services),\n\
             # add [services.NAME] with local = \"host:port\" here.\n";
    }
    toml
}

/// Where `s` is written to listen at home: loopback, on the ports the hub
/// serves it on.
fn local(s: &Offered) -> String {
    // In u32: a range the hub claims runs past 65535 is written as
    // claimed, for the config check to name, not a panic here.
    let first = u32::from(s.first_port);
    let last = first + u32::from(s.ports.saturating_sub(1));
    match s.ports > 1 {
        true => format!("127.0.0.1:{first}-{last}"),
        false => format!("127.0.0.1:{first}"),
    }
}

/// Ports under this are the host's own services (ssh's 22, a printer's
/// 631, file sharing's 445), not a game's.
const SYSTEM_PORTS: u32 = 1024;
/// Wider ranges reach whatever else listens at home among them.
const WIDEST_RANGE: u16 = 100;
/// Ports written to serve across all the services of one join: many
/// ranges of 100 would reach as far as one wide one.
const MOST_PORTS: u32 = 200;
/// Ports of programs a home machine runs that no game uses: Docker's API
/// (2375, 2376: the machine's root), MySQL, remote desktop, PostgreSQL,
/// VNC, Redis, Elasticsearch, memcached, MongoDB.
const HOME_PROGRAMS: &[u32] = &[2375, 2376, 3306, 3389, 5432, 5900, 6379, 9200, 11211, 27017];

/// Why each service is written commented out, if it is: the hub chose its
/// ports, and a compromised hub (or a grant mistyped) naming a system
/// port, a port of another program at home or many ports would put other
/// programs at home on the internet once the ep runs. A person uncomments
/// it on purpose.
fn left_out(services: &[Offered]) -> Vec<Option<String>> {
    let mut live = 0u32;
    let mut why = |s: &Offered| {
        let (first, ports) = (u32::from(s.first_port), u32::from(s.ports.max(1)));
        let at = local(s);
        if first < SYSTEM_PORTS {
            return Some(format!("{at} at home, a system port"));
        }
        if let Some(p) = HOME_PROGRAMS
            .iter()
            .find(|p| (first..first + ports).contains(p))
        {
            return Some(format!(
                "{at} at home, which takes in {p}, a port of a database, remote desktop or Docker"
            ));
        }
        if s.ports > WIDEST_RANGE || live + ports > MOST_PORTS {
            return Some(format!(
                "{at} at home, past the {MOST_PORTS} ports one join writes"
            ));
        }
        live += ports;
        None
    };
    services.iter().map(&mut why).collect()
}

/// One line per service, for the person who joined to check: the hub
/// chose each name and port, and a port of another program at home would
/// put that program on the internet.
pub(super) fn summary(e: &Enrolled) -> Vec<String> {
    e.services
        .iter()
        .zip(left_out(&e.services))
        .map(|(s, left_out)| {
            let name = crate::proto::shown(&s.name);
            match left_out {
                None => format!("{name} ({}): players reach {} at home", s.kind, local(s)),
                Some(why) => format!(
                    "{name} ({}): left out of ep.toml, commented out: the hub named {why}; \
                     uncomment it there if that is what you serve",
                    s.kind
                ),
            }
        })
        .collect()
}

/// A TOML basic string: `"`, `\` and control characters escaped.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Escaped, so the file reads as it is (no reordering).
            c if crate::proto::unshowable(c) && u32::from(c) > 0xFFFF => {
                out.push_str(&format!("\\U{:08X}", u32::from(c)))
            }
            c if crate::proto::unshowable(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it may be (as every valid ferry name is), quoted
/// otherwise.
fn key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { s.to_string() } else { string(s) }
}

/// Text for a comment line: a control character cannot end the line.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if crate::proto::unshowable(c) { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::{Figment, providers::Format};

    /// A service the hub puts on a system port or a wide range is written
    /// commented out, and said so: the ep does not serve it until a person
    /// uncomments it. The others are written to serve.
    #[test]
    fn system_ports_and_wide_ranges_are_left_commented_out() {
        use crate::config::ports::ServiceKind;
        let offered = |name: &str, first_port, ports| Offered {
            name: name.into(),
            kind: ServiceKind::Tcp,
            first_port,
            ports,
        };
        let e = Enrolled {
            ep: "home".into(),
            cert: String::new(),
            ca: String::new(),
            token: crate::secret::Secret::new("x"),
            control: 7000,
            channel: 7001,
            services: vec![
                offered("game", 25565, 1),
                offered("valheim", 2456, 3),
                offered("ssh", 22, 1),
                offered("web", 1000, 30),
                offered("wide", 30000, 101),
                offered("redis", 6379, 1),
                offered("near_docker", 2370, 10),
                offered("a", 40000, 100),
                offered("b", 40100, 100),
            ],
        };
        let text = render(&e, Path::new("ep.toml"), &["hub.example".into()]);
        let f = Figment::from(figment::providers::Toml::string(&text));
        let served: std::collections::BTreeMap<String, figment::value::Value> =
            f.extract_inner("services").unwrap();
        assert_eq!(
            served.keys().collect::<Vec<_>>(),
            ["a", "game", "valheim"],
            "{text}"
        );
        for gone in ["ssh", "web", "wide", "redis", "near_docker", "b"] {
            assert!(text.contains(&format!("# [services.{gone}]")), "{text}");
        }
        let said = summary(&e);
        assert!(
            said[0].contains("players reach 127.0.0.1:25565"),
            "{said:?}"
        );
        assert!(
            said[2].contains("left out") && said[2].contains(":22"),
            "{said:?}"
        );
        assert!(said[4].contains("past the 200 ports"), "{said:?}");
        assert!(said[6].contains("2375"), "{said:?}");
        assert!(said[8].contains("past the 200 ports"), "{said:?}");
    }

    /// Whatever a name holds, it reads back whole as the one key or string
    /// it was written as.
    #[test]
    fn names_read_back_exactly_whatever_they_hold() {
        for s in [
            "game",
            "a\"b",
            "x]\nlocal = \"10.0.0.9:22\"\n[services.y",
            "back\\slash\t\r\u{0}\u{7f}\u{1b}[31m",
            "é ünï",
            "admin\u{202E}nimda\u{E0041}\u{200B}",
            "",
        ] {
            let text = format!("v = {}\n[t]\n{} = 1\n", string(s), key(s));
            assert!(!text.contains('\u{202E}'), "written escaped: {text}");
            let f = Figment::from(figment::providers::Toml::string(&text));
            assert_eq!(f.extract_inner::<String>("v").unwrap(), s, "{text}");
            let t: std::collections::BTreeMap<String, u8> = f.extract_inner("t").unwrap();
            assert_eq!(t.keys().collect::<Vec<_>>(), [s], "{text}");
        }
    }

    /// Every name of up to three characters from those that end or open
    /// something in TOML (quotes, brackets, `=`, `#`, `.`, line ends,
    /// escapes, a control character, a non-ASCII letter): read back as
    /// exactly one key holding exactly itself.
    #[test]
    fn every_short_name_of_toml_s_special_characters_reads_back() {
        let alphabet = [
            '"', '\'', '\\', '[', ']', '=', '#', '.', '\n', '\r', '\t', '\u{0}', 'é', 'a', ' ',
        ];
        let mut names = vec![String::new()];
        for len in 1..=3 {
            let mut idx = vec![0usize; len];
            loop {
                names.push(idx.iter().map(|&i| alphabet[i]).collect());
                let Some(pos) = (0..len).rev().find(|&p| idx[p] + 1 < alphabet.len()) else {
                    break;
                };
                idx[pos] += 1;
                idx[pos + 1..].fill(0);
            }
        }
        assert!(names.len() > 3000);
        for s in &names {
            let text = format!("v = {}\n[t]\n{} = 1\n", string(s), key(s));
            let f = Figment::from(figment::providers::Toml::string(&text));
            assert_eq!(&f.extract_inner::<String>("v").unwrap(), s, "{text:?}");
            let t: std::collections::BTreeMap<String, u8> = f.extract_inner("t").unwrap();
            assert_eq!(t.keys().collect::<Vec<_>>(), [s], "{text:?}");
        }
    }
}
