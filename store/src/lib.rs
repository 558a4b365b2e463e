//! The DuckDB span store: one database file holding every span received, made durable first in
//! an ingest log, written by a single writer and read through pooled read-only connections.

mod attribute_index;
mod attribute_text;
mod batch;
mod blocks;
mod bloom;
mod columns;
mod edges;
pub mod export;
pub mod ids;
pub mod import;
mod indexer;
mod ingest_log;
mod key_sets;
pub mod metrics;
pub mod otlp_json;
mod otlp_wire;
mod reader;
mod schema;
pub mod search;
pub mod sql;
mod summaries;
pub mod trace_compare;
mod trace_index;
pub mod trace_view;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use duckdb::Connection;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

pub use batch::{Rejections, SpanBatch, UNKNOWN_SERVICE};
/// DuckDB's value type, as handed to [`sql::RowSink`]s.
pub use duckdb::types as duckdb_value;
pub use ids::{SpanId, TraceId};
pub use otlp_wire::WireError;
pub use writer::{SpanWriter, WriteError, WriterConfig};

/// What the background indexer keeps current as spans arrive.
const INDEX_PASSES: &[indexer::Pass] = &[
    edges::SERVICE_CALLS,
    edges::SERVICE_CALL_MINUTES,
    summaries::TRACE_SUMMARIES,
    attribute_index::ATTRIBUTE_BLOOMS,
    trace_index::TRACE_BLOOMS,
];

/// DuckDB's default memory ceiling: with it a server ingesting at full speed stays under 1 GiB
/// resident (BENCHMARKS.md); what else is resident is the queue of spans waiting for commit and
/// the spans the indexer holds. At 384MB, 220k spans/s reached 1,066–1,226 MiB.
pub const DEFAULT_MEMORY_LIMIT: &str = "300MB";

/// Queries running at once by default: more at once only share the same cores, and take them
/// from ingest (BENCHMARKS.md).
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 2;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "ducktrace.duckdb";
/// The directory of the ingest log, next to the database file (`ingest_log.rs`).
pub const INGEST_LOG_DIR: &str = "ingest-log";

/// The DuckDB storage format of new span stores: readable by DuckDB 1.5 and later.
const STORAGE_FORMAT: &str = "v1.5.0";

/// The size of DuckDB's blocks in new span stores, a quarter of its default 256 KiB. A commit
/// that writes a row group leaves the last block of each column partly filled, and free space
/// is counted in whole blocks: 10M spans took 67.0–68.0 bytes a span instead of 69.9–70.0.
/// Smaller blocks compress worse (79.4 bytes a span at 32 KiB). A file keeps the size it was
/// made with.
const BLOCK_SIZE: &str = "65536";

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] duckdb::Error),
    #[error("column conversion error: {0}")]
    Arrow(#[from] duckdb::arrow::error::ArrowError),
    #[error("a stored resource or scope cannot be decoded: {0}")]
    Corrupt(#[from] prost::DecodeError),
    #[error("a span refers to {table} id {id}, which is not stored")]
    Dangling { table: &'static str, id: u32 },
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{path} holds schema version {found}, this ducktrace needs {expected}; export it with the version that wrote it or start with a new --data-dir")]
    SchemaVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub writer: WriterConfig,
    /// How long one SQL statement may run before it is interrupted.
    pub query_time_limit: std::time::Duration,
    /// DuckDB's memory ceiling for everything it does (ingest, queries), e.g. "2GB";
    /// past it, queries spill to disk or fail with an out-of-memory error.
    pub memory_limit: String,
    /// Queries that run at once; more wait for a turn (see [`QuerySlots`]).
    pub max_concurrent_queries: usize,
    /// Threads one DuckDB statement may use, appends and commits included.
    pub duckdb_threads: usize,
}

/// One thread per core, DuckDB's own default. While DuckDB's workers run a statement's tasks,
/// the thread that issued it spins on the task queue, so on 2 cores 1 thread took ~20% less
/// CPU per ingested span, but searches by attribute and SQL scans took 1.5-2x as long and
/// ingest was no faster: the writer thread became the limit (BENCHMARKS.md).
pub fn default_duckdb_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

impl StoreConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            writer: WriterConfig::default(),
            query_time_limit: std::time::Duration::from_secs(30),
            memory_limit: DEFAULT_MEMORY_LIMIT.into(),
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
            duckdb_threads: default_duckdb_threads(),
        }
    }
}

