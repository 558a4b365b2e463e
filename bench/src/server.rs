//! The ducktrace under test: one already running, or one this tool starts on a data directory
//! (then it can also stop it, which checkpoints, and measure the database file).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::api::Api;

/// The database file inside a data directory (as ducktrace-store names it).
const DATABASE_FILE: &str = "ducktrace.duckdb";
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// A graceful stop commits, checkpoints and exits; a large WAL takes a while.
const STOP_TIMEOUT: Duration = Duration::from_secs(600);

/// Where to find the server, from the command line.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Start this ducktrace binary (`ducktrace serve --data-dir DIR` on free loopback ports)
    /// instead of using one already running; it is stopped (and checkpointed) at the end
    #[arg(long, requires = "data_dir")]
    pub ducktrace: Option<PathBuf>,
    /// A flag for the started server, repeatable, e.g. --server-arg=--memory-limit=1GB
    #[arg(long = "server-arg", requires = "ducktrace", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The server's data directory: where bytes on disk are measured
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// UI/API base URL of a running server
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    pub api: String,
    /// OTLP/gRPC endpoint of a running server
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub grpc: String,
    /// Process id of a running server, for its CPU and memory use
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// A server to measure.
pub struct Server {
    pub api: Api,
    pub grpc: String,
    pub pid: Option<u32>,
    data_dir: Option<PathBuf>,
    child: Option<Child>,
}

impl Server {
    /// Starts the server, or checks that the running one answers.
    pub async fn open(args: &ServerArgs) -> Result<Self> {
        let Some(binary) = &args.ducktrace else {
            let api = Api::new(&args.api);
            api.sql("SELECT 1")
                .await
                .with_context(|| format!("no ducktrace answers at {}", args.api))?;
            return Ok(Self {
                api,
                grpc: args.grpc.clone(),
                pid: args.server_pid,
                data_dir: args.data_dir.clone(),
                child: None,
            });
        };
        let data_dir = args.data_dir.clone().context("--ducktrace needs --data-dir")?;
        let (grpc, http, ui) = (free_port()?, free_port()?, free_port()?);
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--otlp-grpc-addr", &grpc])
            .args(["--otlp-http-addr", &http])
            .args(["--http-addr", &ui])
            .args(&args.server_args)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self {
            api: Api::new(&format!("http://{ui}")),
            grpc: format!("http://{grpc}"),
            pid: Some(child.id()),
            data_dir: Some(data_dir),
            child: Some(child),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.api.sql("SELECT 1").await.is_err() {
            if Instant::now() > deadline {
                bail!("ducktrace did not answer on {ui} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    /// Spans stored, as the API counts them.
    pub async fn stored_spans(&self) -> Result<u64> {
        let rows = self.api.sql("SELECT count(*) FROM span_data").await?;
        rows.first()
            .and_then(|row| row.first())
            .and_then(serde_json::Value::as_u64)
            .context("count(*) returned no number")
    }

    /// Spans stored once at least `expected` are, or after `within`: acknowledged spans become
    /// queryable only when the writer commits them, up to a row group (122,880 spans) later.
    pub async fn stored_spans_reaching(&self, expected: u64, within: Duration) -> Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            let stored = self.stored_spans().await?;
            if stored >= expected || Instant::now() > deadline {
                return Ok(stored);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops a server this tool started (SIGTERM: commit, checkpoint, exit) and returns the
    /// size of its data files then; for a running server, their size now.
    pub fn stop(mut self) -> Result<Option<DiskUsage>> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill only sends a signal to the child this tool started.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    bail!("ducktrace did not stop within {STOP_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.data_dir.as_deref().map(DiskUsage::of).transpose()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The database file and its write-ahead log.
pub struct DiskUsage {
    pub database_bytes: u64,
    pub wal_bytes: u64,
}

impl DiskUsage {
    fn of(data_dir: &Path) -> Result<Self> {
        let size = |path: PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
        let database = data_dir.join(DATABASE_FILE);
        if !database.exists() {
            bail!("no {} in {}", DATABASE_FILE, data_dir.display());
        }
        Ok(Self {
            database_bytes: size(database),
            wal_bytes: size(data_dir.join(format!("{DATABASE_FILE}.wal"))),
        })
    }

    pub fn total(&self) -> u64 {
        self.database_bytes + self.wal_bytes
    }

    /// Bytes on disk per stored span, printed with what they are made of; `checkpointed` says
    /// whether the server was stopped (and so checkpointed) before measuring.
    pub fn report_per_span(&self, stored: u64, checkpointed: bool) -> f64 {
        let per_span = self.total() as f64 / stored as f64;
        let when = if checkpointed {
            "after the shutdown checkpoint"
        } else {
            "while running"
        };
        println!(
            "bytes on disk per span {when}: {per_span:.1} ({} B database + {} B WAL, {stored} spans)",
            self.database_bytes, self.wal_bytes
        );
        per_span
    }
}

fn free_port() -> Result<String> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// The machine's load averages, noted beside every figure: this machine is shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
