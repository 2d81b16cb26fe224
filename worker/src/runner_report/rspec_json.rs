//! RSpec's JSON formatter (`--format json --out FILE`): `examples[]` with the
//! example's `id` (`./spec/a_spec.rb[1:2]`, what `rspec --dry-run` lists),
//! `status` (`passed`, `failed`, `pending`), `run_time` and `exception`; and
//! `messages`, where RSpec says what went wrong outside any example (a spec
//! file that fails to load, after which RSpec runs no example at all).

use serde::Deserialize;
use testfleet_types::messages::Outcome;

use super::{Entry, Names, Parsed};

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    examples: Vec<Example>,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    summary: Summary,
}

#[derive(Deserialize, Default)]
struct Summary {
    #[serde(default)]
    errors_outside_of_examples_count: u64,
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

pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let report: Report =
        serde_json::from_slice(bytes).map_err(|e| format!("not an RSpec JSON report: {e}"))?;
    Ok(Parsed {
        none_ran: report.examples.is_empty() && report.summary.errors_outside_of_examples_count > 0,
        outside: super::capped(&report.messages.join("\n")),
        entries: report.examples.into_iter().map(entry).collect(),
    })
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
        let entries = parse(json.as_bytes()).unwrap().entries;
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].names.name, "./spec/a_spec.rb[1:2]");
        assert_eq!(entries[1].outcome, Outcome::Failed);
        assert_eq!(entries[1].message.as_deref(), Some("expected 1"));
        assert!(entries[1].output.contains("a_spec.rb:7"));
        assert_eq!(entries[2].outcome, Outcome::Passed);
        assert!(parse(b"{").is_err());
    }

    #[test]
    fn a_spec_file_that_fails_to_load_means_no_example_ran() {
        let json = r#"{"version":"3.12.0","messages":["\nAn error occurred while loading ./spec/b_spec.rb.\nFailure/Error: require 'nope'\n"],"examples":[],"summary":{"example_count":0,"errors_outside_of_examples_count":1}}"#;
        let parsed = parse(json.as_bytes()).unwrap();
        assert!(parsed.none_ran);
        assert!(parsed.outside.contains("while loading ./spec/b_spec.rb"));
        let ran = r#"{"examples":[],"summary":{"errors_outside_of_examples_count":0}}"#;
        assert!(
            !parse(ran.as_bytes()).unwrap().none_ran,
            "nothing listed ran, but nothing broke"
        );
    }
}
