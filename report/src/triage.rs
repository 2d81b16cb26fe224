//! Failure triage: failing tests grouped by a signature of their last attempt,
//! so that "40 failures, 2 causes" reads as two groups instead of forty entries.
//!
//! A test's group is the first user rule (`[report] triage_rules`) whose regex
//! matches its last attempt's output or message; failing that, its signature:
//! the first line that looks like an error (else the last non-empty line),
//! normalised so that numbers, hex ids and paths that differ from test to test
//! do not split one cause into many groups.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use testfleet_types::messages::{FinalStatus, RunReport, TestReport};
use testfleet_types::triage::TriageRule;

use super::format::{describe_final, last_attempt, strip_terminal_codes};

/// Characters kept of a signature.
pub const MAX_SIGNATURE_CHARS: usize = 200;

/// The final statuses triage groups: tests that ran, or were given up on, and
/// did not pass. Missing tests never reported, so there is nothing to read.
pub const TRIAGED: [FinalStatus; 4] = [
    FinalStatus::Failed,
    FinalStatus::TimedOut,
    FinalStatus::Error,
    FinalStatus::DeadLettered,
];

/// One cause and the failing tests that share it.
#[derive(Debug)]
pub struct Group<'a> {
    /// What the group is called: the rule's name, or the signature.
    pub title: String,
    /// Whether a user rule named the group (rather than a signature).
    pub by_rule: bool,
    /// In run order.
    pub tests: Vec<&'a TestReport>,
}

/// Every failing test of a run, grouped; the largest group first.
#[derive(Debug)]
pub struct Triage<'a> {
    pub groups: Vec<Group<'a>>,
    /// Each failing test's group, by id (ids are unique in a run).
    group_of: HashMap<&'a str, usize>,
}

impl Triage<'_> {
    /// Failing tests in all groups.
    pub fn failures(&self) -> usize {
        self.groups.iter().map(|g| g.tests.len()).sum()
    }

    /// The index of the group holding the test with this id.
    pub fn group_of(&self, id: &str) -> Option<usize> {
        self.group_of.get(id).copied()
    }
}

/// Groups the run's failing tests by `rules`, then by signature. Groups are
/// ordered by size, ties by where their first test sits in the run.
pub fn triage<'a>(report: &'a RunReport, rules: &[TriageRule]) -> Triage<'a> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    // Keyed by (by_rule, title): a rule and a signature with the same text stay apart.
    let mut index: HashMap<(bool, String), usize> = HashMap::new();
    for test in report.tests.iter().filter(|t| TRIAGED.contains(&t.status)) {
        let (by_rule, title) = match matching_rule(test, rules) {
            Some(rule) => (true, rule.name.clone()),
            None => (false, signature(report, test)),
        };
        let slot = *index.entry((by_rule, title.clone())).or_insert_with(|| {
            groups.push(Group {
                title,
                by_rule,
                tests: Vec::new(),
            });
            groups.len() - 1
        });
        groups[slot].tests.push(test);
    }
    // A stable sort keeps first-appearance order among groups of equal size.
    groups.sort_by_key(|g| std::cmp::Reverse(g.tests.len()));
    let group_of = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.tests.iter().map(move |t| (t.id.as_str(), i)))
        .collect();
    Triage { groups, group_of }
}

/// What the last attempt left to read: its output, then its message.
fn evidence(test: &TestReport) -> impl Iterator<Item = &str> {
    last_attempt(test)
        .into_iter()
        .flat_map(|a| [a.output.as_deref(), a.message.as_deref()])
        .flatten()
        .filter(|text| !text.trim().is_empty())
}

/// The first rule whose pattern matches anywhere in the last attempt's output
/// or message.
pub fn matching_rule<'r>(test: &TestReport, rules: &'r [TriageRule]) -> Option<&'r TriageRule> {
    rules
        .iter()
        .find(|rule| evidence(test).any(|text| rule.pattern.is_match(text)))
}

/// The test's signature: its error line, normalised, prefixed with how it ended
/// when that was not a plain failure (a timeout and a failure that print the
/// same line are different causes). Without any output, how it ended.
pub fn signature(report: &RunReport, test: &TestReport) -> String {
    let line = evidence(test).find_map(error_line);
    let prefix = match test.status {
        FinalStatus::TimedOut => "timed out · ",
        FinalStatus::Error => "infrastructure error · ",
        FinalStatus::DeadLettered => "dead-lettered · ",
        _ => "",
    };
    match line {
        Some(line) => format!("{prefix}{}", normalise(line)),
        None => normalise(&describe_final(test, &report.spec)),
    }
}

static ERRORISH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("(?i)error|fail|panic|exception|assert").expect("valid regex"));

/// The first line that looks like an error, else the last non-empty line.
pub fn error_line(text: &str) -> Option<&str> {
    let mut last = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if ERRORISH.is_match(line) {
            return Some(line);
        }
        last = Some(line);
    }
    last
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b").expect("valid regex")
});
/// Something with a separator followed by a name: `/tmp/x`, `src/lib.rs`,
/// `C:\dir\file`. Candidates without a letter (`1/2`) are left for the numbers.
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:[A-Za-z]:)?[\w.~-]*(?:[/\\][\w.~-]+)+[/\\]?").expect("valid regex")
});
/// Hex runs long enough to be ids; words made of a-f alone (`facade`) and
/// plain numbers are told apart in [`hex_or_keep`].
static HEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:0x[0-9a-fA-F]+|[0-9a-fA-F]{6,})\b").expect("valid regex"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+").expect("valid regex"));
static SPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid regex"));

