//! The NDJSON event stream of `--events`: one JSON object per line, in the
//! schema documented in `docs/EVENTS.md`, and the sink lines are written to.
//!
//! The schema is this crate's own, not the wire's: wire types may change with
//! the format version, while these lines stay stable within a schema version.

use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::path::Path;

use serde::Serialize;
use testfleet_report::ReportPaths;
use testfleet_types::messages::{
    AttemptStatus, FinalStatus, RoundCounts, RunEvent, RunEventKind, RunReport, VerdictKind,
};
use time::OffsetDateTime;
use tracing::warn;
use uuid::Uuid;

/// The `schema` field of every line. Bumped only when a field changes meaning
/// or disappears; new fields and new event kinds do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// What every line carries, then the event's own fields.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema: u32,
    event: &'static str,
    run_id: Uuid,
    /// RFC 3339, UTC, when the publisher saw it happen.
    time: String,
    #[serde(flatten)]
    fields: &'a T,
}

#[derive(Serialize)]
struct RunSubmitted<'a> {
    suite: &'a str,
    tests: usize,
    deadline: String,
}

#[derive(Serialize)]
struct TestStarted<'a> {
    test: &'a str,
    attempt: u32,
    worker: &'a str,
}

#[derive(Serialize)]
struct TestFinished<'a> {
    test: &'a str,
    attempt: u32,
    outcome: &'static str,
    duration_ms: u64,
    exit_code: Option<i64>,
    worker: Option<&'a str>,
}

#[derive(Serialize)]
struct TestRetried<'a> {
    test: &'a str,
    attempt: u32,
    round: u32,
}

#[derive(Serialize)]
struct RoundClosed {
    round: u32,
    passed: u32,
    failed: u32,
    timed_out: u32,
    error: u32,
    missing: u32,
    dead_lettered: u32,
    retrying: u32,
}

#[derive(Serialize)]
struct Verdict {
    verdict: &'static str,
    exit_code: i32,
    rounds: u32,
    tests: usize,
    passed: usize,
    flaky: usize,
    failed: usize,
    timed_out: usize,
    error: usize,
    missing: usize,
    dead_lettered: usize,
    /// Where the producer wrote the reports; null if it could not.
    reports: Option<Reports>,
}

#[derive(Serialize)]
struct Reports {
    dir: String,
    json: String,
    junit: String,
    markdown: String,
    html: String,
    outputs: String,
}

/// The first line: the run exists and the broker has its jobs.
pub fn run_submitted(
    run_id: Uuid,
    suite: &str,
    tests: usize,
    at_ms: u64,
    deadline_ms: u64,
) -> String {
    let fields = RunSubmitted {
        suite,
        tests,
        deadline: rfc3339(deadline_ms),
    };
    line("run_submitted", run_id, at_ms, &fields)
}

/// A line for an event from the broker.
pub fn run_event(event: &RunEvent) -> String {
    let (id, at) = (event.run_id, event.at_ms);
    match &event.kind {
        RunEventKind::TestStarted {
            test_id,
            attempt,
            worker_id,
        } => {
            let fields = TestStarted {
                test: test_id,
                attempt: *attempt,
                worker: worker_id,
            };
            line("test_started", id, at, &fields)
        }
        RunEventKind::TestFinished {
            test_id,
            attempt,
            status,
            duration_ms,
            exit_code,
            worker_id,
        } => {
            let fields = TestFinished {
                test: test_id,
                attempt: *attempt,
                outcome: outcome_name(*status),
                duration_ms: *duration_ms,
                exit_code: *exit_code,
                worker: worker_id.as_deref(),
            };
            line("test_finished", id, at, &fields)
        }
        RunEventKind::TestRetried { test_id, attempt } => {
            let fields = TestRetried {
                test: test_id,
                attempt: *attempt,
                round: *attempt,
            };
            line("test_retried", id, at, &fields)
        }
        RunEventKind::RoundClosed {
            round,
            counts,
            retrying,
        } => line(
            "round_closed",
            id,
            at,
            &round_closed(*round, counts, *retrying),
        ),
    }
}

