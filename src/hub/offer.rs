//! What an ep offers to serve, matched against what the hub serves now: at
//! login, when the ep re-announces after its configuration changed, and
//! when the hub adds a service an ep already offers.

use super::{Shared, service::Service};
use crate::{config::ports::ServiceKind, proto::Shape};
use std::{collections::BTreeMap, sync::Arc};

/// The services an ep named, with its own idea of their shapes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Offer {
    pub names: Vec<String>,
    pub shapes: BTreeMap<String, Shape>,
    /// It knows UDP services and port ranges.
    pub udp: bool,
}

/// An offer matched against the hub's services.
#[derive(Default)]
pub(crate) struct Matched {
    pub services: Vec<Arc<Service>>,
    /// The hub's shape of each matched service.
    pub shapes: BTreeMap<String, Shape>,
    /// Named but not served here, and why.
    pub refused: BTreeMap<String, String>,
    /// Services whose shape the ep contradicts, and how.
    pub mismatch: BTreeMap<String, String>,
    /// Services this ep is not granted (`grants`), and why.
    pub unauthorised: BTreeMap<String, String>,
}

impl Offer {
    /// What `ep` may serve of its offer, and what not and why.
    pub fn resolve(&self, shared: &Shared, ep: &str) -> Matched {
        let mut m = Matched::default();
        let settings = shared.settings();
        for name in &self.names {
            if m.shapes.contains_key(name) {
                continue;
            }
            let (Some(svc), Some(s)) = (shared.service(name), settings.service(name)) else {
                m.refused
                    .insert(name.clone(), format!("the hub has no [services.{name:?}]"));
                continue;
            };
            if !settings.grants.may_serve(ep, name) {
                m.unauthorised
                    .insert(name.clone(), settings.grants.why_not(ep, name));
                continue;
            }
            if let Err(why) = self.fits(name, s.kind, s.bind.count) {
                m.mismatch.insert(name.clone(), why);
                continue;
            }
            m.shapes.insert(
                name.clone(),
                Shape {
                    kind: Some(s.kind),
                    ports: s.bind.count,
                },
            );
            m.services.push(svc);
        }
        m
    }

    /// Whether this ep can serve `name`, which the hub binds as `kind` on
    /// `ports` ports.
    pub fn fits(&self, name: &str, kind: ServiceKind, ports: u16) -> Result<(), String> {
        check_shape(name, kind, ports, self.udp, self.shapes.get(name))
    }
}

/// Whether an ep that declared `ep` (and knows UDP, or not) can serve a
/// service the hub binds as `kind` on `ports` ports.
pub(crate) fn check_shape(
    name: &str,
    kind: ServiceKind,
    ports: u16,
    ep_udp: bool,
    ep: Option<&Shape>,
) -> Result<(), String> {
    if !ep_udp {
        if kind != ServiceKind::Tcp || ports > 1 {
            return Err(format!(
                "service {name:?} is type = \"{kind}\" on {ports} port(s); this ep's ferry predates UDP services and port ranges: upgrade the ep"
            ));
        }
        return Ok(());
    }
    let Some(ep) = ep else { return Ok(()) };
    if let Some(theirs) = ep.kind
        && theirs != kind
    {
        return Err(format!(
            "service {name:?}: the hub has type = \"{kind}\", the ep's config says \"{theirs}\""
        ));
    }
    if ep.ports != ports {
        return Err(format!(
            "service {name:?}: the hub binds {ports} port(s), the ep's local maps {}; the ranges must be the same size",
            ep.ports
        ));
    }
    Ok(())
}
