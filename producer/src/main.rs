//! `testfleet-producer`: lists the tests, publishes the run, and with `--wait`
//! shows its progress (and streams its events with `--events`), prints the
//! verdict, writes the reports and exits with the verdict's code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use regex::Regex;
use testfleet_common::cli::{fail, CommonArgs, Overrides, INFRA, USAGE};
use testfleet_common::config::ConfigError;
use testfleet_producer::compare;
use testfleet_producer::discovery::{self, DiscoveryError};
use testfleet_producer::follow::{follow, Watch};
use testfleet_producer::history::Order;
use testfleet_producer::ids::{self, IdSource, Selection, Separator};
use testfleet_producer::ndjson::{self, EventSink};
use testfleet_producer::presets::Preset;
use testfleet_producer::progress::ProgressView;
use testfleet_producer::rdeps::Query;
use testfleet_producer::resume::{self, ResumeError};
use testfleet_producer::settings::Choices;
use testfleet_producer::{ProducerError, ProducerSettings, Submitted};
use testfleet_report as report;
use testfleet_types::now_ms;
use testfleet_types::triage::TriageRule;

const PROGRAM: &str = "testfleet-producer";
/// The file GitHub Actions shows as a step's summary page.
const STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// How long a discovery in the image may wait for a worker beyond the
/// per-test timeout it runs under: workers may be busy with other jobs.
const DISCOVERY_SLACK: Duration = Duration::from_secs(120);

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
    #[arg(long, conflicts_with_all = ["discover", "rerun", "resume"])]
    tests: Option<PathBuf>,
    /// Run again, as a new run, the tests of run RUN_ID that did not pass,
    /// as its report.json under --report-dir lists them.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["discover", "preset", "resume"])]
    rerun: Option<String>,
    /// Continue run RUN_ID under its own id (its jobs were lost, or its
    /// producer stopped waiting): tests with a result keep it, the rest run
    /// again, and the verdict covers them all.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["discover", "preset", "list"])]
    resume: Option<uuid::Uuid>,
    /// With --resume: the run's token (default: the run.token its producer
    /// kept beside its reports, under --report-dir).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TESTFLEET_RUN_TOKEN",
        requires = "resume"
    )]
    run_token: Option<uuid::Uuid>,
    /// Command whose stdout lists one test id per line (run with `sh -c` here).
    #[arg(long)]
    discover: Option<String>,
    /// The ids are the packages that depend on these (comma-separated),
    /// from the dependency index --deps: a reverse-dependency run.
    #[arg(long, value_name = "PKG", value_delimiter = ',', requires = "deps",
          conflicts_with_all = ["tests", "discover", "preset", "rerun", "resume"])]
    rdeps_of: Vec<String>,
    /// With --rdeps-of: a Debian Packages file, or a folder of Python
    /// METADATA files.
    #[arg(long, value_name = "FILE")]
    deps: Option<PathBuf>,
    /// With --rdeps-of: follow dependents of dependents this many steps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    depth: u32,
    /// With --rdeps-of: at most this many packages, most depended-upon first.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Ids are separated by NUL bytes instead of newlines.
    #[arg(long, conflicts_with = "preset")]
    null: bool,
    /// The ids are a test runner's listing: its dry-run command is the default
    /// `--discover`, and its output is parsed for ids.
    #[arg(long, value_name = "RUNNER")]
    preset: Option<Preset>,
    /// Print the ids that would run, one per line, and exit (no broker needed).
    #[arg(long)]
    list: bool,
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
    /// An A/B run: every id runs in this image (as base::<id>) and in
    /// --image (as cand::<id>); the report compares them, and a confirmed
    /// regression fails the run.
    #[arg(long, value_name = "IMAGE", group = "ab", conflicts_with = "resume")]
    baseline_image: Option<String>,
    /// Compare with an earlier run instead of running a baseline: its
    /// report.json (a run id under --report-dir, or the file's path) is the
    /// baseline, and differences are confirmed on this run's side alone.
    #[arg(long, value_name = "RUN", group = "ab", conflicts_with_all = ["resume", "rerun"])]
    compare: Option<String>,
    /// With --baseline-image or --compare: run each id whose two sides
    /// differ this many more times on each side run (default 3).
    #[arg(long, value_name = "K", requires = "ab")]
    confirm: Option<u32>,
    /// Per-test timeout in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Kill a test that writes no output for this many seconds (its reason
    /// is no-output-timeout); 0: never.
    #[arg(long, value_name = "SECS")]
    quiet_timeout: Option<f64>,
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
    /// OCI runtime for test containers, as the engine registered it (`crun`);
    /// default: the engine's.
    #[arg(long)]
    runtime: Option<String>,
    /// Where tests run: `docker` (a fresh container each) or `process` (a child
    /// process on the worker's host; workers need `--executors process`).
    #[arg(long)]
    executor: Option<String>,
    /// Working directory of process jobs on the workers (default: the worker's).
    #[arg(long)]
    workdir: Option<String>,
    /// Publish jobs in `arrival` order or `longest-first` from the suite's history.
    #[arg(long, value_enum, default_value = "longest-first")]
    order: Order,
    /// With a batched command (`{ids}`): `auto` plans batches from the suite's
    /// history (the default), N puts at most N tests in a job.
    #[arg(long, value_name = "auto|N")]
    batch: Option<String>,
    /// Test slots in the fleet, for planning batches (default: the workers
    /// consuming jobs now, times 2).
    #[arg(long)]
    slots: Option<usize>,
    /// The report a batched command writes at `{report}`, and how it names
    /// tests: FORMAT:IDS, FORMAT one of junit, go-test-json, rspec-json, IDS
    /// one of pytest, nextest, rspec, go, name. `--preset` implies it.
    #[arg(long, value_name = "FORMAT:IDS")]
    report_format: Option<String>,
    /// Wait for the verdict, print it, write the reports, exit with its code.
    #[arg(long)]
    wait: bool,
    /// Where `--wait` writes the reports (a folder per run).
    #[arg(long, default_value = "testfleet-reports")]
    report_dir: PathBuf,
    /// With --wait: write the run's events as NDJSON to this file (`-`: stdout,
    /// and then everything else goes to stderr). Schema: docs/EVENTS.md.
    #[arg(long, value_name = "PATH", requires = "wait")]
    events: Option<PathBuf>,
    /// With --wait and stderr not a terminal: seconds between progress lines
    /// (0: no progress shown, not even the bar on a terminal).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    progress_every: u64,
    /// The test command as argv; `{id}` is replaced by the test id (no shell).
    #[arg(last = true)]
    command: Vec<String>,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let command = match (
            self.command.is_empty(),
            self.preset.and_then(Preset::batched_command),
        ) {
            (false, _) => Some(self.command.clone()),
            (true, Some((argv, _))) => Some(argv),
            (true, None) => None,
        };
        Overrides::default()
            .set("run.suite", self.suite.clone())
            .set("run.image", self.image.clone())
            .set("run.baseline_image", self.baseline_image.clone())
            .set("run.confirm", self.confirm.map(i64::from))
            .set("run.timeout_secs", self.timeout)
            .set("run.quiet_timeout_secs", self.quiet_timeout)
            .set("run.deadline_secs", self.deadline)
            .set("run.retry_threshold", self.retry_threshold)
            .set("run.max_rounds", self.max_rounds.map(i64::from))
            .set("run.network", self.network.clone())
            .set("run.runtime", self.runtime.clone())
            .set("run.executor", self.executor.clone())
            .set("run.workdir", self.workdir.clone())
            .set("run.command", command)
    }

    /// Where the ids come from; `None`: the preset's listing inside the run's
    /// image (`--preset` and `--image` without `--discover`), through a worker.
    fn id_source(&self) -> Result<Option<IdSource>, String> {
        if !self.rdeps_of.is_empty() {
            let deps = self
                .deps
                .clone()
                .ok_or_else(|| "--rdeps-of needs --deps FILE".to_owned())?;
            let query = Query {
                of: self.rdeps_of.clone(),
                depth: self.depth as usize,
                limit: self.limit,
            };
            return Ok(Some(IdSource::ReverseDependencies { deps, query }));
        }
        match (&self.tests, &self.discover) {
            (Some(path), None) if path.as_os_str() == "-" => Ok(Some(IdSource::Stdin)),
            (Some(path), None) => Ok(Some(IdSource::File(path.clone()))),
            (None, Some(command)) => Ok(Some(IdSource::Discover(command.clone()))),
            (None, None) => match self.preset.and_then(Preset::command) {
                Some(_) if self.image.is_some() => Ok(None),
                Some(command) => Ok(Some(IdSource::Discover(command))),
                None if self.preset == Some(Preset::Lines) => Err(
                    "--preset lines reads one id per line of a listing: give it --discover CMD or --tests FILE".into(),
                ),
                None => Err("say where the test ids come from: --tests FILE, --tests - (stdin), --discover CMD or --preset RUNNER".into()),
            },
            _ => Err("give one source of test ids: --tests or --discover".into()),
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

impl Cli {
    /// `--events -`: stdout carries only the event stream.
    fn events_on_stdout(&self) -> bool {
        self.events.as_deref().is_some_and(|p| p.as_os_str() == "-")
    }

    fn event_sink(&self) -> Result<EventSink, String> {
        match &self.events {
            None => Ok(EventSink::none()),
            Some(path) => EventSink::open(path)
                .map_err(|e| format!("cannot write events to {}: {e}", path.display())),
        }
    }

    /// Prints a line for people: on stdout, unless stdout is the event stream.
    fn say(&self, text: impl std::fmt::Display) {
        if self.events_on_stdout() {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

/// The producer's settings, and the triage rules for the reports `--wait` writes.
/// `suite` names the suite when `--suite` does not (a rerun's).
fn settings(
    cli: &Cli,
    suite: Option<String>,
) -> Result<(ProducerSettings, Vec<TriageRule>), ConfigError> {
    let choices = Choices {
        preset: cli.preset,
        report_format: cli.report_format.clone(),
        batch: cli.batch.clone(),
        slots: cli.slots,
        order: cli.order,
    };
    let overrides = cli
        .overrides()
        .set("run.suite", cli.suite.clone().or(suite));
    ProducerSettings::from_config(&cli.common.load(overrides)?, &choices)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    testfleet_common::logging::init();
    if let Some(run_id) = cli.resume {
        return resume(&cli, run_id).await;
    }
    let rerun = match &cli.rerun {
        Some(run_id) => match resume::rerun_ids(&cli.report_dir, run_id) {
            Ok(rerun) => Some(rerun),
            Err(message) => return fail(PROGRAM, USAGE, message),
        },
        None => None,
    };
    let (settings, triage_rules) = match settings(&cli, rerun.as_ref().map(|(s, _)| s.clone())) {
        Ok(settings) => settings,
        Err(error) => return fail(PROGRAM, USAGE, error),
    };
    for expired in &settings.quarantine_expired {
        eprintln!("{PROGRAM}: warning: {expired}");
    }
    if let Some((_, ids)) = rerun {
        return match cli
            .selection()
            .map_err(|e| e.to_string())
            .and_then(|selection| ids::select(ids, &selection).map_err(|e| e.to_string()))
        {
            Ok(tests) => submit_and_wait(&cli, &settings, &triage_rules, tests).await,
            Err(message) => fail(PROGRAM, USAGE, message),
        };
    }
    let (source, selection) = match cli.id_source().and_then(|s| Ok((s, cli.selection()?))) {
        Ok(parts) => parts,
        Err(message) => return fail(PROGRAM, USAGE, message),
    };
    let separator = match (cli.preset, cli.null) {
        (Some(preset), _) => Separator::Preset(preset),
        (None, true) => Separator::Nul,
        (None, false) => Separator::Newline,
    };
    let tests = match source {
        Some(source) => {
            ids::collect(&source, separator, &selection).map_err(|e| (USAGE, e.to_string()))
        }
        None => listed_in_image(&cli, &settings, &selection).await,
    };
    let tests = match tests {
        Ok(tests) => tests,
        Err((code, error)) => return fail(PROGRAM, code, error),
    };
    submit_and_wait(&cli, &settings, &triage_rules, tests).await
}

/// Lists the tests (`--list`), or publishes the run and, with `--wait`,
/// follows it to its verdict.
async fn submit_and_wait(
    cli: &Cli,
    settings: &ProducerSettings,
    triage_rules: &[TriageRule],
    tests: Vec<String>,
) -> ExitCode {
    if cli.list {
        for id in &tests {
            println!("{id}");
        }
        return ExitCode::SUCCESS;
    }
    if tests.is_empty() && cli.rerun.is_some() {
        cli.say("every test of that run passed: nothing to run again");
        return ExitCode::SUCCESS;
    }
    // Opened before the run is published: a bad path is a usage error, not a
    // run nobody can follow.
    let mut sink = match cli.event_sink() {
        Ok(sink) => sink,
        Err(message) => return fail(PROGRAM, USAGE, message),
    };
    let compared;
    let settings = match &cli.compare {
        Some(run) => match compared_settings(cli, settings, run, &tests) {
            Ok(settings) => {
                compared = settings;
                &compared
            }
            Err(message) => return fail(PROGRAM, USAGE, message),
        },
        None => settings,
    };
    let submitted = match testfleet_producer::submit(settings, tests, cli.wait).await {
        Ok(submitted) => submitted,
        Err(error @ ProducerError::OutOfBounds(_)) => return fail(PROGRAM, USAGE, error),
        Err(error) => return fail(PROGRAM, INFRA, error),
    };
    if let Err(error) =
        resume::keep_run_token(&cli.report_dir, submitted.run_id, submitted.verdict_token)
    {
        // The run goes on; only a later --resume needs the token.
        eprintln!(
            "{PROGRAM}: could not keep the run's token under {}: {error}",
            cli.report_dir.display()
        );
    }
    follow_submitted(cli, settings, triage_rules, &submitted, &mut sink).await
}

/// The settings of a `--compare RUN` run of `tests`: the earlier run's
/// outcomes as the baseline.
fn compared_settings(
    cli: &Cli,
    settings: &ProducerSettings,
    run: &str,
    tests: &[String],
) -> Result<ProducerSettings, String> {
    let recorded = compare::recorded_baseline(&cli.report_dir, run, tests)?;
    let mut settings = settings.clone();
    settings
        .compare_with(recorded)
        .map_err(|error| error.to_string())?;
    Ok(settings)
}

/// `--resume RUN_ID`: the aggregator takes the run up again, and with
/// `--wait` this producer follows it to its verdict.
async fn resume(cli: &Cli, run_id: uuid::Uuid) -> ExitCode {
    let (settings, triage_rules) = match settings(cli, None) {
        Ok(settings) => settings,
        Err(error) => return fail(PROGRAM, USAGE, error),
    };
    let mut sink = match cli.event_sink() {
        Ok(sink) => sink,
        Err(message) => return fail(PROGRAM, USAGE, message),
    };
    let run_token = match cli.run_token {
        Some(token) => token,
        None => match resume::read_run_token(&cli.report_dir, run_id) {
            Ok(token) => token,
            Err(message) => return fail(PROGRAM, USAGE, message),
        },
    };
    let submitted = match resume::resume(&settings, run_id, run_token, cli.wait).await {
        Ok(submitted) => submitted,
        Err(error @ (ResumeError::Finished(_) | ResumeError::NotPermitted(_))) => {
            return fail(PROGRAM, USAGE, error)
        }
        Err(error) => return fail(PROGRAM, INFRA, error),
    };
    follow_submitted(cli, &settings, &triage_rules, &submitted, &mut sink).await
}

/// Says the run's id, and with `--wait` follows it to its verdict.
async fn follow_submitted(
    cli: &Cli,
    settings: &ProducerSettings,
    triage_rules: &[TriageRule],
    submitted: &Submitted,
    sink: &mut EventSink,
) -> ExitCode {
    cli.say(submitted.run_id);
    if !cli.wait {
        return ExitCode::SUCCESS;
    }
    sink.write(&ndjson::run_submitted(
        submitted.run_id,
        &settings.suite,
        submitted.tests,
        submitted.created_at_ms,
        submitted.deadline_ms,
    ));
    wait_and_report(cli, settings, triage_rules, submitted, sink).await
}

/// The ids the preset lists inside the run's image, through a worker.
async fn listed_in_image(
    cli: &Cli,
    settings: &ProducerSettings,
    selection: &Selection,
) -> Result<Vec<String>, (u8, String)> {
    let preset = cli.preset.expect("only a preset lists in the image");
    let timeout = Duration::from_millis(settings.spec.timeout_ms) + DISCOVERY_SLACK;
    let listing = match discovery::list_in_image(settings, preset, timeout).await {
        Ok(listing) => listing,
        Err(error @ DiscoveryError::Failed { .. }) => return Err((USAGE, error.to_string())),
        Err(error) => return Err((INFRA, error.to_string())),
    };
    ids::select(preset.parse(&listing), selection).map_err(|e| (USAGE, e.to_string()))
}

/// Follows the run to its verdict, then prints the summary, writes the reports
/// and ends the event stream with the verdict.
async fn wait_and_report(
    cli: &Cli,
    settings: &ProducerSettings,
    triage_rules: &[TriageRule],
    submitted: &Submitted,
    sink: &mut EventSink,
) -> ExitCode {
    eprintln!(
        "waiting for the verdict of run {} ({} tests)…",
        submitted.run_id, submitted.tests
    );
    let view = ProgressView::for_stderr(submitted.tests, cli.progress_every > 0);
    let watch = Watch {
        view: &view,
        sink,
        every: Duration::from_secs(cli.progress_every),
    };
    let report = match follow(settings, submitted, watch).await {
        Ok(report) => report,
        Err(error) => return fail(PROGRAM, INFRA, error),
    };
    cli.say(report::console_summary(&report));
    let paths = match report::write_all_with_rules(&report, &cli.report_dir, triage_rules) {
        Ok(paths) => {
            cli.say(format_args!("reports: {}", paths.dir.display()));
            cli.say(format_args!("html report: {}", paths.html.display()));
            Some(paths)
        }
        Err(error) => {
            eprintln!(
                "{PROGRAM}: could not write the reports to {}: {error}",
                cli.report_dir.display()
            );
            None
        }
    };
    append_step_summary(cli, &report, triage_rules);
    sink.write(&ndjson::verdict(&report, paths.as_ref(), now_ms()));
    ExitCode::from(report.verdict.exit_code() as u8)
}

/// In a GitHub Actions step (`GITHUB_STEP_SUMMARY` names a file), appends the
/// Markdown summary to the step's summary page. A failure is said, not fatal:
/// the verdict stands.
fn append_step_summary(
    cli: &Cli,
    report: &testfleet_types::messages::RunReport,
    rules: &[TriageRule],
) {
    let Some(path) = std::env::var_os(STEP_SUMMARY) else {
        return;
    };
    let summary = report::summary_markdown(report, rules);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, format!("{summary}\n").as_bytes())
        });
    match appended {
        Ok(()) => cli.say(format_args!("summary appended to {STEP_SUMMARY}")),
        Err(error) => eprintln!(
            "{PROGRAM}: could not append the summary to {} ({STEP_SUMMARY}): {error}",
            std::path::Path::new(&path).display()
        ),
    }
}
