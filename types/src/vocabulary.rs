//! The outcome vocabulary, decided in one place: how a test's attempt and a
//! run can end, what each way means (a failure? retried? ran to an end,
//! so its duration teaches? against the test's flaky history?) and its
//! names. The retry rule, the history, every report, the dashboard, the
//! metrics and the event stream ask this module; adding an outcome touches
//! it, the places the compiler points at, and the docs.
//!
//! The types are wire types as well (serde derives unchanged): messages,
//! journal and report.json convert them at their own edges.

use serde::{Deserialize, Serialize};

/// What every report says about a test that never reported.
pub const MISSING_MESSAGE: &str =
    "did not run: no result before the run's deadline (timeout or drop)";

/// What a test's container did, as seen by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The command exited 0.
    Passed,
    /// The command exited non-zero.
    Failed,
    /// The per-test timeout killed the container.
    TimedOut,
    /// The infrastructure failed (image missing, engine error): not the test's fault.
    Error,
}

impl Outcome {
    /// Classifies a finished container by its exit code.
    pub fn from_exit_code(code: i64) -> Self {
        if code == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Error => "error",
        }
    }
}

/// How one attempt ended, as the aggregator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptStatus {
    Ran(Outcome),
    /// No result before the run's deadline.
    Missing,
    /// The broker gave up on the job after this many deliveries.
    DeadLettered {
        deliveries: u32,
    },
}

/// Where a test stands once its run has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FinalStatus {
    Passed,
    /// Failed at least once, then passed.
    Flaky,
    Failed,
    TimedOut,
    Error,
    Missing,
    DeadLettered,
}

impl FinalStatus {
    pub fn is_pass(self) -> bool {
        matches!(self, FinalStatus::Passed | FinalStatus::Flaky)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Passed => "passed",
            FinalStatus::Flaky => "flaky",
            FinalStatus::Failed => "failed",
            FinalStatus::TimedOut => "timed out",
            FinalStatus::Error => "error",
            FinalStatus::Missing => "missing",
            FinalStatus::DeadLettered => "dead-lettered",
        }
    }
}

/// Why a run ended the way it did; each maps to its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerdictKind {
    /// Every test passed, possibly after retries.
    Passed,
    /// Some tests still fail after the retries the policy allowed.
    TestsFailed,
    /// Failures exceeded the retry threshold, so they were not retried.
    TooManyFailures,
    /// The deadline passed with tests that never reported.
    TestsMissing,
}

impl VerdictKind {
    /// The process exit code documented in the README.
    pub fn exit_code(self) -> i32 {
        match self {
            VerdictKind::Passed => 0,
            VerdictKind::TestsFailed => 1,
            VerdictKind::TooManyFailures => 3,
            VerdictKind::TestsMissing => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Passed => "passed",
            VerdictKind::TestsFailed => "tests failed",
            VerdictKind::TooManyFailures => "too many failures to retry",
            VerdictKind::TestsMissing => "tests missing at the deadline",
        }
    }
}

/// What the runtime saw end an attempt that did not pass, as the worker
/// read it from the engine or the kernel (not guessed from text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuntimeReason {
    /// Exited non-zero by itself (its exit code says which).
    Exit,
    /// Killed by a signal testfleet did not send.
    Signal(u8),
    /// Killed for memory under its own limit (`run.memory_bytes`).
    Oom,
    /// Killed for memory with no limit of its own: the host ran out, which
    /// is the fleet's doing, not the test's.
    HostOom,
    /// The per-test (or batch) timeout killed it.
    Timeout,
    /// No output for `run.quiet_timeout_secs` (`--quiet-timeout`): killed.
    NoOutputTimeout,
}

/// Why an attempt did not pass, as every report names it: what the runtime
/// saw first, then a log-signature rule, then the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `exit:2`, `signal:9`, `oom`, `host-oom`, `timeout`,
    /// `no-output-timeout`, a rule's name, `error`, `missing`,
    /// `dead-lettered`.
    pub name: String,
    /// The fleet's doing, not the test's: retried, and never counted as the
    /// test's failure.
    pub fleet_fault: bool,
}

