//! The writer: requests made durable in the ingest log, then moved into DuckDB.
//!
//! Request tasks hand over finished `SpanBatch`es. The log thread gathers whatever is queued
//! (up to `max_batch_spans`, waiting at most `linger` for more), appends the requests to the
//! ingest log and syncs it once for the group (`ingest_log.rs`). The apply thread owns the
//! write connection: it appends batches with Arrow appends, keeps a transaction open while more
//! are waiting, up to exactly one row group, and records in it how far into the log it reaches.
//!
//! When a request is answered depends on how busy the apply thread is: when it is idle, after
//! the commit, so that a client reading right after the answer sees its spans; when a little
//! behind, or filling row groups under load, as soon as the request is synced; when a row group
//! or more behind, once the spans are appended, so that clients slow to its pace.
//!
//! Memory between socket and DuckDB is bounded by a semaphore counted in spans: when it is
//! exhausted the request is refused as overloaded, and the client retries later.
//!
//! Under load the applier waits up to `FILL_FOR` to fill a whole row group before it commits:
//! DuckDB writes a whole row group compressed straight to the file, while a transaction short of
//! one goes through DuckDB's WAL uncompressed and is compressed by the next checkpoint. That
//! checkpoint work cost about a fifth of the ingest rate (BENCHMARKS.md, twelfth session).

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::arrow::array::{
    Array, ArrayRef, BinaryArray, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::{Connection, OptionalExt};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::attribute_text;
use crate::batch::{
    span_schema, SpanBatch, INLINE_KEYS_COLUMN, KEY_SET_COLUMN, RESOURCE_ID_COLUMN, SCOPE_ID_COLUMN,
    START_TIME_COLUMN,
};
use crate::columns::{attribute_fields, inline_keys, key_set_rows, AttributeColumn, KeySet};
use crate::indexer::{widest, CommittedSpans, IndexerInbox, Progress, ANY_START};
use crate::ingest_log::{self, LogPosition, LogWriter};
use crate::StoreError;

/// WAL size that makes a commit checkpoint (DuckDB's default is 16MB). A checkpoint compresses
/// the open row groups and rewrites the last, partly filled one whole, blocking the writer, so
/// frequent small checkpoints recompress the same rows many times: at 16MB (about 25,000 spans)
/// ingest ran at half the rate and the file was 55% larger. Larger thresholds hold more
/// uncompressed rows in memory and make each pause longer (about 3 s at 256MB on two cores),
/// which exporters with a 10 s timeout must not see.
pub(crate) const CHECKPOINT_THRESHOLD_MIB: u64 = 256;

/// Limits of the write path.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Spans accepted but not yet appended to DuckDB, across all requests; beyond it requests
    /// are refused.
    pub max_queued_spans: usize,
    /// Spans per group of requests synced to the ingest log at once, at most.
    pub max_batch_spans: usize,
    /// How long the writer waits for more requests before syncing a small group, and for more
    /// batches before committing a transaction short of a row group.
    pub linger: Duration,
    /// Distinct lists of span attribute keys stored once each; spans with a new list past it
    /// keep their keys inline. Bounds the writer's memory and the SQL of attribute searches
    /// when a client sends ever-changing keys.
    pub max_attribute_key_sets: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_queued_spans: 200_000,
            max_batch_spans: 50_000,
            linger: Duration::from_millis(2),
            max_attribute_key_sets: 10_000,
        }
    }
}

/// Why a batch was not stored. Every variant is worth a retry by the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the span queue is full ({queued} spans waiting to be written); retry later")]
    Overloaded { queued: usize },
    #[error("indexing is {spans} spans behind the stored spans; retry later")]
    IndexingBehind { spans: i64 },
    #[error("the store is shutting down")]
    Closed,
    #[error("committing spans failed: {0}")]
    CommitFailed(String),
}

impl WriteError {
    /// Whether the store is busy rather than failing: OTLP's answer is then "resource
    /// exhausted" (HTTP 429), which clients retry after the delay given.
    pub fn is_overload(&self) -> bool {
        matches!(self, Self::Overloaded { .. } | Self::IndexingBehind { .. })
    }
}

struct WriteJob {
    batch: SpanBatch,
    done: oneshot::Sender<Result<(), WriteError>>,
    _permit: OwnedSemaphorePermit,
}

enum Command {
    Write(WriteJob),
    /// Commit everything sent before this and stop; later writes get `Closed`. (The indexer,
    /// stopped next, checkpoints after its last pass.)
    Stop,
}

/// The handle request tasks write through. Cloning it is cheap.
#[derive(Clone)]
pub struct SpanWriter {
    commands: mpsc::Sender<Command>,
    permits: Arc<Semaphore>,
    progress: Arc<Progress>,
    max_queued_spans: usize,
}

impl SpanWriter {
    /// Stores a batch received from a client; returns once it is durable (synced to the ingest
    /// log). Refused while indexing lags too far behind, so that clients slow to its pace.
    pub async fn write(&self, batch: SpanBatch) -> Result<(), WriteError> {
        if let Some(spans) = self.progress.too_far_behind() {
            return Err(WriteError::IndexingBehind { spans });
        }
        self.write_ahead_of_indexing(batch).await
    }

