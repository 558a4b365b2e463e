//! `ducktrace sql`: one query or an interactive prompt, against a running server or, when none
//! answers, the data directory opened read-only. Both paths run the same read-only checks.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use ducktrace_store::export::QueryRunner;
use ducktrace_store::sql::output::{self, Format};
use ducktrace_store::sql::QueryResult;
use ducktrace_store::{Reader, StoreConfig};

/// The address `ducktrace serve` uses for its API unless told otherwise.
const DEFAULT_SERVER: &str = "http://127.0.0.1:16686";

/// Where queries run: a server, or the data directory when none answers.
#[derive(Args)]
pub struct Source {
    /// A running ducktrace's UI/API address [default: http://127.0.0.1:16686, if it answers]
    #[arg(long, env = "DUCKTRACE_SERVER")]
    server: Option<String>,
    /// When no server answers, open this data directory read-only instead.
    #[arg(long, env = "DUCKTRACE_DATA_DIR", default_value = "./ducktrace-data")]
    pub data_dir: PathBuf,
    /// Open --data-dir read-only without looking for a server.
    #[arg(long, conflicts_with = "server")]
    offline: bool,
}

#[derive(Args)]
pub struct SqlArgs {
    /// The query to run; without one, an interactive prompt opens.
    query: Option<String>,
    #[command(flatten)]
    source: Source,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    format: Output,
    /// Rows printed at most.
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Csv,
    Json,
}

/// Where queries run.
pub enum Backend {
    Server { url: String, agent: ureq::Agent },
    Local(Reader),
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let backend = connect(&args.source, None)?;
    match &args.query {
        Some(query) => {
            let text = backend.run(query, &args)?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        None => prompt(&backend, &args),
    }
}

/// Finds the server or, when none answers, opens the data directory read-only; a local
/// statement may run for `local_time_limit` (the store's default when None).
pub fn connect(args: &Source, local_time_limit: Option<Duration>) -> anyhow::Result<Backend> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .build()
        .into();
    let url = args.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let probe = (!args.offline).then(|| agent.get(format!("{url}/api/sql?q=SELECT%201")).call());
    match probe {
        Some(Ok(response)) if response.status().is_success() => Ok(Backend::Server { url, agent }),
        _ if args.server.is_some() => bail!("no ducktrace API answers at {url}"),
        _ => {
            let mut config = StoreConfig::new(args.data_dir.clone());
            if let Some(limit) = local_time_limit {
                config.query_time_limit = limit;
            }
            let reader = ducktrace_store::open_read_only(&config).with_context(|| {
                format!(
                    "no server asked at {url}, and the data directory {} cannot be opened",
                    args.data_dir.display()
                )
            })?;
            Ok(Backend::Local(reader))
        }
    }
}

impl Backend {
    /// Runs `query` and returns the printed result.
    fn run(&self, query: &str, args: &SqlArgs) -> anyhow::Result<String> {
        let format = match args.format {
            Output::Csv => Format::Csv,
            Output::Table | Output::Json => Format::Json,
        };
        let mut body = Vec::new();
        self.run_into(query, format, args.max_rows, &mut body)
            .map_err(|message| anyhow!(message))?;
        let body = String::from_utf8(body)?;
        Ok(match args.format {
            Output::Table => output::table(&serde_json::from_str::<QueryResult>(&body)?),
            Output::Csv | Output::Json => body,
        })
    }
}

impl QueryRunner for Backend {
    fn run_into(
        &self,
        sql: &str,
        format: Format,
        max_rows: usize,
        out: &mut (dyn Write + Send),
    ) -> Result<(), String> {
        match self {
            Backend::Server { url, agent } => {
                let mut response = agent
                    .post(format!(
                        "{url}/api/sql?max_rows={max_rows}&format={}",
                        format.name()
                    ))
                    .send(sql)
                    .map_err(|e| format!("{url}: {e}"))?;
                let success = response.status().is_success();
                let mut body = response.body_mut().as_reader();
                if !success {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut body, &mut text).map_err(|e| e.to_string())?;
                    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    return Err(json["error"]["message"].as_str().unwrap_or(&text).to_string());
                }
                std::io::copy(&mut body, out)
                    .map(drop)
                    .map_err(|e| format!("the answer from {url} broke off: {e}"))
            }
            Backend::Local(reader) => reader.run_into(sql, format, max_rows, out),
        }
    }
}

/// Reads statements ending in `;` until end of input, with line editing and history.
fn prompt(backend: &Backend, args: &SqlArgs) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ducktrace_history"));
    if let Some(history) = &history {
        let _ = editor.load_history(history);
    }
    match backend {
        Backend::Server { url, .. } => {
            println!("connected to {url}; end statements with ';', quit with Ctrl-D")
        }
        Backend::Local(_) => println!(
            "opened {} read-only; end statements with ';', quit with Ctrl-D",
            args.source.data_dir.display()
        ),
    }
    let mut statement = String::new();
    loop {
        let line = match editor.readline(if statement.is_empty() {
            "ducktrace> "
        } else {
            "      ...> "
        }) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        statement.push_str(&line);
        statement.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(statement.trim());
        match backend.run(statement.trim(), args) {
            Ok(text) => print!("{text}"),
            Err(error) => eprintln!("error: {error:#}"),
        }
        statement.clear();
    }
    if let Some(history) = &history {
        let _ = editor.save_history(history);
    }
    Ok(())
}
