//! Reports rebuilt from a results file: `report.md` (tables) and a
//! self-contained `report.html` whose charts are inline SVG drawn with
//! plotters' SVG backend. Every chart's `<svg>` has a stable id:
//! `chart-rps-P`, `chart-latency-P`, `chart-idle-P`, `chart-cpu-P` and
//! `chart-instructions-P` for each protocol P present, and for each swept route R (slugged: `hello`,
//! `wait-us-10000`) `chart-sweep-R-P` and `chart-capacity-R-P`. Models keep
//! one style across charts ([`crate::charts`]); legends sit right of the
//! plots.

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

use crate::charts::{self, DrawResult, Swatch};

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
    let (plot, leg) = charts::with_legend(&root, 170);
    let mut chart = ChartBuilder::on(&plot)
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
    let x_of = |r: &Row, mi: usize| {
        let si = scen.iter().position(|s| *s == r.scenario).unwrap_or(0) as f64;
        si + 0.05 + w * mi as f64
    };
    for (mi, m) in models.iter().enumerate() {
        let s = charts::style(m);
        let st = if s.peer {
            s.color.stroke_width(1)
        } else {
            s.color.filled()
        };
        chart.draw_series(rows.iter().filter(|r| &r.model == m).map(|r| {
            let x0 = x_of(r, mi);
            Rectangle::new([(x0, 1.0), (x0 + w, r.rps.max(1.0))], st)
        }))?;
        let gen: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.model == m && r.generator_limited)
            .map(|r| (x_of(r, mi) + w / 2.0, r.rps.max(1.0)))
            .collect();
        charts::gen_mark(&mut chart, &gen)?;
        // Error bars: the smallest and largest repetition.
        chart.draw_series(
            rows.iter()
                .filter(|r| &r.model == m && r.reps > 1)
                .map(|r| {
                    let x = x_of(r, mi) + w / 2.0;
                    PathElement::new(
                        vec![(x, r.rps_range.0.max(1.0)), (x, r.rps_range.1.max(1.0))],
                        BLACK.stroke_width(1),
                    )
                }),
        )?;
    }
    charts::legend(
        &leg,
        &models,
        Swatch::Bar,
        &[
            charts::GEN_NOTE,
            charts::GEN_NOTE2,
            "| the repetitions' range",
        ],
    )?;
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
    let (plot, leg) = charts::with_legend(&root, 170);
    let mut chart = ChartBuilder::on(&plot)
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
    for m in &models {
        let s = charts::style(m);
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.model == m)
            .map(|r| (r.idle as f64, r.rps))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        charts::line(&mut chart, &pts, s.color, s.dash, 2)?;
        charts::markers(&mut chart, &pts, s, 4, false)?;
        let gen: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.model == m && r.generator_limited)
            .map(|r| (r.idle as f64, r.rps))
            .collect();
        charts::gen_mark(&mut chart, &gen)?;
    }
    charts::legend(
        &leg,
        &models,
        Swatch::Line,
        &[charts::GEN_NOTE, charts::GEN_NOTE2],
    )?;
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
        * 3.0;
    let ymin = 0.5;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, leg) = charts::with_legend(&root, 190);
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..models.len().max(1) as f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(models.len() * 2 + 1)
        .x_label_formatter(&|x| category_label(*x, models))
        .y_desc("server CPU µs per request (log)")
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (si, sc) in scen.iter().enumerate() {
        for r in rows.iter().filter(|r| r.scenario == *sc) {
            let s = charts::style(&r.model);
            let mi = models.iter().position(|m| *m == r.model).unwrap_or(0) as f64;
            let x0 = mi + 0.1 + 0.4 * si as f64;
            let user = r.user_us.max(ymin);
            let total = (r.user_us + r.sys_us).max(ymin);
            let (ust, sst) = if s.peer {
                (s.color.stroke_width(2), s.color.mix(0.5).stroke_width(1))
            } else {
                (s.color.filled(), s.color.mix(0.45).filled())
            };
            chart.draw_series([
                Rectangle::new([(x0, ymin), (x0 + 0.38, user)], ust),
                Rectangle::new([(x0, user), (x0 + 0.38, total)], sst),
            ])?;
            if si == 1 {
                // The new-connection bar: outlined, to tell it from hello's.
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, ymin), (x0 + 0.38, total)],
                    BLACK.stroke_width(1),
                )))?;
            }
            if r.generator_limited {
                charts::gen_mark(&mut chart, &[(x0 + 0.19, total)])?;
            }
            if r.reps > 1 {
                // Error bar on the total: the repetitions' range.
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![
                        (x0 + 0.19, r.cpu_range.0.max(ymin)),
                        (x0 + 0.19, r.cpu_range.1.max(ymin)),
                    ],
                    BLACK.stroke_width(1),
                )))?;
            }
        }
    }
    charts::legend(
        &leg,
        models,
        Swatch::Bar,
        &[
            "left bar: hello (keep-alive)",
            "right, outlined: a new",
            "   connection per request",
            "dark: user · light: system",
            charts::GEN_NOTE,
            charts::GEN_NOTE2,
        ],
    )?;
    root.present()?;
    Ok(())
}

