//! `report.json`: the whole run report, every attempt included, for tools and
//! for anyone who needs what the shorter reports leave out. Its schema is
//! `docs/REPORT.md`'s, versioned by its `schema` field, and its types are
//! its own (`schema.rs`).

pub mod schema;

use std::io::{self, Write};
use std::marker::PhantomData;

use std::collections::HashMap;

use serde::{Serialize, Serializer};
use testfleet_types::messages::{Comparison, RunReport, TestReport};
use testfleet_types::sides::{self, Side};

/// The schema version `report.json` carries (`docs/REPORT.md`).
pub const SCHEMA: u32 = 2;

/// The report as pretty-printed JSON, ending with a newline.
pub fn render(report: &RunReport) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write(report, &mut bytes)?;
    Ok(bytes)
}

/// [`render`] into `out` as it goes: a big run's JSON is hundreds of MB, which
/// should not sit in memory beside the report it comes from, so its tests and
/// batches are converted one at a time as they are written.
pub fn write(report: &RunReport, mut out: impl Write) -> io::Result<()> {
    let document = schema::Report::of(
        report,
        Converted::<_, schema::Test>::new(&report.tests),
        Converted::<_, schema::Batch>::new(&report.batches),
        report
            .comparison
            .as_ref()
            .map(|comparison| ComparedSides::new(report, comparison)),
    );
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.write_all(b"\n")
}

/// A `report.json` as tools read it.
pub fn read(bytes: &[u8]) -> serde_json::Result<schema::Report> {
    serde_json::from_slice(bytes)
}

/// A list written as the document's type `To` of each item, converted as it
/// goes.
struct Converted<'a, From, To> {
    items: &'a [From],
    to: PhantomData<To>,
}

impl<'a, From, To> Converted<'a, From, To> {
    fn new(items: &'a [From]) -> Self {
        Converted {
            items,
            to: PhantomData,
        }
    }
}

impl<'a, From, To> Serialize for Converted<'a, From, To>
where
    To: Serialize + std::convert::From<&'a From>,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.iter().map(To::from))
    }
}

/// An A/B run's compared ids, each written with its sides' attempts as it
/// goes; the sides are found by id in the report's tests.
struct ComparedSides<'a> {
    comparison: &'a Comparison,
    tests: HashMap<&'a str, &'a TestReport>,
}

impl<'a> ComparedSides<'a> {
    fn new(report: &'a RunReport, comparison: &'a Comparison) -> Self {
        let tests = report.tests.iter().map(|t| (t.id.as_str(), t)).collect();
        ComparedSides { comparison, tests }
    }

    /// The sides of every compared id, found the same way for every caller.
    pub fn each(&self) -> impl Iterator<Item = schema::ComparedTest> + '_ {
        self.comparison.tests.iter().map(|test| {
            let side = |side| {
                let id = sides::side_id(side, &test.id);
                self.tests.get(id.as_str()).copied()
            };
            schema::ComparedTest::of(test, side(Side::Baseline), side(Side::Candidate))
        })
    }
}

impl Serialize for ComparedSides<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.each())
    }
}

/// An A/B run's compared ids with their sides' attempts, as `report.json`
/// writes them (tests and readers that want them whole).
pub fn compared_tests(report: &RunReport) -> Vec<schema::ComparedTest> {
    report
        .comparison
        .as_ref()
        .map_or_else(Vec::new, |comparison| {
            ComparedSides::new(report, comparison).each().collect()
        })
}

#[cfg(test)]
mod tests {
    use testfleet_types::messages::*;
    use uuid::Uuid;

    use super::*;
    use crate::fixture;

