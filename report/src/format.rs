//! Formatting shared by the report renderers: times, durations, counts, attempt
//! descriptions and text made safe to show on one line.

use testfleet_types::messages::{
    AttemptReport, AttemptStatus, FinalStatus, Outcome, RunReport, RunSpec, TestFlakiness,
    TestReport,
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub use testfleet_types::vocabulary::MISSING_MESSAGE;

/// The order in which every report lists its counts.
pub(crate) const COUNT_ORDER: [FinalStatus; 7] = FinalStatus::ORDER;

/// Unix milliseconds as RFC 3339 in UTC.
pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        // Only reachable for times past the year 9999; say what we have rather than fail.
        .unwrap_or_else(|| format!("{ms} ms after the unix epoch"))
}

/// Milliseconds as seconds with three decimals, computed in integers so that
/// no rounding creeps in.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

pub(crate) fn run_duration_ms(report: &RunReport) -> u64 {
    report.finished_at_ms.saturating_sub(report.created_at_ms)
}

/// The attempt that decided the test's final status.
pub(crate) fn last_attempt(test: &TestReport) -> Option<&AttemptReport> {
    test.attempts.iter().max_by_key(|a| a.attempt)
}

pub(crate) fn did_not_pass(attempt: &AttemptReport) -> bool {
    attempt.status != AttemptStatus::Ran(Outcome::Passed)
}

/// Attempts that did not pass, oldest first.
pub(crate) fn failed_attempts(test: &TestReport) -> impl Iterator<Item = &AttemptReport> {
    let mut failed: Vec<_> = test.attempts.iter().filter(|a| did_not_pass(a)).collect();
    failed.sort_by_key(|a| a.attempt);
    failed.into_iter()
}

/// A short name for how one attempt ended.
pub(crate) fn attempt_status_str(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Ran(outcome) => outcome.as_str(),
        AttemptStatus::Missing => FinalStatus::Missing.as_str(),
        AttemptStatus::DeadLettered { .. } => FinalStatus::DeadLettered.as_str(),
    }
}

/// One sentence on how an attempt ended, for messages and summaries.
pub(crate) fn describe_attempt(attempt: &AttemptReport, spec: &RunSpec) -> String {
    match attempt.status {
        AttemptStatus::Ran(Outcome::Passed) => "passed".to_owned(),
        AttemptStatus::Ran(Outcome::Failed) => match attempt.exit_code {
            Some(code) => format!("failed with exit code {code}"),
            None => "failed".to_owned(),
        },
        AttemptStatus::Ran(Outcome::TimedOut) => format!(
            "timed out: killed after the per-test timeout of {}",
            seconds(spec.timeout_ms)
        ),
        AttemptStatus::Ran(Outcome::Error) => match &attempt.message {
            Some(message) => format!("infrastructure error: {}", one_line(message, 200)),
            None => "infrastructure error".to_owned(),
        },
        AttemptStatus::Missing => MISSING_MESSAGE.to_owned(),
        AttemptStatus::DeadLettered { deliveries } => {
            format!("dead-lettered: the broker gave up after {deliveries} deliveries")
        }
    }
}

/// One sentence on why a test ended as it did.
pub(crate) fn describe_final(test: &TestReport, spec: &RunSpec) -> String {
    match (test.status, last_attempt(test)) {
        // The contract for missing tests is one fixed sentence, whatever was recorded.
        (FinalStatus::Missing, _) => MISSING_MESSAGE.to_owned(),
        (_, Some(attempt)) => describe_attempt(attempt, spec),
        (status, None) => status.as_str().to_owned(),
    }
}

