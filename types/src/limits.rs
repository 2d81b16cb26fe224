//! The bounds testfleet keeps: on every message it sends and on every value it
//! accepts from the wire (checked by `checks.rs`). Numbers only: a leaf that
//! every other module may use.
//!
//! A message is never bigger than [`MAX_MESSAGE_BYTES`], well under what any
//! RabbitMQ accepts (128 MiB on 3.x, 16 MiB by default on 4.x): what can be
//! bigger (a run's announcement, a verdict, a history answer) travels in
//! parts (`messages.rs`'s `Part`).

/// No message testfleet publishes is bigger than this.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// The payload of one part of a message that is split.
pub const PART_BYTES: usize = 4 << 20;
/// A message split into parts is at most this big in all (64 parts).
pub const MAX_PARTED_BYTES: usize = 256 << 20;
/// A verdict's encoded report is fitted under this (outputs shortened first).
pub const MAX_VERDICT_BYTES: usize = 32 << 20;
/// Results or events in one message at most, by their estimated size.
pub const MAX_BATCH_BYTES: usize = 6 << 20;
/// `run.output_cap_bytes` at most: one result always fits a message.
pub const MAX_OUTPUT_CAP_BYTES: u64 = 4 << 20;
/// A result's output may exceed the cap by the cut marker; its message by this.
pub const OUTPUT_SLACK_BYTES: usize = 1 << 10;
/// A worker's remark on a result (an engine error, say), at most.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 64 << 10;
/// A test id at most (a pytest id with long parameters fits easily).
pub const MAX_TEST_ID_BYTES: usize = 16 << 10;
/// Tests in one run at most.
pub const MAX_TESTS_PER_RUN: usize = 5_000_000;
/// Rounds (and so attempts) of a run at most.
pub const MAX_ROUNDS: u32 = 100;
/// A per-test timeout at most: a week.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// A run's deadline at most this long after its creation: 30 days.
pub const MAX_RUN_MS: u64 = 30 * 24 * 3600 * 1000;
/// A reported duration at most (longer than any run may last).
pub const MAX_DURATION_MS: u64 = MAX_RUN_MS;
/// Any Unix time on the wire at most: the year 3000.
pub const MAX_TIME_MS: u64 = 32_503_680_000_000;
/// `run.warm_reuse` at most.
pub const MAX_WARM_REUSE: u32 = 1_000_000;
/// A run spec's command and environment, in bytes, at most.
pub const MAX_SPEC_BYTES: usize = 256 << 10;
/// Tests in one batched job at most.
pub const MAX_TESTS_PER_JOB: usize = 10_000;
/// Jobs a batch's unreported tests are split into, at most.
pub const MAX_SPLIT_PARTS: u32 = 16;
/// CPUs a host may say it has.
pub const MAX_CORES: u32 = 1 << 16;
/// A run's weight against other runs of their own queues.
pub const MAX_WEIGHT: u32 = 100;
/// Entries of a run's quarantine list.
pub const MAX_QUARANTINE: usize = 100_000;
/// Bytes of a quarantine entry's reason.
pub const MAX_REASON_BYTES: usize = 1 << 10;
/// Log-signature rules of a run (`run.signatures`).
pub const MAX_SIGNATURES: usize = 64;
/// Bytes of a signature rule's name.
pub const MAX_SIGNATURE_NAME_BYTES: usize = 64;
/// Bytes of a signature rule's pattern.
pub const MAX_SIGNATURE_PATTERN_BYTES: usize = 1 << 10;
/// Tests a report's flakiness names.
pub const MAX_FLAKINESS_TESTS: usize = 10_000;
/// Runs in one queue notice (the aggregator's whole list is cut there).
pub const MAX_RUNS_PER_NOTICE: usize = 10_000;
/// Confirmations of an A/B run's differences (`--confirm`), at most.
pub const MAX_CONFIRM: u32 = 10;
/// An earlier run's attempts of one id that `--compare` carries, at most
/// (its last ones): each becomes an attempt in the aggregator's memory,
/// many times its bytes on the wire.
pub const MAX_RECORDED_ATTEMPTS: usize = 8;
/// Caches a run's report names (`aggregator.caches`), at most.
pub const MAX_CACHES: usize = 16;
