//! Merging the reports of several load generator agents into one: the
//! histograms are **added** (every recorded latency counted once, as if
//! one generator had recorded them all), never averaged percentiles;
//! counts, errors, rates and CPU are summed. `iomodels merge` runs it on
//! reports made by hand (a Kubernetes Indexed Job, say); `iomodels run
//! --agents` on the reports it collected over SSH.
//!
//! A merge refuses what would make its figures wrong: an agent that says
//! it was saturated (its latencies measure itself), segments that do not
//! add up to one load (a slice missing or given twice), and reports whose
//! histograms do not decode.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use loadgen::{HistogramSummary, OpenLoop, Report};
use serde::{Deserialize, Serialize};

/// One agent's line in a merged result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentLine {
    /// Where it ran (`ssh://host`, or the report's file name).
    pub name: String,
    /// Its segment, `K/N`, if it ran one.
    pub segment: Option<String>,
    /// Responses it measured.
    pub requests: u64,
    /// Its rate, requests/s.
    pub rps: f64,
    /// Its p99, µs.
    pub p99_us: u64,
    /// Its own CPU share of its threads' time.
    pub cpu_utilization: f64,
    /// How late it began after the agreed start, ms.
    pub start_late_ms: Option<f64>,
    /// It said it could not keep up.
    pub saturated: bool,
}

/// The result of a distributed run: the merged report and each agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The agents' reports added together.
    pub merged: Report,
    /// One line per agent, in the order given.
    pub agents: Vec<AgentLine>,
}

fn decode(h: &HistogramSummary, what: &str, name: &str) -> anyhow::Result<Histogram<u64>> {
    h.histogram()
        .map_err(|e| anyhow::anyhow!("{name}: its {what} histogram: {e}"))
}

fn add(
    into: &mut Option<Histogram<u64>>,
    h: &HistogramSummary,
    what: &str,
    name: &str,
) -> anyhow::Result<()> {
    let h = decode(h, what, name)?;
    match into {
        Some(i) => i
            .add(&h)
            .map_err(|e| anyhow::anyhow!("{name}: adding its {what} histogram: {e:?}"))?,
        None => *into = Some(h),
    }
    Ok(())
}