fn round_closed(round: u32, counts: &RoundCounts, retrying: u32) -> RoundClosed {
    RoundClosed {
        round,
        passed: counts.passed,
        failed: counts.failed,
        timed_out: counts.timed_out,
        error: counts.error,
        missing: counts.missing,
        dead_lettered: counts.dead_lettered,
        retrying,
    }
}

/// The last line: the verdict, its counts and where the reports are.
pub fn verdict(report: &RunReport, paths: Option<&ReportPaths>, at_ms: u64) -> String {
    let fields = Verdict {
        verdict: verdict_name(report.verdict),
        exit_code: report.verdict.exit_code(),
        rounds: report.rounds,
        tests: report.tests.len(),
        passed: report.count(FinalStatus::Passed),
        flaky: report.count(FinalStatus::Flaky),
        failed: report.count(FinalStatus::Failed),
        timed_out: report.count(FinalStatus::TimedOut),
        error: report.count(FinalStatus::Error),
        missing: report.count(FinalStatus::Missing),
        dead_lettered: report.count(FinalStatus::DeadLettered),
        reports: paths.map(|p| Reports {
            dir: p.dir.display().to_string(),
            json: p.json.display().to_string(),
            junit: p.junit.display().to_string(),
            markdown: p.markdown.display().to_string(),
            html: p.html.display().to_string(),
            outputs: p.outputs.display().to_string(),
        }),
    };
    line("verdict", report.run_id, at_ms, &fields)
}

fn line<T: Serialize>(event: &'static str, run_id: Uuid, at_ms: u64, fields: &T) -> String {
    let line = Line {
        schema: SCHEMA_VERSION,
        event,
        run_id,
        time: rfc3339(at_ms),
        fields,
    };
    serde_json::to_string(&line).expect("event lines always serialize")
}

/// RFC 3339 in UTC with exactly three fraction digits, so lines line up.
fn rfc3339(ms: u64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp((ms / 1000) as i64) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms % 1000
    )
}

/// The stable names of attempt outcomes in the stream (the vocabulary's).
pub fn outcome_name(status: AttemptStatus) -> &'static str {
    status.name()
}

fn verdict_name(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Passed => "passed",
        VerdictKind::TestsFailed => "tests_failed",
        VerdictKind::TooManyFailures => "too_many_failures",
        VerdictKind::TestsMissing => "tests_missing",
    }
}

/// Where `--events` lines go. A write that fails (a full disk, a reader that
/// closed the pipe) is reported once and stops the stream, never the run.
pub struct EventSink {
    out: Option<Box<dyn Write + Send>>,
}