    /// Stores a batch however far indexing lags; returns once it is durable (for imported
    /// spans: committed to DuckDB). For an import, which nobody searches while it runs (the
    /// server is stopped) and nobody would retry; the indexer catches up on the next start.
    pub async fn write_ahead_of_indexing(&self, batch: SpanBatch) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        let wanted = batch.len().min(self.max_queued_spans) as u32;
        let permit =
            self.permits
                .clone()
                .try_acquire_many_owned(wanted)
                .map_err(|_| WriteError::Overloaded {
                    queued: self.max_queued_spans - self.permits.available_permits(),
                })?;
        let (done, committed) = oneshot::channel();
        self.commands
            .send(Command::Write(WriteJob {
                batch,
                done,
                _permit: permit,
            }))
            .map_err(|_| WriteError::Closed)?;
        committed.await.map_err(|_| WriteError::Closed)?
    }
}

/// Maps canonical bytes of a resource, scope or attribute key set to its stored id, assigning
/// new ids in order, up to `limit` of them: 0, 1, 2, … without gaps, which the `spans` view
/// relies on to look them up by position.
struct Interner {
    ids: HashMap<Vec<u8>, u32>,
    /// Ids handed out in the open transaction, forgotten again if it rolls back.
    uncommitted: Vec<Vec<u8>>,
    limit: usize,
}

impl Interner {
    fn load(conn: &Connection, table: &str, id_column: &str, limit: usize) -> Result<Self, StoreError> {
        let mut statement = conn.prepare(&format!("SELECT fingerprint, {id_column} FROM {table}"))?;
        let ids = statement
            .query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, u32>(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ids,
            uncommitted: Vec::new(),
            limit,
        })
    }

    /// The id for these bytes and whether it is new (so its row must be written); `None` when
    /// they are new and the limit is reached.
    fn intern(&mut self, fingerprint: &[u8]) -> Option<(u32, bool)> {
        if let Some(&id) = self.ids.get(fingerprint) {
            return Some((id, false));
        }
        if self.ids.len() >= self.limit {
            return None;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(fingerprint.to_vec(), id);
        self.uncommitted.push(fingerprint.to_vec());
        Some((id, true))
    }

    /// Stored ids for a batch's entries (`None` past the limit); `new_row` writes the row of
    /// each one new to the store.
    fn ids_for<E>(
        &mut self,
        entries: &[E],
        fingerprint: fn(&E) -> &Vec<u8>,
        mut new_row: impl FnMut(u32, &E),
    ) -> Vec<Option<u32>> {
        entries
            .iter()
            .map(|entry| {
                let (id, new) = self.intern(fingerprint(entry))?;
                if new {
                    new_row(id, entry);
                }
                Some(id)
            })
            .collect()
    }

    fn commit(&mut self) {
        self.uncommitted.clear();
    }

    fn rollback(&mut self) {
        for fingerprint in self.uncommitted.drain(..) {
            self.ids.remove(&fingerprint);
        }
    }
}

/// The stored ids of resources, scopes and attribute key sets.
struct Interners {
    resources: Interner,
    scopes: Interner,
    key_sets: Interner,
}

impl Interners {
    fn load(conn: &Connection, max_attribute_key_sets: usize) -> Result<Self, StoreError> {
        Ok(Self {
            resources: Interner::load(conn, "resources", "resource_id", usize::MAX)?,
            scopes: Interner::load(conn, "scopes", "scope_id", usize::MAX)?,
            key_sets: Interner::load(conn, "attribute_key_sets", "key_set_id", max_attribute_key_sets)?,
        })
    }

    /// The batch's `span_data` columns with stored ids in place of its local indexes; entries
    /// seen for the first time are added to `new`.
    fn columns_for(&mut self, batch: &SpanBatch, new: &mut NewEntries) -> Result<RecordBatch, StoreError> {
        let resource_ids = self.resources.ids_for(
            &batch.resources,
            |e| &e.fingerprint,
            |id, e| new.resources.push_resource(id, e),
        );
        let scope_ids = self.scopes.ids_for(
            &batch.scopes,
            |e| &e.fingerprint,
            |id, e| new.scopes.push_scope(id, e),
        );
        let key_set_ids = self.key_sets.ids_for(
            &batch.key_sets,
            |e| &e.fingerprint,
            |id, e| new.key_sets.push((id, e.clone())),
        );
        let mut columns = batch.columns.clone();
        columns[RESOURCE_ID_COLUMN] = remap(&columns[RESOURCE_ID_COLUMN], &resource_ids);
        columns[SCOPE_ID_COLUMN] = remap(&columns[SCOPE_ID_COLUMN], &scope_ids);
        if key_set_ids.contains(&None) {
            columns[INLINE_KEYS_COLUMN] =
                keys_of_unstored(&columns[KEY_SET_COLUMN], &key_set_ids, &batch.key_sets);
        }
        columns[KEY_SET_COLUMN] = remap(&columns[KEY_SET_COLUMN], &key_set_ids);
        Ok(RecordBatch::try_new(batch.schema.clone(), columns)?)
    }

    fn commit(&mut self) {
        for interner in [&mut self.resources, &mut self.scopes, &mut self.key_sets] {
            interner.commit();
        }
    }

