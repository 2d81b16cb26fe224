//! `summary.md`: the run as Markdown fit for a pull-request comment, kept under
//! GitHub's comment size limit.
//!
//! Everything that comes from outside (ids, outputs, messages, worker names) is
//! put in code spans or fenced blocks sized to their content, so it can neither
//! break the layout nor render as Markdown or HTML.

use testfleet_types::messages::{
    AttemptReport, CompareClass, FinalStatus, RunReport, SideTally, TestReport,
};

use super::compare;
use super::format::{
    cache_line, counts_line, describe_final, did_not_pass, failed_attempts, flakiest,
    flakiness_note, last_attempt, one_line, plural, rfc3339, run_duration_ms, seconds, slowest,
    tail_lines, test_notes, verdict_cut_note, SLOWEST_SHOWN,
};
use super::triage::{Group, Triage};

/// GitHub refuses comments over 65,536 characters; this leaves room for a bot's
/// own preamble. Lengths are counted in bytes, never fewer than characters, so
/// the real character count is at most this.
pub const COMMENT_LIMIT: usize = 60_000;

/// Output lines shown per test, tried in turn until the whole summary fits.
const TAIL_LEVELS: [usize; 3] = [20, 5, 0];
const MAX_LINE_CHARS: usize = 300;
const MAX_ID_CHARS: usize = 300;

/// Failure causes listed, and test ids named per cause: enough to see the
/// shape of a run's failures without crowding out the sections below.
const MAX_CAUSES: usize = 10;
const MAX_CAUSE_IDS: usize = 5;
const MAX_CAUSE_ID_CHARS: usize = 80;

/// The suite's flakiest tests named in the header.
const MAX_FLAKIEST: usize = 5;

/// Room kept for one "… and N more" note.
const NOTE_ROOM: usize = 64;

const SHORTENED_NOTE: &str =
    "_Shortened to fit a pull-request comment: `report.json`, `junit.xml` and `outputs/` hold everything._\n";

/// The sections, in the order they appear.
const SECTIONS: [(FinalStatus, &str); 6] = [
    (FinalStatus::Failed, "Failed"),
    (FinalStatus::TimedOut, "Timed out"),
    (FinalStatus::Error, "Errors"),
    (FinalStatus::DeadLettered, "Dead-lettered"),
    (FinalStatus::Missing, "Missing"),
    (FinalStatus::Flaky, "Flaky"),
];

/// The summary, at most [`COMMENT_LIMIT`] bytes, with the run's failures
/// grouped by cause as `triage` found them.
pub fn render(report: &RunReport, triage: &Triage<'_>) -> String {
    render_within(report, triage, COMMENT_LIMIT)
}

/// The summary in at most about `limit` bytes: output tails shrink first, then
/// the lists are cut, each cut list ending with "… and N more".
pub fn render_within(report: &RunReport, triage: &Triage<'_>, limit: usize) -> String {
    if report.comparison.is_some() {
        return render_compared(report, limit);
    }
    let header = header(report)
        + &slowest_line(report)
        + &reasons_line(report)
        + &causes(triage)
        + &flakiest_line(report);
    let sections = sections(report);
    let mut shortened = false;
    for tail in TAIL_LEVELS {
        let (text, cut) = assemble(report, &header, &sections, tail, limit, shortened);
        if !cut || tail == 0 {
            return text;
        }
        shortened = true;
    }
    unreachable!("the last tail level always returns")
}

/// The classes an A/B run's summary lists, in order, with their titles:
/// passing ids are only counted.
const COMPARED_SECTIONS: [(CompareClass, &str); 5] = [
    (CompareClass::Regressed, "Regressed"),
    (CompareClass::Fixed, "Fixed"),
    (CompareClass::Flaky, "Flaky"),
    (
        CompareClass::Infra,
        "Could not compare (the fleet's errors)",
    ),
    (CompareClass::Failing, "Failing on both sides"),
];

