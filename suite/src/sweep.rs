//! Rate sweeps: each model driven open loop at rising rates, geometric
//! steps from a low rate to past saturation, to draw its load–latency curve
//! (the "hockey stick") and find its **capacity**, the highest rate whose
//! p99 stays within an SLO.
//!
//! One sweep per model × route × protocol, against one fresh server:
//!
//! ```text
//!   rate = from, from·f, from·f², …      (f = --factor, 1.5 by default)
//!   each step: loadgen::step(open loop at rate, warm-up then measured)
//!              ─> verdict: within the SLO · over it · saturated · the generator's fault
//!   stop at the first saturated step (achieved < 90 % of asked, > 1 % errors,
//!   or p99 past the cap with p50 past a tenth of it: a growing queue), when
//!   the generator saturates, or at --max-rate
//! ```
//!
//! **The SLO counts from the route's own wait.** `/wait?us=D` cannot answer
//! in less than D, so its p99 bound is D + `--slo` (10 ms + 1 ms for
//! `/wait?us=10000` at the default); on other routes it is `--slo` itself.
//!
//! **Little's law** at every step: the concurrency the load had, L = achieved
//! rate × mean latency, beside the connections in use and the generator's
//! own time-average of requests in flight. A blocking model with N workers
//! holds at most N requests at once, so with requests of W seconds it cannot
//! pass N / W requests/s: on `/wait?us=10000` with 2 workers, 200.
//!
//! **Connections.** A blocking worker holds a keep-alive connection until
//! the client closes it, so a model that pins connections to workers
//! (prefork, threadpool, fpm) gets exactly `--workers` connections (more
//! would wait unserved in its backlog, and their requests would time out);
//! iterative gets 1; the others get `--connections` (default: 50, and
//! enough for 50,000 requests/s on routes that wait).
//!
//! **Saturation is measured twice.** A saturated step is run once more
//! before it ends the sweep, and the second measurement counts (its `why`
//! keeps the first): on a shared machine one stall can cost a whole step
//! (`--no-retry` turns this off). A step merely over the SLO is not
//! retried: the capacity is the highest step within it, so one noisy step
//! below the knee costs nothing.
//!
//! **The generator's fault.** A step whose generator used ≥ 90 % of its core
//! ends the sweep: the model's capacity is then a lower bound. A step over
//! the SLO while the generator's own lag (a connection was free but the
//! request went late) had a p99 above half the SLO is not held against the
//! server: it is marked and the sweep goes on.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use loadgen::{Arrivals, ConnMode, Protocol, Stop, Target};
use serde::{Deserialize, Serialize};

use crate::procfs::{self, Cost};
use crate::runner::{self, Server, GENERATOR_LIMIT};

/// The default SLO: p99 at most 1 ms above the route's own wait.
pub const DEFAULT_SLO_US: f64 = 1000.0;
/// A step whose achieved rate falls below this share of the asked rate is
/// saturated.
pub const MIN_ACHIEVED: f64 = 0.9;
/// A step with more errors than this share of its requests is saturated.
pub const MAX_ERRORS: f64 = 0.01;

/// How to sweep (one per result set; every curve records what it used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// Request targets swept, e.g. `/hello`, `/wait?us=10000`.
    pub routes: Vec<String>,
    /// First rate, requests/s.
    pub from_rps: f64,
    /// Ratio between consecutive rates.
    pub factor: f64,
    /// At most this many steps per curve.
    pub max_steps: usize,
    /// No step above this rate.
    pub max_rps: f64,
    /// Measured seconds per step.
    pub step_s: f64,
    /// Seconds of the step's own load before measuring.
    pub warmup_s: f64,
    /// Allowed p99 above the route's own wait, µs.
    pub slo_us: f64,
    /// A p99 this far above the route's own wait saturates, µs.
    pub cap_us: f64,
    /// Connections for models that do not pin them (`None`: automatic).
    pub connections: Option<usize>,
    /// Fixed or Poisson arrivals.
    pub arrivals: Arrivals,
    /// Server `--workers`.
    pub workers: usize,
    /// A saturated step is measured again this many times (0 or 1).
    #[serde(default)]
    pub retries: u32,
    /// FastCGI params the load generator adds (a peer's
    /// `SCRIPT_FILENAME`): set per curve, not stored.
    #[serde(skip)]
    pub params: Vec<String>,
    /// Where a peer's configuration is written (`<run dir>/peers`; `None`:
    /// a directory removed after its curve).
    #[serde(skip)]
    pub peer_dir: Option<std::path::PathBuf>,
}