/// Merges `(name, report)` pairs. Fails, naming the agent, on a saturated
/// agent or segments that do not make one load.
pub fn merge(reports: &[(String, Report)]) -> anyhow::Result<Merged> {
    let Some((_, first)) = reports.first() else {
        anyhow::bail!("nothing to merge");
    };
    check_segments(reports)?;
    let saturated: Vec<String> = reports
        .iter()
        .filter_map(|(n, r)| {
            let a = r.agent.as_ref().filter(|a| a.saturated)?;
            Some(format!("{n} ({})", a.saturated_why))
        })
        .collect();
    if !saturated.is_empty() {
        anyhow::bail!(
            "agent(s) saturated, their latencies measure themselves: {}",
            saturated.join("; ")
        );
    }
    let mut m = first.clone();
    m.agent = None;
    let (mut lat, mut unc, mut conn, mut lag, mut glag) = (None, None, None, None, None);
    let mut cpu_util_max: f64 = 0.0;
    let mut lines = Vec::new();
    let (mut lag_sum_ms, mut lag_n) = (0.0, 0u64);
    for (i, (name, r)) in reports.iter().enumerate() {
        add(&mut lat, &r.latency, "latency", name)?;
        add(&mut conn, &r.connect_time, "connect", name)?;
        if let Some(u) = &r.latency_uncorrected {
            add(&mut unc, u, "uncorrected latency", name)?;
        }
        if let Some(ol) = &r.open_loop {
            if let Some(s) = &ol.send_lag {
                add(&mut lag, s, "send lag", name)?;
                lag_sum_ms += ol.mean_lag_ms * s.count as f64;
                lag_n += s.count;
            }
            if let Some(g) = &ol.generator_lag {
                add(&mut glag, g, "generator lag", name)?;
            }
        }
        cpu_util_max = cpu_util_max.max(r.cpu.utilization);
        lines.push(AgentLine {
            name: name.clone(),
            segment: r
                .agent
                .as_ref()
                .and_then(|a| a.segment)
                .map(|s| s.to_string()),
            requests: r.requests,
            rps: r.rps,
            p99_us: r.latency.p99_us,
            cpu_utilization: r.cpu.utilization,
            start_late_ms: r.agent.as_ref().map(|a| a.start_late_ms),
            saturated: false,
        });
        if i == 0 {
            continue;
        }
        if r.open_loop.is_some() != m.open_loop.is_some() {
            anyhow::bail!("{name}: an open loop merged with a closed loop");
        }
        m.threads += r.threads;
        m.connections += r.connections;
        m.requests += r.requests;
        m.duration_s = m.duration_s.max(r.duration_s);
        m.rps += r.rps;
        m.bytes_read += r.bytes_read;
        add_errors(&mut m.errors, &r.errors);
        m.connections_opened += r.connections_opened;
        m.in_flight_mean += r.in_flight_mean;
        m.idle.asked += r.idle.asked;
        m.idle.held += r.idle.held;
        for (w, n) in &r.workers {
            *m.workers.entry(w.clone()).or_default() += n;
        }
        m.cpu.user_s += r.cpu.user_s;
        m.cpu.sys_s += r.cpu.sys_s;
        if let (Some(a), Some(b)) = (m.open_loop.as_mut(), r.open_loop.as_ref()) {
            a.asked_rps += b.asked_rps;
            a.achieved_rps += b.achieved_rps;
            a.max_lag_ms = a.max_lag_ms.max(b.max_lag_ms);
            a.unsent += b.unsent;
        }
    }
    let summary = |h: Option<Histogram<u64>>| h.map(|h| HistogramSummary::new(&h));
    if let Some(l) = summary(lat) {
        m.latency = l;
    }
    if let Some(c) = summary(conn) {
        m.connect_time = c;
    }
    m.latency_uncorrected = summary(unc);
    if let Some(ol) = m.open_loop.as_mut() {
        *ol = OpenLoop {
            mean_lag_ms: if lag_n == 0 {
                0.0
            } else {
                lag_sum_ms / lag_n as f64
            },
            send_lag: summary(lag),
            generator_lag: summary(glag),
            ..ol.clone()
        };
    }
    let attempts = m.requests + m.errors.transport();
    m.cpu.us_per_request = if attempts == 0 {
        0.0
    } else {
        (m.cpu.user_s + m.cpu.sys_s) * 1e6 / attempts as f64
    };
    // The busiest agent's share: the one that would set the pace.
    m.cpu.utilization = cpu_util_max;
    Ok(Merged {
        merged: m,
        agents: lines,
    })
}

fn add_errors(a: &mut loadgen::Errors, b: &loadgen::Errors) {
    a.connect += b.connect;
    a.read += b.read;
    a.write += b.write;
    a.timeout += b.timeout;
    a.status += b.status;
    a.verify += b.verify;
}

