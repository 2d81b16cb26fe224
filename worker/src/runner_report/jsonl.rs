//! testfleet's own report: one JSON object per line and per test, its `id`
//! exactly as the batch listed it (the pytest preset's plugin writes it, and
//! any runner can), with `outcome` (`passed`, `skipped`, `failed`),
//! `duration_s`, `output` and `message`. A line that is not such an object
//! (the torn last line of a runner that died mid-write) is skipped.

use serde::Deserialize;
use testfleet_types::messages::Outcome;

use super::{Entry, Names};

#[derive(Deserialize)]
struct Line {
    id: String,
    outcome: String,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let text = String::from_utf8_lossy(bytes);
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Line>(line).ok())
        .map(entry)
        .collect())
}

fn entry(line: Line) -> Entry {
    let (outcome, message) = match line.outcome.as_str() {
        "passed" | "skipped" => (Outcome::Passed, line.message),
        "failed" => (Outcome::Failed, line.message),
        other => (
            Outcome::Failed,
            Some(format!(
                "the report says `{other}`, which is no outcome testfleet knows"
            )),
        ),
    };
    Entry {
        names: Names {
            class: String::new(),
            name: line.id,
            file: String::new(),
        },
        outcome,
        duration_ms: super::seconds_to_ms(&line.duration_s.unwrap_or(0.0).to_string()),
        output: line.output.unwrap_or_default(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_a_test_and_a_torn_or_foreign_line_is_skipped() {
        let report = concat!(
            r#"{"id": "t/a.py::x[a::b c]", "outcome": "passed", "duration_s": 0.25, "output": "", "message": null}"#,
            "\n",
            r#"{"id": "t/b.py::", "outcome": "failed", "duration_s": 0, "output": "trace", "message": "collection error in t/b.py"}"#,
            "\nnot json\n",
            r#"{"id": "t/c.py::s", "outcome": "skipped", "message": "skipped: later"}"#,
            "\n",
            r#"{"id": "t/d.py::w", "outcome": "weird"}"#,
            "\n",
            r#"{"id": "t/e.py::torn", "outc"#,
        );
        let entries = parse(report.as_bytes()).unwrap();
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (e.names.name.as_str(), e.outcome, e.duration_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("t/a.py::x[a::b c]", Outcome::Passed, 250),
                ("t/b.py::", Outcome::Failed, 0),
                ("t/c.py::s", Outcome::Passed, 0),
                ("t/d.py::w", Outcome::Failed, 0),
            ]
        );
        assert_eq!(entries[1].output, "trace");
        assert_eq!(entries[2].message.as_deref(), Some("skipped: later"));
        assert!(entries[3].message.as_ref().unwrap().contains("weird"));
    }
}
