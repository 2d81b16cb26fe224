//! What the group commits settle, pure: the deliveries whose facts a
//! commit makes durable (acked, or parked), and the runs it lets finish.
//!
//! One commit is under way at a time; what gathers meanwhile belongs to the
//! next one. A run whose last round closed is finished (its reports, its
//! verdict, its queue deleted) only when the commit holding that closing
//! ends: a verdict never goes out on facts a crash could still take back
//! (replayed, the run would be finished a second time, perhaps otherwise).

use uuid::Uuid;

/// What one commit settles when it ends.
#[derive(Debug)]
pub struct Group<D> {
    /// Deliveries, each acked (`true`) or parked (`false`).
    pub settled: Vec<(D, bool)>,
    /// Runs to finish.
    pub finish: Vec<Uuid>,
}

impl<D> Default for Group<D> {
    fn default() -> Self {
        Group {
            settled: Vec::new(),
            finish: Vec::new(),
        }
    }
}

impl<D> Group<D> {
    fn is_empty(&self) -> bool {
        self.settled.is_empty() && self.finish.is_empty()
    }
}

/// The group gathering and the group whose commit is under way.
#[derive(Debug)]
pub struct Pipeline<D> {
    gathering: Group<D>,
    in_flight: Option<Group<D>>,
}

impl<D> Default for Pipeline<D> {
    fn default() -> Self {
        Pipeline {
            gathering: Group::default(),
            in_flight: None,
        }
    }
}

impl<D> Pipeline<D> {
    /// Deliveries handled since the last commit started: settled by the
    /// next commit to start, once it ends.
    pub fn gather(&mut self, settled: impl IntoIterator<Item = (D, bool)>) {
        self.gathering.settled.extend(settled);
    }

    /// A run decided finished: finished once the next commit to start ends
    /// (its closing, appended now, is in that one).
    pub fn finish_after_commit(&mut self, run_id: Uuid) {
        if !self.gathering.finish.contains(&run_id) {
            self.gathering.finish.push(run_id);
        }
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether a commit should start now: none is under way, and records
    /// wait (`records_pending`) or something gathered waits for one.
    pub fn should_start(&self, records_pending: bool) -> bool {
        self.in_flight.is_none() && (records_pending || !self.gathering.is_empty())
    }

    /// A commit of everything appended so far started: what gathered is its.
    pub fn started(&mut self) {
        debug_assert!(self.in_flight.is_none(), "one commit at a time");
        self.in_flight = Some(std::mem::take(&mut self.gathering));
    }

    /// The commit under way ended: what it settles.
    pub fn ended(&mut self) -> Group<D> {
        self.in_flight.take().unwrap_or_default()
    }

    /// What gathered since the last commit started, for a commit made at
    /// once (stopping, a resume).
    pub fn take_gathered(&mut self) -> Group<D> {
        std::mem::take(&mut self.gathering)
    }

    /// A lost session: its deliveries went with their channel (the broker
    /// brings them again) and its runs are replayed from their journals.
    pub fn abandon(&mut self) {
        self.in_flight = None;
        self.gathering = Group::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finish_waits_for_the_commit_that_holds_its_closing() {
        let mut pipeline: Pipeline<&str> = Pipeline::default();
        let run = Uuid::new_v4();
        pipeline.gather([("result 1", true)]);
        assert!(pipeline.should_start(true));
        pipeline.started();
        // While that commit syncs, the run's last round closes.
        pipeline.gather([("result 2", true)]);
        pipeline.finish_after_commit(run);
        assert!(!pipeline.should_start(true), "one commit at a time");
        let first = pipeline.ended();
        assert_eq!(first.settled, [("result 1", true)]);
        assert!(first.finish.is_empty(), "its closing is not in this commit");
        pipeline.started();
        let second = pipeline.ended();
        assert_eq!(second.settled, [("result 2", true)]);
        assert_eq!(second.finish, [run], "finished once its closing is durable");
    }

    #[test]
    fn a_lost_session_finishes_nothing_and_settles_nothing() {
        let mut pipeline: Pipeline<&str> = Pipeline::default();
        pipeline.gather([("d", true)]);
        pipeline.finish_after_commit(Uuid::nil());
        pipeline.started();
        pipeline.finish_after_commit(Uuid::new_v4());
        pipeline.abandon();
        assert!(!pipeline.in_flight());
        assert!(pipeline.take_gathered().is_empty());
        assert!(!pipeline.should_start(false));
    }
}