impl Default for SweepSpec {
    fn default() -> SweepSpec {
        SweepSpec {
            routes: vec!["/hello".to_string()],
            from_rps: 100.0,
            factor: 1.5,
            max_steps: 30,
            max_rps: 1_000_000.0,
            step_s: 0.6,
            warmup_s: 0.15,
            slo_us: DEFAULT_SLO_US,
            cap_us: 100_000.0,
            connections: None,
            arrivals: Arrivals::Fixed,
            workers: 2,
            retries: 1,
            params: Vec::new(),
            peer_dir: None,
        }
    }
}

impl SweepSpec {
    /// Checks the values; the first problem is the error.
    pub fn validate(&self) -> Result<(), String> {
        if self.routes.is_empty() || self.routes.iter().any(|r| !r.starts_with('/')) {
            return Err("--route must start with / (e.g. /hello, '/wait?us=10000')".into());
        }
        if !(self.from_rps > 0.0 && self.from_rps.is_finite()) {
            return Err("--from must be a positive rate".into());
        }
        if !(self.factor > 1.0 && self.factor.is_finite()) {
            return Err("--factor must be above 1 (e.g. 1.5)".into());
        }
        if self.max_steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        if self.max_rps < self.from_rps {
            return Err("--max-rate must be at least --from".into());
        }
        if !(self.slo_us > 0.0 && self.cap_us > self.slo_us) {
            return Err("--slo must be positive and --cap above it".into());
        }
        if self.workers == 0 || self.connections == Some(0) {
            return Err("--workers and --connections must be at least 1".into());
        }
        Ok(())
    }

    /// The rate of step `i` (from 0).
    pub fn rate(&self, i: usize) -> f64 {
        self.from_rps * self.factor.powi(i as i32)
    }
}

/// The least time `route` takes by definition, µs: D for `/wait?us=D`, else 0.
pub fn floor_us(route: &str) -> f64 {
    let (path, query) = route.split_once('?').unwrap_or((route, ""));
    if path != "/wait" {
        return 0.0;
    }
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("us="))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Connections an open loop uses against `model`: see the module docs.
pub fn connections(model: &str, workers: usize, asked: Option<usize>, route: &str) -> usize {
    let q = crate::models::quirks(model);
    if q.one_connection {
        return 1;
    }
    if q.pins_connection {
        return workers.max(1);
    }
    asked.unwrap_or_else(|| {
        // Little's law: 50,000 requests/s of D µs each need 0.05·D in flight.
        let need = (floor_us(route) * 0.05).ceil() as usize;
        need.clamp(50, 1000)
    })
}

/// What one step showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The rate was served with p99 within the SLO.
    Within,
    /// The rate was served, with p99 over the SLO.
    OverSlo,
    /// Achieved fell short of asked, errors passed 1 %, or p99 passed the
    /// cap while p50 passed the SLO (a queue that grows).
    Saturated,
    /// The generator used ≥ 90 % of its core: it may have set the pace.
    GeneratorLimited,
    /// Over the SLO (or short of the rate with connections free) while the
    /// generator itself sent late: not counted.
    GeneratorLate,
}

impl Verdict {
    /// A short word for tables.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Within => "ok",
            Verdict::OverSlo => "over SLO",
            Verdict::Saturated => "saturated",
            Verdict::GeneratorLimited => "GEN",
            Verdict::GeneratorLate => "gen late",
        }
    }
}

/// One rate of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Rate asked, requests/s.
    pub asked_rps: f64,
    /// Verified responses per second.
    pub achieved_rps: f64,
    /// Latency from the intended send time (coordinated-omission corrected), µs.
    pub p50_us: u64,
    /// p99.
    pub p99_us: u64,
    /// p99.9.
    pub p999_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Errors of every class.
    pub errors: u64,
    /// Connections the generator had.
    pub connections: usize,
    /// Little's law: achieved rate × mean corrected latency (requests in
    /// the system, the generator's queue for a free connection included).
    pub little_l: f64,
    /// Achieved rate × mean latency from the actual send.
    pub little_sent: f64,
    /// The generator's time-average of requests sent and not yet answered
    /// (measured independently of the two above).
    pub in_flight: f64,
    /// p99 of intended → actual send, µs.
    pub send_lag_p99_us: u64,
    /// p99 of the generator's own part of it, µs.
    pub generator_lag_p99_us: u64,
    /// The generator's share of its core.
    pub generator_cpu: f64,
    /// What the step showed.
    pub verdict: Verdict,
    /// Why, in words.
    pub why: String,
    /// The server tree's costs over the step (absent against a server this
    /// process does not own).
    pub server: Option<Cost>,
    /// The load generator's report: the latency histogram whole, the
    /// others (uncorrected, connect, send lag) as percentiles only (their
    /// `hdr` is empty).
    pub report: loadgen::Report,
}

