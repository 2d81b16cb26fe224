//! `testfleet-aggregator`: parses the command line and runs the aggregator service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use testfleet_aggregator::AggregatorSettings;
use testfleet_common::config::{self, Override};
use testfleet_common::shutdown::Shutdown;

/// Exit code for usage and configuration errors.
const USAGE: u8 = 2;
/// Exit code when the broker or the state directory cannot be used.
const INFRA: u8 = 5;

/// Follows every testfleet run: collects results, retries, writes reports, emits verdicts.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (default: ./testfleet.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Broker URL, e.g. amqp://user:pass@host:5672/%2f?heartbeat=10.
    #[arg(long)]
    broker: Option<String>,
    /// Where each finished run's reports are written, one folder per run.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Where open runs are journaled, so a restart resumes them.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl Cli {
    fn overrides(&self) -> Vec<Override> {
        let mut overrides: Vec<Override> = Vec::new();
        if let Some(url) = &self.broker {
            overrides.push(("broker.url", url.clone().into()));
        }
        if let Some(dir) = &self.report_dir {
            overrides.push(("aggregator.report_dir", dir.display().to_string().into()));
        }
        if let Some(dir) = &self.state_dir {
            overrides.push(("aggregator.state_dir", dir.display().to_string().into()));
        }
        overrides
    }
}

fn settings(cli: &Cli) -> Result<AggregatorSettings, config::ConfigError> {
    let raw = config::load(cli.config.as_deref(), cli.overrides())?;
    raw.broker.validate()?;
    Ok(AggregatorSettings {
        broker_url: raw.broker.url.clone(),
        connect_timeout: raw.broker.connect_timeout(),
        topology: raw.broker.topology(),
        report_dir: raw.aggregator.report_dir,
        state_dir: raw.aggregator.state_dir,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    testfleet_common::logging::init();
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("testfleet-aggregator: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    match testfleet_aggregator::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("testfleet-aggregator: {error}");
            ExitCode::from(INFRA)
        }
    }
}
