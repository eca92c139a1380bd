//! The kernel's pacing of a TCP socket's sends (`SO_MAX_PACING_RATE`),
//! for a capped player's TLS channel. A cap lets bytes through in steps
//! of up to a hundredth of a second of its rate, and without pacing the
//! kernel sends each step back to back at the full speed of the machine's
//! link; where home's uplink is narrower (a FIFO at the router or modem),
//! every other player's next packet waits behind the step. Paced, the
//! step leaves a packet at a time, a little above the cap.

use std::os::fd::RawFd;

/// What the kernel may send at while a capped transfer is steady: an
/// eighth above the cap, so the token bucket, not the kernel, sets the
/// rate (the kernel counts TCP payload, which is TLS's records: 22 bytes
/// a record above the player's bytes, about 2 % in the 1 KiB steps of the
/// lowest caps), and a paced step still leaves before the next is due.
pub fn paced(cap: u64) -> u64 {
    cap.saturating_add(cap / 8)
}

/// Spreads `fd`'s sends out at no more than `rate` bytes/s; 0 lifts it.
/// A kernel that refuses leaves the socket sent from unpaced, as before
/// (nothing to tell: the cap still holds, only less smoothly). Once set,
/// the kernel keeps pacing the socket at TCP's own rate after a lift
/// (under BBR it always does), and the lower rate lasts until the next
/// acknowledgement: a burst after a lift leaves within a round trip, not
/// at the cap.
pub fn set(fd: RawFd, rate: u64) {
    // The kernel reads an `unsigned long` where one is given (a 64-bit
    // rate on a 64-bit kernel, 32 bits elsewhere); all ones is no limit.
    let v: libc::c_ulong = match rate {
        0 => libc::c_ulong::MAX,
        r => libc::c_ulong::try_from(r).unwrap_or(libc::c_ulong::MAX - 1),
    };
    // SAFETY: `v` is a live `c_ulong` and the length given is its size;
    // the kernel only reads it. No crate in ferry's tree (socket2, nix,
    // rustix) wraps SO_MAX_PACING_RATE. Measured reason: on a 100 Mbit/s
    // FIFO uplink, another player's round trip beside a download capped
    // at 10 MB/s waited 286 µs at p99 instead of 2,446 (CUBIC), 1.6–1.9 ms
    // instead of 4.9–6.0 (BBR): BENCHMARKS.md, "The kernel paces a capped
    // TLS channel". Called once per change of pace, not per write.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_ulong>() as libc::socklen_t,
        );
    }
}

/// The pacing rate set on `fd` now (`u64::MAX` when none).
#[cfg(test)]
pub fn get(fd: RawFd) -> Option<u64> {
    let mut v: libc::c_ulong = 0;
    let mut len = std::mem::size_of::<libc::c_ulong>() as libc::socklen_t;
    // SAFETY: `v` is a writable `c_ulong` of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(if v == libc::c_ulong::MAX {
        u64::MAX
    } else {
        v as u64
    })
}
