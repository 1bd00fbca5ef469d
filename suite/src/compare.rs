//! `iomodels compare BASE NEW`: the regression gate.
//!
//! The rule (suite/README.md): figures are medians over repetitions. Gated
//! at `--threshold`: each run's **server CPU µs per request** (lower is
//! better), the steadiest figure on a shared machine. Gated at twice the
//! threshold: its **requests/s as a ratio to epoll-server's** in the same
//! result set (higher is better) — it cancels a uniformly slower machine
//! but still moves when a neighbour's load comes and goes between runs.
//! Raw requests/s and p99 latency are informational (shown, never failing). Runs with fewer
//! than [`MIN_REQUESTS`] requests on either side are informational too:
//! too few to measure a per-request cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::results::Results;
use crate::summary::{self, Row};

/// Below this many requests a run's figures are informational.
pub const MIN_REQUESTS: f64 = 1000.0;

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Run key.
    pub key: String,
    /// Metric name.
    pub metric: &'static str,
    /// Base value.
    pub base: f64,
    /// New value.
    pub new: f64,
    /// Relative change, new/base − 1.
    pub change: f64,
    /// Whether it counts toward the gate.
    pub gated: bool,
    /// The allowed worsening for this figure (when gated).
    pub allowed: f64,
    /// Worse than the threshold (and gated).
    pub regressed: bool,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Every figure compared.
    pub changes: Vec<Change>,
    /// Keys only in the new set.
    pub only_new: Vec<String>,
    /// How many keys only the base has (a shorter matrix ran).
    pub only_base: usize,
    /// Threshold as a fraction.
    pub threshold: f64,
}

impl Comparison {
    /// Any gated figure regressed.
    pub fn failed(&self) -> bool {
        self.changes.iter().any(|c| c.regressed)
    }
}

/// Parses `10%` or `0.1`.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("bad threshold {s:?}: expected e.g. 10% or 0.1"))?;
    if !(0.0..10.0).contains(&v) {
        return Err(format!("threshold {s:?} out of range"));
    }
    Ok(v)
}

/// Compares two result sets.
pub fn compare(base: &Results, new: &Results, threshold: f64) -> Comparison {
    let b: BTreeMap<String, Row> = summary::rows(base)
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let n: BTreeMap<String, Row> = summary::rows(new)
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut changes = Vec::new();
    let mut only_new = Vec::new();
    for (k, nr) in &n {
        let Some(br) = b.get(k) else {
            only_new.push(k.clone());
            continue;
        };
        if br.reps == 0 || nr.reps == 0 {
            continue;
        }
        let enough = br.requests >= MIN_REQUESTS && nr.requests >= MIN_REQUESTS;
        // (metric, base, new, higher is better, gated, allowed worsening)
        let mut figs: Vec<(&'static str, f64, f64, bool, bool, f64)> = vec![
            (
                "cpu_us_per_request",
                br.cpu_us,
                nr.cpu_us,
                false,
                enough,
                threshold,
            ),
            ("requests_per_s", br.rps, nr.rps, true, false, threshold),
            ("p99_us", br.p99_us, nr.p99_us, false, false, threshold),
        ];
        if let (Some(x), Some(y)) = (br.ratio_to_epoll, nr.ratio_to_epoll) {
            if br.model != "epoll" {
                figs.push(("rps_ratio_to_epoll", x, y, true, enough, 2.0 * threshold));
            }
        }
        for (metric, bv, nv, higher_better, gated, allowed) in figs {
            if bv <= 0.0 {
                continue;
            }
            let change = nv / bv - 1.0;
            let worse = if higher_better { -change } else { change };
            changes.push(Change {
                key: k.clone(),
                metric,
                base: bv,
                new: nv,
                change,
                gated,
                allowed,
                regressed: gated && worse > allowed,
            });
        }
    }
    let only_base = b.keys().filter(|k| !n.contains_key(*k)).count();
    Comparison {
        changes,
        only_new,
        only_base,
        threshold,
    }
}

/// The comparison as Markdown: regressions first, then the rest.
pub fn markdown(c: &Comparison) -> String {
    let mut s = format!(
        "Gated: server CPU µs/request at {:.0} %, requests/s relative to epoll-server at {:.0} %; raw requests/s and p99 are informational.\n\n\
         | run | metric | base | new | change | verdict |\n|---|---|---:|---:|---:|---|\n",
        c.threshold * 100.0,
        c.threshold * 200.0
    );
    let mut sorted: Vec<&Change> = c.changes.iter().collect();
    sorted.sort_by_key(|x| (!x.regressed, !x.gated));
    for ch in sorted {
        let verdict = match (ch.regressed, ch.gated) {
            (true, _) => "**REGRESSED**",
            (false, true) => "ok",
            (false, false) => "info",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:+.1}% | {verdict} |",
            ch.key,
            ch.metric,
            ch.base,
            ch.new,
            ch.change * 100.0
        );
    }
    if !c.only_new.is_empty() {
        let _ = writeln!(
            s,
            "\nNot in the base (not compared): {}.",
            c.only_new.join(", ")
        );
    }
    if c.only_base > 0 {
        let _ = writeln!(
            s,
            "\n{} run(s) of the base were not run this time.",
            c.only_base
        );
    }
    let n = c.changes.iter().filter(|x| x.regressed).count();
    let _ = writeln!(
        s,
        "\n{}",
        if n == 0 {
            "No regression.".to_string()
        } else {
            format!("{n} gated figure(s) regressed.")
        }
    );
    s
}

/// Bencher Metric Format: `{ "model/scenario/proto": { measure: {value} } }`.
pub fn bmf(r: &Results) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for row in summary::rows(r).into_iter().filter(|r| r.reps > 0) {
        let mut v = json!({
            "throughput": {"value": row.rps},
            "cpu-us-per-request": {"value": row.cpu_us},
            "latency-p99-us": {"value": row.p99_us},
        });
        if let Some(x) = row.ratio_to_epoll {
            v["rps-ratio-to-epoll"] = json!({"value": x});
        }
        m.insert(row.key, v);
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("10%"), Ok(0.1));
        assert_eq!(parse_threshold("0.25"), Ok(0.25));
        assert!(parse_threshold("ten").is_err());
        assert!(parse_threshold("-5%").is_err());
    }
}
