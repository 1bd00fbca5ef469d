//! One row per (model, scenario, protocol, idle level): the median of its
//! repetitions. The table, the reports and `compare` all read these rows.

use std::collections::BTreeMap;

use crate::results::{Results, RunRecord};
use crate::scenarios::Scenario;

/// The median figures of one run's repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `model/scenario/protocol[/idle=N]`.
    pub key: String,
    /// Model.
    pub model: String,
    /// A peer (a real server), not a model: drawn in a style of its own.
    pub peer: bool,
    /// Scenario.
    pub scenario: Scenario,
    /// Protocol.
    pub protocol: loadgen::Protocol,
    /// Idle connections held.
    pub idle: usize,
    /// Active connections.
    pub connections: usize,
    /// New connection per request.
    pub new_conn: bool,
    /// Repetitions with a report.
    pub reps: usize,
    /// Median requests (per repetition).
    pub requests: f64,
    /// Median requests/s, counting verified responses only (a refusal
    /// such as 503, or a wrong body, is an error, not throughput).
    pub rps: f64,
    /// Median p50, p99, p99.9 and max latency, µs.
    pub p50_us: f64,
    /// p99.
    pub p99_us: f64,
    /// p99.9.
    pub p999_us: f64,
    /// max.
    pub max_us: f64,
    /// Median errors of all classes.
    pub errors: f64,
    /// Median server CPU µs per request: user, system, total.
    pub user_us: f64,
    /// System.
    pub sys_us: f64,
    /// User + system.
    pub cpu_us: f64,
    /// Median context switches per request (every thread and child, exited
    /// ones included, when counted by perf; else the live threads' sum).
    pub csw: f64,
    /// Whether every repetition's context switches were counted exactly.
    pub csw_exact: bool,
    /// Median read + write system calls per request (`/proc/PID/io`).
    pub rw_calls: Option<f64>,
    /// Largest cgroup memory peak, KiB.
    pub cgroup_peak_kib: Option<u64>,
    /// Some repetition's CPU came from /proc clock ticks (coarse).
    pub cpu_ticks: bool,
    /// Smallest and largest requests/s of the repetitions.
    pub rps_range: (f64, f64),
    /// Smallest and largest CPU µs per request.
    pub cpu_range: (f64, f64),
    /// Smallest and largest context switches per request.
    pub csw_range: (f64, f64),
    /// Smallest and largest read + write calls per request.
    pub rw_range: Option<(f64, f64)>,
    /// Smallest and largest ratio to epoll-server (each repetition against
    /// epoll-server's run of the same round).
    pub ratio_range: Option<(f64, f64)>,
    /// The A/A copy of a model (same model run again in the same rounds,
    /// to measure the run's noise floor).
    pub aa: bool,
    /// The base copy (`--base-bins`), run beside the new one.
    pub base: bool,
    /// Largest peak RSS and PSS, KiB.
    pub rss_kib: u64,
    /// PSS.
    pub pss_kib: u64,
    /// Processes and threads (largest).
    pub processes: u64,
    /// Threads.
    pub threads: u64,
    /// Median generator CPU share of its core.
    pub generator: f64,
    /// Any repetition was generator-limited.
    pub generator_limited: bool,
    /// Why the run was skipped or failed.
    pub note: Option<String>,
    /// This row's rps over epoll-server's in the same result set (same
    /// scenario, protocol and idle level).
    pub ratio_to_epoll: Option<f64>,
}

