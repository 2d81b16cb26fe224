//! `--compare RUN`: the baseline of an A/B run read from an earlier run's
//! `report.json` instead of run again: each id's attempts there, in the
//! order of this run's ids. The earlier run may itself be an A/B run, whose
//! candidate is then the baseline.

use std::collections::HashMap;
use std::path::Path;

use testfleet_report::json::schema;
use testfleet_types::limits::MAX_RECORDED_ATTEMPTS;
use testfleet_types::messages::{Outcome, RecordedSide};
use testfleet_types::sides::{self, Side};

/// The earlier run's outcomes of each of `ids`, from `run`: a path to a
/// `report.json`, or a run id whose report is under `report_dir`.
pub fn recorded_baseline(
    report_dir: &Path,
    run: &str,
    ids: &[String],
) -> Result<RecordedSide, String> {
    let path = match Path::new(run) {
        file if file.is_file() => file.to_owned(),
        _ => report_dir.join(run).join("report.json"),
    };
    let report = crate::resume::read_report(&path, run)?;
    if let Some(cut) = report
        .verdict_cut
        .as_ref()
        .filter(|c| c.passed_tests_left_out > 0)
    {
        // Its passed tests would compare as ids it never had.
        return Err(format!(
            "{} leaves out {} passed tests to fit the verdict message: compare with the aggregator's full report, {}",
            path.display(),
            cut.passed_tests_left_out,
            cut.full_report
        ));
    }
    let earlier = earlier_outcomes(report.tests, report.comparison.is_some());
    Ok(RecordedSide {
        run: run.to_owned(),
        outcomes: ids
            .iter()
            .map(|id| earlier.get(id.as_str()).cloned().unwrap_or_default())
            .collect(),
    })
}

/// Each id's attempts as outcomes (the fleet's error for what was missing
/// or dead-lettered), the last [`MAX_RECORDED_ATTEMPTS`]; of an A/B run,
/// its candidates' under their plain ids.
fn earlier_outcomes(tests: Vec<schema::Test>, compared: bool) -> HashMap<String, Vec<Outcome>> {
    tests
        .into_iter()
        .filter_map(|test| {
            let id = match (compared, sides::split(&test.id)) {
                (false, _) => test.id.clone(),
                (true, Some((Side::Candidate, plain))) => plain.to_owned(),
                (true, _) => return None,
            };
            let skip = test.attempts.len().saturating_sub(MAX_RECORDED_ATTEMPTS);
            let outcomes = test.attempts[skip..]
                .iter()
                .map(|a| outcome(a.status))
                .collect();
            Some((id, outcomes))
        })
        .collect()
}

fn outcome(status: schema::AttemptStatus) -> Outcome {
    match status {
        schema::AttemptStatus::Ran(schema::Outcome::Passed) => Outcome::Passed,
        schema::AttemptStatus::Ran(schema::Outcome::Failed) => Outcome::Failed,
        schema::AttemptStatus::Ran(schema::Outcome::TimedOut) => Outcome::TimedOut,
        schema::AttemptStatus::Ran(schema::Outcome::Error)
        | schema::AttemptStatus::Missing
        | schema::AttemptStatus::DeadLettered { .. } => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_reports_attempts_line_up_with_this_runs_ids() {
        let dir = std::env::temp_dir().join(format!("tf-compare-{}", uuid::Uuid::new_v4()));
        let run = "0b6e";
        std::fs::create_dir_all(dir.join(run)).unwrap();
        let golden = include_str!("../../report/src/json/golden.json");
        // A verdict's copy that left passed tests out is refused: they
        // would compare as ids the earlier run never had.
        std::fs::write(dir.join(run).join("report.json"), golden).unwrap();
        let ids = ["flaky-1", "new", "pass-1", "gone-1"].map(String::from);
        let error = recorded_baseline(&dir, run, &ids).unwrap_err();
        assert!(error.contains("host:/reports/x"), "{error}");
        let mut whole: serde_json::Value = serde_json::from_str(golden).unwrap();
        whole["verdict_cut"] = serde_json::Value::Null;
        std::fs::write(dir.join(run).join("report.json"), whole.to_string()).unwrap();
        let recorded = recorded_baseline(&dir, run, &ids).unwrap();
        use Outcome::*;
        assert_eq!(
            recorded.outcomes,
            [
                vec![Failed, Passed],
                vec![],
                vec![Passed],
                vec![Failed, Error]
            ]
        );
        let by_path = dir.join(run).join("report.json");
        let again = recorded_baseline(&dir, by_path.to_str().unwrap(), &ids).unwrap();
        assert_eq!(again.outcomes, recorded.outcomes);
        let error = recorded_baseline(&dir, "nope", &ids).unwrap_err();
        assert!(error.contains("--report-dir"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