/// A line made comparable across tests: terminal codes removed, paths →
/// `PATH`, UUIDs and hex ids → `X`, numbers → `N`, whitespace collapsed, at
/// most [`MAX_SIGNATURE_CHARS`] characters.
pub fn normalise(line: &str) -> String {
    let plain = strip_terminal_codes(line);
    let text = UUID.replace_all(&plain, "X");
    let text = PATH.replace_all(&text, |c: &Captures<'_>| {
        let found = &c[0];
        if found.chars().any(char::is_alphabetic) {
            "PATH".to_owned()
        } else {
            found.to_owned()
        }
    });
    let text = HEX.replace_all(&text, hex_or_keep);
    let text = NUMBER.replace_all(&text, "N");
    let text = SPACE.replace_all(text.trim(), " ");
    cut(&text, MAX_SIGNATURE_CHARS)
}

fn hex_or_keep(c: &Captures<'_>) -> String {
    let found = &c[0];
    let digits = found.chars().any(|ch| ch.is_ascii_digit());
    let letters = found.chars().any(|ch| ch.is_ascii_alphabetic());
    if found.starts_with("0x") || (digits && letters) {
        "X".to_owned()
    } else {
        found.to_owned()
    }
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, ran, report_with, test, unrun};
    use testfleet_types::messages::{AttemptStatus, Outcome, VerdictKind};

    fn rule(name: &str, pattern: &str) -> TriageRule {
        TriageRule {
            name: name.to_owned(),
            pattern: Regex::new(pattern).unwrap(),
        }
    }

    fn failed(id: &str, output: &str) -> TestReport {
        test(
            id,
            FinalStatus::Failed,
            vec![ran(1, Outcome::Failed, Some(1), output)],
        )
    }

    #[test]
    fn normalisation_hides_what_varies() {
        assert_eq!(
            normalise("thread 'main' panicked at src/lib.rs:42:5: expected 3, got 4"),
            "thread 'main' panicked at PATH:N:N: expected N, got N"
        );
        assert_eq!(
            normalise("  row 0xdeadBEEF for job 3f2a9c81e4 \t in /var/tmp/run-17/out.txt  "),
            "row X for job X in PATH"
        );
        assert_eq!(
            normalise("run 123e4567-e89b-12d3-a456-426614174000 failed after 1.5 s"),
            "run X failed after N.N s"
        );
        assert_eq!(normalise("ratio 1/2 on facade"), "ratio N/N on facade");
        assert_eq!(normalise("\u{1b}[31mError\u{1b}[0m: boom"), "Error: boom");
        let long = normalise(&"a".repeat(500));
        assert_eq!(long.chars().count(), MAX_SIGNATURE_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn the_first_errorish_line_else_the_last_line() {
        assert_eq!(
            error_line("starting\nAssertionError: x\npanic later\n"),
            Some("AssertionError: x")
        );
        assert_eq!(error_line("one\ntwo\n\n  \n"), Some("two"));
        assert_eq!(error_line("\n \n"), None);
    }

    #[test]
    fn failures_group_by_signature_largest_first() {
        let tests = vec![
            failed(
                "a",
                "setup\nerror: timeout after 30 s talking to 10.0.0.7\n",
            ),
            failed("b", "error: disk full on /dev/sda1\n"),
            failed(
                "c",
                "setup\nerror: timeout after 12 s talking to 10.0.0.9\n",
            ),
            test(
                "ok",
                FinalStatus::Passed,
                vec![ran(1, Outcome::Passed, Some(0), "")],
            ),
            test(
                "gone",
                FinalStatus::Missing,
                vec![unrun(1, AttemptStatus::Missing, None)],
            ),
        ];
        let report = report_with(tests, VerdictKind::TestsFailed);
        let triage = triage(&report, &[]);
        assert_eq!(
            triage.failures(),
            3,
            "passed and missing tests are not triaged"
        );
        let groups: Vec<(&str, Vec<&str>)> = triage
            .groups
            .iter()
            .map(|g| {
                (
                    g.title.as_str(),
                    g.tests.iter().map(|t| t.id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (
                    "error: timeout after N s talking to N.N.N.N",
                    vec!["a", "c"]
                ),
                ("error: disk full on PATH", vec!["b"]),
            ]
        );
        assert_eq!(triage.group_of("c"), Some(0));
        assert_eq!(triage.group_of("ok"), None);
    }

    #[test]
    fn the_first_matching_rule_names_the_group() {
        let tests = vec![
            failed("a", "ERROR: connection refused (db:5432)\n"),
            failed(
                "b",
                "warning: slow\nconnection refused, then out of memory\n",
            ),
            failed("c", "killed: out of memory\n"),
            failed("d", "assert x == y\n"),
        ];
        let report = report_with(tests, VerdictKind::TestsFailed);
        let rules = [
            rule("db down", "connection refused"),
            rule("oom", "out of memory"),
        ];
        let triage = triage(&report, &rules);
        let summary: Vec<(&str, bool, usize)> = triage
            .groups
            .iter()
            .map(|g| (g.title.as_str(), g.by_rule, g.tests.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("db down", true, 2),
                ("oom", true, 1),
                ("assert x == y", false, 1)
            ],
            "b matches both rules and goes to the first"
        );
    }

    #[test]
    fn statuses_without_output_have_signatures_too() {
        let report = fixture::sample_report();
        let triage = triage(&report, &[rule("image", "image .* not found")]);
        let titles: Vec<&str> = triage.groups.iter().map(|g| g.title.as_str()).collect();
        assert!(
            titles.contains(&"image"),
            "{titles:?}: a message is evidence"
        );
        assert!(
            titles.contains(&"timed out · waiting for godot"),
            "{titles:?}"
        );
        assert!(
            titles.contains(&"dead-lettered · delivery limit reached"),
            "{titles:?}"
        );
        assert!(titles.contains(&"fail line N"), "{titles:?}: the last line");
        assert_eq!(triage.failures(), 5);
    }
}