    /// The sample report with every optional part filled and nothing random.
    fn every_field() -> RunReport {
        let mut report = fixture::sample_report();
        report.run_id = Uuid::from_u128(1);
        report.spec.env.insert("TOKEN".into(), "<secret>".into());
        report.spec.secret_env = vec!["TOKEN".into()];
        report.spec.runner_report = Some(RunnerReport {
            format: ReportFormat::GoTestJson,
            ids: IdScheme::Go,
        });
        report.spec.container.nano_cpus = Some(500_000_000);
        report.spec.container.cap_add = vec!["NET_RAW".into()];
        report.spec.workdir = Some("/srv".into());
        report.spec.runtime = Some("crun".into());
        report.spec.user = Some("1000".into());
        report.spec.quiet_timeout_ms = Some(30_000);
        let infra = report.tests.iter_mut().find(|t| t.id == "infra-1").unwrap();
        infra.attempts[0].signature = Some(Signature {
            name: "no-space".into(),
            fleet_fault: true,
        });
        report.tests[0].attempts[0].batch = Some(Uuid::from_u128(2));
        report.tests[0].attempts[0].published_at_ms = Some(fixture::CREATED_AT_MS + 5);
        report.batches = vec![BatchRecord {
            id: Uuid::from_u128(2),
            run_id: report.run_id,
            attempt: 1,
            worker_id: "worker-a".into(),
            tests: 3,
            reported: 2,
            started_at_ms: fixture::CREATED_AT_MS + 10,
            command_started_at_ms: fixture::CREATED_AT_MS + 300,
            finished_at_ms: fixture::CREATED_AT_MS + 900,
            exit_code: Some(1),
            timed_out: false,
            log: Some("batch log\n".into()),
            log_truncated: true,
            split_into: 1,
            host_busy_permille: None,
        }];
        report.ignored_results = vec![IgnoredResult {
            test_id: "pass-1".into(),
            attempt: 1,
            worker_id: "worker-b".into(),
            started_at_ms: fixture::CREATED_AT_MS + 1,
            finished_at_ms: fixture::CREATED_AT_MS + 2,
            reason: IgnoredReason::Stale,
        }];
        report.verdict_cut = Some(VerdictCut {
            outputs_shortened: 1,
            output_bytes_cut: 2,
            passed_tests_left_out: 3,
            full_report: "host:/reports/x".into(),
            batch_logs_left_out: 4,
        });
        report.reports_error = Some("disk full".into());
        report.tests[2].quarantined = Some("broken upstream, #42".into());
        report.flakiness = Some(Flakiness {
            runs: 7,
            tests: vec![TestFlakiness {
                test_id: "flaky-1".into(),
                flaky: 3,
                failed: 1,
            }],
        });
        report
    }

    #[test]
    fn round_trips_with_every_attempt() {
        let report = every_field();
        let bytes = render(&report).unwrap();
        let back = read(&bytes).unwrap();
        let tests = report.tests.iter().map(schema::Test::from).collect();
        let batches = report.batches.iter().map(schema::Batch::from).collect();
        let compared = report.comparison.as_ref().map(|_| compared_tests(&report));
        assert_eq!(back, schema::Report::of(&report, tests, batches, compared));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"DeadLettered\""));
        assert!(text.starts_with("{\n  \"schema\": 2,"), "versioned first");
        assert!(text.contains("\"deliveries\": 5"));
        assert!(text.contains("first try"), "earlier attempts are kept");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn an_ab_run_compares_every_id_with_both_sides_attempts() {
        let report = fixture::ab_report();
        let text = String::from_utf8(render(&report).unwrap()).unwrap();
        assert!(text.contains("\"class\": \"regressed\""), "{text}");
        let comparison = read(text.as_bytes()).unwrap().comparison.unwrap();
        assert_eq!(comparison.baseline_image, "testfleet/busybox:old");
        let counts = comparison.counts;
        assert_eq!(
            (
                counts.regressed,
                counts.fixed,
                counts.failing,
                counts.passing
            ),
            (1, 1, 1, 1)
        );
        let regressed = &comparison.tests[0];
        assert_eq!(
            (regressed.id.as_str(), regressed.class, regressed.confirmed),
            ("lib-user", schema::Class::Regressed, true)
        );
        assert_eq!(
            (regressed.baseline.len(), regressed.candidate.len()),
            (3, 3)
        );
        let failed = &regressed.candidate[2];
        assert_eq!(failed.reason.as_deref(), Some("exit:1"));
        assert_eq!(failed.output, None, "outputs are under tests, once");
    }

    /// Schema 2 as it was written when the document was the message type
    /// itself (the types of its own changed nothing a tool reads), with the
    /// fields added since (`quarantined`, `flakiness`, an attempt's `reason`
    /// and `fleet_fault`, the spec's `quiet_timeout_ms`).
    #[test]
    fn every_field_is_written_as_schema_2_has_it() {
        let written = String::from_utf8(render(&every_field()).unwrap()).unwrap();
        assert_eq!(written, include_str!("golden.json"));
    }
}
