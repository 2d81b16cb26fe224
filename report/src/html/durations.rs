//! How long attempts took: a histogram as inline SVG (passing and other
//! attempts stacked in each bin), and a table of the slowest attempts.

use std::fmt::Write as _;

use testfleet_types::messages::{AttemptReport, AttemptStatus, RunReport, TestReport};

use super::markup::{attempt_class, axis_time, esc, nice_step, text};
use crate::format::{attempt_status_str, did_not_pass, plural, seconds};

/// Bins at most; the bin width is a nice step, so there may be fewer.
const BINS: u64 = 24;
/// Rows in the slowest-attempts table.
const SLOWEST: usize = 10;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 56.0;
const RIGHT_PAD: f64 = 16.0;
const TOP: f64 = 18.0;
const PLOT_HEIGHT: f64 = 220.0;
const AXIS_HEIGHT: f64 = 40.0;

/// How durations map to bins: `bins` of `width` ms from 0; with `overflow`,
/// the last bin holds everything from its start on, so that one straggler
/// does not squeeze every other attempt into the first bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scale {
    width: u64,
    bins: usize,
    overflow: bool,
}

impl Scale {
    /// Bins up to the longest duration; or, when the longest is more than
    /// twice the 99th percentile, bins up to that percentile plus an overflow bin.
    fn for_durations(durations: &[(u64, bool)]) -> Scale {
        let mut sorted: Vec<u64> = durations.iter().map(|d| d.0).collect();
        sorted.sort_unstable();
        let max = sorted.last().copied().unwrap_or(0);
        let p99 = sorted
            .get(sorted.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0);
        if max > p99.max(1).saturating_mul(2) && sorted.len() >= 20 {
            let width = nice_step(p99.saturating_add(1), BINS - 1);
            Scale {
                width,
                bins: (p99 / width) as usize + 2,
                overflow: true,
            }
        } else {
            let width = nice_step(max.saturating_add(1), BINS);
            Scale {
                width,
                bins: (max / width) as usize + 1,
                overflow: false,
            }
        }
    }

    fn slot(self, ms: u64) -> usize {
        ((ms / self.width) as usize).min(self.bins - 1)
    }

    /// Where bin `i` starts, in ms.
    fn start(self, i: usize) -> u64 {
        (i as u64).saturating_mul(self.width)
    }

    fn is_overflow(self, i: usize) -> bool {
        self.overflow && i == self.bins - 1
    }
}

/// Passing and other attempts in one bin.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Bin {
    passed: usize,
    other: usize,
}

impl Bin {
    fn total(self) -> usize {
        self.passed + self.other
    }
}

/// Attempts that ran in a container (the others have no duration).
fn ran(report: &RunReport) -> impl Iterator<Item = (&TestReport, &AttemptReport)> {
    report
        .tests
        .iter()
        .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
        .filter(|(_, a)| matches!(a.status, AttemptStatus::Ran(_)))
}

/// The histogram section's body: the SVG and the slowest attempts.
pub fn render(report: &RunReport) -> String {
    let durations: Vec<(u64, bool)> = ran(report)
        .map(|(_, a)| (a.duration_ms, !did_not_pass(a)))
        .collect();
    if durations.is_empty() {
        return "<p class=\"note\">No attempt ran, so there are no durations.</p>".to_owned();
    }
    let scale = Scale::for_durations(&durations);
    let bins = bin(&durations, scale);
    let mut out = format!(
        "<p class=\"note\">Durations of the {} attempts that ran, in bins of {}; green passed, \
         red did not.",
        durations.len(),
        axis_time(scale.width)
    );
    if scale.overflow {
        let _ = write!(
            out,
            " The last bin holds the {} of {} or longer.",
            plural(bins[scale.bins - 1].total(), "attempt"),
            axis_time(scale.start(scale.bins - 1))
        );
    }
    out.push_str("</p>\n");
    out.push_str(&svg(&bins, scale));
    out.push_str(&slowest(report));
    out
}

