//! Signal-driven shutdown with a hard bound.
//!
//! SIGTERM or SIGINT cancels a [`CancellationToken`] that every loop selects
//! on; loops finish the batch in hand, wait for its acknowledgements, store
//! and commit offsets, and return. If that takes longer than the configured
//! bound the process exits anyway: nothing is lost, because offsets of
//! unfinished work were never stored.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT, and arms a
/// watchdog that ends the process `bound` after that signal.
pub fn install(bound: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(bound = ?bound, "shutdown requested; draining in-flight work");
        trigger.cancel();
        tokio::time::sleep(bound).await;
        tracing::error!(bound = ?bound, "shutdown did not finish in time; exiting");
        std::process::exit(2);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; falling back to ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Sleeps for `duration` unless `token` is cancelled first; returns false if cancelled.
pub async fn sleep_or_cancel(token: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}
