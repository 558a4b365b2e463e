//! `/sql`: a console for read-only SQL over the span store, the same path as `/api/sql`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use ducktrace_store::sql::QueryResult;
use ducktrace_store::Reader;
use serde::Deserialize;
use serde_json::Value as Json;

use super::{blocking, render, PageError};

/// Rows shown on the page; `/api/sql` serves larger answers.
const MAX_ROWS_SHOWN: usize = 1000;

/// Queries offered on an empty console, each teaching part of the schema.
const EXAMPLES: &[Example] = &[
    Example {
        title: "Spans per service",
        sql: "SELECT service_name, count(*) AS spans, round(avg(duration_ns) / 1e6, 2) AS avg_ms\n\
              FROM spans\nGROUP BY service_name\nORDER BY spans DESC",
    },
    Example {
        title: "Slowest operations",
        sql: "SELECT service_name, span_name, count(*) AS spans,\n       \
              round(quantile_cont(duration_ns, 0.95) / 1e6, 2) AS p95_ms\n\
              FROM spans\nGROUP BY ALL\nORDER BY p95_ms DESC\nLIMIT 20",
    },
    Example {
        title: "Recent errors",
        sql: "SELECT start_time, service_name, span_name, status_message, trace_id\n\
              FROM spans\nWHERE status_code = 'ERROR'\nORDER BY start_time DESC\nLIMIT 50",
    },
    Example {
        title: "Tables, views and columns",
        sql: "SELECT table_name, column_name, data_type\nFROM information_schema.columns\n\
              ORDER BY table_name, ordinal_position",
    },
];

/// A canned query shown as a one-click button.
struct Example {
    title: &'static str,
    sql: &'static str,
}

#[derive(Deserialize)]
pub struct SqlForm {
    q: Option<String>,
}

/// What the console shows below the editor.
enum Outcome {
    Nothing,
    Rows(ResultTable),
    Failed(String),
}

/// A query result with every value already turned into the text shown in its cell.
struct ResultTable {
    columns: Vec<ColumnHeading>,
    rows: Vec<Vec<Cell>>,
    truncated: bool,
}

struct ColumnHeading {
    name: String,
    type_name: String,
}

/// A result value as displayed; NULL is styled apart from the text "NULL".
struct Cell {
    text: String,
    is_null: bool,
}

impl From<QueryResult> for ResultTable {
    fn from(result: QueryResult) -> Self {
        let columns = result
            .columns
            .into_iter()
            .map(|column| ColumnHeading {
                name: column.name,
                type_name: column.type_name,
            })
            .collect();
        let rows = result
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(Cell::from).collect())
            .collect();
        Self {
            columns,
            rows,
            truncated: result.truncated,
        }
    }
}

impl From<Json> for Cell {
    fn from(value: Json) -> Self {
        match value {
            Json::Null => Cell {
                text: "NULL".into(),
                is_null: true,
            },
            Json::String(text) => Cell { text, is_null: false },
            other => Cell {
                text: other.to_string(),
                is_null: false,
            },
        }
    }
}

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage {
    active: &'static str,
    sql: String,
    examples: &'static [Example],
    outcome: Outcome,
    max_rows: usize,
}

/// `GET /sql?q=SELECT…`: the query travels in the URL so a result can be shared.
pub async fn page(State(reader): State<Reader>, Query(form): Query<SqlForm>) -> Result<Response, PageError> {
    let sql = form.q.unwrap_or_default();
    let outcome = if sql.trim().is_empty() {
        Outcome::Nothing
    } else {
        let query = sql.clone();
        blocking(move || {
            Ok(match reader.query(&query, reader.limits(MAX_ROWS_SHOWN)) {
                Ok(result) => Outcome::Rows(result.into()),
                Err(error) => Outcome::Failed(error.to_string()),
            })
        })
        .await?
    };
    let status = match outcome {
        Outcome::Failed(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let page = SqlPage {
        active: "sql",
        sql,
        examples: EXAMPLES,
        outcome,
        max_rows: MAX_ROWS_SHOWN,
    };
    render(status, &page)
}
