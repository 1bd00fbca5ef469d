//! The A/A check: one model (epoll-server by default) runs twice in every
//! round of the matrix, right after itself. Its two copies differ only by
//! noise — the neighbours' load, the scheduler, the caches — so the
//! relative difference between their medians is the smallest change this
//! run can tell from noise: its **noise floor**, one per figure (the
//! largest difference over the scenarios compared). `compare` gates a
//! wall-clock figure only when its change is beyond the floor.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::summary::Row;

/// Pairs with fewer requests than this on either copy are left out (too
/// few to price a request: iterative-server on `/wait` makes ~80).
pub const MIN_REQUESTS: f64 = 1000.0;

/// One original/copy pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The original's key.
    pub key: String,
    /// (original, copy) requests/s.
    pub rps: (f64, f64),
    /// (original, copy) CPU µs per request.
    pub cpu_us: (f64, f64),
    /// (original, copy) context switches per request.
    pub csw: (f64, f64),
    /// (original, copy) read + write calls per request.
    pub rw: Option<(f64, f64)>,
}

/// The relative difference of a pair: |b/a − 1| (0 when a is 0).
pub fn diff((a, b): (f64, f64)) -> f64 {
    if a > 0.0 {
        (b / a - 1.0).abs()
    } else {
        0.0
    }
}

/// The noise floor of one result set.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseFloor {
    /// Largest relative A/A difference of requests/s (and so of the ratio
    /// to epoll-server: the same runs over the same denominator).
    pub rps: f64,
    /// Of CPU µs per request.
    pub cpu_us: f64,
    /// Of context switches per request.
    pub csw: f64,
    /// Of read + write calls per request.
    pub rw: f64,
    /// The pairs it was measured on.
    pub pairs: Vec<Pair>,
}

/// The A/A pairs of `rows` and their floor; `None` when the set has no
/// A/A copy with enough requests.
pub fn floor(rows: &[Row]) -> Option<NoiseFloor> {
    let originals: BTreeMap<&str, &Row> = rows
        .iter()
        .filter(|r| !r.aa && !r.base)
        .map(|r| (r.key.as_str(), r))
        .collect();
    let pairs: Vec<Pair> = rows
        .iter()
        .filter(|c| c.aa && c.reps > 0)
        .filter_map(|c| {
            let o = originals.get(c.key.strip_suffix("/aa")?)?;
            (o.reps > 0 && o.requests >= MIN_REQUESTS && c.requests >= MIN_REQUESTS).then(|| Pair {
                key: o.key.clone(),
                rps: (o.rps, c.rps),
                cpu_us: (o.cpu_us, c.cpu_us),
                csw: (o.csw, c.csw),
                rw: o.rw_calls.zip(c.rw_calls),
            })
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let max = |f: &dyn Fn(&Pair) -> f64| pairs.iter().map(f).fold(0.0, f64::max);
    Some(NoiseFloor {
        rps: max(&|p| diff(p.rps)),
        cpu_us: max(&|p| diff(p.cpu_us)),
        csw: max(&|p| diff(p.csw)),
        rw: max(&|p| p.rw.map_or(0.0, diff)),
        pairs,
    })
}

/// The A/A section of a report.
pub fn markdown(nf: &NoiseFloor) -> String {
    let mut s = format!(
        "Noise floor (largest A/A difference): requests/s {:.1} %, CPU µs/request {:.1} %, \
         context switches/request {:.1} %, read+write calls/request {:.1} %.\n\n\
         | run | req/s A | req/s A′ | Δ | CPU µs A | CPU µs A′ | Δ | csw A | csw A′ | r+w A | r+w A′ |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        nf.rps * 100.0,
        nf.cpu_us * 100.0,
        nf.csw * 100.0,
        nf.rw * 100.0
    );
    for p in &nf.pairs {
        let (ra, rb) = p.rw.map_or((String::new(), String::new()), |(a, b)| {
            (format!("{a:.3}"), format!("{b:.3}"))
        });
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.2} | {:.1}% | {:.3} | {:.3} | {ra} | {rb} |",
            p.key,
            p.rps.0,
            p.rps.1,
            diff(p.rps) * 100.0,
            p.cpu_us.0,
            p.cpu_us.1,
            diff(p.cpu_us) * 100.0,
            p.csw.0,
            p.csw.1,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences() {
        assert_eq!(diff((100.0, 90.0)), 0.09999999999999998);
        assert_eq!(diff((0.0, 5.0)), 0.0);
        assert!((diff((2.0, 2.2)) - 0.1).abs() < 1e-12);
    }
}
