//! The HTML report's page: verdict and counts, failure causes, failures with
//! their output one click away, flaky tests with their attempts, the timeline,
//! durations, then the passing tests; each list bounded.

use std::collections::HashMap;
use std::fmt::Write as _;

use testfleet_types::messages::{
    AttemptReport, CompareClass, FinalStatus, RunReport, SideTally, TestReport,
};

use super::markup::{attempt_class, esc, final_class, output_tail, text};
use super::{batches, durations, timeline};
use crate::compare;
use crate::format::{
    attempt_status_str, counts_line, describe_attempt, describe_final, did_not_pass,
    failed_attempts, flakiest, flakiness_note, last_attempt, one_line, plural, rfc3339,
    run_duration_ms, seconds, test_notes, COUNT_ORDER,
};
use crate::triage::Triage;

const STYLE: &str = include_str!("style.css");

/// Non-passing final statuses, in the order the failures list shows them.
const FAILING: [FinalStatus; 5] = [
    FinalStatus::Failed,
    FinalStatus::TimedOut,
    FinalStatus::Error,
    FinalStatus::DeadLettered,
    FinalStatus::Missing,
];

/// Bounds that keep a 400,000-test run's page openable; each cut is said on
/// the page.
const MAX_FAILURES: usize = 1_000;
/// Failures shown before the rest of the list is folded away.
const FAILURES_IN_VIEW: usize = 20;
/// Failures whose output is embedded; later ones point to `outputs/`.
const MAX_FAILURE_OUTPUTS: usize = 100;
const MAX_FLAKY: usize = 500;
const MAX_PASSED: usize = 1_000;
const MAX_CAUSES: usize = 50;
const MAX_CAUSE_MEMBERS: usize = 20;
const OUTPUT_LINES: usize = 100;
const OUTPUT_LINE_CHARS: usize = 400;
const ID_CHARS: usize = 300;
/// The suite's flakiest tests listed.
const MAX_FLAKIEST: usize = 10;

/// The whole page, self-contained: inline CSS and SVG, no script, nothing fetched.
pub fn render(report: &RunReport, triage: &Triage<'_>) -> String {
    let anchors = Anchors::new(report);
    let mut page = head(report);
    page.push_str(&verdict(report));
    page.push_str("<main>\n");
    page.push_str(&comparison(report));
    page.push_str(&counts(report));
    page.push_str(&causes(&anchors, triage));
    page.push_str(&failures(report, &anchors, triage));
    page.push_str(&flaky(report, &anchors));
    page.push_str(&flakiest_section(report));
    page.push_str(&section(
        "timeline",
        "Timeline",
        "",
        &(legend() + &timeline::render(report)),
    ));
    if let Some(body) = batches::render(report) {
        let count = report.batches.len().to_string();
        page.push_str(&section("batches", "Batches", &count, &body));
    }
    page.push_str(&section(
        "durations",
        "Durations",
        "",
        &durations::render(report),
    ));
    page.push_str(&passed(report, &anchors));
    page.push_str(
        "<footer>Written by testfleet. Everything, every attempt: <code>report.json</code>; \
         every captured output: <code>outputs/</code>.</footer>\n</main>\n</body>\n</html>\n",
    );
    page
}

fn head(report: &RunReport) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>testfleet · {} · {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n",
        text(&report.suite, 100),
        report.verdict.as_str()
    )
}