/// One model's sweep on one route and protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Model (binary without `-server`).
    pub model: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Request target.
    pub route: String,
    /// Server `--workers`.
    pub workers: usize,
    /// Connections used.
    pub connections: usize,
    /// Keep-alive or a connection per request.
    pub conn_mode: ConnMode,
    /// The route's own wait, µs.
    pub floor_us: f64,
    /// Allowed p99 above it, µs.
    pub slo_us: f64,
    /// The steps, in rising rate.
    pub steps: Vec<Step>,
    /// Highest asked rate with p99 within the SLO (before saturation).
    pub capacity_rps: Option<f64>,
    /// The sweep ended before the server saturated (the generator
    /// saturated, or --max-rate/--steps was reached): the capacity is at
    /// least this.
    pub capacity_is_lower_bound: bool,
    /// Asked rate of the first saturated step.
    pub saturated_at_rps: Option<f64>,
    /// Highest achieved rate of any step.
    pub max_achieved_rps: f64,
    /// Why the sweep ended.
    pub stop: String,
    /// A failure (server did not start, target unreachable).
    pub error: Option<String>,
}

impl Curve {
    /// p99 bound of the SLO, µs.
    pub fn slo_bound_us(&self) -> f64 {
        self.floor_us + self.slo_us
    }

