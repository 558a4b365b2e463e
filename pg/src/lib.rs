//! The PostgreSQL wire protocol in front of the span store, so `psql`, drivers and BI tools
//! (Grafana's PostgreSQL data source, for one) can query spans. Every statement takes the same
//! read-only path as `/api/sql`: one SELECT, no files or network, a time limit.
//!
//! Results are sent in PostgreSQL's text format with PostgreSQL types chosen from DuckDB's
//! (nested and 128-bit values as text); timestamps carry microseconds, PostgreSQL's precision.
//! There is no authentication: the server listens on localhost unless told otherwise.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use ducktrace_store::duckdb_value::{TimeUnit, Value};
use ducktrace_store::sql::{self, Column, QueryError, RowSink, SinkClosed};
use ducktrace_store::Reader;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use tokio::net::TcpListener;

/// Rows one statement may return over this protocol.
pub const MAX_ROWS: usize = 1_000_000;

/// Serves connections from `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, reader: Reader, shutdown: impl Future<Output = ()>) {
    let handlers = Arc::new(Handlers {
        backend: Arc::new(Backend {
            reader,
            parser: Arc::new(NoopQueryParser::new()),
        }),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!(%error, "PostgreSQL connection ended with an error");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "accepting a PostgreSQL connection failed"),
            },
        }
    }
}

struct Handlers {
    backend: Arc<Backend>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.backend.clone()
    }
}

struct Backend {
    reader: Reader,
    parser: Arc<NoopQueryParser>,
}

impl NoopStartupHandler for Backend {}

/// A finished query: its columns as PostgreSQL fields and its rows encoded.
struct Answer {
    fields: Arc<Vec<FieldInfo>>,
    rows: Vec<DataRow>,
}

impl Backend {
    /// Runs `sql` off the async runtime and encodes the rows in text format.
    async fn run(&self, sql: String, params: Vec<Option<String>>, max_rows: usize) -> PgWireResult<Answer> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut sink = Encode::default();
            reader
                .query_each(&sql, &params, reader.limits(max_rows), &mut sink)
                .map_err(user_error)?;
            sink.error.map_or(Ok(()), Err)?;
            Ok(Answer {
                fields: sink.fields,
                rows: sink.rows,
            })
        })
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?
    }

    /// The result columns of `sql` without running it (DuckDB's DESCRIBE only plans).
    async fn describe(&self, sql: &str) -> PgWireResult<Vec<FieldInfo>> {
        let described = self
            .run(
                format!("DESCRIBE {}", sql.trim().trim_end_matches(';')),
                Vec::new(),
                MAX_ROWS,
            )
            .await?;
        // DESCRIBE answers one row per column: name, type, ...; text-encoded, so parse it back.
        Ok(described
            .rows
            .iter()
            .map(|row| {
                let texts = text_fields(row);
                field(
                    texts.first().cloned().unwrap_or_default(),
                    texts.get(1).map_or("VARCHAR", String::as_str),
                )
            })
            .collect())
    }
}

/// Session commands drivers send on their own (transactions, `SET application_name`, ...).
/// Each query already runs alone in a read-only transaction, so they are acknowledged and
/// change nothing.
fn session_command(sql: &str) -> Option<Tag> {
    let keyword = sql
        .split_whitespace()
        .next()?
        .trim_end_matches(';')
        .to_ascii_uppercase();
    let tag = match keyword.as_str() {
        "BEGIN" | "START" => "BEGIN",
        "COMMIT" | "END" => "COMMIT",
        "ROLLBACK" | "ABORT" => "ROLLBACK",
        "SET" | "RESET" => "SET",
        "DISCARD" => "DISCARD ALL",
        "DEALLOCATE" => "DEALLOCATE",
        _ => return None,
    };
    Some(Tag::new(tag))
}

fn response(answer: Answer) -> Response {
    let rows = answer.rows.into_iter().map(Ok);
    Response::Query(QueryResponse::new(
        answer.fields,
        futures_util::stream::iter(rows),
    ))
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(tag) = session_command(query) {
            return Ok(vec![Response::Execution(tag)]);
        }
        Ok(vec![response(
            self.run(query.to_string(), Vec::new(), MAX_ROWS).await?,
        )])
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<String>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(tag) = session_command(&portal.statement.statement) {
            return Ok(Response::Execution(tag));
        }
        let max_rows = if max_rows == 0 {
            MAX_ROWS
        } else {
            max_rows.min(MAX_ROWS)
        };
        Ok(response(
            self.run(
                portal.statement.statement.clone(),
                text_parameters(portal)?,
                max_rows,
            )
            .await?,
        ))
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        statement: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parameters = statement
            .parameter_types
            .iter()
            .map(|t| t.clone().unwrap_or(Type::TEXT))
            .collect();
        let fields = if session_command(&statement.statement).is_some() {
            Vec::new()
        } else if statement.parameter_types.is_empty() {
            self.describe(&statement.statement).await?
        } else {
            // DESCRIBE cannot plan with unbound parameters; the portal describes the result.
            Vec::new()
        };
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let fields = if session_command(&portal.statement.statement).is_some() {
            Vec::new()
        } else if portal.parameter_len() == 0 {
            self.describe(&portal.statement.statement).await?
        } else {
            self.run(portal.statement.statement.clone(), text_parameters(portal)?, 0)
                .await?
                .fields
                .to_vec()
        };
        Ok(DescribePortalResponse::new(fields))
    }
}