    fn rollback(&mut self) {
        for interner in [&mut self.resources, &mut self.scopes, &mut self.key_sets] {
            interner.rollback();
        }
    }
}

/// Resources, scopes and key sets first seen in the open transaction.
#[derive(Default)]
struct NewEntries {
    resources: NewRows,
    scopes: NewRows,
    key_sets: Vec<(u32, KeySet)>,
}

impl NewEntries {
    fn append(self, transaction: &duckdb::Transaction<'_>) -> Result<(), StoreError> {
        let (ids, key_sets): (Vec<u32>, Vec<&KeySet>) =
            self.key_sets.iter().map(|(id, keys)| (*id, keys)).unzip();
        let key_set_rows = (!ids.is_empty())
            .then(|| key_set_rows(ids, &key_sets))
            .transpose()?;
        for (table, rows) in [
            ("resources", self.resources.finish(ResourceOrScope::Resource)?),
            ("scopes", self.scopes.finish(ResourceOrScope::Scope)?),
            ("attribute_key_sets", key_set_rows),
        ] {
            if let Some(rows) = rows {
                let mut appender = transaction.appender(table)?;
                appender.append_record_batch(rows)?;
                appender.flush()?;
            }
        }
        Ok(())
    }
}

/// Running writer threads; `stop` ends them after what was already queued is committed.
pub(crate) struct WriterThread {
    commands: mpsc::Sender<Command>,
    stopping: Arc<AtomicBool>,
    log_thread: JoinHandle<()>,
    apply_thread: JoinHandle<()>,
}

impl WriterThread {
    pub(crate) fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.commands.send(Command::Stop);
        for (name, thread) in [("log", self.log_thread), ("apply", self.apply_thread)] {
            if thread.join().is_err() {
                tracing::error!(thread = name, "a span writer thread panicked");
            }
        }
    }
}

/// Commits to `conn` whatever the ingest log in `log_dir` holds past the position `conn` has
/// recorded, then starts the writer's threads; what they commit is handed to `indexer` and
/// counted in `progress`.
pub(crate) fn spawn(
    conn: Connection,
    database: &Path,
    log_dir: &Path,
    config: WriterConfig,
    indexer: IndexerInbox,
    progress: Arc<Progress>,
) -> Result<(SpanWriter, WriterThread), StoreError> {
    let position = read_position(&conn)?;
    let mut applier = Applier {
        next_rowid: progress.span_rows(),
        indexer,
        progress: progress.clone(),
        interners: Interners::load(&conn, config.max_attribute_key_sets)?,
        conn,
        wal: {
            let mut wal = database.as_os_str().to_owned();
            wal.push(".wal");
            wal.into()
        },
        log_dir: log_dir.to_owned(),
        position,
        stopping: Arc::new(AtomicBool::new(false)),
        linger: config.linger,
        under_load: Arc::new(AtomicBool::new(false)),
    };
    let next_seq = applier.replay()?;
    let log = LogWriter::create(log_dir, next_seq)?;
    // Every record before `next_seq` is committed now.
    ingest_log::discard_before(log_dir, next_seq)?;
    let (to_apply, inbox) = mpsc::channel();
    let (commands, queue) = mpsc::channel();
    let logger = Logger {
        log,
        to_apply,
        backlog: Arc::new(AtomicUsize::new(0)),
        answer_ahead: (ROW_GROUP_SPANS / 2).min(config.max_queued_spans / 2),
        under_load: applier.under_load.clone(),
        config: config.clone(),
    };
    let stopping = applier.stopping.clone();
    let apply_thread = std::thread::Builder::new()
        .name("span-apply".into())
        .spawn(move || applier.run(inbox))?;
    let log_thread = std::thread::Builder::new()
        .name("span-log".into())
        .spawn(move || logger.run(queue))?;
    let handle = SpanWriter {
        commands: commands.clone(),
        permits: Arc::new(Semaphore::new(config.max_queued_spans)),
        progress,
        max_queued_spans: config.max_queued_spans,
    };
    Ok((
        handle,
        WriterThread {
            commands,
            stopping,
            log_thread,
            apply_thread,
        },
    ))
}

/// Spans in one DuckDB row group. A transaction that appends at least this many is written by
/// DuckDB compressed, straight to the file, rather than through its WAL; the writer fills its
/// transactions to exactly this size while spans wait, so that each makes whole row groups.
const ROW_GROUP_SPANS: usize = 122_880;

/// Longest an applier's transaction under load waits to fill its row group. Spans become
/// visible to queries at most this late, while the load lasts.
const FILL_FOR: Duration = Duration::from_secs(1);

/// A transaction of this many spans, committed after the usual `linger`, means the applier is
/// under load: from then on it fills row groups.
const LOAD_SPANS: usize = ROW_GROUP_SPANS / 8;

/// No batch for this long commits a transaction under load; as long again with no transaction
/// open ends the load, and requests are answered after their commit again.
const LOAD_GAP: Duration = Duration::from_millis(50);

/// Spans the appender gathers before handing them to DuckDB's transaction, rather than holding
/// a whole row group twice until the commit.
const APPENDER_FLUSH_SPANS: usize = 16_384;

