//! Live progress of a run while `--wait`ing: counts kept from the run's events,
//! an ETA, and how they are shown (a bar on a terminal, a plain line every few
//! seconds otherwise).
//!
//! [`Progress`] is pure and takes the clock as an argument, so tests drive it.
//! Events are best-effort, so the counts are an estimate; the verdict decides.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use testfleet_types::messages::{AttemptStatus, Outcome, RunEventKind};

/// Where one test stands, as far as the events tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestPhase {
    /// Queued again after a failing attempt.
    Queued,
    Running {
        attempt: u32,
    },
    Passed,
    /// Passed after an earlier attempt failed.
    Flaky,
    /// The latest attempt did not pass (it may still be retried).
    Failed,
}

/// Per-test phase and the attempt it is at; tests never heard of are queued.
#[derive(Debug, Clone, Copy)]
struct TestProgress {
    phase: TestPhase,
    /// The highest attempt whose outcome is known; older news is ignored.
    settled_attempt: u32,
    /// An attempt of it did not pass: a pass after it is flaky (passes
    /// alone, as an A/B run's confirmations are, are passes).
    failed_once: bool,
}

/// How many tests stand where, for display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tests: usize,
    pub passed: usize,
    pub flaky: usize,
    pub failed: usize,
    pub running: usize,
    /// The highest round heard of.
    pub round: u32,
}

impl Counts {
    /// Tests whose latest attempt has an outcome.
    pub fn settled(&self) -> usize {
        self.passed + self.flaky + self.failed
    }
}

/// A run's progress, built from its events.
#[derive(Debug)]
pub struct Progress {
    tests: usize,
    started_at_ms: u64,
    by_test: HashMap<String, TestProgress>,
    finished_attempts: u64,
    round: u32,
}

impl Progress {
    pub fn new(tests: usize, started_at_ms: u64) -> Self {
        Progress {
            tests,
            started_at_ms,
            by_test: HashMap::new(),
            finished_attempts: 0,
            round: 1,
        }
    }

    /// Takes one event into account. Late or repeated news (a re-executed
    /// job's second start, say) cannot move a test backwards.
    pub fn apply(&mut self, event: &RunEventKind) {
        match event {
            RunEventKind::TestStarted {
                test_id, attempt, ..
            } => self.update(test_id, *attempt, TestPhase::Running { attempt: *attempt }),
            RunEventKind::TestFinished {
                test_id,
                attempt,
                status,
                ..
            } => {
                self.finished_attempts += 1;
                let failed_once = self
                    .by_test
                    .get(test_id.as_str())
                    .is_some_and(|t| t.failed_once);
                let phase = match status {
                    AttemptStatus::Ran(Outcome::Passed) if failed_once => TestPhase::Flaky,
                    AttemptStatus::Ran(Outcome::Passed) => TestPhase::Passed,
                    _ => TestPhase::Failed,
                };
                self.update(test_id, *attempt, phase);
                self.settle(test_id, *attempt);
            }
            RunEventKind::TestRetried { test_id, attempt } => {
                self.update(test_id, *attempt, TestPhase::Queued)
            }
            RunEventKind::RoundClosed {
                round, retrying, ..
            } => {
                if *retrying > 0 {
                    self.round = self.round.max(round.saturating_add(1));
                }
            }
        }
    }

    /// Moves a test to `phase` unless `attempt` is one whose outcome is known.
    fn update(&mut self, test_id: &str, attempt: u32, phase: TestPhase) {
        self.round = self.round.max(attempt);
        let test = self
            .by_test
            .entry(test_id.to_owned())
            .or_insert(TestProgress {
                phase: TestPhase::Queued,
                settled_attempt: 0,
                failed_once: false,
            });
        test.failed_once |= matches!(phase, TestPhase::Failed);
        if attempt > test.settled_attempt {
            test.phase = phase;
        }
    }

