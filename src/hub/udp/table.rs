//! The flows of one UDP service, filed by player address and network, and
//! who gives way when a newcomer finds its address, its network or the
//! service full.
//!
//! UDP sources can be forged, and nothing here can tell a forged datagram
//! from a real one: only what a forger must spend to hold a place. So a
//! newcomer replaces, within the fullest scope it belongs to:
//!
//! 1. the oldest flow that is not a conversation (nobody has spoken after
//!    an answer): one-shot queries, server-list pings, blind forgeries.
//!    A forger must send a new datagram for every place it keeps this way,
//!    and keeps it only until newer ones arrive.
//! 2. else the conversation with the least recent two-way traffic, once
//!    that is older than a second. Faking a conversation blind is cheap
//!    once; keeping it ahead of real players means sending to every place,
//!    again, every second, and having each answered.
//!
//! Conversations with recent two-way traffic are never replaced: they end
//! only by going quiet.

use super::Flow;
use crate::sources::{network_key, source_key};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
};

/// Where a flow is: the port's offset in the service's range, the player
/// (canonical: an IPv4 player on a dual-stack socket is its IPv4 address).
pub(crate) type FlowKey = (u16, SocketAddr);

/// The flows of one address (an IPv6 /64) or one network (/24, /48).
#[derive(Default)]
struct Group {
    /// Every member, oldest first (ids grow).
    members: BTreeMap<u64, FlowKey>,
    /// The members that are not conversations.
    fresh: BTreeSet<u64>,
}

impl Group {
    fn len(&self) -> usize {
        self.members.len()
    }
}

/// The scope a newcomer found full, innermost first: a place freed in an
/// inner scope is freed in every scope around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Address,
    Network,
    Service,
}

#[derive(Default)]
pub(super) struct Table {
    flows: HashMap<FlowKey, Arc<Flow>>,
    by_ip: HashMap<IpAddr, Group>,
    by_net: HashMap<IpAddr, Group>,
    /// Every flow that is not a conversation, oldest first.
    fresh: BTreeMap<u64, FlowKey>,
    /// Flows still waiting for a channel.
    pub waiting: usize,
    pub next_id: u64,
    /// No conversation's two-way traffic is older than this (ms): while
    /// that is recent, a full service needs no scan to know that nobody
    /// gives way.
    calm_since: u64,
}

impl Table {
    pub fn get(&self, k: &FlowKey) -> Option<&Arc<Flow>> {
        self.flows.get(k)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn insert(&mut self, k: FlowKey, flow: Arc<Flow>) {
        let id = flow.id;
        for g in [
            self.by_ip.entry(source_key(k.1.ip())).or_default(),
            self.by_net.entry(network_key(k.1.ip())).or_default(),
        ] {
            g.members.insert(id, k);
            g.fresh.insert(id);
        }
        self.fresh.insert(id, k);
        self.waiting += 1;
        self.flows.insert(k, flow);
    }

    /// Takes `flow` out if it is still the one filed under `k`; whether it
    /// was.
    pub fn remove(&mut self, k: FlowKey, flow: &Flow) -> bool {
        if self.flows.get(&k).is_none_or(|f| f.id != flow.id) {
            return false;
        }
        self.flows.remove(&k);
        let id = flow.id;
        for (map, key) in [
            (&mut self.by_ip, source_key(k.1.ip())),
            (&mut self.by_net, network_key(k.1.ip())),
        ] {
            if let Some(g) = map.get_mut(&key) {
                g.members.remove(&id);
                g.fresh.remove(&id);
                if g.members.is_empty() {
                    map.remove(&key);
                }
            }
        }
        self.fresh.remove(&id);
        if !flow.started.load(Ordering::Relaxed) {
            self.waiting -= 1;
        }
        true
    }

    /// The player spoke after an answer: `flow` is a conversation now.
    pub fn became_conversation(&mut self, k: FlowKey, flow: &Flow) {
        if flow.conversation.swap(true, Ordering::Relaxed) {
            return;
        }
        let id = flow.id;
        self.fresh.remove(&id);
        for g in [
            self.by_ip.get_mut(&source_key(k.1.ip())),
            self.by_net.get_mut(&network_key(k.1.ip())),
        ]
        .into_iter()
        .flatten()
        {
            g.fresh.remove(&id);
        }
        self.calm_since = self.calm_since.min(flow.two_way());
    }

    /// Flows from `ip`'s address and network now.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let n = |m: &HashMap<IpAddr, Group>, k| m.get(&k).map_or(0, Group::len);
        (
            n(&self.by_ip, source_key(ip)),
            n(&self.by_net, network_key(ip)),
        )
    }

    /// Who gives way for a newcomer from `ip` in `scope`: the oldest flow
    /// that is not a conversation, else the conversation whose two-way
    /// traffic is the least recent if that is at or before `stale` (ms).
    pub fn victim(&mut self, scope: Scope, ip: IpAddr, stale: u64) -> Option<(FlowKey, Arc<Flow>)> {
        let group = match scope {
            Scope::Address => self.by_ip.get(&source_key(ip)),
            Scope::Network => self.by_net.get(&network_key(ip)),
            Scope::Service => None,
        };
        let oldest_fresh = match (scope, group) {
            (Scope::Service, _) => self.fresh.values().next().copied(),
            (_, Some(g)) => g.fresh.first().and_then(|id| g.members.get(id).copied()),
            (_, None) => None,
        };
        if let Some(k) = oldest_fresh {
            return self.flows.get(&k).map(|f| (k, f.clone()));
        }
        match (scope, group) {
            (Scope::Service, _) => {
                if self.calm_since > stale {
                    return None;
                }
                let (found, least) = least_recent(self.flows.iter().map(|(k, f)| (*k, f)));
                self.calm_since = least;
                found.filter(|(_, f)| f.two_way() <= stale)
            }
            (_, Some(g)) => {
                let members = g
                    .members
                    .values()
                    .filter_map(|k| Some((*k, self.flows.get(k)?)));
                least_recent(members)
                    .0
                    .filter(|(_, f)| f.two_way() <= stale)
            }
            (_, None) => None,
        }
    }

    /// The oldest flow still waiting for a channel (none of them is a
    /// conversation: nothing has answered them yet).
    pub fn oldest_waiting(&self) -> Option<(FlowKey, Arc<Flow>)> {
        self.fresh.values().find_map(|k| {
            let f = self.flows.get(k)?;
            (!f.started.load(Ordering::Relaxed)).then(|| (*k, f.clone()))
        })
    }
}

/// The flow with the least recent two-way traffic among `flows`, and that
/// time (`u64::MAX` if there are none).
fn least_recent<'a>(
    flows: impl Iterator<Item = (FlowKey, &'a Arc<Flow>)>,
) -> (Option<(FlowKey, Arc<Flow>)>, u64) {
    let mut best: Option<(FlowKey, &Arc<Flow>)> = None;
    let mut least = u64::MAX;
    for (k, f) in flows {
        let t = f.two_way();
        if t < least {
            least = t;
            best = Some((k, f));
        }
    }
    (best.map(|(k, f)| (k, f.clone())), least)
}
