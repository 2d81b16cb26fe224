//! Runs taken up again: `--resume RUN_ID` continues a run under its own id
//! (the aggregator queues again the open round's tests without a result,
//! and the verdict covers every test), and `--rerun RUN_ID` runs again, as
//! a new run, the tests of a finished run that did not pass, read from its
//! `report.json`.

use std::path::Path;
use std::time::Duration;

use testfleet_common::broker::{self, BrokerError};
use testfleet_report::json::{self, schema};
use testfleet_types::codec::WireError;
use testfleet_types::messages::{Body, ResumeOutcome, ResumeRequest};
use testfleet_types::now_ms;
use tracing::info;
use uuid::Uuid;

use crate::settings::ProducerSettings;
use crate::submit::{verdict_queue_expiry, Submitted};

/// How long the aggregator may take to answer a resume request: it journals
/// the resumption and queues the tests before it answers.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("no aggregator answered within {0:?}: is one running on this prefix?")]
    NoAnswer(Duration),
    #[error(
        "run {0} has finished: its verdict is out; to run its failing tests again, use --rerun {0}"
    )]
    Finished(Uuid),
    #[error("the aggregator does not know run {0}: it never heard of it, or the journal that held it is gone")]
    Unknown(Uuid),
    #[error("the aggregator's answer is unreadable: {0}")]
    Unreadable(#[from] WireError),
    #[error("the request did not carry run {0}'s token: only who submitted it may resume it (its token is kept in run.token beside its reports; --run-token)")]
    NotPermitted(Uuid),
}

/// Asks the aggregator to resume `run_id`, and with `wait` makes a verdict
/// queue of this producer's own first, so that the verdict cannot be missed.
/// `run_token` is the run's own secret, which only the producer that
/// submitted it knew (see [`read_run_token`]).
pub async fn resume(
    settings: &ProducerSettings,
    run_id: Uuid,
    run_token: Uuid,
    wait: bool,
) -> Result<Submitted, ResumeError> {
    let mut brokers = settings.brokers.clone();
    let connection = broker::connect(&mut brokers, Some(settings.connect_timeout)).await?;
    let resumed = ask(&connection, settings, run_id, run_token, wait).await;
    broker::close(&connection, "run resumed").await;
    resumed
}

async fn ask(
    connection: &lapin::Connection,
    settings: &ProducerSettings,
    run_id: Uuid,
    run_token: Uuid,
    wait: bool,
) -> Result<Submitted, ResumeError> {
    let topology = &settings.topology;
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::from)?;
    broker::declare(&channel, topology).await?;
    let verdict_token = Uuid::new_v4();
    let deadline_ms = now_ms() + settings.deadline.as_millis() as u64;
    let verdict_queue = match wait {
        true => {
            let listener = verdict_token.simple().to_string();
            topology
                .declare_verdict_queue(
                    &channel,
                    &run_id.to_string(),
                    Some(&listener),
                    verdict_queue_expiry(settings),
                )
                .await
                .map_err(BrokerError::from)?
        }
        false => topology.verdict_queue(&run_id.to_string()),
    };
    let _ = channel.close(200, "declared".into()).await;
    let request = Body::Resume(ResumeRequest {
        run_id,
        deadline_ms,
        verdict_token,
        run_token,
    });
    let answer = broker::request(connection, &topology.history, &request, RESUME_TIMEOUT)
        .await?
        .ok_or(ResumeError::NoAnswer(RESUME_TIMEOUT))?;
    let outcome = match answer {
        Body::Resumed(answer) if answer.run_id == run_id => answer.outcome,
        other => {
            let found = other.kind();
            return Err(WireError::WrongKind {
                expected: "resumed",
                found,
            }
            .into());
        }
    };
    match outcome {
        ResumeOutcome::Resumed {
            tests,
            queued,
            round,
            deadline_ms,
        } => {
            info!(run = %run_id, tests, queued, round, "run resumed");
            Ok(Submitted {
                run_id,
                verdict_token,
                tests: tests as usize,
                created_at_ms: now_ms(),
                deadline_ms,
                verdict_queue,
            })
        }
        ResumeOutcome::Finished => Err(ResumeError::Finished(run_id)),
        ResumeOutcome::Unknown => Err(ResumeError::Unknown(run_id)),
        ResumeOutcome::NotPermitted => Err(ResumeError::NotPermitted(run_id)),
    }
}

