//! `coordinated-omission`: freeze the server (SIGSTOP, then SIGCONT) for
//! a fraction f of an open-loop run at a fixed rate. Every request due
//! during the freeze waits for its end: those latencies are spread
//! uniformly over 0..freeze, so the q-th percentile is
//! `freeze × (1 − (1 − q) ÷ f)` whenever 1 − q < f. A generator that times
//! from the moment it actually sent (uncorrected) sees only the few
//! requests in flight when the server stopped.

use super::{missing, ChartSpec, Judgement, Lab, Line, Measured, Point};
use crate::sweep::fmt_ms;

/// The freeze (at, length) and the run's length, s: (quick, full).
const QUICK: (f64, f64, f64) = (2.0, 0.5, 5.0);
const FULL: (f64, f64, f64) = (4.0, 1.0, 10.0);

/// The analytic answer for percentile `q` (0–100) of a run of `secs` with a
/// freeze of `len` s.
fn analytic(q: f64, len: f64, secs: f64) -> f64 {
    let f = len / secs;
    let tail = 1.0 - q / 100.0;
    if tail >= f {
        0.0
    } else {
        len * (1.0 - tail / f) * 1e6
    }
}

pub(super) fn lab() -> Lab {
    Lab {
        name: "coordinated-omission",
        title: "Coordinated omission: a 10 % freeze of an open-loop run, corrected and uncorrected",
        shape: "corrected p99 and p99.9 within 0.75–1.2× the analytic answer (0.9 and 0.99 × the freeze); uncorrected p99 below ⅒ of it",
        points: |quick| {
            let (at, len, _) = if quick { QUICK } else { FULL };
            let mut p = Point::new("epoll", 0.0, "epoll", "/hello", 8)
                .workers(1)
                .rate(if quick { 400.0 } else { 500.0 });
            p.freeze = Some((at, len));
            vec![p]
        },
        timing: ((QUICK.2, 1), (FULL.2, 3)),
        chart: ChartSpec {
            x_desc: "percentile",
            y_desc: "latency, µs",
            log_x: false,
            log_y: true,
            y: |m| m.p99_us,
            ideal: None,
            lines: Some(lines),
        },
        judge,
    }
}

fn setting(m: &Measured) -> (f64, f64) {
    let len = m.point.freeze.map_or(0.0, |f| f.1);
    let secs = if len == QUICK.1 { QUICK.2 } else { FULL.2 };
    (len, secs)
}

fn lines(ms: &[Measured]) -> Vec<Line> {
    let Some(m) = ms.first() else {
        return Vec::new();
    };
    let (len, secs) = setting(m);
    let qs = [50.0, 99.0, 99.9];
    let corrected = vec![(50.0, m.p50_us), (99.0, m.p99_us), (99.9, m.p999_us)];
    let mut v = vec![("corrected (from the intended send)".to_string(), corrected)];
    if let (Some(a), Some(b)) = (m.p99_uncorrected_us, m.p999_uncorrected_us) {
        v.push((
            "uncorrected (from the actual send)".to_string(),
            vec![(99.0, a), (99.9, b)],
        ));
    }
    v.push((
        "analytic answer".to_string(),
        qs.iter().map(|&q| (q, analytic(q, len, secs))).collect(),
    ));
    v
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let Some(m) = ms.first().filter(|m| m.error.is_none()) else {
        return missing("the run");
    };
    let (len, secs) = setting(m);
    let (a99, a999) = (analytic(99.0, len, secs), analytic(99.9, len, secs));
    let (r99, r999) = (m.p99_us / a99, m.p999_us / a999);
    let u99 = m.p99_uncorrected_us.unwrap_or(f64::NAN);
    let holds = (0.75..=1.2).contains(&r99) && (0.75..=1.2).contains(&r999) && u99 < a99 / 10.0;
    Judgement {
        holds,
        reasons: vec![
            format!(
                "freeze {len} s of {secs} s (f = {:.0} %) at {:.0} req/s",
                100.0 * len / secs,
                m.point.rate.unwrap_or(0.0)
            ),
            format!(
                "corrected p99 {} against {} analytic = {r99:.2}× (needs 0.75–1.2×)",
                fmt_ms(m.p99_us),
                fmt_ms(a99)
            ),
            format!(
                "corrected p99.9 {} against {} analytic = {r999:.2}× (needs 0.75–1.2×)",
                fmt_ms(m.p999_us),
                fmt_ms(a999)
            ),
            format!(
                "uncorrected p99 {} (needs < ⅒ of {}: the freeze is omitted), uncorrected p99.9 {}",
                fmt_ms(u99),
                fmt_ms(a99),
                fmt_ms(m.p999_uncorrected_us.unwrap_or(f64::NAN))
            ),
        ],
        figures: Vec::new(),
    }
}
