//! What a run measured: the [`Report`] (serializable; its JSON form is the
//! `--json` file, schema in the README) and its wrk-like text form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Arrivals, ConnMode, Protocol};
use crate::Error;

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Failed requests by class. A request that failed in transport (connect,
/// read, write, timeout) got no response; one with a bad status or a body
/// that failed verification did, and is also counted in `requests`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// A connection could not be opened (refused, reset, timed out).
    pub connect: u64,
    /// The connection failed or closed while a response was due, or the
    /// response could not be parsed.
    pub read: u64,
    /// Writing the request failed.
    pub write: u64,
    /// No response within `--timeout`.
    pub timeout: u64,
    /// A response with another status than the route's.
    pub status: u64,
    /// A response whose body failed verification.
    pub verify: u64,
}

impl Errors {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status + self.verify
    }

    /// Errors in which no response arrived.
    pub fn transport(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    pub(crate) fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        self.verify += o.verify;
    }
}

/// A latency histogram: a percentile summary in microseconds and the whole
/// histogram, V2-deflate serialized and base64 encoded (the form
/// HdrHistogram's interval logs use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Standard deviation, µs.
    pub stdev_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest value, µs.
    pub max_us: u64,
    /// The histogram: base64 of its V2-deflate serialization.
    pub hdr: String,
}

impl HistogramSummary {
    /// Summarizes and serializes `h`.
    pub fn new(h: &Histogram<u64>) -> HistogramSummary {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut bytes)
            .expect("serializing a histogram into memory cannot fail");
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        HistogramSummary {
            count: h.len(),
            min_us: if empty { 0 } else { h.min() },
            mean_us: if empty { 0.0 } else { h.mean() },
            stdev_us: if empty { 0.0 } else { h.stdev() },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0 } else { h.max() },
            hdr: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The histogram itself, decoded from [`HistogramSummary::hdr`].
    pub fn histogram(&self) -> Result<Histogram<u64>, Error> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.hdr)
            .map_err(|e| Error::Report(format!("histogram is not base64: {e}")))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| Error::Report(format!("histogram does not deserialize: {e:?}")))
    }
}

/// How an open-loop run kept to its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLoop {
    /// The rate asked (`-R`), requests/s.
    pub asked_rps: f64,
    /// The rate of responses received, requests/s.
    pub achieved_rps: f64,
    /// How late after its intended time a request was sent, at worst, ms.
    pub max_lag_ms: f64,
    /// The same on average, ms.
    pub mean_lag_ms: f64,
    /// Requests due before the end that were never sent (no free connection).
    pub unsent: u64,
    /// The schedule: `fixed` or `poisson`.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Each measured request's actual send against its intended time, µs
    /// (waiting for a free connection included).
    #[serde(default)]
    pub send_lag: Option<HistogramSummary>,
    /// The part of the send lag when a connection was already free: the
    /// generator's own delay, µs. Large values mean the generator, not the
    /// server, fell behind.
    #[serde(default)]
    pub generator_lag: Option<HistogramSummary>,
}

/// Extra connections held open, silent, during the run (`--idle`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idle {
    /// Connections asked for.
    pub asked: u64,
    /// Connections opened and held to the end.
    pub held: u64,
}

/// The load generator's own CPU time over the run (`getrusage(RUSAGE_SELF)`,
/// all its threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// User time, seconds.
    pub user_s: f64,
    /// System time, seconds.
    pub sys_s: f64,
    /// `user_s + sys_s` per request (answered or failed), µs.
    pub us_per_request: f64,
    /// `(user_s + sys_s)` / wall-clock time / threads: near 1.0 means the
    /// generator itself was the bottleneck.
    pub utilization: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The target, as given.
    pub target: String,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// The route mix, `target:weight` each.
    pub routes: Vec<String>,
    /// Threads used.
    pub threads: usize,
    /// Connections used.
    pub connections: usize,
    /// `keep-alive` or `new-conn`.
    pub conn_mode: ConnMode,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Warm-up before measuring, seconds.
    pub warmup_s: f64,
    /// Responses received during measurement (bad status and failed
    /// verification included).
    pub requests: u64,
    /// Measured time, seconds.
    pub duration_s: f64,
    /// `requests / duration_s`.
    pub rps: f64,
    /// Response bytes read (heads and bodies).
    pub bytes_read: u64,
    /// Errors by class.
    pub errors: Errors,
    /// Latency; in an open loop from each request's intended send time
    /// (corrected for coordinated omission).
    pub latency: HistogramSummary,
    /// Open loop only: latency from the actual send time (uncorrected).
    pub latency_uncorrected: Option<HistogramSummary>,
    /// Time to open a connection, measured connections only.
    pub connect_time: HistogramSummary,
    /// Connections opened during the run (warm-up included).
    pub connections_opened: u64,
    /// Open loop only: the schedule kept.
    pub open_loop: Option<OpenLoop>,
    /// Mean number of requests written and not yet answered over the
    /// measured time (a time integral): by Little's law it equals `rps` ×
    /// the mean latency from the actual send in a steady state.
    #[serde(default)]
    pub in_flight_mean: f64,
    /// `--idle` connections.
    pub idle: Idle,
    /// Responses per `X-Worker` value (fairness across a server's workers).
    pub workers: BTreeMap<String, u64>,
    /// The generator's own CPU time.
    pub cpu: Cpu,
    /// An agent of a distributed run (`--segment`, `--start-at`): its
    /// slice, its start and whether it kept up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::Agent>,
}

