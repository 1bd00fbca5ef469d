//! The sweeps' charts and tables in the report: load–latency curves as
//! small multiples (one panel per model family, the other families in
//! light grey behind), each model's capacity at the SLO, and the open-loop
//! latency percentiles compared at one rate for every model.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::charts::{self, DrawResult, Swatch, CONTEXT};
use crate::results::Results;
use crate::summary::Row;
use crate::sweep::{self, Curve, Verdict};

/// `/wait?us=10000` → `wait-us-10000` (for chart ids).
pub fn slug(route: &str) -> String {
    let s: String = route
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.trim_matches('-').to_string()
}

/// The (route, protocol) groups of `results.sweeps`, in order.
pub fn groups(results: &Results) -> Vec<(String, loadgen::Protocol)> {
    let mut g: Vec<(String, loadgen::Protocol)> = Vec::new();
    for c in &results.sweeps {
        let k = (c.route.clone(), c.protocol);
        if !g.contains(&k) {
            g.push(k);
        }
    }
    g
}

fn nines_label(x: f64) -> String {
    match x.log10().round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

/// Whether a log axis labels `x`: only at 1, 2 and 5 × a power of ten, so
/// labels never crowd.
pub fn nice(x: f64) -> bool {
    if x <= 0.0 {
        return false;
    }
    let m = x / 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|n| (m - n).abs() < 0.02 * n)
}