/// The reason an attempt that did not pass gets; `None` for a pass.
/// Runtime facts beat text (a test killed for memory may print anything),
/// and a timeout beats what the killed output says; a log-signature `rule`
/// (its name, and whether it is the fleet's fault) names the rest.
pub fn reason_of(
    status: AttemptStatus,
    runtime: Option<RuntimeReason>,
    exit_code: Option<i64>,
    rule: Option<(&str, bool)>,
) -> Option<Reason> {
    let named = |name: String, fleet_fault: bool| Some(Reason { name, fleet_fault });
    match (status, runtime) {
        (AttemptStatus::Ran(Outcome::Passed), _) => None,
        (AttemptStatus::Ran(Outcome::TimedOut), Some(RuntimeReason::NoOutputTimeout)) => {
            named("no-output-timeout".into(), false)
        }
        (AttemptStatus::Ran(Outcome::TimedOut), _) => named("timeout".into(), false),
        (AttemptStatus::Ran(_), Some(RuntimeReason::Oom)) => named("oom".into(), false),
        (AttemptStatus::Ran(_), Some(RuntimeReason::HostOom)) => named("host-oom".into(), true),
        (AttemptStatus::Ran(Outcome::Error), _) => match rule {
            Some((name, _)) => named(name.to_owned(), true),
            None => named("error".into(), true),
        },
        (AttemptStatus::Ran(_), runtime) => match (rule, runtime) {
            (Some((name, fleet_fault)), _) => named(name.to_owned(), fleet_fault),
            (None, Some(RuntimeReason::Signal(signal))) => named(format!("signal:{signal}"), false),
            (None, _) => named(
                exit_code.map_or("failed".into(), |code| format!("exit:{code}")),
                false,
            ),
        },
        (AttemptStatus::Missing, _) => named("missing".into(), true),
        // It may have killed its workers: not known to be the fleet's.
        (AttemptStatus::DeadLettered { .. }, _) => named("dead-lettered".into(), false),
    }
}

impl AttemptStatus {
    /// Every attempt status, in the order counts are listed.
    pub const ALL: [AttemptStatus; 6] = [
        AttemptStatus::Ran(Outcome::Passed),
        AttemptStatus::Ran(Outcome::Failed),
        AttemptStatus::Ran(Outcome::TimedOut),
        AttemptStatus::Ran(Outcome::Error),
        AttemptStatus::Missing,
        AttemptStatus::DeadLettered { deliveries: 0 },
    ];

    /// The stable name (events, metrics, the dashboard): snake case.
    pub fn name(self) -> &'static str {
        match self {
            AttemptStatus::Ran(Outcome::Passed) => "passed",
            AttemptStatus::Ran(Outcome::Failed) => "failed",
            AttemptStatus::Ran(Outcome::TimedOut) => "timed_out",
            AttemptStatus::Ran(Outcome::Error) => "error",
            AttemptStatus::Missing => "missing",
            AttemptStatus::DeadLettered { .. } => "dead_lettered",
        }
    }

    pub fn passed(self) -> bool {
        self == AttemptStatus::Ran(Outcome::Passed)
    }

    /// Whether it counts against the retry threshold: what the code under
    /// test did, or may have done (a missing or dead-lettered test may have
    /// crashed its worker). An infrastructure error is the fleet's, not the
    /// test's.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            AttemptStatus::Ran(Outcome::Failed | Outcome::TimedOut)
                | AttemptStatus::Missing
                | AttemptStatus::DeadLettered { .. }
        )
    }

    /// Whether the test runs again in the next round, while the retry rule
    /// allows. Dead-lettered tests too, as fresh messages with a fresh
    /// delivery budget: a worker's death uses up a delivery of every job it
    /// holds, so a test that shared workers with a poison test is
    /// dead-lettered with it, and only running them apart tells which one
    /// kills workers.
    pub fn is_retried(self) -> bool {
        !self.passed()
    }

    /// Whether the attempt ran to an end the test chose or its timeout
    /// imposed, so that its duration says how long the test takes (history).
    pub fn ran_to_an_end(self) -> bool {
        matches!(
            self,
            AttemptStatus::Ran(Outcome::Passed | Outcome::Failed | Outcome::TimedOut)
        )
    }

    /// What a report says of an attempt that never ran to a result.
    pub fn unrun_message(self) -> Option<String> {
        match self {
            AttemptStatus::Missing => Some(MISSING_MESSAGE.to_owned()),
            AttemptStatus::DeadLettered { deliveries } => Some(format!(
                "dead-lettered by the broker after {deliveries} deliveries"
            )),
            AttemptStatus::Ran(_) => None,
        }
    }
}

