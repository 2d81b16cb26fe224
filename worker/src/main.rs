//! `testfleet-worker`: parses the command line and runs the worker service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testfleet_common::config::{self, Override};
use testfleet_common::shutdown::Shutdown;
use testfleet_worker::WorkerSettings;

/// Exit code for usage and configuration errors.
const USAGE: u8 = 2;
/// Exit code when the broker or the engine cannot be used.
const INFRA: u8 = 5;

/// Runs tests from the broker's job queue, each in a fresh Docker container.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (default: ./testfleet.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Broker URL, e.g. amqp://user:pass@host:5672/%2f?heartbeat=10.
    #[arg(long)]
    broker: Option<String>,
    /// Tests this worker runs at once (AMQP prefetch matches).
    #[arg(long)]
    concurrency: Option<u32>,
    /// A stable id lets a restarted worker remove its predecessor's containers.
    #[arg(long)]
    worker_id: Option<String>,
}

impl Cli {
    fn overrides(&self) -> Vec<Override> {
        let mut overrides: Vec<Override> = Vec::new();
        if let Some(url) = &self.broker {
            overrides.push(("broker.url", url.clone().into()));
        }
        if let Some(n) = self.concurrency {
            overrides.push(("worker.concurrency", i64::from(n).into()));
        }
        if let Some(id) = &self.worker_id {
            overrides.push(("worker.id", id.clone().into()));
        }
        overrides
    }
}

fn settings(cli: &Cli) -> Result<WorkerSettings, config::ConfigError> {
    let raw = config::load(cli.config.as_deref(), cli.overrides())?;
    raw.broker.validate()?;
    raw.worker.validate()?;
    let concurrency =
        u16::try_from(raw.worker.concurrency).map_err(|_| config::ConfigError::Invalid {
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
    })
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
    testfleet_common::logging::init();
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("testfleet-worker: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    match testfleet_worker::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("testfleet-worker: {error}");
            ExitCode::from(INFRA)
        }
    }
}
