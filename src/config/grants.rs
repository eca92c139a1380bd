//! Which ep may serve which service. A hub serving several people's eps
//! (a friend's machine enrolled as `cabin`) must not let one take
//! another's players: `[eps.NAME] services = [..]` in hub.toml, or the
//! services an invite granted, bind services to eps.
//!
//! An ep with a list serves only what it lists. An ep without one (the
//! single-ep setup every earlier hub.toml describes) serves any service
//! no list names: naming a service in one ep's list takes it out of every
//! unlisted ep's reach.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    by_ep: BTreeMap<String, BTreeSet<String>>,
}

impl Grants {
    /// `ep` serves exactly `services` (replacing what it had).
    pub fn set(&mut self, ep: &str, services: impl IntoIterator<Item = String>) {
        self.by_ep
            .insert(ep.to_string(), services.into_iter().collect());
    }

    /// Whether `ep` has a list of its own.
    pub fn listed(&self, ep: &str) -> bool {
        self.by_ep.contains_key(ep)
    }

    /// Whether `ep` may serve `service`.
    pub fn may_serve(&self, ep: &str, service: &str) -> bool {
        match self.by_ep.get(ep) {
            Some(list) => list.contains(service),
            None => !self.by_ep.values().any(|l| l.contains(service)),
        }
    }

    /// Why `ep` may not serve `service`, for the log and the ep.
    pub fn why_not(&self, ep: &str, service: &str) -> String {
        match self.by_ep.get(ep) {
            Some(list) if list.is_empty() => {
                format!("ep {ep:?} is granted no service on this hub")
            }
            Some(list) => format!(
                "service {service:?} is not granted to ep {ep:?} (it may serve: {})",
                list.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            // Told to the ep: who else serves what is not its business.
            None => format!("service {service:?} is granted to another ep"),
        }
    }

    /// Services some list names (out of reach of eps without a list).
    pub fn claimed(&self, service: &str) -> bool {
        self.by_ep.values().any(|l| l.contains(service))
    }

    /// Each listed ep and its services, for `check` and the reload plan.
    pub fn lines(&self) -> Vec<String> {
        self.by_ep
            .iter()
            .map(|(ep, l)| {
                let list: Vec<&str> = l.iter().map(String::as_str).collect();
                format!(
                    "{ep}: {}",
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                )
            })
            .collect()
    }

    /// Services some list names that the hub does not serve.
    pub fn unknown<'a>(&'a self, exists: impl Fn(&str) -> bool + 'a) -> Vec<(String, String)> {
        self.by_ep
            .iter()
            .flat_map(|(ep, l)| l.iter().map(move |s| (ep.clone(), s.clone())))
            .filter(|(_, s)| !exists(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_eps_serve_their_list_and_unlisted_eps_the_rest() {
        let mut g = Grants::default();
        assert!(g.may_serve("home", "minecraft"), "no lists: as before");
        g.set("cabin", ["valheim".to_string()]);
        assert!(g.may_serve("cabin", "valheim"));
        assert!(!g.may_serve("cabin", "minecraft"));
        assert!(g.may_serve("home", "minecraft"));
        assert!(!g.may_serve("home", "valheim"), "granted to cabin only");
        g.set("home", ["valheim".to_string(), "minecraft".to_string()]);
        assert!(g.may_serve("home", "valheim") && g.may_serve("cabin", "valheim"));
        assert!(g.why_not("cabin", "minecraft").contains("valheim"));
    }
}
