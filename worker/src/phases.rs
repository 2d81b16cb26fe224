//! Where a Docker job's time goes: per-phase counts and latency histograms,
//! logged once when the worker stops (`docker phase timings`).
//!
//! Counters are process-wide atomics rather than state owned by the service loop:
//! they are written from every job task on the hot path, read once at shutdown,
//! and never drive a decision, so a message per phase would cost more than it
//! says. Memory is fixed (a few hundred bytes) however long the worker runs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tracing::info;

/// One step of running a job in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Create,
    Attach,
    Start,
    /// From start until the engine reports the exit.
    Wait,
    /// Draining the attached output after the exit.
    Output,
    Remove,
    /// Warm mode: creating and running one exec in a kept container.
    Exec,
    /// Putting a batch's files (ids, report folder) into its container.
    Stage,
}

const PHASES: [Phase; 8] = [
    Phase::Create,
    Phase::Attach,
    Phase::Start,
    Phase::Wait,
    Phase::Output,
    Phase::Remove,
    Phase::Exec,
    Phase::Stage,
];

/// Buckets by powers of two of microseconds: bucket `b` holds [2^(b-1), 2^b) µs,
/// up to about 36 minutes in the last one.
const BUCKETS: usize = 32;

struct Stat {
    count: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

#[allow(clippy::declare_interior_mutable_const)] // used only to fill STATS
const EMPTY: Stat = Stat {
    count: AtomicU64::new(0),
    total_us: AtomicU64::new(0),
    max_us: AtomicU64::new(0),
    buckets: [const { AtomicU64::new(0) }; BUCKETS],
};

static STATS: [Stat; PHASES.len()] = [EMPTY; PHASES.len()];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Attach => "attach",
            Phase::Start => "start",
            Phase::Wait => "wait",
            Phase::Output => "output",
            Phase::Remove => "remove",
            Phase::Exec => "exec",
            Phase::Stage => "stage",
        }
    }

    fn stat(self) -> &'static Stat {
        &STATS[PHASES.iter().position(|p| *p == self).expect("listed")]
    }

    /// Records one occurrence of the phase that took `elapsed`.
    pub fn record(self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let stat = self.stat();
        stat.count.fetch_add(1, Relaxed);
        stat.total_us.fetch_add(us, Relaxed);
        stat.max_us.fetch_max(us, Relaxed);
        stat.buckets[bucket(us)].fetch_add(1, Relaxed);
    }

    /// Runs `future`, recording how long it took under this phase.
    pub async fn time<F: Future>(self, future: F) -> F::Output {
        let started = Instant::now();
        let output = future.await;
        self.record(started.elapsed());
        output
    }
}

fn bucket(us: u64) -> usize {
    ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The upper bound, in ms, of the bucket holding the `q` quantile.
fn quantile_ms(buckets: &[u64; BUCKETS], count: u64, q: f64) -> f64 {
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return (1u64 << b) as f64 / 1000.0;
        }
    }
    f64::INFINITY
}

/// Logs one line per phase that happened: count, mean, p50 and p99 (as bucket
/// upper bounds, so within a factor of two) and max, in milliseconds.
pub fn log_summary() {
    for phase in PHASES {
        let stat = phase.stat();
        let count = stat.count.load(Relaxed);
        if count == 0 {
            continue;
        }
        let buckets: [u64; BUCKETS] = std::array::from_fn(|b| stat.buckets[b].load(Relaxed));
        let mean_ms = stat.total_us.load(Relaxed) as f64 / count as f64 / 1000.0;
        info!(
            phase = phase.name(),
            count,
            mean_ms = format!("{mean_ms:.1}"),
            p50_ms_le = quantile_ms(&buckets, count, 0.50),
            p99_ms_le = quantile_ms(&buckets, count, 0.99),
            max_ms = stat.max_us.load(Relaxed) / 1000,
            "docker phase timings"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_of_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(1023), 10);
        assert_eq!(bucket(1024), 11);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut buckets = [0u64; BUCKETS];
        buckets[10] = 98; // < 1.024 ms
        buckets[17] = 2; // < 131 ms
        assert_eq!(quantile_ms(&buckets, 100, 0.5), 1.024);
        assert_eq!(quantile_ms(&buckets, 100, 0.99), 131.072);
    }
}
