//! Reports rebuilt from a results file: `report.md` (tables) and a
//! self-contained `report.html` whose charts are inline SVG drawn with
//! plotters' SVG backend. Every chart's `<svg>` has a stable id:
//! `chart-rps-P`, `chart-latency-P`, `chart-idle-P`, `chart-cpu-P` and
//! `chart-instructions-P` for each protocol P present.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::results::Results;
use crate::scenarios::Scenario;
use crate::summary::{self, Row};

/// One chart: its id, title, what it shows and the SVG.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The `<svg>` element's id.
    pub id: String,
    /// Heading.
    pub title: String,
    /// How to read it.
    pub caption: String,
    /// The SVG document.
    pub svg: String,
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 128),
        RGBColor(128, 0, 0),
    ];
    C[i % C.len()]
}

fn models(rows: &[&Row]) -> Vec<String> {
    let mut m: Vec<String> = Vec::new();
    for r in rows {
        if !m.contains(&r.model) {
            m.push(r.model.clone());
        }
    }
    m
}

/// Requests/s, grouped by scenario, one bar per model (log scale).
fn rps_chart(rows: &[&Row], out: &mut String) -> DrawResult {
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.reps > 0 && r.rps > 0.0 && r.idle == 0)
        .collect();
    let models = models(&rows);
    let mut scen: Vec<Scenario> = rows.iter().map(|r| r.scenario).collect();
    scen.sort();
    scen.dedup();
    let max = rows.iter().map(|r| r.rps).fold(10.0, f64::max) * 2.0;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..scen.len() as f64, (1f64..max).log_scale())?;
    let names: Vec<&str> = scen.iter().map(|s| s.name()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scen.len() * 2 + 1)
        .x_label_formatter(&|x| category_label(*x, &names))
        .y_desc("requests/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let w = 0.9 / models.len().max(1) as f64;
    for (mi, m) in models.iter().enumerate() {
        let c = color(mi);
        chart
            .draw_series(rows.iter().filter(|r| &r.model == m).map(|r| {
                let si = scen.iter().position(|s| *s == r.scenario).unwrap_or(0) as f64;
                let x0 = si + 0.05 + w * mi as f64;
                Rectangle::new([(x0, 1.0), (x0 + w, r.rps.max(1.0))], c.filled())
            }))?
            .label(m.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        // Error bars: the smallest and largest repetition.
        chart.draw_series(
            rows.iter()
                .filter(|r| &r.model == m && r.reps > 1)
                .map(|r| {
                    let si = scen.iter().position(|s| *s == r.scenario).unwrap_or(0) as f64;
                    let x = si + 0.05 + w * (mi as f64 + 0.5);
                    PathElement::new(
                        vec![(x, r.rps_range.0.max(1.0)), (x, r.rps_range.1.max(1.0))],
                        BLACK.stroke_width(1),
                    )
                }),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency by percentile, x = 1/(1 − p) on a log axis (HistogramLogAnalyzer).
fn latency_chart(results: &Results, rows: &[&Row], out: &mut String) -> DrawResult {
    let pick: Vec<&Row> = {
        let open: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.scenario == Scenario::Open && r.reps > 0)
            .collect();
        if open.is_empty() {
            rows.iter()
                .copied()
                .filter(|r| r.scenario == Scenario::Hello && r.reps > 0)
                .collect()
        } else {
            open
        }
    };
    let mut curves = Vec::new();
    for r in &pick {
        if let Some(h) = summary::histogram(results, &r.key) {
            let pts: Vec<(f64, f64)> = (0..=100)
                .map(|i| {
                    let x = 10f64.powf(i as f64 / 20.0); // up to 1e5 = 99.999 %
                    let q = 1.0 - 1.0 / x;
                    (x, (h.value_at_quantile(q) as f64).max(1.0))
                })
                .collect();
            curves.push((r.model.clone(), pts));
        }
    }
    let ymax = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|v| v.1))
        .fold(10.0, f64::max)
        * 2.0;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(25)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..1e5).log_scale(), (1f64..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency µs")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| {
            let nines = x.log10().round() as i32;
            match nines {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                n => format!("99.{}%", "9".repeat((n - 2) as usize)),
            }
        })
        .draw()?;
    for (i, (m, pts)) in curves.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(m)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Requests/s against idle connections held, one line per model.
