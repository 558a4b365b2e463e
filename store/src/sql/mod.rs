//! Read-only SQL over the span store, for the HTTP API, the console and the CLI.
//!
//! Three guards, each enough on its own for its class of escape: DuckDB's own parser must see
//! exactly one SELECT (`json_serialize_sql` refuses every other statement type); the database
//! was opened with external access off and configuration locked, so no query reads or writes
//! files or the network; and the statement runs inside a transaction that is rolled back.
//! Each statement also has a time limit, after which DuckDB interrupts it.

pub mod output;

use std::sync::mpsc;
use std::time::Duration;

use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::SchemaRef;
use duckdb::core::{LogicalTypeHandle, LogicalTypeId};
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Rows one answer may hold at most, whatever the client asks for.
pub const MAX_ROWS_LIMIT: usize = 1_000_000;

/// How much one query may return and take.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_rows: usize,
    pub time_limit: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            time_limit: Duration::from_secs(30),
        }
    }
}

/// Where the rows of a running query go, one at a time, so large answers never sit in memory.
pub trait RowSink {
    /// Called once, before any row.
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed>;
    fn row(&mut self, values: &[Value]) -> Result<(), SinkClosed>;
    /// Sinks that write a columnar format (Arrow IPC, Parquet) take DuckDB's result chunks as
    /// Arrow record batches instead of rows; the query then streams batches to them.
    fn as_batch_sink(&mut self) -> Option<&mut dyn BatchSink> {
        None
    }
}

/// Takes a query's result as Arrow record batches, each one of DuckDB's chunks (2048 rows).
pub trait BatchSink {
    /// Called once, before `columns` and any batch; an error here means nothing was written.
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), QueryError>;
    fn batch(&mut self, batch: &RecordBatch) -> Result<(), QueryError>;
}

/// The reader of the rows went away; the query stops.
#[derive(Debug)]
pub struct SinkClosed;

/// How a completed query ended.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Outcome {
    pub rows: usize,
    /// True when more rows existed than `max_rows`.
    pub truncated: bool,
}

/// A query's answer, shaped for JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Json>>,
    /// True when more rows existed than `max_rows`.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The DuckDB type name, e.g. `VARCHAR`, `TIMESTAMP_NS`, `MAP(VARCHAR, ...)`.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// Why a query was not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the query is empty")]
    Empty,
    #[error("only a single read-only SELECT statement is allowed, got {0} statements")]
    MultipleStatements(usize),
    #[error("only read-only SELECT statements are allowed{0}")]
    NotReadOnly(String),
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("the query ran longer than its time limit of {0:?} and was interrupted")]
    TimedOut(Duration),
    #[error("the reader of the result went away")]
    Abandoned,
    #[error("the result cannot be written as {format}: {reason}")]
    Encode { format: &'static str, reason: String },
    #[error("{0}")]
    Failed(#[from] duckdb::Error),
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// Runs one read-only statement and collects at most `limits.max_rows` rows.
pub fn query(conn: &Connection, sql: &str, limits: QueryLimits) -> Result<QueryResult, QueryError> {
    let mut collected = Collect::default();
    let outcome = query_each(conn, sql, &[], limits, &mut collected)?;
    Ok(QueryResult {
        columns: collected.columns,
        rows: collected.rows,
        truncated: outcome.truncated,
    })
}

/// Runs one read-only statement, handing each row to `sink` as it is produced. `params` fill
/// `$1`, `$2`, ... as text (DuckDB casts them to what the statement expects); None is NULL.
pub fn query_each(
    conn: &Connection,
    sql: &str,
    params: &[Option<String>],
    limits: QueryLimits,
    sink: &mut dyn RowSink,
) -> Result<Outcome, QueryError> {
    check_read_only(conn, sql)?;
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = with_time_limit(conn, limits.time_limit, || {
        run(conn, sql, params, limits.max_rows, sink)
    });
    conn.execute_batch("ROLLBACK")?;
    result
}

/// Interrupts `work` on `conn` when it outlives `limit`.
fn with_time_limit<T>(
    conn: &Connection,
    limit: Duration,
    work: impl FnOnce() -> Result<T, QueryError>,
) -> Result<T, QueryError> {
    let interrupt = conn.interrupt_handle();
    let (finished, wait) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = wait.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout);
        if timed_out {
            interrupt.interrupt();
        }
        timed_out
    });
    let result = work();
    drop(finished);
    let timed_out = watchdog.join().unwrap_or(false);
    match result {
        Err(QueryError::Failed(_)) if timed_out => Err(QueryError::TimedOut(limit)),
        other => other,
    }
}

#[derive(Default)]
struct Collect {
    columns: Vec<Column>,
    rows: Vec<Vec<Json>>,
}

impl RowSink for Collect {
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed> {
        self.columns = columns.to_vec();
        Ok(())
    }