impl FinalStatus {
    /// The order in which every report lists its counts.
    pub const ORDER: [FinalStatus; 7] = [
        FinalStatus::Passed,
        FinalStatus::Failed,
        FinalStatus::TimedOut,
        FinalStatus::Flaky,
        FinalStatus::Missing,
        FinalStatus::DeadLettered,
        FinalStatus::Error,
    ];

    /// A test's status from its attempts' statuses, oldest first: passed
    /// after an attempt that did not pass is flaky (passes alone, as the
    /// confirmations of an A/B run's side are, are a pass); none is missing.
    pub fn of_attempts(statuses: &[AttemptStatus]) -> FinalStatus {
        let passed = AttemptStatus::Ran(Outcome::Passed);
        match statuses.split_last() {
            None => FinalStatus::Missing,
            Some((&last, earlier)) if last == passed && earlier.iter().any(|s| *s != passed) => {
                FinalStatus::Flaky
            }
            Some((&last, _)) => FinalStatus::of_last_attempt(last),
        }
    }

    fn of_last_attempt(last: AttemptStatus) -> FinalStatus {
        match last {
            AttemptStatus::Ran(Outcome::Passed) => FinalStatus::Passed,
            AttemptStatus::Ran(Outcome::Failed) => FinalStatus::Failed,
            AttemptStatus::Ran(Outcome::TimedOut) => FinalStatus::TimedOut,
            AttemptStatus::Ran(Outcome::Error) => FinalStatus::Error,
            AttemptStatus::Missing => FinalStatus::Missing,
            AttemptStatus::DeadLettered { .. } => FinalStatus::DeadLettered,
        }
    }

    /// Whether the test's last attempt ran to a result and did not pass
    /// (failed, timed out, or the fleet erred): its output is worth showing.
    pub fn ran_and_did_not_pass(self) -> bool {
        matches!(
            self,
            FinalStatus::Failed | FinalStatus::TimedOut | FinalStatus::Error
        )
    }

    /// Whether it counts against the test in its flaky history: what the
    /// test did by itself. A missing test or an error of the fleet says
    /// nothing about the test.
    pub fn against_history(self) -> bool {
        matches!(
            self,
            FinalStatus::Failed | FinalStatus::TimedOut | FinalStatus::DeadLettered
        )
    }
}

/// How an id of an A/B run compares, its baseline's attempts against its
/// candidate's: crater's comparison, decided from repetition as well as
/// from reasons (a fleet fault is an error, retried, and never decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareClass {
    /// The baseline passed every time, the candidate failed every time.
    Regressed,
    /// The candidate passed every time, the baseline failed every time.
    Fixed,
    /// A side both passed and failed.
    Flaky,
    /// A side has no attempt that passed or failed: errors of the fleet,
    /// missing or dead-lettered, after its retries.
    Infra,
    /// Failed every time on both sides.
    Failing,
    /// Passed every time on both sides.
    Passing,
}

impl CompareClass {
    /// Every class, in the order reports list them: what a change broke first.
    pub const ORDER: [CompareClass; 6] = [
        CompareClass::Regressed,
        CompareClass::Fixed,
        CompareClass::Flaky,
        CompareClass::Infra,
        CompareClass::Failing,
        CompareClass::Passing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CompareClass::Regressed => "regressed",
            CompareClass::Fixed => "fixed",
            CompareClass::Flaky => "flaky",
            CompareClass::Infra => "infra",
            CompareClass::Failing => "failing",
            CompareClass::Passing => "passing",
        }
    }

    /// A difference between the sides, which confirmation runs again.
    pub fn differs(self) -> bool {
        matches!(self, CompareClass::Regressed | CompareClass::Fixed)
    }
}

