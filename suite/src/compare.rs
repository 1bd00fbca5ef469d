//! `iomodels compare BASE NEW`: the regression gate, made not to cry wolf
//! on a shared machine (suite/README.md, "The regression gate").
//!
//! * **Deterministic figures, gated at their own thresholds**: valgrind's
//!   instructions per request (`--instr-threshold`, 2 %), and the counted
//!   context switches and read+write system calls per request
//!   (`--count-threshold`, 5 %, and at least [`MIN_COUNT_CHANGE`] per
//!   request, [`MIN_CSW_CHANGE`] for context switches: 0.02 → 0.03
//!   switches per request is not a regression). Context switches of an
//!   event loop depend on timing (whether its wait found work already
//!   there), so they must also exceed their A/A floor.
//! * **Wall-clock figures, gated only beyond the noise**: server CPU µs per
//!   request and requests/s as a ratio to epoll-server's in the same round
//!   count only when the change is larger than both `--threshold` and the
//!   noise floor the A/A check measured in either result set. Without an
//!   A/A check in either set, or with tick-based CPU, they are informational.
//! * **The same run, when NEW ran base binaries beside its own**
//!   (`iomodels run --base-bins`): CPU per request, context switches and
//!   read+write calls are gated on those pairs — a busier machine changes
//!   all three for a whole run, and a pair shares it — and their
//!   cross-run figures are informational. Instructions stay cross-run.
//! * **Repetitions agree**: a gated figure regresses only when every
//!   repetition agrees — across sets, the new set's best repetition is
//!   worse than the base's worst (with `--repeat 3` on both sides; a single
//!   run is its own range); in one run, every round's pair is worse by
//!   more than the allowed change.
//! * **Informational**: raw requests/s and p99 latency, and every figure of
//!   a run with fewer than [`MIN_REQUESTS`] requests on either side.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::noise;
use crate::results::Results;
use crate::summary::{self, Row};

/// Below this many requests a run's figures are informational.
pub const MIN_REQUESTS: f64 = 1000.0;

/// A change of a counted figure (context switches, read+write calls) per
/// request smaller than this is never a regression, whatever its percentage.
pub const MIN_COUNT_CHANGE: f64 = 0.05;

/// The same for context switches: an event loop's switches per request
/// depend on how often its wait found nothing ready, and moved by up to
/// 0.053 per request between identical binaries side by side in one run
/// on a busy machine here (uring `hello` 0.337 against 0.390).
pub const MIN_CSW_CHANGE: f64 = 0.1;

/// The thresholds of the gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Wall-clock figures (CPU µs/request, ratio to epoll), beyond the noise floor too.
    pub wall: f64,
    /// Instructions per request.
    pub instructions: f64,
    /// Context switches and read+write calls per request.
    pub counts: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wall: 0.10,
            instructions: 0.02,
            counts: 0.05,
        }
    }
}

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
    /// Why a figure is informational, when it is not just by kind.
    pub note: Option<&'static str>,
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
    /// The thresholds.
    pub thresholds: Thresholds,
    /// The noise floor: (requests/s, CPU, context switches), the larger
    /// of the two sets' A/A floors; `None` without A/A data.
    pub noise: Option<(f64, f64, f64)>,
}

impl Comparison {
    /// Any gated figure regressed.
    pub fn failed(&self) -> bool {
        self.changes.iter().any(|c| c.regressed)
    }
}

/// How the repetitions of a figure must agree for a change to count.
enum Agree {
    /// One figure each side (instructions, informational figures).
    Single,
    /// Across sets: (smallest, largest) of the base's and the new set's.
    Ranges((f64, f64), (f64, f64)),
    /// In one run: how much worse the new binary was than its base
    /// neighbour in each round (new ÷ base − 1).
    Rounds(Vec<f64>),
}

impl Agree {
    fn of(ranges: Option<((f64, f64), (f64, f64))>) -> Agree {
        ranges.map_or(Agree::Single, |(b, n)| Agree::Ranges(b, n))
    }
}

