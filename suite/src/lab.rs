//! Teaching labs: each one reproduces a classic published result with one
//! command (`iomodels lab run NAME`), and says whether its *shape* held on
//! this machine.
//!
//! A lab is declarative: a list of [`Point`]s (a model with its flags, a
//! route, connections, idle connections, workers, a rate, optionally a
//! background load, a freeze, a crash or a round-trip time), a chart, and a judge that turns the
//! measured points into figures and a verdict. The runner measures every
//! point against a fresh server, `rounds` times in alternating order (the
//! machine may be shared: each figure is the median of its rounds), and
//! writes `results/labs/NAME/<run-id>/` with the chart (SVG), the
//! measurements (`lab.json`) and a filled-in sheet (`sheet.md`).
//!
//! **Verdicts test relations** (a ratio, a slope, an ordering), never
//! absolute numbers: a laptop and a CI runner differ by a factor, the shape
//! of the result does not.
//!
//! The labs' sheets, written for students, are `docs/labs/NAME.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::{ConnMode, Protocol, RouteSpec, Stop};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::charts::{self, DrawResult};
use crate::procfs::{self, Cost};
use crate::runner::{self, Server};

/// One measured configuration of a lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The series this point belongs to (a line on the chart), e.g. `poll`.
    pub series: String,
    /// Its place on the chart's x axis (idle connections, workers, …).
    pub x: f64,
    /// The model (binary `<model>-server`).
    pub model: String,
    /// Model flags, e.g. `--accept flock`.
    pub flags: Vec<String>,
    /// The measured route.
    pub route: String,
    /// Active connections of the measured load.
    pub connections: usize,
    /// Keep-alive, or a new connection per request.
    pub conn_mode: ConnMode,
    /// Idle connections held open through the measured run.
    pub idle: usize,
    /// Server `--workers`.
    pub workers: usize,
    /// Open-loop rate (`None`: closed loop).
    pub rate: Option<f64>,
    /// A second load running beside the measured one: (route, connections).
    pub background: Option<(String, usize)>,
    /// SIGSTOP the server `.0` seconds into the run, SIGCONT `.1` s later.
    pub freeze: Option<(f64, f64)>,
    /// SIGKILL one worker process (the server itself when it has none)
    /// this many seconds into the run.
    #[serde(default)]
    pub crash: Option<f64>,
    /// What else is measured beside the load (see [`Probe`]).
    #[serde(default)]
    pub probe: Probe,
    /// A network between generator and server: the server in its own
    /// network namespace, the load generator in another, joined by a veth
    /// pair with this round-trip time, s (`Some(0.0)`: the veth alone; see
    /// [`crate::netns`]). `None`: loopback in this namespace.
    #[serde(default)]
    pub rtt: Option<f64>,
}

/// Measurements a point takes beside the load generator's report; their
/// figures land in [`Measured::extra`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// Nothing more.
    #[default]
    None,
    /// No warm-up; 0.3 s after the ready line (the workers a server forks
    /// at start are waiting by then) one request on a fresh connection
    /// (`first_us`: what the first client waits), then the load with a
    /// timeline: per second `t<i>.workers` (the tree's processes minus the
    /// master, the most seen in that second), `t<i>.p99_us`, `t<i>.max_us`
    /// and `t<i>.requests` (the load generator's one-second interval log).
    Timeline,
    /// The server's own `/status` counters before and after the measured
    /// run: `enters_status` (io_uring_enter calls), `requests_status`.
    Status,
    /// A newcomer beside the idle connections: once the server's open
    /// descriptors stop growing (every idle connection it will take is
    /// taken), one `GET /status` on a fresh connection. `newcomer_ok` (1:
    /// answered 200), `newcomer_us`, `server_fds` (its open descriptors
    /// then), `server_threads`, `server_processes`, `busy_cores` (the
    /// tree's CPU over the next second, /proc ticks) and, when answered,
    /// `server_connections` (its own count, the newcomer and the measured
    /// client included).
    Newcomer,
}

impl Point {
    /// A closed-loop keep-alive point with one worker-free default.
    pub fn new(series: &str, x: f64, model: &str, route: &str, connections: usize) -> Point {
        Point {
            series: series.to_string(),
            x,
            model: model.to_string(),
            flags: Vec::new(),
            route: route.to_string(),
            connections,
            conn_mode: ConnMode::KeepAlive,
            idle: 0,
            workers: 2,
            rate: None,
            background: None,
            freeze: None,
            crash: None,
            probe: Probe::None,
            rtt: None,
        }
    }
    fn flags(mut self, f: &[&str]) -> Point {
        self.flags = f.iter().map(|s| s.to_string()).collect();
        self
    }
    fn workers(mut self, n: usize) -> Point {
        self.workers = n;
        self
    }
    fn new_conn(mut self) -> Point {
        self.conn_mode = ConnMode::NewConn;
        self
    }
    fn idle(mut self, n: usize) -> Point {
        self.idle = n;
        self
    }
    fn rate(mut self, r: f64) -> Point {
        self.rate = Some(r);
        self
    }
    fn probe(mut self, p: Probe) -> Point {
        self.probe = p;
        self
    }
    /// Measured across a link with this round-trip time, s (see
    /// [`Point::rtt`]); `None`: loopback.
    pub fn rtt(mut self, seconds: Option<f64>) -> Point {
        self.rtt = seconds;
        self
    }
}