/// "9 tests: 1 passed, 2 failed, …" in [`COUNT_ORDER`].
/// Passed tests a verdict's copy left out count as passed.
pub(crate) fn counts_line(report: &RunReport) -> String {
    let left_out = report
        .verdict_cut
        .as_ref()
        .map_or(0, |cut| cut.passed_tests_left_out as usize);
    let count = |status| match status {
        FinalStatus::Passed => report.count(status).saturating_add(left_out),
        _ => report.count(status),
    };
    let counts: Vec<String> = COUNT_ORDER
        .iter()
        .map(|&status| count_phrase(status, count(status)))
        .collect();
    format!(
        "{}: {}",
        plural(report.tests.len().saturating_add(left_out), "test"),
        counts.join(", ")
    )
}

/// A sentence saying what a verdict's copy of the report lacks and where the
/// whole one is; empty when nothing was cut.
pub(crate) fn verdict_cut_note(report: &RunReport) -> String {
    let Some(cut) = &report.verdict_cut else {
        return String::new();
    };
    let mut lacks = vec![format!(
        "{} shortened ({} bytes cut)",
        plural(cut.outputs_shortened as usize, "output"),
        cut.output_bytes_cut
    )];
    if cut.batch_logs_left_out > 0 {
        lacks.push(format!(
            "{} left out",
            plural(cut.batch_logs_left_out as usize, "batch log")
        ));
    }
    if cut.passed_tests_left_out > 0 {
        lacks.push(format!(
            "{} left out",
            plural(cut.passed_tests_left_out as usize, "passed test")
        ));
    }
    format!(
        "This report was cut to fit the verdict message: {}. The aggregator's full reports: {}",
        lacks.join(", "),
        one_line(&cut.full_report, 500)
    )
}

/// "1 test", "2 tests".
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn count_phrase(status: FinalStatus, n: usize) -> String {
    match status {
        // "2 error" reads as a typo; every other label is an adjective.
        FinalStatus::Error => plural(n, "error"),
        _ => format!("{n} {}", status.as_str()),
    }
}

/// `s` on a single line of at most `max_chars` characters: control and
/// bidirectional-override characters are shown escaped, because test ids and
/// worker messages come from outside and must not move the cursor, recolour a
/// terminal, reorder text or break a Markdown line.
pub(crate) fn one_line(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    for (count, c) in chars.by_ref().enumerate() {
        if count == max_chars {
            out.push('…');
            return out;
        }
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Up to the last `n` lines of `output`, as a terminal would have shown them:
/// ANSI escape sequences and other control characters removed, each line cut to
/// `max_line_chars`. Only the tail is scanned, so a huge output costs little.
pub(crate) fn tail_lines(output: &str, n: usize, max_line_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = output
        .lines()
        .rev()
        .take(n)
        .map(|line| shown_line(line, max_line_chars))
        .collect();
    lines.reverse();
    lines
}

fn shown_line(line: &str, max_chars: usize) -> String {
    // A carriage return redraws the line (progress bars): keep what stayed visible.
    let visible = line
        .split('\r')
        .rev()
        .find(|part| !part.is_empty())
        .unwrap_or("");
    let plain = strip_terminal_codes(visible);
    match plain.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &plain[..cut]),
        None => plain,
    }
}

/// Removes ANSI escape sequences (CSI, OSC and two-byte escapes) and control
/// characters other than tab.
pub(crate) fn strip_terminal_codes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            skip_escape(&mut chars);
        } else if c == '\t' || !(c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}')) {
            out.push(c);
        }
    }
    out
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        // CSI: parameters, then one final byte in '@'..='~'.
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        // OSC: ends with BEL or ESC '\'.
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                    chars.next();
                    break;
                }
            }
        }
        // Any other escape is ESC plus one character.
        _ => {}
    }
}

/// What the suite's recent runs say of a test, and whether it is
/// quarantined: "flaky in 2 of the last 10 runs, failed in 1; quarantined:
/// why". Empty when neither is known.
pub(crate) fn test_notes(report: &RunReport, test: &TestReport) -> String {
    let mut notes = Vec::new();
    if let Some(history) = report
        .flakiness
        .as_ref()
        .and_then(|f| f.of(&test.id).map(|t| (t, f.runs)))
    {
        notes.push(flakiness_note(history.0, history.1));
    }
    if let Some(reason) = &test.quarantined {
        notes.push(format!("quarantined: {reason}"));
    }
    notes.join("; ")
}

