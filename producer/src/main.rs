//! `testfleet-producer`: lists the tests, publishes the run, and with `--wait`
//! prints the verdict, writes the reports and exits with the verdict's code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use regex::Regex;
use testfleet_aggregator::report;
use testfleet_common::cli::{fail, CommonArgs, Overrides, INFRA, USAGE};
use testfleet_common::config::ConfigError;
use testfleet_producer::ids::{self, IdSource, Selection, Separator};
use testfleet_producer::ProducerSettings;

const PROGRAM: &str = "testfleet-producer";

/// Publishes one job per test to the fleet; `--wait` waits for the verdict.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes with --wait: 0 passed, 1 tests failed, 2 usage or configuration error, \
3 too many failures to retry, 4 tests missing at the deadline, 5 broker unreachable or no verdict."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// File listing one test id per line (`-` for stdin).
    #[arg(long, conflicts_with = "discover")]
    tests: Option<PathBuf>,
    /// Command whose stdout lists one test id per line (run with `sh -c` here).
    #[arg(long)]
    discover: Option<String>,
    /// Ids are separated by NUL bytes instead of newlines.
    #[arg(long)]
    null: bool,
    /// Keep only ids matching this regex (repeatable: any may match).
    #[arg(long)]
    filter: Vec<String>,
    /// Drop ids matching this regex (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Suite name, for reports.
    #[arg(long)]
    suite: Option<String>,
    /// Image every test runs in.
    #[arg(long)]
    image: Option<String>,
    /// Per-test timeout in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Seconds the whole run may take; tests without a result by then are missing.
    #[arg(long)]
    deadline: Option<u64>,
    /// Retry while (failed + missing) / tests is at most this ratio.
    #[arg(long)]
    retry_threshold: Option<f64>,
    /// Rounds in all, the first included.
    #[arg(long)]
    max_rounds: Option<u32>,
    /// Docker network mode for test containers.
    #[arg(long)]
    network: Option<String>,
    /// Wait for the verdict, print it, write the reports, exit with its code.
    #[arg(long)]
    wait: bool,
    /// Where `--wait` writes the reports (a folder per run).
    #[arg(long, default_value = "testfleet-reports")]
    report_dir: PathBuf,
    /// The test command as argv; `{id}` is replaced by the test id (no shell).
    #[arg(last = true)]
    command: Vec<String>,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let command = (!self.command.is_empty()).then(|| self.command.clone());
        Overrides::default()
            .set("run.suite", self.suite.clone())
            .set("run.image", self.image.clone())
            .set("run.timeout_secs", self.timeout)
            .set("run.deadline_secs", self.deadline)
            .set("run.retry_threshold", self.retry_threshold)
            .set("run.max_rounds", self.max_rounds.map(i64::from))
            .set("run.network", self.network.clone())
            .set("run.command", command)
    }

    fn id_source(&self) -> Result<IdSource, String> {
        match (&self.tests, &self.discover) {
            (Some(path), None) if path.as_os_str() == "-" => Ok(IdSource::Stdin),
            (Some(path), None) => Ok(IdSource::File(path.clone())),
            (None, Some(command)) => Ok(IdSource::Discover(command.clone())),
            _ => Err("say where the test ids come from: --tests FILE, --tests - (stdin) or --discover CMD".into()),
        }
    }

    fn selection(&self) -> Result<Selection, String> {
        let compile = |patterns: &[String]| -> Result<Vec<Regex>, String> {
            patterns
                .iter()
                .map(|p| Regex::new(p).map_err(|e| format!("bad regex {p:?}: {e}")))
                .collect()
        };
        Ok(Selection {
            filters: compile(&self.filter)?,
            excludes: compile(&self.exclude)?,
        })
    }
}

fn settings(cli: &Cli) -> Result<ProducerSettings, ConfigError> {
    let raw = cli.common.load(cli.overrides())?;
    Ok(ProducerSettings {
        broker_url: raw.broker.url.clone(),
        connect_timeout: raw.broker.connect_timeout(),
        topology: raw.broker.topology(),
        suite: raw.run.suite.clone(),
        spec: raw.run.to_spec()?,
        deadline: Duration::from_secs(raw.run.deadline_secs),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    testfleet_common::logging::init();
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(error) => return fail(PROGRAM, USAGE, error),
    };
    let (source, selection) = match cli.id_source().and_then(|s| Ok((s, cli.selection()?))) {
        Ok(parts) => parts,
        Err(message) => return fail(PROGRAM, USAGE, message),
    };
    let separator = if cli.null {
        Separator::Nul
    } else {
        Separator::Newline
    };
    let tests = match ids::collect(&source, separator, &selection) {
        Ok(tests) => tests,
        Err(error) => return fail(PROGRAM, USAGE, error),
    };
    let submitted = match testfleet_producer::submit(&settings, tests, cli.wait).await {
        Ok(submitted) => submitted,
        Err(error) => return fail(PROGRAM, INFRA, error),
    };
    println!("{}", submitted.run_id);
    if !cli.wait {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "waiting for the verdict of run {} ({} tests)…",
        submitted.run_id, submitted.tests
    );
    let report = match testfleet_producer::wait_for_verdict(&settings, &submitted).await {
        Ok(report) => report,
        Err(error) => return fail(PROGRAM, INFRA, error),
    };
    println!("{}", report::console_summary(&report));
    match report::write_all(&report, &cli.report_dir) {
        Ok(paths) => println!("reports: {}", paths.dir.display()),
        Err(error) => eprintln!(
            "{PROGRAM}: could not write the reports to {}: {error}",
            cli.report_dir.display()
        ),
    }
    ExitCode::from(report.verdict.exit_code() as u8)
}
