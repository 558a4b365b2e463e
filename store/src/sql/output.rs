//! Encodings of query results: JSON and CSV written row by row, Arrow IPC and Parquet written
//! record batch by record batch, and a table for terminals. One `Encoder` serves every format,
//! so `/api/sql`, `ducktrace sql` and `ducktrace export` write the same bytes.

use std::io::Write;

use arrow_ipc::writer::StreamWriter;
use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::{DataType, IntervalUnit, SchemaRef};
use duckdb::arrow::error::ArrowError;
use duckdb::types::Value;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::Value as Json;

use super::{to_json, BatchSink, Column, Outcome, QueryError, QueryResult, RowSink, SinkClosed};

/// The key of the Parquet footer entry that says whether `max_rows` cut the answer short.
pub const TRUNCATED_KEY: &str = "ducktrace.truncated";
/// Rows per Parquet row group at most; a row group is buffered (compressed) until it is full.
const PARQUET_ROW_GROUP_ROWS: usize = 64 * 1024;
/// Bytes per Parquet row group at most, so wide rows cannot make one row group huge.
const PARQUET_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// The encodings `/api/sql`, `ducktrace sql` and `ducktrace export` offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"columns": [...], "rows": [[...]], "truncated": bool}` (plus `"error"` if the query
    /// failed after rows were sent).
    Json,
    /// RFC 4180 CSV with a header row; nested values as JSON text.
    Csv,
    /// An Apache Parquet file, zstd-compressed, with DuckDB's types as Arrow maps them; the footer
    /// holds `ducktrace.truncated` = `true` or `false`.
    Parquet,
    /// An Arrow IPC stream: the schema, then one record batch per DuckDB chunk.
    Arrow,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The name `format=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    /// Whether the format is written from Arrow record batches rather than row by row.
    fn columnar(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        [Format::Json, Format::Csv, Format::Parquet, Format::Arrow]
            .into_iter()
            .find(|format| format.name() == name)
            .ok_or_else(|| format!("unknown format {name:?}; use json, csv, parquet or arrow"))
    }
}

/// Writes a result in `format` to `out` as rows (or record batches) arrive.
pub struct Encoder<W: Write + Send> {
    format: Format,
    state: State<W>,
    rows: usize,
}

enum State<W: Write + Send> {
    /// JSON and CSV write here directly; the columnar formats until the schema is known.
    Plain(W),
    Arrow(StreamWriter<W>),
    Parquet(Box<ArrowWriter<W>>),
    /// A columnar writer failed; nothing more can be written.
    Broken,
}

impl<W: Write + Send> Encoder<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            state: State::Plain(out),
            rows: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Closes the document; for JSON, a failure after the first row is reported in it. A
    /// columnar answer whose query failed is left unfinished, so no reader takes it for whole.
    pub fn finish(self, result: &Result<Outcome, QueryError>) -> std::io::Result<W> {
        let truncated = matches!(result, Ok(outcome) if outcome.truncated);
        let failed = |error: &QueryError| std::io::Error::other(error.to_string());
        match self.state {
            State::Plain(mut out) => {
                if self.format == Format::Json {
                    write!(out, "],\"truncated\":{truncated}")?;
                    if let Err(error) = result {
                        write!(out, ",\"error\":{}", Json::from(error.to_string()))?;
                    }
                    out.write_all(b"}\n")?;
                }
                out.flush()?;
                Ok(out)
            }
            State::Arrow(writer) => {
                if let Err(error) = result {
                    return Err(failed(error));
                }
                let mut out = writer.into_inner().map_err(std::io::Error::other)?;
                out.flush()?;
                Ok(out)
            }
            State::Parquet(mut writer) => {
                if let Err(error) = result {
                    return Err(failed(error));
                }
                writer.append_key_value_metadata(KeyValue::new(
                    TRUNCATED_KEY.to_string(),
                    truncated.to_string(),
                ));
                let mut out = writer.into_inner().map_err(std::io::Error::other)?;
                out.flush()?;
                Ok(out)
            }
            State::Broken => Err(std::io::Error::other("the result could not be encoded")),
        }
    }

    fn write_columns(&mut self, columns: &[Column]) -> std::io::Result<()> {
        let State::Plain(out) = &mut self.state else {
            return Ok(());
        };
        match self.format {
            Format::Json => {
                let columns = serde_json::to_string(columns).map_err(std::io::Error::other)?;
                write!(out, "{{\"columns\":{columns},\"rows\":[")
            }
            Format::Csv => {
                let names: Vec<Json> = columns.iter().map(|c| Json::from(c.name.as_str())).collect();
                write_csv_row(out, &names)
            }
            Format::Parquet | Format::Arrow => Ok(()),
        }
    }

    fn write_row(&mut self, values: &[Value]) -> std::io::Result<()> {
        let State::Plain(out) = &mut self.state else {
            return Err(std::io::Error::other(
                "rows of a columnar format arrive as batches",
            ));
        };
        let values: Vec<Json> = values.iter().map(to_json).collect();
        match self.format {
            Format::Json => {
                if self.rows > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(out, &values).map_err(std::io::Error::other)
            }
            Format::Csv => write_csv_row(out, &values),
            Format::Parquet | Format::Arrow => unreachable!("columnar formats take batches"),
        }
    }

    fn encode_error(&self, reason: impl std::fmt::Display) -> QueryError {
        QueryError::Encode {
            format: self.format.name(),
            reason: reason.to_string(),
        }
    }
}

impl<W: Write + Send> RowSink for Encoder<W> {
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed> {
        self.write_columns(columns).map_err(|_| SinkClosed)
    }

    fn row(&mut self, values: &[Value]) -> Result<(), SinkClosed> {
        self.write_row(values).map_err(|_| SinkClosed)?;
        self.rows += 1;
        Ok(())
    }

    fn as_batch_sink(&mut self) -> Option<&mut dyn BatchSink> {
        if self.format.columnar() {
            Some(self)
        } else {
            None
        }
    }
}

impl<W: Write + Send> BatchSink for Encoder<W> {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), QueryError> {
        let State::Plain(out) = std::mem::replace(&mut self.state, State::Broken) else {
            return Err(self.encode_error("the schema was given twice"));
        };
        self.state = match self.format {
            Format::Arrow => {
                State::Arrow(StreamWriter::try_new(out, schema).map_err(|e| self.encode_error(e))?)
            }
            _ => {
                if let Some(field) = schema.fields().iter().find(|f| !parquet_can_hold(f.data_type())) {
                    return Err(self.encode_error(format!(
                        "column {} is an INTERVAL, which Parquet writers here cannot store; \
                         select it as text or as a number (e.g. epoch_ns, to_seconds)",
                        field.name()
                    )));
                }
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .set_max_row_group_bytes(Some(PARQUET_ROW_GROUP_BYTES))
                    .set_created_by(format!("ducktrace {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let writer = ArrowWriter::try_new(out, schema.clone(), Some(properties))
                    .map_err(|e| self.encode_error(e))?;
                State::Parquet(Box::new(writer))
            }
        };
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<(), QueryError> {
        let written = match &mut self.state {
            State::Arrow(writer) => writer
                .write(batch)
                .map_err(|e| (e.to_string(), is_closed_arrow(&e))),
            State::Parquet(writer) => writer
                .write(batch)
                .map_err(|e| (e.to_string(), is_closed_parquet(&e))),
            State::Plain(_) | State::Broken => Err(("no schema was given".to_string(), false)),
        };
        match written {
            Ok(()) => {
                self.rows += batch.num_rows();
                Ok(())
            }
            Err((_, true)) => Err(QueryError::Abandoned),
            Err((reason, false)) => {
                self.state = State::Broken;
                Err(self.encode_error(reason))
            }
        }
    }
}

/// Whether the Parquet writer can store values of this type: everything DuckDB produces except
/// its 128-bit intervals (months, days and nanoseconds), at any depth.
fn parquet_can_hold(data_type: &DataType) -> bool {
    match data_type {
        DataType::Interval(IntervalUnit::MonthDayNano) => false,
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::FixedSizeList(item, _)
        | DataType::Map(item, _) => parquet_can_hold(item.data_type()),
        DataType::Struct(fields) => fields.iter().all(|f| parquet_can_hold(f.data_type())),
        DataType::Dictionary(_, values) => parquet_can_hold(values),
        _ => true,
    }
}

/// Whether a columnar writer failed because its output went away (the client disconnected).
fn is_closed_arrow(error: &ArrowError) -> bool {
    matches!(error, ArrowError::IoError(..))
}

fn is_closed_parquet(error: &parquet::errors::ParquetError) -> bool {
    match error {
        parquet::errors::ParquetError::External(inner) => inner.is::<std::io::Error>(),
        _ => false,
    }
}

/// The text of a JSON value as a cell: strings bare, NULL empty, the rest as JSON.
fn cell(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn write_csv_row(out: &mut impl Write, values: &[Json]) -> std::io::Result<()> {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let text = cell(value);
        if text.contains([',', '"', '\n', '\r']) {
            write!(out, "\"{}\"", text.replace('"', "\"\""))?;
        } else {
            out.write_all(text.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

/// A result as an aligned text table, for terminals.
pub fn table(result: &QueryResult) -> String {
    let header: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
    let rows: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| row.iter().map(cell).collect())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            std::iter::once(&header[i])
                .chain(rows.iter().map(|row| &row[i]))
                .map(|text| text.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut text = line(&header) + "\n";
    text += &widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-");
    text += "\n";
    for row in &rows {
        text += &line(row);
        text += "\n";
    }
    let count = rows.len();
    text += &format!(
        "({count} row{}{})\n",
        if count == 1 { "" } else { "s" },
        if result.truncated { ", truncated" } else { "" }
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut out = Vec::new();
        let row = [
            Json::from("plain"),
            Json::from("a,b"),
            Json::from("say \"hi\""),
            Json::Null,
            Json::from(3),
        ];
        write_csv_row(&mut out, &row).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",,3\r\n"
        );
    }

    #[test]
    fn json_stream_is_one_document() {
        let mut encoder = Encoder::new(Format::Json, Vec::new());
        let columns = [Column {
            name: "n".into(),
            type_name: "BIGINT".into(),
        }];
        encoder.columns(&columns).unwrap();
        encoder.row(&[Value::BigInt(1)]).unwrap();
        encoder.row(&[Value::BigInt(2)]).unwrap();
        let out = encoder
            .finish(&Ok(Outcome {
                rows: 2,
                truncated: true,
            }))
            .unwrap();
        let json: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"columns": [{"name": "n", "type": "BIGINT"}], "rows": [[1], [2]], "truncated": true})
        );
    }
}
