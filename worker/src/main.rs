//! `testfleet-worker`: parses the command line and runs the worker service.

use std::process::ExitCode;

use clap::Parser;
use testfleet_common::cli::{self, CommonArgs, Overrides};
use testfleet_common::config::ConfigError;
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
    /// Network modes a Docker job may ask for (default none,bridge; `host`
    /// and `container:*` only where this worker is meant for them).
    #[arg(long, value_delimiter = ',')]
    allowed_networks: Option<Vec<String>>,
    /// Limits a Docker job may turn off: memory, pids, no_new_privileges.
    #[arg(long, value_delimiter = ',')]
    liftable_limits: Option<Vec<String>>,
    /// Capabilities a Docker job may give back to its container.
    #[arg(long, value_delimiter = ',')]
    allowed_capabilities: Option<Vec<String>>,
    /// OCI runtimes a Docker job may name (run.runtime; default: none, the
    /// engine's default only).
    #[arg(long, value_delimiter = ',')]
    allowed_runtimes: Option<Vec<String>>,
    /// Exit (0) after this many seconds without a job, none running: for
    /// fleets that scale to zero.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<u64>,
}

fn settings(cli: &Cli) -> Result<WorkerSettings, ConfigError> {
    let flags = Overrides::default()
        .set("worker.concurrency", cli.concurrency.map(i64::from))
        .set("worker.id", cli.worker_id.clone())
        .set("worker.executors", cli.executors.clone())
        .set("worker.allowed_networks", cli.allowed_networks.clone())
        .set("worker.liftable_limits", cli.liftable_limits.clone())
        .set(
            "worker.allowed_capabilities",
            cli.allowed_capabilities.clone(),
        )
        .set("worker.allowed_runtimes", cli.allowed_runtimes.clone())
        .set(
            "worker.exit_when_idle_secs",
            cli.exit_when_idle
                .map(|secs| secs.min(i64::MAX as u64) as i64),
        );
    WorkerSettings::from_config(&cli.common.load(flags)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::serve("testfleet-worker", settings(&cli), testfleet_worker::run).await
}
