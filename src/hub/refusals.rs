//! Counting refusals and logging them without drowning the operator: the
//! first refusal of each kind in a window is logged with its address; the
//! rest of the window is summed up in one line when the next one arrives.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Mutex, MutexGuard},
    time::Duration,
};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Kind {
    total: u64,
    window_start: Option<Instant>,
    suppressed: u64,
}

#[derive(Default)]
pub(crate) struct Refusals {
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
}

impl Refusals {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Kind>> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal of `kind` and logs it if the window allows.
    /// `quiet` kinds (before-TLS drops that scanners cause all day) log at
    /// debug; the others at warn.
    pub fn record(&self, kind: &'static str, ip: IpAddr, detail: &str, quiet: bool) {
        let now = Instant::now();
        let mut kinds = self.lock();
        let k = kinds.entry(kind).or_default();
        k.total += 1;
        let fresh = k
            .window_start
            .is_none_or(|s| now.duration_since(s) >= WINDOW);
        if !fresh {
            k.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut k.suppressed);
        k.window_start = Some(now);
        drop(kinds);
        let more = if suppressed > 0 {
            format!(" (and {suppressed} more of this kind in the previous window)")
        } else {
            String::new()
        };
        if quiet {
            tracing::debug!(%ip, "refused: {kind}: {detail}{more}");
        } else {
            tracing::warn!(%ip, "refused: {kind}: {detail}{more}");
        }
    }

    /// Totals per kind since start.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        self.lock().iter().map(|(k, v)| (*k, v.total)).collect()
    }
}
