//! The one shutdown mechanism: a `CancellationToken` tripped by Ctrl-C or
//! SIGTERM, and a `TaskTracker` per role to wait for tasks to end.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM, and `immediate` on the
/// second: an operator who asks twice does not want to wait for the drain.
pub fn on_signal(token: CancellationToken, immediate: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (signal received; a second one stops at once)");
        token.cancel();
        wait_for_signal().await;
        tracing::info!("second signal: stopping now");
        immediate.cancel();
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
/// up to `drain` (or until `immediate`), then trip `hard_stop` so the rest
/// close with a reset, and wait again.
pub async fn drain(
    tracker: &tokio_util::task::TaskTracker,
    hard_stop: &CancellationToken,
    drain: std::time::Duration,
    immediate: &CancellationToken,
) {
    tracker.close();
    let finished = tokio::select! {
        r = tokio::time::timeout(drain, tracker.wait()) => r.is_ok(),
        _ = immediate.cancelled() => false,
    };
    if !finished {
        tracing::info!("drain over; cutting remaining players off");
        hard_stop.cancel();
        tracker.wait().await;
    }
}