fn verdict(report: &RunReport) -> String {
    let (class, icon) = if report.verdict.exit_code() == 0 {
        ("v-pass", "✓")
    } else {
        ("v-fail", "✗")
    };
    format!(
        // The verdict's variant name, as report.json spells it, for tools.
        "<header id=\"verdict\" class=\"verdict {class}\" data-verdict=\"{:?}\" data-exit-code=\"{}\">\
         <div class=\"inner\">\n<h1>{icon} {} <small>· exit code {}</small></h1>\n\
         <p class=\"meta\">Suite <code>{}</code> · run <code>{}</code> · {} · {} · finished {}</p>\n\
         </div></header>\n",
        report.verdict,
        report.verdict.exit_code(),
        esc(&capitalized(report.verdict.as_str())),
        report.verdict.exit_code(),
        text(&report.suite, 100),
        report.run_id,
        plural(report.rounds as usize, "round"),
        seconds(run_duration_ms(report)),
        rfc3339(report.finished_at_ms),
    )
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A card per final status, then links to the sections.
fn counts(report: &RunReport) -> String {
    let mut out = format!(
        "<section id=\"counts\" aria-label=\"{}\"><div class=\"counts\">\n",
        esc(&counts_line(report))
    );
    for status in COUNT_ORDER {
        let n = report.count(status);
        let _ = writeln!(
            out,
            "<div class=\"count {}{}\" data-status=\"{}\" data-count=\"{n}\"><b>{n}</b><span>{}</span></div>",
            final_class(status),
            if n == 0 { " zero" } else { "" },
            status.as_str(),
            status.as_str()
        );
    }
    out.push_str(
        "</div>\n<nav class=\"jump\">Jump to: <a href=\"#causes\">causes</a>\
         <a href=\"#failures\">failures</a><a href=\"#flaky\">flaky</a>\
         <a href=\"#timeline\">timeline</a><a href=\"#durations\">durations</a>\
         <a href=\"#passed\">passed</a></nav>\n</section>\n",
    );
    out
}

/// Compared ids of a class an A/B run's page lists, at most; regressions
/// are each shown with both sides' last output.
const MAX_COMPARED_LISTED: usize = 200;

/// An A/B run's comparison, first on its page: the headline, each
/// regression with both sides' last output side by side, then the other
/// differences by class.
fn comparison(report: &RunReport) -> String {
    let Some(comparison) = &report.comparison else {
        return String::new();
    };
    let mut body = format!(
        "<p class=\"meta\">Baseline <code>{}</code> against candidate <code>{}</code>: {}.</p>\n",
        text(&comparison.baseline_image, 200),
        text(&report.spec.image, 200),
        esc(&compare::headline(comparison))
    );
    for class in compare::DIFFERENCES {
        let ids = compare::of_class(report, class);
        if ids.is_empty() {
            continue;
        }
        let _ = writeln!(
            body,
            "<h3 data-class=\"{}\">{} ({})</h3>",
            class.name(),
            capitalized(class.name()),
            ids.len()
        );
        for sides in ids.iter().take(MAX_COMPARED_LISTED) {
            body.push_str(&compared_entry(report, sides, class));
        }
        if ids.len() > MAX_COMPARED_LISTED {
            let _ = writeln!(
                body,
                "<p class=\"note\">… and {} more: see <code>report.json</code>.</p>",
                ids.len() - MAX_COMPARED_LISTED
            );
        }
    }
    section("comparison", "Comparison", "", &body)
}

/// One compared id: each side's tally, and for a regression the last
/// output each side kept.
fn compared_entry(report: &RunReport, sides: &compare::Sides<'_>, class: CompareClass) -> String {
    let tally = |t: &SideTally| {
        format!(
            "passed {}, failed {}, errors {}",
            t.passed, t.failed, t.infra
        )
    };
    let compared = sides.compared;
    let unconfirmed = if class.differs() && !compared.confirmed {
        " · not confirmed"
    } else {
        ""
    };
    let mut out = format!(
        "<details class=\"compared\" data-class=\"{}\"><summary><code class=\"id\">{}</code>\
         <span class=\"facts\">baseline: {} · candidate: {}{unconfirmed}</span></summary>\n",
        class.name(),
        text(&compared.id, ID_CHARS),
        tally(&compared.baseline),
        tally(&compared.candidate),
    );
    for (name, side) in [("Candidate", sides.candidate), ("Baseline", sides.baseline)] {
        let last = side.and_then(|t| t.attempts.iter().rev().find(|a| a.output.is_some()));
        if let Some(attempt) = last {
            let _ = writeln!(out, "<h4>{name}</h4>");
            out.push_str(&attempt_block(report, attempt, true));
        }
    }
    out.push_str("</details>\n");
    out
}

fn section(id: &str, title: &str, aside: &str, body: &str) -> String {
    section_with("", id, title, aside, body)
}

/// A section whose element also carries `data` (attributes, each followed by
/// a space).
fn section_with(data: &str, id: &str, title: &str, aside: &str, body: &str) -> String {
    let aside = if aside.is_empty() {
        String::new()
    } else {
        format!(" <small>{aside}</small>")
    };
    format!("<section {data}id=\"{id}\">\n<h2>{title}{aside}</h2>\n{body}</section>\n")
}

/// The element id of each test's entry (`t-<position in the run>`), so the
/// causes can link to the failures. Ids are unique in a run; the position
/// makes an anchor of any id, whatever characters it holds.
struct Anchors<'a>(HashMap<&'a str, usize>);