/// One side's attempts at one id, folded: what decides its class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideTally {
    pub passed: u32,
    /// Failed or timed out: the test's doing.
    pub failed: u32,
    /// Errors of the fleet, missing and dead-lettered attempts.
    pub infra: u32,
}

impl SideTally {
    pub fn add(&mut self, status: AttemptStatus) {
        match status {
            AttemptStatus::Ran(Outcome::Passed) => self.passed += 1,
            AttemptStatus::Ran(Outcome::Failed | Outcome::TimedOut) => self.failed += 1,
            // A comparison must not call "killed its worker" a regression.
            AttemptStatus::Ran(Outcome::Error)
            | AttemptStatus::Missing
            | AttemptStatus::DeadLettered { .. } => self.infra += 1,
        }
    }

    pub fn of(statuses: impl IntoIterator<Item = AttemptStatus>) -> SideTally {
        let mut tally = SideTally::default();
        statuses.into_iter().for_each(|s| tally.add(s));
        tally
    }

    /// Attempts that passed or failed: what says something about the code.
    pub fn decisive(&self) -> u32 {
        self.passed.saturating_add(self.failed)
    }

    /// The fleet ran this side and could not decide it: its attempts are
    /// all errors of the fleet's (an empty side, a baseline an earlier run
    /// did not record, is not).
    pub fn undecided(&self) -> bool {
        self.decisive() == 0 && self.infra > 0
    }

    /// The side disagrees with itself.
    pub fn mixed(&self) -> bool {
        self.passed > 0 && self.failed > 0
    }
}

/// The class of an id from its two sides' tallies.
pub fn classify(baseline: SideTally, candidate: SideTally) -> CompareClass {
    if baseline.decisive() == 0 || candidate.decisive() == 0 {
        return CompareClass::Infra;
    }
    if baseline.mixed() || candidate.mixed() {
        return CompareClass::Flaky;
    }
    match (baseline.passed > 0, candidate.passed > 0) {
        (true, true) => CompareClass::Passing,
        (false, false) => CompareClass::Failing,
        (true, false) => CompareClass::Regressed,
        (false, true) => CompareClass::Fixed,
    }
}

/// Whether a difference stands after `confirm` more attempts on each side
/// (1 + `confirm` decisive attempts on each, none disagreeing).
pub fn confirmed(baseline: SideTally, candidate: SideTally, confirm: u32) -> bool {
    classify(baseline, candidate).differs()
        && baseline.decisive() > confirm
        && candidate.decisive() > confirm
}