    /// `model/route/protocol`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.model, self.route, self.protocol.name())
    }

    /// The capacity as a table cell: `1,200`, `≥ 80,000`, `< 100`.
    pub fn capacity_text(&self) -> String {
        match (self.capacity_rps, &self.error) {
            (_, Some(_)) => "failed".into(),
            (Some(c), _) if self.capacity_is_lower_bound => format!("≥ {}", thousands(c)),
            (Some(c), _) => thousands(c),
            (None, _) => match self.steps.first() {
                Some(s) => format!("< {}", thousands(s.asked_rps)),
                None => "–".into(),
            },
        }
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Judges a step's report. `floor_us`/`slo_us`/`cap_us` as in the spec.
pub fn judge(
    asked: f64,
    report: &loadgen::Report,
    floor_us: f64,
    slo_us: f64,
    cap_us: f64,
) -> (Verdict, String) {
    let achieved = crate::summary::good_rps(report);
    let attempts = report.requests + report.errors.transport();
    let errors = report.errors.total();
    let p99 = report.latency.p99_us as f64;
    let gen_lag = report
        .open_loop
        .as_ref()
        .and_then(|o| o.generator_lag.as_ref())
        .map_or(0, |g| g.p99_us) as f64;
    if report.cpu.utilization >= GENERATOR_LIMIT {
        return (
            Verdict::GeneratorLimited,
            format!(
                "the generator used {:.0} % of its core",
                report.cpu.utilization * 100.0
            ),
        );
    }
    // Short of the rate while most connections were free and the
    // generator itself sent late: it did not send, the server was not asked.
    let idle_connections = report.in_flight_mean < 0.5 * report.connections as f64;
    if achieved < MIN_ACHIEVED * asked && idle_connections && gen_lag > slo_us / 2.0 {
        return (
            Verdict::GeneratorLate,
            format!(
                "achieved {} of {} req/s with connections free: the generator sent late (p99 {})",
                thousands(achieved),
                thousands(asked),
                fmt_ms(gen_lag)
            ),
        );
    }
    if achieved < MIN_ACHIEVED * asked {
        return (
            Verdict::Saturated,
            format!(
                "achieved {} of {} req/s",
                thousands(achieved),
                thousands(asked)
            ),
        );
    }
    if attempts > 0 && errors as f64 > MAX_ERRORS * attempts as f64 {
        return (
            Verdict::Saturated,
            format!("{errors} errors in {attempts} requests"),
        );
    }
    // A queue that grows lifts the median too; a stall of the machine
    // (a descheduled thread) only lifts the tail.
    let p50 = report.latency.p50_us as f64;
    if p99 > floor_us + cap_us && p50 > floor_us + slo_us.max(cap_us / 10.0) {
        return (
            Verdict::Saturated,
            format!("p99 {} past the cap, p50 {}", fmt_ms(p99), fmt_ms(p50)),
        );
    }
    if p99 <= floor_us + slo_us {
        return (Verdict::Within, format!("p99 {}", fmt_ms(p99)));
    }
    if gen_lag > slo_us / 2.0 {
        return (
            Verdict::GeneratorLate,
            format!(
                "p99 {} while the generator itself sent late (p99 {})",
                fmt_ms(p99),
                fmt_ms(gen_lag)
            ),
        );
    }
    (Verdict::OverSlo, format!("p99 {}", fmt_ms(p99)))
}

/// `1234` µs → `1.23 ms`; under 1 ms in µs.
pub fn fmt_ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Sweeps `target` (any server: `server_pid` adds its /proc costs per
/// step). `on_step` sees each step as it ends (progress).
#[allow(clippy::too_many_arguments)]
pub fn sweep_target(
    target: &Target,
    model: &str,
    route: &str,
    spec: &SweepSpec,
    connections: usize,
    conn_mode: ConnMode,
    server_pid: Option<u32>,
    on_step: &mut dyn FnMut(&Step),
) -> Curve {
    let floor = floor_us(route);
    let mut curve = Curve {
        model: model.to_string(),
        protocol: target.protocol,
        route: route.to_string(),
        workers: spec.workers,
        connections,
        conn_mode,
        floor_us: floor,
        slo_us: spec.slo_us,
        steps: Vec::new(),
        capacity_rps: None,
        capacity_is_lower_bound: false,
        saturated_at_rps: None,
        max_achieved_rps: 0.0,
        stop: String::new(),
        error: None,
    };
    let mut i = 0;
    loop {
        let rate = spec.rate(i);
        if i >= spec.max_steps {
            curve.stop = format!("{} steps done", spec.max_steps);
            curve.capacity_is_lower_bound = true;
            break;
        }
        if rate > spec.max_rps * (1.0 + 1e-9) {
            curve.stop = format!("--max-rate {} reached", thousands(spec.max_rps));
            curve.capacity_is_lower_bound = true;
            break;
        }
        // A saturated step is measured once more before it ends the
        // sweep: on a shared machine one stall can cost a whole step.
        let mut first: Option<Step> = None;
        let step = loop {
            let step = match measure_step(
                target,
                route,
                spec,
                rate,
                connections,
                conn_mode,
                server_pid,
            ) {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            let retried = first.is_some();
            if step.verdict != Verdict::Saturated || retried || spec.retries == 0 {
                break Ok(match first {
                    Some(f) => Step {
                        why: format!(
                            "{} (second try; the first: {}, {})",
                            step.why,
                            f.verdict.word(),
                            f.why
                        ),
                        ..step
                    },
                    None => step,
                });
            }
            first = Some(step);
            // Let a server that fell behind drain what it still holds.
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                curve.error = Some(format!("step at {} req/s: {e}", thousands(rate)));
                curve.stop = "failed".into();
                break;
            }
        };
        let achieved = step.achieved_rps;
        let verdict = step.verdict;
        on_step(&step);
        curve.max_achieved_rps = curve.max_achieved_rps.max(achieved);
        if verdict == Verdict::Within {
            curve.capacity_rps = Some(rate);
        }
        curve.steps.push(step);
        match verdict {
            Verdict::Saturated => {
                curve.saturated_at_rps = Some(rate);
                let last = curve.steps.last().map_or("", |s| s.why.as_str());
                curve.stop = format!("saturated at {} req/s: {last}", thousands(rate));
                if connections > 1
                    && !crate::models::quirks(model).pins_connection
                    && curve
                        .steps
                        .last()
                        .is_some_and(|s| s.in_flight >= 0.9 * connections as f64)
                {
                    curve.stop.push_str(&format!(
                        " (all {connections} connections were busy: more --connections may go further)"
                    ));
                }
                break;
            }
            Verdict::GeneratorLimited => {
                curve.capacity_is_lower_bound = true;
                curve.stop = format!(
                    "the generator saturated at {} req/s (the server may go further)",
                    thousands(rate)
                );
                break;
            }
            _ => {}
        }
        i += 1;
    }
    curve
}

/// Runs one step at `rate` and judges it.
fn measure_step(
    target: &Target,
    route: &str,
    spec: &SweepSpec,
    rate: f64,
    connections: usize,
    conn_mode: ConnMode,
    server_pid: Option<u32>,
) -> Result<Step, loadgen::Error> {
    let mut c = loadgen::Config::new(target.clone());
    c.threads = 1;
    c.connections = connections;
    c.conn_mode = conn_mode;
    c.rate = Some(rate);
    c.arrivals = spec.arrivals;
    c.warmup_s = spec.warmup_s;
    c.stop = Stop::DurationS(spec.step_s);
    c.timeout_s = 5.0;
    c.params = spec.params.clone();
    c.routes = vec![loadgen::RouteSpec {
        target: route.to_string(),
        weight: 1,
    }];
    let run = loadgen::Run::new(&c)?;
    let before = server_pid.map(procfs::snapshot);
    let t0 = Instant::now();
    let m = run.measure()?;
    let wall = t0.elapsed().as_secs_f64();
    let cost = server_pid.zip(before).map(|(pid, before)| {
        let after = procfs::snapshot(pid);
        let attempts = m.report.requests + m.report.errors.transport();
        Cost::between(&before, &after, attempts, wall)
    });
    let mut r = m.report;
    // Keep the latency histogram whole; the others keep their percentiles
    // (a sweep has hundreds of steps: this keeps results.json small).
    let (send_lag, generator_lag) = match r.open_loop.as_mut() {
        Some(o) => (o.send_lag.as_mut(), o.generator_lag.as_mut()),
        None => (None, None),
    };
    for h in [
        r.latency_uncorrected.as_mut(),
        Some(&mut r.connect_time),
        send_lag,
        generator_lag,
    ]
    .into_iter()
    .flatten()
    {
        h.hdr.clear();
    }
    let (verdict, why) = judge(rate, &r, floor_us(route), spec.slo_us, spec.cap_us);
    let achieved = crate::summary::good_rps(&r);
    let ol = r.open_loop.as_ref();
    Ok(Step {
        asked_rps: rate,
        achieved_rps: achieved,
        p50_us: r.latency.p50_us,
        p99_us: r.latency.p99_us,
        p999_us: r.latency.p999_us,
        mean_us: r.latency.mean_us,
        errors: r.errors.total(),
        connections,
        little_l: achieved * r.latency.mean_us / 1e6,
        little_sent: achieved * r.latency_uncorrected.as_ref().map_or(0.0, |u| u.mean_us) / 1e6,
        in_flight: r.in_flight_mean,
        send_lag_p99_us: ol.and_then(|o| o.send_lag.as_ref()).map_or(0, |s| s.p99_us),
        generator_lag_p99_us: ol
            .and_then(|o| o.generator_lag.as_ref())
            .map_or(0, |s| s.p99_us),
        generator_cpu: r.cpu.utilization,
        verdict,
        why,
        server: cost,
        report: r,
    })
}

/// Sweeps one model: a fresh server, then [`sweep_target`].
pub fn sweep_model(
    bin_dir: &std::path::Path,
    model: &str,
    protocol: Protocol,
    route: &str,
    spec: &SweepSpec,
    on_step: &mut dyn FnMut(&Step),
) -> Curve {
    let conns = connections(model, spec.workers, spec.connections, route);
    let conn_mode = if crate::models::quirks(model).closes_each_request {
        ConnMode::NewConn
    } else {
        ConnMode::KeepAlive
    };
    let failed = |e: String| Curve {
        model: model.to_string(),
        protocol,
        route: route.to_string(),
        workers: spec.workers,
        connections: conns,
        conn_mode,
        floor_us: floor_us(route),
        slo_us: spec.slo_us,
        steps: Vec::new(),
        capacity_rps: None,
        capacity_is_lower_bound: false,
        saturated_at_rps: None,
        max_achieved_rps: 0.0,
        stop: "failed".into(),
        error: Some(e),
    };
    if let Some(peer) = crate::peers::Peer::parse(model) {
        // A peer (a real server) from its generated configuration.
        let started = crate::peers::Site::create().and_then(|site| {
            let tmp;
            let dir = match &spec.peer_dir {
                Some(d) => d.join(peer.name()),
                None => {
                    tmp = site.dir().join("config");
                    tmp.clone()
                }
            };
            let p = crate::peers::start(peer, &site, &dir, bin_dir, spec.workers)?;
            Ok((site, p))
        });
        let (_site, p) = match started {
            Ok(x) => x,
            Err(e) => return failed(e.to_string()),
        };
        let target = match runner::target(&p.launch.addr, protocol) {
            Ok(t) => t,
            Err(e) => return failed(e.to_string()),
        };
        let spec = SweepSpec {
            params: p.launch.params.clone(),
            ..spec.clone()
        };
        return sweep_target(
            &target,
            model,
            route,
            &spec,
            conns,
            conn_mode,
            Some(p.server.pid()),
            on_step,
        );
    }
    let server = match Server::start(&runner::server_bin(bin_dir, model), protocol, spec.workers) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let scheme = match protocol {
        Protocol::Http => "http",
        Protocol::Fcgi => "fcgi",
    };
    // In a --netns run with the relay's delay, the relay's address.
    let addr = match crate::netns::route(&server.addr) {
        Ok(a) => a,
        Err(e) => return failed(e.to_string()),
    };
    let target = match Target::parse(&format!("{scheme}://{addr}/"), None, None) {
        Ok(t) => t,
        Err(e) => return failed(e.to_string()),
    };
    sweep_target(
        &target,
        model,
        route,
        spec,
        conns,
        conn_mode,
        Some(server.pid()),
        on_step,
    )
}

/// Sweeps every model × route × protocol, printing one line per curve on
/// stderr (and a live line per step on a terminal).
pub fn sweep_all(
    bin_dir: &std::path::Path,
    models: &[String],
    protocols: &[Protocol],
    spec: &SweepSpec,
) -> Vec<Curve> {
    let tty = std::io::stderr().is_terminal();
    let total = models
        .iter()
        .map(|m| match crate::peers::Peer::parse(m) {
            Some(p) => protocols.iter().filter(|&&x| x == p.protocol()).count(),
            None => protocols.len(),
        })
        .sum::<usize>()
        * spec.routes.len();
    let started = Instant::now();
    let mut out = Vec::new();
    for route in &spec.routes {
        for &protocol in protocols {
            for model in models {
                // A peer runs only in the protocol it speaks.
                if crate::peers::Peer::parse(model).is_some_and(|p| p.protocol() != protocol) {
                    continue;
                }
                let n = out.len() + 1;
                let mut on_step = |s: &Step| {
                    if tty {
                        let mut e = std::io::stderr();
                        let _ = write!(
                            e,
                            "\r\x1b[2K[{n}/{total}] {:.0}s {model} {route} {}: {} req/s → p99 {} ({})",
                            started.elapsed().as_secs_f64(),
                            protocol.name(),
                            thousands(s.asked_rps),
                            fmt_ms(s.p99_us as f64),
                            s.verdict.word()
                        );
                        let _ = e.flush();
                    }
                };
                let c = sweep_model(bin_dir, model, protocol, route, spec, &mut on_step);
                if tty {
                    eprint!("\r\x1b[2K");
                }
                eprintln!(
                    "[{n}/{total}] {:.0}s {model} {route} {}: capacity {} req/s at p99 ≤ {}, {}",
                    started.elapsed().as_secs_f64(),
                    protocol.name(),
                    c.capacity_text(),
                    fmt_ms(c.slo_bound_us()),
                    c.error.as_deref().unwrap_or(&c.stop)
                );
                out.push(c);
            }
        }
    }
    out
}

/// Models that set the equal load: all but those that serve one request at
/// a time or start a process per request (they would pull the common rate
/// down to theirs), and no peer.
pub fn sets_equal_load(model: &str) -> bool {
    let q = crate::models::quirks(model);
    // Peers are measured at the models' rate, never set it.
    !q.one_connection && !q.process_per_request && crate::peers::Peer::parse(model).is_none()
}

/// A rate every model of `values` (model, sustained rate) that
/// [`sets_equal_load`] sustains: their lowest, rounded down to 1, 1.5, 2,
/// 3, 5 or 7 × a power of ten, so a chart title reads well.
pub fn equal_rate<'a>(values: impl IntoIterator<Item = (&'a str, f64)>) -> Option<f64> {
    let low = values
        .into_iter()
        .filter(|(m, r)| sets_equal_load(m) && *r > 0.0)
        .map(|(_, r)| r)
        .fold(f64::INFINITY, f64::min);
    if !low.is_finite() {
        return None;
    }
    let p = 10f64.powf(low.log10().floor());
    let m = [7.0, 5.0, 3.0, 2.0, 1.5, 1.0]
        .into_iter()
        .find(|m| m * p <= low * (1.0 + 1e-9))
        .unwrap_or(1.0);
    Some(m * p)
}

