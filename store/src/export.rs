//! `ducktrace export`: the spans as Parquet files, one folder per UTC day, written through the
//! same read-only query path and encoder as `/api/sql?format=parquet`, whether the queries run
//! in a server or on a data directory opened read-only.
//!
//! Layout: `DIR/day=YYYY-MM-DD/spans.parquet` (or `spans-0.parquet`, `spans-1.parquet`, ... when
//! a day holds more than [`MAX_PART_SPANS`] spans). The columns are those of `span_data` with
//! the resource and scope of each span inlined, so `ducktrace import` restores every span row
//! exactly; see docs/schema.md.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::schema::SPAN_VALUES;
use crate::sql::output::{Encoder, Format, TRUNCATED_KEY};
use crate::sql::{QueryResult, MAX_ROWS_LIMIT};
use crate::Reader;

/// Spans per file at most: one file is one query, which must finish within the statement time
/// limit and stay below the row ceiling of `/api/sql`.
pub const MAX_PART_SPANS: u64 = 500_000;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const NANOS_PER_MINUTE: i64 = 60_000_000_000;
const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// The exported columns: `span_data` as stored (ids as numbers, the trace id as 32 hex digits,
/// the status code NULL when the span had none, attributes as a map as in the `spans` view),
/// plus the resource and scope of each span both readable and as the OTLP bytes that
/// `ducktrace import` restores them from.
fn export_columns() -> String {
    format!(
        "
    replace(CAST(s.trace_id AS VARCHAR), '-', '') AS trace_id, s.span_id, s.parent_span_id,
    s.start_time, s.duration_ns, s.service_name, s.span_name, s.span_kind, s.status_code,
    s.status_message, s.trace_state, s.flags, map(coalesce(s.attribute_keys, k.keys), {SPAN_VALUES}) AS attributes,
    s.attribute_types, s.dropped_attributes_count,
    s.events, s.dropped_events_count, s.links, s.dropped_links_count,
    r.attributes AS resource_attributes, sc.name AS scope_name, sc.version AS scope_version,
    r.fingerprint AS resource_otlp, sc.fingerprint AS scope_otlp"
    )
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("query failed: {0}")]
    Query(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already exists; export into an empty directory or another --out")]
    Exists(PathBuf),
    #[error("{spans} spans started within the minute at {minute}, more than the {MAX_PART_SPANS} one file may hold")]
    TooDense { minute: String, spans: u64 },
    #[error("{path} was cut at {rows} rows: spans kept arriving in the exported time range; export again with an earlier --until")]
    Truncated { path: PathBuf, rows: u64 },
    #[error("{path} is not a readable Parquet file: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

/// Where export queries run: a running server's `/api/sql`, or a [`Reader`] on the data
/// directory. Both take the same read-only path.
pub trait QueryRunner {
    /// Runs `sql` and writes its answer, encoded as `format`, to `out`.
    fn run_into(
        &self,
        sql: &str,
        format: Format,
        max_rows: usize,
        out: &mut (dyn Write + Send),
    ) -> Result<(), String>;

    /// Runs `sql` and returns its rows.
    fn rows(&self, sql: &str) -> Result<QueryResult, ExportError> {
        let mut body = Vec::new();
        self.run_into(sql, Format::Json, MAX_ROWS_LIMIT, &mut body)
            .map_err(ExportError::Query)?;
        serde_json::from_slice(&body).map_err(|e| ExportError::Query(e.to_string()))
    }
}

impl QueryRunner for Reader {
    fn run_into(
        &self,
        sql: &str,
        format: Format,
        max_rows: usize,
        out: &mut (dyn Write + Send),
    ) -> Result<(), String> {
        let mut encoder = Encoder::new(format, out);
        let result = self.query_each(sql, &[], self.limits(max_rows), &mut encoder);
        let finished = encoder.finish(&result);
        result.map_err(|e| e.to_string())?;
        finished.map(drop).map_err(|e| e.to_string())
    }
}

/// Start times to export, in nanoseconds since the epoch: `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    pub since: i64,
    pub until: i64,
}

