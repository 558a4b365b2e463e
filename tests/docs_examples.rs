//! Every ```sql block of docs/schema.md runs against a store with spans, so the documented
//! examples cannot drift from the schema.

mod common;

use common::{http_get, post_protobuf, repo_path, synthetic_request, urlencode, Server};

/// The statements of every ```sql block in `markdown`, split at `;`.
fn sql_examples(markdown: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match (&mut block, line.trim()) {
            (None, "```sql") => block = Some(String::new()),
            (Some(text), "```") => {
                statements.extend(
                    text.split(';')
                        .map(str::trim)
                        .filter(|sql| {
                            sql.lines()
                                .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
                        })
                        .map(String::from),
                );
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    statements
}

#[test]
fn every_example_query_in_the_schema_docs_runs() {
    let markdown = std::fs::read_to_string(repo_path("docs/schema.md")).unwrap();
    let examples = sql_examples(&markdown);
    assert!(examples.len() >= 10, "found only {} examples", examples.len());
    let server = Server::start();
    for seed in 1..=3 {
        post_protobuf(&server, &synthetic_request(seed, 12));
    }
    let mut answered_rows = 0;
    for sql in &examples {
        let (status, body) = http_get(&server.ui_url(&format!("/api/sql?q={}", urlencode(sql))));
        assert_eq!(status, 200, "docs/schema.md example fails:\n{sql}\n{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answered_rows += answer["rows"].as_array().map_or(0, Vec::len);
    }
    assert!(
        answered_rows > 0,
        "the examples found nothing in a store with spans"
    );
}