/// The equal rate from a set of sweeps: the capacities on `/hello` over
/// `protocol` (half the highest achieved rate for a model that never met
/// the SLO).
pub fn equal_rate_from_sweeps(curves: &[Curve], protocol: Protocol) -> Option<f64> {
    equal_rate(
        curves
            .iter()
            .filter(|c| c.protocol == protocol && c.route == "/hello" && c.error.is_none())
            .map(|c| {
                let r = c
                    .capacity_rps
                    .unwrap_or(c.max_achieved_rps * crate::scenarios::OPEN_FRACTION);
                (c.model.as_str(), r)
            }),
    )
}

/// The sweep as a Markdown table: one row per curve.
pub fn capacity_table(curves: &[Curve]) -> String {
    let mut s = String::from(
        "| model | route | proto | conns | capacity req/s | p99 bound | saturated at | max achieved | steps | why it stopped |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for c in curves {
        s.push_str(&format!(
            "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} |\n",
            c.model,
            c.route,
            c.protocol.name(),
            c.connections,
            if c.conn_mode == ConnMode::NewConn {
                " new"
            } else {
                ""
            },
            c.capacity_text(),
            fmt_ms(c.slo_bound_us()),
            c.saturated_at_rps.map_or("–".into(), thousands),
            thousands(c.max_achieved_rps),
            c.steps.len(),
            c.error.as_deref().unwrap_or(&c.stop).replace('|', "/"),
        ));
    }
    s
}

