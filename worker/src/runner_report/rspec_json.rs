//! RSpec's JSON formatter (`--format json --out FILE`): `examples[]` with the
//! example's `id` (`./spec/a_spec.rb[1:2]`, what `rspec --dry-run` lists),
//! `status` (`passed`, `failed`, `pending`), `run_time` and `exception`.

use serde::Deserialize;
use testfleet_types::messages::Outcome;

use super::{Entry, Names};

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    examples: Vec<Example>,
}

#[derive(Deserialize)]
struct Example {
    id: String,
    status: String,
    #[serde(default)]
    run_time: Option<f64>,
    #[serde(default)]
    exception: Option<Exception>,
    #[serde(default)]
    pending_message: Option<String>,
}

#[derive(Deserialize)]
struct Exception {
    #[serde(default)]
    class: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    backtrace: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let report: Report =
        serde_json::from_slice(bytes).map_err(|e| format!("not an RSpec JSON report: {e}"))?;
    Ok(report.examples.into_iter().map(entry).collect())
}

fn entry(example: Example) -> Entry {
    let outcome = match example.status.as_str() {
        "failed" => Outcome::Failed,
        _ => Outcome::Passed,
    };
    let (output, message) = match (&example.exception, example.status.as_str()) {
        (Some(e), _) => (
            format!("{}: {}\n{}\n", e.class, e.message, e.backtrace.join("\n")),
            Some(e.message.lines().next().unwrap_or_default().to_owned()),
        ),
        (None, "pending") => (
            String::new(),
            Some(format!(
                "pending: {}",
                example.pending_message.unwrap_or_default()
            )),
        ),
        (None, _) => (String::new(), None),
    };
    Entry {
        names: Names {
            class: String::new(),
            name: example.id,
            file: String::new(),
        },
        outcome,
        duration_ms: super::seconds_to_ms(&example.run_time.unwrap_or(0.0).to_string()),
        output,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_map_by_their_ids() {
        let json = r#"{"version":"3.12.0","examples":[
{"id":"./spec/a_spec.rb[1:1]","status":"passed","run_time":0.002},
{"id":"./spec/a_spec.rb[1:2]","status":"failed","run_time":0.01,"exception":{"class":"RSpec::Expectations::ExpectationNotMetError","message":"expected 1\n got 2","backtrace":["./spec/a_spec.rb:7"]}},
{"id":"./spec/a_spec.rb[1:3]","status":"pending","pending_message":"later"}],"summary":{}}"#;
        let entries = parse(json.as_bytes()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].names.name, "./spec/a_spec.rb[1:2]");
        assert_eq!(entries[1].outcome, Outcome::Failed);
        assert_eq!(entries[1].message.as_deref(), Some("expected 1"));
        assert!(entries[1].output.contains("a_spec.rb:7"));
        assert_eq!(entries[2].outcome, Outcome::Passed);
        assert!(parse(b"{").is_err());
    }
}
