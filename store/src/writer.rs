//! The single writer: group commit of many requests per DuckDB transaction.
//!
//! Request tasks hand over finished `SpanBatch`es; one OS thread owns the write connection,
//! gathers whatever is queued (up to `max_batch_spans`, waiting at most `linger` for more),
//! appends it all with Arrow appends in one transaction, commits (DuckDB syncs its WAL on
//! commit), and only then answers every request in the group. Memory between socket and disk is
//! bounded by a semaphore counted in spans: when it is exhausted the request is refused as
//! overloaded, and the client retries later.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::arrow::array::{ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::Connection;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::attribute_text;
use crate::batch::{
    span_schema, SpanBatch, INLINE_KEYS_COLUMN, KEY_SET_COLUMN, RESOURCE_ID_COLUMN, SCOPE_ID_COLUMN,
};
use crate::columns::{attribute_fields, inline_keys, key_set_rows, AttributeColumn, KeySet};
use crate::indexer::{CommittedSpans, IndexerInbox, Progress};
use crate::StoreError;

/// WAL size that makes a commit checkpoint (DuckDB's default is 16MB). A checkpoint compresses
/// the open row groups and rewrites the last, partly filled one whole, blocking the writer, so
/// frequent small checkpoints recompress the same rows many times: at 16MB (about 25,000 spans)
/// ingest ran at half the rate and the file was 55% larger. Larger thresholds hold more
/// uncompressed rows in memory and make each pause longer (about 3 s at 256MB on two cores),
/// which exporters with a 10 s timeout must not see.
pub(crate) const CHECKPOINT_THRESHOLD: &str = "256MB";

/// Limits of the write path.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Spans accepted but not yet committed, across all requests; beyond it requests are refused.
    pub max_queued_spans: usize,
    /// Spans per transaction at most.
    pub max_batch_spans: usize,
    /// How long the writer waits for more requests before committing a small group.
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
    #[error("the span queue is full ({queued} spans waiting for commit); retry later")]
    Overloaded { queued: usize },
    #[error("the store is shutting down")]
    Closed,
    #[error("committing spans failed: {0}")]
    CommitFailed(String),
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
    max_queued_spans: usize,
}

