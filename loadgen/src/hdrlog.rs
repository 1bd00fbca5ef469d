//! The `--hdr-log` file: an HdrHistogram interval log with one histogram per
//! second of measurement, as Java's `HistogramLogWriter` writes them, so
//! HistogramLogAnalyzer and the hdrhistogram crate's `IntervalLogIterator`
//! read it.
//!
//! Threads send their per-second histograms here; an interval is written
//! once every thread has sent it, so the file grows during the run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Collects per-thread intervals and writes merged ones in order.
pub(crate) struct HdrLog {
    out: BufWriter<File>,
    threads: usize,
    /// Interval index → merged histogram and how many threads sent it.
    pending: BTreeMap<u64, (Histogram<u64>, usize)>,
    serializer: V2DeflateSerializer,
    /// Headers (StartTime, BaseTime) are written with the first interval.
    base: SystemTime,
    started: bool,
}

impl HdrLog {
    /// Creates the file; `base` is the wall-clock start of measurement,
    /// interval timestamps count from it.
    pub fn create(path: &Path, threads: usize, base: SystemTime) -> io::Result<HdrLog> {
        let out = BufWriter::new(File::create(path)?);
        Ok(HdrLog {
            out,
            threads,
            pending: BTreeMap::new(),
            serializer: V2DeflateSerializer::new(),
            base,
            started: false,
        })
    }

    /// One thread's histogram for interval `index`.
    pub fn add(&mut self, index: u64, hist: &Histogram<u64>) -> io::Result<()> {
        let entry = self
            .pending
            .entry(index)
            .or_insert_with(|| (crate::engine::new_histogram(), 0));
        entry.0.add(hist).map_err(io::Error::other)?;
        entry.1 += 1;
        // Write every interval all threads have sent, oldest first.
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().1 < self.threads {
                break;
            }
            let (i, (h, _)) = entry.remove_entry();
            self.write(i, &h, Duration::from_secs(1))?;
        }
        Ok(())
    }

    /// Writes what is left; the last interval lasts to `total` (the
    /// measured duration).
    pub fn finish(mut self, total: Duration) -> io::Result<()> {
        for (i, (h, _)) in std::mem::take(&mut self.pending) {
            let start = Duration::from_secs(i);
            let len = total.saturating_sub(start).min(Duration::from_secs(1));
            if h.is_empty() && len.is_zero() {
                continue;
            }
            self.write(i, &h, len.max(Duration::from_millis(1)))?;
        }
        if !self.started {
            self.header()?;
        }
        self.out.flush()
    }

    fn header(&mut self) -> io::Result<()> {
        self.started = true;
        // Written by hand: the crate's writer holds the file while it lives.
        writeln!(
            self.out,
            "#[Logged with loadgen {}; values in microseconds]",
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(self.out, "#[Histogram log format version 1.3]")?;
        let secs = self
            .base
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        writeln!(self.out, "#[StartTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(self.out, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(
            self.out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )
    }

    fn write(&mut self, index: u64, h: &Histogram<u64>, len: Duration) -> io::Result<()> {
        if !self.started {
            self.header()?;
        }
        // A builder without headers writes nothing of its own: the
        // headers above are ours, so a writer per interval is fine.
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        writer
            .write_histogram(h, Duration::from_secs(index), len, None)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }
}