impl<'a> Anchors<'a> {
    fn new(report: &'a RunReport) -> Self {
        Anchors(
            report
                .tests
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.as_str(), i))
                .collect(),
        )
    }

    fn of(&self, test: &TestReport) -> String {
        format!(
            "t-{}",
            self.0.get(test.id.as_str()).copied().unwrap_or_default()
        )
    }
}

/// The failure causes: one row per group with its size and members.
fn causes(anchors: &Anchors<'_>, triage: &Triage<'_>) -> String {
    if triage.groups.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<table class=\"list\"><thead><tr><th class=\"num\">tests</th><th>cause</th>\
         <th>failing tests</th></tr></thead><tbody>\n",
    );
    for (i, group) in triage.groups.iter().enumerate().take(MAX_CAUSES) {
        let what = if group.by_rule {
            format!(
                "<span class=\"rule\">rule</span><strong>{}</strong>",
                text(&group.title, 200)
            )
        } else {
            format!("<code>{}</code>", text(&group.title, 250))
        };
        let members: Vec<String> = group
            .tests
            .iter()
            .take(MAX_CAUSE_MEMBERS)
            .map(|t| {
                format!(
                    "<a href=\"#{}\"><code>{}</code></a>",
                    anchors.of(t),
                    text(&t.id, 80)
                )
            })
            .collect();
        let rest = group.tests.len().saturating_sub(MAX_CAUSE_MEMBERS);
        let more = if rest > 0 {
            format!(" … and {rest} more")
        } else {
            String::new()
        };
        let _ = writeln!(
            body,
            "<tr class=\"group\" id=\"cause-{}\"><td class=\"num big\">{}</td><td class=\"cause\">{what}</td>\
             <td class=\"members\">{}{more}</td></tr>",
            i + 1,
            group.tests.len(),
            members.join(" ")
        );
    }
    body.push_str("</tbody></table>\n");
    if triage.groups.len() > MAX_CAUSES {
        let _ = writeln!(
            body,
            "<p class=\"note\">The {} smallest causes are not listed.</p>",
            triage.groups.len() - MAX_CAUSES
        );
    }
    let aside = format!(
        "{}, {}",
        plural(triage.failures(), "failure"),
        plural(triage.groups.len(), "cause")
    );
    // The group count as data, for tools (and the browser test) reading the page.
    let data = format!("data-groups=\"{}\" ", triage.groups.len());
    section_with(&data, "causes", "Failure causes", &aside, &body)
}

/// Every test that did not pass, worst first, output one click away.
fn failures(report: &RunReport, anchors: &Anchors<'_>, triage: &Triage<'_>) -> String {
    let failing: Vec<&TestReport> = FAILING
        .iter()
        .flat_map(|&status| report.with_status(status))
        .collect();
    if failing.is_empty() {
        return section(
            "failures",
            "Failures",
            "",
            "<p class=\"note\">None: every test passed.</p>\n",
        );
    }
    let mut body = String::from("<p class=\"note\">Click a test to see its captured output.</p>\n");
    let listed = failing.len().min(MAX_FAILURES);
    for (n, test) in failing.iter().enumerate().take(listed) {
        if n == FAILURES_IN_VIEW {
            // Past the first screenful, the rest wait one click away, so the
            // charts below stay within reach of a run with many failures.
            let _ = writeln!(
                body,
                "<details class=\"more\"><summary>Show the other {} listed failures</summary>",
                listed - FAILURES_IN_VIEW
            );
        }
        let with_output = n < MAX_FAILURE_OUTPUTS;
        body.push_str(&failure(
            report,
            test,
            &anchors.of(test),
            triage,
            with_output,
        ));
    }
    if listed > FAILURES_IN_VIEW {
        body.push_str("</details>\n");
    }
    if failing.len() > MAX_FAILURES {
        let _ = writeln!(
            body,
            "<p class=\"note\"><strong>… and {} more</strong>, not listed here: see \
             <code>report.json</code> and <code>outputs/</code>.</p>",
            failing.len() - MAX_FAILURES
        );
    }
    section("failures", "Failures", &failing.len().to_string(), &body)
}