impl Report {
    /// The JSON form (the `--json` file).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The wrk-like text printed after a run; `table` adds the full
    /// percentile spectrum, `uncorrected` the uncorrected latency too.
    pub fn text(&self, table: bool, uncorrected: bool) -> String {
        let mut o = String::new();
        let lat = &self.latency;
        let _ = writeln!(o, "  Thread Stats   Avg      Stdev     Max   +/- Stdev");
        latency_row(&mut o, "Latency", lat);
        if uncorrected {
            if let Some(u) = &self.latency_uncorrected {
                latency_row(&mut o, "Uncorrected", u);
            }
        }
        let _ = writeln!(o, "  Latency Distribution");
        for (p, v) in [
            ("50", lat.p50_us),
            ("90", lat.p90_us),
            ("99", lat.p99_us),
            ("99.9", lat.p999_us),
            ("100", lat.max_us),
        ] {
            let _ = writeln!(o, "  {:>6}% {:>9}", p, fmt_us(v as f64));
        }
        if uncorrected {
            if let Some(u) = &self.latency_uncorrected {
                let _ = writeln!(o, "  Uncorrected Latency Distribution");
                for (p, v) in [
                    ("50", u.p50_us),
                    ("90", u.p90_us),
                    ("99", u.p99_us),
                    ("99.9", u.p999_us),
                    ("100", u.max_us),
                ] {
                    let _ = writeln!(o, "  {:>6}% {:>9}", p, fmt_us(v as f64));
                }
            }
        }
        if table {
            match lat.histogram() {
                Ok(h) => spectrum(&mut o, "Detailed Percentile spectrum", &h),
                Err(e) => {
                    let _ = writeln!(o, "  (no percentile table: {e})");
                }
            }
            if uncorrected {
                if let Some(Ok(h)) = self.latency_uncorrected.as_ref().map(|u| u.histogram()) {
                    spectrum(&mut o, "Uncorrected Percentile spectrum", &h);
                }
            }
        }
        let c = &self.connect_time;
        let _ = writeln!(
            o,
            "  Connect {:>10} avg {:>9} p99 {:>9} max, {} connections opened",
            fmt_us(c.mean_us),
            fmt_us(c.p99_us as f64),
            fmt_us(c.max_us as f64),
            self.connections_opened
        );
        if self.idle.asked > 0 {
            let _ = writeln!(
                o,
                "  Idle connections held: {} of {}",
                self.idle.held, self.idle.asked
            );
        }
        let _ = writeln!(
            o,
            "  {} requests in {:.2}s, {} read",
            self.requests,
            self.duration_s,
            fmt_bytes(self.bytes_read as f64)
        );
        let e = &self.errors;
        if e.total() > 0 {
            let _ = writeln!(
                o,
                "  Errors: connect {}, read {}, write {}, timeout {}, status {}, verify {}",
                e.connect, e.read, e.write, e.timeout, e.status, e.verify
            );
        }
        if !self.workers.is_empty() {
            let total: u64 = self.workers.values().sum();
            let _ = write!(o, "  Workers ({}):", self.workers.len());
            for (w, n) in self.workers.iter().take(16) {
                let _ = write!(o, " {w} {:.1}%", *n as f64 * 100.0 / total as f64);
            }
            if self.workers.len() > 16 {
                let _ = write!(o, " …");
            }
            o.push('\n');
        }
        if let Some(a) = &self.agent {
            let seg = a
                .segment
                .map_or(String::new(), |s| format!("segment {s}, "));
            let state = if a.saturated {
                format!("SATURATED: {}", a.saturated_why)
            } else {
                "kept up".to_string()
            };
            let _ = writeln!(
                o,
                "  Agent on {}: {seg}started {:.3}ms after the agreed start, {state}",
                a.host, a.start_late_ms
            );
        }
        let _ = writeln!(o, "Requests/sec: {:>10.2}", self.rps);
        let _ = writeln!(
            o,
            "Transfer/sec: {:>10}",
            fmt_bytes(self.bytes_read as f64 / self.duration_s.max(1e-9))
        );
        if let Some(ol) = &self.open_loop {
            let _ = writeln!(
                o,
                "Open loop: asked {:.1} req/s, achieved {:.1} req/s; sending fell behind by up to {:.3}ms (mean {:.3}ms), {} due requests not sent",
                ol.asked_rps, ol.achieved_rps, ol.max_lag_ms, ol.mean_lag_ms, ol.unsent
            );
            if let (Some(s), Some(g)) = (&ol.send_lag, &ol.generator_lag) {
                let _ = writeln!(
                    o,
                    "Send lag ({} arrivals): p50 {}, p99 {}, p99.9 {}, max {}; the generator's own (a connection was free): p99 {}, max {}",
                    ol.arrivals.name(),
                    fmt_us(s.p50_us as f64),
                    fmt_us(s.p99_us as f64),
                    fmt_us(s.p999_us as f64),
                    fmt_us(s.max_us as f64),
                    fmt_us(g.p99_us as f64),
                    fmt_us(g.max_us as f64),
                );
            }
        }
        if self.in_flight_mean > 0.0 {
            let _ = writeln!(
                o,
                "In flight: {:.2} requests on average over {} connections",
                self.in_flight_mean, self.connections
            );
        }
        let _ = writeln!(
            o,
            "Generator CPU: {:.2}s user + {:.2}s sys, {:.2} us/request, {:.0}% of its threads",
            self.cpu.user_s,
            self.cpu.sys_s,
            self.cpu.us_per_request,
            self.cpu.utilization * 100.0
        );
        o
    }
}