/// Where a producer keeps a run's token, beside its reports: the token
/// proves a later `--resume` speaks for the run's owner.
pub fn run_token_path(report_dir: &Path, run_id: Uuid) -> std::path::PathBuf {
    report_dir.join(run_id.to_string()).join("run.token")
}

/// Keeps `token` for `run_id` under `report_dir`, readable by this user
/// alone.
pub fn keep_run_token(report_dir: &Path, run_id: Uuid, token: Uuid) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = run_token_path(report_dir, run_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(file, "{token}")
}

/// The run's token as its producer kept it under `report_dir`.
pub fn read_run_token(report_dir: &Path, run_id: Uuid) -> Result<Uuid, String> {
    let path = run_token_path(report_dir, run_id);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        format!(
            "no token of run {run_id} at {}: {error} (give --report-dir where its producer kept it, or --run-token)",
            path.display()
        )
    })?;
    Uuid::parse_str(text.trim())
        .map_err(|error| format!("{} holds no token: {error}", path.display()))
}

/// The `report.json` at `path`, of run `run`, read and parsed; the error
/// says which and why.
pub fn read_report(path: &Path, run: &str) -> Result<schema::Report, String> {
    let bytes = std::fs::read(path).map_err(|error| {
        format!(
            "no report of run {run} at {}: {error} (give --report-dir where its reports are)",
            path.display()
        )
    })?;
    json::read(&bytes)
        .map_err(|error| format!("{} is not a testfleet report: {error}", path.display()))
}

/// A finished run's tests that did not pass, as its `report.json` under
/// `report_dir` lists them, in its order, with its suite's name. Of an A/B
/// run, the plain ids whose sides differed or could not be compared
/// (regressed, fixed, flaky, infra): what differed, run again.
pub fn rerun_ids(report_dir: &Path, run_id: &str) -> Result<(String, Vec<String>), String> {
    let report = read_report(&report_dir.join(run_id).join("report.json"), run_id)?;
    if let Some(comparison) = report.comparison {
        let differed = comparison
            .tests
            .into_iter()
            .filter(|test| !matches!(test.class, schema::Class::Passing | schema::Class::Failing))
            .map(|test| test.id)
            .collect();
        return Ok((report.suite, differed));
    }
    let ids = report
        .tests
        .into_iter()
        .filter(|test| {
            !matches!(
                test.status,
                schema::TestStatus::Passed | schema::TestStatus::Flaky
            )
        })
        .map(|test| test.id)
        .collect();
    Ok((report.suite, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rerun_takes_the_tests_that_did_not_pass_in_order() {
        let dir = std::env::temp_dir().join(format!("tf-rerun-{}", Uuid::new_v4()));
        let run = "0b6e";
        std::fs::create_dir_all(dir.join(run)).unwrap();
        let report = include_str!("../../report/src/json/golden.json");
        std::fs::write(dir.join(run).join("report.json"), report).unwrap();
        let (suite, ids) = rerun_ids(&dir, run).unwrap();
        assert_eq!(suite, "smoke");
        assert_eq!(ids[0], "fail-1");
        assert!(!ids.iter().any(|id| id == "pass-1" || id == "flaky-1"));
        assert!(
            ids.iter().any(|id| id == "gone-1"),
            "missing tests run again"
        );
        let error = rerun_ids(&dir, "nope").unwrap_err();
        assert!(error.contains("--report-dir"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