/// An open store: the writer handle for ingest and a reader for queries.
pub struct Store {
    writer: SpanWriter,
    reader: Reader,
    writer_thread: writer::WriterThread,
    indexer: indexer::Indexer,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `config.data_dir`; commits what the ingest log
    /// holds past the database's last transaction, so every acknowledged span is there.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join(DATABASE_FILE);
        let conn = Connection::open_with_flags(&path, new_file_format()?)?;
        conn.execute_batch(schema::META_DDL)?;
        check_schema_version(&conn, &path)?;
        conn.execute_batch(&schema::ddl())?;
        attribute_index::mark_plain_blocks(&conn)?;
        let memory_limit = &config.memory_limit;
        if !memory_limit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ')
        {
            return Err(StoreError::Config(format!(
                "memory limit {memory_limit:?} is not a size like 2GB"
            )));
        }
        conn.execute_batch(&format!("SET memory_limit = '{memory_limit}'"))?;
        if config.duckdb_threads == 0 {
            return Err(StoreError::Config("DuckDB needs at least one thread".into()));
        }
        conn.execute_batch(&format!("SET threads = {}", config.duckdb_threads))?;
        conn.execute_batch(&format!(
            "SET checkpoint_threshold = '{}MiB'",
            writer::CHECKPOINT_THRESHOLD_MIB
        ))?;
        let indexer_conn = indexer::Indexer::connection(&conn)?;
        // Nothing in ducktrace reads or writes files through SQL, so no query can either.
        conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")?;
        let progress = Arc::new(indexer::Progress::load(&conn, INDEX_PASSES)?);
        let (inbox, inbound) = indexer::Indexer::inbox(INDEX_PASSES, progress.clone());
        let (writer, writer_thread) = writer::spawn(
            conn.try_clone()?,
            &path,
            &config.data_dir.join(INGEST_LOG_DIR),
            config.writer.clone(),
            inbox.clone(),
            progress.clone(),
        )?;
        let indexer = indexer::Indexer::start(indexer_conn, inbox, inbound, progress.clone())?;
        let mut catalog = reader::Catalog::default();
        let indexed = progress.first_unindexed(&trace_index::TRACE_BLOOMS);
        trace_index::read_filters(&conn, &mut catalog, indexed)?;
        let reader = Reader::new(
            conn,
            catalog,
            progress,
            config.query_time_limit,
            config.max_concurrent_queries,
        );
        Ok(Self {
            writer,
            reader,
            writer_thread,
            indexer,
            path,
        })
    }

    pub fn writer(&self) -> SpanWriter {
        self.writer.clone()
    }

    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits what is queued, checkpoints and stops the writer; writes after this are refused
    /// as `WriteError::Closed`, which clients retry.
    pub fn close(self) {
        self.writer_thread.stop();
        self.indexer.stop();
    }
}

/// DuckDB writes new files in its oldest readable format unless told otherwise; the 1.5 format
/// adds the DICT_FSST string compression, which stores the attribute maps in about 30% fewer
/// bytes. A file already written in an older format keeps it.
fn new_file_format() -> Result<duckdb::Config, StoreError> {
    Ok(duckdb::Config::default()
        .with("storage_compatibility_version", STORAGE_FORMAT)?
        .with("default_block_size", BLOCK_SIZE)?)
}

