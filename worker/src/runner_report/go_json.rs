//! `go test -json`: one JSON event per line. A top-level test's `pass`,
//! `fail` or `skip` ends it; its subtests' events fold into it, and its
//! `output` events are its output. Output of no test (a build failure) and
//! lines that are not JSON are what the report says outside any test; a
//! package that fails before any test started ran none.

use std::collections::HashMap;

use serde::Deserialize;
use testfleet_types::messages::Outcome;

use super::{Entry, Names, Parsed};
use crate::capture::OutputCapture;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Test")]
    test: Option<String>,
    #[serde(rename = "Elapsed")]
    elapsed: Option<f64>,
    #[serde(rename = "Output")]
    output: Option<String>,
}

pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut order: Vec<String> = Vec::new();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut ended: Vec<String> = Vec::new();
    let mut outside = OutputCapture::new(super::OUTSIDE_BYTES);
    let mut package_failed = false;
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            outside.push(line.as_bytes());
            outside.push(b"\n");
            continue;
        };
        let Some(test) = event.test else {
            match event.action.as_str() {
                "output" | "build-output" => {
                    outside.push(event.output.as_deref().unwrap_or_default().as_bytes())
                }
                "fail" | "build-fail" => package_failed = true,
                _ => {}
            }
            continue;
        };
        let top = test.split('/').next().unwrap_or_default().to_owned();
        let entry = entries.entry(top.clone()).or_insert_with(|| {
            order.push(top.clone());
            Entry {
                names: Names {
                    class: String::new(),
                    name: top.clone(),
                    file: String::new(),
                },
                outcome: Outcome::Passed,
                duration_ms: 0,
                output: String::new(),
                message: None,
            }
        });
        let is_top = test == top;
        match event.action.as_str() {
            "output" => entry
                .output
                .push_str(event.output.as_deref().unwrap_or_default()),
            "fail" => {
                entry.outcome = Outcome::Failed;
                if is_top {
                    ended.push(top);
                }
            }
            "pass" | "skip" if is_top => {
                if event.action == "skip" {
                    entry.message = Some("skipped".into());
                }
                ended.push(top);
            }
            _ => {}
        }
        if is_top {
            if let Some(secs) = event.elapsed {
                entry.duration_ms = super::seconds_to_ms(&secs.to_string());
            }
        }
    }
    // A test that started but never ended (the binary crashed) is unreported.
    let none_ran = package_failed && order.is_empty();
    let entries = order
        .into_iter()
        .filter(|test| ended.contains(test))
        .filter_map(|test| entries.remove(&test))
        .collect();
    Ok(Parsed {
        entries,
        outside: outside.finish().0,
        none_ran,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_tests_end_with_their_subtests_folded_in() {
        let stream = r#"{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.25}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"run","Package":"p","Test":"TestB/sub"}
{"Action":"output","Package":"p","Test":"TestB/sub","Output":"b_test.go:9: wrong\n"}
{"Action":"fail","Package":"p","Test":"TestB/sub","Elapsed":0}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0.5}
not json: a build line
{"Action":"run","Package":"p","Test":"TestCrash"}
{"Action":"output","Package":"p","Package":"p","Output":"panic: boom\n"}
{"Action":"fail","Package":"p","Elapsed":0.8}"#;
        let parsed = parse(stream.as_bytes()).unwrap();
        assert!(!parsed.none_ran, "tests ran before the crash");
        assert!(parsed.outside.contains("panic: boom"));
        let entries = parsed.entries;
        let names: Vec<&str> = entries.iter().map(|e| e.names.name.as_str()).collect();
        assert_eq!(names, ["TestA", "TestB"], "TestCrash never ended");
        assert_eq!(
            (entries[0].outcome, entries[0].duration_ms),
            (Outcome::Passed, 250)
        );
        assert_eq!(entries[1].outcome, Outcome::Failed);
        assert!(entries[1].output.contains("wrong"));
    }

    #[test]
    fn a_package_that_fails_before_any_test_ran_none() {
        let stream = "# p\n./a_test.go:3:2: undefined: nope\n\
{\"Action\":\"output\",\"Package\":\"p\",\"Output\":\"FAIL\\tp [build failed]\\n\"}\n\
{\"Action\":\"fail\",\"Package\":\"p\",\"Elapsed\":0}\n";
        let parsed = parse(stream.as_bytes()).unwrap();
        assert!(parsed.none_ran);
        assert!(parsed.entries.is_empty());
        assert!(parsed.outside.contains("undefined: nope"));
        assert!(parsed.outside.contains("[build failed]"));
    }
}
