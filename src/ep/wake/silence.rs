//! A UDP dial met by silence. A host switched off says nothing (no ICMP
//! "port unreachable" comes back), but so does a Bedrock server that
//! ignores a join it finds malformed, which a hub can send at will, and
//! any UDP game that is not Bedrock, which ignores RakNet altogether. So
//! before every hub is told the service is away, or its wake command runs
//! beside it, the ep looks for itself: a list ping of its own, and, for a
//! service not heard speaking RakNet, a try of its host.

use super::{HomeState, Homes, Local, locked};
use std::sync::{Arc, atomic::Ordering::Relaxed};
use tokio::time::Instant;

impl Homes {
    /// Looks into a dial met by silence where `at` (where a flow heard
    /// the service, or where it was dialled; or a TCP port, for a UDP
    /// dial refused where ep.toml names no kind) and tells every hub `state`
    /// if it is away: not if it answered since the dial began, nor over
    /// a state set meanwhile (a wake), nor for a service forgotten
    /// meanwhile. One look at a time for each service: a hub sending
    /// joins in a loop costs one socket.
    pub(super) fn look(self: &Arc<Self>, at: Local, state: HomeState, dialled: Instant) {
        if !locked(&self.looking).insert(at.service.clone()) {
            return;
        }
        let (me, forgets) = (self.clone(), self.forgets.load(Relaxed));
        let was = self.state_of(&at.service);
        tokio::spawn(async move {
            // A TCP port (`Homes::untyped`): there if it takes a connection.
            let there = match at.udp {
                true => me.udp_there(&at).await,
                false => at.answers().await,
            };
            let service = &at.service;
            locked(&me.looking).remove(service);
            let answered = locked(&me.up_at).get(service).is_some_and(|t| *t > dialled);
            let same = me.state_of(service) == was && me.forgets.load(Relaxed) == forgets;
            if !there && !answered && same {
                me.set(service, state);
            }
        });
    }

    /// Whether the UDP service at `at` is there: it answers a list ping
    /// of the ep's own (a Bedrock server); or it was heard, but never
    /// speaking RakNet (a game that is not Bedrock ignores both the join
    /// and the ping); or nothing was heard of it yet and its host answers
    /// a try of the port (a host switched off answers nothing at all; a
    /// host's firewall may drop the try of a port it serves over UDP only,
    /// so that try decides only where nothing else can).
    pub(super) async fn udp_there(&self, at: &Local) -> bool {
        if at.pong_once().await.unwrap_or(false) {
            self.spoke_raknet(&at.service);
            return true;
        }
        if locked(&self.raknet).contains(&at.service) {
            return false;
        }
        let heard = locked(&self.found_at).contains_key(&at.service);
        heard || at.host_answers().await
    }

    /// A flow heard `service` speak RakNet (see `raknet`).
    pub fn spoke_raknet(&self, service: &str) {
        let mut known = locked(&self.raknet);
        if !known.contains(service) {
            known.insert(service.to_string());
        }
    }
}