/// When a logged batch is answered.
enum Answer {
    /// Already answered.
    Answered,
    /// Once its spans are appended to the open transaction: the writer is far behind the log,
    /// and clients must slow to its pace.
    AfterAppend(oneshot::Sender<Result<(), WriteError>>),
    /// Once its spans are committed: the writer was idle, so a client that reads right after the
    /// answer sees them; and imported spans, which are not in the log.
    AfterCommit(oneshot::Sender<Result<(), WriteError>>),
}

/// A batch on its way into DuckDB.
struct Pending {
    batch: SpanBatch,
    /// Its record in the ingest log; `None` for imported spans.
    seq: Option<u64>,
    /// Spans at its front already committed.
    skip: usize,
    answer: Answer,
    /// `None` for a batch replayed from the log.
    _queued: Option<Queued>,
}

/// A request's share of the writer's bounds, given back when its batch is appended or dropped:
/// its permit, so that the spans in memory stay bounded, and its spans in the backlog.
struct Queued {
    _permit: OwnedSemaphorePermit,
    backlog: Arc<AtomicUsize>,
    spans: usize,
}

impl Queued {
    fn new(permit: OwnedSemaphorePermit, backlog: &Arc<AtomicUsize>, spans: usize) -> Self {
        backlog.fetch_add(spans, Ordering::Relaxed);
        Self {
            _permit: permit,
            backlog: backlog.clone(),
            spans,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.backlog.fetch_sub(self.spans, Ordering::Relaxed);
    }
}

/// The log thread: group-syncs requests to the ingest log and hands them to the applier.
struct Logger {
    log: LogWriter,
    to_apply: mpsc::Sender<Pending>,
    /// Spans handed to the applier and not yet appended by it.
    backlog: Arc<AtomicUsize>,
    /// Below this backlog a logged request is answered at once. Half a row group keeps the
    /// applier's transactions full as well as a whole one did, in less memory (BENCHMARKS.md).
    answer_ahead: usize,
    /// Set while the applier fills row groups under load: a request is then answered at once
    /// even when the applier has appended all before it.
    under_load: Arc<AtomicBool>,
    config: WriterConfig,
}

impl Logger {
    fn run(mut self, queue: mpsc::Receiver<Command>) {
        let mut running = true;
        while running {
            let first = match queue.recv() {
                Ok(Command::Write(job)) => job,
                Ok(Command::Stop) | Err(_) => break,
            };
            let group;
            (group, running) = self.gather(first, &queue);
            self.log_and_hand_over(group);
        }
        // Dropping `to_apply` tells the applier to commit what it has and stop.
    }