fn rate_label(x: f64) -> String {
    if !nice(x) {
        return String::new();
    }
    if x >= 1000.0 {
        format!("{}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn ms_label(us: f64) -> String {
    if !nice(us) {
        return String::new();
    }
    if us >= 1000.0 {
        format!("{}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// p99 against offered rate: one panel per family, SLO line, knees ringed.
pub fn sweep_chart(curves: &[&Curve], out: &mut String) -> DrawResult {
    let models: Vec<String> = curves.iter().map(|c| c.model.clone()).collect();
    let groups = charts::by_family(&models);
    let cols = if groups.len() > 1 { 2 } else { 1 };
    let rows = groups.len().div_ceil(cols);
    let (w, ph) = (1000u32, 300u32);
    let root = SVGBackend::with_string(out, (w, ph * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = |c: &Curve| -> Vec<(f64, f64)> {
        c.steps
            .iter()
            .map(|s| (s.asked_rps, (s.p99_us as f64).max(1.0)))
            .collect()
    };
    let all: Vec<(f64, f64)> = curves.iter().flat_map(|c| pts(c)).collect();
    let xmin = all
        .iter()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .min(1e9)
        / 1.3;
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.3;
    let bound = curves.first().map_or(1000.0, |c| c.slo_bound_us());
    let ymin = all.iter().map(|p| p.1).fold(bound, f64::min).max(1.0) / 1.5;
    let ymax = all.iter().map(|p| p.1).fold(bound, f64::max) * 1.5;
    let panels = root.split_evenly((rows, cols));
    for ((fam, ms), panel) in groups.iter().zip(panels.iter()) {
        let (plot, leg) = charts::with_legend(panel, 150);
        let mut chart = ChartBuilder::on(&plot)
            .caption(fam.name(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(55)
            .build_cartesian_2d((xmin.max(0.1)..xmax).log_scale(), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("offered rate, req/s")
            .y_desc("p99 latency")
            .x_label_formatter(&|x| rate_label(*x))
            .y_label_formatter(&|y| ms_label(*y))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()?;
        // The other families, in grey, for context.
        for c in curves.iter().filter(|c| !ms.contains(&c.model)) {
            charts::line(&mut chart, &pts(c), CONTEXT, charts::Dash::Solid, 1)?;
        }
        // The SLO bound.
        charts::line(
            &mut chart,
            &[(xmin.max(0.1), bound), (xmax, bound)],
            RGBColor(180, 30, 30),
            charts::Dash::Dashed,
            1,
        )?;
        chart.draw_series(std::iter::once(Text::new(
            format!("SLO: p99 ≤ {}", sweep::fmt_ms(bound)),
            (xmin.max(0.1) * 1.05, bound * 1.08),
            ("sans-serif", 11).into_font().color(&RGBColor(180, 30, 30)),
        )))?;
        for c in curves.iter().filter(|c| ms.contains(&c.model)) {
            let s = charts::style(&c.model);
            let p = pts(c);
            charts::line(&mut chart, &p, s.color, s.dash, 2)?;
            let split = |v: &[Verdict]| -> Vec<(f64, f64)> {
                c.steps
                    .iter()
                    .filter(|st| v.contains(&st.verdict))
                    .map(|st| (st.asked_rps, (st.p99_us as f64).max(1.0)))
                    .collect()
            };
            charts::markers(&mut chart, &split(&[Verdict::Within]), s, 4, false)?;
            charts::markers(
                &mut chart,
                &split(&[
                    Verdict::OverSlo,
                    Verdict::Saturated,
                    Verdict::GeneratorLate,
                    Verdict::GeneratorLimited,
                ]),
                s,
                4,
                true,
            )?;
            charts::gen_mark(
                &mut chart,
                &split(&[Verdict::GeneratorLate, Verdict::GeneratorLimited]),
            )?;
            // The knee: the capacity step, ringed.
            if let Some(cap) = c.capacity_rps {
                if let Some(st) = c.steps.iter().find(|st| st.asked_rps == cap) {
                    chart.draw_series(std::iter::once(Circle::new(
                        (cap, (st.p99_us as f64).max(1.0)),
                        9,
                        s.color.stroke_width(2),
                    )))?;
                }
            }
        }
        charts::legend(
            &leg,
            ms,
            Swatch::Line,
            &[
                "filled: within the SLO",
                "hollow: over it",
                "ring: capacity",
                "▼ generator's fault",
            ],
        )?;
    }
    root.present()?;
    Ok(())
}

/// Each model's capacity at the SLO (horizontal bars, log scale, one row
/// per model so that 15 and more names stay legible), behind it in a light
/// shade the highest rate it achieved, and a black tick at the rate at
/// which it saturated; ▶ on a bar: a lower bound.
pub fn capacity_chart(curves: &[&Curve], out: &mut String) -> DrawResult {
    let models: Vec<String> = curves.iter().map(|c| c.model.clone()).collect();
    let xmax = curves
        .iter()
        .map(|c| {
            c.saturated_at_rps
                .unwrap_or(0.0)
                .max(c.capacity_rps.unwrap_or(0.0))
                .max(c.max_achieved_rps)
        })
        .fold(10.0, f64::max)
        * 2.0;
    let xmin = curves
        .iter()
        .flat_map(|c| c.steps.first().map(|s| s.asked_rps))
        .fold(xmax / 2.0, f64::min)
        .max(2.0)
        / 2.0;
    let n = models.len().max(1);
    let height = (70 + 24 * n as u32).max(260);
    let root = SVGBackend::with_string(out, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, leg) = charts::with_legend(&root, 210);
    // Row i spans i..i+1 from the top: the y axis runs from n down to 0.
    let names: Vec<String> = models.iter().rev().cloned().collect();
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(95)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| crate::report::category_label(*y, &names))
        .x_desc("requests/s")
        .x_label_formatter(&|x| rate_label(*x))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let s = charts::style(&c.model);
        let y0 = (n - 1 - i) as f64 + 0.18;
        let y1 = y0 + 0.64;
        if c.max_achieved_rps > xmin {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(xmin, y0 + 0.16), (c.max_achieved_rps, y1 - 0.16)],
                s.color.mix(0.3).filled(),
            )))?;
        }
        if let Some(cap) = c.capacity_rps {
            let st = if s.peer {
                s.color.stroke_width(2)
            } else {
                s.color.filled()
            };
            chart.draw_series(std::iter::once(Rectangle::new([(xmin, y0), (cap, y1)], st)))?;
            if c.capacity_is_lower_bound {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((cap, (y0 + y1) / 2.0))
                        + Polygon::new(vec![(3, -6), (3, 6), (11, 0)], BLACK.filled()),
                ))?;
            }
        }
        if let Some(sat) = c.saturated_at_rps {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(sat, y0 - 0.08), (sat, y1 + 0.08)],
                BLACK.stroke_width(2),
            )))?;
        }
    }
    charts::legend(
        &leg,
        &models,
        Swatch::Bar,
        &[
            "dark bar: capacity (p99",
            "   within the SLO)",
            "light bar: highest rate",
            "   achieved",
            "| black: saturated at",
            "▶ at least: the generator or",
            "   --max-rate ended the sweep",
        ],
    )?;
    root.present()?;
    Ok(())
}

/// The rate every model's open loop ran at over `protocol` (they share one).
pub fn open_rate(results: &Results, protocol: loadgen::Protocol) -> Option<f64> {
    results
        .runs
        .iter()
        .filter(|r| r.scenario == crate::scenarios::Scenario::Open && r.protocol == protocol)
        .find_map(|r| r.load.rate)
}