/// What one point measured (medians over the rounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The point.
    pub point: Point,
    /// Achieved requests/s.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// p99 latency, µs (corrected for coordinated omission in open loop).
    pub p99_us: f64,
    /// p99.9 latency, µs.
    pub p999_us: f64,
    /// p99 measured from the actual send (open loop only), µs.
    pub p99_uncorrected_us: Option<f64>,
    /// p99.9 measured from the actual send (open loop only), µs.
    pub p999_uncorrected_us: Option<f64>,
    /// Responses that failed, all kinds.
    pub errors: u64,
    /// Requests that succeeded.
    pub requests: u64,
    /// The server's own costs (CPU per request, context switches, memory).
    pub cost: Cost,
    /// Requests per worker (`X-Worker`), of the last round.
    pub per_worker: Vec<u64>,
    /// Why the point could not be measured, if it could not.
    pub error: Option<String>,
    /// Further figures (medians over the rounds): every point has `lost`
    /// (requests that got no response: read, write, timeout errors),
    /// `refused` (connections that could not be opened), `status_errors`,
    /// `idle_held`, `connections_opened`, `rw_syscalls` (read + write
    /// system calls per request, /proc/PID/io), and where the machine
    /// allows `csw` (context switches per request, perf, exited tasks
    /// included) and `cgroup_peak_kib`; the [`Probe`] adds its own.
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

impl Measured {
    /// An extra figure, NaN when absent.
    pub fn x(&self, key: &str) -> f64 {
        self.extra.get(key).copied().unwrap_or(f64::NAN)
    }
}

/// A figure of the sheet: name, value as text.
pub type Figure = (String, String);

/// A lab's judgement of its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Whether the published shape held.
    pub holds: bool,
    /// The numbers behind the verdict, one line each.
    pub reasons: Vec<String>,
    /// Further figures for the sheet's table.
    pub figures: Vec<Figure>,
}

impl Judgement {
    /// The verdict's words.
    pub fn word(&self) -> &'static str {
        if self.holds {
            "SHAPE HOLDS"
        } else {
            "SHAPE DIFFERS"
        }
    }
}

/// How a lab's chart is drawn.
pub struct ChartSpec {
    /// The x axis' description.
    pub x_desc: &'static str,
    /// The y axis' description.
    pub y_desc: &'static str,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The plotted value of a measured point.
    pub y: fn(&Measured) -> f64,
    /// A reference line (the published or analytic answer), drawn dashed grey.
    pub ideal: Option<fn(f64) -> f64>,
    /// The lines to draw, when they are not one per series of `y` against
    /// the point's x (a timeline, percentiles of one run).
    pub lines: Option<Lines>,
}

/// A drawn line: its name and its (x, y) points.
pub type Line = (String, Vec<(f64, f64)>);

/// What draws a lab's own lines from its measurements.
pub type Lines = fn(&[Measured]) -> Vec<Line>;

/// One lab.
pub struct Lab {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line: what it reproduces.
    pub title: &'static str,
    /// The shape it checks.
    pub shape: &'static str,
    /// The points, quick or full.
    pub points: fn(quick: bool) -> Vec<Point>,
    /// Measured seconds per point and rounds: (quick, full).
    pub timing: ((f64, u32), (f64, u32)),
    /// The chart.
    pub chart: ChartSpec,
    /// The verdict.
    pub judge: fn(&[Measured], quick: bool) -> Judgement,
}

mod c10k;
mod crash;
mod fpm_pm;
mod herd;
mod libevent;
mod omission;
mod rtt;
mod uring_batching;

/// Every lab, in the order `lab all` runs them (a plain list: a new lab is
/// one line here and one module).
pub fn labs() -> Vec<Lab> {
    vec![
        littles_law(),
        unp30(),
        tlpi63(),
        libevent::lab(),
        c10k::lab(),
        herd::lab(),
        blocking_in_reactor(),
        omission::lab(),
        fpm_pm::lab(),
        uring_batching::lab(),
        crash::lab(),
        rtt::lab(),
    ]
}

/// The lab called `name`.
pub fn find(name: &str) -> Option<Lab> {
    labs().into_iter().find(|l| l.name == name)
}

// ---------------------------------------------------------------- the labs

const WAIT_US: f64 = 10_000.0;

fn littles_law() -> Lab {
    Lab {
        name: "littles-law",
        title: "Little's law: a blocking server's throughput is capped at workers ÷ service time",
        shape: "throughput proportional to N (X(N) ÷ (N·X(1)) within 0.6–1.6, rising), never above the cap N ÷ 10 ms (1.1×) nor far below it (0.4×)",
        points: |quick| {
            let ns: &[usize] = if quick { &[1, 2, 4] } else { &[1, 2, 4, 8] };
            let route = "/wait?us=10000";
            let mut v = Vec::new();
            for &n in ns {
                for m in ["prefork", "threadpool"] {
                    v.push(Point::new(m, n as f64, m, route, n).workers(n));
                }
                // The event loop has no workers to cap it: the connections
                // (requests in flight) are the N of Little's law.
                v.push(Point::new("epoll", n as f64, "epoll", route, n).workers(1));
            }
            v
        },
        // Three quick rounds: one second at 100–400 req/s is a few hundred
        // requests, and one slow wake-up on a loaded machine shows.
        timing: ((1.0, 3), (3.0, 3)),
        chart: ChartSpec {
            x_desc: "workers (prefork, threadpool) · connections (epoll)",
            y_desc: "requests/s",
            log_x: true,
            log_y: true,
            y: |m| m.rps,
            ideal: Some(|n| n / (WAIT_US / 1e6)),
            lines: None,
        },
        judge: |ms, _| {
            let mut holds = true;
            let mut reasons = Vec::new();
            for s in series_names(ms) {
                let pts: Vec<&Measured> = ms.iter().filter(|m| m.point.series == s).collect();
                let mut line = format!("{s}:");
                // The cap is N ÷ 10 ms. What a busy machine adds to each
                // 10 ms (scheduling, timer slack) lowers every point alike,
                // so the verdict is the proportionality, not the distance
                // to the cap (printed).
                let one = pts.first().map_or(0.0, |m| m.rps / m.point.x);
                for m in &pts {
                    let cap = m.point.x / (WAIT_US / 1e6);
                    let r = m.rps / cap;
                    let prop = m.rps / m.point.x / one;
                    holds &= (0.4..=1.1).contains(&r)
                        && (0.6..=1.6).contains(&prop)
                        && m.error.is_none();
                    let _ = write!(
                        line,
                        " N={} {:.0}/{:.0} req/s = {:.2}× the cap, {:.2}× N·X(1);",
                        m.point.x, m.rps, cap, r, prop
                    );
                }
                let rising = pts.windows(2).all(|w| w[1].rps > w[0].rps);
                holds &= rising;
                let _ = write!(line, " rising with N: {}", yes(rising));
                reasons.push(line);
            }
            Judgement {
                holds,
                reasons,
                figures: Vec::new(),
            }
        },
    }
}