fn latency_row(o: &mut String, name: &str, h: &HistogramSummary) {
    // wrk's "+/- Stdev": the share of values within one deviation of the mean.
    let within = h
        .histogram()
        .ok()
        .filter(|hist| !hist.is_empty())
        .map(|hist| {
            let lo = (h.mean_us - h.stdev_us).max(0.0) as u64;
            let hi = (h.mean_us + h.stdev_us) as u64;
            let n: u64 = hist
                .iter_recorded()
                .filter(|v| (lo..=hi).contains(&v.value_iterated_to()))
                .map(|v| v.count_at_value())
                .sum();
            n as f64 * 100.0 / hist.len() as f64
        })
        .unwrap_or(0.0);
    let _ = writeln!(
        o,
        "    {:<11}{:>9} {:>9} {:>9} {:>9.2}%",
        name,
        fmt_us(h.mean_us),
        fmt_us(h.stdev_us),
        fmt_us(h.max_us as f64),
        within
    );
}

/// The full percentile table, as wrk2 prints it (values in ms).
fn spectrum(o: &mut String, title: &str, h: &Histogram<u64>) {
    let _ = writeln!(o, "\n  {title}:");
    let _ = writeln!(
        o,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        let _ = writeln!(
            o,
            "{:>12.3} {:>14.6} {:>10} {}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inv
        );
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        o,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    o.push('\n');
}

/// Microseconds as wrk prints times: `812.00us`, `1.20ms`, `2.50s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trip() {
        let mut h = crate::engine::new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = HistogramSummary::new(&h);
        assert_eq!((s.count, s.min_us, s.max_us), (1000, 1, 1000));
        assert!((499..=501).contains(&s.p50_us));
        assert_eq!(s.histogram().unwrap(), h);
        let empty = HistogramSummary::new(&crate::engine::new_histogram());
        assert_eq!((empty.count, empty.p99_us), (0, 0));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_us(812.0), "812.00us");
        assert_eq!(fmt_us(1200.0), "1.20ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(fmt_bytes(2048.0), "2.00KB");
    }
}