    /// Takes `first` and whatever else arrives within `linger`, up to `max_batch_spans`;
    /// also says whether to keep running afterwards.
    fn gather(&self, first: WriteJob, queue: &mpsc::Receiver<Command>) -> (Vec<WriteJob>, bool) {
        let deadline = Instant::now() + self.config.linger;
        let mut spans = first.batch.len();
        let mut group = vec![first];
        while spans < self.config.max_batch_spans {
            let wait = deadline.saturating_duration_since(Instant::now());
            match queue.recv_timeout(wait) {
                Ok(Command::Write(job)) => {
                    spans += job.batch.len();
                    group.push(job);
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return (group, false),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        (group, true)
    }

    fn log_and_hand_over(&mut self, group: Vec<WriteJob>) {
        let requests = group.iter().filter_map(|job| job.batch.request.as_deref());
        let mut next_seq = match self.log.append(requests) {
            Ok(first) => Some(first),
            Err(error) => {
                tracing::error!(%error, "writing the ingest log failed; its requests are refused for retry");
                None
            }
        };
        for WriteJob {
            mut batch,
            done,
            _permit,
        } in group
        {
            let logged = batch.request.take().is_some();
            let (seq, answer) = match (logged, next_seq.as_mut()) {
                (false, _) => (None, Answer::AfterCommit(done)),
                (true, None) => {
                    let _ = done.send(Err(WriteError::CommitFailed(
                        "the ingest log could not be written".into(),
                    )));
                    continue;
                }
                (true, Some(next)) => {
                    let seq = *next;
                    *next += 1;
                    let backlog = self.backlog.load(Ordering::Relaxed);
                    let answer = if backlog == 0 && !self.under_load.load(Ordering::Relaxed) {
                        Answer::AfterCommit(done)
                    } else if backlog < self.answer_ahead {
                        let _ = done.send(Ok(()));
                        Answer::Answered
                    } else {
                        Answer::AfterAppend(done)
                    };
                    (Some(seq), answer)
                }
            };
            let pending = Pending {
                _queued: Some(Queued::new(_permit, &self.backlog, batch.len())),
                batch,
                seq,
                skip: 0,
                answer,
            };
            if self.to_apply.send(pending).is_err() {
                tracing::error!("the span applier has stopped");
            }
        }
    }
}

/// The apply thread: moves logged batches into DuckDB, a row group per transaction while they
/// keep coming, and records in each transaction how far into the log it reaches.
struct Applier {
    conn: Connection,
    /// The rowid the next appended span gets: `span_data` is only ever appended to, by this
    /// writer, so rowids run from 0 in commit order.
    next_rowid: i64,
    indexer: IndexerInbox,
    progress: Arc<Progress>,
    interners: Interners,
    /// DuckDB's write-ahead log, whose size says when to checkpoint.
    wal: PathBuf,
    log_dir: PathBuf,
    /// How far the log is committed.
    position: LogPosition,
    /// Set when the store closes: a failing replay then gives up instead of retrying.
    stopping: Arc<AtomicBool>,
    /// How long an open transaction waits for the next batch before it commits, when not
    /// under load.
    linger: Duration,
    /// Whether the applier is filling row groups; shared with the logger.
    under_load: Arc<AtomicBool>,
}

/// A transaction's outcome: a batch's remainder that did not fit, and whether to stop.
struct Filled {
    rest: Option<Pending>,
    stop: bool,
}

impl Applier {
    fn run(mut self, inbox: mpsc::Receiver<Pending>) {
        let mut next = None;
        let mut stopping = false;
        loop {
            let first = match next.take() {
                Some(pending) => pending,
                None if stopping => break,
                None => match self.next_batch(&inbox) {
                    Some(pending) => pending,
                    None => break,
                },
            };
            match self.transaction(first, &inbox) {
                Ok(filled) => {
                    next = filled.rest;
                    stopping |= filled.stop;
                    self.checkpoint_when_due();
                }
                Err(error) => {
                    tracing::error!(%error, "committing spans failed; replaying them from the ingest log");
                    if !self.recover() {
                        break;
                    }
                }
            }
        }
    }

    /// Waits for the batch that opens the next transaction; ends the load when it is slow to
    /// come, so that the requests after it are answered after their commit again.
    fn next_batch(&self, inbox: &mpsc::Receiver<Pending>) -> Option<Pending> {
        if self.under_load.load(Ordering::Relaxed) {
            match inbox.recv_timeout(LOAD_GAP) {
                Ok(pending) => return Some(pending),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => self.under_load.store(false, Ordering::Relaxed),
            }
        }
        inbox.recv().ok()
    }

    /// Checkpoints once DuckDB's WAL has passed the threshold. DuckDB checkpoints on a commit
    /// only when no other transaction is writing, and under load this writer's next
    /// transaction or an indexer pass nearly always is: the WAL reached 890 MB in a 30 s run.
    /// Between two transactions only an indexer pass can hold the checkpoint off; then the
    /// next commit tries again.
    fn checkpoint_when_due(&self) {
        let wal_bytes = std::fs::metadata(&self.wal).map_or(0, |wal| wal.len());
        if wal_bytes < CHECKPOINT_THRESHOLD_MIB << 20 {
            return;
        }
        match self.conn.execute_batch("CHECKPOINT") {
            Ok(()) => tracing::debug!(wal_bytes, "checkpointed"),
            Err(error) => tracing::debug!(%error, wal_bytes, "checkpoint put off"),
        }
    }

    /// After a failed transaction: commits everything in the log past the last committed
    /// position, retrying until that succeeds or the store is closing; says whether it did.
    /// Batches still on their way are skipped as they arrive, by their place in the log.
    fn recover(&mut self) -> bool {
        while let Err(error) = self.replay() {
            if self.stopping.load(Ordering::Relaxed) {
                tracing::error!(%error, "replaying the ingest log failed while closing; the next start replays it");
                return false;
            }
            tracing::error!(%error, "replaying the ingest log failed; retrying in a second");
            std::thread::sleep(Duration::from_secs(1));
        }
        true
    }

    /// Commits every span the log holds past `position`; returns the sequence number that
    /// follows the log's last intact record.
    fn replay(&mut self) -> Result<u64, StoreError> {
        let ingest_log::Tail { records, next_seq } = ingest_log::read_from(&self.log_dir, self.position.seq)?;
        if !records.is_empty() {
            tracing::info!(requests = records.len(), "replaying the ingest log");
        }
        let (feed, inbox) = mpsc::channel();
        for (seq, request) in records {
            let (batch, _) = SpanBatch::from_protobuf(&request).map_err(|error| {
                StoreError::Config(format!("ingest log record {seq} is not an OTLP request: {error}"))
            })?;
            let _ = feed.send(Pending {
                batch,
                seq: Some(seq),
                skip: 0,
                answer: Answer::Answered,
                _queued: None,
            });
        }
        drop(feed);
        while let Ok(first) = inbox.recv() {
            let mut next = Some(first);
            while let Some(pending) = next {
                next = self.transaction(pending, &inbox)?.rest;
            }
        }
        Ok(next_seq.max(self.position.seq))
    }

    /// Appends `first` and, while more batches wait, whatever follows, up to a row group;
    /// commits, then answers and hands the spans to the indexer.
    fn transaction(&mut self, first: Pending, inbox: &mpsc::Receiver<Pending>) -> Result<Filled, StoreError> {
        let mut filled = Filled {
            rest: None,
            stop: false,
        };
        let mut after_commit = Vec::new();
        let mut appended = Vec::new();
        let mut position = self.position;
        let mut rows = 0;
        let mut starts: Option<RangeInclusive<i64>> = None;
        let mut unflushed = 0;
        let fill_until = Instant::now() + FILL_FOR;
        let result = (|| {
            let transaction = self.conn.transaction()?;
            let mut new = NewEntries::default();
            {
                let mut spans = transaction.appender("span_data")?;
                let mut next = Some(first);
                while let Some(pending) = next.take() {
                    if let Some(mut pending) = unapplied(self.position, pending) {
                        let columns = self.interners.columns_for(&pending.batch, &mut new)?;
                        let take = (pending.batch.len() - pending.skip).min(ROW_GROUP_SPANS - rows);
                        let columns = columns.slice(pending.skip, take);
                        // Imported spans keep the nested types they were read with, and an
                        // indexer far behind would not reach these before dropping them: it
                        // reads them back from the table instead.
                        let for_indexer = (Arc::ptr_eq(&columns.schema(), &span_schema())
                            && self.indexer.wants(self.next_rowid + rows as i64))
                        .then(|| self.indexer.columns_read(&columns));
                        appended.push((take, for_indexer));
                        if let Some(new) = start_times(&columns) {
                            starts = Some(match starts.take() {
                                Some(old) => widest(&old, &new),
                                None => new,
                            });
                        }
                        spans.append_record_batch(columns)?;
                        rows += take;
                        unflushed += take;
                        if unflushed >= APPENDER_FLUSH_SPANS {
                            spans.flush()?;
                            unflushed = 0;
                        }
                        pending.skip += take;
                        if let Some(seq) = pending.seq {
                            position = if pending.skip == pending.batch.len() {
                                LogPosition {
                                    seq: seq + 1,
                                    spans: 0,
                                }
                            } else {
                                LogPosition {
                                    seq,
                                    spans: pending.skip,
                                }
                            };
                        }
                        if pending.skip < pending.batch.len() {
                            filled.rest = Some(pending);
                            break;
                        }
                        match pending.answer {
                            Answer::Answered => {}
                            Answer::AfterAppend(done) => {
                                let _ = done.send(Ok(()));
                            }
                            Answer::AfterCommit(done) => after_commit.push((pending.seq.is_some(), done)),
                        }
                    }
                    if rows == ROW_GROUP_SPANS {
                        break;
                    }
                    // A client waiting for the commit is not kept waiting to fill the row group.
                    let wait = if self.under_load.load(Ordering::Relaxed) && after_commit.is_empty() {
                        fill_until.saturating_duration_since(Instant::now()).min(LOAD_GAP)
                    } else {
                        self.linger
                    };
                    match inbox.recv_timeout(wait) {
                        Ok(pending) => next = Some(pending),
                        Err(RecvTimeoutError::Disconnected) => filled.stop = true,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
                // Appenders only report flush errors from an explicit flush, never from drop.
                spans.flush()?;
            }
            new.append(&transaction)?;
            if position != self.position {
                transaction.execute(
                    "UPDATE ingest_log_position SET seq = ?, spans = ?",
                    [position.seq, position.spans as u64],
                )?;
            }
            transaction.commit()?;
            Ok::<_, StoreError>(())
        })();
        if let Err(error) = result {
            self.interners.rollback();
            for (logged, done) in after_commit {
                // Spans in the log are durable and replayed; imported ones must be sent again.
                let _ = done.send(match logged {
                    true => Ok(()),
                    false => Err(WriteError::CommitFailed(error.to_string())),
                });
            }
            return Err(error);
        }
        self.interners.commit();
        for (rows, for_indexer) in appended {
            let first_rowid = self.next_rowid;
            self.next_rowid += rows as i64;
            if let Some(columns) = for_indexer {
                self.indexer.committed(CommittedSpans { first_rowid, columns });
            }
        }
        self.progress.committed(self.next_rowid, starts);
        if rows >= LOAD_SPANS {
            self.under_load.store(true, Ordering::Relaxed);
        }
        for (_, done) in after_commit {
            let _ = done.send(Ok(()));
        }
        if position.seq != self.position.seq {
            if let Err(error) = ingest_log::discard_before(&self.log_dir, position.seq) {
                tracing::warn!(%error, "removing applied ingest log segments failed");
            }
        }
        self.position = position;
        tracing::trace!(rows, "committed");
        Ok(filled)
    }
}

/// The range of the start times of `columns` (in `span_schema` order), if it has rows; any
/// start when an imported file's column is not in nanoseconds, as readers only narrow scans
/// with it.
fn start_times(columns: &RecordBatch) -> Option<RangeInclusive<i64>> {
    let column = columns.column(START_TIME_COLUMN);
    let Some(starts) = column.as_any().downcast_ref::<TimestampNanosecondArray>() else {
        return Some(ANY_START);
    };
    let values = starts.values();
    Some(*values.iter().min()?..=*values.iter().max()?)
}

/// The part of `pending` not yet committed, if any; a batch wholly committed (it was replayed
/// from the log after a failure) is answered and dropped.
fn unapplied(position: LogPosition, mut pending: Pending) -> Option<Pending> {
    if let Some(seq) = pending.seq {
        if seq == position.seq {
            pending.skip = pending.skip.max(position.spans);
        }
        if seq < position.seq || pending.skip >= pending.batch.len() {
            if let Answer::AfterAppend(done) | Answer::AfterCommit(done) = pending.answer {
                let _ = done.send(Ok(()));
            }
            return None;
        }
    }
    Some(pending)
}

/// How far the ingest log is committed, as the last transaction recorded it.
fn read_position(conn: &Connection) -> Result<LogPosition, StoreError> {
    conn.execute_batch(
        "INSERT INTO ingest_log_position SELECT 0, 0 WHERE NOT EXISTS (FROM ingest_log_position)",
    )?;
    committed_position(conn)
}

fn committed_position(conn: &Connection) -> Result<LogPosition, StoreError> {
    let (seq, spans) = conn
        .query_row("SELECT seq, spans FROM ingest_log_position", [], |row| {
            Ok((row.get::<_, u64>(0)?, row.get::<_, u64>(1)?))
        })
        .optional()?
        .unwrap_or_default();
    Ok(LogPosition {
        seq,
        spans: spans as usize,
    })
}

/// Requests in the ingest log at `log_dir` that the database of `conn` does not wholly hold:
/// acknowledged, then left by a crash for the next start to commit. Reads only.
pub(crate) fn uncommitted_requests(conn: &Connection, log_dir: &Path) -> Result<usize, StoreError> {
    if !log_dir.exists() {
        return Ok(0);
    }
    let position = committed_position(conn)?;
    Ok(ingest_log::read_from(log_dir, position.seq)?.records.len())
}

fn local_indexes(local: &ArrayRef) -> &UInt32Array {
    local
        .as_any()
        .downcast_ref::<UInt32Array>()
        .expect("id columns are UInt32")
}

/// Replaces batch-local indexes by stored ids (NULL for an entry that could not be stored).
fn remap(local: &ArrayRef, ids: &[Option<u32>]) -> ArrayRef {
    Arc::new(
        local_indexes(local)
            .iter()
            .map(|index| index.and_then(|i| ids[i as usize]))
            .collect::<UInt32Array>(),
    )
}

/// The `attribute_keys` column of rows whose key set is past the limit: their keys inline.
fn keys_of_unstored(local: &ArrayRef, ids: &[Option<u32>], key_sets: &[KeySet]) -> ArrayRef {
    inline_keys(local_indexes(local).iter().map(|index| {
        let index = index.expect("every row has a key set") as usize;
        ids[index].is_none().then(|| &key_sets[index])
    }))
}

enum ResourceOrScope {
    Resource,
    Scope,
}

/// Rows for `resources` or `scopes` first seen in this transaction.
#[derive(Default)]
struct NewRows {
    ids: Vec<u32>,
    /// `service_name` for resources; `name` then `version` for scopes.
    names: Vec<String>,
    versions: Vec<String>,
    attributes: AttributeColumn,
    dropped: Vec<u32>,
    schema_urls: Vec<String>,
    fingerprints: Vec<Vec<u8>>,
}

impl NewRows {
    fn push_resource(&mut self, id: u32, entry: &crate::batch::ResourceEntry) {
        self.ids.push(id);
        self.names.push(entry.service_name.clone());
        self.attributes
            .push(&attribute_text::borrowed(&entry.resource.attributes));
        self.dropped.push(entry.resource.dropped_attributes_count);
        self.schema_urls.push(entry.schema_url.clone());
        self.fingerprints.push(entry.fingerprint.clone());
    }

    fn push_scope(&mut self, id: u32, entry: &crate::batch::ScopeEntry) {
        self.ids.push(id);
        self.names.push(entry.scope.name.clone());
        self.versions.push(entry.scope.version.clone());
        self.attributes
            .push(&attribute_text::borrowed(&entry.scope.attributes));
        self.dropped.push(entry.scope.dropped_attributes_count);
        self.schema_urls.push(entry.schema_url.clone());
        self.fingerprints.push(entry.fingerprint.clone());
    }

    fn finish(self, kind: ResourceOrScope) -> Result<Option<RecordBatch>, StoreError> {
        if self.ids.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let (mut fields, mut columns): (Vec<Field>, Vec<ArrayRef>) = match kind {
            ResourceOrScope::Resource => (
                vec![
                    Field::new("resource_id", DataType::UInt32, false),
                    text("service_name"),
                ],
                vec![
                    Arc::new(UInt32Array::from(self.ids)),
                    Arc::new(StringArray::from(self.names)),
                ],
            ),
            ResourceOrScope::Scope => (
                vec![
                    Field::new("scope_id", DataType::UInt32, false),
                    text("name"),
                    text("version"),
                ],
                vec![
                    Arc::new(UInt32Array::from(self.ids)),
                    Arc::new(StringArray::from(self.names)),
                    Arc::new(StringArray::from(self.versions)),
                ],
            ),
        };
        fields.extend(attribute_fields(false));
        fields.extend([
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            text("schema_url"),
            Field::new("fingerprint", DataType::Binary, false),
        ]);
        columns.extend(self.attributes.finish());
        columns.extend([
            Arc::new(UInt32Array::from(self.dropped)) as ArrayRef,
            Arc::new(StringArray::from(self.schema_urls)),
            Arc::new(BinaryArray::from_iter_values(self.fingerprints)),
        ]);
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TraceId;
    use crate::indexer::MAX_LAG_ROWS;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn batch(spans: usize) -> SpanBatch {
        SpanBatch::from_request(&request(1..=spans as u64)).0
    }

    fn request(span_ids: std::ops::RangeInclusive<u64>) -> ExportTraceServiceRequest {
        let trace_id: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        let spans = span_ids
            .map(|i| Span {
                trace_id: trace_id.to_bytes().to_vec(),
                span_id: i.to_be_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn requests_logged_but_not_committed_are_committed_on_open_once() {
        use prost::Message;
        let dir = std::env::temp_dir().join(format!("ducktrace-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = crate::StoreConfig::new(dir.clone());
        crate::Store::open(&config).unwrap().close();

        // What a crash leaves: three requests synced to the log, of which DuckDB has the first
        // and two spans of the second.
        let log_dir = dir.join(crate::INGEST_LOG_DIR);
        let first = ingest_log::read_from(&log_dir, 0).unwrap().next_seq;
        let requests = [request(1..=3), request(4..=6), request(7..=9)].map(|r| r.encode_to_vec());
        LogWriter::create(&log_dir, first)
            .unwrap()
            .append(requests.iter().map(Vec::as_slice))
            .unwrap();
        let database = dir.join(crate::DATABASE_FILE);
        Connection::open(&database)
            .unwrap()
            .execute("UPDATE ingest_log_position SET seq = ?, spans = 2", [first + 1])
            .unwrap();

        for _ in 0..2 {
            crate::Store::open(&config).unwrap().close();
            let stored: Vec<u64> = Connection::open(&database)
                .unwrap()
                .prepare("SELECT span_id FROM span_data ORDER BY span_id")
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                stored,
                vec![6, 7, 8, 9],
                "the spans past the committed position, once"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn after_a_load_passes_answers_wait_for_the_commit_again() {
        let dir = std::env::temp_dir().join(format!("ducktrace-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::Store::open(&crate::StoreConfig::new(dir.clone())).unwrap();
        let stored = || {
            store
                .reader()
                .with_connection(|conn| {
                    Ok::<_, StoreError>(
                        conn.query_row("SELECT count(*) FROM span_data", [], |row| row.get(0))?,
                    )
                })
                .unwrap()
        };
        // A transaction this large puts the writer under load, where answers come before the
        // commit; a pause of LOAD_GAP ends it, whether the writer idles or has a transaction open.
        store.writer().write(batch(LOAD_SPANS)).await.unwrap();
        store.writer().write(batch(1)).await.unwrap();
        tokio::time::sleep(LOAD_GAP * 4).await;
        store.writer().write(batch(1)).await.unwrap();
        let count: usize = stored();
        assert_eq!(
            count,
            LOAD_SPANS + 2,
            "an answer after the load comes after the commit"
        );
        store.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A writer whose thread never runs: queued spans stay queued. Its indexer has every pass
    /// at their start, over a table of no spans.
    fn stalled_writer(max_queued_spans: usize) -> (SpanWriter, mpsc::Receiver<Command>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::schema::META_DDL).unwrap();
        conn.execute_batch(&crate::schema::ddl()).unwrap();
        let (commands, queue) = mpsc::channel();
        let writer = SpanWriter {
            commands,
            permits: Arc::new(Semaphore::new(max_queued_spans)),
            progress: Arc::new(Progress::load(&conn, crate::INDEX_PASSES).unwrap()),
            max_queued_spans,
        };
        (writer, queue)
    }

    #[tokio::test]
    async fn clients_are_refused_while_indexing_is_too_far_behind_and_imports_are_not() {
        let (writer, _queue) = stalled_writer(8);
        writer.progress.committed(MAX_LAG_ROWS, None);
        let queued = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(batch(1)).await }
        });
        while writer.permits.available_permits() == 8 {
            tokio::task::yield_now().await;
        }
        writer.progress.committed(MAX_LAG_ROWS + 1, None);
        // Queued instead, the write would wait for ever on the stalled writer.
        match tokio::time::timeout(Duration::from_secs(5), writer.write(batch(1))).await {
            Ok(Err(error @ WriteError::IndexingBehind { spans })) => {
                assert_eq!(spans, MAX_LAG_ROWS + 1);
                assert!(error.is_overload());
            }
            other => panic!("expected IndexingBehind, got {other:?}"),
        }
        let imported = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write_ahead_of_indexing(batch(1)).await }
        });
        let queued_too = tokio::time::timeout(Duration::from_secs(5), async {
            while writer.permits.available_permits() == 7 {
                tokio::task::yield_now().await;
            }
        });
        assert!(
            queued_too.await.is_ok(),
            "an import is queued however far indexing lags"
        );
        queued.abort();
        imported.abort();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let (writer, queue) = stalled_writer(8);
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(batch(5)).await }
        });
        while writer.permits.available_permits() == 8 {
            tokio::task::yield_now().await;
        }
        match writer.write(batch(5)).await {
            Err(WriteError::Overloaded { queued: 5 }) => {}
            other => panic!("expected Overloaded with 5 queued, got {other:?}"),
        }
        // Answering the queued job frees its permits: the next write is queued, not refused.
        let Ok(Command::Write(WriteJob {
            done,
            _permit: permit,
            ..
        })) = queue.try_recv()
        else {
            panic!("one job was queued")
        };
        drop(permit);
        done.send(Ok(())).unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(writer.permits.available_permits(), 8);
    }
}
