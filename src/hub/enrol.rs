//! The enrol door (`[enrol] bind`): where `ferry ep join` turns an invite
//! into an ep certificate and token (protocol in `crate::enrol`). Open to
//! every address, because a new ep's home address is not known yet; what
//! keeps strangers out is that nothing costly happens before the invite id
//! is found usable: no TLS, no hash, no signature, no Argon2. The secret is
//! then checked inside TLS, the invite burned, and only then a certificate
//! signed and a token hashed. The new credential (and the address the ep
//! enrolled from, for `ep_allowlist`) applies at once, without a reload.

use super::{Shared, refusals::Reason};
use crate::{
    enrol::{
        Offered, Reply, Request,
        invites::{AskedAgain, Enrolled, NotItsOwn, Store, key_sha256, now},
        lines::{self, MAX_HELLO},
    },
    proto,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsAcceptor;

/// Connections the door holds in all. Until its first line names a usable
/// invite a connection is waiting, and a newcomer takes the place of the
/// oldest waiting one of its source, its network or the door
/// (`places`): an ep sends its line within a round trip of its
/// connect, so strangers holding connections idle keep no one out.
pub(super) const PLACES: usize = 64;
/// The first line must come quickly, the TLS handshake and the request
/// after it too; the whole exchange within `DEADLINE`.
const FIRST_LINE: Duration = Duration::from_secs(3);
const REQUEST: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(15);

/// The CA key that signs new eps' certificates is there, and only its
/// owner may read it: the door reads it at each enrolment, so a key others
/// can read is refused at check, start and reload, not at the first
/// `ferry ep join`.
pub(super) fn check_ca_key(e: &crate::config::enrol::EnrolSettings) -> Result<(), String> {
    if std::fs::metadata(&e.ca_key).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(format!(
            "enrol.ca_key: {} does not exist (the CA key that signs new eps' certificates)",
            e.ca_key.display()
        ));
    }
    crate::secret_file::check(&e.ca_key, "CA key").map_err(|e| format!("enrol.ca_key: {e:#}"))
}

/// The CA key held to the CA certificate: a key of another CA would sign
/// certificates no hub accepts, each enrolment using up its invite. At
/// start and `check` a mismatch stops the hub; a reload only warns (the
/// door's files wait for a restart, and the rest of the reload, a token
/// rotated or an ep cut off, must not wait for the CA's key).
pub(crate) fn ca_key_matches(e: &crate::config::enrol::EnrolSettings) -> Result<(), String> {
    crate::certgen::load_ca(&e.ca, &e.ca_key)
        .map(drop)
        .map_err(|e| format!("enrol.ca_key: {e:#}"))
}

pub(super) fn on_accept(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ip = addr.ip().to_canonical();
    let Some(mut ticket) = shared.enrol_places.enter(ip) else {
        crate::net::abort_on_close(&tcp);
        let why = "every place of the door is taken by enrolments at work";
        shared.refusals.record(Reason::EnrolRefused, ip, why);
        return;
    };
    let sh = shared.clone();
    shared.tracker.spawn(async move {
        let evicted = ticket.evicted();
        let outcome = tokio::select! {
            r = tokio::time::timeout(DEADLINE, serve(&sh, tcp, addr, &mut ticket)) => r,
            // Only while waiting: a place at work is never given away.
            _ = evicted => Ok(Err("no first line yet; its place went to a newer connection".into())),
            _ = sh.shutdown.cancelled() => return,
        };
        drop(ticket);
        match outcome {
            Ok(Ok(ep)) => tracing::info!(ep, from = %addr, "ep enrolled"),
            Ok(Err(why)) => sh.refusals.record(Reason::EnrolRefused, addr.ip(), &why),
            Err(_) => {
                let why = format!("enrolment not completed within {DEADLINE:?}");
                sh.refusals.record(Reason::EnrolRefused, addr.ip(), &why);
            }
        }
    });
}

/// Reads the first line a byte at a time (what follows it is TLS, and
/// must be left unread) until `lines::hello` has its id or refuses it.
async fn read_line(tcp: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::with_capacity(MAX_HELLO);
    let mut b = [0u8; 1];
    loop {
        if let Some((id, _)) = lines::hello(&line)? {
            return Ok(id);
        }
        match tcp.read(&mut b).await {
            Ok(1) => line.push(b[0]),
            _ => return Err("closed before the first line".into()),
        }
    }
}

