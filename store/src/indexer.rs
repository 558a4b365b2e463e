//! Background passes that index spans as they arrive, so that reads never aggregate every span.
//!
//! Every [`PASS_INTERVAL`] one thread runs each [`Pass`] over the spans committed since that
//! pass last ran: a rowid watermark per pass (the single writer appends with increasing rowids),
//! moved in the same transaction as the pass's own writes, so a crash repeats a pass, never
//! skips one. `stop` runs a last round and checkpoints.
//!
//! After each commit the writer also hands the indexer the columns it has just appended
//! ([`CommittedSpans`]), so a pass over new spans reads them from memory instead of back from
//! the table, which cost more than building the indexes themselves. Spans the indexer does not
//! hold (after a restart, or when it fell behind) are read from the table: both give the same
//! Arrow columns to the same code.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::arrow::array::RecordBatch;
use duckdb::Connection;

use crate::batch::span_schema;
use crate::edges::RecentCalls;
use crate::summaries::SummarizedTraces;
use crate::StoreError;

/// How often new spans are indexed.
pub const PASS_INTERVAL: Duration = Duration::from_secs(2);

/// Committed spans held for the indexer at most, and waiting in its inbox at most; past either
/// the oldest are dropped, or the newest not sent, and read back from the table when a pass
/// needs them. About 300 bytes each in memory (the columns passes read), plus the events and
/// links of the few spans that have any. Also how far behind the slowest pass the writer still
/// sends spans: further ahead, they would wait in memory for passes that read the table.
const MAX_HELD_ROWS: i64 = 256 * 1024;

/// The most spans one pass takes at once, so that an indexer that fell behind catches up in
/// bounded steps. Larger than what is held: some passes cost a scan of their table per pass
/// (the summaries' merge), so fewer, larger passes catch up sooner.
const MAX_PASS_ROWS: i64 = 512 * 1024;

/// Spans the indexer may lag behind the writer before it says so in the log, and before the
/// writer refuses more (retryably, [`Progress::too_far_behind`]): trace search lists a trace
/// only once it is summarized, so it misses the newest spans until the indexer catches up.
/// Ingest at full speed on two cores outran indexing by ~90k spans a second, without end.
pub(crate) const MAX_LAG_ROWS: i64 = 1 << 20;

/// Held spans that start a round before [`PASS_INTERVAL`] is up, so that a fast writer does
/// not fill the memory the indexer may hold.
const ROUND_ROWS: i64 = 128 * 1024;

/// The stored watermark of the pass whose key is the parameter; -1 before its first run.
const STORED_WATERMARK: &str =
    "SELECT coalesce(max(CAST(value AS BIGINT)), -1) FROM ducktrace_meta WHERE key = ?";

/// One incremental index: `run` folds the rows of `source` with rowid in `(lo, hi]` into its
/// tables and returns the last rowid it has indexed (`hi`, or less when it indexes whole blocks
/// only).
pub(crate) struct Pass {
    /// Names the pass in logs and its watermark in `ducktrace_meta` (`<name>_rowid_watermark`).
    pub name: &'static str,
    /// The append-only table the pass follows: `span_data`, or one an earlier pass fills.
    pub source: &'static str,
    /// The `span_data` columns the pass reads through [`NewSpans::columns`]: the indexer holds
    /// these, and only these, of what the writer commits.
    pub columns: &'static [&'static str],
    pub run: fn(&NewSpans<'_>, i64, i64) -> Result<i64, StoreError>,
}

impl Pass {
    /// The `ducktrace_meta` key of the last rowid this pass has indexed.
    fn watermark_key(&self) -> String {
        format!("{}_rowid_watermark", self.name)
    }

    /// Whether the pass follows `span_data`: then the writer's columns feed it and readers
    /// learn its watermark from [`Progress`].
    fn follows_spans(&self) -> bool {
        self.source == "span_data"
    }