    fn settle(&mut self, test_id: &str, attempt: u32) {
        if let Some(test) = self.by_test.get_mut(test_id) {
            test.settled_attempt = test.settled_attempt.max(attempt);
        }
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            tests: self.tests,
            round: self.round,
            ..Counts::default()
        };
        for test in self.by_test.values() {
            match test.phase {
                TestPhase::Queued => {}
                TestPhase::Running { .. } => counts.running += 1,
                TestPhase::Passed => counts.passed += 1,
                TestPhase::Flaky => counts.flaky += 1,
                TestPhase::Failed => counts.failed += 1,
            }
        }
        counts
    }

    /// Time left at the pace attempts have finished so far, for the tests not
    /// settled yet. `None` until the first attempt finishes.
    pub fn eta(&self, now_ms: u64) -> Option<Duration> {
        if self.finished_attempts == 0 {
            return None;
        }
        let elapsed_ms = now_ms.saturating_sub(self.started_at_ms);
        let remaining = self.tests.saturating_sub(self.counts().settled()) as u64;
        Some(Duration::from_millis(
            elapsed_ms.saturating_mul(remaining) / self.finished_attempts,
        ))
    }

    /// The counts, round and ETA, as the bar's message and the plain line show them.
    pub fn describe(&self, now_ms: u64) -> String {
        let c = self.counts();
        let eta = match self.eta(now_ms) {
            Some(eta) => format!("ETA {}", short_duration(eta)),
            None => "ETA unknown".to_owned(),
        };
        format!(
            "{} passed · {} failed · {} flaky · {} running · round {} · {eta}",
            c.passed, c.failed, c.flaky, c.running, c.round
        )
    }

    /// One line for logs: how far the run is, then [`Self::describe`].
    pub fn plain_line(&self, now_ms: u64) -> String {
        let c = self.counts();
        format!(
            "progress: {}/{} settled · {}",
            c.settled(),
            c.tests,
            self.describe(now_ms)
        )
    }
}

/// `42s`, `3m07s`, `1h02m`: enough precision for an estimate.
pub fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// How progress is shown on stderr.
pub enum ProgressView {
    /// A terminal: a bar redrawn in place.
    Bar(ProgressBar),
    /// Not a terminal: a plain line at each interval.
    Lines,
    Off,
}

impl ProgressView {
    /// A bar if stderr is a terminal, else plain lines; `Off` for `--progress-every 0`.
    pub fn for_stderr(tests: usize, enabled: bool) -> Self {
        use std::io::IsTerminal;
        if !enabled {
            ProgressView::Off
        } else if std::io::stderr().is_terminal() {
            ProgressView::Bar(bar(tests))
        } else {
            ProgressView::Lines
        }
    }

    /// Shows the news: the bar redraws now; plain lines wait for [`Self::tick`].
    pub fn update(&self, progress: &Progress, now_ms: u64) {
        if let ProgressView::Bar(bar) = self {
            bar.set_position(progress.counts().settled() as u64);
            bar.set_message(progress.describe(now_ms));
        }
    }

    /// Called every interval: a plain line (a bar redraws on its own).
    pub fn tick(&self, progress: &Progress, now_ms: u64) {
        if let ProgressView::Lines = self {
            eprintln!("testfleet {}", progress.plain_line(now_ms));
        }
    }

    /// Clears the bar so the summary prints on a clean line.
    pub fn finish(&self) {
        if let ProgressView::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn bar(tests: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(tests as u64), ProgressDrawTarget::stderr());
    // Two lines: on one line the counts, round and ETA were cut off at 80
    // columns, the width of many terminals (seen with `script`'s terminal).
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} settled\n  {wide_msg}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(test: &str, attempt: u32) -> RunEventKind {
        RunEventKind::TestStarted {
            test_id: test.into(),
            attempt,
            worker_id: "w".into(),
        }
    }

    fn finished(test: &str, attempt: u32, outcome: Outcome) -> RunEventKind {
        RunEventKind::TestFinished {
            test_id: test.into(),
            attempt,
            status: AttemptStatus::Ran(outcome),
            duration_ms: 1,
            exit_code: None,
            worker_id: None,
        }
    }

    fn retried(test: &str, attempt: u32) -> RunEventKind {
        RunEventKind::TestRetried {
            test_id: test.into(),
            attempt,
        }
    }

    fn round_closed(round: u32, retrying: u32) -> RunEventKind {
        RunEventKind::RoundClosed {
            round,
            counts: Default::default(),
            retrying,
        }
    }

