//! The per-worker timeline: an inline SVG with one lane per worker and a bar
//! per attempt from its start to its end, coloured by how it ended. A worker
//! running several tests at once gets a row per concurrent attempt in its
//! lane. The longest attempts are outlined and named, so stragglers stand out.
//!
//! A batch is a frame around its tests, which sit one after another in it
//! from the moment its command started (their reported durations, in report
//! order: a runner's report says how long each test took, not when it ran),
//! and the frame's shaded start is its fixed cost: the container starting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use testfleet_types::messages::{AttemptReport, BatchRecord, RunReport, TestReport};
use uuid::Uuid;

use super::markup::{attempt_class, axis_time, esc, nice_step, text};
use crate::format::{attempt_status_str, did_not_pass, one_line, seconds};

/// Bars drawn at most; a bigger run shows every attempt that did not pass and
/// the longest of the rest, and says so.
pub const MAX_BARS: usize = 5_000;
/// Lanes drawn at most (workers beyond, by name, are left out and counted).
pub const MAX_LANES: usize = 100;
/// Attempts outlined and named as stragglers.
const STRAGGLERS: usize = 5;

const WIDTH: f64 = 1200.0;
const LABEL_WIDTH: f64 = 170.0;
const RIGHT_PAD: f64 = 16.0;
const AXIS_HEIGHT: f64 = 28.0;
/// The plot keeps about this height once rows get many.
const PLOT_HEIGHT: f64 = 560.0;
/// Room above and below each lane's bars, so lanes read apart.
const LANE_PAD: f64 = 4.0;

/// One attempt that ran on a worker.
struct Bar<'a> {
    /// Tells bars apart (stragglers are marked by it).
    index: usize,
    /// The row within its worker's lane, one per concurrent attempt.
    row: usize,
    test: &'a TestReport,
    attempt: &'a AttemptReport,
    start: u64,
    end: u64,
}

/// A batch's frame: from its job's start, through its command's start (the
/// shaded setup), to its end.
struct Frame<'a> {
    batch: &'a BatchRecord,
    row: usize,
}

/// One worker's bars, and where its lane starts, in rows from the top.
#[derive(Default)]
struct Lane<'a> {
    bars: Vec<Bar<'a>>,
    frames: Vec<Frame<'a>>,
    rows: usize,
    top: usize,
}

/// What the timeline shows, and what it had to leave out.
struct Plan<'a> {
    lanes: BTreeMap<&'a str, Lane<'a>>,
    rows: usize,
    total_bars: usize,
    drawn_bars: usize,
    hidden_lanes: usize,
    t0: u64,
    t1: u64,
}

fn worker_of<'a>(bar: &Bar<'a>) -> &'a str {
    bar.attempt.worker_id.as_deref().unwrap_or_default()
}

/// The timeline section's body: a note on what is shown, then the SVG; or a
/// sentence when no attempt ran on a worker.
pub fn render(report: &RunReport) -> String {
    let Some(plan) = plan(report) else {
        return "<p class=\"note\">No attempt ran on a worker, so there is no timeline.</p>"
            .to_owned();
    };
    let mut out = note(&plan);
    out.push_str(&svg(&plan));
    out
}

