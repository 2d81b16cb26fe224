//! Following a run to its verdict: one loop owns the run's progress while
//! `--wait` waits, and passes each event to the progress view and to the
//! `--events` stream.

use std::time::Duration;

use testfleet_types::messages::{RunEvent, RunReport};
use testfleet_types::now_ms;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::ndjson::{self, EventSink};
use crate::progress::{Progress, ProgressView};
use crate::settings::ProducerSettings;
use crate::submit::{wait_for_verdict, ProducerError, Submitted};

/// Events read from the broker but not yet shown. Small: the loop keeps up, and
/// when it does not, the broker holds the rest in the run's queue.
const EVENT_BACKLOG: usize = 256;

/// How a followed run is shown.
pub struct Watch<'a> {
    pub view: &'a ProgressView,
    pub sink: &'a mut EventSink,
    /// Between plain progress lines.
    pub every: Duration,
}

/// Waits for the run's verdict while showing its progress and streaming its
/// events. The verdict line is the caller's: it knows where the reports went.
pub async fn follow(
    settings: &ProducerSettings,
    submitted: &Submitted,
    mut watch: Watch<'_>,
) -> Result<RunReport, ProducerError> {
    let (events_tx, mut events) = mpsc::channel(EVENT_BACKLOG);
    let mut progress = Progress::new(submitted.tests, submitted.created_at_ms);
    let verdict = wait_for_verdict(settings, submitted, events_tx);
    tokio::pin!(verdict);
    // A zero interval means no plain lines; the ticker still needs a period.
    let every = watch.every.max(Duration::from_millis(100));
    let mut ticker = interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let report = loop {
        tokio::select! {
            report = &mut verdict => break report,
            Some(event) = events.recv() => take(event, &mut progress, &mut watch),
            _ = ticker.tick() => watch.view.tick(&progress, now_ms()),
        }
    };
    // Events queued ahead of the verdict are still to be shown: the verdict comes last.
    while let Ok(event) = events.try_recv() {
        take(event, &mut progress, &mut watch);
    }
    watch.view.finish();
    report
}

fn take(event: RunEvent, progress: &mut Progress, watch: &mut Watch<'_>) {
    progress.apply(&event.kind);
    watch.sink.write(&ndjson::run_event(&event));
    watch.view.update(progress, now_ms());
}