fn failure(
    report: &RunReport,
    test: &TestReport,
    anchor: &str,
    triage: &Triage<'_>,
    with_output: bool,
) -> String {
    let last = last_attempt(test);
    let mut facts = vec![describe_final(test, &report.spec)];
    if let Some(attempt) = last {
        facts.extend(attempt_facts(attempt));
    }
    let notes = test_notes(report, test);
    if !notes.is_empty() {
        facts.push(notes);
    }
    let cause = triage
        .group_of(&test.id)
        .map(|g| {
            format!(
                "<span class=\"cause\">cause <a href=\"#cause-{}\">#{}</a>: <code>{}</code></span>",
                g + 1,
                g + 1,
                text(&triage.groups[g].title, 160)
            )
        })
        .unwrap_or_default();
    let mut out = format!(
        "<details class=\"test {}\" id=\"{}\" data-status=\"{}\"><summary>\
         <span class=\"badge {0}\">{}</span> <code class=\"id\">{}</code>\
         <span class=\"facts\">{}</span>{cause}</summary>\n",
        final_class(test.status),
        anchor,
        test.status.as_str(),
        test.status.as_str(),
        text(&test.id, ID_CHARS),
        esc(&facts.join(" · ")),
    );
    let mut attempts: Vec<&AttemptReport> =
        test.attempts.iter().filter(|a| did_not_pass(a)).collect();
    attempts.sort_by_key(|a| std::cmp::Reverse(a.attempt));
    for attempt in attempts {
        out.push_str(&attempt_block(report, attempt, with_output));
    }
    out.push_str("</details>\n");
    out
}

/// Attempt number, duration and worker, for a test's summary line.
fn attempt_facts(attempt: &AttemptReport) -> Vec<String> {
    let mut facts = vec![format!("attempt {}", attempt.attempt)];
    if attempt.started_at_ms.is_some() {
        facts.push(seconds(attempt.duration_ms));
    }
    if let Some(worker) = &attempt.worker_id {
        facts.push(format!("on {}", one_line(worker, 100)));
    }
    facts
}

/// One attempt's heading and the tail of its output.
fn attempt_block(report: &RunReport, attempt: &AttemptReport, with_output: bool) -> String {
    let mut heading = vec![
        format!("Attempt {}", attempt.attempt),
        describe_attempt(attempt, &report.spec),
    ];
    heading.extend(attempt_facts(attempt).into_iter().skip(1));
    if let Some(started) = attempt.started_at_ms {
        heading.push(format!("started {}", rfc3339(started)));
    }
    let mut out = format!(
        "<div class=\"attempt\"><h4>{}</h4>\n",
        esc(&heading.join(" · "))
    );
    match attempt.output.as_deref().filter(|o| !o.is_empty()) {
        Some(output) if with_output => out.push_str(&output_block(attempt, output)),
        Some(_) => out.push_str(
            "<p class=\"note\">Output not embedded (too many failures): see <code>outputs/</code>.</p>\n",
        ),
        None => out.push_str("<p class=\"note\">No output was captured.</p>\n"),
    }
    out.push_str("</div>\n");
    out
}

