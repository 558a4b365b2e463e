//! Each service's own SQLite database (database per service; instances of one service share
//! the file). Statements run on the blocking pool, each inside a CLIENT span with the `db.*`
//! attributes of the OpenTelemetry semantic conventions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the data directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database task stopped: {0}")]
    Task(String),
}

impl From<DbError> for tonic::Status {
    fn from(error: DbError) -> Self {
        crate::grpc::error(demo_kernel::ErrorCode::Internal, error.to_string())
    }
}

/// One service's database.
#[derive(Clone)]
pub struct Database {
    connection: Arc<Mutex<Connection>>,
    /// `db.namespace`: the file name.
    namespace: Arc<str>,
}

/// How long a statement waits for another process's write lock (the two inventory
/// instances write the same file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// Opens (creating) `dir/file` and runs `schema` — `CREATE … IF NOT EXISTS` statements and
    /// seed inserts that are safe to run at every start.
    pub fn open(dir: &Path, file: &str, schema: &str) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(file);
        let open = || -> rusqlite::Result<Connection> {
            let connection = Connection::open(&path)?;
            connection.busy_timeout(BUSY_TIMEOUT)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            connection.execute_batch(schema)?;
            Ok(connection)
        };
        // Switching to WAL is not covered by the busy timeout: when two instances start
        // together, the second waits here for the first.
        let mut tries = 0;
        let connection = loop {
            match open() {
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if failure.code == rusqlite::ErrorCode::DatabaseBusy && tries < 50 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                opened => {
                    break opened.map_err(|source| DbError::Open {
                        path: path.clone(),
                        source,
                    })?
                }
            }
        };
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            namespace: file.into(),
        })
    }

    /// Runs `work` (one statement or one transaction) in a span named `"{operation} {table}"`.
    pub async fn run<T, F>(&self, operation: &'static str, table: &'static str, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let span = tracing::info_span!(
            "db",
            otel.name = format!("{operation} {table}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "sqlite",
            db.namespace = &*self.namespace,
            db.operation.name = operation,
            db.collection.name = table,
        );
        let connection = self.connection.clone();
        let in_span = span.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _entered = in_span.enter();
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|error| DbError::Task(error.to_string()))?;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        Ok(result?)
    }
}

impl Database {
    /// Like [`Database::run`] without a span, for polling loops: an idle poll every few hundred
    /// milliseconds would otherwise fill the span store with empty root spans.
    pub async fn run_untraced<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = self.connection.clone();
        let result = tokio::task::spawn_blocking(move || {
            work(&mut connection.lock().unwrap_or_else(|p| p.into_inner()))
        })
        .await
        .map_err(|error| DbError::Task(error.to_string()))?;
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schema_is_created_and_statements_run() {
        let dir = std::env::temp_dir().join(format!("demo-db-test-{}", std::process::id()));
        let db = Database::open(&dir, "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER)").unwrap();
        db.run("INSERT", "t", |c| c.execute("INSERT INTO t VALUES (7)", []))
            .await
            .unwrap();
        let x: i64 = db
            .run("SELECT", "t", |c| {
                c.query_row("SELECT sum(x) FROM t", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(x, 7);
        // Opening again keeps the data: the schema is safe to run at every start.
        drop(db);
        let again = Database::open(&dir, "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER)").unwrap();
        let count: i64 = again
            .run("SELECT", "t", |c| {
                c.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(count, 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