/// Every attempt with a worker and both times, cut to the bounds. An attempt
/// of a known batch is placed after the one before it in that batch.
fn plan(report: &RunReport) -> Option<Plan<'_>> {
    let batches: HashMap<Uuid, &BatchRecord> = report.batches.iter().map(|b| (b.id, b)).collect();
    let mut cursors: HashMap<Uuid, u64> = HashMap::new();
    let mut bars: Vec<Bar<'_>> = report
        .tests
        .iter()
        .flat_map(|test| test.attempts.iter().map(move |attempt| (test, attempt)))
        .filter_map(|(test, attempt)| {
            attempt.worker_id.as_ref()?;
            let (start, end) = match attempt.batch.and_then(|id| batches.get(&id)) {
                Some(batch) => {
                    let cursor = cursors
                        .entry(batch.id)
                        .or_insert(batch.command_started_at_ms);
                    let start = *cursor;
                    *cursor = start.saturating_add(attempt.duration_ms);
                    (start, *cursor)
                }
                None => {
                    let start = attempt.started_at_ms?;
                    (start, attempt.finished_at_ms?.max(start))
                }
            };
            Some(Bar {
                index: 0,
                row: 0,
                test,
                attempt,
                start,
                end,
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    for (index, bar) in bars.iter_mut().enumerate() {
        bar.index = index;
    }
    let total_bars = bars.len();
    let workers: BTreeSet<&str> = bars.iter().map(|b| worker_of(b)).collect();
    let hidden_lanes = workers.len().saturating_sub(MAX_LANES);
    if let Some(&last_kept) = workers.iter().take(MAX_LANES).next_back() {
        bars.retain(|b| worker_of(b) <= last_kept);
    }
    if bars.len() > MAX_BARS {
        // Failures first, then the longest: what a reader looks for.
        bars.sort_by_key(|b| (!did_not_pass(b.attempt), std::cmp::Reverse(b.end - b.start)));
        bars.truncate(MAX_BARS);
    }
    let drawn_bars = bars.len();
    let framed: Vec<&BatchRecord> = report
        .batches
        .iter()
        .filter(|b| bars.iter().any(|bar| bar.attempt.batch == Some(b.id)))
        .collect();
    let t0 = report
        .created_at_ms
        .min(bars.iter().map(|b| b.start).min().unwrap_or(0))
        .min(
            framed
                .iter()
                .map(|b| b.started_at_ms)
                .min()
                .unwrap_or(u64::MAX),
        );
    let t1 = bars
        .iter()
        .map(|b| b.end)
        .chain(framed.iter().map(|b| b.finished_at_ms))
        .max()
        .unwrap_or(t0)
        .max(t0);
    let mut lanes: BTreeMap<&str, Lane<'_>> = BTreeMap::new();
    for bar in bars {
        lanes.entry(worker_of(&bar)).or_default().bars.push(bar);
    }
    let mut rows = 0;
    for lane in lanes.values_mut() {
        lane.rows = pack_rows(&mut lane.bars);
        lane.top = rows;
        rows += lane.rows;
        lane.frames = framed
            .iter()
            .filter_map(|batch| {
                let first = lane
                    .bars
                    .iter()
                    .find(|b| b.attempt.batch == Some(batch.id))?;
                Some(Frame {
                    batch,
                    row: first.row,
                })
            })
            .collect();
    }
    Some(Plan {
        lanes,
        rows,
        total_bars,
        drawn_bars,
        hidden_lanes,
        t0,
        t1,
    })
}

fn note(plan: &Plan<'_>) -> String {
    let mut note = format!(
        "<p class=\"note\">One lane per worker ({}); a bar per attempt from its start to its end \
         (time since the run was submitted). Hover a bar for its test. The {STRAGGLERS} longest \
         attempts are outlined and named.",
        plan.lanes.len()
    );
    if plan.drawn_bars < plan.total_bars {
        let _ = write!(
            note,
            " <strong>Showing {} of {} attempts</strong>: every attempt that did not pass, \
             then the longest of the rest.",
            plan.drawn_bars, plan.total_bars
        );
    }
    if plan.hidden_lanes > 0 {
        let _ = write!(
            note,
            " <strong>{} more workers are not drawn</strong> (lanes are capped at {MAX_LANES}).",
            plan.hidden_lanes
        );
    }
    note.push_str("</p>\n");
    note
}

/// Gives each bar the first row of its lane that is free when it starts (the
/// slots a worker ran attempts in, as far as the times tell) and returns the
/// rows used. A batch's bars move as one, so that its frame holds them all.
fn pack_rows(bars: &mut [Bar<'_>]) -> usize {
    // Units: a batch's bars together, every other bar alone; by start.
    let mut units: Vec<(u64, u64, Option<Uuid>, usize)> = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        match bar.attempt.batch {
            Some(id) => match units.iter_mut().find(|u| u.2 == Some(id)) {
                Some(unit) => {
                    unit.0 = unit.0.min(bar.start);
                    unit.1 = unit.1.max(bar.end);
                }
                None => units.push((bar.start, bar.end, Some(id), i)),
            },
            None => units.push((bar.start, bar.end, None, i)),
        }
    }
    units.sort_by_key(|u| (u.0, u.1));
    let mut row_ends: Vec<u64> = Vec::new();
    let mut unit_rows: Vec<usize> = Vec::with_capacity(units.len());
    for unit in &units {
        let row = match row_ends.iter().position(|&end| end <= unit.0) {
            Some(free) => free,
            None => {
                row_ends.push(0);
                row_ends.len() - 1
            }
        };
        row_ends[row] = unit.1;
        unit_rows.push(row);
    }
    for (unit, row) in units.iter().zip(unit_rows) {
        match unit.2 {
            Some(id) => bars
                .iter_mut()
                .filter(|b| b.attempt.batch == Some(id))
                .for_each(|b| b.row = row),
            None => bars[unit.3].row = row,
        }
    }
    row_ends.len()
}

/// Row geometry: roomy for a few rows, thinner for many.
fn row_height(rows: usize) -> f64 {
    (PLOT_HEIGHT / rows as f64).clamp(3.0, 20.0)
}

/// A lane's top and height, in pixels.
fn lane_box(lane: &Lane<'_>, index: usize, row_h: f64) -> (f64, f64) {
    let pad = if row_h >= 8.0 { LANE_PAD } else { 0.0 };
    let y = lane.top as f64 * row_h + index as f64 * 2.0 * pad;
    (y, lane.rows as f64 * row_h + 2.0 * pad)
}

fn svg(plan: &Plan<'_>) -> String {
    let row_h = row_height(plan.rows);
    let plot_h = plan
        .lanes
        .values()
        .enumerate()
        .next_back()
        .map_or(0.0, |(i, lane)| {
            let (y, h) = lane_box(lane, i, row_h);
            y + h
        });
    let height = plot_h + AXIS_HEIGHT;
    let span = (plan.t1 - plan.t0).max(1);
    let x = |t: u64| LABEL_WIDTH + (t - plan.t0) as f64 / span as f64 * plot_width();
    let stragglers = stragglers(plan);
    let mut svg = format!(
        "<svg id=\"timeline-chart\" class=\"chart\" viewBox=\"0 0 {WIDTH} {height:.0}\" \
         role=\"img\" aria-label=\"Timeline of attempts per worker\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n"
    );
    svg.push_str(&axis(plan.t1 - plan.t0, plot_h, &x, plan.t0));
    for (i, (worker, lane)) in plan.lanes.iter().enumerate() {
        svg.push_str(&lane_svg(worker, lane, i, row_h, &x, &stragglers));
    }
    svg.push_str(&straggler_labels(plan, &stragglers, row_h, &x));
    svg.push_str("</svg>\n");
    svg
}

fn plot_width() -> f64 {
    WIDTH - LABEL_WIDTH - RIGHT_PAD
}

/// Vertical grid lines and their labels under the plot.
fn axis(span: u64, plot_h: f64, x: &impl Fn(u64) -> f64, t0: u64) -> String {
    let step = nice_step(span, 10);
    let mut out = String::from("<g class=\"axis\">\n");
    let mut offset = 0;
    while offset <= span {
        let px = x(t0 + offset);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"0\" x2=\"{px:.1}\" y2=\"{plot_h:.1}\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot_h + 18.0,
            axis_time(offset)
        );
        // Saturating: a span near `u64::MAX` (times no run has) ends the axis.
        match offset.checked_add(step) {
            Some(next) => offset = next,
            None => break,
        }
    }
    out.push_str("</g>\n");
    out
}

/// Where a bar goes vertically: its row within its lane, a little inset.
fn bar_box(lane: &Lane<'_>, index: usize, bar: &Bar<'_>, row_h: f64) -> (f64, f64) {
    let (lane_y, lane_h) = lane_box(lane, index, row_h);
    let pad = (lane_h - lane.rows as f64 * row_h) / 2.0;
    let inset = if row_h >= 8.0 { 1.5 } else { 0.0 };
    (
        lane_y + pad + bar.row as f64 * row_h + inset,
        (row_h - 2.0 * inset).max(2.0),
    )
}

/// One worker's lane: a stripe, the worker's name, and its bars.
fn lane_svg(
    worker: &str,
    lane: &Lane<'_>,
    index: usize,
    row_h: f64,
    x: &impl Fn(u64) -> f64,
    stragglers: &[usize],
) -> String {
    let (y, lane_h) = lane_box(lane, index, row_h);
    let mut out = format!(
        "<g class=\"lane\" data-worker=\"{}\" data-attempts=\"{}\" data-rows=\"{}\">\n\
         <rect class=\"stripe{}\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{lane_h:.1}\"/>\n",
        esc(worker),
        lane.bars.len(),
        lane.rows,
        if index % 2 == 1 { " odd" } else { "" },
    );
    if lane_h >= 10.0 {
        let _ = writeln!(
            out,
            "<text class=\"worker\" x=\"8\" y=\"{:.1}\">{}<title>{}</title></text>",
            y + lane_h / 2.0 + 4.0,
            text(worker, 22),
            text(worker, 300)
        );
    }
    for frame in &lane.frames {
        out.push_str(&frame_svg(lane, index, frame, row_h, x));
    }
    for bar in &lane.bars {
        let (bar_y, bar_h) = bar_box(lane, index, bar, row_h);
        let left = x(bar.start);
        let width = (x(bar.end) - left).max(1.5);
        let straggler = stragglers.contains(&bar.index);
        let _ = writeln!(
            out,
            "<rect class=\"bar {}{}\" x=\"{left:.1}\" y=\"{bar_y:.1}\" width=\"{width:.1}\" \
             height=\"{bar_h:.1}\" rx=\"2\"><title>{}</title></rect>",
            attempt_class(bar.attempt.status),
            if straggler { " straggler" } else { "" },
            tooltip(bar, worker)
        );
    }
    out.push_str("</g>\n");
    out
}

/// A batch's frame around its row, its setup shaded.
fn frame_svg(
    lane: &Lane<'_>,
    index: usize,
    frame: &Frame<'_>,
    row_h: f64,
    x: &impl Fn(u64) -> f64,
) -> String {
    let (lane_y, lane_h) = lane_box(lane, index, row_h);
    let pad = (lane_h - lane.rows as f64 * row_h) / 2.0;
    let y = lane_y + pad + frame.row as f64 * row_h;
    let batch = frame.batch;
    let left = x(batch.started_at_ms);
    let setup_end = x(batch.command_started_at_ms.max(batch.started_at_ms));
    let right = x(batch.finished_at_ms.max(batch.started_at_ms));
    format!(
        "<g class=\"batch\" data-batch=\"{}\" data-tests=\"{}\">\
         <rect class=\"batch-setup\" x=\"{left:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{row_h:.1}\">\
         <title>batch of {} tests: {} before its command started (container start)</title></rect>\
         <rect class=\"batch-frame\" x=\"{left:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{row_h:.1}\"/></g>\n",
        batch.id,
        batch.tests,
        (setup_end - left).max(0.5),
        batch.tests,
        seconds(batch.command_started_at_ms.saturating_sub(batch.started_at_ms)),
        (right - left).max(1.0),
    )
}

fn tooltip(bar: &Bar<'_>, worker: &str) -> String {
    format!(
        "{} — attempt {}, {}, {} on {}",
        text(&bar.test.id, 300),
        bar.attempt.attempt,
        attempt_status_str(bar.attempt.status),
        seconds(bar.end - bar.start),
        text(worker, 100)
    )
}

/// The longest drawn attempts, if they are clearly longer than is usual (more
/// than twice the median), by their index.
fn stragglers(plan: &Plan<'_>) -> Vec<usize> {
    let mut bars: Vec<&Bar<'_>> = plan.lanes.values().flat_map(|l| &l.bars).collect();
    bars.sort_by_key(|b| std::cmp::Reverse(b.end - b.start));
    let median = bars.get(bars.len() / 2).map_or(0, |b| b.end - b.start);
    bars.iter()
        .take(STRAGGLERS)
        .filter(|b| b.end - b.start > median.saturating_mul(2))
        .map(|b| b.index)
        .collect()
}

/// Where a straggler's label goes: inside its bar when the bar is wide enough
/// (white on the bar's colour), else after it, else before it, so it never
/// runs off the chart. Returns x, the text anchor and an extra class.
fn label_place(left: f64, right: f64, label: &str) -> (f64, &'static str, &'static str) {
    // About 7.5 px per character of the 12 px bold label: an estimate, as
    // SVG cannot measure text, erring on the wide side.
    let width = label.chars().count() as f64 * 7.5 + 12.0;
    if right - left >= width {
        (left + 6.0, "start", " inside")
    } else if right + width <= WIDTH - RIGHT_PAD {
        (right + 4.0, "start", "")
    } else {
        (left - 4.0, "end", "")
    }
}

/// Names the stragglers beside their bars, drawn last so no bar covers them.
fn straggler_labels(
    plan: &Plan<'_>,
    stragglers: &[usize],
    row_h: f64,
    x: &impl Fn(u64) -> f64,
) -> String {
    let mut out = String::new();
    for (index, lane) in plan.lanes.values().enumerate() {
        for bar in lane.bars.iter().filter(|b| stragglers.contains(&b.index)) {
            let (bar_y, bar_h) = bar_box(lane, index, bar, row_h);
            let label = format!(
                "{} · {}",
                one_line(&bar.test.id, 40),
                seconds(bar.end - bar.start)
            );
            let (px, anchor, class) = label_place(x(bar.start), x(bar.end), &label);
            let _ = writeln!(
                out,
                "<text class=\"straggler-label{class}\" x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                bar_y + bar_h / 2.0 + 4.0,
                esc(&label),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{ran, report_with, test};
    use testfleet_types::messages::{FinalStatus, Outcome, VerdictKind};

    fn on(worker: &str, start: u64, ms: u64, outcome: Outcome) -> AttemptReport {
        let mut attempt = ran(1, outcome, Some(0), "boom");
        attempt.worker_id = Some(worker.to_owned());
        attempt.started_at_ms = Some(start);
        attempt.finished_at_ms = Some(start + ms);
        attempt.duration_ms = ms;
        attempt
    }

    fn suite(n: usize, workers: usize) -> RunReport {
        let tests = (0..n)
            .map(|i| {
                let base = crate::fixture::CREATED_AT_MS;
                let ms = if i == 7 { 30_000 } else { 1_000 };
                let outcome = if i % 10 == 3 {
                    Outcome::Failed
                } else {
                    Outcome::Passed
                };
                let worker = format!("w{}", i % workers);
                test(
                    &format!("t{i}"),
                    FinalStatus::Passed,
                    vec![on(&worker, base + i as u64 * 100, ms, outcome)],
                )
            })
            .collect();
        report_with(tests, VerdictKind::Passed)
    }

    #[test]
    fn one_lane_per_worker_and_a_bar_per_attempt() {
        let svg = render(&suite(20, 3));
        assert_eq!(svg.matches("<g class=\"lane\"").count(), 3);
        assert!(svg.contains("data-worker=\"w0\" data-attempts=\"7\""));
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 20);
        assert_eq!(svg.matches("class=\"bar s-failed").count(), 2);
        assert!(svg.contains("<title>t7 — attempt 1, passed, 30.000 s on w1</title>"));
        assert_eq!(
            svg.matches(" straggler\"").count(),
            1,
            "only t7 is far longer"
        );
        assert!(svg.contains(">t7 · 30.000 s</text>"));
        assert!(!svg.contains("Showing"));
    }

    #[test]
    fn huge_runs_are_capped_and_say_so() {
        let svg = render(&suite(MAX_BARS + 1_000, MAX_LANES + 20));
        assert_eq!(svg.matches("<rect class=\"bar ").count(), MAX_BARS);
        assert_eq!(svg.matches("<g class=\"lane\"").count(), MAX_LANES);
        assert!(svg.contains(&format!(
            "Showing {MAX_BARS} of {} attempts",
            MAX_BARS + 1_000
        )));
        assert!(svg.contains("20 more workers are not drawn"));

        let svg = render(&suite(MAX_BARS + 1_000, 3));
        assert_eq!(
            svg.matches("class=\"bar s-failed").count(),
            (MAX_BARS + 1_000) / 10,
            "every failure survives the cut"
        );
    }

    #[test]
    fn concurrent_attempts_get_rows_of_their_own() {
        let base = crate::fixture::CREATED_AT_MS;
        let tests = [(0, 1_000), (500, 1_000), (1_000, 300), (1_200, 100)]
            .iter()
            .enumerate()
            .map(|(i, &(start, ms))| {
                test(
                    &format!("c{i}"),
                    FinalStatus::Passed,
                    vec![on("w", base + start, ms, Outcome::Passed)],
                )
            })
            .collect();
        let report = report_with(tests, VerdictKind::Passed);
        let plan = plan(&report).unwrap();
        let lane = &plan.lanes["w"];
        let rows: Vec<(&str, usize)> = lane
            .bars
            .iter()
            .map(|b| (b.test.id.as_str(), b.row))
            .collect();
        // c2 starts as c0 ends and reuses its row; c3 overlaps both others.
        assert_eq!(rows, [("c0", 0), ("c1", 1), ("c2", 0), ("c3", 2)]);
        assert_eq!((lane.rows, plan.rows), (3, 3));
        assert!(render(&report).contains("data-worker=\"w\" data-attempts=\"4\" data-rows=\"3\""));
    }

    #[test]
    fn straggler_labels_stay_on_the_chart() {
        let label = "slow-01 · 9.384 s"; // about 140 px
        assert_eq!(
            label_place(200.0, 900.0, label),
            (206.0, "start", " inside")
        );
        assert_eq!(label_place(200.0, 260.0, label), (264.0, "start", ""));
        assert_eq!(label_place(1_100.0, 1_180.0, label), (1_096.0, "end", ""));
    }

    #[test]
    fn no_worker_no_timeline() {
        let report = report_with(vec![], VerdictKind::Passed);
        assert!(render(&report).contains("no timeline"));
    }
}