async fn serve(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    addr: SocketAddr,
    ticket: &mut crate::places::Ticket,
) -> Result<String, String> {
    let settings = shared.settings();
    let Some(e) = settings.enrol.clone() else {
        return Err("enrolment is off".into());
    };
    let id = tokio::time::timeout(FIRST_LINE, read_line(&mut tcp))
        .await
        .map_err(|_| format!("no first line within {FIRST_LINE:?}"))??;
    if let Err(why) = shared.enrol_seen.usable(&e.state, &id, addr.ip()) {
        let _ = tcp.write_all(format!("no {why}\n").as_bytes()).await;
        crate::net::linger_close(tcp).await;
        return Err(format!("invite {id}: {why}"));
    }
    // Past `enrol_work`'s caps: told "busy" while still waiting, so that
    // answer's linger keeps no place from being given to a newcomer.
    let Some(work) = shared.enrol_work.begin(&id, addr.ip()) else {
        let why = "the hub is busy with other enrolments (or this invite's); try again in a minute";
        let _ = tcp.write_all(format!("no {why}\n").as_bytes()).await;
        crate::net::linger_close(tcp).await;
        return Err(format!("invite {id}: {why}"));
    };
    if !ticket.served() {
        return Err(format!("invite {id}: its place went to a newer connection"));
    }
    let ca = crate::tls::load_certs(&e.ca).map_err(|e| format!("{e:#}"))?;
    let ca_der = ca.first().ok_or("no CA certificate")?;
    let hello = format!("ca {}\n", crate::enrol::hex(ca_der.as_ref()));
    tcp.write_all(hello.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let config = shared
        .trust
        .loaded
        .get()
        .material
        .enrol_config()
        .map_err(|e| format!("{e:#}"))?;
    let asked = tokio::time::timeout(REQUEST, async {
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let req: Request = proto::read_msg(&mut tls)
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok::<_, String>((tls, req))
    });
    let taken = || format!("invite {id}: a newer connection for it took its place");
    let (mut tls, req) = tokio::select! {
        r = asked => r.map_err(|_| format!("invite {id}: no request within {REQUEST:?} of the CA"))??,
        _ = work.taken() => return Err(taken()),
    };
    if !work.asked() {
        return Err(taken());
    }
    let reply = enrol(shared, &e, &id, req, addr).await;
    let _ = proto::write_msg(&mut tls, &reply).await;
    let _ = tls.shutdown().await;
    match reply {
        Reply::Enrolled { ep, .. } => Ok(ep),
        Reply::Refused { reason } => Err(format!("invite {id}: {reason}")),
    }
}

async fn enrol(
    shared: &Arc<Shared>,
    e: &crate::config::enrol::EnrolSettings,
    id: &str,
    req: Request,
    addr: SocketAddr,
) -> Reply {
    let refused = |reason: String| Reply::Refused { reason };
    let (invite, again) = match redeem(e, id, req.secret, &req.csr, addr.ip()).await {
        Ok(i) => i,
        Err(why) => return refused(why),
    };
    let ep = invite.ep.clone();
    // Asked again: checked when recorded, against what happened since.
    let again = again
        .then(|| invite.used.as_ref().map(|u| (id.to_string(), u.at)))
        .flatten();
    if again.is_some() {
        tracing::info!(
            ep,
            invite = id,
            "the machine that used this invite asks again with the same key (its answer was \
             lost on the way, or the hub stopped before recording it)"
        );
    }
    let token = crate::token::generate();
    let ((cert, serial), hash) = match sign(e, req.csr, &ep, &token).await {
        Ok(m) => m,
        Err(why) => return refused(why),
    };
    let record = Enrolled {
        token_hash: hash,
        serial,
        address: addr.ip().to_canonical(),
        enrolled: now(),
        services: invite.services.clone(),
        invite: Some(id.to_string()),
        revoked: false,
    };
    // Its own task: recorded and applied together even if this enrolment
    // is cut off (deadline, shutdown) halfway through.
    let apply = shared.tracker.spawn(record_and_apply(
        shared.clone(),
        e.clone(),
        ep.clone(),
        record,
        again,
    ));
    match apply.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return refused(why),
        Err(err) => return refused(err.to_string()),
    }
    reply(shared, e, ep, cert, token)
}