/// Latency by percentile at one load for every model: small multiples by
/// family (x = 1/(1−p) on a log axis, as HistogramLogAnalyzer draws it).
pub fn latency_chart(
    results: &Results,
    rows: &[&Row],
    rate: Option<f64>,
    out: &mut String,
) -> DrawResult {
    // (model, points, fell short of the rate)
    type Percentiles = (String, Vec<(f64, f64)>, bool);
    let mut curves: Vec<Percentiles> = Vec::new();
    for r in rows {
        if let Some(h) = crate::summary::histogram(results, &r.key) {
            let pts: Vec<(f64, f64)> = (0..=100)
                .map(|i| {
                    let x = 10f64.powf(i as f64 / 20.0); // up to 1e5 = 99.999 %
                    let q = 1.0 - 1.0 / x;
                    (x, (h.value_at_quantile(q) as f64).max(1.0))
                })
                .collect();
            let short = rate.is_some_and(|rate| r.rps < sweep::MIN_ACHIEVED * rate);
            curves.push((r.model.clone(), pts, short));
        }
    }
    let models: Vec<String> = curves.iter().map(|c| c.0.clone()).collect();
    let groups = charts::by_family(&models);
    let cols = if groups.len() > 1 { 2 } else { 1 };
    let nrows = groups.len().div_ceil(cols).max(1);
    let ymax = curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|v| v.1))
        .fold(10.0, f64::max)
        * 2.0;
    let ymin = (curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|v| v.1))
        .fold(ymax, f64::min)
        / 2.0)
        .max(1.0);
    let root = SVGBackend::with_string(out, (1000, 300 * nrows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((nrows, cols));
    for ((fam, ms), panel) in groups.iter().zip(panels.iter()) {
        let (plot, leg) = charts::with_legend(panel, 150);
        let mut chart = ChartBuilder::on(&plot)
            .caption(fam.name(), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(55)
            .build_cartesian_2d((1f64..1e5).log_scale(), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .y_label_formatter(&|y| ms_label(*y))
            .x_label_formatter(&|x| nines_label(*x))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()?;
        for (m, p, _) in curves.iter().filter(|c| !ms.contains(&c.0)) {
            let _ = m;
            charts::line(&mut chart, p, CONTEXT, charts::Dash::Solid, 1)?;
        }
        for (m, p, _) in curves.iter().filter(|c| ms.contains(&c.0)) {
            let s = charts::style(m);
            charts::line(&mut chart, p, s.color, s.dash, 2)?;
            let marks: Vec<(f64, f64)> = p.iter().step_by(20).copied().collect();
            charts::markers(&mut chart, &marks, s, 4, false)?;
        }
        let short: Vec<String> = curves
            .iter()
            .filter(|c| c.2 && ms.contains(&c.0))
            .map(|c| c.0.clone())
            .collect();
        let note = if short.is_empty() {
            String::new()
        } else {
            format!("fell short of the rate: {}", short.join(", "))
        };
        let extra: Vec<&str> = if note.is_empty() {
            vec![]
        } else {
            vec![note.as_str()]
        };
        charts::legend(&leg, ms, Swatch::Line, &extra)?;
    }
    root.present()?;
    Ok(())
}

/// The sweeps in Markdown: what was asked, capacities, every step with
/// Little's law, and how to read them.
pub fn markdown(results: &Results) -> String {
    if results.sweeps.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Rate sweeps: load–latency curves and capacity\n\n");
    if let Some(sp) = &results.sweep {
        let _ = writeln!(
            s,
            "Open loop ({} arrivals), one generator thread, rates from {} req/s × {} per step, {} s warm-up + {} s measured per step; \
             SLO: p99 ≤ the route's own wait + {}. A model stops at its first saturated step (achieved < {:.0} % of asked, > {:.0} % errors, or p99 more than {} over the wait with p50 past a tenth of that); a saturated step is measured twice; the generator's own lateness is not held against the server.\n",
            sp.arrivals.name(),
            sp.from_rps,
            sp.factor,
            sp.warmup_s,
            sp.step_s,
            sweep::fmt_ms(sp.slo_us),
            sweep::MIN_ACHIEVED * 100.0,
            sweep::MAX_ERRORS * 100.0,
            sweep::fmt_ms(sp.cap_us),
        );
    }
    s.push_str(LITTLE);
    s.push('\n');
    s.push_str(&sweep::capacity_table(&results.sweeps));
    s.push_str("\n### Every step\n\n");
    s.push_str(&sweep::steps_table(&results.sweeps));
    s
}

/// How to read a result set of sweeps alone.
pub const HOW_TO_READ_SWEEPS: &str = "How to read: each model was driven open loop at rising rates until it saturated (sweeps, below). \
The **capacity** is the highest rate whose p99 stayed within the SLO; **saturated at** the first rate it could not serve; \
**max achieved** the most it answered per second at any step. Latencies run from each request's intended send time (coordinated omission corrected). \
Steps marked as the generator's fault (▼, *gen late*, *GEN*) say the load generator itself fell behind: they are not held against the server.\n";

/// How to read Little's law in the tables.
pub const LITTLE: &str = "Little's law: **L = λ·W**, the requests in the system equal the rate times the time each spends there. \
Per step, *L = λ·W* is the achieved rate × the mean latency (from the intended send, so requests waiting for a free connection count), \
and *in flight* is the generator's own time-average of requests sent and not yet answered. \
A blocking model holds one request per worker: with 2 workers and `/wait?us=10000` (W ≥ 10 ms) it cannot pass 2 / 10 ms = 200 req/s; \
past that, L grows beyond the 2 connections in use — the extra requests queue in the generator — while an event loop parks each \
request on a timer and keeps L requests in flight at once.\n";
