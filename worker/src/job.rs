//! What every executor shares, and nothing executor-specific: the job's argv
//! and environment, where its command finds its ids and writes its report,
//! how a command ended ([`Ran`]), what an executor observed ([`Observed`]),
//! why a job goes back to the queue ([`Requeue`]), and collecting output.
//!
//! A leaf: the executors (`docker`, `process`) import this module, and it
//! imports neither of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testfleet_types::messages::{Job, Outcome, ReportFormat, RuntimeReason};
use tokio::task::JoinHandle;

use crate::capture::OutputCapture;

/// Why a job could not be run here and must go back to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Requeue {
    /// The engine's error, in the message (not also a `source`).
    #[error("docker engine unreachable: {0}")]
    EngineUnreachable(bollard::errors::Error),
    #[error("the worker is shutting down")]
    Interrupted,
}

/// How a job's command ended: what both executors report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    /// What the runtime saw end it, when it did not pass.
    pub reason: Option<RuntimeReason>,
}

impl Ran {
    /// A command that exited with `code`. A code of 128 + n is a death by
    /// signal n, as a shell and the Docker engine report one.
    pub fn exited(code: i64) -> Ran {
        let reason = match code {
            0 => None,
            129..=192 => Some(RuntimeReason::Signal((code - 128) as u8)),
            _ => Some(RuntimeReason::Exit),
        };
        Ran {
            outcome: Outcome::from_exit_code(code),
            exit_code: Some(code),
            message: None,
            reason,
        }
    }
}

pub fn timed_out(timeout: Duration) -> Ran {
    Ran {
        outcome: Outcome::TimedOut,
        exit_code: None,
        message: Some(format!("killed after the {timeout:?} timeout")),
        reason: Some(RuntimeReason::Timeout),
    }
}

/// Killed for memory with no limit of its own: the host ran out, which says
/// nothing of the test, so it is the fleet's error (retried, not counted).
pub fn host_out_of_memory(exit_code: Option<i64>) -> Ran {
    Ran {
        outcome: Outcome::Error,
        exit_code,
        message: Some("killed for memory: the host ran out (no limit of its own)".into()),
        reason: Some(RuntimeReason::HostOom),
    }
}

/// Killed after `quiet` without a byte of output (`run.quiet_timeout_secs`).
pub fn no_output(quiet: Duration) -> Ran {
    Ran {
        outcome: Outcome::TimedOut,
        exit_code: None,
        message: Some(format!("killed after {quiet:?} without output")),
        reason: Some(RuntimeReason::NoOutputTimeout),
    }
}

pub fn error_outcome(message: String) -> Ran {
    Ran {
        outcome: Outcome::Error,
        exit_code: None,
        message: Some(message),
        reason: None,
    }
}

/// When a command last wrote output, in ms since its start: the output
/// readers touch it, the executors wait on [`LastOutput::quiet_for`].
#[derive(Debug, Clone)]
pub struct LastOutput {
    at_ms: Arc<AtomicU64>,
    since: tokio::time::Instant,
}

impl LastOutput {
    /// Output counted from now.
    pub fn start() -> Self {
        LastOutput {
            at_ms: Arc::new(AtomicU64::new(0)),
            since: tokio::time::Instant::now(),
        }
    }

