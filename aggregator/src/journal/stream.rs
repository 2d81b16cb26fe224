//! The journal kept in the broker: a RabbitMQ stream of every open run's
//! records, replicated by the cluster like the quorum queues, which any
//! aggregator of the prefix replays to take over (`aggregator.journal =
//! "broker"`).
//!
//! The leader appends records as it counts facts and publishes them, with
//! publisher confirms, at each group commit: a stream confirms a message once
//! a majority of its replicas hold it, so what is acked survives the loss of
//! the leader's machine and of a broker node. A finished run gets an `Ended`
//! entry once its verdict is out. An aggregator that takes the lead publishes
//! a marker of its own, then reads the stream from its first retained entry
//! up to that marker: every run begun and not ended is open, with its records
//! in order. The stream's retention (age and bytes) is what bounds it, so a
//! run older than that cannot be replayed (see ARCHITECTURE.md).
//!
//! An entry bigger than a broker message (a run's announcement) travels in
//! chunks that follow one another; a leader that died half-way leaves a
//! chunked entry incomplete, and replay drops it, as its delivery was never
//! acked.
//!
//! Every message is sealed with the aggregators' key (`seal.rs`): the
//! stream holds runs' verdict tokens and secret variables, which other
//! broker users must not read, and an entry that does not open (published
//! by someone without the key) is skipped on replay, never believed.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::{Deserialize, Serialize};
use testfleet_common::broker::{self, BrokerError};
use testfleet_types::limits::{MAX_MESSAGE_BYTES, PART_BYTES};
use tracing::{info, warn};
use uuid::Uuid;

use super::commit::Commit;
use super::error::{JournalError, Replayed};
use super::records::{Record, JOURNAL};
use super::seal::JournalKey;

/// Deliveries a replaying consumer may have unacked.
const REPLAY_PREFETCH: u16 = 1000;
/// Segments the stream's retention drops whole; small enough to keep the
/// retained size near its bound.
const SEGMENT_BYTES: i64 = 64 << 20;
/// A chunked entry has at most this many chunks (its bound, in chunks).
const MAX_CHUNKS: u32 = JOURNAL.max_record.div_ceil(PART_BYTES as u32) + 1;
/// How long a replay may wait between two entries before it gives up.
const REPLAY_STALL: Duration = Duration::from_secs(60);

/// How long the stream keeps what it holds: past a run's longest deadline.
#[derive(Debug, Clone)]
pub struct Retention {
    pub max_bytes: u64,
    pub max_age_days: u32,
}

