//! Encodings of query results: JSON and CSV written row by row, and a table for terminals.

use std::io::Write;

use duckdb::types::Value;
use serde_json::Value as Json;

use super::{to_json, Column, Outcome, QueryError, QueryResult, RowSink, SinkClosed};

/// The encodings `/api/sql` and `ducktrace sql` offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"columns": [...], "rows": [[...]], "truncated": bool}` (plus `"error"` if the query
    /// failed after rows were sent).
    Json,
    /// RFC 4180 CSV with a header row; nested values as JSON text.
    Csv,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?}; use json or csv")),
        }
    }
}

/// Writes a result in `format` to `out` as rows arrive.
pub struct Encoder<W: Write> {
    format: Format,
    out: W,
    rows: usize,
}

impl<W: Write> Encoder<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self { format, out, rows: 0 }
    }

    /// Closes the document; for JSON, a failure after the first row is reported in it.
    pub fn finish(mut self, result: &Result<Outcome, QueryError>) -> std::io::Result<W> {
        if self.format == Format::Json {
            let truncated = matches!(result, Ok(outcome) if outcome.truncated);
            write!(self.out, "],\"truncated\":{truncated}")?;
            if let Err(error) = result {
                write!(self.out, ",\"error\":{}", Json::from(error.to_string()))?;
            }
            self.out.write_all(b"}\n")?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_columns(&mut self, columns: &[Column]) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                let columns = serde_json::to_string(columns).map_err(std::io::Error::other)?;
                write!(self.out, "{{\"columns\":{columns},\"rows\":[")
            }
            Format::Csv => {
                let names: Vec<Json> = columns.iter().map(|c| Json::from(c.name.as_str())).collect();
                write_csv_row(&mut self.out, &names)
            }
        }
    }

    fn write_row(&mut self, values: &[Value]) -> std::io::Result<()> {
        let values: Vec<Json> = values.iter().map(to_json).collect();
        match self.format {
            Format::Json => {
                if self.rows > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, &values).map_err(std::io::Error::other)
            }
            Format::Csv => write_csv_row(&mut self.out, &values),
        }
    }
}

impl<W: Write> RowSink for Encoder<W> {
    fn columns(&mut self, columns: &[Column]) -> Result<(), SinkClosed> {
        self.write_columns(columns).map_err(|_| SinkClosed)
    }

    fn row(&mut self, values: &[Value]) -> Result<(), SinkClosed> {
        self.write_row(values).map_err(|_| SinkClosed)?;
        self.rows += 1;
        Ok(())
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