fn output_block(attempt: &AttemptReport, output: &str) -> String {
    let total = output.lines().count();
    let mut note = Vec::new();
    if total > OUTPUT_LINES {
        note.push(format!(
            "last {OUTPUT_LINES} of {total} lines shown; the whole output is in <code>outputs/</code>"
        ));
    }
    if attempt.output_truncated {
        note.push("the worker kept only the head and tail of a longer output".to_owned());
    }
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("<p class=\"note\">{}.</p>\n", capitalized(&note.join("; ")))
    };
    format!(
        "{note}<div class=\"out\"><pre>{}</pre></div>\n",
        output_tail(output, OUTPUT_LINES, OUTPUT_LINE_CHARS)
    )
}

/// Flaky tests: each with its attempts, the failed ones' output one click away.
fn flaky(report: &RunReport, anchors: &Anchors<'_>) -> String {
    let flaky: Vec<&TestReport> = report.with_status(FinalStatus::Flaky).collect();
    if flaky.is_empty() {
        return section(
            "flaky",
            "Flaky",
            "",
            "<p class=\"note\">No flaky tests.</p>\n",
        );
    }
    let mut body = String::from(
        "<p class=\"note\">Failed at first, then passed on a retry: they count as passed.</p>\n",
    );
    for test in flaky.iter().take(MAX_FLAKY) {
        body.push_str(&flaky_entry(report, test, &anchors.of(test)));
    }
    if flaky.len() > MAX_FLAKY {
        let _ = writeln!(
            body,
            "<p class=\"note\"><strong>… and {} more</strong>: see <code>report.json</code>.</p>",
            flaky.len() - MAX_FLAKY
        );
    }
    section("flaky", "Flaky", &flaky.len().to_string(), &body)
}

fn flaky_entry(report: &RunReport, test: &TestReport, anchor: &str) -> String {
    let failed: Vec<String> = failed_attempts(test)
        .map(|a| a.attempt.to_string())
        .collect();
    let mut out = format!(
        "<details class=\"test s-flaky\" id=\"{}\" data-status=\"flaky\"><summary>\
         <span class=\"badge s-flaky\">flaky</span> <code class=\"id\">{}</code>\
         <span class=\"facts\">failed on attempt {}, then passed{}</span></summary>\n",
        anchor,
        text(&test.id, ID_CHARS),
        failed.join(", "),
        esc(&match test_notes(report, test) {
            notes if notes.is_empty() => notes,
            notes => format!(" · {notes}"),
        }),
    );
    out.push_str(&attempts_table(test));
    for attempt in failed_attempts(test) {
        out.push_str(&attempt_block(report, attempt, true));
    }
    out.push_str("</details>\n");
    out
}

/// The suite's flakiest tests over its recent runs, when the aggregator knew.
fn flakiest_section(report: &RunReport) -> String {
    let flakiest = flakiest(report, MAX_FLAKIEST);
    let Some(flakiness) = report.flakiness.as_ref().filter(|_| !flakiest.is_empty()) else {
        return String::new();
    };
    let mut body = String::from("<ul class=\"flakiest\">\n");
    for test in flakiest {
        body.push_str(&format!(
            "<li><code class=\"id\">{}</code> {}</li>\n",
            text(&test.test_id, ID_CHARS),
            esc(&flakiness_note(test, flakiness.runs))
        ));
    }
    body.push_str("</ul>\n");
    let aside = format!("last {}", plural(flakiness.runs as usize, "run"));
    section("flakiest", "Flakiest of the suite", &aside, &body)
}

fn attempts_table(test: &TestReport) -> String {
    let mut attempts: Vec<&AttemptReport> = test.attempts.iter().collect();
    attempts.sort_by_key(|a| a.attempt);
    let mut out = String::from(
        "<div class=\"attempt\"><table class=\"list attempts\"><thead><tr><th>attempt</th>\
         <th>status</th><th class=\"num\">duration</th><th>worker</th><th>started</th></tr>\
         </thead><tbody>\n",
    );
    for a in attempts {
        let _ =
            writeln!(
            out,
            "<tr><td>{}</td><td><span class=\"badge {}\">{}</span></td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            a.attempt,
            attempt_class(a.status),
            attempt_status_str(a.status),
            seconds(a.duration_ms),
            a.worker_id.as_deref().map(|w| text(w, 60)).unwrap_or_default(),
            a.started_at_ms.map(rfc3339).unwrap_or_default(),
        );
    }
    out.push_str("</tbody></table></div>\n");
    out
}