/// One message of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Envelope {
    /// The journal's format, as a file's header carries it.
    version: u16,
    entry: Entry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry {
    Record {
        run_id: Uuid,
        record: Record,
    },
    /// The run's verdict is out: it is no longer open.
    Ended {
        run_id: Uuid,
    },
    /// Published by an aggregator taking the lead: where its replay stops.
    Marker {
        nonce: Uuid,
    },
    /// A piece of an encoded envelope too big for one message.
    Chunk {
        id: Uuid,
        index: u32,
        count: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

/// The stream journal of one prefix.
pub struct StreamJournal {
    queue: String,
    retention: Retention,
    key: JournalKey,
    /// Messages waiting for the next commit, encoded and sealed.
    pending: Vec<Vec<u8>>,
}

impl StreamJournal {
    pub fn new(queue: String, retention: Retention, key: JournalKey) -> Self {
        StreamJournal {
            queue,
            retention,
            key,
            pending: Vec::new(),
        }
    }

    /// An entry as the messages that carry it, sealed.
    fn sealed(&self, entry: &Entry) -> impl Iterator<Item = Vec<u8>> + '_ {
        chunked(encode(entry))
            .into_iter()
            .map(|plain| self.key.seal(&self.queue, plain))
    }

    /// Declares the stream (idempotent).
    async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.retention.max_bytes.min(i64::MAX as u64) as i64),
        );
        args.insert(
            "x-max-age".into(),
            AMQPValue::LongString(format!("{}D", self.retention.max_age_days).into()),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(SEGMENT_BYTES),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.queue.as_str().into(), options, args)
            .await?;
        Ok(())
    }

    /// Reads every open run's records from the stream, up to a marker this
    /// call publishes; forgets what was pending (never acked, so the broker
    /// brings those facts again).
    pub async fn replay(&mut self, connection: &Connection) -> Result<Vec<Replayed>, JournalError> {
        self.pending.clear();
        let publish = broker::confirm_channel(connection).await?;
        self.declare(&publish).await?;
        let nonce = Uuid::new_v4();
        let marker: Vec<Vec<u8>> = self.sealed(&Entry::Marker { nonce }).collect();
        broker::publish_encoded(&publish, &self.queue, "journal", &marker).await?;
        let _ = publish.close(200, "marker published".into()).await;

        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::from)?;
        channel
            .basic_qos(REPLAY_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(BrokerError::from)?;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut deliveries = channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("replay-{nonce}").as_str().into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(BrokerError::from)?;
        let mut fold = Fold::default();
        let mut read = 0u64;
        loop {
            let next = tokio::time::timeout(REPLAY_STALL, deliveries.next()).await;
            let delivery = match next {
                Ok(Some(delivery)) => delivery.map_err(BrokerError::from)?,
                Ok(None) => return Err(BrokerError::ChannelGone.into()),
                Err(_) => return Err(JournalError::Stalled(REPLAY_STALL)),
            };
            read += 1;
            // A stream's acks are credit: they let the next entries come.
            broker::ack(&delivery).await?;
            let plain = match self.key.open(&self.queue, &delivery.data) {
                Ok(plain) => plain,
                Err(why) => {
                    warn!(stream = %self.queue, %why, "skipping a journal entry this aggregator did not seal");
                    continue;
                }
            };
            if fold.add(decode(&plain)?)? == Some(nonce) {
                break;
            }
        }
        let _ = channel.close(200, "replayed".into()).await;
        let runs = fold.into_open_runs();
        info!(stream = %self.queue, entries = read, open_runs = runs.len(), "replayed the journal stream");
        Ok(runs)
    }

    /// Queues a record; it is durable once the commit that takes it ends.
    pub fn append(&mut self, run_id: Uuid, record: &Record) -> Result<(), JournalError> {
        let entry = Entry::Record {
            run_id,
            record: record.clone(),
        };
        let sealed: Vec<Vec<u8>> = self.sealed(&entry).collect();
        self.pending.extend(sealed);
        Ok(())
    }

    /// Marks a finished run as no longer open (at the next commit).
    pub fn end(&mut self, run_id: Uuid) {
        let sealed: Vec<Vec<u8>> = self.sealed(&Entry::Ended { run_id }).collect();
        self.pending.extend(sealed);
    }

    /// Publishes every queued entry and waits for the broker's confirms, in
    /// a task of its own; what is appended meanwhile waits for the next one.
    pub fn start_commit(&mut self, publish: &Channel) -> Commit {
        let pending = std::mem::take(&mut self.pending);
        let (publish, queue) = (publish.clone(), self.queue.clone());
        tokio::spawn(async move {
            if !pending.is_empty() {
                broker::publish_encoded(&publish, &queue, "journal", &pending).await?;
            }
            Ok(())
        })
    }

    /// Whether entries wait for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    rmp_serde::to_vec(&Envelope {
        version: JOURNAL.version,
        entry: entry.clone(),
    })
    .expect("journal entries always serialize")
}

fn decode(bytes: &[u8]) -> Result<Entry, JournalError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u16,
        #[allow(dead_code)]
        entry: serde::de::IgnoredAny,
    }
    let unreadable = |e: rmp_serde::decode::Error| {
        JournalError::Stream(format!("an entry that does not read: {e}"))
    };
    let head: VersionOnly = rmp_serde::from_slice(bytes).map_err(unreadable)?;
    if head.version != JOURNAL.version {
        return Err(JournalError::Stream(format!(
            "an entry of format {}, which this build does not read (it reads format {}); another testfleet version leads this prefix",
            head.version, JOURNAL.version
        )));
    }
    let envelope: Envelope = rmp_serde::from_slice(bytes).map_err(unreadable)?;
    Ok(envelope.entry)
}