    fn row(&mut self, values: &[Value]) -> Result<(), SinkClosed> {
        self.rows.push(values.iter().map(to_json).collect());
        Ok(())
    }
}

fn check_read_only(conn: &Connection, sql: &str) -> Result<(), QueryError> {
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(QueryError::Empty);
    }
    let parsed: String = conn.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| row.get(0))?;
    let parsed: Json = serde_json::from_str(&parsed).map_err(|e| QueryError::Syntax(e.to_string()))?;
    if parsed["error"].as_bool() == Some(true) {
        let message = parsed["error_message"]
            .as_str()
            .unwrap_or("the statement could not be parsed");
        return Err(match parsed["error_type"].as_str() {
            Some("parser") => QueryError::Syntax(message.to_string()),
            // The serializer refuses every statement that is not a SELECT (DDL, DML, SET, ...).
            _ => QueryError::NotReadOnly(format!(" (got: {})", first_word(sql))),
        });
    }
    match parsed["statements"].as_array().map(Vec::len) {
        Some(1) => Ok(()),
        Some(0) | None => Err(QueryError::Empty),
        Some(n) => Err(QueryError::MultipleStatements(n)),
    }
}

fn first_word(sql: &str) -> String {
    sql.split_whitespace().next().unwrap_or("").to_uppercase()
}

fn run(
    conn: &Connection,
    sql: &str,
    params: &[Option<String>],
    max_rows: usize,
    sink: &mut dyn RowSink,
) -> Result<Outcome, QueryError> {
    let mut statement = conn.prepare(sql)?;
    let params = duckdb::params_from_iter(params);
    if sink.as_batch_sink().is_some() {
        return run_batches(&mut statement, params, max_rows, sink);
    }
    let mut rows = statement.query(params)?;
    let columns = describe(rows.as_ref().expect("a running query has its statement"));
    sink.columns(&columns)
        .map_err(|SinkClosed| QueryError::Abandoned)?;
    let mut outcome = Outcome {
        rows: 0,
        truncated: false,
    };
    let mut values = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        if outcome.rows == max_rows {
            outcome.truncated = true;
            break;
        }
        values.clear();
        for i in 0..columns.len() {
            values.push(row.get::<_, Value>(i)?);
        }
        sink.row(&values).map_err(|SinkClosed| QueryError::Abandoned)?;
        outcome.rows += 1;
    }
    Ok(outcome)
}

/// The columnar twin of the row loop in `run`: DuckDB's chunks go out as Arrow record batches,
/// fetched one at a time, the last one cut at `max_rows`.
fn run_batches(
    statement: &mut duckdb::Statement<'_>,
    params: impl duckdb::Params,
    max_rows: usize,
    sink: &mut dyn RowSink,
) -> Result<Outcome, QueryError> {
    let schema = statement.stream_arrow(params)?.get_schema();
    let columns = describe(statement);
    if let Some(batches) = sink.as_batch_sink() {
        batches.schema(&schema)?;
    }
    sink.columns(&columns)
        .map_err(|SinkClosed| QueryError::Abandoned)?;
    let batches = sink.as_batch_sink().expect("checked by the caller");
    let mut outcome = Outcome {
        rows: 0,
        truncated: false,
    };
    while let Some(chunk) = statement.step()? {
        let batch = RecordBatch::from(&chunk);
        let room = max_rows - outcome.rows;
        if batch.num_rows() > room {
            if room > 0 {
                batches.batch(&batch.slice(0, room))?;
            }
            outcome.rows = max_rows;
            outcome.truncated = true;
            break;
        }
        batches.batch(&batch)?;
        outcome.rows += batch.num_rows();
    }
    Ok(outcome)
}

/// Names and DuckDB types of an executed statement's result columns.
fn describe(statement: &duckdb::Statement<'_>) -> Vec<Column> {
    (0..statement.column_count())
        .map(|i| Column {
            name: statement
                .column_name(i)
                .map_or_else(|_| format!("column{i}"), String::clone),
            type_name: type_name(&statement.column_logical_type(i)),
        })
        .collect()
}