impl SpanWriter {
    /// Stores a batch; returns once it is committed to the database file.
    pub async fn write(&self, batch: SpanBatch) -> Result<(), WriteError> {
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
    fn ids_for<'e, E>(
        &mut self,
        entries: &'e [E],
        fingerprint: fn(&E) -> &Vec<u8>,
        mut new_row: impl FnMut(u32, &'e E),
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

/// Running writer thread; `stop` ends it after what was already queued is committed.
pub(crate) struct WriterThread {
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
}

impl WriterThread {
    pub(crate) fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        if self.thread.join().is_err() {
            tracing::error!("the span writer panicked");
        }
    }
}

/// Starts the writer thread on `conn`; what it commits is handed to `indexer` and counted in
/// `progress`.
pub(crate) fn spawn(
    conn: Connection,
    config: WriterConfig,
    indexer: IndexerInbox,
    progress: Arc<Progress>,
) -> Result<(SpanWriter, WriterThread), StoreError> {
    let (commands, queue) = mpsc::channel();
    let writer = Writer {
        next_rowid: progress.span_rows(),
        indexer,
        progress,
        resources: Interner::load(&conn, "resources", "resource_id", usize::MAX)?,
        scopes: Interner::load(&conn, "scopes", "scope_id", usize::MAX)?,
        key_sets: Interner::load(
            &conn,
            "attribute_key_sets",
            "key_set_id",
            config.max_attribute_key_sets,
        )?,
        conn,
        config: config.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("span-writer".into())
        .spawn(move || writer.run(queue))?;
    let handle = SpanWriter {
        commands: commands.clone(),
        permits: Arc::new(Semaphore::new(config.max_queued_spans)),
        max_queued_spans: config.max_queued_spans,
    };
    Ok((handle, WriterThread { commands, thread }))
}

struct Writer {
    conn: Connection,
    /// The rowid the next appended span gets: `span_data` is only ever appended to, by this
    /// writer, so rowids run from 0 in commit order.
    next_rowid: i64,
    indexer: IndexerInbox,
    progress: Arc<Progress>,
    resources: Interner,
    scopes: Interner,
    key_sets: Interner,
    config: WriterConfig,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Command>) {
        let mut running = true;
        while running {
            let first = match queue.recv() {
                Ok(Command::Write(job)) => job,
                Ok(Command::Stop) | Err(_) => break,
            };
            let group;
            (group, running) = self.gather(first, &queue);
            let spans: usize = group.iter().map(|job| job.batch.len()).sum();
            let started = Instant::now();
            let result = self.commit(&group).map_err(|error| {
                tracing::error!(%error, spans, "commit failed; the batch is refused for retry");
                WriteError::CommitFailed(error.to_string())
            });
            tracing::trace!(spans, requests = group.len(), elapsed = ?started.elapsed(), "committed");
            for job in group {
                let _ = job.done.send(result.clone());
            }
        }
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

    fn commit(&mut self, group: &[WriteJob]) -> Result<(), StoreError> {
        match self.append_all(group) {
            Ok(appended) => {
                for interner in [&mut self.resources, &mut self.scopes, &mut self.key_sets] {
                    interner.commit();
                }
                for columns in appended {
                    let first_rowid = self.next_rowid;
                    self.next_rowid += columns.num_rows() as i64;
                    // Imported spans keep the nested types they were read with; the indexer
                    // reads those back from the table instead.
                    if Arc::ptr_eq(&columns.schema(), &span_schema()) {
                        self.indexer.committed(CommittedSpans { first_rowid, columns });
                    }
                }
                self.progress.committed(self.next_rowid);
                Ok(())
            }
            Err(error) => {
                for interner in [&mut self.resources, &mut self.scopes, &mut self.key_sets] {
                    interner.rollback();
                }
                Err(error)
            }
        }
    }

    /// Appends and commits every batch of the group; returns the columns appended, in order.
    fn append_all(&mut self, group: &[WriteJob]) -> Result<Vec<RecordBatch>, StoreError> {
        let mut appended = Vec::with_capacity(group.len());
        let transaction = self.conn.transaction()?;
        {
            let mut resource_rows = NewRows::default();
            let mut scope_rows = NewRows::default();
            let (mut key_set_ids, mut new_key_sets): (Vec<u32>, Vec<&KeySet>) = Default::default();
            let mut spans = transaction.appender("span_data")?;
            for job in group {
                let batch = &job.batch;
                let resource_ids = self.resources.ids_for(
                    &batch.resources,
                    |e| &e.fingerprint,
                    |id, e| resource_rows.push_resource(id, e),
                );
                let scope_ids = self.scopes.ids_for(
                    &batch.scopes,
                    |e| &e.fingerprint,
                    |id, e| scope_rows.push_scope(id, e),
                );
                let key_set_ids_here = self.key_sets.ids_for(
                    &batch.key_sets,
                    |e| &e.fingerprint,
                    |id, e| {
                        key_set_ids.push(id);
                        new_key_sets.push(e);
                    },
                );
                let mut columns = batch.columns.clone();
                columns[RESOURCE_ID_COLUMN] = remap(&columns[RESOURCE_ID_COLUMN], &resource_ids);
                columns[SCOPE_ID_COLUMN] = remap(&columns[SCOPE_ID_COLUMN], &scope_ids);
                if key_set_ids_here.contains(&None) {
                    columns[INLINE_KEYS_COLUMN] =
                        keys_of_unstored(&columns[KEY_SET_COLUMN], &key_set_ids_here, &batch.key_sets);
                }
                columns[KEY_SET_COLUMN] = remap(&columns[KEY_SET_COLUMN], &key_set_ids_here);
                let columns = RecordBatch::try_new(batch.schema.clone(), columns)?;
                spans.append_record_batch(columns.clone())?;
                appended.push(columns);
            }
            // Appenders only report flush errors from an explicit flush, never from drop.
            spans.flush()?;
            let key_set_rows = (!key_set_ids.is_empty())
                .then(|| key_set_rows(key_set_ids, &new_key_sets))
                .transpose()?;
            for (table, rows) in [
                ("resources", resource_rows.finish(ResourceOrScope::Resource)?),
                ("scopes", scope_rows.finish(ResourceOrScope::Scope)?),
                ("attribute_key_sets", key_set_rows),
            ] {
                if let Some(rows) = rows {
                    let mut appender = transaction.appender(table)?;
                    appender.append_record_batch(rows)?;
                    appender.flush()?;
                }
            }
        }
        transaction.commit()?;
        Ok(appended)
    }
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
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn batch(spans: usize) -> SpanBatch {
        let trace_id: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        let spans = (1..=spans as u64)
            .map(|i| Span {
                trace_id: trace_id.to_bytes().to_vec(),
                span_id: i.to_be_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        SpanBatch::from_request(&request).0
    }

    /// A writer whose thread never runs: queued spans stay queued.
    fn stalled_writer(max_queued_spans: usize) -> (SpanWriter, mpsc::Receiver<Command>) {
        let (commands, queue) = mpsc::channel();
        let writer = SpanWriter {
            commands,
            permits: Arc::new(Semaphore::new(max_queued_spans)),
            max_queued_spans,
        };
        (writer, queue)
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