/// Instructions per request under valgrind per model (log axis): hello
/// (left) and a new connection per request (right, outlined); error bars:
/// the repetitions' range.
fn instructions_chart(costs: &[&crate::cost::InstrCost], out: &mut String) -> DrawResult {
    let mut models: Vec<String> = Vec::new();
    for c in costs {
        if !models.contains(&c.model) {
            models.push(c.model.clone());
        }
    }
    let ymax = costs
        .iter()
        .flat_map(|c| c.samples.iter().copied().chain(c.per_request))
        .fold(1000.0, f64::max)
        * 2.0;
    // A log axis: swoole's or thread-per-connection's tens of thousands
    // beside the event loops' few thousand.
    let ymin = 100.0;
    let root = SVGBackend::with_string(out, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, leg) = charts::with_legend(&root, 190);
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..models.len().max(1) as f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(models.len() * 2 + 1)
        .x_label_formatter(&|x| category_label(*x, &models))
        .y_desc("user-space instructions per request (log)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for c in costs {
        let Some(v) = c.per_request else { continue };
        let s = charts::style(&c.model);
        let mi = models.iter().position(|m| *m == c.model).unwrap_or(0) as f64;
        let right = c.scenario != Scenario::Hello;
        let x0 = mi + 0.1 + if right { 0.4 } else { 0.0 };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, ymin), (x0 + 0.38, v.max(ymin))],
            s.color.filled(),
        )))?;
        if right {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, ymin), (x0 + 0.38, v.max(ymin))],
                BLACK.stroke_width(1),
            )))?;
        }
        if c.samples.len() > 1 {
            let (lo, hi) = summary::range(&c.samples);
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x0 + 0.19, lo.max(ymin)), (x0 + 0.19, hi.max(ymin))],
                BLACK.stroke_width(1),
            )))?;
        }
    }
    charts::legend(
        &leg,
        &models,
        Swatch::Bar,
        &[
            "left bar: hello (keep-alive)",
            "right, outlined: a new",
            "   connection per request",
            "| the repetitions' range",
        ],
    )?;
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
    // A/A copies stay out of the charts (the report's A/A table has them).
    let rows: Vec<Row> = summary::rows(results)
        .into_iter()
        .filter(|r| !r.aa && !r.base)
        .collect();
    let mut out = Vec::new();
    type Draw<'a> = Box<dyn Fn(&mut String) -> DrawResult + 'a>;
    let mut push =
        |kind: String, title: String, caption: String, draw: Draw| -> anyhow::Result<()> {
            let mut svg = String::new();
            draw(&mut svg).map_err(|e| anyhow::anyhow!("drawing {kind} chart: {e}"))?;
            let id = format!("chart-{kind}");
            out.push(Chart {
                svg: with_id(&svg, &id),
                id,
                title,
                caption,
            });
            Ok(())
        };
    for p in [loadgen::Protocol::Http, loadgen::Protocol::Fcgi] {
        let pr: Vec<&Row> = rows.iter().filter(|r| r.protocol == p).collect();
        if pr.iter().all(|r| r.reps == 0) {
            continue;
        }
        let n = p.name();
        // The open loop at one rate for every model; without it, the
        // closed-loop hello runs (each at its own pace).
        let open: Vec<&Row> = pr
            .iter()
            .copied()
            .filter(|r| r.scenario == Scenario::Open && r.reps > 0)
            .collect();
        let rate = crate::curves::open_rate(results, p);
        let (lat_rows, lat_title, lat_caption) = if open.is_empty() {
            (
                pr.iter()
                    .copied()
                    .filter(|r| r.scenario == Scenario::Hello && r.reps > 0)
                    .collect::<Vec<_>>(),
                format!("Latency by percentile, closed loop hello ({n})"),
                "HdrHistogram percentile curves (x: 1/(1−p), log scale) of the closed-loop hello runs — each model at its own pace, so compare shapes, not heights; run the open scenario for an equal load.".to_string(),
            )
        } else {
            (
                open,
                format!(
                    "Latency by percentile at {} req/s, the same load for every model ({n})",
                    rate.map_or("?".into(), crate::sweep::thousands)
                ),
                "Open loop on /hello at one rate for every model (one that every model serving concurrently sustains), latency from each request's intended send time (coordinated omission corrected); x: 1/(1−p), log scale, as HistogramLogAnalyzer draws it. One panel per model family, the other families in grey behind. Flat and low is good; the tail is on the right.".to_string(),
            )
        };
        let specs: Vec<(&str, String, String, bool, Draw)> = vec![
            (
                "rps",
                format!("Requests/s per scenario ({n})"),
                "Throughput of each model in each scenario (log scale), one colour family per model family. Compare models within a group; the open loop runs at one rate for every model by design.".to_string(),
                pr.iter().any(|r| r.reps > 0 && r.idle == 0),
                Box::new(|s: &mut String| rps_chart(&pr, s)),
            ),
            (
                "latency",
                lat_title,
                lat_caption,
                !lat_rows.is_empty(),
                Box::new(|s: &mut String| crate::curves::latency_chart(results, &lat_rows, rate, s)),
            ),
            (
                "idle",
                format!("Requests/s against idle connections ({n})"),
                "A few active connections while 0, 1,000 and 10,000 idle ones are held: select and poll pass every fd to the kernel on each call, epoll only the ready ones.".to_string(),
                pr.iter().any(|r| r.scenario == Scenario::Idle && r.reps > 0),
                Box::new(|s: &mut String| idle_chart(&pr, s)),
            ),
            (
                "cpu",
                format!("Server CPU µs per request ({n})"),
                "CPU the whole server process tree spent per request (user dark, system light above it) on a log axis, so that fork's hundreds of µs do not flatten the rest: keep-alive hello (left) and a new connection per request (right, outlined), the UNP ch.30 comparison, measured.".to_string(),
                pr.iter().any(|r| matches!(r.scenario, Scenario::Hello | Scenario::NewConn) && r.reps > 0),
                Box::new(|s: &mut String| cpu_chart(&pr, s)),
            ),
        ];
        for (kind, title, caption, has, draw) in specs {
            if has {
                push(format!("{kind}-{n}"), title, caption, draw)?;
            }
        }
    }
    for p in [loadgen::Protocol::Http, loadgen::Protocol::Fcgi] {
        let costs: Vec<&crate::cost::InstrCost> = results
            .cost
            .iter()
            .filter(|c| c.protocol == p && c.per_request.is_some())
            .collect();
        if !costs.is_empty() {
            push(
                format!("instructions-{}", p.name()),
                format!("Instructions per request under valgrind ({})", p.name()),
                "User-space instructions the server executed per request (valgrind, two request counts subtracted so start-up cancels): deterministic, unlike anything timed, and blind to the kernel's work (system calls).".to_string(),
                Box::new(move |s: &mut String| instructions_chart(&costs, s)),
            )?;
        }
    }
    for (route, p) in crate::curves::groups(results) {
        let curves: Vec<&crate::sweep::Curve> = results
            .sweeps
            .iter()
            .filter(|c| c.route == route && c.protocol == p && !c.steps.is_empty())
            .collect();
        if curves.is_empty() {
            continue;
        }
        let (n, slug) = (p.name(), crate::curves::slug(&route));
        let bound = crate::sweep::fmt_ms(curves[0].slo_bound_us());
        push(
            format!("sweep-{slug}-{n}"),
            format!("Load–latency curves on {route}: p99 against offered rate ({n})"),
            format!("Each model driven open loop at rising rates (geometric steps) until it saturates; p99 from the intended send time. The curve stays flat while the model keeps up and turns up at its knee — the ring marks its capacity, the highest rate with p99 ≤ {bound} (dashed line). Hollow markers: over the SLO; ▼: the generator's fault (it saturated, or sent late), not the server's. One panel per model family; the other families in grey behind."),
            Box::new(|s: &mut String| crate::curves::sweep_chart(&curves, s)),
        )?;
        push(
            format!("capacity-{slug}-{n}"),
            format!("Capacity at p99 ≤ {bound} on {route} ({n})"),
            "Each model's capacity (dark bar, log scale): the highest swept rate whose p99 stayed within the SLO; the light bar behind it is the highest rate the model achieved at any step, the black tick the rate at which it saturated; ▶: a lower bound (the generator saturated, or the sweep reached --max-rate first). No dark bar: not even the first step met the SLO.".to_string(),
            Box::new(|s: &mut String| crate::curves::capacity_chart(&curves, s)),
        )?;
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

/// The same-run A/B (`--base-bins`): each model's new binary against the
/// base one, run beside it in the same rounds.
fn base_md(r: &Results, rows: &[Row]) -> String {
    let Some(dir) = &r.config.base_bins else {
        return String::new();
    };
    let mut s = format!(
        "\n## Same-run A/B against the base binaries\n\nEvery model also ran from `{dir}`, beside the new binary in the same rounds (in turn first and second), so that whatever else the machine did hit both alike. `compare` gates CPU µs/request on these pairs, beyond its threshold and the A/A floor above.\n\n\
         | run | CPU µs/req new | base | change | req/s new | base |\n|---|---:|---:|---:|---:|---:|\n"
    );
    for b in rows.iter().filter(|b| b.base && b.reps > 0) {
        let key = b.key.strip_suffix("/base").unwrap_or(&b.key);
        let Some(n) = rows.iter().find(|n| n.key == key && n.reps > 0) else {
            continue;
        };
        let change = if b.cpu_us > 0.0 {
            format!("{:+.1} %", (n.cpu_us / b.cpu_us - 1.0) * 100.0)
        } else {
            "–".into()
        };
        let _ = writeln!(
            s,
            "| {key} | {:.2} | {:.2} | {change} | {:.0} | {:.0} |",
            n.cpu_us, b.cpu_us, n.rps, b.rps
        );
    }
    s
}

fn syscalls_md(r: &Results) -> String {
    if r.syscalls.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## System calls per request under strace (batching changes)\n\n`strace -f -c` during a `/hello` run: strace stops the server at every system call, which slows it many times over and changes how many requests each call handles (how many requests one `epoll_wait` or `io_uring_enter` carries; an edge-triggered loop shows ~1 read per request under strace and ~2 without). Read the names as the shape of each model's cost; the table above has the read+write counts measured without strace.\n\n| model | proto | requests | calls/req | by name |\n|---|---|---:|---:|---|\n");
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

/// The peers' section: what each is, where its configuration is, and
/// the models beside their real-world counterparts. Empty without peers.
fn peers_md(r: &Results, rows: &[Row]) -> String {
    if r.config.peers.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Peers: real servers as rows\n\nPeers are shown in _italics_ in the tables and drawn outlined \
         (hollow bars and markers, in greys) in the charts. Each ran from the configuration the suite \
         generated next to these results (`start.sh` runs it again):\n\n",
    );
    for name in &r.config.peers {
        let peer = crate::peers::Peer::parse(name);
        let d = peer.map_or("", |p| p.describe());
        let _ = write!(s, "* _{name}_ — {d}: [peers/{name}/](peers/{name}/)");
        match peer.and_then(|p| p.caveat()) {
            Some(c) => {
                let _ = writeln!(s, ". Note: {c}.");
            }
            None => s.push('\n'),
        }
    }
    let table = crate::peers::counterparts::markdown(rows);
    if !table.is_empty() {
        s.push_str(
            "\n### Models and their real-world counterparts\n\nThe same scenario and protocol in this run. \
             **GEN** marks a run where the generator used ≥ 90 % of its core: compare CPU µs per request there.\n\n",
        );
        s.push_str(&table);
    }
    s
}

/// How to read the report: the matrix table's legend, or for a result set
/// of sweeps alone, how to read them.
fn how_to_read(r: &Results) -> &'static str {
    if r.runs.is_empty() && !r.sweeps.is_empty() {
        crate::curves::HOW_TO_READ_SWEEPS
    } else {
        HOW_TO_READ
    }
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let rows = summary::rows(r);
    let mut s = format!(
        "# iomodels report {}\n\n{}\n{}\n",
        r.run_id,
        machine_md(r),
        how_to_read(r)
    );
    if !r.config.missing.is_empty() {
        let _ = writeln!(s, "Not built (skipped): {}.\n", r.config.missing.join(", "));
    }
    if !r.runs.is_empty() {
        s.push_str(&summary::table(&rows));
        let _ = write!(
            s,
            "\n**User and system time.** {}\n",
            crate::accounting::CPU_SPLIT_NOTE
        );
    }
    s.push_str(&aa_md(&rows));
    s.push_str(&base_md(r, &rows));
    s.push_str(&cost_md(r));
    s.push_str(&peers_md(r, &rows));
    s.push_str(&syscalls_md(r));
    s.push_str(&crate::curves::markdown(r));
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
            // `_peer_`: a peer's name, in italics.
            match c.strip_prefix('_').and_then(|c| c.strip_suffix('_')) {
                Some(name) if !name.is_empty() => {
                    let _ = write!(s, "<{tag}><i>{}</i></{tag}>", escape(name));
                }
                _ => {
                    let _ = write!(s, "<{tag}>{}</{tag}>", escape(c));
                }
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// A Markdown section (a `## title`, paragraphs, one table) as HTML.
fn section_html(s: &mut String, md: &str) {
    for l in md.lines().filter(|l| !l.is_empty() && !l.starts_with('|')) {
        match l.strip_prefix("## ") {
            Some(title) => {
                let _ = writeln!(s, "<h2>{}</h2>", escape(title));
            }
            None => {
                let _ = writeln!(s, "<p>{}</p>", escape(l).replace('`', ""));
            }
        }
    }
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    if !table.is_empty() {
        s.push_str(&md_table_html(&table.join("\n")));
    }
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
        escape(how_to_read(r)).replace("**", ""),
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
    if !r.runs.is_empty() {
        s.push_str("<h2>All runs</h2>\n");
        s.push_str(&md_table_html(&summary::table(&rows)));
        let _ = writeln!(
            s,
            "<p><b>User and system time.</b> {}</p>",
            escape(crate::accounting::CPU_SPLIT_NOTE)
        );
    }
    for md in [aa_md(&rows), base_md(r, &rows)] {
        section_html(&mut s, &md);
    }
    if !r.cost.is_empty() {
        s.push_str("<h2>Instructions per request (valgrind)</h2>\n");
        s.push_str(&md_table_html(&crate::cost::table(&r.cost)));
    }
    if !r.config.peers.is_empty() {
        s.push_str("<h2>Peers: real servers as rows</h2>\n<p>Peers are in italics in the tables and drawn outlined (hollow bars and markers, in greys) in the charts. Configurations as generated for this run:</p>\n<ul>\n");
        for name in &r.config.peers {
            let peer = crate::peers::Peer::parse(name);
            let d = peer.map_or("", |p| p.describe());
            let caveat = peer
                .and_then(|p| p.caveat())
                .map_or(String::new(), |c| format!(". Note: {}.", escape(c)));
            let _ = writeln!(
                s,
                "<li><i>{n}</i> — {}: <a href=\"peers/{n}/\">peers/{n}/</a>{caveat}</li>",
                escape(d),
                n = escape(name)
            );
        }
        s.push_str("</ul>\n");
        let table = crate::peers::counterparts::markdown(&rows);
        if !table.is_empty() {
            s.push_str("<h3>Models and their real-world counterparts</h3>\n");
            s.push_str(&md_table_html(&table));
        }
    }
    if !r.sweeps.is_empty() {
        s.push_str("<h2>Rate sweeps: capacity at the SLO</h2>\n");
        let _ = writeln!(
            s,
            "<p>{}</p>",
            escape(crate::curves::LITTLE).replace("**", "")
        );
        s.push_str(&md_table_html(&crate::sweep::capacity_table(&r.sweeps)));
        s.push_str("<h3>Every step (Little's law beside the connections)</h3>\n");
        s.push_str(&md_table_html(&crate::sweep::steps_table(&r.sweeps)));
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
pub fn category_label(x: f64, names: &[impl AsRef<str>]) -> String {
    let i = x.floor() as usize;
    match names.get(i) {
        Some(name) if (x - x.floor() - 0.5).abs() < 0.01 => name.as_ref().to_string(),
        _ => String::new(),
    }
}