    /// Output came now.
    pub fn touch(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.at_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Ends once `quiet` passed without output; pending for ever with `None`.
    pub async fn quiet_for(&self, quiet: Option<Duration>) {
        let Some(quiet) = quiet else {
            return std::future::pending().await;
        };
        loop {
            let last = self.at_ms.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.since + Duration::from_millis(last) + quiet).await;
            if self.at_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// What an executor observed running a job's command once.
#[derive(Debug)]
pub struct Observed {
    pub ran: Ran,
    /// The command's output (stdout and stderr interleaved), capped; `None`
    /// when the command never started.
    pub output: Option<OutputCapture>,
    /// The runner's report, as the command left it at `{report}`; `None` when
    /// the job reads none or the command wrote none.
    pub report: Option<Vec<u8>>,
    /// Wall clock when the job started, and when its command started (after
    /// the container was created and started, or the process spawned).
    pub started_at_ms: u64,
    pub command_started_at_ms: u64,
    /// Monotonic clock when the job started, for its duration.
    pub clock: tokio::time::Instant,
}

/// Work kept off a job's critical path, run after its job is acked, in the
/// job's own task (which a draining worker still awaits): removing a passed
/// test's container, say.
pub struct Cleanup(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Cleanup {
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Cleanup(Box::pin(work))
    }

    pub async fn run(self) {
        self.0.await
    }
}

/// Where a job's command finds its ids and writes its report, as paths the
/// command sees (inside the container, or on the worker's host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// A file with the job's ids, one per line (`{ids_file}`).
    pub ids_file: String,
    /// Where the runner writes its report (`{report}`).
    pub report: String,
}

/// The job's argv; never a shell line. Inside each element `{id}` becomes the
/// first (for a job of one, the only) test id the command runs
/// (`JobTest::command_id`: an A/B run's `base::X` runs `X`), `{report}` and `{ids_file}`
/// the paths, and `{ids_regex}` an anchored regex of the ids
/// (`^(TestA|TestB)$`, each escaped, for `go test -run`). An element that is
/// exactly `{ids}` becomes one element per id.
pub fn argv(job: &Job, paths: &Paths) -> Vec<String> {
    let first = job.command_ids().next().unwrap_or_default();
    let regex = ids_regex(job);
    let mut argv = Vec::with_capacity(job.spec.command.len() + job.tests.len());
    for element in &job.spec.command {
        if element == "{ids}" {
            argv.extend(job.command_ids().map(str::to_owned));
            continue;
        }
        argv.push(
            element
                .replace("{id}", first)
                .replace("{report}", &paths.report)
                .replace("{ids_file}", &paths.ids_file)
                .replace("{ids_regex}", &regex),
        );
    }
    argv
}

/// Whether the command needs its files (an ids file, a report folder): a
/// batch, or a command that names them.
pub fn needs_files(job: &Job) -> bool {
    job.tests.len() > 1
        || job
            .spec
            .command
            .iter()
            .any(|a| a.contains("{report}") || a.contains("{ids_file}"))
}

/// The report's file name, by its format.
pub fn report_file_name(job: &Job) -> &'static str {
    match job.spec.runner_report.map(|r| r.format) {
        Some(ReportFormat::Junit) | None => "report.xml",
        Some(ReportFormat::GoTestJson | ReportFormat::Jsonl) => "report.jsonl",
        Some(ReportFormat::RspecJson) => "report.json",
    }
}

fn ids_regex(job: &Job) -> String {
    let alternatives: Vec<String> = job.command_ids().map(regex_escape).collect();
    format!("^({})$", alternatives.join("|"))
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The ids file's contents: one id per line.
pub fn ids_file_contents(job: &Job) -> String {
    job.command_ids().map(|id| format!("{id}\n")).collect()
}

/// The variables a test gets on top of its executor's: the spec's, then the
/// ones naming the job's tests and files.
pub fn test_env(job: &Job, paths: &Paths) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = job
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push((
        "TEST_ID".into(),
        job.command_ids().next().unwrap_or_default().to_owned(),
    ));
    env.push(("TESTFLEET_RUN_ID".into(), job.run_id.to_string()));
    env.push(("TESTFLEET_ATTEMPT".into(), job.attempt.to_string()));
    env.push(("TESTFLEET_TESTS".into(), job.tests.len().to_string()));
    env.push(("TESTFLEET_IDS_FILE".into(), paths.ids_file.clone()));
    env.push(("TESTFLEET_REPORT".into(), paths.report.clone()));
    env
}

/// The output a reader task captured, waiting at most `drain` for it to end;
/// past that (or if the task failed) a capture that says so, with `lost`.
pub async fn collect_output(
    reader: JoinHandle<OutputCapture>,
    drain: Duration,
    lost: &str,
) -> OutputCapture {
    match tokio::time::timeout(drain, reader).await {
        Ok(Ok(capture)) => capture,
        Ok(Err(_)) | Err(_) => {
            let mut capture = OutputCapture::new(256);
            capture.push(format!("[testfleet: {lost}]").as_bytes());
            capture
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use testfleet_types::messages::JobTest;

    fn job(ids: &[&str], command: &[&str]) -> Job {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = command.iter().map(|s| s.to_string()).collect();
        spec.env = BTreeMap::from([("K".into(), "v".into())]);
        Job {
            run_id: uuid::Uuid::nil(),
            tests: ids
                .iter()
                .map(|id| JobTest {
                    id: id.to_string(),
                    allowance_ms: 1,
                    command_id: None,
                })
                .collect(),
            attempt: 2,
            deadline_ms: 0,
            spec,
            published_at_ms: 0,
            queue: Default::default(),
        }
    }

    fn paths() -> Paths {
        Paths {
            ids_file: "/tf/ids".into(),
            report: "/tf/report/r.xml".into(),
        }
    }

    #[test]
    fn a_sides_job_gives_its_command_the_plain_ids() {
        let mut job = job(
            &["base::a", "base::b"],
            &["run", "{id}", "{ids}", "{ids_regex}"],
        );
        for test in &mut job.tests {
            test.command_id = Some(test.id["base::".len()..].to_owned());
        }
        assert_eq!(argv(&job, &paths()), ["run", "a", "a", "b", "^(a|b)$"]);
        assert_eq!(ids_file_contents(&job), "a\nb\n");
        let env = test_env(&job, &paths());
        assert!(env.contains(&("TEST_ID".into(), "a".into())));
    }

    #[test]
    fn the_id_goes_into_argv_verbatim() {
        let id = "a b'\"; $(rm -rf /) `x` {id}\n✓";
        assert_eq!(
            argv(&job(&[id], &["run", "--test={id}", "{id}{id}"]), &paths()),
            vec![
                "run".to_owned(),
                format!("--test={id}"),
                format!("{id}{id}")
            ]
        );
    }

    #[test]
    fn ids_expand_to_one_element_each_and_paths_are_filled_in() {
        let job = job(
            &["t/a.py::x[1 2]", "b"],
            &["pytest", "--junitxml={report}", "{ids}", "@{ids_file}"],
        );
        assert_eq!(
            argv(&job, &paths()),
            [
                "pytest",
                "--junitxml=/tf/report/r.xml",
                "t/a.py::x[1 2]",
                "b",
                "@/tf/ids"
            ]
        );
        assert_eq!(ids_file_contents(&job), "t/a.py::x[1 2]\nb\n");
    }

    #[test]
    fn the_ids_regex_matches_exactly_the_ids() {
        let job = job(
            &["TestA", "TestB.c(d)"],
            &["go", "test", "-run", "{ids_regex}"],
        );
        assert_eq!(argv(&job, &paths())[3], r"^(TestA|TestB\.c\(d\))$");
    }

    #[test]
    fn environment_names_the_tests_and_files() {
        let env = test_env(&job(&["t1", "t2"], &["x"]), &paths());
        for (key, value) in [
            ("K", "v"),
            ("TEST_ID", "t1"),
            ("TESTFLEET_ATTEMPT", "2"),
            ("TESTFLEET_TESTS", "2"),
            ("TESTFLEET_IDS_FILE", "/tf/ids"),
            ("TESTFLEET_REPORT", "/tf/report/r.xml"),
            ("TESTFLEET_RUN_ID", "00000000-0000-0000-0000-000000000000"),
        ] {
            assert!(
                env.contains(&(key.to_owned(), value.to_owned())),
                "{key}={value} in {env:?}"
            );
        }
    }
}
