//! `testfleet-aggregator`: parses the command line and runs the aggregator service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use testfleet_aggregator::AggregatorSettings;
use testfleet_common::cli::{self, CommonArgs, Overrides};
use testfleet_common::config::ConfigError;

/// Follows every testfleet run: collects results, retries, writes reports, emits verdicts.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Where each finished run's reports are written, one folder per run.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// The suites' durations history, and the journals with `--journal file`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where open runs are journaled, so a restart or a standby resumes
    /// them: `file` (under the state dir) or `broker` (a replicated stream).
    #[arg(long)]
    journal: Option<String>,
    /// Serve the dashboard and /metrics at this address (127.0.0.1:9191).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<String>,
}

fn settings(cli: &Cli) -> Result<AggregatorSettings, ConfigError> {
    let path = |dir: &Option<PathBuf>| dir.as_ref().map(|d| d.display().to_string());
    let flags = Overrides::default()
        .set("aggregator.report_dir", path(&cli.report_dir))
        .set("aggregator.state_dir", path(&cli.state_dir))
        .set("aggregator.journal", cli.journal.clone())
        .set("aggregator.dashboard", cli.dashboard.clone());
    AggregatorSettings::from_config(&cli.common.load(flags)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::serve(
        "testfleet-aggregator",
        settings(&cli),
        testfleet_aggregator::run,
    )
    .await
}