/// Opens the data directory read-only for queries, as `ducktrace sql` does when no server runs.
/// Fails while a server has the database open: DuckDB allows one writing process at a time.
pub fn open_read_only(config: &StoreConfig) -> Result<Reader, StoreError> {
    let path = config.data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no span store at {}", path.display()),
        )));
    }
    let duckdb_config = duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?;
    let conn = Connection::open_with_flags(&path, duckdb_config)?;
    conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")?;
    let uncommitted = writer::uncommitted_requests(&conn, &config.data_dir.join(INGEST_LOG_DIR))?;
    if uncommitted > 0 {
        tracing::warn!(
            requests = uncommitted,
            "the ingest log holds acknowledged requests that the database does not have yet (the server \
             stopped before committing them); queries here miss them until `ducktrace serve` starts on \
             this data directory and commits them"
        );
    }
    // Nothing writes while the store is open read-only, so the progress read now stays true.
    let progress = Arc::new(indexer::Progress::load(&conn, INDEX_PASSES)?);
    Ok(Reader::new(
        conn,
        reader::Catalog::default(),
        progress,
        config.query_time_limit,
        config.max_concurrent_queries,
    ))
}

/// Runs `work` in one transaction, committed when it succeeds and rolled back when it fails:
/// one snapshot for a search, one atomic step for an indexer pass.
pub(crate) fn in_transaction<T>(
    conn: &Connection,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = work();
    let end = conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    end?;
    Ok(value)
}

fn check_schema_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let expected = schema::SCHEMA_VERSION;
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM ducktrace_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|error| match error {
            duckdb::Error::QueryReturnedNoRows => Ok(None),
            error => Err(error),
        })?;
    match found {
        None => {
            conn.execute(
                "INSERT INTO ducktrace_meta VALUES ('schema_version', ?)",
                [expected.to_string()],
            )?;
            Ok(())
        }
        Some(found) if found == expected.to_string() => Ok(()),
        Some(found) => Err(StoreError::SchemaVersion {
            path: path.to_owned(),
            found,
            expected,
        }),
    }
}

/// Read access for the API, the UI and SQL. Cheap to clone; calls block, so run them off the
/// async runtime (e.g. `tokio::task::spawn_blocking`).
#[derive(Clone)]
pub struct Reader {
    template: Arc<Mutex<Connection>>,
    catalog: Arc<Mutex<reader::Catalog>>,
    progress: Arc<indexer::Progress>,
    idle: Arc<Mutex<Vec<Connection>>>,
    slots: Arc<QuerySlots>,
    query_time_limit: std::time::Duration,
}

/// A counting semaphore for queries: beyond the limit a caller waits for a turn, which bounds
/// the CPU that reads take from ingest however many users search at once.
struct QuerySlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl QuerySlots {
    fn take(&self) -> impl Drop + '_ {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotTaken(self)
    }
}

struct SlotTaken<'a>(&'a QuerySlots);

impl Drop for SlotTaken<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Nice value of the threads that run queries: when searches and ingest compete for the cores,
/// the scheduler gives ingest (nice 0) about ten times the share of a query, so exporters are
/// not refused because someone is browsing.
const QUERY_THREAD_NICE: libc::c_int = 10;

/// Moves the calling thread (a blocking-pool thread running a query) down to
/// [`QUERY_THREAD_NICE`], once, never up: a server started under `nice` keeps its own level.
/// Unprivileged threads cannot move back up, so the thread stays there.
fn lower_this_threads_priority() {
    thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if LOWERED.replace(true) {
        return;
    }
    // SAFETY: gettid, getpriority and setpriority (PRIO_PROCESS with a thread id) read and
    // change only the calling thread's nice value; they touch no memory of ours.
    let result = unsafe {
        let thread = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, current.max(QUERY_THREAD_NICE))
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a query thread's priority");
    }
}

impl Reader {
    fn new(
        conn: Connection,
        catalog: reader::Catalog,
        progress: Arc<indexer::Progress>,
        query_time_limit: std::time::Duration,
        max_concurrent_queries: usize,
    ) -> Self {
        Self {
            template: Arc::new(Mutex::new(conn)),
            catalog: Arc::new(Mutex::new(catalog)),
            progress,
            idle: Arc::default(),
            slots: Arc::new(QuerySlots {
                free: Mutex::new(max_concurrent_queries.max(1)),
                freed: Condvar::new(),
            }),
            query_time_limit,
        }
    }