/// Segments, when given, must be 0..N once each with one N.
fn check_segments(reports: &[(String, Report)]) -> anyhow::Result<()> {
    let segs: Vec<(&String, loadgen::Segment)> = reports
        .iter()
        .filter_map(|(n, r)| Some((n, r.agent.as_ref()?.segment?)))
        .collect();
    if segs.is_empty() {
        return Ok(());
    }
    if segs.len() != reports.len() {
        anyhow::bail!("some reports ran a --segment and some did not: they are not one load");
    }
    let n = segs[0].1.of;
    let mut seen = vec![None; n as usize];
    for (name, s) in &segs {
        if s.of != n {
            anyhow::bail!(
                "{name}: segment {s} of another split than {}/{n}",
                segs[0].1
            );
        }
        if let Some(other) = seen[s.index as usize].replace(*name) {
            anyhow::bail!("{name} and {other} both ran segment {s}");
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|&k| seen[k as usize].is_none())
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "segment(s) {} missing: the merged load is not the whole schedule",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Reads interval logs and adds their intervals by start time (whole
/// seconds since the earliest log's start): the merged log of agents that
/// began together. Returns (start of the earliest log, intervals).
pub fn merge_logs(logs: &[String]) -> anyhow::Result<(Duration, BTreeMap<u64, Histogram<u64>>)> {
    let mut parsed = Vec::new();
    for text in logs {
        let mut start = None;
        let mut intervals = Vec::new();
        for e in IntervalLogIterator::new(text.as_bytes()) {
            match e.map_err(|e| anyhow::anyhow!("interval log: {e:?}"))? {
                LogEntry::StartTime(t) => start = Some(t),
                LogEntry::BaseTime(t) => start = start.or(Some(t)),
                LogEntry::Interval(i) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(i.encoded_histogram())
                        .map_err(|e| anyhow::anyhow!("interval log: {e}"))?;
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut bytes.as_slice())
                        .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
                    intervals.push((i.start_timestamp(), h));
                }
            }
        }
        parsed.push((start.unwrap_or_default(), intervals));
    }
    let base = parsed.iter().map(|p| p.0).min().unwrap_or_default();
    let mut out: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for (start, intervals) in parsed {
        for (ts, h) in intervals {
            let at = (start + ts).saturating_sub(base).as_secs_f64().round() as u64;
            match out.get_mut(&at) {
                Some(m) => m
                    .add(&h)
                    .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?,
                None => {
                    out.insert(at, h);
                }
            }
        }
    }
    Ok((base, out))
}

/// Writes merged intervals as an HdrHistogram interval log.
pub fn write_log(
    path: &Path,
    base: Duration,
    intervals: &BTreeMap<u64, Histogram<u64>>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = Vec::new();
    writeln!(
        out,
        "#[Merged by iomodels from agents' logs; values in microseconds]"
    )?;
    writeln!(out, "#[Histogram log format version 1.3]")?;
    writeln!(
        out,
        "#[StartTime: {:.3} (seconds since epoch)]",
        base.as_secs_f64()
    )?;
    writeln!(
        out,
        "#[BaseTime: {:.3} (seconds since epoch)]",
        base.as_secs_f64()
    )?;
    writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new().begin_log_with(&mut out, &mut ser)?;
        for (i, h) in intervals {
            w.write_histogram(h, Duration::from_secs(*i), Duration::from_secs(1), None)
                .map_err(|e| anyhow::anyhow!("writing the merged log: {e:?}"))?;
        }
    }
    std::fs::write(path, out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The table printed after a distributed run or `iomodels merge`.
pub fn table(m: &Merged) -> String {
    let mut s = String::from(
        "| agent | segment | requests | req/s | p99 | agent CPU | start late |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for a in &m.agents {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {:.0}% | {} |\n",
            a.name,
            a.segment.as_deref().unwrap_or("-"),
            a.requests,
            a.rps,
            us(a.p99_us),
            a.cpu_utilization * 100.0,
            a.start_late_ms
                .map_or("-".to_string(), |l| format!("{l:.3} ms"))
        ));
    }
    let r = &m.merged;
    let asked = r
        .open_loop
        .as_ref()
        .map_or(String::new(), |o| format!(" (asked {:.1})", o.asked_rps));
    s.push_str(&format!(
        "\nmerged: {} requests, {:.1} req/s{asked}, errors {}; latency p50 {}, p99 {}, p99.9 {}, max {} (histograms added, {} values)\n",
        r.requests,
        r.rps,
        r.errors.total(),
        us(r.latency.p50_us),
        us(r.latency.p99_us),
        us(r.latency.p999_us),
        us(r.latency.max_us),
        r.latency.count
    ));
    s
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1e3)
    } else {
        format!("{v}us")
    }
}