/// A figure of each new run over its base copy's in the same round, minus
/// one, by the new run's key (`--base-bins` sets).
fn rounds_against_base(
    new: &Results,
    figure: fn(&crate::procfs::Cost) -> Option<f64>,
) -> BTreeMap<String, Vec<f64>> {
    let mut cpu: BTreeMap<(String, u32), (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in new.runs.iter().filter(|r| !r.aa) {
        let (Some(report), Some(server)) = (&r.report, &r.server) else {
            continue;
        };
        let Some(v) = figure(server).filter(|v| *v > 0.0) else {
            continue;
        };
        if (report.requests as f64) < MIN_REQUESTS {
            continue;
        }
        let key = r.key();
        let key = key.strip_suffix("/base").unwrap_or(&key).to_string();
        let slot = cpu.entry((key, r.rep)).or_default();
        *(if r.base { &mut slot.1 } else { &mut slot.0 }) = Some(v);
    }
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((key, _), pair) in cpu {
        if let (Some(n), Some(b)) = pair {
            out.entry(key).or_default().push(n / b - 1.0);
        }
    }
    out
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
pub fn compare(base: &Results, new: &Results, t: Thresholds) -> Comparison {
    let base_rows = summary::rows(base);
    let new_rows = summary::rows(new);
    let noise = {
        let floors: Vec<noise::NoiseFloor> = [noise::floor(&base_rows), noise::floor(&new_rows)]
            .into_iter()
            .flatten()
            .collect();
        (!floors.is_empty()).then(|| {
            (
                floors.iter().map(|f| f.rps).fold(0.0, f64::max),
                floors.iter().map(|f| f.cpu_us).fold(0.0, f64::max),
                floors.iter().map(|f| f.csw).fold(0.0, f64::max),
            )
        })
    };
    let b: BTreeMap<String, Row> = base_rows
        .into_iter()
        .filter(|r| !r.aa && !r.base)
        .map(|r| (r.key.clone(), r))
        .collect();
    let new_floor = noise::floor(&new_rows);
    let rounds = rounds_against_base(new, |c| Some(c.cpu_us_per_request));
    let csw_rounds = rounds_against_base(new, |c| Some(c.csw()));
    let rw_rounds = rounds_against_base(new, |c| c.syscalls_rw());
    // The new set's base copies (`--base-bins`), by their new row's key.
    let same_run: BTreeMap<String, Row> = new_rows
        .iter()
        .filter(|r| r.base)
        .filter_map(|r| Some((r.key.strip_suffix("/base")?.to_string(), r.clone())))
        .collect();
    let n: BTreeMap<String, Row> = new_rows
        .into_iter()
        .filter(|r| !r.aa && !r.base)
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut changes = Vec::new();
    let mut only_new = Vec::new();
    let mut push = |key: &str,
                    metric: &'static str,
                    (bv, nv): (f64, f64),
                    higher_better: bool,
                    gate: Result<f64, &'static str>,
                    min_abs: f64,
                    agree: Agree| {
        if bv <= 0.0 {
            return;
        }
        let change = nv / bv - 1.0;
        let worse = if higher_better { -change } else { change };
        let (gated, allowed, mut note) = match gate {
            Ok(a) => (true, a, None),
            Err(why) => (false, 0.0, Some(why).filter(|w| !w.is_empty())),
        };
        // A regression is a change every repetition agrees on.
        let apart = match agree {
            Agree::Single => true,
            // Across sets: the worst of the base's repetitions is still
            // better than the best of the new set's.
            Agree::Ranges((b_lo, b_hi), (n_lo, n_hi)) => {
                if higher_better {
                    n_hi < b_lo
                } else {
                    n_lo > b_hi
                }
            }
            // In one run: in every round, the new binary is worse than its
            // base neighbour by more than the allowed change.
            Agree::Rounds(ref worse_by) => worse_by.iter().all(|&w| w > allowed),
        };
        let beyond = gated && worse > allowed && (nv - bv).abs() > min_abs;
        if beyond && !apart {
            note = Some(match agree {
                Agree::Rounds(_) => "beyond the threshold, but not in every round",
                _ => "beyond the threshold, but the repetitions overlap",
            });
        }
        changes.push(Change {
            key: key.to_string(),
            metric,
            base: bv,
            new: nv,
            change,
            gated,
            allowed,
            regressed: beyond && apart,
            note,
        });
    };
    for (k, nr) in &n {
        let Some(br) = b.get(k) else {
            only_new.push(k.clone());
            continue;
        };
        if br.reps == 0 || nr.reps == 0 {
            continue;
        }
        let enough = br.requests >= MIN_REQUESTS && nr.requests >= MIN_REQUESTS;
        let few: Result<f64, &str> = Err("fewer than 1,000 requests");
        // Wall-clock figures: beyond the threshold and the noise floor.
        let wall = |floor: Option<f64>| -> Result<f64, &'static str> {
            match floor {
                _ if !enough => few,
                None => Err("no A/A noise floor in either set"),
                Some(f) => Ok(t.wall.max(f)),
            }
        };
        let cpu_gate = if br.cpu_ticks || nr.cpu_ticks {
            Err("tick-based CPU")
        } else if same_run.contains_key(k) {
            Err("gated in the same run, against the base binaries")
        } else {
            wall(noise.map(|x| x.1))
        };
        push(
            k,
            "cpu_us_per_request",
            (br.cpu_us, nr.cpu_us),
            false,
            cpu_gate,
            0.0,
            Agree::Ranges(br.cpu_range, nr.cpu_range),
        );
        if let (Some(x), Some(y)) = (br.ratio_to_epoll, nr.ratio_to_epoll) {
            if br.model != "epoll" {
                push(
                    k,
                    "rps_ratio_to_epoll",
                    (x, y),
                    true,
                    wall(noise.map(|x| x.0)),
                    0.0,
                    Agree::of(br.ratio_range.zip(nr.ratio_range)),
                );
            }
        }
        // Counted figures: a fixed threshold. Read+write calls repeat to a
        // tenth of a percent; context switches of an event loop depend on
        // whether its wait found work already there (timing), so they are
        // also allowed the A/A floor of context switches when there is one.
        let in_same_run = same_run.contains_key(k);
        let counted = |exact: bool, floor: f64| -> Result<f64, &'static str> {
            match () {
                _ if !enough => few,
                _ if in_same_run => Err("gated in the same run, against the base binaries"),
                _ if !exact => Err("not counted exactly in both sets"),
                _ => Ok(t.counts.max(floor)),
            }
        };
        push(
            k,
            "csw_per_request",
            (br.csw, nr.csw),
            false,
            counted(br.csw_exact && nr.csw_exact, noise.map_or(0.0, |x| x.2)),
            MIN_CSW_CHANGE,
            Agree::Ranges(br.csw_range, nr.csw_range),
        );
        if let (Some(x), Some(y)) = (br.rw_calls, nr.rw_calls) {
            push(
                k,
                "rw_calls_per_request",
                (x, y),
                false,
                counted(true, 0.0),
                MIN_COUNT_CHANGE,
                Agree::of(br.rw_range.zip(nr.rw_range)),
            );
        }
        push(
            k,
            "requests_per_s",
            (br.rps, nr.rps),
            true,
            Err(""),
            0.0,
            Agree::Single,
        );
        push(
            k,
            "p99_us",
            (br.p99_us, nr.p99_us),
            false,
            Err(""),
            0.0,
            Agree::Single,
        );
    }
    // The same-run A/B: each new row against its base copy, run beside it
    // in the same rounds, so that a busy neighbour slows both alike. CPU
    // per request is gated beyond the threshold and this run's own A/A
    // floor, in every round's pair; requests/s is informational.
    for (k, nr) in &n {
        let Some(br) = same_run.get(k).filter(|b| b.reps > 0 && nr.reps > 0) else {
            continue;
        };
        let gate = match new_floor.as_ref() {
            _ if br.requests < MIN_REQUESTS || nr.requests < MIN_REQUESTS => {
                Err("fewer than 1,000 requests")
            }
            _ if br.cpu_ticks || nr.cpu_ticks => Err("tick-based CPU"),
            None => Err("no A/A noise floor in the new set"),
            Some(f) => Ok(t.wall.max(f.cpu_us)),
        };
        push(
            k,
            "cpu_us_per_request_vs_base_same_run",
            (br.cpu_us, nr.cpu_us),
            false,
            gate,
            0.0,
            Agree::Rounds(rounds.get(k).cloned().unwrap_or_default()),
        );
        // Counted figures of an event loop depend on timing too (how much
        // one wait found), which a busier machine changes for the whole
        // run: with base copies they are gated here, pair by pair.
        let counted = |exact: bool, floor: f64| -> Result<f64, &'static str> {
            match () {
                _ if br.requests < MIN_REQUESTS || nr.requests < MIN_REQUESTS => {
                    Err("fewer than 1,000 requests")
                }
                _ if !exact => Err("not counted exactly on both sides"),
                _ => Ok(t.counts.max(floor)),
            }
        };
        push(
            k,
            "csw_per_request_vs_base_same_run",
            (br.csw, nr.csw),
            false,
            counted(
                br.csw_exact && nr.csw_exact,
                new_floor.as_ref().map_or(0.0, |f| f.csw),
            ),
            MIN_CSW_CHANGE,
            Agree::Rounds(csw_rounds.get(k).cloned().unwrap_or_default()),
        );
        if let (Some(x), Some(y)) = (br.rw_calls, nr.rw_calls) {
            push(
                k,
                "rw_calls_per_request_vs_base_same_run",
                (x, y),
                false,
                counted(true, 0.0),
                MIN_COUNT_CHANGE,
                Agree::Rounds(rw_rounds.get(k).cloned().unwrap_or_default()),
            );
        }
        push(
            k,
            "requests_per_s_vs_base_same_run",
            (br.rps, nr.rps),
            true,
            Err(""),
            0.0,
            Agree::Single,
        );
    }
    let mut only_base = b.keys().filter(|k| !n.contains_key(*k)).count();
    // Instructions per request (valgrind): gated at their own threshold.
    // A model whose repetitions spread (threads handing work to each
    // other) is allowed its spread on both sides on top of the threshold.
    let bc: BTreeMap<String, (f64, f64)> = base
        .cost
        .iter()
        .filter_map(|c| Some((c.key(), (c.per_request?, c.spread()))))
        .collect();
    for c in &new.cost {
        let Some(nv) = c.per_request else { continue };
        match bc.get(&c.key()) {
            Some(&(bv, bs)) => push(
                &c.key(),
                "instructions_per_request",
                (bv, nv),
                false,
                Ok(t.instructions + bs + c.spread()),
                0.0,
                Agree::Single,
            ),
            None => only_new.push(format!("{} (instructions)", c.key())),
        }
    }
    only_base += bc
        .keys()
        .filter(|k| {
            !new.cost
                .iter()
                .any(|c| &c.key() == *k && c.per_request.is_some())
        })
        .count();
    Comparison {
        changes,
        only_new,
        only_base,
        thresholds: t,
        noise,
    }
}