impl EventSink {
    /// `-` is stdout; anything else a file, created or truncated.
    pub fn open(target: &Path) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target.as_os_str() == "-" {
            Box::new(LineWriter::new(io::stdout()))
        } else {
            Box::new(LineWriter::new(File::create(target)?))
        };
        Ok(EventSink { out: Some(out) })
    }

    /// A sink that drops every line (no `--events`).
    pub fn none() -> Self {
        EventSink { out: None }
    }

    /// Writes one line and flushes it, so that a follower sees it now.
    pub fn write(&mut self, line: &str) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            warn!(%error, "cannot write run events any more; the run goes on");
            self.out = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::{json, Value};
    use testfleet_types::messages::Outcome;

    use super::*;

    const RUN: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    const RUN_TEXT: &str = "01234567-89ab-cdef-0123-456789abcdef";
    /// 2024-01-02T03:04:05.678Z
    const AT: u64 = 1_704_164_645_678;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(line).unwrap()
    }

    fn event(kind: RunEventKind) -> Value {
        parse(&run_event(&RunEvent {
            run_id: RUN,
            at_ms: AT,
            kind,
        }))
    }

    #[test]
    fn every_line_starts_with_the_common_fields() {
        let line = event(RunEventKind::TestStarted {
            test_id: "t\n\"x\"".into(),
            attempt: 2,
            worker_id: "w1".into(),
        });
        assert_eq!(
            line,
            json!({
                "schema": 1,
                "event": "test_started",
                "run_id": RUN_TEXT,
                "time": "2024-01-02T03:04:05.678Z",
                "test": "t\n\"x\"",
                "attempt": 2,
                "worker": "w1",
            })
        );
    }

    #[test]
    fn a_finished_line_names_its_outcome() {
        let line = event(RunEventKind::TestFinished {
            test_id: "t".into(),
            attempt: 1,
            status: AttemptStatus::DeadLettered { deliveries: 5 },
            duration_ms: 0,
            exit_code: None,
            worker_id: None,
        });
        assert_eq!(line["event"], "test_finished");
        assert_eq!(line["outcome"], "dead_lettered");
        assert_eq!(line["exit_code"], Value::Null);
        assert_eq!(line["worker"], Value::Null);
        let timed_out = event(RunEventKind::TestFinished {
            test_id: "t".into(),
            attempt: 3,
            status: AttemptStatus::Ran(Outcome::TimedOut),
            duration_ms: 2001,
            exit_code: None,
            worker_id: Some("w".into()),
        });
        assert_eq!(
            (&timed_out["outcome"], &timed_out["duration_ms"]),
            (&json!("timed_out"), &json!(2001))
        );
    }

    #[test]
    fn retried_and_round_lines_carry_their_round() {
        let retried = event(RunEventKind::TestRetried {
            test_id: "t".into(),
            attempt: 2,
        });
        assert_eq!(
            (&retried["attempt"], &retried["round"]),
            (&json!(2), &json!(2))
        );
        let round = event(RunEventKind::RoundClosed {
            round: 1,
            counts: RoundCounts {
                passed: 8,
                failed: 1,
                missing: 1,
                ..RoundCounts::default()
            },
            retrying: 2,
        });
        assert_eq!(round["event"], "round_closed");
        for (field, value) in [
            ("round", 1),
            ("passed", 8),
            ("failed", 1),
            ("timed_out", 0),
            ("missing", 1),
            ("retrying", 2),
        ] {
            assert_eq!(round[field], value, "{field}");
        }
    }

    #[test]
    fn the_verdict_line_has_counts_exit_code_and_report_paths() {
        let report = RunReport {
            run_id: RUN,
            suite: "s".into(),
            created_at_ms: 0,
            finished_at_ms: 1,
            rounds: 2,
            verdict: VerdictKind::TestsFailed,
            spec: testfleet_common::config::default_spec(),
            tests: [FinalStatus::Passed, FinalStatus::Flaky, FinalStatus::Failed]
                .into_iter()
                .enumerate()
                .map(|(i, status)| testfleet_types::messages::TestReport {
                    id: format!("t{i}"),
                    status,
                    attempts: vec![],
                    quarantined: None,
                })
                .collect(),
            verdict_cut: None,
            ignored_results: Vec::new(),
            batches: Vec::new(),
            reports_error: None,
            flakiness: None,
            comparison: None,
            cache: None,
        };
        let paths = ReportPaths {
            dir: PathBuf::from("r/x"),
            json: PathBuf::from("r/x/report.json"),
            junit: PathBuf::from("r/x/junit.xml"),
            markdown: PathBuf::from("r/x/summary.md"),
            html: PathBuf::from("r/x/report.html"),
            outputs: PathBuf::from("r/x/outputs"),
        };
        let line = parse(&verdict(&report, Some(&paths), AT));
        assert_eq!(line["event"], "verdict");
        assert_eq!(line["verdict"], "tests_failed");
        assert_eq!(line["exit_code"], 1);
        assert_eq!(
            (
                &line["tests"],
                &line["passed"],
                &line["flaky"],
                &line["failed"]
            ),
            (&json!(3), &json!(1), &json!(1), &json!(1))
        );
        assert_eq!(line["reports"]["json"], "r/x/report.json");
        assert_eq!(line["reports"]["html"], "r/x/report.html");
        let without = parse(&verdict(&report, None, AT));
        assert_eq!(without["reports"], Value::Null);
    }

    #[test]
    fn the_first_line_says_how_many_tests_and_until_when() {
        let line = parse(&run_submitted(RUN, "suite", 30, AT, AT + 322));
        assert_eq!(line["event"], "run_submitted");
        assert_eq!(line["tests"], 30);
        assert_eq!(line["deadline"], "2024-01-02T03:04:06.000Z", "three digits");
    }

    #[test]
    fn a_sink_that_cannot_write_stops_quietly() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = EventSink {
            out: Some(Box::new(Broken)),
        };
        sink.write("{}");
        assert!(sink.out.is_none(), "a failed write closes the sink");
        sink.write("{}");
    }
}