/// The median of `v` (0 when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest and largest of `v` ((0, 0) when empty).
pub fn range(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The spread of `range` around `median`, as ± a fraction (half the
/// range over the median).
pub fn spread(range: (f64, f64), median: f64) -> f64 {
    if median > 0.0 {
        (range.1 - range.0) / 2.0 / median
    } else {
        0.0
    }
}

/// Responses per second that had the route's status and body.
pub fn good_rps(r: &loadgen::Report) -> f64 {
    let bad = r.errors.status + r.errors.verify;
    if r.requests == 0 {
        0.0
    } else {
        r.rps * r.requests.saturating_sub(bad) as f64 / r.requests as f64
    }
}

/// Groups `results` into rows, in the order runs first appear.
pub fn rows(results: &Results) -> Vec<Row> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for r in &results.runs {
        let k = r.key();
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(r);
    }
    // epoll-server's requests/s per (scenario, protocol, idle, round): each
    // repetition's ratio is taken against the epoll run of its own round,
    // which shared its neighbours' noise.
    let epoll_runs: BTreeMap<(Scenario, &'static str, usize, u32), f64> = results
        .runs
        .iter()
        .filter(|r| r.model == "epoll" && !r.aa && !r.base)
        .filter_map(|r| {
            let rps = good_rps(r.report.as_ref()?);
            (rps > 0.0).then_some(((r.scenario, r.protocol.name(), r.load.idle, r.rep), rps))
        })
        .collect();
    let mut out: Vec<Row> = order
        .iter()
        .map(|k| {
            let g = &groups[k];
            let first = g[0];
            let reps: Vec<(&RunRecord, &loadgen::Report, &crate::procfs::Cost)> = g
                .iter()
                .filter_map(|r| Some((*r, r.report.as_ref()?, r.server.as_ref()?)))
                .collect();
            let all = |f: &dyn Fn(&loadgen::Report, &crate::procfs::Cost) -> f64| -> Vec<f64> {
                reps.iter().map(|(_, r, c)| f(r, c)).collect()
            };
            let med = |f: &dyn Fn(&loadgen::Report, &crate::procfs::Cost) -> f64| median(all(f));
            let note = g
                .iter()
                .find_map(|r| r.skipped.clone().or_else(|| r.error.clone()));
            let ratios: Vec<f64> = reps
                .iter()
                .filter_map(|(run, r, _)| {
                    let e = epoll_runs.get(&(
                        run.scenario,
                        run.protocol.name(),
                        run.load.idle,
                        run.rep,
                    ))?;
                    Some(good_rps(r) / e)
                })
                .collect();
            let rw: Vec<f64> = reps
                .iter()
                .filter_map(|(_, _, c)| c.syscalls_rw())
                .collect();
            let rps_all = all(&|r, _| good_rps(r));
            let cpu_all = all(&|_, c| c.cpu_us_per_request);
            Row {
                key: k.clone(),
                model: first.model.clone(),
                peer: results.config.peers.contains(&first.model),
                scenario: first.scenario,
                protocol: first.protocol,
                idle: first.load.idle,
                connections: first.load.connections,
                new_conn: first.load.conn_mode == loadgen::ConnMode::NewConn,
                reps: reps.len(),
                requests: med(&|r, _| r.requests as f64),
                rps: median(rps_all.clone()),
                p50_us: med(&|r, _| r.latency.p50_us as f64),
                p99_us: med(&|r, _| r.latency.p99_us as f64),
                p999_us: med(&|r, _| r.latency.p999_us as f64),
                max_us: med(&|r, _| r.latency.max_us as f64),
                errors: med(&|r, _| r.errors.total() as f64),
                user_us: med(&|_, c| c.user_us_per_request),
                sys_us: med(&|_, c| c.sys_us_per_request),
                cpu_us: median(cpu_all.clone()),
                csw: med(&|_, c| c.csw()),
                csw_exact: !reps.is_empty()
                    && reps
                        .iter()
                        .all(|(_, _, c)| c.csw_source == Some(crate::accounting::CswSource::Perf)),
                rw_calls: (!rw.is_empty() && rw.len() == reps.len()).then(|| median(rw.clone())),
                cgroup_peak_kib: reps.iter().filter_map(|(_, _, c)| c.cgroup_peak_kib).max(),
                cpu_ticks: reps.iter().any(|(_, _, c)| c.cpu_source.is_ticks()),
                rps_range: range(&rps_all),
                cpu_range: range(&cpu_all),
                csw_range: range(&all(&|_, c| c.csw())),
                rw_range: (!rw.is_empty()).then(|| range(&rw)),
                ratio_range: None,
                aa: first.aa,
                base: first.base,
                rss_kib: reps
                    .iter()
                    .map(|(_, _, c)| c.peak_rss_kib)
                    .max()
                    .unwrap_or(0),
                pss_kib: reps.iter().map(|(_, _, c)| c.pss_kib).max().unwrap_or(0),
                processes: reps.iter().map(|(_, _, c)| c.processes).max().unwrap_or(0),
                threads: reps.iter().map(|(_, _, c)| c.threads).max().unwrap_or(0),
                generator: med(&|r, _| r.cpu.utilization),
                generator_limited: g.iter().any(|r| r.generator_limited),
                note,
                ratio_to_epoll: (!ratios.is_empty()).then(|| median(ratios.clone())),
            }
            .with_ratio_range(&ratios)
        })
        .collect();
    // Files without rounds shared with epoll (should not happen): fall back
    // to the ratio of medians.
    let epoll: BTreeMap<(Scenario, &'static str, usize), f64> = out
        .iter()
        .filter(|r| r.model == "epoll" && !r.aa && !r.base && r.reps > 0 && r.rps > 0.0)
        .map(|r| ((r.scenario, r.protocol.name(), r.idle), r.rps))
        .collect();
    for r in &mut out {
        if r.reps > 0 && r.ratio_to_epoll.is_none() {
            r.ratio_to_epoll = epoll
                .get(&(r.scenario, r.protocol.name(), r.idle))
                .map(|e| r.rps / e);
        }
    }
    out
}

impl Row {
    fn with_ratio_range(mut self, ratios: &[f64]) -> Row {
        if !ratios.is_empty() {
            self.ratio_range = Some(range(ratios));
        }
        self
    }
}

/// The merged latency histogram of a key's repetitions.
pub fn histogram(results: &Results, key: &str) -> Option<hdrhistogram::Histogram<u64>> {
    let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
    for r in results.runs.iter().filter(|r| r.key() == key) {
        let Some(h) = r
            .report
            .as_ref()
            .and_then(|rep| rep.latency.histogram().ok())
        else {
            continue;
        };
        match merged.as_mut() {
            Some(m) => {
                let _ = m.add(&h);
            }
            None => merged = Some(h),
        }
    }
    merged.filter(|h| !h.is_empty())
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_us(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1}ms", x / 1000.0)
    } else {
        format!("{x:.0}us")
    }
}

/// `x` with its spread (`±3%`) when there were several repetitions.
fn with_spread(x: String, range: (f64, f64), median: f64, reps: usize) -> String {
    if reps > 1 {
        format!("{x} ±{:.0}%", spread(range, median) * 100.0)
    } else {
        x
    }
}

/// The table as Markdown (the terminal prints the same text). A/A copies
/// are left out: [`aa_table`] shows them.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | scenario | proto | conns | req/s | ×epoll | p50 | p99 | errors | CPU µs/req (usr+sys) | csw/req | r+w calls/req | RSS MiB | PSS MiB | cgroup peak MiB | procs/thr | gen CPU |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows.iter().filter(|r| !r.aa && !r.base) {
        let scen = if r.scenario == Scenario::Idle {
            format!("idle {}", r.idle)
        } else {
            r.scenario.name().to_string()
        };
        let conns = format!("{}{}", r.connections, if r.new_conn { " new" } else { "" });
        // Peers (real servers) in italics.
        let model = if r.peer {
            format!("_{}_", r.model)
        } else {
            r.model.clone()
        };
        if r.reps == 0 {
            s.push_str(&format!(
                "| {model} | {scen} | {} | {conns} | – | | | | | | | | | | | | {} |\n",
                r.protocol.name(),
                r.note.as_deref().unwrap_or("no result").replace('|', "/")
            ));
            continue;
        }
        s.push_str(&format!(
            "| {model} | {scen} | {} | {conns} | {} | {} | {} | {} | {} | {} ({}+{}){} | {}{} | {} | {:.1} | {:.1} | {} | {}/{} | {:.0}%{} |\n",
            r.protocol.name(),
            with_spread(format!("{:.0}", r.rps), r.rps_range, r.rps, r.reps),
            match (r.ratio_to_epoll, r.ratio_range) {
                (Some(x), Some(rg)) => with_spread(format!("{x:.2}"), rg, x, r.reps),
                (Some(x), None) => format!("{x:.2}"),
                _ => String::new(),
            },
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.errors,
            with_spread(fmt_num(r.cpu_us), r.cpu_range, r.cpu_us, r.reps),
            fmt_num(r.user_us),
            fmt_num(r.sys_us),
            if r.cpu_ticks { " ticks" } else { "" },
            fmt_num(r.csw),
            if r.csw_exact { "" } else { " live" },
            r.rw_calls.map_or(String::new(), fmt_num),
            r.rss_kib as f64 / 1024.0,
            r.pss_kib as f64 / 1024.0,
            r.cgroup_peak_kib.map_or(String::new(), |k| format!("{:.1}", k as f64 / 1024.0)),
            r.processes,
            r.threads,
            r.generator * 100.0,
            if r.generator_limited { " GEN" } else { "" },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
