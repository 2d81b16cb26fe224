//! Runs whose jobs wait in queues of their own (`run.queue = "own"`): where
//! a run's retries go, what tells the workers which runs to take from, and
//! the queue's end with the run's.
//!
//! Workers take from every listed run in turn; the list is this module's
//! notices on the runs exchange. The aggregator publishes the whole list of
//! its open runs every [`WHOLE_LIST_EVERY`] (a worker that starts learns the
//! runs already open; a run left out is over), and a notice of one run when
//! it queues the run's retries, so that idle workers look at once. A notice
//! is information: a lost one costs a worker a moment, never a job.

use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::Channel;
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::topology::Topology;
use testfleet_types::limits::MAX_RUNS_PER_NOTICE;
use testfleet_types::messages::{Body, JobQueue, QueueNotice, RunAnnounce, RunQueue};
use tracing::warn;
use uuid::Uuid;

/// How often the whole list of open runs goes out.
pub const WHOLE_LIST_EVERY: Duration = Duration::from_secs(2);

/// The queue `announce`'s jobs go to: the shared one, or the run's own,
/// declared (again) first, since an operator may have deleted it.
pub async fn jobs_queue(
    publish: &Channel,
    topology: &Topology,
    announce: &RunAnnounce,
) -> Result<String, BrokerError> {
    match announce.queue {
        JobQueue::Shared => Ok(topology.jobs.clone()),
        JobQueue::Own => {
            let queue = topology
                .declare_run_jobs_queue(publish, &announce.run_id.to_string())
                .await?;
            Ok(queue)
        }
    }
}

/// Tells the workers that `announce`'s queue has jobs again (its retries).
pub async fn notice_jobs(publish: &Channel, topology: &Topology, announce: &RunAnnounce) {
    if announce.queue == JobQueue::Own {
        let notice = QueueNotice {
            runs: vec![run_queue(announce)],
            whole: false,
        };
        broker::publish_event(publish, &topology.runs, "", &Body::Queues(notice)).await;
    }
}

/// The whole list's timing and the queues of runs that ended.
#[derive(Debug, Default)]
pub struct RunQueues {
    last_whole: Option<Instant>,
    /// Own queues of runs that ended, to delete.
    ended: Vec<Uuid>,
}

impl RunQueues {
    /// The run has ended: its own queue (if `queue` says it has one) goes
    /// at the next tick.
    pub fn ended(&mut self, run_id: Uuid, queue: JobQueue) {
        if queue == JobQueue::Own {
            self.ended.push(run_id);
        }
    }

    /// Deletes the queues of runs that ended, and sends the whole list of
    /// `open` runs when it is due.
    pub async fn tick<'a>(
        &mut self,
        publish: &Channel,
        topology: &Topology,
        open: impl Iterator<Item = &'a RunAnnounce>,
    ) -> Result<(), BrokerError> {
        for run_id in std::mem::take(&mut self.ended) {
            delete(publish, &topology.run_jobs_queue(&run_id.to_string())).await?;
        }
        if self
            .last_whole
            .is_some_and(|last| last.elapsed() < WHOLE_LIST_EVERY)
        {
            return Ok(());
        }
        self.last_whole = Some(Instant::now());
        let notice = whole_list(open);
        broker::publish_event(publish, &topology.runs, "", &Body::Queues(notice)).await;
        Ok(())
    }
}

/// Every open run of a queue of its own, up to the bound of a notice.
fn whole_list<'a>(open: impl Iterator<Item = &'a RunAnnounce>) -> QueueNotice {
    let runs: Vec<RunQueue> = open
        .filter(|announce| announce.queue == JobQueue::Own)
        .map(run_queue)
        .take(MAX_RUNS_PER_NOTICE)
        .collect();
    QueueNotice { runs, whole: true }
}

fn run_queue(announce: &RunAnnounce) -> RunQueue {
    RunQueue {
        run_id: announce.run_id,
        weight: announce.weight,
        deadline_ms: announce.deadline_ms,
    }
}

/// Deletes a run's queue with whatever it holds (the run is over). Workers
/// taking from it then find it gone, on a channel of that run alone.
async fn delete(publish: &Channel, queue: &str) -> Result<(), BrokerError> {
    match publish
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
    {
        Ok(dropped) if dropped > 0 => {
            warn!(%queue, dropped, "deleted an ended run's queue with jobs still in it");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::strategies::sample_spec;

    fn announce(queue: JobQueue) -> RunAnnounce {
        RunAnnounce {
            run_id: Uuid::new_v4(),
            suite: "s".into(),
            created_at_ms: 1,
            deadline_ms: 10,
            spec: sample_spec(),
            tests: vec!["t".into()],
            verdict_token: None,
            queue,
            weight: 3,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: None,
        }
    }

    #[test]
    fn the_whole_list_holds_the_runs_of_their_own_queues() {
        let runs = [
            announce(JobQueue::Own),
            announce(JobQueue::Shared),
            announce(JobQueue::Own),
        ];
        let notice = whole_list(runs.iter());
        assert!(notice.whole);
        let listed: Vec<Uuid> = notice.runs.iter().map(|r| r.run_id).collect();
        assert_eq!(listed, vec![runs[0].run_id, runs[2].run_id]);
        assert!(notice
            .runs
            .iter()
            .all(|r| r.weight == 3 && r.deadline_ms == 10));
    }

    #[test]
    fn only_own_queues_are_deleted_at_the_end() {
        let mut queues = RunQueues::default();
        queues.ended(Uuid::new_v4(), JobQueue::Shared);
        let own = announce(JobQueue::Own);
        queues.ended(own.run_id, own.queue);
        assert_eq!(queues.ended, vec![own.run_id]);
    }
}