fn idle_chart(rows: &[&Row], out: &mut String) -> DrawResult {
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.scenario == Scenario::Idle && r.reps > 0)
        .collect();
    let models = models(&rows);
    let xmax = rows.iter().map(|r| r.idle).max().unwrap_or(1).max(1) as f64 * 1.05;
    let ymax = rows.iter().map(|r| r.rps).fold(10.0, f64::max) * 1.15;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("idle connections")
        .y_desc("requests/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, m) in models.iter().enumerate() {
        let c = color(i);
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.model == m)
            .map(|r| (r.idle as f64, r.rps))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(m.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Server CPU µs per request per model (user stacked under system), for
/// the hello and new-conn scenarios: UNP ch.30's table, measured.
fn cpu_chart(rows: &[&Row], out: &mut String) -> DrawResult {
    let scen = [Scenario::Hello, Scenario::NewConn];
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| scen.contains(&r.scenario) && r.reps > 0)
        .collect();
    let models = &models(&rows);
    let ymax = rows
        .iter()
        .map(|r| r.cpu_us.max(r.cpu_range.1))
        .fold(1.0, f64::max)
        * 1.15;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..models.len().max(1) as f64, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(models.len() * 2 + 1)
        .x_label_formatter(&|x| category_label(*x, models))
        .y_desc("server CPU µs per request")
        .draw()?;
    for (si, s) in scen.iter().enumerate() {
        let (cu, cs) = (color(si * 2), color(si * 2 + 1));
        let bars = |user: bool| -> Vec<Rectangle<(f64, f64)>> {
            rows.iter()
                .filter(|r| r.scenario == *s)
                .map(|r| {
                    let mi = models.iter().position(|m| *m == r.model).unwrap_or(0) as f64;
                    let x0 = mi + 0.1 + 0.4 * si as f64;
                    let (lo, hi) = if user {
                        (0.0, r.user_us)
                    } else {
                        (r.user_us, r.user_us + r.sys_us)
                    };
                    Rectangle::new(
                        [(x0, lo), (x0 + 0.38, hi)],
                        if user { cu.filled() } else { cs.filled() },
                    )
                })
                .collect()
        };
        chart
            .draw_series(bars(true))?
            .label(format!("{} user", s.name()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], cu.filled()));
        chart
            .draw_series(bars(false))?
            .label(format!("{} system", s.name()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], cs.filled()));
        // Error bars on the total: the smallest and largest repetition.
        chart.draw_series(
            rows.iter()
                .filter(|r| r.scenario == *s && r.reps > 1)
                .map(|r| {
                    let mi = models.iter().position(|m| *m == r.model).unwrap_or(0) as f64;
                    let x = mi + 0.1 + 0.4 * si as f64 + 0.19;
                    PathElement::new(
                        vec![(x, r.cpu_range.0), (x, r.cpu_range.1)],
                        BLACK.stroke_width(1),
                    )
                }),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Instructions per request under valgrind, one bar per model and
/// scenario (error bars: the repetitions' range).
fn instructions_chart(costs: &[&crate::cost::InstrCost], out: &mut String) -> DrawResult {
    let mut models: Vec<String> = Vec::new();
    let mut scen: Vec<Scenario> = Vec::new();
    for c in costs {
        if !models.contains(&c.model) {
            models.push(c.model.clone());
        }
        if !scen.contains(&c.scenario) {
            scen.push(c.scenario);
        }
    }
    let ymax = costs
        .iter()
        .flat_map(|c| c.samples.iter().copied().chain(c.per_request))
        .fold(100.0, f64::max)
        * 1.15;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..models.len().max(1) as f64, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(models.len() * 2 + 1)
        .x_label_formatter(&|x| category_label(*x, &models))
        .y_desc("user-space instructions per request")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let w = 0.8 / scen.len().max(1) as f64;
    for (si, sc) in scen.iter().enumerate() {
        let c = color(si);
        let bar = |x: &crate::cost::InstrCost| -> Option<(f64, f64, (f64, f64))> {
            let mi = models.iter().position(|m| *m == x.model)? as f64;
            Some((
                mi + 0.1 + w * si as f64,
                x.per_request?,
                summary::range(&x.samples),
            ))
        };
        chart
            .draw_series(costs.iter().filter(|x| x.scenario == *sc).filter_map(|x| {
                let (x0, v, _) = bar(x)?;
                Some(Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v)], c.filled()))
            }))?
            .label(sc.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        chart.draw_series(
            costs
                .iter()
                .filter(|x| x.scenario == *sc && x.samples.len() > 1)
                .filter_map(|x| {
                    let (x0, _, (lo, hi)) = bar(x)?;
                    let xm = x0 + w * 0.475;
                    Some(PathElement::new(
                        vec![(xm, lo), (xm, hi)],
                        BLACK.stroke_width(1),
                    ))
                }),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Gives the SVG document's root element an id.
fn with_id(svg: &str, id: &str) -> String {
    match svg.find("<svg") {
        Some(i) => format!("{}<svg id=\"{id}\"{}", &svg[..i], &svg[i + 4..]),
        None => svg.to_string(),
    }
}

/// Every chart the results have data for.
pub fn charts(results: &Results) -> anyhow::Result<Vec<Chart>> {
    let rows: Vec<Row> = summary::rows(results)
        .into_iter()
        .filter(|r| !r.aa)
        .collect();
    let mut out = Vec::new();
    for p in [loadgen::Protocol::Http, loadgen::Protocol::Fcgi] {
        let pr: Vec<&Row> = rows.iter().filter(|r| r.protocol == p).collect();
        if pr.iter().all(|r| r.reps == 0) {
            continue;
        }
        let n = p.name();
        type Draw<'a> = Box<dyn Fn(&mut String) -> DrawResult + 'a>;
        let specs: Vec<(&str, String, &str, bool, Draw)> = vec![
            (
                "rps",
                format!("Requests/s per scenario ({n})"),
                "Closed-loop throughput of each model in each scenario (log scale). Compare models within a group; the open loop runs at half the hello maximum by design.",
                pr.iter().any(|r| r.reps > 0 && r.idle == 0),
                Box::new(|s: &mut String| rps_chart(&pr, s)),
            ),
            (
                "latency",
                format!("Latency by percentile ({n})"),
                "HdrHistogram percentile curves (x: 1/(1−p), log scale) of the open-loop run at 50 % of each model's hello maximum, corrected for coordinated omission; flat and low is good, the tail is on the right.",
                pr.iter().any(|r| matches!(r.scenario, Scenario::Open | Scenario::Hello) && r.reps > 0),
                Box::new(|s: &mut String| latency_chart(results, &pr, s)),
            ),
            (
                "idle",
                format!("Requests/s against idle connections ({n})"),
                "A few active connections while 0, 1,000 and 10,000 idle ones are held: select and poll pass every fd to the kernel on each call, epoll only the ready ones.",
                pr.iter().any(|r| r.scenario == Scenario::Idle && r.reps > 0),
                Box::new(|s: &mut String| idle_chart(&pr, s)),
            ),
            (
                "cpu",
                format!("Server CPU µs per request ({n})"),
                "CPU the whole server process tree spent per request (user below, system above), keep-alive hello and a new connection per request: the UNP ch.30 comparison, measured.",
                pr.iter().any(|r| matches!(r.scenario, Scenario::Hello | Scenario::NewConn) && r.reps > 0),
                Box::new(|s: &mut String| cpu_chart(&pr, s)),
            ),
        ];
        let costs: Vec<&crate::cost::InstrCost> = results
            .cost
            .iter()
            .filter(|c| c.protocol == p && c.per_request.is_some())
            .collect();
        let mut specs = specs;
        specs.push((
            "instructions",
            format!("Instructions per request under valgrind ({n})"),
            "User-space instructions the server executed per request (valgrind, two request counts subtracted so start-up cancels): deterministic, unlike anything timed, and blind to the kernel's work (system calls).",
            !costs.is_empty(),
            Box::new(move |s: &mut String| instructions_chart(&costs, s)),
        ));
        for (kind, title, caption, has, draw) in specs {
            if !has {
                continue;
            }
            let mut svg = String::new();
            draw(&mut svg).map_err(|e| anyhow::anyhow!("drawing {kind} chart: {e}"))?;
            let id = format!("chart-{kind}-{n}");
            out.push(Chart {
                svg: with_id(&svg, &id),
                id,
                title,
                caption: caption.to_string(),
            });
        }
    }
    Ok(out)
}

fn machine_md(r: &Results) -> String {
    let m = &r.machine;
    format!(
        "Run `{}` on {} — {} × {} — {}; rustc: {}; git: {}.\n\n\
         Each run: a fresh server (`--workers {}`), {} s warm-up, {} s measured, {} repetition(s); medians shown.\n",
        r.run_id,
        m.date,
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.rustc.as_deref().unwrap_or("unknown"),
        m.git_sha.as_deref().unwrap_or("unknown"),
        r.config.workers,
        r.config.warmup_s,
        r.config.duration_s,
        r.config.repeat,
    )
}

const HOW_TO_READ: &str = "How to read: figures are medians over the repetitions, **±x%** is half their range (smallest to largest) over the median. \
**req/s** verified responses per second (refusals such as 503 and wrong bodies count as errors, not throughput; open loop: the achieved rate); \
**×epoll** each repetition's req/s over epoll-server's in the same round (steadier than raw req/s on a shared machine); \
**p50/p99** latency; **CPU µs/req** what the server's whole process tree spent per request, exited threads and \
reaped children included, from a cgroup (exact; **ticks** marks the /proc fallback, counted in 10 ms clock ticks); \
**csw/req** context switches per request, every thread and child counted by an inherited perf counter \
(**live** marks the /proc fallback, which misses threads that exited); **r+w calls/req** read(2)- and \
write(2)-family system calls per request from /proc/PID/io (syscr + syscw, no cost to the server; recv/send and \
io_uring operations are not in it); **RSS/PSS** peak resident and proportional memory summed over the tree; \
**cgroup peak** the server's cgroup memory peak (page cache and kernel memory included); **procs/thr** processes and \
threads; **gen CPU** the load generator's share of its core — **GEN** marks a run where it reached 90 % and may have set the pace.\n";

fn syscalls_md(r: &Results) -> String {
    if r.syscalls.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## System calls per request under strace (batching changes)\n\n`strace -f -c`, /hello. strace stops the server at every system call, which slows it many times over and changes how many requests each call handles: an edge-triggered loop shows ~1 read per request under strace and ~2 without. Read the names; the table above has the read+write counts measured without strace.\n\n| model | proto | requests | calls/req | by name |\n|---|---|---:|---:|---|\n");
    for sc in &r.syscalls {
        let total: f64 = sc.per_request.iter().map(|x| x.1).sum();
        let names: Vec<String> = sc
            .per_request
            .iter()
            .filter(|x| x.1 >= 0.01)
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {total:.2} | {} |",
            sc.model,
            sc.protocol.name(),
            sc.requests,
            names.join(", ")
        );
    }
    s
}

fn cost_md(r: &Results) -> String {
    if r.cost.is_empty() {
        return String::new();
    }
    format!(
        "\n## Instructions per request (valgrind)\n\n`iomodels cost`: each server under valgrind (cachegrind, no cache simulation) for two request counts; the difference of their instruction totals over the difference of requests prices one request, start-up and stop cancel. User space only: the kernel's work is in the CPU and system-call figures.\n\n{}",
        crate::cost::table(&r.cost)
    )
}

fn aa_md(rows: &[Row]) -> String {
    match crate::noise::floor(rows) {
        Some(nf) => format!(
            "\n## A/A check: the noise floor of this run\n\n{} ran twice in every round; its copies differ only by noise. \
             `compare` gates wall-clock figures (CPU µs/request, ×epoll) only beyond this floor.\n\n{}",
            rows.iter().find(|r| r.aa).map_or("", |r| r.model.as_str()),
            crate::noise::markdown(&nf)
        ),
        None => String::new(),
    }
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let rows = summary::rows(r);
    let mut s = format!(
        "# iomodels report {}\n\n{}\n{}\n",
        r.run_id,
        machine_md(r),
        HOW_TO_READ
    );
    if !r.config.missing.is_empty() {
        let _ = writeln!(s, "Not built (skipped): {}.\n", r.config.missing.join(", "));
    }
    s.push_str(&summary::table(&rows));
    let _ = write!(
        s,
        "\n**User and system time.** {}\n",
        crate::accounting::CPU_SPLIT_NOTE
    );
    s.push_str(&aa_md(&rows));
    s.push_str(&cost_md(r));
    s.push_str(&syscalls_md(r));
    s.push_str("\nCharts: see report.html beside this file.\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn md_table_html(md: &str) -> String {
    let mut s = String::from("<table>\n");
    for (i, line) in md.lines().enumerate() {
        if i == 1 {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let tag = if i == 0 { "th" } else { "td" };
        s.push_str("<tr>");
        for c in cells {
            let _ = write!(s, "<{tag}>{}</{tag}>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// The self-contained HTML report (no external files).
pub fn html(r: &Results) -> anyhow::Result<String> {
    let rows = summary::rows(r);
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    let _ = write!(
        s,
        "<title>iomodels report {}</title>\n<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}\
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
td:first-child,td:nth-child(2),td:nth-child(3){{text-align:left}}figure{{margin:1.5em 0}}</style></head><body>\n\
<h1>iomodels report {}</h1>\n<p>{}</p>\n<p>{}</p>\n",
        escape(&r.run_id),
        escape(&r.run_id),
        escape(&machine_md(r)),
        escape(HOW_TO_READ).replace("**", ""),
    );
    for c in charts(r)? {
        let _ = write!(
            s,
            "<figure><h2>{}</h2>\n{}\n<figcaption>{}</figcaption></figure>\n",
            escape(&c.title),
            c.svg,
            escape(&c.caption)
        );
    }
    s.push_str("<h2>All runs</h2>\n");
    s.push_str(&md_table_html(&summary::table(&rows)));
    let _ = writeln!(
        s,
        "<p><b>User and system time.</b> {}</p>",
        escape(crate::accounting::CPU_SPLIT_NOTE)
    );
    let aa = aa_md(&rows);
    if !aa.is_empty() {
        s.push_str("<h2>A/A check: the noise floor of this run</h2>\n");
        for l in aa
            .lines()
            .filter(|l| !l.starts_with('|') && !l.starts_with('#') && !l.is_empty())
        {
            let _ = writeln!(s, "<p>{}</p>", escape(l).replace('`', ""));
        }
        let table: String = aa
            .lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        s.push_str(&md_table_html(&table));
    }
    if !r.cost.is_empty() {
        s.push_str("<h2>Instructions per request (valgrind)</h2>\n");
        s.push_str(&md_table_html(&crate::cost::table(&r.cost)));
    }
    let sys = syscalls_md(r);
    if !sys.is_empty() {
        s.push_str("<h2>System calls per request under strace (batching changes)</h2>\n");
        let table: String = sys
            .lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        s.push_str(&md_table_html(&table));
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

/// Writes `report.md` and `report.html` into `dir`; returns the HTML path.
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(r))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", md.display()))?;
    let html_path = dir.join("report.html");
    std::fs::write(&html_path, html(r)?)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", html_path.display()))?;
    Ok(html_path)
}

/// The label of a category axis whose category `i` spans `i..i+1`: its name
/// at the middle tick `i + 0.5`, nothing at the other ticks.
fn category_label(x: f64, names: &[impl AsRef<str>]) -> String {
    let i = x.floor() as usize;
    match names.get(i) {
        Some(name) if (x - x.floor() - 0.5).abs() < 0.01 => name.as_ref().to_string(),
        _ => String::new(),
    }
}
