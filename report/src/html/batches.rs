//! The batches section: how the run's tests were grouped into jobs, what each
//! batch cost beyond its tests (the container's start, the runner's start-up
//! and collection), and what one container per test would have paid instead.

use std::collections::HashMap;
use std::fmt::Write as _;

use testfleet_types::messages::{BatchRecord, RunReport};
use uuid::Uuid;

use super::markup::{esc, text};
use crate::format::{plural, seconds};

/// Batches listed at most (the longest first); the totals count them all.
const MAX_LISTED: usize = 200;

/// What a batch cost beyond its tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedCost {
    /// Job start to command start: the container created and started (or
    /// the process spawned) and the files put in.
    pub setup_ms: u64,
    /// The rest of the batch's time beyond its tests' reported durations:
    /// the runner's start-up, collection and teardown.
    pub runner_ms: u64,
}

/// A batch's fixed cost, given the sum of its tests' reported durations.
pub fn fixed_cost(batch: &BatchRecord, reported_ms: u64) -> FixedCost {
    let setup_ms = batch
        .command_started_at_ms
        .saturating_sub(batch.started_at_ms);
    let command_ms = batch
        .finished_at_ms
        .saturating_sub(batch.command_started_at_ms);
    FixedCost {
        setup_ms,
        runner_ms: command_ms.saturating_sub(reported_ms),
    }
}

/// The sum of the reported durations of each batch's tests.
pub fn reported_ms(report: &RunReport) -> HashMap<Uuid, u64> {
    let mut sums: HashMap<Uuid, u64> = HashMap::new();
    for attempt in report.tests.iter().flat_map(|t| &t.attempts) {
        if let Some(batch) = attempt.batch {
            let sum = sums.entry(batch).or_default();
            *sum = sum.saturating_add(attempt.duration_ms);
        }
    }
    sums
}

/// The section's body; `None` when no test ran in a batch.
pub fn render(report: &RunReport) -> Option<String> {
    if report.batches.is_empty() {
        return None;
    }
    let sums = reported_ms(report);
    let costs: Vec<(&BatchRecord, FixedCost)> = report
        .batches
        .iter()
        .map(|b| (b, fixed_cost(b, sums.get(&b.id).copied().unwrap_or(0))))
        .collect();
    let mut body = summary(report, &costs);
    body.push_str(&table(costs));
    Some(body)
}

fn summary(report: &RunReport, costs: &[(&BatchRecord, FixedCost)]) -> String {
    let batches = costs.len();
    let tests: u64 = costs.iter().map(|(b, _)| u64::from(b.tests)).sum();
    let paid: u64 = costs
        .iter()
        .map(|(_, c)| c.setup_ms.saturating_add(c.runner_ms))
        .fold(0, u64::saturating_add);
    let mut per_batch: Vec<u64> = costs
        .iter()
        .map(|(_, c)| c.setup_ms.saturating_add(c.runner_ms))
        .collect();
    per_batch.sort_unstable();
    let median = per_batch.get(per_batch.len() / 2).copied().unwrap_or(0);
    let mut setups: Vec<u64> = costs.iter().map(|(_, c)| c.setup_ms).collect();
    setups.sort_unstable();
    let median_setup = setups.get(setups.len() / 2).copied().unwrap_or(0);
    let split: u32 = costs.iter().map(|(b, _)| b.split_into).sum();
    let mut out = format!(
        "<p class=\"note\" id=\"batch-summary\" data-batches=\"{batches}\" data-tests=\"{tests}\" \
         data-fixed-ms=\"{paid}\">{} ran {} ({:.1} tests each on average). A batch's fixed \
         cost (container start, then the runner's start-up) was {} at the median \
         ({} of it starting the container); {} in all. One container per test would have paid \
         it about {} times: roughly {}.",
        plural(tests as usize, "test run"),
        plural(batches, "batch"),
        tests as f64 / batches.max(1) as f64,
        seconds(median),
        seconds(median_setup),
        seconds(paid),
        tests,
        seconds(median.saturating_mul(tests)),
    );
    if split > 0 {
        let _ = write!(
            out,
            " {} were split into {} smaller jobs for tests their runner did not report.",
            plural(
                costs.iter().filter(|(b, _)| b.split_into > 0).count(),
                "batch"
            ),
            split
        );
    }
    if report.rounds > 1 {
        out.push_str(" Retries run one test per job.");
    }
    out.push_str("</p>\n");
    out
}

fn table(mut costs: Vec<(&BatchRecord, FixedCost)>) -> String {
    let total = costs.len();
    costs.sort_by_key(|(b, _)| std::cmp::Reverse(b.finished_at_ms.saturating_sub(b.started_at_ms)));
    let mut out = String::from(
        "<table class=\"batches\"><thead><tr><th>batch</th><th>worker</th><th>attempt</th>\
         <th>tests</th><th>reported</th><th>wall</th><th>container start</th>\
         <th>runner start-up</th><th>exit</th></tr></thead><tbody>\n",
    );
    for (batch, cost) in costs.iter().take(MAX_LISTED) {
        let wall = batch.finished_at_ms.saturating_sub(batch.started_at_ms);
        let exit = match (batch.timed_out, batch.exit_code) {
            (true, _) => "timed out".to_owned(),
            (false, Some(code)) => code.to_string(),
            (false, None) => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "<tr id=\"batch-{id}\" data-batch=\"{id}\"><td>{short}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&batch.worker_id, 60),
            batch.attempt,
            batch.tests,
            batch.reported,
            seconds(wall),
            seconds(cost.setup_ms),
            seconds(cost.runner_ms),
            esc(&exit),
            id = batch.id,
            short = batch_name(batch),
        );
    }
    out.push_str("</tbody></table>\n");
    if total > MAX_LISTED {
        let _ = writeln!(
            out,
            "<p class=\"note\">Showing the {MAX_LISTED} longest of {total} batches; \
             <code>report.json</code> has every one.</p>"
        );
    }
    out
}

/// A batch's short name, linked to its whole log in `outputs/` when it kept one.
fn batch_name(batch: &BatchRecord) -> String {
    let short = &batch.id.simple().to_string()[..8];
    match batch.log {
        Some(_) => format!(
            "<a href=\"outputs/{}/{}.log\"><code>{short}</code></a>",
            crate::outputs::BATCHES_DIR,
            batch.id
        ),
        None => format!("<code>{short}</code>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(started: u64, command: u64, finished: u64) -> BatchRecord {
        BatchRecord {
            id: Uuid::new_v4(),
            run_id: Uuid::nil(),
            attempt: 1,
            worker_id: "w".into(),
            tests: 10,
            reported: 10,
            started_at_ms: started,
            command_started_at_ms: command,
            finished_at_ms: finished,
            exit_code: Some(0),
            timed_out: false,
            log: None,
            log_truncated: false,
            split_into: 0,
            host_busy_permille: None,
        }
    }

    #[test]
    fn fixed_cost_is_setup_plus_what_the_runner_took_beyond_its_tests() {
        let cost = fixed_cost(&batch(1_000, 1_400, 3_000), 1_000);
        assert_eq!(
            cost,
            FixedCost {
                setup_ms: 400,
                runner_ms: 600
            }
        );
        let odd = fixed_cost(&batch(5_000, 1_000, 0), 10);
        assert_eq!(
            odd,
            FixedCost {
                setup_ms: 0,
                runner_ms: 0
            },
            "saturates"
        );
    }
}