fn unp30() -> Lab {
    Lab {
        name: "unp30",
        title: "UNP ch. 30: process control per client — fork per connection against a pool",
        shape: "fork's CPU per request ≥ 10× prefork's (shared accept), new connection per request",
        points: |quick| {
            let mut v = vec![
                Point::new("iterative", 0.0, "iterative", "/hello", 1).new_conn(),
                Point::new("fork", 1.0, "fork", "/hello", 2).new_conn(),
                Point::new("prefork", 2.0, "prefork", "/hello", 2).new_conn(),
            ];
            if !quick {
                for (i, a) in ["flock", "reuseport", "exclusive"].iter().enumerate() {
                    v.push(
                        Point::new(
                            &format!("prefork --accept {a}"),
                            3.0 + i as f64,
                            "prefork",
                            "/hello",
                            2,
                        )
                        .flags(&["--accept", a])
                        .new_conn(),
                    );
                }
                v.push(Point::new("thread", 6.0, "thread", "/hello", 2).new_conn());
                v.push(Point::new("threadpool", 7.0, "threadpool", "/hello", 2).new_conn());
            }
            v
        },
        timing: ((1.5, 3), (2.0, 3)),
        chart: ChartSpec {
            x_desc: "model",
            y_desc: "server CPU µs per request",
            log_x: false,
            log_y: true,
            y: |m| m.cost.cpu_us_per_request,
            ideal: None,
            lines: None,
        },
        judge: |ms, quick| {
            let cpu = |s: &str| find_series(ms, s).map(|m| m.cost.cpu_us_per_request);
            let (Some(f), Some(p)) = (cpu("fork"), cpu("prefork")) else {
                return missing("fork or prefork");
            };
            let r = f / p;
            let mut figures = Vec::new();
            for m in ms.iter().filter(|m| m.point.model == "prefork") {
                figures.push((
                    format!("requests per worker, {} (fig. 30.2)", m.point.series),
                    format!("{:?}", m.per_worker),
                ));
            }
            // Quick runs are short (CPU is counted in 10 ms ticks) and the
            // tests run debug builds, which inflate prefork's user-space
            // share but not fork's kernel work: half the bar.
            let need = if quick { 5.0 } else { 10.0 };
            let mut reasons = vec![format!(
                "fork {f:.1} µs/request ÷ prefork {p:.1} µs/request = {r:.1}× (needs ≥ {need}×)"
            )];
            for m in ms
                .iter()
                .filter(|m| m.error.is_none() && m.point.series != "fork")
            {
                reasons.push(format!(
                    "{}: {:.1} µs/request, fork ÷ it = {:.1}×",
                    m.point.series,
                    m.cost.cpu_us_per_request,
                    f / m.cost.cpu_us_per_request
                ));
            }
            Judgement {
                holds: r >= need,
                reasons,
                figures,
            }
        },
    }
}

/// CPU per request against the descriptors a readiness call watches, on
/// log–log axes (tlpi63 and libevent).
fn cpu_per_watched_chart() -> ChartSpec {
    ChartSpec {
        x_desc: "idle connections watched",
        y_desc: "server CPU µs per request",
        log_x: true,
        log_y: true,
        y: |m| m.cost.cpu_us_per_request,
        ideal: None,
        lines: None,
    }
}

fn tlpi63() -> Lab {
    Lab {
        name: "tlpi63",
        title: "TLPI 63: the cost of one readiness call against the descriptors watched",
        shape: "poll's and select's CPU per request grow with idle descriptors (slope → 1 on log–log), epoll's stays flat (slope ≈ 0); select absent past 1,024",
        points: |quick| {
            let levels: &[usize] = if quick { &[10, 100, 1000] } else { &[10, 100, 1000, 10_000] };
            let mut v = Vec::new();
            for &n in levels {
                for m in ["select", "poll", "epoll"] {
                    if m == "select" && n + 16 > 1024 {
                        continue; // FD_SETSIZE: select-server refuses such fds
                    }
                    v.push(Point::new(m, n as f64, m, "/hello", 1).idle(n).workers(1));
                }
            }
            v
        },
        // Three quick rounds, so one disturbed round cannot move a median:
        // at one connection a request's cost is mostly the server's sleep
        // and wake-up; a CI run with two rounds once measured epoll 2.4×
        // from 10 to 1,000 idle, against 1.06× in three runs right after.
        timing: ((1.0, 3), (2.0, 3)),
        chart: cpu_per_watched_chart(),
        judge: |ms, _| {
            let mut holds = true;
            let mut reasons = Vec::new();
            let cpu = |s: &str| -> Vec<(f64, f64)> {
                ms.iter()
                    .filter(|m| m.point.series == s && m.error.is_none())
                    .map(|m| (m.point.x, m.cost.cpu_us_per_request))
                    .collect()
            };
            let poll = cpu("poll");
            let epoll = cpu("epoll");
            let (Some(pf), Some(pl), Some(ef), Some(el)) =
                (poll.first(), poll.last(), epoll.first(), epoll.last())
            else {
                return missing("poll or epoll");
            };
            let pg = pl.1 / pf.1;
            let eg = el.1 / ef.1;
            let ratio = pl.1 / el.1;
            holds &= pg >= 2.5 && eg <= 1.6 && ratio >= 2.0;
            reasons.push(format!(
                "poll {:.1} → {:.1} µs/request from {} to {} idle = {pg:.1}× (needs ≥ 2.5×); last-decade slope {:.2}",
                pf.1, pl.1, pf.0, pl.0, slope(&poll)
            ));
            reasons.push(format!(
                "epoll {:.1} → {:.1} µs/request = {eg:.2}× (needs ≤ 1.6×); last-decade slope {:.2}",
                ef.1, el.1, slope(&epoll)
            ));
            reasons.push(format!("poll ÷ epoll at {} idle = {ratio:.1}× (needs ≥ 2×)", pl.0));
            let sel = cpu("select");
            if let (Some(sf), Some(sl)) = (sel.first(), sel.last()) {
                let sg = sl.1 / sf.1;
                reasons.push(format!(
                    "select {:.1} → {:.1} µs/request up to {} idle = {sg:.1}× (not judged: it stops at 1,024)",
                    sf.1, sl.1, sl.0
                ));
            }
            Judgement {
                holds,
                reasons,
                figures: Vec::new(),
            }
        },
    }
}

