//! The DuckDB span store: one database file holding every span received, written by a single
//! group-commit writer and read through pooled read-only connections.

mod batch;
mod columns;
pub mod ids;
pub mod otlp_json;
mod reader;
mod schema;
pub mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duckdb::Connection;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

pub use batch::{Rejections, SpanBatch, UNKNOWN_SERVICE};
pub use ids::{SpanId, TraceId};
pub use writer::{SpanWriter, WriteError, WriterConfig};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "ducktrace.duckdb";

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] duckdb::Error),
    #[error("column conversion error: {0}")]
    Arrow(#[from] duckdb::arrow::error::ArrowError),
    #[error("a stored resource or scope cannot be decoded: {0}")]
    Corrupt(#[from] prost::DecodeError),
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
}

/// An open store: the writer handle for ingest and a reader for queries.
pub struct Store {
    writer: SpanWriter,
    reader: Reader,
    writer_thread: writer::WriterThread,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `config.data_dir`; replays its WAL if the
    /// last run crashed, so every acknowledged span is there.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join(DATABASE_FILE);
        let conn = Connection::open(&path)?;
        conn.execute_batch(&schema::ddl())?;
        check_schema_version(&conn, &path)?;
        // Nothing in ducktrace reads or writes files through SQL, so no query can either.
        conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")?;
        let (writer, writer_thread) = writer::spawn(conn.try_clone()?, config.writer.clone())?;
        let reader = Reader {
            template: Arc::new(Mutex::new(conn)),
            idle: Arc::default(),
        };
        Ok(Self {
            writer,
            reader,
            writer_thread,
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
    }
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
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Reader {
    /// Runs `work` on a pooled connection to the store.
    pub fn with_connection<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
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
        self.with_connection(|conn| reader::trace(conn, trace_id))
    }

    /// Runs a read-only SQL query; see [`sql::query`].
    pub fn query(&self, sql: &str, max_rows: usize) -> Result<sql::QueryResult, sql::QueryError> {
        self.with_connection(|conn| sql::query(conn, sql, max_rows))
    }
}