/// An A/B run's summary: the headline, then each class's ids, regressions
/// first with the last output of both sides.
fn render_compared(report: &RunReport, limit: usize) -> String {
    let header = header(report);
    for tail in TAIL_LEVELS {
        let mut out = header.clone();
        let mut cut = false;
        for (class, title) in COMPARED_SECTIONS {
            let ids = compare::of_class(report, class);
            if ids.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "### {title} ({})

",
                ids.len()
            ));
            let reserve = SHORTENED_NOTE.len() + NOTE_ROOM * COMPARED_SECTIONS.len();
            let mut shown = 0;
            for sides in &ids {
                let entry = compared_entry(sides, class, tail);
                if out.len() + entry.len() + reserve > limit {
                    break;
                }
                out.push_str(&entry);
                shown += 1;
            }
            if shown < ids.len() {
                cut = true;
                out.push_str(&format!("\n… and {} more\n", ids.len() - shown));
            }
            out.push('\n');
        }
        if !cut || tail == 0 {
            if cut || tail < TAIL_LEVELS[0] {
                out.push_str(SHORTENED_NOTE);
            }
            return out;
        }
    }
    unreachable!("the last tail level always returns")
}

/// One compared id: each side's tally and the candidate's reason; for a
/// regression, the last output of each side.
fn compared_entry(sides: &compare::Sides<'_>, class: CompareClass, tail: usize) -> String {
    let compared = sides.compared;
    let id = code_span(&one_line(&compared.id, MAX_ID_CHARS));
    let tally = |t: &SideTally| {
        let mut parts = vec![
            format!("passed {}", t.passed),
            format!("failed {}", t.failed),
        ];
        if t.infra > 0 {
            parts.push(format!("errors {}", t.infra));
        }
        parts.join(", ")
    };
    let reason = sides
        .candidate
        .and_then(|t| t.attempts.iter().rev().find(|a| did_not_pass(a)))
        .and_then(crate::reasons::reason_of_attempt)
        .map(|r| format!(" · {}", code_span(&r.name)))
        .unwrap_or_default();
    let unconfirmed = if class.differs() && !compared.confirmed {
        " · **not confirmed** (the run ended first)"
    } else {
        ""
    };
    let mut item = format!(
        "- {id} — baseline: {} · candidate: {}{reason}{unconfirmed}\n",
        tally(&compared.baseline),
        tally(&compared.candidate)
    );
    if class == CompareClass::Regressed && tail > 0 {
        for (name, side) in [("Candidate", sides.candidate), ("Baseline", sides.baseline)] {
            let last = side.and_then(|t| t.attempts.iter().rev().find(|a| a.output.is_some()));
            if let Some(attempt) = last {
                item.push_str(&output_details_of(name, attempt, tail));
            }
        }
    }
    item
}

/// The suite's flakiest tests over its recent runs, on one line.
fn flakiest_line(report: &RunReport) -> String {
    let (Some(flakiness), flakiest) = (&report.flakiness, flakiest(report, MAX_FLAKIEST)) else {
        return String::new();
    };
    if flakiest.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = flakiest
        .iter()
        .map(|t| {
            format!(
                "{} ({})",
                code_span(&one_line(&t.test_id, MAX_CAUSE_ID_CHARS)),
                flakiness_note(t, flakiness.runs)
            )
        })
        .collect();
    format!("**Flakiest of the suite**: {}\n\n", listed.join(", "))
}

struct Section<'a> {
    title: &'static str,
    tests: Vec<&'a TestReport>,
}

fn sections(report: &RunReport) -> Vec<Section<'_>> {
    SECTIONS
        .iter()
        .map(|&(status, title)| Section {
            title,
            tests: report.with_status(status).collect(),
        })
        .filter(|section| !section.tests.is_empty())
        .collect()
}