fn blocking_in_reactor() -> Lab {
    Lab {
        name: "blocking-in-reactor",
        title: "One blocking call in an event loop stalls every connection",
        shape: "with --blocking-wait, /hello's p99 beside one slow /wait?us=100000 client is ≥ 10× the parked timer's, and ≥ half the wait, on epoll and on tokio's current-thread runtime (std::thread::sleep in a task)",
        points: |_| {
            let mut v = Vec::new();
            let series: [(&str, &str, &[&str], usize); 5] = [
                ("epoll (parked timer)", "epoll", &[], 1),
                ("epoll --blocking-wait", "epoll", &["--blocking-wait"], 1),
                ("tokio current-thread (sleep().await)", "tokio", &["--flavor", "current-thread"], 1),
                ("tokio current-thread --blocking-wait", "tokio", &["--flavor", "current-thread", "--blocking-wait"], 1),
                ("tokio 2 workers --blocking-wait", "tokio", &["--blocking-wait"], 2),
            ];
            for (s, model, f, workers) in series {
                let mut p = Point::new(s, 0.0, model, "/hello", 4).flags(f).workers(workers);
                p.background = Some(("/wait?us=100000".to_string(), 1));
                v.push(p);
            }
            v
        },
        timing: ((2.0, 1), (5.0, 3)),
        chart: ChartSpec {
            x_desc: "",
            y_desc: "/hello p99 latency, µs",
            log_x: false,
            log_y: true,
            y: |m| m.p99_us,
            ideal: None,
            lines: None,
        },
        judge: |ms, _| {
            let (Some(p), Some(b)) = (ms.first(), ms.get(1)) else {
                return missing("a series");
            };
            let r = b.p99_us / p.p99_us.max(1.0);
            // tokio's current-thread runtime: the same lesson in async
            // syntax. With 2 workers the other worker steals the stalled
            // one's queued tasks: shown, not judged.
            let mut tokio_holds = true;
            let mut more = Vec::new();
            if let (Some(tp), Some(tb)) = (ms.get(2), ms.get(3)) {
                let tr = tb.p99_us / tp.p99_us.max(1.0);
                tokio_holds = tr >= 10.0 && tb.p99_us >= 50_000.0;
                more.push(format!(
                    "tokio current-thread /hello p99: blocking {} ÷ parked {} = {tr:.0}× (needs ≥ 10× and ≥ half the wait)",
                    crate::sweep::fmt_ms(tb.p99_us),
                    crate::sweep::fmt_ms(tp.p99_us)
                ));
            }
            if let Some(tm) = ms.get(4) {
                more.push(format!(
                    "tokio with 2 workers, --blocking-wait: /hello p99 {} at {:.0} req/s (work stealing moves queued tasks off the stalled thread)",
                    crate::sweep::fmt_ms(tm.p99_us),
                    tm.rps
                ));
            }
            Judgement {
                holds: r >= 10.0 && b.p99_us >= 50_000.0 && tokio_holds,
                reasons: [vec![
                    format!(
                        "/hello p99: blocking {} ÷ parked {} = {r:.0}× (needs ≥ 10×)",
                        crate::sweep::fmt_ms(b.p99_us),
                        crate::sweep::fmt_ms(p.p99_us)
                    ),
                    format!(
                        "blocking p99 {} against the 100 ms wait (needs ≥ half of it)",
                        crate::sweep::fmt_ms(b.p99_us)
                    ),
                    format!(
                        "/hello throughput: parked {:.0} req/s, blocking {:.0} req/s",
                        p.rps, b.rps
                    ),
                ],
                more]
                .concat(),
                figures: Vec::new(),
            }
        },
    }
}

// ---------------------------------------------------------------- helpers

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn missing(what: &str) -> Judgement {
    Judgement {
        holds: false,
        reasons: vec![format!("could not measure {what}")],
        figures: Vec::new(),
    }
}

fn find_series<'a>(ms: &'a [Measured], s: &str) -> Option<&'a Measured> {
    ms.iter().find(|m| m.point.series == s && m.error.is_none())
}

/// The series in first-seen order.
pub fn series_names(ms: &[Measured]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for m in ms {
        if !v.contains(&m.point.series) {
            v.push(m.point.series.clone());
        }
    }
    v
}