/// An encoded entry as the messages that carry it: itself, or chunks.
fn chunked(encoded: Vec<u8>) -> Vec<Vec<u8>> {
    if encoded.len() <= MAX_MESSAGE_BYTES - 4096 {
        return vec![encoded];
    }
    let id = Uuid::new_v4();
    let count = encoded.len().div_ceil(PART_BYTES) as u32;
    encoded
        .chunks(PART_BYTES)
        .enumerate()
        .map(|(index, bytes)| {
            let chunk = Entry::Chunk {
                id,
                index: index as u32,
                count,
                bytes: bytes.to_vec(),
            };
            rmp_serde::to_vec(&Envelope {
                version: JOURNAL.version,
                entry: chunk,
            })
            .expect("journal entries always serialize")
        })
        .collect()
}

/// Entries read so far, folded into open runs.
#[derive(Default)]
struct Fold {
    /// Open runs' records, in the order their announcements came.
    runs: HashMap<Uuid, Vec<Record>>,
    order: Vec<Uuid>,
    /// The chunked entry being joined, if any.
    joining: Option<(Uuid, u32, Vec<u8>)>,
}

impl Fold {
    /// Takes one entry; the nonce of a marker, where a replay may stop.
    fn add(&mut self, entry: Entry) -> Result<Option<Uuid>, JournalError> {
        if !matches!(entry, Entry::Chunk { .. }) && self.joining.take().is_some() {
            warn!("dropping a journal entry whose chunks never all came (its writer died)");
        }
        match entry {
            Entry::Record { run_id, record } => self.record(run_id, record),
            Entry::Ended { run_id } => {
                self.runs.remove(&run_id);
            }
            Entry::Marker { nonce } => return Ok(Some(nonce)),
            Entry::Chunk {
                id,
                index,
                count,
                bytes,
            } => self.chunk(id, index, count, bytes)?,
        }
        Ok(None)
    }

    fn record(&mut self, run_id: Uuid, record: Record) {
        if matches!(record, Record::Announce(_)) && !self.runs.contains_key(&run_id) {
            self.order.push(run_id);
            self.runs.insert(run_id, Vec::new());
        }
        // Records of a run whose announcement the retention dropped, or of
        // one ended, belong to no open run.
        if let Some(records) = self.runs.get_mut(&run_id) {
            records.push(record);
        }
    }

    fn chunk(
        &mut self,
        id: Uuid,
        index: u32,
        count: u32,
        bytes: Vec<u8>,
    ) -> Result<(), JournalError> {
        if count == 0 || count > MAX_CHUNKS || index >= count {
            return Err(JournalError::Stream(format!(
                "a chunk {index} of {count}, out of bounds"
            )));
        }
        let joining = match self.joining.take() {
            Some((joined, next, mut so_far)) if joined == id && next == index => {
                so_far.extend_from_slice(&bytes);
                (id, index + 1, so_far)
            }
            Some(_) | None if index == 0 => (id, 1, bytes),
            _ => {
                warn!("dropping a journal chunk out of order");
                return Ok(());
            }
        };
        if joining.1 < count {
            self.joining = Some(joining);
            return Ok(());
        }
        match decode(&joining.2)? {
            Entry::Record { run_id, record } => self.record(run_id, record),
            _ => {
                return Err(JournalError::Stream(
                    "a chunked entry that is no record".into(),
                ))
            }
        }
        Ok(())
    }

