//! systemd's readiness protocol (sd_notify): one datagram per state change
//! to the socket named in `$NOTIFY_SOCKET`, so `systemctl start` and
//! `systemctl reload` return when the change is live. Without the variable
//! (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        // An abstract socket: Linux only, as is systemd.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
}

pub fn ready() {
    send("READY=1");
}

/// The system's monotonic clock in µs: one clock for every process on
/// the machine (systemd's, and `ferry hub reload`'s against the hub's).
pub fn monotonic_us() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

/// A reload starts; `ready` ends it.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_us()));
}

pub fn stopping() {
    send("STOPPING=1");
}