/// Joins the header and sections, with entries showing `tail` output lines, in
/// order while they fit in `limit`. Entries are rendered only as they are
/// tried, so a run with thousands of failures costs what fits, not what failed.
/// Returns the text and whether any entry was left out.
fn assemble(
    report: &RunReport,
    header: &str,
    sections: &[Section<'_>],
    tail: usize,
    limit: usize,
    shortened: bool,
) -> (String, bool) {
    let mut out = header.to_owned();
    let mut cut = false;
    for (i, section) in sections.iter().enumerate() {
        // Keep room for every later section's heading, first entry (without
        // output) and note, and the footer, so a long first section cannot
        // hide the others or what is in them.
        let reserve: usize = sections[i + 1..]
            .iter()
            .map(|s| {
                let first = s.tests.first().map_or(0, |t| entry(report, t, 0).len());
                heading(s).len() + first + NOTE_ROOM
            })
            .sum::<usize>()
            + SHORTENED_NOTE.len()
            + NOTE_ROOM;
        out.push_str(&heading(section));
        let mut shown = 0;
        for test in &section.tests {
            let entry = entry(report, test, tail);
            if out.len() + entry.len() + reserve > limit {
                break;
            }
            out.push_str(&entry);
            shown += 1;
        }
        let rest = section.tests.len() - shown;
        if rest > 0 {
            cut = true;
            // The blank line ends the list, so the note is not read as part of
            // the last item.
            out.push_str(&format!("\n… and {rest} more\n"));
        }
        out.push('\n');
    }
    if cut || shortened {
        out.push_str(SHORTENED_NOTE);
    }
    (out, cut)
}

fn heading(section: &Section<'_>) -> String {
    format!("### {} ({})\n\n", section.title, section.tests.len())
}

fn header(report: &RunReport) -> String {
    let icon = if report.verdict.exit_code() == 0 {
        "✅"
    } else {
        "❌"
    };
    let counts = match &report.comparison {
        Some(comparison) => compare::headline(comparison),
        None => counts_line(report),
    };
    let mut header = format!(
        "## {icon} {} — {}\n\nSuite {} · run `{}` · {} · {} · finished {}\n\n",
        capitalized(report.verdict.as_str()),
        counts,
        code_span(&one_line(&report.suite, MAX_ID_CHARS)),
        report.run_id,
        plural(report.rounds as usize, "round"),
        seconds(run_duration_ms(report)),
        rfc3339(report.finished_at_ms),
    );
    let cut = verdict_cut_note(report);
    if !cut.is_empty() {
        header.push_str(&format!("> {}\n\n", code_span(&cut)));
    }
    let cache = cache_line(report);
    if !cache.is_empty() {
        header.push_str(&format!("**Cache:** {cache}\n\n"));
    }
    header
}

/// "**Slowest:** `a` 12.000 s, `b` 3.000 s": where a campaign's time went.
fn slowest_line(report: &RunReport) -> String {
    let slowest = slowest(report, SLOWEST_SHOWN);
    if slowest.len() < 2 {
        return String::new();
    }
    let parts: Vec<String> = slowest
        .iter()
        .map(|(id, ms)| {
            format!(
                "{} {}",
                code_span(&one_line(id, MAX_CAUSE_ID_CHARS)),
                seconds(*ms)
            )
        })
        .collect();
    format!("**Slowest:** {}\n\n", parts.join(", "))
}

/// "### Failure causes: 40 failures, 2 causes", then one line per cause with
/// its size and first few tests; bounded whatever the run.
fn causes(triage: &Triage<'_>) -> String {
    if triage.groups.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "### Failure causes: {}, {}\n\n",
        plural(triage.failures(), "failure"),
        plural(triage.groups.len(), "cause")
    );
    for group in triage.groups.iter().take(MAX_CAUSES) {
        out.push_str(&cause_line(group));
    }
    if triage.groups.len() > MAX_CAUSES {
        let rest = triage.groups.len() - MAX_CAUSES;
        let noun = if rest == 1 { "cause" } else { "causes" };
        out.push_str(&format!("\n… and {rest} more {noun}\n"));
    }
    out.push('\n');
    out
}

/// "**Why:** 3 × `exit:1`, 1 × `oom`, 1 × `host-oom` (the fleet's)", the
/// biggest reasons first; bounded whatever the run.
fn reasons_line(report: &RunReport) -> String {
    let groups = crate::reasons::by_reason(report);
    if groups.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = groups
        .iter()
        .take(MAX_CAUSES)
        .map(|group| {
            let whose = if group.reason.fleet_fault {
                " (the fleet's)"
            } else {
                ""
            };
            let name = code_span(&one_line(&group.reason.name, MAX_CAUSE_ID_CHARS));
            format!("{} × {name}{whose}", group.tests.len())
        })
        .collect();
    if groups.len() > MAX_CAUSES {
        parts.push(format!("… and {} more", groups.len() - MAX_CAUSES));
    }
    format!("**Why:** {}\n\n", parts.join(", "))
}