/// Counts per bin of the scale.
fn bin(durations: &[(u64, bool)], scale: Scale) -> Vec<Bin> {
    let mut bins = vec![Bin::default(); scale.bins];
    for &(ms, passed) in durations {
        let slot = &mut bins[scale.slot(ms)];
        if passed {
            slot.passed += 1;
        } else {
            slot.other += 1;
        }
    }
    bins
}

fn svg(bins: &[Bin], scale: Scale) -> String {
    let tallest = bins.iter().map(|b| b.total()).max().unwrap_or(1).max(1);
    let y_step = nice_step(tallest as u64, 4) as usize;
    let y_max = tallest.div_ceil(y_step) * y_step;
    let height_of = |n: usize| n as f64 / y_max as f64 * PLOT_HEIGHT;
    let slot = (WIDTH - LEFT - RIGHT_PAD) / bins.len() as f64;
    let height = TOP + PLOT_HEIGHT + AXIS_HEIGHT;
    let base = TOP + PLOT_HEIGHT;
    let mut svg = format!(
        "<svg id=\"histogram\" class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"Histogram of attempt durations\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <g class=\"axis\">\n"
    );
    for count in (0..=y_max).step_by(y_step) {
        let y = base - height_of(count);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{count}</text>",
            WIDTH - RIGHT_PAD,
            LEFT - 8.0,
            y + 4.0
        );
    }
    svg.push_str(&x_labels(scale, slot, base));
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">duration</text></g>",
        LEFT + (WIDTH - LEFT - RIGHT_PAD) / 2.0,
        base + 36.0
    );
    for (i, b) in bins.iter().enumerate().filter(|(_, b)| b.total() > 0) {
        let x = LEFT + i as f64 * slot;
        svg.push_str(&bin_bars(*b, i, scale, x, slot, base, &height_of));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Bin edges under the axis, a dozen at most; an overflow bin is labelled
/// "≥ start" under its middle instead of by its end.
fn x_labels(scale: Scale, slot: f64, base: f64) -> String {
    let mut out = String::new();
    let regular = if scale.overflow {
        scale.bins - 1
    } else {
        scale.bins
    };
    let every = regular.div_ceil(12).max(1);
    for i in (0..=regular).step_by(every) {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            LEFT + i as f64 * slot,
            base + 18.0,
            axis_time(scale.start(i))
        );
    }
    if scale.overflow {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">≥ {}</text>",
            LEFT + (regular as f64 + 0.5) * slot,
            base + 32.0,
            axis_time(scale.start(regular))
        );
    }
    out
}

/// One bin: the passing attempts at the bottom, the others on top, and the
/// count above.
fn bin_bars(
    b: Bin,
    i: usize,
    scale: Scale,
    x: f64,
    slot: f64,
    base: f64,
    height_of: &impl Fn(usize) -> f64,
) -> String {
    let range = if scale.is_overflow(i) {
        format!("{} or longer", axis_time(scale.start(i)))
    } else {
        format!(
            "{}–{}",
            axis_time(scale.start(i)),
            axis_time(scale.start(i + 1))
        )
    };
    let title = format!(
        "{range}: {} ({} passed, {} did not)",
        plural(b.total(), "attempt"),
        b.passed,
        b.other
    );
    let scale = height_of;
    let (bar_x, bar_w) = (x + slot * 0.08, slot * 0.84);
    let passed_top = base - scale(b.passed);
    let other_top = passed_top - scale(b.other);
    let mut out = format!(
        "<g class=\"bin\" data-count=\"{}\"><title>{title}</title>",
        b.total()
    );
    for (class, top, h) in [
        ("s-passed", passed_top, scale(b.passed)),
        ("s-failed", other_top, scale(b.other)),
    ] {
        if h > 0.0 {
            let _ = write!(
                out,
                "<rect class=\"bar {class}\" x=\"{bar_x:.1}\" y=\"{top:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\"/>"
            );
        }
    }
    let _ = writeln!(
        out,
        "<text class=\"count\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
        x + slot / 2.0,
        other_top - 4.0,
        b.total()
    );
    out
}