/// "flaky in 2 of the last 10 runs", and how often it failed outright.
pub(crate) fn flakiness_note(test: &TestFlakiness, runs: u32) -> String {
    let mut note = format!(
        "flaky in {} of the last {}",
        test.flaky,
        plural(runs as usize, "run")
    );
    if test.failed > 0 {
        note.push_str(&format!(", failed in {}", test.failed));
    }
    note
}

/// The suite's flakiest tests over its recent runs (flaky at least once),
/// most often first, at most `max`.
pub(crate) fn flakiest(report: &RunReport, max: usize) -> Vec<&TestFlakiness> {
    let Some(flakiness) = &report.flakiness else {
        return Vec::new();
    };
    let mut listed: Vec<&TestFlakiness> = flakiness.tests.iter().filter(|t| t.flaky > 0).collect();
    listed.sort_by(|a, b| b.flaky.cmp(&a.flaky).then(b.failed.cmp(&a.failed)));
    listed.truncate(max);
    listed
}

/// "apt 6 of 8 packages from the cache (75 %), pypi …", or why a cache could
/// not say; empty for a run that did not use the caches.
pub(crate) fn cache_line(report: &RunReport) -> String {
    let Some(cache) = &report.cache else {
        return String::new();
    };
    let mut parts: Vec<String> = cache
        .caches
        .iter()
        .map(|c| {
            let served = c.packages_served();
            match c.hit_percent() {
                Some(percent) => format!(
                    "{} {} of {} from the cache ({percent:.0} %)",
                    c.name,
                    c.package_hits,
                    plural(served as usize, "package")
                ),
                None => format!("{} served no package", c.name),
            }
        })
        .collect();
    if let Some(error) = &cache.error {
        parts.push(format!("not asked: {}", one_line(error, 200)));
    }
    parts.join(", ")
}

/// How many ids the summary's "slowest" line names.
pub(crate) const SLOWEST_SHOWN: usize = 5;

/// The `max` tests whose longest attempt took longest, slowest first, with
/// that attempt's duration; ties in list order.
pub(crate) fn slowest(report: &RunReport, max: usize) -> Vec<(&str, u64)> {
    let mut timed: Vec<(&str, u64)> = report
        .tests
        .iter()
        .filter_map(|t| {
            Some((
                t.id.as_str(),
                t.attempts.iter().map(|a| a.duration_ms).max()?,
            ))
        })
        .collect();
    timed.sort_by_key(|t| std::cmp::Reverse(t.1));
    timed.truncate(max);
    timed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(seconds(0), "0.000 s");
        assert_eq!(seconds(12_345), "12.345 s");
        assert_eq!(seconds(5), "0.005 s");
    }

    #[test]
    fn one_line_escapes_and_cuts() {
        assert_eq!(one_line("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        assert_eq!(one_line("ünïcode", 3), "ünï…");
        assert_eq!(one_line("\u{202E}evil", 100), "\\u{202e}evil");
        assert_eq!(one_line("abc", 3), "abc");
    }

    #[test]
    fn tail_keeps_the_visible_end() {
        let output = "1\n2\n\u{1b}[31mred\u{1b}[0m\u{0}\nprogress 10%\rprogress 100%\r\n";
        assert_eq!(
            tail_lines(output, 2, 100),
            vec!["red".to_owned(), "progress 100%".to_owned()]
        );
        assert_eq!(tail_lines(output, 10, 100).len(), 4);
        assert!(tail_lines(output, 0, 100).is_empty());
        assert_eq!(tail_lines("abcdef", 1, 3), vec!["abc…".to_owned()]);
        assert_eq!(strip_terminal_codes("\u{1b}]0;title\u{7}ok\u{1b}Mx"), "okx");
    }
}
