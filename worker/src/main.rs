//! `testfleet-worker`: parses the command line and runs the worker service.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testfleet_common::cli::{self, CommonArgs, Overrides};
use testfleet_common::config::ConfigError;
use testfleet_common::wire::ExecutorKind;
use testfleet_worker::WorkerSettings;

/// Runs tests from the broker's job queue, each in a fresh Docker container or
/// as a child process on this host.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Tests this worker runs at once (AMQP prefetch matches).
    #[arg(long)]
    concurrency: Option<u32>,
    /// A stable id lets a restarted worker remove its predecessor's containers.
    #[arg(long)]
    worker_id: Option<String>,
    /// Executors to run jobs with: docker, process, or both (comma-separated).
    /// `process` runs any run's command on this host, so it is opt-in.
    #[arg(long, value_delimiter = ',')]
    executors: Option<Vec<String>>,
}

fn settings(cli: &Cli) -> Result<WorkerSettings, ConfigError> {
    let flags = Overrides::default()
        .set("worker.concurrency", cli.concurrency.map(i64::from))
        .set("worker.id", cli.worker_id.clone())
        .set("worker.executors", cli.executors.clone());
    let raw = cli.common.load(flags)?;
    raw.worker.validate()?;
    let concurrency = u16::try_from(raw.worker.concurrency).map_err(|_| ConfigError::Invalid {
        key: "worker.concurrency",
        problem: "must be at most 65535".into(),
    })?;
    let worker_id = match raw.worker.id.trim() {
        "" => default_worker_id(),
        id => id.to_owned(),
    };
    Ok(WorkerSettings {
        broker_url: raw.broker.url.clone(),
        connect_timeout: raw.broker.connect_timeout(),
        topology: raw.broker.topology(),
        concurrency,
        worker_id,
        docker_timeout: Duration::from_secs(raw.worker.docker_timeout_secs),
        // Validated: concurrency + prefetch_extra fits the AMQP prefetch (u16).
        prefetch_extra: raw.worker.prefetch_extra as u16,
        executors: dedup(raw.worker.executors),
    })
}

/// `--executors docker,docker` is one Docker executor, in first-named order.
fn dedup(kinds: Vec<ExecutorKind>) -> Vec<ExecutorKind> {
    let mut unique = Vec::new();
    for kind in kinds {
        if !unique.contains(&kind) {
            unique.push(kind);
        }
    }
    unique
}

/// Hostname plus a random suffix: unique even for several workers on one host.
fn default_worker_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "worker".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..6])
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::serve("testfleet-worker", settings(&cli), testfleet_worker::run).await
}