/// Every step as a Markdown table, Little's law beside the connections.
pub fn steps_table(curves: &[Curve]) -> String {
    let mut s = String::from(
        "| model | route | proto | asked | achieved | p50 | p99 | p99.9 | L = λ·W | in flight | conns | send lag p99 | gen CPU | verdict |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for c in curves {
        for st in &c.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.0}% | {} |\n",
                c.model,
                c.route,
                c.protocol.name(),
                thousands(st.asked_rps),
                thousands(st.achieved_rps),
                fmt_ms(st.p50_us as f64),
                fmt_ms(st.p99_us as f64),
                fmt_ms(st.p999_us as f64),
                st.little_l,
                st.in_flight,
                st.connections,
                fmt_ms(st.send_lag_p99_us as f64),
                st.generator_cpu * 100.0,
                st.verdict.word(),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_connections_and_rates() {
        assert_eq!(floor_us("/wait?us=10000"), 10_000.0);
        assert_eq!(floor_us("/hello"), 0.0);
        assert_eq!(floor_us("/cpu?n=10"), 0.0);
        assert_eq!(connections("prefork", 2, Some(300), "/hello"), 2);
        assert_eq!(connections("iterative", 2, None, "/hello"), 1);
        assert_eq!(connections("epoll", 2, None, "/hello"), 50);
        assert_eq!(connections("epoll", 2, None, "/wait?us=10000"), 500);
        assert_eq!(connections("epoll", 2, Some(7), "/wait?us=10000"), 7);
        let s = SweepSpec::default();
        assert!((s.rate(2) - 225.0).abs() < 1e-9);
        s.validate().unwrap();
        let bad = SweepSpec {
            factor: 1.0,
            ..SweepSpec::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn equal_rate_is_the_lowest_rounded_down() {
        let v = [
            ("epoll", 90_000.0),
            ("prefork", 23_000.0),
            ("fork", 2_000.0),
            ("iterative", 500.0),
        ];
        assert_eq!(equal_rate(v), Some(20_000.0));
        assert_eq!(equal_rate([("epoll", 1_499.0)]), Some(1_000.0));
        assert_eq!(equal_rate([("epoll", 1_500.0)]), Some(1_500.0));
        assert_eq!(equal_rate([("fork", 1_500.0)]), None);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }
}
