//! The one shutdown mechanism: a `CancellationToken` tripped by Ctrl-C or
//! SIGTERM, and a `TaskTracker` per role to wait for tasks to end.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM.
pub fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (signal received)");
        token.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// The end of a role's life: wait for `tracker`'s tasks (players finishing)
/// up to `drain`, then trip `hard_stop` so the rest close, and wait again.
pub async fn drain(
    tracker: &tokio_util::task::TaskTracker,
    hard_stop: &CancellationToken,
    drain: std::time::Duration,
) {
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::info!("drain time of {drain:?} over; closing remaining players");
        hard_stop.cancel();
        tracker.wait().await;
    }
}
