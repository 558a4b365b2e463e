//! `ducktrace export` and `ducktrace import`: the spans as Parquet files and back. The work is
//! in `ducktrace_store::export` and `ducktrace_store::import`; this wires flags, the query
//! source and the progress bar.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use ducktrace_store::export::{self, TimeRange};
use ducktrace_store::import::{self, ExportFile};
use ducktrace_store::{Store, StoreConfig};

use crate::progress::Progress;
use crate::sql_cli::{self, Source};

/// A local export reads whole days; no server waits on it, so it gets far more than 30 s.
const LOCAL_EXPORT_TIME_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Args)]
pub struct ExportArgs {
    /// The folder to write `day=YYYY-MM-DD/spans.parquet` files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Only spans that started at or after this time (UTC), e.g. 2026-11-25 or "2026-11-25 10:00".
    #[arg(long)]
    since: Option<String>,
    /// Only spans that started before this time (UTC).
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    source: Source,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files or folders written by `ducktrace export` (folders are searched for .parquet files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The data directory to load the spans into; the server using it must be stopped.
    #[arg(long, env = "DUCKTRACE_DATA_DIR", default_value = "./ducktrace-data")]
    data_dir: PathBuf,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let backend = sql_cli::connect(&args.source, Some(LOCAL_EXPORT_TIME_LIMIT))?;
    let range = TimeRange::parse(&backend, args.since.as_deref(), args.until.as_deref())?;
    let parts = export::plan(&backend, range)?;
    let mut progress = Progress::new("spans", parts.iter().map(|part| part.spans).sum());
    let mut spans = 0;
    for part in &parts {
        let written = export::write_part(&backend, &args.out, part)?;
        spans += written;
        progress.advance(written);
    }
    progress.finish();
    eprintln!(
        "exported {spans} spans into {} files in {}",
        parts.len(),
        args.out.display()
    );
    Ok(())
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    // Every file is opened (and its footer read) before anything is stored.
    let files = import::parquet_files(&args.paths)?
        .iter()
        .map(|path| ExportFile::open(path))
        .collect::<Result<Vec<_>, _>>()?;
    let store = match Store::open(&StoreConfig::new(args.data_dir.clone())) {
        Ok(store) => store,
        Err(error) if error.to_string().contains("lock") => bail!(
            "{} is in use by a running ducktrace server: stop the server, import, then start it \
             again (DuckDB lets one process write a database file)\n({error})",
            args.data_dir.display()
        ),
        Err(error) => return Err(error).with_context(|| format!("cannot open {}", args.data_dir.display())),
    };
    let mut progress = Progress::new("spans", files.iter().map(|file| file.spans).sum());
    let count = files.len();
    let mut spans = 0;
    let writer = store.writer();
    let mut result = Ok(());
    for file in files {
        match file.import(&writer, &mut |n| progress.advance(n)).await {
            Ok(stored) => spans += stored,
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    progress.finish();
    // Commits and checkpoints what was stored, also after a failure.
    tokio::task::block_in_place(|| store.close());
    result?;
    eprintln!(
        "imported {spans} spans from {count} files into {}",
        args.data_dir.display()
    );
    Ok(())
}