/// Burns the invite `id` if `secret` is its own, for the key `csr` asks
/// to certify (under the state files' lock, against `ferry hub invite`:
/// waits belong off the async threads). A request that cannot be read
/// leaves the invite unused. True: the same key asked again.
async fn redeem(
    e: &crate::config::enrol::EnrolSettings,
    id: &str,
    secret: crate::secret::Secret,
    csr: &str,
    from: std::net::IpAddr,
) -> Result<(crate::enrol::invites::Invite, bool), String> {
    let (state, id, csr) = (e.state.clone(), id.to_string(), csr.to_string());
    // The request is read once the secret matched: a stranger's costs
    // no parse and no signature check.
    let key = move || {
        use rcgen::PublicKeyData;
        let asked = rcgen::CertificateSigningRequestParams::from_pem(&csr).map_err(|_| {
            "the certificate request is malformed or its signature is wrong".to_string()
        })?;
        Ok(key_sha256(&asked.public_key.subject_public_key_info()))
    };
    tokio::task::spawn_blocking(move || Store::new(&state).redeem(&id, secret.expose(), from, key))
        .await
        .map_err(|err| err.to_string())?
}

/// The ep's certificate signed from its request (CN forced to `ep`), and
/// the Argon2 hash of its new token: the certificate and its serial, the hash.
async fn sign(
    e: &crate::config::enrol::EnrolSettings,
    csr: String,
    ep: &str,
    token: &crate::secret::Secret,
) -> Result<((String, String), String), String> {
    let (ca, key, name, t) = (
        e.ca.clone(),
        e.ca_key.clone(),
        ep.to_string(),
        token.clone(),
    );
    let made = tokio::task::spawn_blocking(move || {
        let signed = crate::certgen::sign_csr(&ca, &key, &csr, &name)?;
        let hash = crate::token::hash(&t).map_err(anyhow::Error::msg)?;
        anyhow::Ok((signed, hash))
    })
    .await;
    match made {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(err) => Err(err.to_string()),
    }
}

/// Records the enrolment (revoking an earlier certificate of the same ep)
/// and applies its credential and address at once; the next reload reads
/// the same from enrolled.json. Both happen while no reload runs: a reload
/// that read enrolled.json before the record would otherwise set settings
/// without this ep after the enrolment set them with it.
async fn record_and_apply(
    shared: Arc<Shared>,
    e: crate::config::enrol::EnrolSettings,
    ep: String,
    record: Enrolled,
    again: Option<(String, u64)>,
) -> Result<(), String> {
    let update = shared.settings_update.lock().await;
    if let Some(why) = name_taken(&shared, &ep) {
        tracing::warn!(ep, "enrolment refused: {why}");
        return Err(why);
    }
    let (hash, ip, services) = (
        record.token_hash.clone(),
        record.address,
        record.services.clone(),
    );
    let (state, name, crl) = (e.state.clone(), ep.clone(), shared.settings().crl.clone());
    // Needed only when asked again: a copy of the list as followed.
    let followed = match again {
        Some(_) => (shared.trust.revoked.read())
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        None => Default::default(),
    };
    let recorded = tokio::task::spawn_blocking(move || {
        // Asked under the state's lock, from the file as it is then, not
        // only as last followed: a `ferry hub revoke` a moment ago is not
        // undone by asking again. A list that cannot be read refuses.
        let is_revoked = |serial: &str| {
            followed.contains(serial)
                || crl.as_deref().is_some_and(|c| match listed(c) {
                    Ok(listed) => listed.contains(serial),
                    Err(err) => {
                        tracing::warn!("an ep asks again; {err:#}: refused");
                        true
                    }
                })
        };
        let asked = again.as_ref().map(|(id, used_at)| AskedAgain {
            id,
            used_at: *used_at,
            revoked: &is_revoked,
        });
        let old = Store::new(&state).record(&name, record, asked)?;
        if let Some(old) = &old {
            revoke_replaced(&e, crl.as_deref(), &name, old);
        }
        anyhow::Ok(old.is_some())
    })
    .await;
    let again = match recorded {
        Ok(Ok(again)) => again,
        Ok(Err(err)) if err.is::<NotItsOwn>() => return Err(err.to_string()),
        Ok(Err(err)) => return Err(format!("cannot record the enrolment: {err:#}")),
        Err(err) => return Err(err.to_string()),
    };
    shared.metrics.enrolments.inc();
    apply(&shared, &ep, (hash, ip, services));
    if again {
        // The machine the earlier certificate and token are on is cut off
        // now, not when the new one first logs in (which may be hours).
        shared.sessions.close_where(
            |name, _| name == ep,
            "this ep enrolled again; the earlier machine's token no longer logs in",
        );
    }
    drop(update);
    Ok(())
}