fn legend() -> String {
    let mut out = String::from("<p class=\"legend\">");
    for (class, name) in [
        ("s-passed", "passed"),
        ("s-failed", "failed"),
        ("s-timedout", "timed out"),
        ("s-error", "infrastructure error"),
    ] {
        let _ = write!(out, "<span class=\"{class}\"><i></i>{name}</span>");
    }
    out.push_str("</p>\n");
    out
}

/// The passing tests, collapsed and capped: last, since they need no action.
fn passed(report: &RunReport, anchors: &Anchors<'_>) -> String {
    let passed: Vec<&TestReport> = report.with_status(FinalStatus::Passed).collect();
    let mut body = format!(
        "<details class=\"more\"><summary>Show the {}</summary>\n\
         <table class=\"list\"><thead><tr><th>test</th><th class=\"num\">duration</th>\
         <th>worker</th></tr></thead><tbody>\n",
        if passed.len() > MAX_PASSED {
            format!("first {MAX_PASSED} of {} passing tests", passed.len())
        } else {
            plural(passed.len(), "passing test")
        }
    );
    for test in passed.iter().take(MAX_PASSED) {
        let last = last_attempt(test);
        let _ = writeln!(
            body,
            "<tr id=\"{}\" data-status=\"passed\"><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
            anchors.of(test),
            text(&test.id, ID_CHARS),
            last.map(|a| seconds(a.duration_ms)).unwrap_or_default(),
            last.and_then(|a| a.worker_id.as_deref())
                .map(|w| text(w, 60))
                .unwrap_or_default(),
        );
    }
    body.push_str("</tbody></table>\n</details>\n");
    if passed.len() > MAX_PASSED {
        let _ = writeln!(
            body,
            "<p class=\"note\"><strong>{} passing tests are not listed</strong> (the list is capped \
             at {MAX_PASSED}): see <code>report.json</code>.</p>",
            passed.len() - MAX_PASSED
        );
    }
    section("passed", "Passed", &passed.len().to_string(), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, ran, report_with, test, WEIRD_ID};
    use crate::triage::triage;
    use testfleet_types::messages::{Outcome, VerdictKind};

    fn page(report: &RunReport) -> String {
        render(report, &triage(report, &[]))
    }

    fn position(html: &str, needle: &str) -> usize {
        html.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the page"))
    }

    #[test]
    fn verdict_and_counts_come_first_then_failures_then_passes() {
        let html = page(&fixture::sample_report());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("data-verdict=\"TestsMissing\" data-exit-code=\"4\""));
        assert!(html.contains("<h1>✗ Tests missing at the deadline"));
        assert!(html.contains("data-status=\"passed\" data-count=\"2\""));
        assert!(html.contains("data-status=\"dead-lettered\" data-count=\"1\""));
        let order = [
            "id=\"verdict\"",
            "id=\"counts\"",
            "id=\"causes\"",
            "id=\"failures\"",
            "id=\"flaky\"",
            "id=\"timeline\"",
            "id=\"durations\"",
            "id=\"passed\"",
        ]
        .map(|section| position(&html, section));
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        // Failed before timed out before error … before missing.
        assert!(position(&html, ">fail-1</code>") < position(&html, ">slow-1</code>"));
        assert!(position(&html, ">infra-1</code>") < position(&html, ">gone-1</code>"));
        assert!(position(&html, ">gone-1</code>") < position(&html, ">pass-1</code>"));
    }

    #[test]
    fn outputs_are_one_click_away_and_escaped() {
        let html = page(&fixture::sample_report());
        assert!(
            html.contains("<details class=\"test s-failed\" id=\"t-2\" data-status=\"failed\">")
        );
        assert!(html.contains("<pre>fail line 1\nfail line 2\n"));
        assert!(html.contains("fail line 25</pre>"));
        assert!(html.contains("The worker kept only the head and tail of a longer output."));
        // The weird id and output: nothing live, nothing that moves a terminal.
        assert!(html.contains("$(rm -rf /) &lt;&amp;&gt; \\u{1b}[31m\\u{0}\\u{ffff}"));
        assert!(html.contains("<pre>red ```` fence ]]&gt; &lt;/details&gt;</pre>"));
        assert!(!html.contains('\u{1b}'));
        assert!(!html.contains(WEIRD_ID));
        assert!(!html.contains("<script"), "no script at all");
        // The only URL allowed is the SVG namespace, which is a name, not a fetch.
        for fetch in [
            "src=",
            "href=\"http",
            "<link",
            "url(",
            "@import",
            "<iframe",
            "<object",
        ] {
            assert!(!html.contains(fetch), "nothing fetched: {fetch}");
        }
    }

    #[test]
    fn causes_link_to_their_failures() {
        let html = page(&fixture::sample_report());
        assert!(html.contains("<section data-groups=\"5\" id=\"causes\">"));
        assert!(html.contains("<small>5 failures, 5 causes</small>"));
        assert!(html.contains("<a href=\"#t-4\"><code>slow-1</code></a>"));
        assert!(html.contains("cause <a href=\"#cause-"));
    }

    #[test]
    fn a_passing_run_says_so() {
        let report = report_with(
            vec![test(
                "ok",
                FinalStatus::Passed,
                vec![ran(1, Outcome::Passed, Some(0), "")],
            )],
            VerdictKind::Passed,
        );
        let html = page(&report);
        assert!(html.contains("class=\"verdict v-pass\""));
        assert!(html.contains("<h1>✓ Passed"));
        assert!(
            !html.contains("id=\"causes\""),
            "no causes without failures"
        );
        assert!(html.contains("None: every test passed."));
        assert!(html.contains("Show the 1 passing test"));
    }

    #[test]
    fn a_huge_run_stays_bounded_and_says_what_it_left_out() {
        let tests: Vec<TestReport> = (0..400_000)
            .map(|i| {
                let (status, outcome) = if i % 100 == 7 {
                    (FinalStatus::Failed, Outcome::Failed)
                } else {
                    (FinalStatus::Passed, Outcome::Passed)
                };
                let mut attempt = ran(1, outcome, Some(1), &format!("error: case {i} broke\n"));
                attempt.worker_id = Some(format!("w{}", i % 50));
                test(&format!("suite::case_{i}"), status, vec![attempt])
            })
            .collect();
        let report = report_with(tests, VerdictKind::TooManyFailures);
        let html = page(&report);
        assert!(html.len() < 8_000_000, "{} bytes", html.len());
        assert!(html.contains("Show the first 1000 of 396000 passing tests"));
        assert!(html.contains("395000 passing tests are not listed"));
        assert!(html.contains("… and 3000 more</strong>, not listed here"));
        assert!(html.contains("<small>4000 failures, 1 cause</small>"));
        assert!(html.contains("Showing 5000 of 400000 attempts"));
        assert_eq!(html.matches("<pre>").count(), MAX_FAILURE_OUTPUTS);
        assert!(html.contains("<summary>Show the other 980 listed failures</summary>"));
    }

    #[test]
    fn an_ab_run_leads_with_its_comparison() {
        let mut report = fixture::ab_report();
        report.tests[0].attempts[2].output = Some("baseline <ok>\n".into());
        let html = render(&report, &crate::triage::triage(&report, &[]));
        let comparison = html.find("<section id=\"comparison\">").unwrap();
        let counts = html.find("<section id=\"counts\"").unwrap();
        assert!(comparison < counts, "first on the page");
        let regressed = html
            .find("<h3 data-class=\"regressed\">Regressed (1)</h3>")
            .unwrap();
        let fixed = html.find("<h3 data-class=\"fixed\">").unwrap();
        let candidate = html.find("libfoo: symbol v1_api not found").unwrap();
        let baseline = html.find("baseline &lt;ok&gt;").unwrap();
        assert!(regressed < candidate && candidate < baseline && baseline < fixed);
        assert!(html.contains("1 confirmed regression of 4 ids"));
    }
}