/// The log–log slope between the last two points.
fn slope(pts: &[(f64, f64)]) -> f64 {
    match pts {
        [.., a, b] if a.0 > 0.0 && a.1 > 0.0 && b.1 > 0.0 => (b.1 / a.1).ln() / (b.0 / a.0).ln(),
        _ => f64::NAN,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------- running

/// Further figures of one measurement, by name.
type Extra = BTreeMap<String, f64>;

/// One round of one point: the loadgen report, the server's cost and the
/// further figures (see [`Measured::extra`]).
fn measure_once(
    bin_dir: &Path,
    p: &Point,
    secs: f64,
) -> anyhow::Result<(loadgen::Report, Cost, Extra)> {
    let bin = runner::server_bin(bin_dir, &p.model);
    anyhow::ensure!(
        bin.exists(),
        "{} is not built (cargo build --workspace)",
        bin.display()
    );
    let mut cmd = Command::new(&bin);
    cmd.args(&p.flags);
    // In a cgroup and under a context-switch counter where the machine
    // allows: exact CPU, memory and switches of the whole tree.
    let (mut server, acct) = Server::start_accounted_with(cmd, Protocol::Http, p.workers)?;
    let root = server.pid();
    // Across a link whose delay is the relay's: the relay's address.
    let t = runner::target(&crate::netns::route(&server.addr)?, Protocol::Http)?;
    let timeline = p.probe == Probe::Timeline;
    let config = |route: &str, conns: usize, idle: usize, secs: f64| {
        let mut c = loadgen::Config::new(t.clone());
        c.threads = 1;
        c.connections = conns;
        c.conn_mode = p.conn_mode;
        c.idle = idle;
        c.rate = p.rate;
        c.stop = Stop::DurationS(secs);
        // A burst against a growing pool waits for workers longer than a
        // request ever should.
        // A crash: a request unanswered for a second (fifty times its
        // service time) is lost (a server may hold a dead worker's
        // connection open much longer).
        c.timeout_s = if p.crash.is_some() {
            1.0
        } else if timeline {
            15.0
        } else {
            5.0
        };
        c.routes = vec![RouteSpec {
            target: route.to_string(),
            weight: 1,
        }];
        c
    };
    let mut extra = Extra::new();
    if timeline {
        // No warm-up: the first client of a fresh server is the figure.
        std::thread::sleep(Duration::from_millis(300));
        let (took, _) = get(&server.addr, "/hello")?;
        extra.insert("first_us".into(), took.as_secs_f64() * 1e6);
    } else {
        // A short warm-up (no idle connections, no background).
        let warm = config(&p.route, p.connections, 0, 0.2);
        loadgen::run(&warm).map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
    }
    let background = p.background.clone().map(|(route, conns)| {
        let c = config(&route, conns, 0, secs + 1.0);
        std::thread::spawn(move || loadgen::run(&c))
    });
    if background.is_some() {
        std::thread::sleep(Duration::from_millis(300));
    }
    let status_before = match p.probe {
        Probe::Status => Some(status(&server.addr)?),
        _ => None,
    };
    let mut c = config(&p.route, p.connections, p.idle, secs);
    let log = timeline.then(|| {
        std::env::temp_dir().join(format!("iomodels-lab-{}-{}.hlog", std::process::id(), root))
    });
    c.hdr_log = log.clone();
    let run = loadgen::Run::new(&c).map_err(|e| anyhow::anyhow!("{e}"))?;
    let freezer = p.freeze.map(|(at, len)| {
        let pid = Pid::from_raw(root as i32);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(at));
            let _ = kill(pid, Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs_f64(len));
            let _ = kill(pid, Signal::SIGCONT);
        })
    });
    // The victim of a crash: the youngest process of the tree (a worker:
    // the tree is listed master first, then its children, then theirs),
    // or the server itself when it is one process.
    let crasher = p.crash.map(|at| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(at));
            let victim = *procfs::tree(root).last().unwrap_or(&root);
            let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
        })
    });
    let newcomer = (p.probe == Probe::Newcomer).then(|| {
        let addr = server.addr.clone();
        let want = p.idle;
        std::thread::spawn(move || newcomer(root, &addr, want))
    });
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(timeline));
    let t0 = Instant::now();
    let sampler = {
        let on = sampling.clone();
        std::thread::spawn(move || {
            let mut most: Vec<usize> = Vec::new();
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                let i = t0.elapsed().as_secs() as usize;
                let n = procfs::tree(root).len().saturating_sub(1);
                if most.len() <= i {
                    most.resize(i + 1, 0);
                }
                most[i] = most[i].max(n);
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let before = runner::Counters::start(Some(&acct), root);
    let report = run.start().map_err(|e| anyhow::anyhow!("{e}"));
    let wall = t0.elapsed().as_secs_f64();
    let after = runner::Counters::end(Some(&acct), root);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let status_after = match status_before {
        Some(_) => status(&server.addr).ok(),
        None => None,
    };
    for h in [freezer, crasher].into_iter().flatten() {
        let _ = h.join();
    }
    if let Some(Ok(figures)) = newcomer.map(|h| h.join()) {
        extra.extend(figures);
    }
    if let Some(b) = background {
        let _ = b.join();
    }
    let most = sampler.join().unwrap_or_default();
    server.stop();
    let report = report?;
    let attempts = report.requests + report.errors.transport();
    let cost = after.cost_since(&before, Some(&acct), attempts, wall);
    if before.csw.is_some() && after.csw.is_some() {
        extra.insert("csw".into(), cost.csw_per_request.unwrap_or(f64::NAN));
    }
    if let Some(k) = cost.cgroup_peak_kib {
        extra.insert("cgroup_peak_kib".into(), k as f64);
    }
    let e = &report.errors;
    for (k, v) in [
        ("lost", e.read + e.write + e.timeout),
        ("refused", e.connect),
        ("status_errors", e.status + e.verify),
        ("idle_held", report.idle.held),
        ("connections_opened", report.connections_opened),
    ] {
        extra.insert(k.into(), v as f64);
    }
    if let Some(rw) = cost.syscalls_rw() {
        extra.insert("rw_syscalls".into(), rw);
    }
    if let (Some(b), Some(a)) = (status_before, status_after) {
        for k in ["enters", "requests"] {
            let d = a[k].as_f64().unwrap_or(0.0) - b[k].as_f64().unwrap_or(0.0);
            extra.insert(format!("{k}_status"), d);
        }
    }
    if let Some(log) = log {
        let text = std::fs::read(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        for (i, (n, p99, max)) in intervals(&text).into_iter().enumerate() {
            extra.insert(format!("t{i}.requests"), n as f64);
            extra.insert(format!("t{i}.p99_us"), p99 as f64);
            extra.insert(format!("t{i}.max_us"), max as f64);
            extra.insert(
                format!("t{i}.workers"),
                most.get(i).copied().unwrap_or(0) as f64,
            );
        }
    }
    Ok((report, cost, extra))
}

/// [`measure_once`], across a link of its own when the point has an RTT:
/// two fresh namespaces (removed when this returns, on error too), the
/// server started in one, the load generated from a thread in the other.
fn measure_placed(
    bin_dir: &Path,
    p: &Point,
    secs: f64,
) -> anyhow::Result<(loadgen::Report, Cost, Extra)> {
    let Some(rtt) = p.rtt else {
        return measure_once(bin_dir, p, secs);
    };
    let spec = crate::netns::LinkSpec {
        rtt: Duration::from_secs_f64(rtt),
        ..Default::default()
    };
    let (_net, _setup, placement) = crate::netns::build(&spec)?;
    crate::netns::run_in(placement, || measure_once(bin_dir, p, secs))?
}

/// Whether any of `labs` measures across a link (needs root, and the
/// namespaces must go on Ctrl-C: see [`crate::netns::clean_up_on_signals`]).
pub fn uses_netns(labs: &[Lab]) -> bool {
    labs.iter().any(|l| {
        [true, false]
            .iter()
            .any(|&q| (l.points)(q).iter().any(|p| p.rtt.is_some()))
    })
}

/// [`Probe::Newcomer`]: waits until the load generator has opened its
/// idle connections and the server holds `want` descriptors (or their
/// numbers stopped growing), then sends one request on a fresh connection.
fn newcomer(root: u32, addr: &str, want: usize) -> Extra {
    let count = |pid: &str| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    // Until `n()` reaches `want` or has not grown for `still`.
    let settle = |n: &dyn Fn() -> usize, still: Duration| {
        let end = Instant::now() + Duration::from_secs(30);
        let (mut last, mut since) = (0, Instant::now());
        while Instant::now() < end {
            let now = n();
            if now >= want {
                break;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() > still {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // First the load generator (in this process) opens the idle
    // connections one by one — a connect that met a full listen backlog
    // waits for its SYN to be sent again, a second or more — then the
    // server takes the last of them.
    let server = root.to_string();
    settle(&|| count("self"), Duration::from_secs(3));
    settle(&|| count(&server), Duration::from_millis(500));
    let fds = || count(&server);
    let mut e = Extra::new();
    e.insert("server_fds".into(), fds() as f64);
    let then = procfs::snapshot(root);
    e.insert("server_threads".into(), then.threads as f64);
    e.insert("server_processes".into(), then.processes as f64);
    let t0 = Instant::now();
    let answer = get(addr, "/status");
    e.insert("newcomer_us".into(), t0.elapsed().as_secs_f64() * 1e6);
    e.insert("newcomer_ok".into(), answer.is_ok() as u8 as f64);
    // The CPU of one second holding them all (the measured trickle goes on).
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let later = procfs::snapshot(root);
    let busy = later.user_s + later.sys_s - then.user_s - then.sys_s;
    e.insert("busy_cores".into(), busy / t1.elapsed().as_secs_f64());
    if let Ok((_, body)) = answer {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            e.insert(
                "server_connections".into(),
                v["connections"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    e
}

/// Requests, p99 and max (µs) of each interval of a load generator's
/// interval log.
fn intervals(text: &[u8]) -> Vec<(u64, u64, u64)> {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut v = Vec::new();
    for item in IntervalLogIterator::new(text) {
        let Ok(LogEntry::Interval(iv)) = item else {
            continue;
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(iv.encoded_histogram())
        else {
            continue;
        };
        let h: Result<hdrhistogram::Histogram<u64>, _> =
            hdrhistogram::serialization::Deserializer::new().deserialize(&mut bytes.as_slice());
        if let Ok(h) = h {
            let p99 = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            };
            v.push((h.len(), p99, h.max()));
        }
    }
    v
}

/// One `GET path` on a fresh connection: how long it took (connect to the
/// end of the response) and the body.
fn get(addr: &str, path: &str) -> anyhow::Result<(Duration, String)> {
    use std::io::{Read, Write};
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        anyhow::bail!("GET {path}: no response");
    };
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head:.40}");
    Ok((took, body.to_string()))
}

/// The server's `/status` JSON.
fn status(addr: &str) -> anyhow::Result<serde_json::Value> {
    let (_, body) = get(addr, "/status")?;
    serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("/status: {e}"))
}

/// Measures `points`, `rounds` times each in alternating order, and keeps
/// each figure's median. `progress` prints a line per measurement.
pub fn measure(
    bin_dir: &Path,
    points: &[Point],
    secs: f64,
    rounds: u32,
    progress: &mut dyn FnMut(&str),
) -> Vec<Measured> {
    let n = points.len();
    let mut got: Vec<Vec<(loadgen::Report, Cost, Extra)>> = vec![Vec::new(); n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for i in order {
            let p = &points[i];
            progress(&format!(
                "  round {}/{rounds} · {} at {} …",
                round + 1,
                p.series,
                p.x
            ));
            match measure_placed(bin_dir, p, secs) {
                Ok(r) => got[i].push(r),
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    points
        .iter()
        .zip(got)
        .zip(errors)
        .map(|((p, rs), error)| {
            let med = |f: &dyn Fn(&(loadgen::Report, Cost, Extra)) -> f64| {
                median(rs.iter().map(f).collect())
            };
            let opt = |f: &dyn Fn(&loadgen::Report) -> Option<f64>| {
                let v: Vec<f64> = rs.iter().filter_map(|r| f(&r.0)).collect();
                (!v.is_empty()).then(|| median(v))
            };
            let mut cost = rs.first().map(|r| r.1).unwrap_or_default();
            cost.cpu_us_per_request = med(&|r| r.1.cpu_us_per_request);
            cost.user_us_per_request = med(&|r| r.1.user_us_per_request);
            cost.sys_us_per_request = med(&|r| r.1.sys_us_per_request);
            cost.voluntary_csw_per_request = med(&|r| r.1.voluntary_csw_per_request);
            cost.involuntary_csw_per_request = med(&|r| r.1.involuntary_csw_per_request);
            cost.pss_kib = med(&|r| r.1.pss_kib as f64) as u64;
            Measured {
                point: p.clone(),
                rps: med(&|r| r.0.rps),
                p50_us: med(&|r| r.0.latency.p50_us as f64),
                p99_us: med(&|r| r.0.latency.p99_us as f64),
                p999_us: med(&|r| r.0.latency.p999_us as f64),
                p99_uncorrected_us: opt(&|r| {
                    r.latency_uncorrected.as_ref().map(|h| h.p99_us as f64)
                }),
                p999_uncorrected_us: opt(&|r| {
                    r.latency_uncorrected.as_ref().map(|h| h.p999_us as f64)
                }),
                errors: rs.iter().map(|r| r.0.errors.total()).sum(),
                requests: rs.iter().map(|r| r.0.requests).sum(),
                cost,
                per_worker: rs
                    .last()
                    .map(|r| r.0.workers.values().copied().collect())
                    .unwrap_or_default(),
                error: if rs.is_empty() { error } else { None },
                extra: {
                    let mut keys: Vec<&String> = rs.iter().flat_map(|r| r.2.keys()).collect();
                    keys.sort();
                    keys.dedup();
                    keys.into_iter()
                        .map(|k| {
                            let v = rs.iter().filter_map(|r| r.2.get(k).copied()).collect();
                            (k.clone(), median(v))
                        })
                        .collect()
                },
            }
        })
        .collect()
}

/// What `lab run` wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The lab.
    pub lab: String,
    /// Quick mode.
    pub quick: bool,
    /// The measured points.
    pub measured: Vec<Measured>,
    /// The verdict and its numbers.
    pub judgement: Judgement,
    /// Wall time of the run, s.
    pub wall_s: f64,
}

/// Runs `lab` and writes `<out>/<lab>/<run-id>/`; returns the outcome and
/// the directory.
pub fn run(
    lab: &Lab,
    bin_dir: &Path,
    quick: bool,
    out: &Path,
    run_id: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<(Outcome, PathBuf)> {
    let t0 = Instant::now();
    let points = (lab.points)(quick);
    let (secs, rounds) = if quick { lab.timing.0 } else { lab.timing.1 };
    let measured = measure(bin_dir, &points, secs, rounds, progress);
    let judgement = (lab.judge)(&measured, quick);
    let outcome = Outcome {
        lab: lab.name.to_string(),
        quick,
        measured,
        judgement,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    let dir = out.join(lab.name).join(run_id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut svg = String::new();
    chart(lab, &outcome.measured, &mut svg).map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    std::fs::write(dir.join("chart.svg"), svg)?;
    std::fs::write(dir.join("sheet.md"), sheet(lab, &outcome))?;
    std::fs::write(
        dir.join("lab.json"),
        serde_json::to_string_pretty(&outcome)? + "\n",
    )?;
    Ok((outcome, dir))
}

/// The filled-in sheet: what ran, every measured figure, the verdict and
/// the numbers behind it.
pub fn sheet(lab: &Lab, o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Lab `{}`: {}\n", lab.name, lab.title);
    let _ = writeln!(
        s,
        "The sheet to read first (question, prediction, why): `docs/labs/{}.md`.\n",
        lab.name
    );
    let _ = writeln!(
        s,
        "Command: `iomodels lab run {}{}` · {:.0} s\n",
        lab.name,
        if o.quick { " --quick" } else { "" },
        o.wall_s
    );
    let _ = writeln!(s, "## Verdict: **{}**\n", o.judgement.word());
    let _ = writeln!(s, "Shape checked: {}.\n", lab.shape);
    for r in &o.judgement.reasons {
        let _ = writeln!(s, "- {r}");
    }
    let _ = writeln!(s, "\n![chart](chart.svg)\n\n## Measured\n");
    let _ = writeln!(
        s,
        "| series | x | req/s | p50 | p99 | p99.9 | CPU µs/req | csw/req | procs | threads | PSS MiB | errors |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for m in &o.measured {
        if let Some(e) = &m.error {
            let _ = writeln!(
                s,
                "| {} | {} | not measured: {e} |||||||||",
                m.point.series, m.point.x
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {:.1} | {} |",
            m.point.series,
            m.point.x,
            m.rps,
            crate::sweep::fmt_ms(m.p50_us),
            crate::sweep::fmt_ms(m.p99_us),
            crate::sweep::fmt_ms(m.p999_us),
            m.cost.cpu_us_per_request,
            m.cost.voluntary_csw_per_request + m.cost.involuntary_csw_per_request,
            m.cost.processes,
            m.cost.threads,
            m.cost.pss_kib as f64 / 1024.0,
            m.errors
        );
    }
    for (k, v) in &o.judgement.figures {
        let _ = writeln!(s, "\n- {k}: {v}");
    }
    let exact = o.measured.iter().any(|m| !m.cost.cpu_source.is_ticks());
    let perf = o.measured.iter().any(|m| m.extra.contains_key("csw"));
    let _ = writeln!(
        s,
        "\nEach figure is the median of the rounds; a round measures every point once, \
         in alternating order (the machine may be shared). CPU is the server's whole \
         process tree: {}. Context switches: {}. Memory: PSS from /proc{}.",
        if exact {
            "exact, from its cgroup (exited threads and reaped children included)"
        } else {
            "from /proc in 10 ms ticks (no cgroup could be made here)"
        },
        if perf {
            "an inherited perf counter (exited tasks included)"
        } else {
            "/proc's live tasks (perf is not available here)"
        },
        if o.measured
            .iter()
            .any(|m| m.extra.contains_key("cgroup_peak_kib"))
        {
            "; the cgroup's peak in lab.json (`cgroup_peak_kib`)"
        } else {
            ""
        }
    );
    s
}

/// The lab's chart: one line (or marker column) per series.
pub fn chart(lab: &Lab, ms: &[Measured], out: &mut String) -> DrawResult {
    let c = &lab.chart;
    let pts: Vec<Line> = match c.lines {
        Some(lines) => lines(ms)
            .into_iter()
            .map(|(s, p)| {
                let ok = |p: &(f64, f64)| p.1.is_finite() && (p.1 > 0.0 || !c.log_y);
                (s, p.into_iter().filter(ok).collect())
            })
            .collect(),
        None => series_names(ms)
            .iter()
            .map(|s| {
                let p = ms
                    .iter()
                    .filter(|m| &m.point.series == s && m.error.is_none())
                    .map(|m| (m.point.x, (c.y)(m)))
                    .filter(|p| p.1.is_finite() && p.1 > 0.0)
                    .collect();
                (s.clone(), p)
            })
            .collect(),
    };
    let names: Vec<String> = pts.iter().map(|p| p.0.clone()).collect();
    let all: Vec<(f64, f64)> = pts.iter().flat_map(|p| p.1.iter().copied()).collect();
    let (mut xmin, mut xmax) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut ymin, mut ymax) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if all.is_empty() {
        (xmin, xmax, ymin, ymax) = (1.0, 10.0, 1.0, 10.0);
    }
    if let Some(f) = c.ideal {
        ymin = ymin.min(f(xmin));
        ymax = ymax.max(f(xmax));
    }
    if !c.log_x && xmin == xmax {
        xmax = xmin + 1.0;
    }
    let root = SVGBackend::with_string(out, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, leg) = charts::with_legend(&root, 220);
    let (xlo, xhi) = if c.log_x {
        (xmin / 1.5, xmax * 1.5)
    } else {
        (xmin - 0.5, xmax + 0.5)
    };
    let (ylo, yhi) = if c.log_y {
        (ymin / 2.0, ymax * 2.0)
    } else {
        (0.0, ymax * 1.2)
    };
    let styles: Vec<charts::Style> = names
        .iter()
        .map(|s| charts::style(s.split_whitespace().next().unwrap_or(s)))
        .collect();
    // Series of the same model get distinct markers.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_desc)
                .y_desc(c.y_desc)
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            if let Some(f) = c.ideal {
                let line: Vec<(f64, f64)> = (0..=40)
                    .map(|i| {
                        let x = xlo * (xhi / xlo).powf(i as f64 / 40.0);
                        (x, f(x))
                    })
                    .collect();
                charts::line(
                    &mut chart,
                    &line,
                    RGBColor(150, 150, 150),
                    charts::Dash::Dashed,
                    1,
                )?;
            }
            for (i, (_, p)) in pts.iter().enumerate() {
                let mut st = styles[i];
                st.marker = [
                    charts::Marker::Circle,
                    charts::Marker::Square,
                    charts::Marker::Triangle,
                    charts::Marker::Diamond,
                    charts::Marker::Cross,
                ][i % 5];
                if p.len() > 1 {
                    charts::line(&mut chart, p, st.color, st.dash, 2)?;
                }
                charts::markers(&mut chart, p, st, 5, false)?;
            }
        }};
    }
    macro_rules! builder {
        () => {
            ChartBuilder::on(&plot)
                .caption(lab.title, ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(60)
        };
    }
    match (c.log_x, c.log_y) {
        (true, true) => {
            draw!(builder!().build_cartesian_2d((xlo..xhi).log_scale(), (ylo..yhi).log_scale())?)
        }
        (false, true) => draw!(builder!().build_cartesian_2d(xlo..xhi, (ylo..yhi).log_scale())?),
        (true, false) => draw!(builder!().build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)?),
        (false, false) => draw!(builder!().build_cartesian_2d(xlo..xhi, ylo..yhi)?),
    }
    // The legend: one entry per series, in the chart's order.
    let text = ("sans-serif", 13).into_font();
    for (i, s) in names.iter().enumerate() {
        let y = 40 + 22 * i as i32;
        leg.draw(&Rectangle::new(
            [(8, y - 5), (26, y + 5)],
            styles[i].color.filled(),
        ))?;
        leg.draw(&Text::new(s.clone(), (32, y - 7), text.clone()))?;
    }
    if c.ideal.is_some() {
        let y = 40 + 22 * names.len() as i32;
        leg.draw(&PathElement::new(
            vec![(8, y), (26, y)],
            RGBColor(150, 150, 150).stroke_width(1),
        ))?;
        leg.draw(&Text::new("the expected answer", (32, y - 7), text.clone()))?;
    }
    root.present()?;
    Ok(())
}
