//! JUnit XML, as pytest (`--junitxml`), nextest, RSpec's JUnit formatter,
//! gotestsum and jest-junit write it: `<testcase classname name time>` with
//! `<failure>`, `<error>`, `<skipped>`, `<system-out>` and `<system-err>`
//! children (and nextest's `<flakyFailure>`/`<rerunFailure>`, which are
//! earlier tries of a test that ends as its own element says).

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use testfleet_types::messages::Outcome;

use super::{seconds_to_ms, Entry, Names};

/// What is known of the `<testcase>` being read.
struct Case {
    entry: Entry,
    /// The child element whose text is being read, if it is one we keep.
    reading: Option<Child>,
}

#[derive(Clone, Copy, PartialEq)]
enum Child {
    /// `<failure>` or `<error>`: the failure's text.
    Failure,
    /// `<system-out>` / `<system-err>`.
    Output,
    /// A child whose text is not kept (`<properties>`, a rerun's details).
    Ignored,
}

pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut reader = Reader::from_reader(bytes);
    let mut buffer = Vec::new();
    let mut entries = Vec::new();
    let mut case: Option<Case> = None;
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| format!("not JUnit XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(element) => match (&mut case, element.local_name().as_ref()) {
                (None, b"testcase") => case = Some(Case::open(&element)),
                (Some(case), name) => case.enter(name, &element),
                _ => {}
            },
            Event::Empty(element) => match (&mut case, element.local_name().as_ref()) {
                (None, b"testcase") => entries.push(Case::open(&element).entry),
                (Some(case), name) => {
                    case.enter(name, &element);
                    case.reading = None;
                }
                _ => {}
            },
            Event::End(element) => {
                if element.local_name().as_ref() == b"testcase" {
                    if let Some(done) = case.take() {
                        entries.push(done.entry);
                    }
                } else if let Some(case) = &mut case {
                    case.reading = None;
                }
            }
            Event::Text(text) => {
                if let Some(case) = &mut case {
                    case.push(&text.decode().unwrap_or_default());
                }
            }
            Event::CData(text) => {
                if let Some(case) = &mut case {
                    case.push(&text.decode().unwrap_or_default());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(case) = &mut case {
                    let text = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => named_entity(&reference.decode().unwrap_or_default()),
                    };
                    case.push(&text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    Ok(entries)
}

impl Case {
    fn open(element: &BytesStart<'_>) -> Case {
        Case {
            entry: Entry {
                names: Names {
                    class: attribute(element, b"classname"),
                    name: attribute(element, b"name"),
                    file: attribute(element, b"file"),
                },
                outcome: Outcome::Passed,
                duration_ms: seconds_to_ms(&attribute(element, b"time")),
                output: String::new(),
                message: None,
            },
            reading: None,
        }
    }

    /// A child element of the test case starts.
    fn enter(&mut self, name: &[u8], element: &BytesStart<'_>) {
        self.reading = Some(match name {
            b"failure" | b"error" => {
                self.entry.outcome = Outcome::Failed;
                let message = attribute(element, b"message");
                if self.entry.message.is_none() && !message.is_empty() {
                    self.entry.message = Some(message);
                }
                Child::Failure
            }
            b"skipped" => {
                let message = attribute(element, b"message");
                self.entry.message = Some(if message.is_empty() {
                    "skipped".into()
                } else {
                    format!("skipped: {message}")
                });
                Child::Ignored
            }
            b"system-out" | b"system-err" => Child::Output,
            _ => Child::Ignored,
        });
    }

    fn push(&mut self, text: &str) {
        if matches!(self.reading, Some(Child::Failure | Child::Output)) {
            self.entry.output.push_str(text);
        }
    }
}

fn attribute(element: &BytesStart<'_>, key: &[u8]) -> String {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
        .unwrap_or_default()
}

fn named_entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        other => format!("&{other};"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pytest 7 writes (xunit2), trimmed.
    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="0.05">
<testcase classname="tests.test_a.TestX" name="test_y[1-a::b]" time="0.001" />
<testcase classname="tests.test_a" name="test_fails" time="0.250"><failure message="assert 1 == 2">def test_fails():
&gt;       assert 1 == 2
E       assert 1 == 2 &amp; more</failure><system-out>printed &#233;</system-out></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0.000"><skipped type="pytest.skip" message="no db">skip</skipped></testcase>
<testcase classname="tests.test_a" name="test_cdata" time="1.5"><system-err><![CDATA[<raw> & stuff]]></system-err></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn pytest_junit_reads_every_case_with_its_outcome_and_output() {
        let entries = parse(PYTEST.as_bytes()).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].names.class, "tests.test_a.TestX");
        assert_eq!(entries[0].names.name, "test_y[1-a::b]");
        assert_eq!(entries[0].outcome, Outcome::Passed);
        let failed = &entries[1];
        assert_eq!((failed.outcome, failed.duration_ms), (Outcome::Failed, 250));
        assert_eq!(failed.message.as_deref(), Some("assert 1 == 2"));
        assert!(
            failed.output.contains(">       assert 1 == 2"),
            "{}",
            failed.output
        );
        assert!(failed.output.contains("& more"));
        assert!(failed.output.contains("printed é"));
        assert_eq!(entries[2].outcome, Outcome::Passed);
        assert_eq!(entries[2].message.as_deref(), Some("skipped: no db"));
        assert_eq!(entries[3].output, "<raw> & stuff");
        assert_eq!(entries[3].duration_ms, 1_500);
    }

    /// What nextest writes: a flaky test passes with its earlier failure inside.
    #[test]
    fn nextest_junit_flaky_passes_and_failures_fail() {
        let xml = r#"<testsuites name="nextest-run"><testsuite name="crate::bin/x" tests="2">
<testcase name="a::flaky" classname="crate::bin/x" timestamp="2024-01-01T00:00:00Z" time="0.1"><flakyFailure message="first"><system-out>boom</system-out></flakyFailure></testcase>
<testcase name="a::broken" classname="crate::bin/x" time="0.2"><failure type="test failure">thread panicked</failure></testcase>
</testsuite></testsuites>"#;
        let entries = parse(xml.as_bytes()).unwrap();
        assert_eq!(entries[0].outcome, Outcome::Passed);
        assert_eq!(entries[1].outcome, Outcome::Failed);
        assert_eq!(entries[1].names.class, "crate::bin/x");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"<testsuite><testcase name=\"x\"></testsuite>").is_err());
        assert_eq!(parse(b"").unwrap(), vec![]);
    }
}
