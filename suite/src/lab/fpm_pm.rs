//! `fpm-pm`: a burst of keep-alive clients, each pinning a worker
//! (`/wait`: a blocking worker serves one connection at a time), against
//! fpm-server's three process managers, drawn as a timeline of workers per
//! second.
//!
//! * static: every worker exists before the burst.
//! * dynamic: starts `min-spare` workers; once a second, while fewer than
//!   min-spare are idle, it forks 1, then 2, 4, 8 … up to 32 per tick
//!   (php-fpm's `idle_spawn_rate`, sapi/fpm/fpm/fpm_process_ctl.c), never
//!   more than the idle workers missing. fpm-server implements exactly this
//!   rule (servers/src/bin/fpm/pm.rs).
//! * ondemand: no worker until a connection waits; the master forks one
//!   each time it sees a waiting connection and no idle worker, so the
//!   first client pays a fork.

use super::{missing, ChartSpec, Judgement, Lab, Line, Measured, Point, Probe};
use crate::sweep::fmt_ms;

/// (burst connections, dynamic's min-spare = start-servers): quick, full.
const QUICK: (usize, usize) = (24, 8);
const FULL: (usize, usize) = (48, 16);

pub(super) fn lab() -> Lab {
    Lab {
        name: "fpm-pm",
        title: "php-fpm's process managers under a burst: static, dynamic, ondemand",
        shape: "static holds every worker from the start; dynamic grows over ≥ 3 ticks with a per-tick growth that at least doubles from its first tick to its largest (php-fpm's spawn rate); ondemand starts empty and forks while clients wait: fewer than all workers in its first second, and a slowest request ≥ 3× static's",
        points: |quick| {
            let (c, min) = if quick { QUICK } else { FULL };
            let (c_s, min_s, most) = (c.to_string(), min.to_string(), (c + min).to_string());
            let pms: Vec<(&str, Vec<&str>)> = vec![
                ("static", vec!["--pm", "static", "--max-children", &c_s]),
                (
                    "dynamic",
                    vec![
                        "--pm", "dynamic", "--max-children", &most, "--start-servers", &min_s,
                        "--min-spare", &min_s, "--max-spare", &most,
                    ],
                ),
                ("ondemand", vec!["--pm", "ondemand", "--max-children", &c_s]),
            ];
            pms.into_iter()
                .enumerate()
                .map(|(i, (s, f))| {
                    Point::new(s, i as f64, "fpm", "/wait?us=20000", c)
                        .flags(&f)
                        .workers(c)
                        .probe(Probe::Timeline)
                })
                .collect()
        },
        timing: ((5.0, 1), (8.0, 2)),
        chart: ChartSpec {
            x_desc: "seconds into the burst",
            y_desc: "worker processes",
            log_x: false,
            log_y: false,
            y: |m| m.x("t0.workers"),
            ideal: None,
            lines: Some(lines),
        },
        judge,
    }
}

/// Per second: (workers, p99 µs, requests, max µs).
fn timeline(m: &Measured) -> Vec<(f64, f64, f64, f64)> {
    (0..)
        .map_while(|i| {
            let w = m.extra.get(&format!("t{i}.workers"))?;
            Some((
                *w,
                m.x(&format!("t{i}.p99_us")),
                m.x(&format!("t{i}.requests")),
                m.x(&format!("t{i}.max_us")),
            ))
        })
        .collect()
}

fn lines(ms: &[Measured]) -> Vec<Line> {
    ms.iter()
        .map(|m| {
            let t = timeline(m);
            (
                m.point.series.clone(),
                t.iter().enumerate().map(|(i, p)| (i as f64, p.0)).collect(),
            )
        })
        .collect()
}

fn judge(ms: &[Measured], quick: bool) -> Judgement {
    let (c, min) = if quick { QUICK } else { FULL };
    let find = |s: &str| ms.iter().find(|m| m.point.series == s && m.error.is_none());
    let (Some(st), Some(dy), Some(od)) = (find("static"), find("dynamic"), find("ondemand")) else {
        return missing("a process manager");
    };
    let mut reasons = Vec::new();
    for m in [st, dy, od] {
        let t = timeline(m);
        let w: Vec<String> = t.iter().map(|p| format!("{:.0}", p.0)).collect();
        let p: Vec<String> = t.iter().map(|p| fmt_ms(p.1)).collect();
        let mx: Vec<String> = t.iter().map(|p| fmt_ms(p.3)).collect();
        let n: Vec<String> = t.iter().map(|p| format!("{:.0}", p.2)).collect();
        reasons.push(format!(
            "{}: per second, workers [{}]; requests [{}]; p99 [{}]; max [{}]; first client {}",
            m.point.series,
            w.join(", "),
            n.join(", "),
            p.join(", "),
            mx.join(", "),
            fmt_ms(m.x("first_us"))
        ));
    }
    // static: the pool is whole from the first second.
    let st_t = timeline(st);
    let static_ok = st_t.first().is_some_and(|p| p.0 >= c as f64);
    reasons.push(format!(
        "static has all {c} workers in its first second: {}",
        super::yes(static_ok)
    ));
    // dynamic: growth per tick, from the most workers seen each second.
    let dy_t: Vec<f64> = timeline(dy).iter().map(|p| p.0).collect();
    let steps: Vec<f64> = dy_t
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    let first = steps.first().copied().unwrap_or(0.0);
    let most = steps.iter().copied().fold(0.0, f64::max);
    let ticks = steps.len();
    let dynamic_ok = ticks >= 3 && most >= 2.0 * first && first > 0.0;
    reasons.push(format!(
        "dynamic (start {min}) grows by {steps:?} workers per second: {ticks} growing ticks (needs ≥ 3), largest ÷ first = {:.1} (needs ≥ 2: the spawn rate doubles)",
        most / first.max(1.0)
    ));
    // ondemand: every worker is forked when a client already waits.
    let worst = |m: &Measured| timeline(m).iter().map(|p| p.3).fold(0.0, f64::max);
    let (ms_, mo) = (worst(st), worst(od));
    let od0 = timeline(od).first().map_or(f64::NAN, |p| p.0);
    let ondemand_ok = mo >= 3.0 * ms_ && od0 < c as f64;
    reasons.push(format!(
        "ondemand has {od0:.0} of {c} workers in its first second (needs fewer: it forks them as clients wait); slowest request: ondemand {} against static {} = {:.1}× (needs ≥ 3×); first client alone: ondemand {}, static {}",
        fmt_ms(mo),
        fmt_ms(ms_),
        mo / ms_,
        fmt_ms(od.x("first_us")),
        fmt_ms(st.x("first_us"))
    ));
    Judgement {
        holds: static_ok && dynamic_ok && ondemand_ok,
        reasons,
        figures: Vec::new(),
    }
}
