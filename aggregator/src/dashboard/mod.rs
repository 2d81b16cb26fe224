//! The aggregator's dashboard (`aggregator.dashboard`, off by default): a web
//! page of the runs in progress, the fleet's workers and what each slot
//! runs, the jobs queues' depths, recent runs with their verdicts and
//! reports, and the flakiest tests, updating itself every second; and
//! Prometheus metrics at `/metrics`.
//!
//! The loop owns the [`Model`] and publishes a snapshot of it twice a second
//! on a watch channel; the web server (`server.rs`, axum) reads snapshots
//! and nothing else, so serving the page never touches the loop's state.
//!
//! Layout: [`model`] (the state and its snapshot, pure), [`metrics`] (the
//! snapshot as Prometheus' text format, pure), [`server`] (the routes and
//! the token check), `page.html` (the page, which fetches `/api/state`).

pub mod metrics;
pub mod model;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use testfleet_types::messages::{Heartbeat, RunEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::model::{FinishedRun, Model, QueueView, RunProgress, Snapshot};
use crate::settings::AggregatorSettings;

/// How often the jobs queues' depths are asked of the broker.
pub const DEPTHS_EVERY: Duration = Duration::from_secs(2);
/// Runs' own queues whose depth is asked, at most (besides the shared one).
pub const MAX_QUEUES_ASKED: usize = 50;

/// The dashboard as the loop drives it.
pub struct Dashboard {
    model: Model,
    snapshots: watch::Sender<Arc<Snapshot>>,
    server: JoinHandle<()>,
    depths_asked: Option<Instant>,
}

impl Dashboard {
    /// Starts the web server, if the settings ask for a dashboard.
    pub async fn start(settings: &AggregatorSettings) -> std::io::Result<Option<Dashboard>> {
        let Some(address) = settings.dashboard else {
            return Ok(None);
        };
        let (snapshots, reader) = watch::channel(Arc::new(Snapshot::default()));
        let server = server::start(
            address,
            server::Access {
                token: settings.dashboard_token.clone(),
                hosts: settings.dashboard_hosts.clone(),
            },
            settings.report_dir.clone(),
            reader,
        )
        .await?;
        Ok(Some(Dashboard {
            model: Model::default(),
            snapshots,
            server,
            depths_asked: None,
        }))
    }

    pub fn heartbeat(&mut self, heartbeat: Heartbeat, now_ms: u64) {
        self.model.heartbeat(heartbeat, now_ms);
    }

    pub fn observe(&mut self, events: &[RunEvent]) {
        self.model.observe(events);
    }

    pub fn finished(&mut self, run: FinishedRun) {
        self.model.finished(run);
    }

    /// Whether the queues' depths are due to be asked again.
    pub fn depths_due(&mut self) -> bool {
        let due = self
            .depths_asked
            .is_none_or(|asked| asked.elapsed() >= DEPTHS_EVERY);
        if due {
            self.depths_asked = Some(Instant::now());
        }
        due
    }

    pub fn queues(&mut self, queues: Vec<QueueView>) {
        self.model.queues(queues);
    }

    /// Publishes a snapshot with the open runs' progress.
    pub fn publish(&mut self, runs: Vec<RunProgress>, now_ms: u64) {
        let snapshot = self.model.snapshot(runs, now_ms);
        self.snapshots.send_replace(Arc::new(snapshot));
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.server.abort();
    }
}