/// Whether a difference with a baseline an earlier run recorded stands
/// after `confirm` more attempts on the candidate's side, the only one run.
pub fn confirmed_against_record(baseline: SideTally, candidate: SideTally, confirm: u32) -> bool {
    classify(baseline, candidate).differs() && candidate.decisive() > confirm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status, each decision: a new status does not compile into a
    /// report until it is classified here.
    #[test]
    fn each_attempt_status_is_classified_once() {
        let table: Vec<(&str, bool, bool, bool)> = AttemptStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.name(),
                    s.counts_as_failure(),
                    s.is_retried(),
                    s.ran_to_an_end(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                ("passed", false, false, true),
                ("failed", true, true, true),
                ("timed_out", true, true, true),
                ("error", false, true, false),
                ("missing", true, true, false),
                ("dead_lettered", true, true, false),
            ]
        );
    }

    #[test]
    fn runtime_facts_name_a_failure_before_any_text_and_a_timeout_before_either() {
        let failed = AttemptStatus::Ran(Outcome::Failed);
        let name = |status, runtime, rule| {
            reason_of(status, runtime, Some(137), rule).map(|r| (r.name, r.fleet_fault))
        };
        let no_space = Some(("no-space", true));
        assert_eq!(
            name(AttemptStatus::Ran(Outcome::Passed), None, no_space),
            None
        );
        assert_eq!(
            name(failed, Some(RuntimeReason::Oom), no_space),
            Some(("oom".into(), false))
        );
        assert_eq!(
            name(failed, Some(RuntimeReason::HostOom), None),
            Some(("host-oom".into(), true))
        );
        assert_eq!(
            name(failed, Some(RuntimeReason::Signal(9)), no_space),
            Some(("no-space".into(), true))
        );
        assert_eq!(
            name(failed, Some(RuntimeReason::Signal(11)), None),
            Some(("signal:11".into(), false))
        );
        assert_eq!(
            name(failed, Some(RuntimeReason::Exit), None),
            Some(("exit:137".into(), false))
        );
        let timed_out = AttemptStatus::Ran(Outcome::TimedOut);
        assert_eq!(
            name(timed_out, Some(RuntimeReason::Timeout), no_space),
            Some(("timeout".into(), false))
        );
        assert_eq!(
            name(timed_out, Some(RuntimeReason::NoOutputTimeout), None),
            Some(("no-output-timeout".into(), false))
        );
        assert_eq!(
            name(AttemptStatus::Ran(Outcome::Error), None, None),
            Some(("error".into(), true))
        );
        assert_eq!(
            name(AttemptStatus::Missing, None, None),
            Some(("missing".into(), true))
        );
    }

    #[test]
    fn each_final_status_is_classified_once() {
        let table: Vec<(FinalStatus, bool, bool)> = FinalStatus::ORDER
            .iter()
            .map(|s| (*s, s.is_pass(), s.against_history()))
            .collect();
        assert_eq!(
            table,
            [
                (FinalStatus::Passed, true, false),
                (FinalStatus::Failed, false, true),
                (FinalStatus::TimedOut, false, true),
                (FinalStatus::Flaky, true, false),
                (FinalStatus::Missing, false, false),
                (FinalStatus::DeadLettered, false, true),
                (FinalStatus::Error, false, false),
            ]
        );
        let passed = AttemptStatus::Ran(Outcome::Passed);
        let failed = AttemptStatus::Ran(Outcome::Failed);
        assert_eq!(FinalStatus::of_attempts(&[]), FinalStatus::Missing);
        assert_eq!(FinalStatus::of_attempts(&[passed]), FinalStatus::Passed);
        assert_eq!(
            FinalStatus::of_attempts(&[failed, passed]),
            FinalStatus::Flaky
        );
        assert_eq!(
            FinalStatus::of_attempts(&[AttemptStatus::Missing, passed]),
            FinalStatus::Flaky
        );
        assert_eq!(
            FinalStatus::of_attempts(&[passed, passed, passed]),
            FinalStatus::Passed
        );
        assert_eq!(
            FinalStatus::of_attempts(&[passed, failed]),
            FinalStatus::Failed
        );
    }

    #[test]
    fn each_shape_of_two_sides_is_classified() {
        let t = |passed, failed, infra| SideTally {
            passed,
            failed,
            infra,
        };
        use CompareClass::*;
        let cases = [
            (t(1, 0, 0), t(1, 0, 0), Passing),
            (t(0, 1, 0), t(0, 1, 0), Failing),
            (t(1, 0, 0), t(0, 1, 0), Regressed),
            (t(0, 1, 0), t(1, 0, 0), Fixed),
            (t(2, 1, 0), t(0, 3, 0), Flaky),
            (t(3, 0, 0), t(1, 2, 0), Flaky),
            (t(0, 0, 2), t(1, 0, 0), Infra),
            (t(1, 0, 0), t(0, 0, 1), Infra),
            (t(1, 0, 3), t(0, 1, 2), Regressed),
        ];
        for (baseline, candidate, class) in cases {
            assert_eq!(
                classify(baseline, candidate),
                class,
                "{baseline:?} {candidate:?}"
            );
        }
        assert!(!confirmed(t(1, 0, 0), t(0, 1, 0), 2));
        assert!(!confirmed(t(3, 0, 0), t(0, 2, 0), 2));
        assert!(confirmed(t(3, 0, 0), t(0, 3, 0), 2));
        assert!(
            !confirmed(t(3, 0, 0), t(3, 0, 0), 2),
            "no difference to confirm"
        );
        assert_eq!(
            SideTally::of([
                AttemptStatus::Ran(Outcome::TimedOut),
                AttemptStatus::Ran(Outcome::Error),
                AttemptStatus::DeadLettered { deliveries: 3 },
            ]),
            t(0, 1, 2)
        );
    }
}