impl TimeRange {
    /// Reads `since` and `until` as DuckDB reads timestamps (`2026-11-25`,
    /// `2026-11-25 10:00:00`, `2026-11-25T10:00:00Z`); missing ends are open.
    pub fn parse(
        runner: &dyn QueryRunner,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Self, ExportError> {
        let bound = |text: Option<&str>, open: i64| -> Result<i64, ExportError> {
            let Some(text) = text else { return Ok(open) };
            let quoted = text.replace('\'', "''");
            let answer = runner.rows(&format!("SELECT epoch_ns(CAST('{quoted}' AS TIMESTAMP))"))?;
            answer
                .rows
                .first()
                .and_then(|row| row[0].as_i64())
                .ok_or_else(|| ExportError::Query(format!("{text:?} is not a time")))
        };
        Ok(Self {
            since: bound(since, i64::MIN)?,
            until: bound(until, i64::MAX)?,
        })
    }

    /// The range as a filter on `span_data s`; open ends (`i64::MIN`, `i64::MAX`) filter nothing.
    fn condition(self) -> String {
        let mut condition = "TRUE".to_string();
        if self.since != i64::MIN {
            condition += &format!(" AND s.start_time >= make_timestamp_ns({})", self.since);
        }
        if self.until != i64::MAX {
            condition += &format!(" AND s.start_time < make_timestamp_ns({})", self.until);
        }
        condition
    }
}

/// One file to write: the spans of `day` that started in `range`.
#[derive(Debug, Clone)]
pub struct Part {
    pub day: String,
    pub range: TimeRange,
    /// Spans counted when the export was planned.
    pub spans: u64,
    /// The file, relative to the output directory.
    pub file: PathBuf,
}

/// Splits the spans of `range` into files: one per UTC day, more when a day holds more than
/// [`MAX_PART_SPANS`] spans (split at hour or, when an hour is too large, minute boundaries).
pub fn plan(runner: &dyn QueryRunner, range: TimeRange) -> Result<Vec<Part>, ExportError> {
    let mut parts: Vec<Part> = Vec::new();
    for (hour, spans) in counts(runner, range, "HOUR")? {
        let hour_range = clip(range, hour, NANOS_PER_HOUR);
        if spans <= MAX_PART_SPANS {
            add(&mut parts, hour_range, spans);
            continue;
        }
        for (minute, spans) in counts(runner, hour_range, "MINUTE")? {
            if spans > MAX_PART_SPANS {
                return Err(ExportError::TooDense {
                    minute: crate::sql::to_json(&duckdb::types::Value::Timestamp(
                        duckdb::types::TimeUnit::Nanosecond,
                        minute,
                    ))
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                    spans,
                });
            }
            add(&mut parts, clip(range, minute, NANOS_PER_MINUTE), spans);
        }
    }
    // Name the files once the number of parts per day is known.
    let mut index = 0;
    for i in 0..parts.len() {
        let first = i == 0 || parts[i - 1].day != parts[i].day;
        let last = i + 1 == parts.len() || parts[i + 1].day != parts[i].day;
        index = if first { 0 } else { index + 1 };
        let name = if first && last {
            "spans.parquet".to_string()
        } else {
            format!("spans-{index}.parquet")
        };
        parts[i].file = Path::new(&format!("day={}", parts[i].day)).join(name);
    }
    Ok(parts)
}

/// Span counts per `unit`-long bucket of `range`, in time order.
fn counts(runner: &dyn QueryRunner, range: TimeRange, unit: &str) -> Result<Vec<(i64, u64)>, ExportError> {
    let answer = runner.rows(&format!(
        "SELECT epoch_ns(time_bucket(INTERVAL 1 {unit}, s.start_time)) AS bucket, count(*) AS spans
         FROM span_data s WHERE {} GROUP BY 1 ORDER BY 1",
        range.condition()
    ))?;
    answer
        .rows
        .iter()
        .map(|row| match (row[0].as_i64(), row[1].as_u64()) {
            (Some(bucket), Some(spans)) => Ok((bucket, spans)),
            _ => Err(ExportError::Query(format!("unexpected count row {row:?}"))),
        })
        .collect()
}

/// The part of `range` inside the bucket of `length` nanoseconds starting at `start`.
fn clip(range: TimeRange, start: i64, length: i64) -> TimeRange {
    TimeRange {
        since: range.since.max(start),
        until: range.until.min(start.saturating_add(length)),
    }
}

/// Adds a bucket to the last part when it is of the same day, adjacent and still has room.
fn add(parts: &mut Vec<Part>, range: TimeRange, spans: u64) {
    let day = crate::sql::format_date(range.since.div_euclid(NANOS_PER_DAY));
    if let Some(last) = parts.last_mut() {
        if last.day == day && last.range.until == range.since && last.spans + spans <= MAX_PART_SPANS {
            last.range.until = range.until;
            last.spans += spans;
            return;
        }
    }
    parts.push(Part {
        day,
        range,
        spans,
        file: PathBuf::new(),
    });
}

/// Writes one part below `out_dir` and returns the number of spans in it. The file appears
/// only once it is complete: it is written under a temporary name and renamed.
pub fn write_part(runner: &dyn QueryRunner, out_dir: &Path, part: &Part) -> Result<u64, ExportError> {
    let path = out_dir.join(&part.file);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    let folder = path.parent().expect("a part file is inside a day folder");
    if path.exists() {
        return Err(ExportError::Exists(path));
    }
    std::fs::create_dir_all(folder).map_err(io_error(folder))?;
    let partial = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).map_err(io_error(&partial))?;
    let mut out = std::io::BufWriter::new(file);
    let sql = format!(
        "SELECT {}
         FROM span_data s JOIN resources r USING (resource_id) JOIN scopes sc USING (scope_id)
         LEFT JOIN attribute_key_sets k ON k.key_set_id = s.attribute_key_set
         WHERE {}",
        export_columns(),
        part.range.condition()
    );
    let written = runner
        .run_into(&sql, Format::Parquet, MAX_ROWS_LIMIT, &mut out)
        .map_err(ExportError::Query)
        .and_then(|()| out.flush().map_err(io_error(&partial)));
    drop(out);
    let rows = written.and_then(|()| check_complete(&partial));
    match rows {
        Ok(rows) => {
            std::fs::rename(&partial, &path).map_err(io_error(&path))?;
            Ok(rows)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// Reads a written file's footer: the number of rows, and whether `max_rows` cut it short.
fn check_complete(path: &Path) -> Result<u64, ExportError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let unreadable = |reason: String| ExportError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| unreadable(e.to_string()))?;
    let metadata = reader.metadata().file_metadata();
    let rows = metadata.num_rows() as u64;
    let truncated = metadata
        .key_value_metadata()
        .into_iter()
        .flatten()
        .any(|kv| kv.key == TRUNCATED_KEY && kv.value.as_deref() == Some("true"));
    if truncated {
        return Err(ExportError::Truncated {
            path: path.to_owned(),
            rows,
        });
    }
    Ok(rows)
}