    fn into_open_runs(mut self) -> Vec<Replayed> {
        self.order
            .into_iter()
            .filter_map(|run_id| {
                self.runs
                    .remove(&run_id)
                    .map(|records| (run_id, Ok(records)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(run_id: Uuid, tests: usize) -> Record {
        Record::Announce(Box::new(super::super::records::AnnounceRecord {
            run_id,
            suite: "s".into(),
            created_at_ms: 1,
            deadline_ms: 2,
            spec: testfleet_common::config::default_spec(),
            tests: (0..tests)
                .map(|i| format!("test-{i:08}-{}", "x".repeat(100)))
                .collect(),
            verdict_token: None,
            queue: super::super::records::RecordedQueue::Shared,
            weight: 1,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: None,
        }))
    }

    fn key() -> JournalKey {
        JournalKey::from_bytes(&[3; 32]).unwrap()
    }

    fn journal() -> StreamJournal {
        StreamJournal::new(
            "q".into(),
            Retention {
                max_bytes: 1,
                max_age_days: 1,
            },
            key(),
        )
    }

    /// Folds the messages that open with the test key, as a replay does.
    fn fold(messages: Vec<Vec<u8>>) -> Vec<(Uuid, Vec<Record>)> {
        let mut fold = Fold::default();
        for message in messages {
            if let Ok(plain) = key().open("q", &message) {
                fold.add(decode(&plain).unwrap()).unwrap();
            }
        }
        fold.into_open_runs()
            .into_iter()
            .map(|(run, records)| (run, records.unwrap()))
            .collect()
    }

    #[test]
    fn open_runs_are_those_announced_and_not_ended() {
        let (open, ended) = (Uuid::new_v4(), Uuid::new_v4());
        let mut journal = journal();
        journal.append(ended, &announce(ended, 1)).unwrap();
        journal.append(open, &announce(open, 1)).unwrap();
        journal
            .append(open, &Record::RoundClosed { at_ms: 5 })
            .unwrap();
        journal
            .append(ended, &Record::RoundClosed { at_ms: 6 })
            .unwrap();
        journal.end(ended);
        let runs = fold(std::mem::take(&mut journal.pending));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, open);
        assert_eq!(
            runs[0].1,
            vec![announce(open, 1), Record::RoundClosed { at_ms: 5 }]
        );
    }

    #[test]
    fn a_big_announcement_travels_in_chunks_and_a_torn_one_is_dropped() {
        let (big, torn) = (Uuid::new_v4(), Uuid::new_v4());
        let mut journal = journal();
        journal.append(big, &announce(big, 100_000)).unwrap();
        let chunks = journal.pending.len();
        assert!(chunks > 1 && journal.pending.iter().all(|m| m.len() <= MAX_MESSAGE_BYTES));
        journal.append(torn, &announce(torn, 100_000)).unwrap();
        journal.pending.truncate(chunks + 1);
        journal
            .append(big, &Record::RoundClosed { at_ms: 5 })
            .unwrap();
        let runs = fold(std::mem::take(&mut journal.pending));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].1.len(), 2);
        assert_eq!(runs[0].1[0], announce(big, 100_000));
    }

    #[test]
    fn secrets_never_reach_the_stream_in_the_clear_and_forged_entries_are_skipped() {
        let run = Uuid::new_v4();
        let token = Uuid::new_v4();
        let Record::Announce(mut announced) = announce(run, 1) else {
            unreachable!()
        };
        announced.verdict_token = Some(token);
        announced
            .spec
            .env
            .insert("API_KEY".into(), "hunter2-secret".into());
        announced.spec.secret_env = vec!["API_KEY".into()];
        let record = Record::Announce(announced);
        let mut journal = journal();
        journal.append(run, &record).unwrap();
        let pending = std::mem::take(&mut journal.pending);
        for message in &pending {
            assert!(
                !message.windows(16).any(|w| w == token.as_bytes()),
                "the token in the clear"
            );
            assert!(
                !message.windows(14).any(|w| w == b"hunter2-secret"),
                "a secret in the clear"
            );
        }
        // Someone without the key publishes an entry ending the run.
        let forged = encode(&Entry::Ended { run_id: run });
        let other_key = JournalKey::from_bytes(&[9; 32])
            .unwrap()
            .seal("q", forged.clone());
        let runs = fold([pending, vec![forged, other_key]].concat());
        assert_eq!(
            runs,
            vec![(run, vec![record])],
            "the run replays whole, still open"
        );
    }

    #[test]
    fn an_entry_of_another_format_is_refused() {
        let mut bytes = encode(&Entry::Ended {
            run_id: Uuid::nil(),
        });
        let other = rmp_serde::to_vec(&Envelope {
            version: 9,
            entry: Entry::Ended {
                run_id: Uuid::nil(),
            },
        })
        .unwrap();
        assert!(decode(&bytes).is_ok());
        let error = decode(&other).unwrap_err().to_string();
        assert!(error.contains("format 9"), "{error}");
        bytes.truncate(3);
        assert!(decode(&bytes).is_err());
    }
}