/// Bound parameters as text, whatever format the client sent them in.
fn text_parameters(portal: &Portal<String>) -> PgWireResult<Vec<Option<String>>> {
    (0..portal.parameter_len())
        .map(|i| {
            let declared = portal
                .statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or(Type::TEXT);
            let value = match declared {
                Type::INT2 => portal.parameter::<i16>(i, &declared)?.map(|v| v.to_string()),
                Type::INT4 => portal.parameter::<i32>(i, &declared)?.map(|v| v.to_string()),
                Type::INT8 => portal.parameter::<i64>(i, &declared)?.map(|v| v.to_string()),
                Type::FLOAT4 => portal.parameter::<f32>(i, &declared)?.map(|v| v.to_string()),
                Type::FLOAT8 => portal.parameter::<f64>(i, &declared)?.map(|v| v.to_string()),
                Type::BOOL => portal.parameter::<bool>(i, &declared)?.map(|v| v.to_string()),
                _ => portal.parameter::<String>(i, &Type::TEXT)?,
            };
            Ok(value)
        })
        .collect()
}

/// The PostgreSQL type a DuckDB column is sent as.
fn pg_type(duckdb_type: &str) -> Type {
    match duckdb_type {
        "BOOLEAN" => Type::BOOL,
        "TINYINT" | "SMALLINT" | "UTINYINT" => Type::INT2,
        "INTEGER" | "USMALLINT" => Type::INT4,
        "BIGINT" | "UINTEGER" => Type::INT8,
        "FLOAT" => Type::FLOAT4,
        "DOUBLE" => Type::FLOAT8,
        "VARCHAR" => Type::VARCHAR,
        "BLOB" => Type::BYTEA,
        "DATE" => Type::DATE,
        "TIMESTAMP" | "TIMESTAMP_S" | "TIMESTAMP_MS" | "TIMESTAMP_NS" => Type::TIMESTAMP,
        "TIMESTAMP WITH TIME ZONE" => Type::TIMESTAMPTZ,
        _ => Type::TEXT,
    }
}

fn field(name: String, duckdb_type: &str) -> FieldInfo {
    FieldInfo::new(name, None, None, pg_type(duckdb_type), FieldFormat::Text)
}

/// A value in PostgreSQL's text format for the type `pg_type` chose; None is NULL.
fn pg_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Boolean(b) => Some(if *b { "t" } else { "f" }.into()),
        Value::Blob(bytes) => Some(format!("\\x{}", hex_string(bytes))),
        Value::Timestamp(unit, amount) => Some(pg_timestamp(*unit, *amount)),
        Value::Text(text) | Value::Enum(text) => Some(text.clone()),
        other => match sql::to_json(other) {
            serde_json::Value::String(text) => Some(text),
            json => Some(json.to_string()),
        },
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, microseconds being PostgreSQL's precision.
fn pg_timestamp(unit: TimeUnit, amount: i64) -> String {
    let micros = match unit {
        TimeUnit::Second => amount * 1_000_000,
        TimeUnit::Millisecond => amount * 1_000,
        TimeUnit::Microsecond => amount,
        TimeUnit::Nanosecond => amount.div_euclid(1_000),
    };
    let iso = match sql::to_json(&Value::Timestamp(TimeUnit::Microsecond, micros)) {
        serde_json::Value::String(iso) => iso,
        other => other.to_string(),
    };
    iso.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Collects a result as PostgreSQL fields and text-encoded rows.
#[derive(Default)]
struct Encode {
    fields: Arc<Vec<FieldInfo>>,
    rows: Vec<DataRow>,
    error: Option<PgWireError>,
}

impl RowSink for Encode {
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed> {
        self.fields = Arc::new(
            columns
                .iter()
                .map(|c| field(c.name.clone(), &c.type_name))
                .collect(),
        );
        Ok(())
    }

    fn row(&mut self, values: &[Value]) -> Result<(), SinkClosed> {
        let mut encoder = DataRowEncoder::new(self.fields.clone());
        for value in values {
            if let Err(error) = encoder.encode_field(&pg_text(value)) {
                self.error = Some(error);
                return Err(SinkClosed);
            }
        }
        self.rows.push(encoder.take_row());
        Ok(())
    }
}

/// The text of each field of an encoded row (for reading back DESCRIBE's answer).
fn text_fields(row: &DataRow) -> Vec<String> {
    let mut fields = Vec::new();
    let mut data = &row.data[..];
    while data.len() >= 4 {
        let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        data = &data[4..];
        if len < 0 {
            fields.push(String::new());
            continue;
        }
        let len = (len as usize).min(data.len());
        fields.push(String::from_utf8_lossy(&data[..len]).into_owned());
        data = &data[len..];
    }
    fields
}

/// A query error as PostgreSQL reports one, with the matching SQLSTATE.
fn user_error(error: QueryError) -> PgWireError {
    let code = match error {
        QueryError::NotReadOnly(_) | QueryError::MultipleStatements(_) => "25006",
        QueryError::Syntax(_) | QueryError::Empty => "42601",
        QueryError::TimedOut(_) => "57014",
        _ => "42000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        error.to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_use_postgres_text_formats() {
        assert_eq!(pg_text(&Value::Boolean(true)).as_deref(), Some("t"));
        assert_eq!(pg_text(&Value::Blob(vec![0, 255])).as_deref(), Some("\\x00ff"));
        assert_eq!(
            pg_text(&Value::Timestamp(TimeUnit::Nanosecond, 1_700_000_000_123_456_789)).as_deref(),
            Some("2023-11-14 22:13:20.123456")
        );
        assert_eq!(pg_text(&Value::BigInt(-3)).as_deref(), Some("-3"));
        assert_eq!(pg_text(&Value::Null), None);
    }
}
