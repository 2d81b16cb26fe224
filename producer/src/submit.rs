//! Publishing a run: its announcement to the aggregator, then one job per test,
//! each confirmed by the broker; and waiting for the run's verdict.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::now_ms;
use testfleet_common::topology::Topology;
use testfleet_common::wire::{decode_report, Body, Job, RunAnnounce, RunReport, RunSpec};
use tracing::{info, warn};
use uuid::Uuid;

/// Jobs published per confirm round trip.
const PUBLISH_WINDOW: usize = 2000;
/// How long after the run's deadline a waiting producer gives up on the verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(120);
/// An unread verdict queue outlives the deadline by this much, then expires.
const VERDICT_QUEUE_SLACK: Duration = Duration::from_secs(3600);

/// Validated settings of the producer.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub broker_url: String,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub suite: String,
    pub spec: RunSpec,
    /// How long the run may take in all.
    pub deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(
        "no verdict for run {run_id} by {waited:?} after its deadline; is an aggregator running?"
    )]
    NoVerdict { run_id: Uuid, waited: Duration },
}

/// A run that the broker has taken.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run_id: Uuid,
    pub tests: usize,
    pub deadline_ms: u64,
}

/// Publishes the run. With `wait`, the verdict queue exists before anything else,
/// so the verdict cannot be missed.
pub async fn submit(
    settings: &ProducerSettings,
    tests: Vec<String>,
    wait: bool,
) -> Result<Submitted, ProducerError> {
    let connection = broker::connect(&settings.broker_url, settings.connect_timeout).await?;
    let submitted = publish_run(&connection, settings, tests, wait).await;
    let _ = connection.close(200, "run submitted".into()).await;
    submitted
}

async fn publish_run(
    connection: &Connection,
    settings: &ProducerSettings,
    tests: Vec<String>,
    wait: bool,
) -> Result<Submitted, ProducerError> {
    let channel = broker::confirm_channel(connection).await?;
    settings
        .topology
        .declare(&channel)
        .await
        .map_err(BrokerError::from)?;
    let run_id = Uuid::new_v4();
    let created_at_ms = now_ms();
    let deadline_ms = created_at_ms + settings.deadline.as_millis() as u64;
    if wait {
        let expires = settings.deadline + VERDICT_GRACE + VERDICT_QUEUE_SLACK;
        settings
            .topology
            .declare_verdict_queue(&channel, &run_id.to_string(), expires)
            .await
            .map_err(BrokerError::from)?;
    }
    let announce = RunAnnounce {
        run_id,
        suite: settings.suite.clone(),
        created_at_ms,
        deadline_ms,
        spec: settings.spec.clone(),
        tests,
    };
    // The announcement goes first, on the queue results travel: the aggregator
    // knows the run's expected tests before any result of it can arrive.
    broker::publish(
        &channel,
        "",
        &settings.topology.results,
        &Body::Run(announce.clone()),
    )
    .await?;
    let count = announce.tests.len();
    let jobs = announce.tests.into_iter().map(|test_id| {
        Body::Job(Job {
            run_id,
            test_id,
            attempt: 1,
            deadline_ms,
            spec: settings.spec.clone(),
        })
    });
    broker::publish_all(&channel, "", &settings.topology.jobs, jobs, PUBLISH_WINDOW).await?;
    info!(run = %run_id, tests = count, "run published");
    let _ = channel.close(200, "run published".into()).await;
    Ok(Submitted {
        run_id,
        tests: count,
        deadline_ms,
    })
}

/// Waits for the run's verdict, reconnecting to the broker if needed.
pub async fn wait_for_verdict(
    settings: &ProducerSettings,
    submitted: &Submitted,
) -> Result<RunReport, ProducerError> {
    let give_up_in =
        Duration::from_millis(submitted.deadline_ms.saturating_sub(now_ms())) + VERDICT_GRACE;
    match tokio::time::timeout(give_up_in, wait_reconnecting(settings, submitted.run_id)).await {
        Ok(report) => report,
        Err(_) => Err(ProducerError::NoVerdict {
            run_id: submitted.run_id,
            waited: VERDICT_GRACE,
        }),
    }
}

async fn wait_reconnecting(
    settings: &ProducerSettings,
    run_id: Uuid,
) -> Result<RunReport, ProducerError> {
    loop {
        let connection = broker::connect(&settings.broker_url, settings.connect_timeout).await?;
        match read_verdict(&connection, settings, run_id).await {
            Ok(report) => {
                let _ = connection.close(200, "verdict received".into()).await;
                return Ok(report);
            }
            Err(error) => {
                warn!(%error, "lost the broker while waiting for the verdict, reconnecting");
                let _ = connection.close(200, "reconnecting".into()).await;
            }
        }
    }
}

async fn read_verdict(
    connection: &Connection,
    settings: &ProducerSettings,
    run_id: Uuid,
) -> Result<RunReport, BrokerError> {
    let channel = connection.create_channel().await?;
    let queue = settings.topology.verdict_queue(&run_id.to_string());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = consumer.next().await.ok_or(BrokerError::ChannelGone)??;
        broker::ack(&delivery).await?;
        match decode_report(&delivery.data) {
            Ok(report) if report.run_id == run_id => {
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                return Ok(report);
            }
            Ok(other) => warn!(run = %other.run_id, "ignoring the verdict of another run"),
            Err(error) => warn!(%error, "ignoring an unreadable message on the verdict queue"),
        }
    }
}