    /// The rowids of `source` committed but not yet indexed by this pass, if any, as this
    /// transaction sees them: what the pass runs over next. Sources are append-only
    /// (rowids `0..count`), so the count bounds the range: a bare `rowid >` filter makes DuckDB
    /// visit every row group, even for no rows.
    fn unindexed(&self, conn: &Connection) -> Result<Option<RangeInclusive<i64>>, StoreError> {
        let (watermark, last): (i64, i64) = conn.query_row(
            &format!(
                "SELECT ({STORED_WATERMARK}), (SELECT count(*) - 1 FROM {})",
                self.source
            ),
            [self.watermark_key()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(rows_after(watermark, last))
    }
}

/// The smallest range holding both.
pub(crate) fn widest(a: &RangeInclusive<i64>, b: &RangeInclusive<i64>) -> RangeInclusive<i64> {
    *a.start().min(b.start())..=*a.end().max(b.end())
}

/// The rowids after `watermark` up to `last`, if any.
fn rows_after(watermark: i64, last: i64) -> Option<RangeInclusive<i64>> {
    (last > watermark).then_some(watermark + 1..=last)
}

/// How far the writer and each pass over `span_data` have committed, kept in memory for
/// readers: asking the database took a fifth of a trace read at 10M spans.
pub(crate) struct Progress {
    /// Rows of `span_data` committed: rowids `0..span_rows`.
    span_rows: AtomicI64,
    /// Rows of `span_data` when the store opened.
    opened_with: i64,
    /// Whether a pass failed in the indexer's last round.
    failing: AtomicBool,
    /// The watermark of each pass over `span_data`, by pass name.
    watermarks: Vec<(&'static str, AtomicI64)>,
    /// The start times of the spans some pass has not indexed yet, per commit, oldest first.
    /// A rowid range does not let DuckDB skip row groups, a start-time range does: looking a
    /// trace up among the spans not yet summarized took 7 ms at 10M spans, and 1 ms with it.
    recent_starts: Mutex<VecDeque<CommitStarts>>,
}

/// The range of start times of the spans committed up to `last_rowid`, after the entry before.
struct CommitStarts {
    last_rowid: i64,
    starts: RangeInclusive<i64>,
}

/// Every start time a span can have: OTLP times are unsigned, and the writer refuses those
/// past `i64::MAX` nanoseconds.
pub(crate) const ANY_START: RangeInclusive<i64> = 0..=i64::MAX;

/// Commits whose start-time ranges are kept apart; older ones merge into one wider range.
const RECENT_COMMITS: usize = 64;

/// A run of `span_data` rows, and the range of their start times.
#[derive(Debug, Clone)]
pub(crate) struct SpanRange {
    pub rowids: RangeInclusive<i64>,
    /// Every one of them starts within this range (epoch nanoseconds).
    pub starts: RangeInclusive<i64>,
}

impl SpanRange {
    /// The SQL condition selecting these rows of `span_data s`. The start-time bounds add
    /// nothing to the result, but let DuckDB skip the row groups and vectors outside them, which
    /// rowids alone do not: at 10M spans a Bloom block took 4.4 instead of 10 ms to scan, and a
    /// trace's spans not yet summarized 1 instead of 7 ms to look up.
    pub(crate) fn condition(&self) -> String {
        format!(
            "s.rowid BETWEEN {} AND {} AND s.start_time BETWEEN make_timestamp_ns({}) AND make_timestamp_ns({})",
            self.rowids.start(),
            self.rowids.end(),
            self.starts.start(),
            self.starts.end()
        )
    }
}

impl Progress {
    /// The progress stored in `conn`'s database, for `passes`.
    pub(crate) fn load(conn: &Connection, passes: &[Pass]) -> Result<Self, StoreError> {
        let span_rows: i64 = conn.query_row("SELECT count(*) FROM span_data", [], |row| row.get(0))?;
        let mut watermarks = Vec::new();
        for pass in passes.iter().filter(|pass| pass.follows_spans()) {
            let watermark: i64 =
                conn.query_row(STORED_WATERMARK, [pass.watermark_key()], |row| row.get(0))?;
            watermarks.push((pass.name, AtomicI64::new(watermark)));
        }
        let progress = Self {
            span_rows: AtomicI64::new(span_rows),
            opened_with: span_rows,
            failing: AtomicBool::new(false),
            watermarks,
            recent_starts: Mutex::default(),
        };
        if let Some(rowids) = rows_after(progress.indexed_through(), span_rows - 1) {
            let (first, last): (Option<i64>, Option<i64>) = conn.query_row(
                "SELECT min(epoch_ns(start_time)), max(epoch_ns(start_time)) FROM span_data
                 WHERE rowid BETWEEN ? AND ?",
                [rowids.start(), rowids.end()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            if let Some((first, last)) = first.zip(last) {
                progress.recent_starts().push_back(CommitStarts {
                    last_rowid: *rowids.end(),
                    starts: first..=last,
                });
            }
        }
        Ok(progress)
    }

    pub(crate) fn span_rows(&self) -> i64 {
        self.span_rows.load(Ordering::Acquire)
    }

    fn recent_starts(&self) -> MutexGuard<'_, VecDeque<CommitStarts>> {
        self.recent_starts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the writer once `span_rows` rows are committed, the new ones (if any)
    /// starting within `starts`.
    pub(crate) fn committed(&self, span_rows: i64, starts: Option<RangeInclusive<i64>>) {
        let mut recent = self.recent_starts();
        if let Some(starts) = starts {
            recent.push_back(CommitStarts {
                last_rowid: span_rows - 1,
                starts,
            });
        }
        let indexed = self.indexed_through();
        while recent.front().is_some_and(|commit| commit.last_rowid <= indexed) {
            recent.pop_front();
        }
        if recent.len() > RECENT_COMMITS {
            let oldest = recent.pop_front().expect("more than one entry");
            let next = recent.front_mut().expect("more than one entry");
            next.starts = widest(&oldest.starts, &next.starts);
        }
        // Stored while the lock is held, so a reader that sees the rows sees their starts.
        self.span_rows.store(span_rows, Ordering::Release);
    }

    fn watermark(&self, pass: &Pass) -> &AtomicI64 {
        let (_, watermark) = self
            .watermarks
            .iter()
            .find(|(name, _)| *name == pass.name)
            .expect("progress is kept for every pass over span_data");
        watermark
    }

    /// The first `span_data` rowid `pass` had not indexed at this call.
    pub(crate) fn first_unindexed(&self, pass: &Pass) -> i64 {
        self.watermark(pass).load(Ordering::Acquire) + 1
    }

    /// The `span_data` rowids committed but not yet indexed by `pass`, if any. Every span
    /// before them is indexed in any snapshot taken after this call (a pass commits before it
    /// reports its watermark), so read this before the query's transaction begins.
    pub(crate) fn unindexed(&self, pass: &Pass) -> Option<SpanRange> {
        let watermark = self.watermark(pass).load(Ordering::Acquire);
        let recent = self.recent_starts();
        let rowids = rows_after(watermark, self.span_rows() - 1)?;
        // Entries are dropped only once every pass is past them: a row they no longer cover is
        // indexed in the snapshot the caller takes next.
        let starts = recent
            .iter()
            .filter(|commit| commit.last_rowid > watermark)
            .map(|commit| commit.starts.clone())
            .reduce(|a, b| widest(&a, &b))
            .unwrap_or(ANY_START);
        Some(SpanRange { rowids, starts })
    }

    /// How many rows past the slowest pass over `span_data` rowid `rowid` lies.
    fn rows_behind(&self, rowid: i64) -> i64 {
        rowid - self.indexed_through()
    }

    /// Spans committed since the store opened that the slowest pass over `span_data` has not
    /// indexed. A pass still indexing spans stored before (a new index built on an upgrade, or
    /// the tail a stopped server left) does not count until it reaches them: that work must
    /// not hold new writes back.
    fn new_spans_behind(&self) -> i64 {
        let newest = self.span_rows() - 1;
        self.watermarks
            .iter()
            .map(|(_, watermark)| watermark.load(Ordering::Acquire))
            .filter(|&watermark| watermark >= self.opened_with - 1)
            .min()
            .map_or(0, |indexed| newest - indexed)
    }

    /// How far behind the new spans the indexer is, when that is further than
    /// [`MAX_LAG_ROWS`] and it is working: a pass that keeps failing would never catch up, and
    /// refusing writes for it would stop ingest for good.
    pub(crate) fn too_far_behind(&self) -> Option<i64> {
        let behind = self.new_spans_behind();
        (behind > MAX_LAG_ROWS && !self.failing.load(Ordering::Acquire)).then_some(behind)
    }

    /// The last rowid every pass over `span_data` has indexed.
    fn indexed_through(&self) -> i64 {
        self.watermarks
            .iter()
            .map(|(_, watermark)| watermark.load(Ordering::Acquire))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// Spans the writer has just committed: the `span_data` columns some pass reads (stored ids in
/// place), as [`IndexerInbox::columns_read`] picks them, and the rowid of the first.
pub(crate) struct CommittedSpans {
    pub first_rowid: i64,
    pub columns: RecordBatch,
}

enum Message {
    Committed(CommittedSpans),
    Stop,
}

/// Where the writer sends what it committed; sending never blocks and never fails the writer.
#[derive(Clone)]
pub(crate) struct IndexerInbox {
    sender: mpsc::Sender<Message>,
    /// Rows sent and not yet received: a pass slower than the writer must not let them pile up.
    waiting: Arc<AtomicI64>,
    /// Positions in `span_schema` of the columns some pass reads.
    held: Arc<[usize]>,
    progress: Arc<Progress>,
}

impl IndexerInbox {
    /// Whether spans from rowid `first_rowid` on are worth keeping for the indexer: not when its
    /// slowest pass is so far behind that it reads them back from the table anyway.
    pub(crate) fn wants(&self, first_rowid: i64) -> bool {
        self.progress.rows_behind(first_rowid) <= MAX_HELD_ROWS
    }

    /// The columns of appended `span_data` rows (in `span_schema` order) that some pass reads;
    /// the writer keeps only these until its commit.
    pub(crate) fn columns_read(&self, appended: &RecordBatch) -> RecordBatch {
        appended
            .project(&self.held)
            .expect("the writer hands over span_data columns")
    }

    pub(crate) fn committed(&self, spans: CommittedSpans) {
        let rows = spans.columns.num_rows() as i64;
        if self.waiting.fetch_add(rows, Ordering::AcqRel) + rows > MAX_HELD_ROWS {
            // The indexer is behind: it reads these spans back from the table.
            self.waiting.fetch_sub(rows, Ordering::AcqRel);
            return;
        }
        // A stopped indexer reads the spans back on its next start.
        let _ = self.sender.send(Message::Committed(spans));
    }
}

/// The newest committed spans, by rowid without gaps.
#[derive(Default)]
struct RecentSpans {
    /// Each batch with the rowid of its first row, oldest first.
    batches: VecDeque<(i64, RecordBatch)>,
}

impl RecentSpans {
    fn end(&self) -> Option<i64> {
        self.batches
            .back()
            .map(|(first, batch)| first + batch.num_rows() as i64)
    }

    fn push(&mut self, spans: CommittedSpans) {
        if self.end() != Some(spans.first_rowid) {
            // A gap (the first batch after a start): what came before is read back.
            self.batches.clear();
        }
        self.batches.push_back((spans.first_rowid, spans.columns));
        while let (Some((first, _)), Some(end)) = (self.batches.front(), self.end()) {
            if end - first <= MAX_HELD_ROWS {
                break;
            }
            self.batches.pop_front();
        }
    }

    /// Drops the spans every pass has indexed.
    fn forget_through(&mut self, rowid: i64) {
        while let Some((first, batch)) = self.batches.front() {
            if first + batch.num_rows() as i64 - 1 > rowid {
                break;
            }
            self.batches.pop_front();
        }
    }

    /// `rows` up to the last one held, when the first one is held; else all of `rows`.
    fn held_part(&self, rows: RangeInclusive<i64>) -> RangeInclusive<i64> {
        match (self.batches.front(), self.end()) {
            (Some((first, _)), Some(end)) if (*first..end).contains(rows.start()) => {
                *rows.start()..=(*rows.end()).min(end - 1)
            }
            _ => rows,
        }
    }

    /// The spans with rowids in `rows`, when all of them are held.
    fn get(&self, rows: &RangeInclusive<i64>) -> Option<Vec<RecordBatch>> {
        let (held_first, _) = self.batches.front()?;
        if *rows.start() < *held_first || *rows.end() >= self.end()? {
            return None;
        }
        let slices = self
            .batches
            .iter()
            .filter_map(|(first, batch)| {
                let end = first + batch.num_rows() as i64 - 1;
                let from = (*rows.start()).max(*first);
                let to = (*rows.end()).min(end);
                (from <= to).then(|| batch.slice((from - first) as usize, (to - from + 1) as usize))
            })
            .collect();
        Some(slices)
    }
}

/// What a pass reads new spans through: the indexer's connection and the spans it holds; and
/// the window of recent spans the service-call pass keeps between rounds.
pub(crate) struct NewSpans<'a> {
    pub conn: &'a Connection,
    recent: &'a RecentSpans,
    pub recent_calls: &'a RefCell<RecentCalls>,
    pub summarized_traces: &'a RefCell<SummarizedTraces>,
}

impl NewSpans<'_> {
    /// The `span_data` columns `columns` of the rows with rowid in `rows`: the writer's own
    /// columns when the indexer holds them, else read from the table. `trace_id` comes as 16
    /// fixed-size bytes either way (see [`Indexer::connection`]).
    pub fn columns(
        &self,
        rows: RangeInclusive<i64>,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let held = self.recent.get(&rows);
        tracing::trace!(?rows, held = held.is_some(), "new spans");
        if let Some(batches) = held {
            return batches
                .iter()
                .map(|batch| {
                    let indexes: Vec<usize> = columns
                        .iter()
                        .map(|name| batch.schema().index_of(name))
                        .collect::<Result<_, _>>()?;
                    Ok(batch.project(&indexes)?)
                })
                .collect();
        }
        let sql = format!(
            "SELECT {} FROM span_data WHERE rowid BETWEEN ? AND ?",
            columns.join(", ")
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let batches = statement.query_arrow([rows.start(), rows.end()])?.collect();
        Ok(batches)
    }
}

/// The running indexer thread.
pub(crate) struct Indexer {
    inbox: IndexerInbox,
    thread: JoinHandle<()>,
}

impl Indexer {
    /// The inbox for the writer, and the receiving end to start the indexer running `passes`
    /// with.
    pub(crate) fn inbox(passes: &'static [Pass], progress: Arc<Progress>) -> (IndexerInbox, Inbound) {
        let schema = span_schema();
        let mut held: Vec<usize> = passes
            .iter()
            .flat_map(|pass| pass.columns)
            .map(|name| schema.index_of(name).expect("passes read span_data columns"))
            .collect();
        held.sort_unstable();
        held.dedup();
        let (sender, receiver) = mpsc::channel();
        let waiting = Arc::new(AtomicI64::new(0));
        let inbox = IndexerInbox {
            sender,
            waiting: waiting.clone(),
            held: held.into(),
            progress,
        };
        (
            inbox,
            Inbound {
                receiver,
                waiting,
                passes,
            },
        )
    }

    /// The indexer's own connection to the database of `conn`; made before the configuration is
    /// locked. DuckDB's Arrow answers give a UUID as text unless asked for lossless types: then
    /// as the 16 bytes the writer's column holds. Text cost more than all the other columns a
    /// pass reads back together (133 of 213 ms for the summary pass's columns of 512k spans).
    pub(crate) fn connection(conn: &Connection) -> Result<Connection, StoreError> {
        let own = conn.try_clone()?;
        own.execute_batch("SET SESSION arrow_lossless_conversion = true")?;
        Ok(own)
    }

    /// Starts indexing on `conn` (from [`Indexer::connection`]); each pass's watermark is
    /// reported to `progress` as it commits.
    pub(crate) fn start(
        conn: Connection,
        inbox: IndexerInbox,
        inbound: Inbound,
        progress: Arc<Progress>,
    ) -> Result<Self, StoreError> {
        let thread = std::thread::Builder::new()
            .name("span-indexer".into())
            .spawn(move || run(&conn, inbound, &progress))?;
        Ok(Self { inbox, thread })
    }

    pub(crate) fn stop(self) {
        let _ = self.inbox.sender.send(Message::Stop);
        if self.thread.join().is_err() {
            tracing::error!("the span indexer panicked");
        }
    }
}

/// The receiving end of an [`IndexerInbox`], and the passes it feeds.
pub(crate) struct Inbound {
    receiver: mpsc::Receiver<Message>,
    waiting: Arc<AtomicI64>,
    passes: &'static [Pass],
}

fn run(conn: &Connection, inbound: Inbound, progress: &Progress) {
    let Inbound {
        receiver: messages,
        waiting,
        passes,
    } = inbound;
    let received = |spans: &CommittedSpans| {
        waiting.fetch_sub(spans.columns.num_rows() as i64, Ordering::AcqRel);
    };
    let mut recent = RecentSpans::default();
    let recent_calls = RefCell::new(RecentCalls::default());
    let summarized_traces = RefCell::new(SummarizedTraces::default());
    // Takes the spans committed since, indexes them, and says whether `Stop` came among them.
    let round = |recent: &mut RecentSpans| {
        let mut stop = false;
        loop {
            match messages.try_recv() {
                Ok(Message::Committed(spans)) => {
                    received(&spans);
                    recent.push(spans);
                }
                Ok(Message::Stop) => stop = true,
                Err(_) => break,
            }
        }
        let new_spans = NewSpans {
            conn,
            recent,
            recent_calls: &recent_calls,
            summarized_traces: &summarized_traces,
        };
        let mut indexed_through = i64::MAX;
        let mut failing = false;
        for pass in passes {
            match run_pass(&new_spans, pass, progress) {
                Ok(watermark) if pass.follows_spans() => {
                    indexed_through = indexed_through.min(watermark);
                }
                Ok(_) => {}
                Err(error) => {
                    indexed_through = i64::MIN;
                    failing = true;
                    // Its calls may not be stored; the window is rebuilt from what is.
                    recent_calls.borrow_mut().forget();
                    tracing::warn!(%error, pass = pass.name, "indexing new spans failed; retrying next pass");
                }
            }
        }
        recent.forget_through(indexed_through);
        progress.failing.store(failing, Ordering::Release);
        stop
    };
    let mut next_round = Instant::now();
    let mut held_since_round = 0;
    let mut lag_logged = false;
    loop {
        let wait = next_round.saturating_duration_since(Instant::now());
        let stop = match messages.recv_timeout(wait) {
            Ok(Message::Committed(spans)) => {
                received(&spans);
                held_since_round += spans.columns.num_rows() as i64;
                recent.push(spans);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => true,
        };
        // Checked after every message too: a busy writer would never let the wait time out.
        if stop || Instant::now() >= next_round || held_since_round >= ROUND_ROWS {
            let indexed_before = progress.indexed_through();
            // A round takes what the writer committed last, so a stop indexes that too.
            if round(&mut recent) || stop {
                if let Err(error) = conn.execute_batch("CHECKPOINT") {
                    tracing::warn!(%error, "checkpoint after the last indexing pass failed");
                }
                break;
            }
            let lag = progress.rows_behind(progress.span_rows() - 1);
            if lag > MAX_LAG_ROWS && !lag_logged {
                tracing::warn!(
                    lag,
                    "indexing is behind the stored spans: trace search may miss spans until it catches up"
                );
                lag_logged = true;
            } else if lag <= MAX_HELD_ROWS && lag_logged {
                tracing::info!("indexing has caught up with the stored spans");
                lag_logged = false;
            }
            // Far behind, the indexer is sent nothing (`IndexerInbox::wants`, the same bound)
            // that would start the next round: it goes on at once while its passes make headway.
            let behind = lag > MAX_HELD_ROWS;
            let headway = progress.indexed_through() > indexed_before;
            let pause = if behind && headway {
                Duration::ZERO
            } else {
                PASS_INTERVAL
            };
            next_round = Instant::now() + pause;
            held_since_round = 0;
        }
    }
}

/// Runs `pass` over everything committed since its watermark, and moves the watermark,
/// atomically; returns the watermark.
fn run_pass(new_spans: &NewSpans<'_>, pass: &Pass, progress: &Progress) -> Result<i64, StoreError> {
    let conn = new_spans.conn;
    let indexed = crate::in_transaction(conn, || {
        let Some(new) = pass.unindexed(conn)? else {
            return Ok(None);
        };
        let at_most =
            |rows: RangeInclusive<i64>| *rows.start()..=(*rows.end()).min(rows.start() + MAX_PASS_ROWS - 1);
        // Spans committed since the indexer last took its messages wait for the next round,
        // instead of all of them being read back from the table.
        let mut rows = match pass.follows_spans() {
            true => at_most(new_spans.recent.held_part(new.clone())),
            false => at_most(new.clone()),
        };
        let lo = rows.start() - 1;
        let (started, cpu_started) = (Instant::now(), thread_cpu_time());
        let mut indexed = (pass.run)(new_spans, lo, *rows.end())?;
        if indexed == lo && rows.end() < new.end() {
            // A pass of whole blocks held less than one: the writer sends no more while the
            // indexer is this far behind, so it would wait for ever. The rest is in the table.
            rows = at_most(new);
            indexed = (pass.run)(new_spans, lo, *rows.end())?;
        }
        tracing::debug!(
            pass = pass.name,
            rows = rows.end() - lo,
            elapsed = ?started.elapsed(),
            this_thread_cpu = ?thread_cpu_time().saturating_sub(cpu_started),
            "indexed"
        );
        if indexed > lo {
            conn.execute(
                "INSERT OR REPLACE INTO ducktrace_meta VALUES (?, ?)",
                [pass.watermark_key(), indexed.to_string()],
            )?;
        }
        Ok(Some(indexed))
    })?;
    match indexed {
        Some(watermark) => {
            if pass.follows_spans() {
                progress.watermark(pass).store(watermark, Ordering::Release);
            }
            Ok(watermark)
        }
        None => Ok(i64::MAX),
    }
}

/// CPU time the calling thread has used: a pass's own cost, whatever else competes for the cores
/// (DuckDB's worker threads may add to it).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the calling thread's CPU clock into `now`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::arrow::array::{ArrayRef, Int64Array};

    fn progress(watermarks: &[i64]) -> Arc<Progress> {
        Arc::new(Progress {
            span_rows: AtomicI64::new(0),
            opened_with: 0,
            failing: AtomicBool::new(false),
            watermarks: watermarks
                .iter()
                .map(|&watermark| ("pass", AtomicI64::new(watermark)))
                .collect(),
            recent_starts: Mutex::default(),
        })
    }

    fn spans(first_rowid: i64, rows: i64) -> CommittedSpans {
        let column: ArrayRef = Arc::new(Int64Array::from(vec![0; rows as usize]));
        CommittedSpans {
            first_rowid,
            columns: RecordBatch::try_from_iter([("x", column)]).unwrap(),
        }
    }

    /// A store in memory holding one span of trace 0102…10 per start time (epoch nanoseconds),
    /// with the empty resource and scope (stored bytes of zero length) its spans refer to.
    fn store_with_spans(starts: &[i64]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&crate::schema::ddl()).unwrap();
        conn.execute_batch(crate::schema::META_DDL).unwrap();
        conn.execute_batch(
            "INSERT INTO resources VALUES (0, 'shop', MAP {}, '', 0, '', '\\x00'::BLOB);
             INSERT INTO scopes VALUES (0, '', '', MAP {}, '', 0, '', '\\x00'::BLOB);",
        )
        .unwrap();
        for &start in starts {
            add_span(&conn, TRACE, start);
        }
        conn
    }

    /// What `work` makes of new spans on `own`, the indexer's connection, holding none from the
    /// writer: passes read them from the table.
    fn from_the_table<T>(
        own: &Connection,
        summarized: &RefCell<SummarizedTraces>,
        work: impl FnOnce(&NewSpans<'_>) -> T,
    ) -> T {
        let recent = RecentSpans::default();
        let recent_calls = RefCell::new(RecentCalls::default());
        work(&NewSpans {
            conn: own,
            recent: &recent,
            recent_calls: &recent_calls,
            summarized_traces: summarized,
        })
    }

    /// Runs each of `passes` once over the spans in the table, as after a start.
    fn run_once(conn: &Connection, passes: &[Pass]) {
        let own = Indexer::connection(conn).unwrap();
        let progress = Progress::load(conn, passes).unwrap();
        from_the_table(&own, &RefCell::default(), |new_spans| {
            for pass in passes {
                run_pass(new_spans, pass, &progress).unwrap();
            }
        });
    }

    fn add_span(conn: &Connection, trace_id: &str, start: i64) {
        add_spans(conn, 1, start, &format!("'{trace_id}'"), "[]");
    }

    /// Appends spans `i` in `0..count`, starting `first_start + i`, with the trace id (hex) and
    /// events that the SQL expressions `trace_id` and `events` give for `i`.
    fn add_spans(conn: &Connection, count: i64, first_start: i64, trace_id: &str, events: &str) {
        conn.execute_batch(&format!(
            "INSERT INTO span_data (trace_id, span_id, start_time, duration_ns, service_name,
                 span_name, span_kind, status_message, resource_id, scope_id, trace_state,
                 flags, attribute_types, dropped_attributes_count, events,
                 dropped_events_count, links, dropped_links_count)
             SELECT CAST({trace_id} AS UUID), i + 1, make_timestamp_ns({first_start} + i), 1,
                 'shop', 'GET', 2, '', 0, 0, '', 0, '', 0, {events}, 0, [], 0
             FROM range({count}) t(i)"
        ))
        .unwrap();
    }

    #[test]
    fn a_trace_summarized_over_several_passes_and_a_restart_has_one_summary() {
        const OLD: &str = "0102030405060708090a0b0c0d0e0f10";
        const NEW: &str = "0f0e0d0c0b0a09080706050403020101";
        let conn = store_with_spans(&[2_000]);
        let own = Indexer::connection(&conn).unwrap();
        let passes = [crate::summaries::TRACE_SUMMARIES];
        let progress = Progress::load(&conn, &passes).unwrap();
        let summarize = |summarized: &RefCell<SummarizedTraces>| {
            from_the_table(&own, summarized, |new_spans| {
                run_pass(new_spans, &passes[0], &progress).unwrap()
            });
        };
        let summarized = RefCell::new(SummarizedTraces::default());
        summarize(&summarized);
        add_span(&conn, OLD, 1_000);
        add_span(&conn, NEW, 5_000);
        summarize(&summarized);
        // After a restart the filter starts out empty and reads the stored trace ids.
        add_span(&conn, OLD, 3_000);
        summarize(&RefCell::new(SummarizedTraces::default()));
        let summaries: Vec<(String, u64, i64)> = conn
            .prepare(
                "SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), span_count, epoch_ns(start_time)
                 FROM trace_summaries ORDER BY trace_id",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(summaries, [(OLD.into(), 3, 1_000), (NEW.into(), 1, 5_000)]);
    }

    #[test]
    fn calls_are_stored_by_trace_and_their_minutes_by_minute_edge_and_bin() {
        let conn = store_with_spans(&[]);
        // Spans 1..=64 of a service call spans 65..=128 of another, one call per trace and
        // minute, with trace ids and minutes falling as they arrive.
        add_spans(&conn, 128, 0, "printf('%032x', 1000 - i % 64)", "[]");
        conn.execute_batch(
            "UPDATE span_data SET start_time = make_timestamp_ns((1000 - CAST(span_id AS BIGINT) % 64) * 60000000000),
                 duration_ns = span_id;
             UPDATE span_data SET service_name = 'orders', parent_span_id = span_id - 64 WHERE span_id > 64",
        )
        .unwrap();
        run_once(
            &conn,
            &[crate::edges::SERVICE_CALLS, crate::edges::SERVICE_CALL_MINUTES],
        );
        let in_order = |table: &str, key: &str| -> bool {
            conn.query_row(
                &format!(
                    "SELECT count(*) = 64 AND bool_and(rowid = position - 1)
                     FROM (SELECT rowid, row_number() OVER (ORDER BY {key}) AS position FROM {table})"
                ),
                [],
                |row| row.get(0),
            )
            .unwrap()
        };
        assert!(in_order("service_calls", "trace_id"));
        assert!(in_order(
            "service_call_minutes",
            "minute, caller, callee, latency_bin"
        ));
    }

    #[test]
    fn a_store_opened_with_spans_not_yet_indexed_knows_when_they_start() {
        let conn = store_with_spans(&[3_000, 1_000, 2_000]);
        conn.execute(
            "INSERT INTO ducktrace_meta VALUES (?, '0')",
            [crate::summaries::TRACE_SUMMARIES.watermark_key()],
        )
        .unwrap();
        let progress = Progress::load(&conn, &[crate::summaries::TRACE_SUMMARIES]).unwrap();
        let tail = progress.unindexed(&crate::summaries::TRACE_SUMMARIES).unwrap();
        assert_eq!((tail.rowids, tail.starts), (1..=2, 1_000..=2_000));
    }

    /// The start times of the spans of `trace_id` a trace read finds, sorted.
    fn trace_starts(
        conn: &Connection,
        catalog: &Mutex<crate::reader::Catalog>,
        progress: &Progress,
        trace_id: &str,
    ) -> Vec<u64> {
        let groups = crate::reader::trace(conn, catalog, progress, trace_id.parse().unwrap()).unwrap();
        let spans = groups.iter().flat_map(|g| &g.scope_spans).flat_map(|s| &s.spans);
        let mut starts: Vec<u64> = spans.map(|span| span.start_time_unix_nano).collect();
        starts.sort_unstable();
        starts
    }

    const TRACE: &str = "0102030405060708090a0b0c0d0e0f10";

    #[test]
    fn a_trace_read_takes_the_spans_of_the_blocks_whose_filter_holds_the_trace() {
        const OTHER: &str = "0f0e0d0c0b0a09080706050403020101";
        const BLOCK: i64 = crate::blocks::BLOCK_ROWS;
        let conn = store_with_spans(&[]);
        // Two full blocks of OTHER but for one span of TRACE in the first, which has an event,
        // and a third block begun, with TRACE again.
        let rows = 2 * BLOCK + 5;
        add_spans(
            &conn,
            rows,
            0,
            &format!("CASE WHEN i IN (100, {rows} - 2) THEN '{TRACE}' ELSE '{OTHER}' END"),
            "CASE WHEN i = 100 THEN [{'time': make_timestamp_ns(100), 'name': 'retry',
                 'attributes': MAP {}, 'attribute_types': '', 'dropped_attributes_count': 0}]
             ELSE [] END",
        );
        let own = Indexer::connection(&conn).unwrap();
        let passes = [crate::trace_index::TRACE_BLOOMS];
        let progress = Progress::load(&conn, &passes).unwrap();
        let summarized = RefCell::default();
        let index = || {
            from_the_table(&own, &summarized, |new_spans| {
                run_pass(new_spans, &passes[0], &progress).unwrap()
            })
        };
        index();
        let catalog = Mutex::default();
        let candidates = |trace_id: &str, before: i64| {
            let trace_id = trace_id.parse::<crate::TraceId>().unwrap().to_bytes();
            let blocks = crate::trace_index::candidate_blocks(&conn, &catalog, &trace_id, before).unwrap();
            blocks
                .into_iter()
                .map(|block| (block.spans.rowids, block.events_or_links))
                .collect::<Vec<_>>()
        };
        let before = progress.first_unindexed(&passes[0]);
        assert_eq!(before, rows);
        assert_eq!(
            candidates(TRACE, before),
            [(0..=BLOCK - 1, true), (2 * BLOCK..=rows - 1, false)]
        );
        assert_eq!(
            candidates(OTHER, before),
            [
                (0..=BLOCK - 1, false),
                (BLOCK..=2 * BLOCK - 1, false),
                (2 * BLOCK..=rows - 1, false)
            ]
        );
        // The third block's filter is replaced as spans arrive; a read that took its bounds
        // before that reads the later spans as not yet indexed, not from the filter's block.
        add_span(&conn, OTHER, rows);
        add_span(&conn, TRACE, rows + 1);
        progress.committed(rows + 2, Some(rows..=rows + 1));
        index();
        assert_eq!(candidates(TRACE, rows + 2)[1], (2 * BLOCK..=rows + 1, false));
        assert_eq!(candidates(TRACE, rows)[1], (2 * BLOCK..=rows - 1, false));
        let last = rows as u64 - 2;
        assert_eq!(
            trace_starts(&conn, &catalog, &progress, TRACE),
            [100, last, rows as u64 + 1]
        );
        let other = trace_starts(&conn, &catalog, &progress, OTHER);
        assert_eq!(other.len() as i64, rows - 1, "each span once");
    }

    #[test]
    fn a_failed_read_of_the_trace_filters_keeps_every_block_known() {
        let conn = store_with_spans(&[]);
        let rows = crate::blocks::BLOCK_ROWS + 5;
        add_spans(&conn, rows, 0, &format!("'{TRACE}'"), "[]");
        run_once(&conn, &[crate::trace_index::TRACE_BLOOMS]);
        let mut catalog = crate::reader::Catalog::default();
        crate::trace_index::read_filters(&conn, &mut catalog, rows).unwrap();
        assert_eq!(catalog.trace_blocks.len(), 2);
        // Spans committed since: the newest block is read again, and that read fails.
        conn.execute_batch("ALTER TABLE trace_blooms RENAME TO moved")
            .unwrap();
        assert!(crate::trace_index::read_filters(&conn, &mut catalog, rows + 1).is_err());
        assert_eq!(catalog.trace_blocks.len(), 2);
    }

    #[test]
    fn a_pass_of_whole_blocks_holding_less_than_one_reads_the_rest_from_the_table() {
        let conn = store_with_spans(&[]);
        let rows = 2 * crate::blocks::BLOCK_ROWS + 5;
        add_spans(&conn, rows, 0, &format!("'{TRACE}'"), "[]");
        let own = Indexer::connection(&conn).unwrap();
        let passes = [crate::attribute_index::ATTRIBUTE_BLOOMS];
        let (pass, progress) = (&passes[0], Progress::load(&conn, &passes).unwrap());
        // The writer's columns of the first 100 spans, and no more: it stopped sending them.
        let mut recent = RecentSpans::default();
        let held = own
            .prepare(&format!(
                "SELECT {} FROM span_data WHERE rowid < 100",
                pass.columns.join(", ")
            ))
            .unwrap()
            .query_arrow([])
            .unwrap()
            .collect::<Vec<_>>();
        recent.push(CommittedSpans {
            first_rowid: 0,
            columns: duckdb::arrow::compute::concat_batches(&held[0].schema(), &held).unwrap(),
        });
        let recent_calls = RefCell::new(RecentCalls::default());
        let summarized = RefCell::default();
        let new_spans = NewSpans {
            conn: &own,
            recent: &recent,
            recent_calls: &recent_calls,
            summarized_traces: &summarized,
        };
        let indexed = run_pass(&new_spans, pass, &progress).unwrap();
        assert_eq!(indexed, 2 * crate::blocks::BLOCK_ROWS - 1);
    }

    #[test]
    fn a_trace_read_finds_spans_not_yet_indexed_by_the_start_times_of_their_commits() {
        let conn = store_with_spans(&[3_000, 1_000, 2_000]);
        let passes = [crate::trace_index::TRACE_BLOOMS];
        let catalog = std::sync::Mutex::default();
        let spans = |progress: &Progress| trace_starts(&conn, &catalog, progress, TRACE);
        // Nothing is indexed: the range comes from the table when the store opens…
        let progress = Progress::load(&conn, &passes).unwrap();
        assert_eq!(spans(&progress), [1_000, 2_000, 3_000]);
        // …and from the writer for each commit after it, while the older ranges still count.
        conn.execute(
            "INSERT INTO span_data SELECT * REPLACE (make_timestamp_ns(9_000) AS start_time)
             FROM span_data WHERE rowid = 0",
            [],
        )
        .unwrap();
        assert_eq!(spans(&progress), [1_000, 2_000, 3_000], "not committed yet");
        progress.committed(4, Some(9_000..=9_000));
        assert_eq!(spans(&progress), [1_000, 2_000, 3_000, 9_000]);
    }

    #[test]
    fn trace_ids_read_back_from_the_table_are_the_bytes_the_writer_stored() {
        let conn = store_with_spans(&[1_796_400_000_000_000_000]);
        // As the store opens it: the indexer's connection first, then the lock.
        let own = Indexer::connection(&conn).unwrap();
        conn.execute_batch("SET lock_configuration = true").unwrap();
        let batches = from_the_table(&own, &RefCell::default(), |new_spans| {
            new_spans.columns(0..=0, &["trace_id", "span_name"]).unwrap()
        });
        let trace_ids = batches[0].column(0);
        assert_eq!(
            trace_ids.data_type(),
            span_schema().field_with_name("trace_id").unwrap().data_type()
        );
        let expected: Vec<u8> = (1..=16).collect();
        assert_eq!(crate::summaries::trace_id_at(trace_ids, 0).as_slice(), expected);
    }

    #[test]
    fn the_tail_a_pass_has_not_indexed_comes_with_the_start_times_of_its_spans() {
        const PASS: Pass = Pass {
            name: "pass",
            source: "span_data",
            columns: &[],
            run: |_, _, hi| Ok(hi),
        };
        let progress = progress(&[99]);
        let tail = || progress.unindexed(&PASS).map(|tail| (tail.rowids, tail.starts));
        assert!(tail().is_none());
        progress.committed(200, Some(1_000..=2_000));
        progress.committed(300, Some(500..=600));
        assert_eq!(tail(), Some((100..=299, 500..=2_000)));
        // Past the first commit: its spans no longer widen the range.
        progress.watermark(&PASS).store(199, Ordering::Release);
        progress.committed(301, Some(3_000..=3_000));
        assert_eq!(tail(), Some((200..=300, 500..=3_000)));
        // Many small commits merge into fewer, wider ranges, which still cover every span.
        for rowid in 301..301 + 3 * RECENT_COMMITS as i64 {
            progress.committed(rowid + 1, Some(rowid * 10..=rowid * 10));
        }
        assert!(progress.recent_starts().len() <= RECENT_COMMITS);
        let last = 300 + 3 * RECENT_COMMITS as i64;
        assert_eq!(tail(), Some((200..=last, 500..=last * 10)));
    }

    #[test]
    fn only_spans_committed_since_the_store_opened_count_as_behind() {
        let mut opened = Arc::into_inner(progress(&[99, 40])).unwrap();
        opened.opened_with = 100;
        opened.committed(1_000, None);
        assert_eq!(
            opened.new_spans_behind(),
            900,
            "the pass at 40 fills in older spans"
        );
        opened.watermarks[1].1.store(500, Ordering::Release);
        assert_eq!(opened.new_spans_behind(), 900);
        opened.watermarks[0].1.store(800, Ordering::Release);
        assert_eq!(opened.new_spans_behind(), 499, "both passes are past the opening");
        opened.watermarks[1].1.store(10, Ordering::Release);
        opened.watermarks[0].1.store(10, Ordering::Release);
        assert_eq!(opened.new_spans_behind(), 0, "nothing indexes new spans yet");
    }

    #[test]
    fn an_indexer_too_far_behind_holds_writes_back_only_while_it_works() {
        let progress = progress(&[-1]);
        progress.committed(MAX_LAG_ROWS, None);
        assert_eq!(progress.too_far_behind(), None);
        progress.committed(MAX_LAG_ROWS + 1, None);
        assert_eq!(progress.too_far_behind(), Some(MAX_LAG_ROWS + 1));
        progress.failing.store(true, Ordering::Release);
        assert_eq!(progress.too_far_behind(), None);
    }

    #[test]
    fn spans_are_kept_for_the_indexer_only_near_its_slowest_pass() {
        let (inbox, _inbound) = Indexer::inbox(&[], progress(&[5_000, 1_000]));
        assert!(inbox.wants(1_001));
        assert!(inbox.wants(1_000 + MAX_HELD_ROWS));
        assert!(!inbox.wants(1_001 + MAX_HELD_ROWS));
    }

    #[test]
    fn an_indexer_that_falls_behind_is_sent_no_more_than_it_may_hold() {
        let (inbox, inbound) = Indexer::inbox(&[], progress(&[]));
        let rows = MAX_HELD_ROWS / 4;
        let commit = |n: i64| inbox.committed(spans(n * rows, rows));
        let sent = || -> Vec<i64> {
            let batches = inbound.receiver.try_iter().map(|message| match message {
                Message::Committed(spans) => spans.first_rowid / rows,
                Message::Stop => unreachable!("nothing stops the indexer here"),
            });
            batches.collect()
        };
        (0..6).for_each(commit);
        assert_eq!(
            sent(),
            [0, 1, 2, 3],
            "the fifth and sixth batch are read back later"
        );
        // The indexer took them: room again.
        inbound.waiting.store(0, Ordering::Release);
        commit(6);
        assert_eq!(sent(), [6]);
    }
}