/// The slowest attempts, slowest first: where a straggler is named.
fn slowest(report: &RunReport) -> String {
    let mut attempts: Vec<_> = ran(report).collect();
    attempts.sort_by_key(|(_, a)| std::cmp::Reverse(a.duration_ms));
    let mut out = String::from(
        "<h3>Slowest attempts</h3>\n<table class=\"list\" id=\"slowest\"><thead><tr>\
         <th>test</th><th>attempt</th><th>status</th><th class=\"num\">duration</th>\
         <th>worker</th></tr></thead><tbody>\n",
    );
    for (test, attempt) in attempts.into_iter().take(SLOWEST) {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td><span class=\"badge {}\">{}</span></td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            text(&test.id, 120),
            attempt.attempt,
            attempt_class(attempt.status),
            esc(attempt_status_str(attempt.status)),
            seconds(attempt.duration_ms),
            attempt
                .worker_id
                .as_deref()
                .map(|w| text(w, 60))
                .unwrap_or_default()
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, ran as attempt, report_with, test};
    use testfleet_types::messages::{FinalStatus, Outcome, VerdictKind};

    #[test]
    fn bins_split_passing_from_the_rest() {
        let durations = [(0, true), (999, true), (1_000, false), (4_500, true)];
        let scale = Scale::for_durations(&durations);
        assert_eq!(
            scale,
            Scale {
                width: 200,
                bins: 23,
                overflow: false
            }
        );
        let by_second = Scale {
            width: 1_000,
            bins: 5,
            overflow: false,
        };
        let bins = bin(&durations, by_second);
        assert_eq!(bins.len(), 5);
        assert_eq!(
            bins[0],
            Bin {
                passed: 2,
                other: 0
            }
        );
        assert_eq!(
            bins[1],
            Bin {
                passed: 0,
                other: 1
            }
        );
        assert_eq!(
            bins[4],
            Bin {
                passed: 1,
                other: 0
            }
        );
    }

    #[test]
    fn a_straggler_goes_to_an_overflow_bin() {
        let mut durations: Vec<(u64, bool)> = (0..100).map(|i| (1_000 + i * 10, true)).collect();
        durations.push((600_000, false));
        let scale = Scale::for_durations(&durations);
        // The 99th percentile is 1,990 ms: bins of 100 ms up to it, then one for the rest.
        assert_eq!(
            scale,
            Scale {
                width: 100,
                bins: 21,
                overflow: true
            }
        );
        let bins = bin(&durations, scale);
        assert_eq!(
            bins[20],
            Bin {
                passed: 0,
                other: 1
            }
        );
        assert_eq!(bins.iter().map(|b| b.total()).sum::<usize>(), 101);
        let svg = svg(&bins, scale);
        assert!(svg.contains(">≥ 2 s</text>"), "{svg}");
        assert!(svg.contains("<title>2 s or longer: 1 attempt (0 passed, 1 did not)</title>"));
    }

    #[test]
    fn the_histogram_counts_every_attempt_that_ran() {
        let report = fixture::sample_report();
        let html = render(&report);
        // Missing and dead-lettered attempts have no duration.
        let counts: usize = html
            .match_indices("<g class=\"bin\" data-count=\"")
            .map(|(at, m)| {
                let rest = &html[at + m.len()..];
                rest[..rest.find('"').unwrap()].parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(counts, ran(&report).count());
        assert!(html.contains("<svg id=\"histogram\""));
        assert!(html.contains("<table class=\"list\" id=\"slowest\">"));
    }

    #[test]
    fn slowest_first() {
        let mut slow = attempt(1, Outcome::Passed, Some(0), "");
        slow.duration_ms = 90_000;
        let report = report_with(
            vec![
                test(
                    "quick",
                    FinalStatus::Passed,
                    vec![attempt(1, Outcome::Passed, Some(0), "")],
                ),
                test("<slow>", FinalStatus::Passed, vec![slow]),
            ],
            VerdictKind::Passed,
        );
        let html = render(&report);
        let slow_at = html.find("<code>&lt;slow&gt;</code>").unwrap();
        assert!(slow_at < html.find("<code>quick</code>").unwrap());
        assert!(html.contains("90.000 s"));
    }
}