/// The comparison as Markdown: regressions first, then the rest.
pub fn markdown(c: &Comparison) -> String {
    let t = c.thresholds;
    let mut s = format!(
        "Gated: instructions/request at {:.1} %; context switches and read+write calls/request at {:.0} % \
         (and > {MIN_COUNT_CHANGE} per request, {MIN_CSW_CHANGE} for context switches, which must also exceed their A/A floor); server CPU µs/request and requests/s relative to epoll-server \
         beyond {:.0} % and the noise floor ({}). Raw requests/s and p99 are informational.\n\n\
         | run | metric | base | new | change | allowed | verdict |\n|---|---|---:|---:|---:|---:|---|\n",
        t.instructions * 100.0,
        t.counts * 100.0,
        t.wall * 100.0,
        match c.noise {
            Some((rps, cpu, csw)) => format!(
                "A/A: requests/s {:.1} %, CPU {:.1} %, context switches {:.1} %",
                rps * 100.0,
                cpu * 100.0,
                csw * 100.0
            ),
            None => "no A/A check in either set: wall-clock figures informational".into(),
        }
    );
    let mut sorted: Vec<&Change> = c.changes.iter().collect();
    sorted.sort_by_key(|x| (!x.regressed, !x.gated));
    for ch in sorted {
        let verdict = match (ch.regressed, ch.gated, ch.note) {
            (true, _, _) => "**REGRESSED**".to_string(),
            (false, true, Some(n)) => format!("ok ({n})"),
            (false, true, None) => "ok".to_string(),
            (false, false, Some(n)) => format!("info ({n})"),
            (false, false, None) => "info".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:+.1}% | {} | {verdict} |",
            ch.key,
            ch.metric,
            ch.base,
            ch.new,
            ch.change * 100.0,
            if ch.gated {
                format!("{:.1}%", ch.allowed * 100.0)
            } else {
                String::new()
            }
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
    for row in summary::rows(r)
        .into_iter()
        .filter(|r| r.reps > 0 && !r.aa && !r.base)
    {
        let mut v = json!({
            "throughput": {"value": row.rps},
            "cpu-us-per-request": {"value": row.cpu_us},
            "latency-p99-us": {"value": row.p99_us},
            "csw-per-request": {"value": row.csw},
        });
        if let Some(x) = row.ratio_to_epoll {
            v["rps-ratio-to-epoll"] = json!({"value": x});
        }
        if let Some(x) = row.rw_calls {
            v["rw-calls-per-request"] = json!({"value": x});
        }
        m.insert(row.key, v);
    }
    for c in &r.cost {
        if let Some(x) = c.per_request {
            let e = m.entry(c.key()).or_insert_with(|| json!({}));
            e["instructions-per-request"] = json!({"value": x});
        }
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