/// DuckDB's spelling of a type, nested types included.
pub fn type_name(logical: &LogicalTypeHandle) -> String {
    let children = |separator: &str| {
        (0..logical.num_children())
            .map(|i| type_name(&logical.child(i)))
            .collect::<Vec<_>>()
            .join(separator)
    };
    match logical.id() {
        LogicalTypeId::Boolean => "BOOLEAN".into(),
        LogicalTypeId::Tinyint => "TINYINT".into(),
        LogicalTypeId::Smallint => "SMALLINT".into(),
        LogicalTypeId::Integer => "INTEGER".into(),
        LogicalTypeId::Bigint => "BIGINT".into(),
        LogicalTypeId::Hugeint => "HUGEINT".into(),
        LogicalTypeId::UTinyint => "UTINYINT".into(),
        LogicalTypeId::USmallint => "USMALLINT".into(),
        LogicalTypeId::UInteger => "UINTEGER".into(),
        LogicalTypeId::UBigint => "UBIGINT".into(),
        LogicalTypeId::UHugeint => "UHUGEINT".into(),
        LogicalTypeId::Float => "FLOAT".into(),
        LogicalTypeId::Double => "DOUBLE".into(),
        LogicalTypeId::Decimal => "DECIMAL".into(),
        LogicalTypeId::Varchar => "VARCHAR".into(),
        LogicalTypeId::Blob => "BLOB".into(),
        LogicalTypeId::Uuid => "UUID".into(),
        LogicalTypeId::Date => "DATE".into(),
        LogicalTypeId::Time => "TIME".into(),
        LogicalTypeId::Timestamp => "TIMESTAMP".into(),
        LogicalTypeId::TimestampS => "TIMESTAMP_S".into(),
        LogicalTypeId::TimestampMs => "TIMESTAMP_MS".into(),
        LogicalTypeId::TimestampNs => "TIMESTAMP_NS".into(),
        LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE".into(),
        LogicalTypeId::Interval => "INTERVAL".into(),
        LogicalTypeId::List => format!("{}[]", children("")),
        LogicalTypeId::Array => format!("{}[]", children("")),
        LogicalTypeId::Map => format!("MAP({})", children(", ")),
        LogicalTypeId::Struct => {
            let fields = (0..logical.num_children())
                .map(|i| format!("{} {}", logical.child_name(i), type_name(&logical.child(i))))
                .collect::<Vec<_>>();
            format!("STRUCT({})", fields.join(", "))
        }
        other => format!("{other:?}").to_uppercase(),
    }
}

/// A DuckDB value as JSON: numbers stay numbers, timestamps become ISO 8601 text (UTC),
/// blobs hex, nested values nest.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::from(*b),
        Value::TinyInt(v) => Json::from(*v),
        Value::SmallInt(v) => Json::from(*v),
        Value::Int(v) => Json::from(*v),
        Value::BigInt(v) => Json::from(*v),
        Value::UTinyInt(v) => Json::from(*v),
        Value::USmallInt(v) => Json::from(*v),
        Value::UInt(v) => Json::from(*v),
        Value::UBigInt(v) => Json::from(*v),
        Value::HugeInt(v) => i64::try_from(*v).map_or_else(|_| Json::from(v.to_string()), Json::from),
        Value::UHugeInt(v) => u64::try_from(*v).map_or_else(|_| Json::from(v.to_string()), Json::from),
        Value::Float(v) => finite(f64::from(*v)),
        Value::Double(v) => finite(*v),
        Value::Decimal(d) => Json::from(d.to_string()),
        Value::Text(s) | Value::Enum(s) => Json::from(s.as_str()),
        Value::Blob(bytes) | Value::Geometry(bytes) => Json::from(hex::encode(bytes)),
        Value::Timestamp(unit, amount) => Json::from(format_timestamp(*unit, *amount)),
        Value::Date32(days) => Json::from(format_date(i64::from(*days))),
        Value::Time64(unit, amount) => Json::from(format_time(nanos(*unit, *amount))),
        Value::Interval { months, days, nanos } => {
            Json::from(format!("{months} months {days} days {nanos} ns"))
        }
        Value::List(items) | Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), to_json(value)))
                .collect(),
        ),
        Value::Map(entries) => Json::Array(
            entries
                .iter()
                .map(|(key, value)| serde_json::json!({"key": to_json(key), "value": to_json(value)}))
                .collect(),
        ),
        Value::Union(inner) => to_json(inner),
        other => Json::from(format!("{other:?}")),
    }
}

fn finite(value: f64) -> Json {
    serde_json::Number::from_f64(value).map_or_else(|| Json::from(value.to_string()), Json::Number)
}

fn nanos(unit: TimeUnit, amount: i64) -> i128 {
    let per_unit: i128 = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    i128::from(amount) * per_unit
}

const NANOS_PER_DAY: i128 = 86_400_000_000_000;

fn format_timestamp(unit: TimeUnit, amount: i64) -> String {
    let total = nanos(unit, amount);
    let days = total.div_euclid(NANOS_PER_DAY);
    let in_day = total.rem_euclid(NANOS_PER_DAY);
    format!("{}T{}Z", format_date(days as i64), format_time(in_day))
}

fn format_time(nanos_in_day: i128) -> String {
    let seconds = nanos_in_day / 1_000_000_000;
    let fraction = nanos_in_day % 1_000_000_000;
    let clock = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction == 0 {
        clock
    } else {
        format!("{clock}.{:09}", fraction)
            .trim_end_matches('0')
            .to_string()
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
pub(crate) fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc_iso8601() {
        assert_eq!(format_timestamp(TimeUnit::Nanosecond, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp(TimeUnit::Nanosecond, 1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            format_timestamp(TimeUnit::Microsecond, -1),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(format_date(11_016), "2000-02-29");
    }
}
