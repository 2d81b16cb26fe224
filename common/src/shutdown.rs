//! Two-stage shutdown: the first notice drains (finish what is running, take
//! nothing new), the second aborts (stop now and hand work back to the broker).
//!
//! Services take a [`Shutdown`] as a parameter, so a test can drive it directly and
//! a binary can wire it to Ctrl-C and SIGTERM with [`Shutdown::on_signals`].

use tokio_util::sync::CancellationToken;
use tracing::warn;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the service to finish its running work and stop.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Asks the service to stop at once; aborting implies draining.
    pub fn abort(&self) {
        self.drain.cancel();
        self.abort.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    pub async fn draining(&self) {
        self.drain.cancelled().await
    }

    /// Sleeps for `pause`, or less if the service is asked to drain meanwhile.
    pub async fn sleep(&self, pause: std::time::Duration) {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = self.draining() => {}
        }
    }

    /// The token that fires on abort, for work that must be interrupted.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// Drains on the first Ctrl-C or SIGTERM, aborts on the second.
    pub fn on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            warn!("shutting down: finishing running work (signal again to stop now)");
            shutdown.drain();
            wait_for_signal().await;
            warn!("stopping now: interrupting running work");
            shutdown.abort();
        });
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