/// The enrolled `ep`'s token hash, address and granted services in the
/// running settings.
fn apply(
    shared: &Arc<Shared>,
    ep: &str,
    (hash, ip, services): (String, std::net::IpAddr, Option<Vec<String>>),
) {
    let mut s = (*shared.settings()).clone();
    s.credentials.per_ep.insert(ep.to_string(), hash);
    s.allowlist.add(ip);
    crate::enrol::grant_enrolled(&mut s, ep, services);
    s.revoked.retain(|n| n != ep);
    if !s.enrolled.iter().any(|n| n == ep) {
        s.enrolled.push(ep.to_string());
    }
    let regranted = s.grants != shared.settings().grants;
    let _offers = shared.offers();
    shared.set_settings(s);
    if regranted {
        // A service the invite granted is out of reach of eps without a
        // list of their own now, as after a reload granting it: the one
        // serving it lets it go and its players finish within the drain.
        super::reload::grants_changed(shared);
    }
}

/// The serials the revocation list at `path` holds; a file with no list
/// in it (empty, another kind of PEM) is an error, as the hub's follower
/// takes it.
fn listed(path: &std::path::Path) -> anyhow::Result<std::collections::HashSet<String>> {
    anyhow::ensure!(
        !crate::tls::load_crls(path)?.is_empty(),
        "{} holds no revocation list",
        path.display()
    );
    crate::tls::crl_serials(path)
}

/// Why `ep` cannot be enrolled: the name is another ep's, one hub.toml
/// knows (its own token, or a grant for an ep on the shared token) or one
/// logged in on the shared token. An enrolment would give that name a
/// token of its own and lock the ep out, or hand its services to the new
/// machine. None for a new name or an ep enrolled before (enrolling again
/// replaces it, on purpose).
fn name_taken(shared: &Shared, ep: &str) -> Option<String> {
    let s = shared.settings();
    if s.enrolled.iter().any(|n| n == ep) {
        return None;
    }
    if s.credentials.per_ep.contains_key(ep) || s.grants.listed(ep) {
        return Some(format!(
            "[eps.{ep}] in hub.toml names an ep that is not enrolled; the name is taken"
        ));
    }
    if shared.sessions.list().iter().any(|st| st.name == ep) {
        return Some(format!(
            "an ep named {ep:?} is logged in with the shared token; the name is taken"
        ));
    }
    s.tls_files
        .ca
        .with_file_name(format!("ep-{ep}.pem"))
        .exists()
        .then(|| {
            format!("an ep named {ep:?} already has a certificate (ep-{ep}.pem); the name is taken")
        })
}

/// What the new ep needs to run: its certificate, the CA, its token, the
/// ports and the services.
fn reply(
    shared: &Shared,
    e: &crate::config::enrol::EnrolSettings,
    ep: String,
    cert: String,
    token: crate::secret::Secret,
) -> Reply {
    let s = shared.settings();
    let name = ep.clone();
    let ca_pem = crate::files::read_regular(&e.ca, crate::files::MAX_NAMED)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let addrs = shared.addrs.get().copied();
    Reply::Enrolled {
        ep,
        cert,
        ca: ca_pem,
        token,
        control_port: addrs.map_or(s.control.port(), |a| a.control.port()),
        channel_port: addrs.map_or(s.channel.port(), |a| a.channel.port()),
        services: s
            .services
            .iter()
            // What it may serve: its config offers nothing it would be
            // refused.
            .filter(|svc| s.grants.may_serve(&name, &svc.name))
            .map(|svc| Offered {
                name: svc.name.clone(),
                kind: svc.kind,
                first_port: svc.bind.first,
                ports: svc.bind.count,
            })
            .collect(),
    }
}

/// An ep enrolled again: its earlier certificate is revoked in the list
/// the hub follows (`tls.crl`), signed with the key that signs enrolled
/// eps (`enrol.ca_key`), wherever the two are kept.
fn revoke_replaced(
    e: &crate::config::enrol::EnrolSettings,
    crl: Option<&std::path::Path>,
    ep: &str,
    serial: &str,
) {
    let Some(crl) = crl else {
        tracing::warn!(
            ep,
            serial,
            "the ep enrolled again; its earlier certificate cannot be revoked because \
             tls.crl is not set (its old token no longer logs in)"
        );
        return;
    };
    let ca = crate::certgen::CaFiles {
        cert: e.ca.clone(),
        key: e.ca_key.clone(),
        crl: crl.to_path_buf(),
    };
    match crate::certgen::revoke_serials(&ca, &[serial.to_string()]) {
        Ok(()) => tracing::info!(
            ep,
            serial,
            crl = %crl.display(),
            "the ep enrolled again; its earlier certificate is revoked"
        ),
        Err(err) => tracing::warn!(
            ep,
            serial,
            "the ep enrolled again but its earlier certificate could not be revoked: {err:#}"
        ),
    }
}
