//! The two sides of an A/B run. Each id `X` of the run is two tests of it,
//! `base::X` on the baseline image and `cand::X` on the run's own, so that
//! the run's bookkeeping (rounds, counted once, journal, resume, dead
//! letters, events) needs no notion of sides: only a job's image and the id
//! its command runs (`JobTest::command_id`) depend on the side.

use crate::messages::{AbRun, Job, RunAnnounce};

/// The prefix of a baseline test's id.
pub const BASELINE_PREFIX: &str = "base::";
/// The prefix of a candidate test's id.
pub const CANDIDATE_PREFIX: &str = "cand::";
/// What a side's prefix adds to an id, at most.
pub const PREFIX_BYTES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Baseline,
    Candidate,
}

impl Side {
    pub fn prefix(self) -> &'static str {
        match self {
            Side::Baseline => BASELINE_PREFIX,
            Side::Candidate => CANDIDATE_PREFIX,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Baseline => Side::Candidate,
            Side::Candidate => Side::Baseline,
        }
    }
}

/// The test id of `id` on `side`.
pub fn side_id(side: Side, id: &str) -> String {
    format!("{}{id}", side.prefix())
}

/// The side a test id is on, and its plain id; `None` for an id of neither.
pub fn split(id: &str) -> Option<(Side, &str)> {
    if let Some(plain) = id.strip_prefix(BASELINE_PREFIX) {
        return Some((Side::Baseline, plain));
    }
    id.strip_prefix(CANDIDATE_PREFIX)
        .map(|plain| (Side::Candidate, plain))
}

/// The run's test ids for plain `ids`: each id's baseline then candidate,
/// side by side, as the announcement lists them (and reports follow).
pub fn paired(ids: Vec<String>) -> Vec<String> {
    let mut tests = Vec::with_capacity(ids.len() * 2);
    for id in ids {
        tests.push(side_id(Side::Baseline, &id));
        tests.push(side_id(Side::Candidate, &id));
    }
    tests
}

/// Makes a job of one side's tests run as that side: in the baseline's
/// image for the baseline, each test's command given its plain id. The
/// side is its first test's; a job of no side is left as it is.
pub fn fit_job(ab: &AbRun, job: &mut Job) {
    let Some((side, _)) = job.tests.first().and_then(|t| split(&t.id)) else {
        return;
    };
    if side == Side::Baseline {
        job.spec.image = ab.baseline_image.clone();
    }
    for test in &mut job.tests {
        test.command_id = split(&test.id).map(|(_, plain)| plain.to_owned());
    }
}

/// The id a test of a report is known by in its suite's history (durations,
/// flakiness): itself, or for an A/B run (`compared`) a candidate's plain
/// id; `None` for a baseline's, which is not the suite as it now is.
pub fn history_id(compared: bool, id: &str) -> Option<&str> {
    if !compared {
        return Some(id);
    }
    match split(id) {
        Some((Side::Candidate, plain)) => Some(plain),
        _ => None,
    }
}

/// Why an A/B announcement cannot be compared, if it cannot: an id of no
/// side, or one side of an id without the other, could never be paired.
pub fn check_paired(announce: &RunAnnounce) -> Result<(), String> {
    if announce.ab.is_none() {
        return Ok(());
    }
    let mut sides = std::collections::HashMap::<&str, [bool; 2]>::new();
    for id in &announce.tests {
        let Some((side, plain)) = split(id) else {
            return Err(format!("an A/B run's test {id:?} is on neither side"));
        };
        sides.entry(plain).or_default()[side as usize] = true;
    }
    match sides.into_iter().find(|(_, seen)| seen != &[true, true]) {
        Some((plain, _)) => Err(format!("an A/B run's test {plain:?} has one side only")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::JobTest;

    #[test]
    fn an_id_splits_back_into_its_side() {
        for side in [Side::Baseline, Side::Candidate] {
            let id = side_id(side, "pkg::a b");
            assert_eq!(split(&id), Some((side, "pkg::a b")));
            assert!(id.len() <= "pkg::a b".len() + PREFIX_BYTES);
        }
        assert_eq!(split("plain"), None);
        assert_eq!(paired(vec!["x".into()]), ["base::x", "cand::x"]);
    }

    #[test]
    fn a_baseline_job_runs_in_the_baseline_image_with_plain_ids() {
        let ab = AbRun {
            baseline_image: "old".into(),
            confirm: 3,
            recorded: None,
        };
        let spec = crate::strategies::sample_spec();
        let mut job = Job::single(uuid::Uuid::nil(), "base::x".into(), 1, 0, spec.clone());
        job.tests.push(JobTest {
            id: "base::y".into(),
            allowance_ms: 1,
            command_id: None,
        });
        fit_job(&ab, &mut job);
        assert_eq!(job.spec.image, "old");
        assert_eq!(job.command_ids().collect::<Vec<_>>(), ["x", "y"]);
        let mut candidate = Job::single(uuid::Uuid::nil(), "cand::x".into(), 1, 0, spec.clone());
        fit_job(&ab, &mut candidate);
        assert_eq!(candidate.spec.image, spec.image);
        assert_eq!(candidate.command_ids().collect::<Vec<_>>(), ["x"]);
    }
}