    fn apply_all(progress: &mut Progress, events: &[RunEventKind]) {
        for event in events {
            progress.apply(event);
        }
    }

    #[test]
    fn counts_follow_a_run_with_a_flaky_test() {
        let mut progress = Progress::new(3, 0);
        apply_all(
            &mut progress,
            &[started("a", 1), started("b", 1), started("c", 1)],
        );
        assert_eq!(progress.counts().running, 3);
        apply_all(
            &mut progress,
            &[
                finished("a", 1, Outcome::Passed),
                finished("b", 1, Outcome::Failed),
            ],
        );
        let c = progress.counts();
        assert_eq!((c.passed, c.failed, c.running, c.round), (1, 1, 1, 1));
        apply_all(
            &mut progress,
            &[
                finished("c", 1, Outcome::TimedOut),
                round_closed(1, 2),
                retried("b", 2),
                retried("c", 2),
            ],
        );
        let c = progress.counts();
        assert_eq!(
            (c.passed, c.failed, c.running, c.round, c.settled()),
            (1, 0, 0, 2, 1),
            "retried tests are queued again"
        );
        apply_all(
            &mut progress,
            &[
                started("b", 2),
                finished("b", 2, Outcome::Passed),
                started("c", 2),
                finished("c", 2, Outcome::Failed),
            ],
        );
        let c = progress.counts();
        assert_eq!(
            (c.passed, c.flaky, c.failed, c.running),
            (1, 1, 1, 0),
            "{c:?}"
        );
    }

    #[test]
    fn a_repeated_start_cannot_reopen_a_finished_attempt() {
        let mut progress = Progress::new(1, 0);
        apply_all(
            &mut progress,
            &[
                started("a", 1),
                finished("a", 1, Outcome::Passed),
                started("a", 1),
            ],
        );
        let c = progress.counts();
        assert_eq!((c.passed, c.running), (1, 0));
    }

    #[test]
    fn a_missing_or_dead_lettered_attempt_counts_as_failed() {
        let mut progress = Progress::new(2, 0);
        for (test, status) in [
            ("a", AttemptStatus::Missing),
            ("b", AttemptStatus::DeadLettered { deliveries: 5 }),
        ] {
            progress.apply(&RunEventKind::TestFinished {
                test_id: test.into(),
                attempt: 1,
                status,
                duration_ms: 0,
                exit_code: None,
                worker_id: None,
            });
        }
        assert_eq!(progress.counts().failed, 2);
    }

    #[test]
    fn eta_extrapolates_the_pace_so_far() {
        let mut progress = Progress::new(10, 1_000);
        assert_eq!(progress.eta(5_000), None, "no pace before a first result");
        for test in ["a", "b"] {
            progress.apply(&finished(test, 1, Outcome::Passed));
        }
        // 2 attempts in 4 s: the 8 tests left take 16 s.
        assert_eq!(progress.eta(5_000), Some(Duration::from_secs(16)));
        assert_eq!(progress.eta(0), Some(Duration::ZERO), "a clock going back");
    }

    #[test]
    fn the_plain_line_shows_counts_round_and_eta() {
        let mut progress = Progress::new(4, 0);
        apply_all(
            &mut progress,
            &[
                finished("a", 1, Outcome::Passed),
                finished("b", 1, Outcome::Failed),
                started("c", 1),
            ],
        );
        assert_eq!(
            progress.plain_line(2_000),
            "progress: 2/4 settled · 1 passed · 1 failed · 0 flaky · 1 running · round 1 · ETA 2s"
        );
    }

    #[test]
    fn the_round_advances_only_when_tests_are_retried() {
        let mut progress = Progress::new(1, 0);
        progress.apply(&round_closed(1, 0));
        assert_eq!(progress.counts().round, 1);
        progress.apply(&round_closed(1, 3));
        assert_eq!(progress.counts().round, 2);
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn passes_confirmed_again_are_passes_not_flakes() {
        let mut progress = Progress::new(1, 0);
        apply_all(
            &mut progress,
            &[
                finished("a", 1, Outcome::Passed),
                retried("a", 2),
                finished("a", 2, Outcome::Passed),
            ],
        );
        let c = progress.counts();
        assert_eq!((c.passed, c.flaky), (1, 0));
    }
}