fn cause_line(group: &Group<'_>) -> String {
    let title = code_span(&one_line(&group.title, 250));
    let what = if group.by_rule {
        format!("rule {title}")
    } else {
        title
    };
    let ids: Vec<String> = group
        .tests
        .iter()
        .take(MAX_CAUSE_IDS)
        .map(|t| code_span(&one_line(&t.id, MAX_CAUSE_ID_CHARS)))
        .collect();
    let rest = group.tests.len().saturating_sub(MAX_CAUSE_IDS);
    let more = if rest > 0 {
        format!(" … and {rest} more")
    } else {
        String::new()
    };
    format!(
        "- **{}** × {what} — {}{more}\n",
        group.tests.len(),
        ids.join(", ")
    )
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One list item: the id, what happened, and for tests that ran and failed the
/// tail of their output.
fn entry(report: &RunReport, test: &TestReport, tail: usize) -> String {
    let id = code_span(&one_line(&test.id, MAX_ID_CHARS));
    let last = last_attempt(test);
    let facts = match test.status {
        FinalStatus::Flaky => flaky_facts(test),
        status if status.ran_and_did_not_pass() => ran_facts(report, test, last),
        _ => format!(
            "{}{}",
            describe_final(test, &report.spec),
            last.map(|a| format!(" · attempt {}", a.attempt))
                .unwrap_or_default()
        ),
    };
    let notes = test_notes(report, test);
    let mut item = match notes.is_empty() {
        true => format!("- {id} — {facts}\n"),
        false => format!("- {id} — {facts} · {}\n", code_span(&one_line(&notes, 300))),
    };
    let ran = test.status.ran_and_did_not_pass();
    if let Some(attempt) = last.filter(|_| ran && tail > 0) {
        item.push_str(&output_details(attempt, tail));
    }
    item
}

/// Exit code, attempt, duration and worker of the final attempt of a test that
/// ran; for timeouts and errors, what happened first.
fn ran_facts(report: &RunReport, test: &TestReport, last: Option<&AttemptReport>) -> String {
    let Some(attempt) = last else {
        return test.status.as_str().to_owned();
    };
    let mut facts = Vec::new();
    match test.status {
        FinalStatus::TimedOut => facts.push(format!(
            "timed out after {}",
            seconds(report.spec.timeout_ms)
        )),
        FinalStatus::Error => facts.push(match &attempt.message {
            Some(message) => format!(
                "infrastructure error {}",
                code_span(&one_line(message, 200))
            ),
            None => "infrastructure error".to_owned(),
        }),
        _ => {}
    }
    facts.push(match attempt.exit_code {
        Some(code) => format!("exit code {code}"),
        None => "no exit code".to_owned(),
    });
    facts.push(format!("attempt {}", attempt.attempt));
    facts.push(seconds(attempt.duration_ms));
    if let Some(worker) = &attempt.worker_id {
        facts.push(format!("on {}", code_span(&one_line(worker, 100))));
    }
    facts.join(" · ")
}

fn flaky_facts(test: &TestReport) -> String {
    let failed: Vec<String> = failed_attempts(test)
        .map(|a| a.attempt.to_string())
        .collect();
    let passed = last_attempt(test).filter(|a| !did_not_pass(a));
    match (failed.is_empty(), passed) {
        (true, _) => "passed after a retry".to_owned(),
        (false, Some(passed)) => format!(
            "failed on attempt{} {}, passed on attempt {}",
            if failed.len() == 1 { "" } else { "s" },
            failed.join(", "),
            passed.attempt
        ),
        (false, None) => format!("failed on attempts {}", failed.join(", ")),
    }
}

/// A collapsed block with the last `tail` lines of the attempt's output,
/// indented to belong to the list item above it.
fn output_details(attempt: &AttemptReport, tail: usize) -> String {
    output_details_of("", attempt, tail)
}

/// [`output_details`], its summary naming whose output it is (`whose`, or
/// nothing).
fn output_details_of(whose: &str, attempt: &AttemptReport, tail: usize) -> String {
    let Some(output) = attempt.output.as_deref().filter(|o| !o.is_empty()) else {
        return String::new();
    };
    let lines = tail_lines(output, tail, MAX_LINE_CHARS);
    let total = output.lines().count();
    let mut summary = if lines.len() < total {
        format!("Last {} of {total} lines of output", lines.len())
    } else {
        format!("Output ({})", plural(total, "line"))
    };
    if !whose.is_empty() {
        summary = format!(
            "{whose} (attempt {}): {}{}",
            attempt.attempt,
            summary[..1].to_lowercase(),
            &summary[1..]
        );
    }
    if attempt.output_truncated {
        summary.push_str(", truncated by the worker");
    }
    let fence = fence_for(&lines);
    let mut block = format!("  <details><summary>{summary}</summary>\n\n  {fence}text\n");
    for line in &lines {
        block.push_str("  ");
        block.push_str(line);
        block.push('\n');
    }
    block.push_str(&format!("  {fence}\n\n  </details>\n\n"));
    block
}

/// A code fence longer than any run of backticks in `lines`, so no line can
/// close it early.
fn fence_for(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .map(|line| longest_backtick_run(line))
        .max()
        .unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` as an inline code span. Markdown has no escape for a backtick inside a
/// code span: the delimiter must instead be longer than any backtick run inside,
/// with a space of padding where the content starts or ends with a backtick or
/// space (one such space on each side is dropped by the renderer).
fn code_span(text: &str) -> String {
    if text.is_empty() {
        return "*(empty)*".to_owned();
    }
    let ticks = "`".repeat(longest_backtick_run(text) + 1);
    let pad = if text.starts_with(['`', ' ']) || text.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, triage};
    use testfleet_types::messages::{Outcome, VerdictKind};

    /// Renders with signatures alone, as without any configured rule.
    fn render(report: &RunReport) -> String {
        super::render(report, &triage::triage(report, &[]))
    }

    #[test]
    fn title_has_verdict_and_counts() {
        let md = render(&fixture::sample_report());
        let title = md.lines().next().unwrap();
        assert_eq!(
            title,
            "## ❌ Tests missing at the deadline — 9 tests: 2 passed, 2 failed, 1 timed out, \
             1 flaky, 1 missing, 1 dead-lettered, 1 error"
        );
        assert!(md.contains("· 2 rounds · 61.500 s · finished 2023-11-14T22:14:21.5Z"));

        let passed = fixture::report_with(
            vec![fixture::test(
                "ok",
                FinalStatus::Passed,
                vec![fixture::ran(1, Outcome::Passed, Some(0), "")],
            )],
            VerdictKind::Passed,
        );
        let md = render(&passed);
        assert!(md.starts_with("## ✅ Passed — 1 test: 1 passed, 0 failed"));
        assert!(!md.contains("###"), "no empty sections: {md}");
    }

    #[test]
    fn every_section_lists_its_tests() {
        let md = render(&fixture::sample_report());
        let order: Vec<usize> = [
            "### Failed (2)",
            "### Timed out (1)",
            "### Errors (1)",
            "### Dead-lettered (1)",
            "### Missing (1)",
            "### Flaky (1)",
        ]
        .iter()
        .map(|h| md.find(h).unwrap_or_else(|| panic!("no {h} in\n{md}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "section order");

        assert!(md.contains("- `fail-1` — exit code 2 · attempt 2 · 2.468 s · on `worker-a`\n"));
        assert!(md.contains("- `slow-1` — timed out after 5.000 s · exit code 137 · attempt 1"));
        assert!(md.contains(
            "- `infra-1` — infrastructure error `image testfleet/busybox not found` · no exit code"
        ));
        assert!(md.contains(
            "- `dead-1` — dead-lettered: the broker gave up after 5 deliveries · attempt 1\n"
        ));
        assert!(md.contains(
            "- `gone-1` — did not run: no result before the run's deadline (timeout or drop) · attempt 2\n"
        ));
        assert!(md.contains("- `flaky-1` — failed on attempt 1, passed on attempt 2\n"));
        assert!(!md.contains("- `pass-1`"), "passed tests are not listed");
        assert!(!md.contains("…"), "nothing shortened");
    }

    #[test]
    fn the_slowest_tests_are_named_by_their_longest_attempt() {
        let md = render(&fixture::sample_report());
        let line = md.lines().find(|l| l.starts_with("**Slowest:**")).unwrap();
        assert!(
            line.starts_with(
                "**Slowest:** `flaky-1` 2.468 s, `fail-1` 2.468 s, `pass-1` 1.234 s, "
            ),
            "{line}"
        );
        assert_eq!(line.matches(" s").count(), SLOWEST_SHOWN, "{line}");
    }

    #[test]
    fn failing_output_is_the_last_twenty_lines_in_a_collapsed_block() {
        let md = render(&fixture::sample_report());
        assert!(md.contains(
            "  <details><summary>Last 20 of 25 lines of output, truncated by the worker</summary>\n\n  ```text\n  fail line 6\n"
        ));
        assert!(md.contains("  fail line 25\n  ```\n\n  </details>\n"));
        assert!(!md.contains("fail line 5\n"));
    }

    #[test]
    fn ids_and_outputs_cannot_break_out() {
        let md = render(&fixture::sample_report());
        // The id has single backticks and a newline: a double-tick span, newline escaped.
        assert!(md.contains(
            "- ``we\"ird 'id'\\nwith `ticks` ünïcødé 🚀 $(rm -rf /) <&> \\u{1b}[31m\\u{0}\\u{ffff}`` — exit code 3"
        ), "{md}");
        // The output holds a run of four backticks, so the fence has five.
        assert!(md.contains("  `````text\n  red ```` fence ]]> </details>\n  `````\n"));
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x"), "`` `x ``");
        assert_eq!(code_span(""), "*(empty)*");
    }

    #[test]
    fn huge_report_stays_under_the_comment_limit() {
        let output = "x".repeat(200) + "\n";
        let mut tests: Vec<_> = (0..5_000)
            .map(|i| {
                fixture::test(
                    &format!("suite::case_{i}"),
                    FinalStatus::Failed,
                    vec![fixture::ran(
                        1,
                        Outcome::Failed,
                        Some(1),
                        &output.repeat(50),
                    )],
                )
            })
            .collect();
        tests.push(fixture::test(
            "late-flaky",
            FinalStatus::Flaky,
            vec![
                fixture::ran(1, Outcome::Failed, Some(1), "boom"),
                fixture::ran(2, Outcome::Passed, Some(0), ""),
            ],
        ));
        let report = fixture::report_with(tests, VerdictKind::TooManyFailures);
        let md = render(&report);
        assert!(
            md.chars().count() <= COMMENT_LIMIT,
            "{} chars",
            md.chars().count()
        );
        assert!(md.len() > COMMENT_LIMIT - 2_000, "the budget is used");
        assert!(md.contains("### Failed (5000)"));
        assert!(md.contains("- `suite::case_0` — exit code 1"));
        assert!(!md.contains("<details>"), "outputs go before entries do");
        let more = md.lines().find(|l| l.starts_with("… and ")).unwrap();
        let shown = md.matches("- `suite::case_").count();
        assert_eq!(more, format!("… and {} more", 5_000 - shown));
        assert!(
            md.contains("### Flaky (1)\n\n- `late-flaky`"),
            "later sections survive"
        );
        assert!(md.ends_with(SHORTENED_NOTE));
    }

    #[test]
    fn medium_report_keeps_shorter_outputs() {
        let output = "y".repeat(100) + "\n";
        let tests = (0..60)
            .map(|i| {
                fixture::test(
                    &format!("t{i}"),
                    FinalStatus::Failed,
                    vec![fixture::ran(
                        1,
                        Outcome::Failed,
                        Some(1),
                        &output.repeat(30),
                    )],
                )
            })
            .collect();
        let report = fixture::report_with(tests, VerdictKind::TestsFailed);
        let md = render(&report);
        assert!(md.len() <= COMMENT_LIMIT);
        assert_eq!(md.matches("Last 5 of 30 lines of output").count(), 60);
        assert!(!md.contains("\n… and"), "no list was cut");
        assert!(md.ends_with(SHORTENED_NOTE));
    }

    #[test]
    fn failure_causes_come_first_with_counts_and_members() {
        let tests = (0..12)
            .map(|i| {
                let output = if i < 3 {
                    format!("setup\nERROR: connection refused by db-{i}:5432\n")
                } else {
                    format!("assertion failed: left {i} != right {}\n", i + 1)
                };
                fixture::test(
                    &format!("t{i}"),
                    FinalStatus::Failed,
                    vec![fixture::ran(1, Outcome::Failed, Some(1), &output)],
                )
            })
            .collect();
        let report = fixture::report_with(tests, VerdictKind::TestsFailed);
        let rules = [testfleet_types::triage::TriageRule {
            name: "db down".into(),
            pattern: regex::Regex::new("connection refused").unwrap(),
        }];
        let md = super::render(&report, &triage::triage(&report, &rules));
        let causes = md
            .find("### Failure causes: 12 failures, 2 causes\n\n")
            .unwrap();
        assert!(causes < md.find("### Failed (12)").unwrap(), "{md}");
        assert!(md.contains(
            "- **9** × `assertion failed: left N != right N` — `t3`, `t4`, `t5`, `t6`, `t7` … and 4 more\n"
        ), "{md}");
        assert!(
            md.contains("- **3** × rule `db down` — `t0`, `t1`, `t2`\n"),
            "{md}"
        );

        let many = (0..15)
            .map(|i| {
                fixture::test(
                    &format!("u{i}"),
                    FinalStatus::Failed,
                    vec![fixture::ran(
                        1,
                        Outcome::Failed,
                        Some(1),
                        &format!("error in step {}\n", "x".repeat(i)),
                    )],
                )
            })
            .collect();
        let md = render(&fixture::report_with(many, VerdictKind::TestsFailed));
        assert!(md.contains("15 failures, 15 causes"));
        assert_eq!(md.matches("- **1** × ").count(), MAX_CAUSES);
        assert!(md.contains("\n… and 5 more causes\n"), "{md}");
    }

    #[test]
    fn an_ab_run_leads_with_its_regressions_and_both_sides_logs() {
        let mut report = fixture::ab_report();
        let baseline = &mut report.tests[0].attempts[2];
        baseline.output = Some("libfoo v1 ok\n".into());
        let text = render(&report);
        assert!(
            text.starts_with("## ❌ Tests failed — 1 confirmed regression of 4 ids"),
            "{text}"
        );
        let regressed = text.find("### Regressed (1)").unwrap();
        let fixed = text.find("### Fixed (1)").unwrap();
        let failing = text.find("### Failing on both sides (1)").unwrap();
        assert!(regressed < fixed && fixed < failing, "{text}");
        let candidate_log = text.find("libfoo: symbol v1_api not found").unwrap();
        let baseline_log = text.find("libfoo v1 ok").unwrap();
        assert!(regressed < candidate_log && candidate_log < baseline_log && baseline_log < fixed);
        assert!(text.contains("`exit:1`"));
        assert!(!text.contains("ok-app"), "passing ids are only counted");
        assert!(!text.contains("base::"), "ids are plain");
    }

    #[test]
    fn a_run_of_the_cache_network_says_what_the_caches_served() {
        use testfleet_types::messages::{CacheCounters, CacheUse};
        let mut report = fixture::sample_report();
        report.cache = Some(CacheUse {
            caches: vec![CacheCounters {
                name: "apt".into(),
                package_hits: 6,
                package_misses: 2,
                ..Default::default()
            }],
            error: Some("pypi: no answer in 3s".into()),
        });
        let text = render(&report);
        assert!(
            text.contains("**Cache:** apt 6 of 8 packages from the cache (75 %), not asked: pypi: no answer in 3s\n"),
            "{text}"
        );
    }
}
