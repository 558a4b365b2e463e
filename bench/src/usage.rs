//! CPU and memory use of a process, sampled from /proc while the load runs.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::watch;

/// What a process used over the measured window.
pub struct Usage {
    /// CPU seconds per wall-clock second.
    pub cpu_cores: f64,
    pub peak_rss_bytes: u64,
}

/// Samples `pid` every second from `start` until `finished` turns true.
pub async fn watch(pid: u32, start: Instant, mut finished: watch::Receiver<bool>) -> Result<Usage> {
    let ticks_per_second = clock_ticks_per_second();
    let mut ticker = tokio::time::interval_at(start.into(), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first: Option<(Instant, u64)> = None;
    let mut peak_rss_bytes = 0;
    loop {
        let done = tokio::select! {
            _ = ticker.tick() => false,
            _ = finished.wait_for(|&done| done) => true,
        };
        let now = Instant::now();
        let sample = Sample::read(pid)?;
        peak_rss_bytes = peak_rss_bytes.max(sample.rss_bytes);
        let (start, start_ticks) = *first.get_or_insert((now, sample.cpu_ticks));
        if done {
            let cpu_seconds = (sample.cpu_ticks - start_ticks) as f64 / ticks_per_second;
            let elapsed = (now - start).as_secs_f64();
            return Ok(Usage {
                cpu_cores: if elapsed > 0.0 { cpu_seconds / elapsed } else { 0.0 },
                peak_rss_bytes,
            });
        }
    }
}

/// One reading of a process's CPU time and resident memory.
struct Sample {
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
    rss_bytes: u64,
}

impl Sample {
    fn read(pid: u32) -> Result<Self> {
        let stat =
            fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
        // The command name may contain spaces and parentheses; the fields after its last ')'
        // start at field 3 (state), so utime and stime (fields 14 and 15) are at 11 and 12.
        let (_, fields) = stat.rsplit_once(')').context("malformed /proc/PID/stat")?;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?) };
        let cpu_ticks = ticks(11)? + ticks(12)?;

        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(Self {
            cpu_ticks,
            rss_bytes: rss_kib * 1024,
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