    /// Runs `work` on a pooled connection to the store, when a query slot is free.
    pub fn with_connection<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let _slot = self.slots.take();
        lower_this_threads_priority();
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self
                .template
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_clone()
                .map_err(StoreError::from)?,
        };
        let result = work(&conn);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        result
    }

    /// The stored spans of a trace as OTLP, grouped by resource and scope; empty when unknown.
    pub fn trace(&self, trace_id: TraceId) -> Result<Vec<ResourceSpans>, StoreError> {
        self.with_connection(|conn| reader::trace(conn, &self.catalog, &self.progress, trace_id))
    }

    /// The traces matching `query`; see [`search::search`].
    pub fn search(&self, query: &search::TraceQuery) -> Result<Vec<search::TraceSummary>, StoreError> {
        self.with_connection(|conn| search::search(conn, &self.catalog, &self.progress, query))
    }

    /// Every service that sent spans, and every operation of each, for search pickers.
    pub fn services_and_operations(&self) -> Result<(Vec<String>, Vec<search::Operation>), StoreError> {
        self.with_connection(|conn| Ok((search::services(conn)?, search::operations(conn)?)))
    }

    /// The trace arranged as a tree for display, or `None` when no span of it is stored.
    pub fn trace_view(&self, trace_id: TraceId) -> Result<Option<trace_view::TraceView>, StoreError> {
        self.with_connection(|conn| trace_view::load(conn, &self.catalog, &self.progress, trace_id))
    }

    /// The limits for a query returning at most `max_rows` rows, with the configured time limit.
    pub fn limits(&self, max_rows: usize) -> sql::QueryLimits {
        sql::QueryLimits {
            max_rows,
            time_limit: self.query_time_limit,
        }
    }

    /// Runs a read-only SQL query and collects its rows; see [`sql::query`].
    pub fn query(&self, sql: &str, limits: sql::QueryLimits) -> Result<sql::QueryResult, sql::QueryError> {
        self.with_connection(|conn| sql::query(conn, sql, limits))
    }

    /// Runs a read-only SQL query, streaming its rows into `sink`; see [`sql::query_each`].
    pub fn query_each(
        &self,
        sql: &str,
        params: &[Option<String>],
        limits: sql::QueryLimits,
        sink: &mut dyn sql::RowSink,
    ) -> Result<sql::Outcome, sql::QueryError> {
        self.with_connection(|conn| sql::query_each(conn, sql, params, limits, sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_threads_nice() -> libc::c_int {
        // SAFETY: reads the calling thread's nice value only.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn new_stores_take_smaller_blocks_and_older_stores_keep_theirs() {
        let dir = std::env::temp_dir().join(format!("ducktrace-blocks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (new, older) = (dir.join("new"), dir.join("older"));
        // What an earlier build made: a file with DuckDB's default block size.
        std::fs::create_dir_all(&older).unwrap();
        drop(Connection::open(older.join(DATABASE_FILE)).unwrap());
        let block_size = |data_dir: &std::path::Path| {
            Store::open(&StoreConfig::new(data_dir.to_path_buf()))
                .unwrap()
                .close();
            Connection::open(data_dir.join(DATABASE_FILE))
                .unwrap()
                .query_row("SELECT block_size FROM pragma_database_size()", [], |row| {
                    row.get::<_, i64>(0)
                })
                .unwrap()
        };
        assert_eq!(block_size(&new).to_string(), BLOCK_SIZE);
        assert_eq!(block_size(&older), 262_144);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn query_threads_run_below_ingest() {
        let ours = this_threads_nice();
        let queries = std::thread::spawn(|| {
            lower_this_threads_priority();
            lower_this_threads_priority();
            this_threads_nice()
        });
        // A thread cannot be raised above where it started, e.g. under `nice -n 15`.
        assert_eq!(queries.join().unwrap(), ours.max(QUERY_THREAD_NICE));
        assert_eq!(this_threads_nice(), ours, "only the query thread is lowered");
    }
}
