//! # loadgen
//!
//! The iomodels load generator, a library (used by the orchestrator) and the
//! `loadgen` binary. It speaks HTTP/1.1 and FastCGI through the workload
//! crate's client codecs, sends a weighted mix of the workload's routes,
//! checks every response body against the route's
//! [`Expectation`], and records latencies in
//! HdrHistograms (µs, 3 significant digits), one per thread, merged at the
//! end.
//!
//! * Closed loop (wrk): each connection sends its next request when the
//!   previous response arrived (or keeps `pipeline` in flight).
//! * Open loop (wrk2, `rate`): requests have intended send times on a fixed
//!   schedule and latency runs from that time, so a stalled server shows up
//!   in the percentiles instead of silently slowing the generator down
//!   (coordinated omission).
//!
//! ```no_run
//! use loadgen::{Config, Stop, Target};
//! let target = Target::parse("http://127.0.0.1:8080/hello", None, None)?;
//! let mut config = Config::new(target);
//! config.connections = 50;
//! config.stop = Stop::DurationS(5.0);
//! let report = loadgen::run(&config)?;
//! println!("{:.0} requests/s, p99 {} µs", report.rps, report.latency.p99_us);
//! # Ok::<(), loadgen::Error>(())
//! ```
//!
//! Modules: [`config`] (what to run), `engine` (the per-thread event
//! loops), `uring` (their io_uring backend, [`Io::Uring`], the default
//! where the kernel has it; epoll through mio otherwise), [`report`] (what
//! was measured), `hdrlog` (the interval log).

pub mod config;
mod engine;
mod hdrlog;
pub mod report;
pub mod segment;
mod uring;

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use iomodels_workload::{fcgi, http, routes, Expectation};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

pub use config::{
    parse_duration, Arrivals, Config, ConnMode, Endpoint, Io, Protocol, RouteSpec, Stop, Target,
};
pub use report::{Cpu, Errors, HistogramSummary, Idle, OpenLoop, Report, SCHEMA_VERSION};
pub use segment::{Agent, Segment};

use engine::{Interval, Plan, Prepared, Progress, ThreadSpec};

/// Why a run could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad flag, URL or combination of settings.
    Config(String),
    /// The target cannot be reached.
    Unreachable(String),
    /// Something on this side failed (a file, a thread, a system limit).
    Io(String),
    /// A report or histogram that cannot be read back.
    Report(String),
}

impl Error {
    /// The exit status the binary uses: 2 for the user's mistakes and an
    /// unreachable target, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Unreachable(_) => 2,
            Error::Io(_) | Error::Report(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(s) | Error::Unreachable(s) | Error::Io(s) | Error::Report(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for Error {}

/// Runs the load `config` describes and returns what was measured:
/// [`Run::new`] then [`Run::start`].
pub fn run(config: &Config) -> Result<Report, Error> {
    Run::new(config)?.start()
}

/// A report with its histograms already decoded (the report carries them
/// serialized): what a caller that goes on computing with them wants.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The report, as [`run`] returns it.
    pub report: Report,
    /// Latency, µs (from the intended send time in an open loop).
    pub latency: hdrhistogram::Histogram<u64>,
    /// Open loop: intended send time → actual send, µs (empty in a closed loop).
    pub send_lag: hdrhistogram::Histogram<u64>,
    /// Open loop: the generator's own part of the send lag, µs.
    pub generator_lag: hdrhistogram::Histogram<u64>,
}

/// Runs one open-loop step — `config` at its `rate` — and returns the
/// report with its histograms: the building block of a rate sweep (the
/// orchestrator's `iomodels sweep` calls it once per rate).
pub fn step(config: &Config) -> Result<Measured, Error> {
    if config.rate.is_none() {
        return Err(Error::Config(
            "a step is an open loop: give it a rate".to_string(),
        ));
    }
    Run::new(config)?.measure()
}

/// A run whose target was found reachable, ready to start.
pub struct Run {
    config: Config,
    addr: config::Addr,
    probe: engine::Probe,
    io: Io,
}

impl Run {
    /// Checks `config`, resolves the target and connects to it once (that
    /// connection becomes the first of the run), so an unreachable target
    /// is an [`Error::Unreachable`] here, not a run full of connect errors.
    pub fn new(config: &Config) -> Result<Run, Error> {
        config.validate()?;
        // An agent (--segment) runs its share of the load.
        let config = &segment::local(config)?;
        let io = resolve_io(config.io)?;
        let addr = config.target.resolve()?;
        let mut need = config.connections + config.idle + 64;
        if io == Io::Uring {
            // A thread's fixed file table (two entries per connection) may
            // not be larger than the open-file limit.
            need = need.max(uring::table_size(config.connections) as usize + 64);
        }
        raise_fd_limit(need)?;
        let probe = engine::Probe::connect(&addr, config.timeout().min(Duration::from_secs(5)))
            .map_err(|e| Error::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        Ok(Run {
            config: config.clone(),
            addr,
            probe,
            io,
        })
    }

    /// The I/O backend the run uses (the one asked, or the one this kernel
    /// allows).
    pub fn io(&self) -> Io {
        self.io
    }

    /// Applies the load and returns what was measured.
    pub fn start(self) -> Result<Report, Error> {
        self.measure().map(|m| m.report)
    }

    /// Applies the load and returns the report with its histograms decoded.
    pub fn measure(self) -> Result<Measured, Error> {
        let Run {
            config,
            addr,
            probe,
            io,
        } = self;
        measure(&config, addr, probe, io)
    }
}

/// Whether this kernel runs the io_uring backend ([`Io::Uring`]); `Err`
/// says why not, in one line.
pub fn io_uring_available() -> Result<(), String> {
    uring::available()
}

/// The backend to use: io_uring when asked (an error where the kernel
/// cannot), epoll when asked, else io_uring where the kernel can.
fn resolve_io(asked: Option<Io>) -> Result<Io, Error> {
    match asked {
        Some(Io::Epoll) => Ok(Io::Epoll),
        Some(Io::Uring) => uring::available()
            .map(|()| Io::Uring)
            .map_err(|e| Error::Config(format!("--io uring: io_uring unavailable here: {e}"))),
        None => Ok(if uring::available().is_ok() {
            Io::Uring
        } else {
            Io::Epoll
        }),
    }
}

fn measure(
    config: &Config,
    addr: config::Addr,
    probe: engine::Probe,
    io: Io,
) -> Result<Measured, Error> {
    let routes = prepare(config);
    let mix = mix(&config.route_specs());

    // --idle: extra connections opened first and held, silent, to the end.
    let mut idle = Vec::with_capacity(config.idle);
    for _ in 0..config.idle {
        if let Ok(c) = engine::Probe::connect(&addr, config.timeout()) {
            idle.push(c);
        }
    }

    let threads = config.threads;
    let specs = split(config, threads);
    let warmup = Duration::from_secs_f64(config.warmup_s);
    // --start-at: every agent begins at the same instant.
    let start_late = match config.start_at_ns {
        Some(ns) => Some(segment::wait_for_start(ns)?),
        None => None,
    };
    let t0 = Instant::now();
    let measure_start = t0 + warmup;
    let end = match config.stop {
        Stop::DurationS(d) => Some(measure_start + Duration::from_secs_f64(d)),
        Stop::Requests(_) => None,
    };
    let base = match config.start_at_ns {
        // Interval logs of agents that started together line up exactly.
        Some(ns) => SystemTime::UNIX_EPOCH + Duration::from_nanos(ns) + warmup,
        None => SystemTime::now() + warmup,
    };
    let plan = Plan {
        addr,
        protocol: config.target.protocol,
        routes,
        mix,
        new_conn: config.conn_mode == ConnMode::NewConn,
        pipeline: config.pipeline,
        timeout: config.timeout(),
        t0,
        measure_start,
        end,
        open_loop: config.rate.is_some(),
        arrivals: config.arrivals,
        intervals: config.hdr_log.is_some(),
        io,
    };
    let mut log = match &config.hdr_log {
        Some(path) => Some(
            hdrlog::HdrLog::create(path, threads, base)
                .map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let progress: Vec<Progress> = (0..threads).map(|_| Progress::default()).collect();
    let cpu_before = cpu_seconds()?;
    let (tx, rx) = mpsc::channel::<Interval>();
    let mut probe = Some(probe);

    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|&spec| {
                let plan = &plan;
                let progress = &progress[spec.index];
                let tx = plan.intervals.then(|| tx.clone());
                let pre = if spec.index == 0 { probe.take() } else { None };
                std::thread::Builder::new()
                    .name(format!("loadgen-{}", spec.index))
                    .spawn_scoped(scope, move || {
                        engine::run_thread(plan, spec, progress, tx, pre)
                    })
            })
            .collect();
        drop(tx);
        let bar = config
            .progress
            .then(|| std::io::stderr().is_terminal())
            .filter(|&tty| tty)
            .map(|_| progress_bar(config));
        let mut log_error = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(iv) => {
                    if let Some(l) = log.as_mut() {
                        if let Err(e) = l.add(iv.index, &iv.hist) {
                            log_error.get_or_insert(e);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Every sender is gone (or there never was one): wait
                    // for the threads themselves.
                    if progress.iter().all(|p| p.done.load(Relaxed)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Some(bar) = &bar {
                update_bar(bar, config, &progress, t0, measure_start);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let stats = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .map_err(|_| Error::Io("a load thread panicked".into()))?
                    .map_err(|e| Error::Io(format!("load thread: {e}"))),
                Err(e) => Err(Error::Io(format!("cannot start a thread: {e}"))),
            })
            .collect::<Result<Vec<_>, Error>>();
        (stats, log_error)
    });
    let (stats, log_error) = results;
    let stats = stats?;
    let cpu_after = cpu_seconds()?;
    let idle_held = idle.len() as u64;
    drop(idle);

    // Merge.
    let mut latency = engine::new_histogram();
    let mut uncorrected = engine::new_histogram();
    let mut connect = engine::new_histogram();
    let mut send_lag = engine::new_histogram();
    let mut generator_lag = engine::new_histogram();
    let mut in_flight_area = 0.0;
    let mut errors = Errors::default();
    let (mut requests, mut bytes, mut opened, mut unsent) = (0, 0, 0, 0);
    let (mut lag_max, mut lag_sum, mut lag_n) = (Duration::ZERO, Duration::ZERO, 0);
    let mut workers: BTreeMap<String, u64> = BTreeMap::new();
    let mut finished_at = measure_start;
    for s in &stats {
        let merge = |into: &mut hdrhistogram::Histogram<u64>, h| {
            into.add(h)
                .map_err(|e| Error::Io(format!("merging histograms: {e}")))
        };
        merge(&mut latency, &s.latency)?;
        merge(&mut uncorrected, &s.uncorrected)?;
        merge(&mut connect, &s.connect)?;
        merge(&mut send_lag, &s.send_lag)?;
        merge(&mut generator_lag, &s.generator_lag)?;
        in_flight_area += s.in_flight_area;
        errors.add(&s.errors);
        requests += s.responses;
        bytes += s.bytes;
        opened += s.connections_opened;
        unsent += s.unsent;
        lag_max = lag_max.max(s.lag_max);
        lag_sum += s.lag_sum;
        lag_n += s.lag_count;
        for (w, n) in &s.workers {
            *workers
                .entry(String::from_utf8_lossy(w).into_owned())
                .or_default() += n;
        }
        if let Some(t) = s.finished_at {
            finished_at = finished_at.max(t);
        }
    }
    let duration = match config.stop {
        Stop::DurationS(d) => Duration::from_secs_f64(d),
        Stop::Requests(_) => finished_at.saturating_duration_since(measure_start),
    };
    let duration_s = duration.as_secs_f64().max(1e-6);
    if let Some(l) = log {
        l.finish(duration)
            .map_err(|e| Error::Io(format!("writing the hdr log: {e}")))?;
    }
    if let Some(e) = log_error {
        return Err(Error::Io(format!("writing the hdr log: {e}")));
    }
    let rps = requests as f64 / duration_s;
    let (user_s, sys_s) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let attempts = requests + errors.transport();
    let wall = t0.elapsed().as_secs_f64().max(1e-6);
    let report = Report {
        schema_version: SCHEMA_VERSION,
        target: config.target.to_string(),
        protocol: config.target.protocol,
        routes: config
            .route_specs()
            .iter()
            .map(|r| format!("{}:{}", r.target, r.weight))
            .collect(),
        threads,
        connections: config.connections,
        conn_mode: config.conn_mode,
        pipeline: config.pipeline,
        warmup_s: config.warmup_s,
        requests,
        duration_s,
        rps,
        bytes_read: bytes,
        errors,
        latency: HistogramSummary::new(&latency),
        latency_uncorrected: config.rate.map(|_| HistogramSummary::new(&uncorrected)),
        connect_time: HistogramSummary::new(&connect),
        connections_opened: opened,
        open_loop: config.rate.map(|asked| OpenLoop {
            asked_rps: asked,
            achieved_rps: rps,
            max_lag_ms: lag_max.as_secs_f64() * 1e3,
            mean_lag_ms: if lag_n == 0 {
                0.0
            } else {
                lag_sum.as_secs_f64() * 1e3 / lag_n as f64
            },
            unsent,
            arrivals: config.arrivals,
            send_lag: Some(HistogramSummary::new(&send_lag)),
            generator_lag: Some(HistogramSummary::new(&generator_lag)),
        }),
        in_flight_mean: in_flight_area / duration_s,
        idle: Idle {
            asked: config.idle as u64,
            held: idle_held,
        },
        workers,
        cpu: Cpu {
            user_s,
            sys_s,
            us_per_request: if attempts == 0 {
                0.0
            } else {
                (user_s + sys_s) * 1e6 / attempts as f64
            },
            utilization: (user_s + sys_s) / wall / threads as f64,
        },
        io,
        agent: None,
    };
    let mut report = report;
    if config.segment.is_some() || config.start_at_ns.is_some() {
        let lag_p99 = config.rate.map(|_| {
            if generator_lag.is_empty() {
                0
            } else {
                generator_lag.value_at_quantile(0.99)
            }
        });
        let why = segment::saturation(lag_p99, config.max_lag_us, report.cpu.utilization);
        report.agent = Some(Agent {
            segment: config.segment,
            start_at_ns: config.start_at_ns,
            start_late_ms: start_late.unwrap_or_default().as_secs_f64() * 1e3,
            host: segment::host_name(),
            saturated: !why.is_empty(),
            saturated_why: why,
        });
    }
    Ok(Measured {
        report,
        latency,
        send_lag,
        generator_lag,
    })
}

/// Encodes every route's request once and computes its expectation.
fn prepare(config: &Config) -> Vec<Prepared> {
    let host = config.target.host_header();
    let new_conn = config.conn_mode == ConnMode::NewConn;
    config
        .route_specs()
        .iter()
        .map(|r| {
            let method = config.method_for(&r.target);
            let mut body = Vec::new();
            if matches!(method, "POST" | "PUT" | "PATCH") {
                routes::extend_pattern(&mut body, config.body_size);
            }
            let mut bytes = Vec::new();
            match config.target.protocol {
                Protocol::Http => {
                    let mut headers = config.headers.clone();
                    if new_conn {
                        headers.push("Connection: close".to_string());
                    }
                    http::encode_request(&mut bytes, method, &r.target, &host, &headers, &body);
                }
                Protocol::Fcgi => {
                    // Request headers travel as CGI meta-variables HTTP_*.
                    let params: Vec<(String, String)> =
                        std::iter::once(("HTTP_HOST".to_string(), host.clone()))
                            .chain(config.headers.iter().filter_map(|h| {
                                let (n, v) = h.split_once(':')?;
                                Some((
                                    format!(
                                        "HTTP_{}",
                                        n.trim().to_ascii_uppercase().replace('-', "_")
                                    ),
                                    v.trim().to_string(),
                                ))
                            }))
                            .chain(config.params.iter().filter_map(|p| {
                                let (n, v) = p.split_once('=')?;
                                Some((n.to_string(), v.to_string()))
                            }))
                            .collect();
                    let extra: Vec<(&str, &str)> = params
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    fcgi::encode_request(
                        &mut bytes, 1, !new_conn, method, &r.target, &extra, &body,
                    );
                }
            }
            Prepared {
                bytes,
                expect: Expectation::new(method, &r.target, &body),
                head: method == "HEAD",
            }
        })
        .collect()
}

/// The route order: smooth weighted round-robin (as nginx balances
/// upstreams), so `/a:3 /b:1` interleaves `a a b a` rather than `a a a b`.
fn mix(specs: &[RouteSpec]) -> Vec<u16> {
    let gcd = specs.iter().fold(0u32, |g, r| gcd(g, r.weight)).max(1);
    let weights: Vec<i64> = specs.iter().map(|r| i64::from(r.weight / gcd)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
                .expect("at least one route");
            current[best] -= total;
            best as u16
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Splits connections, `-n` and `-R` over the threads: every connection is
/// used (the remainder goes one each to the first threads), and counts and
/// rates follow the connections.
fn split(config: &Config, threads: usize) -> Vec<ThreadSpec> {
    let c = config.connections;
    let conns: Vec<usize> = (0..threads)
        .map(|i| c / threads + usize::from(i < c % threads))
        .collect();
    let quotas: Option<Vec<u64>> = match config.stop {
        Stop::Requests(n) => {
            let mut q: Vec<u64> = conns.iter().map(|&ci| n * ci as u64 / c as u64).collect();
            let mut left = n - q.iter().sum::<u64>();
            for qi in q.iter_mut() {
                if left == 0 {
                    break;
                }
                *qi += 1;
                left -= 1;
            }
            Some(q)
        }
        Stop::DurationS(_) => None,
    };
    (0..threads)
        .map(|i| ThreadSpec {
            index: i,
            connections: conns[i],
            quota: quotas.as_ref().map(|q| q[i]),
            rate: config.rate.map(|r| r * conns[i] as f64 / c as f64),
            // Threads interleave on the schedule (and agents, --segment).
            phase: config
                .rate
                .map_or(Duration::ZERO, |r| segment::phase(config.segment, r, i)),
            stream: segment::stream(config.segment, threads, i),
        })
        .collect()
}

/// Raises the soft limit on open files to what the run needs, if allowed.
fn raise_fd_limit(need: usize) -> Result<(), Error> {
    let need = need as u64;
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| Error::Io(format!("getrlimit: {e}")))?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(Error::Config(format!(
            "this run needs {need} file descriptors but the hard limit is {hard} (ulimit -Hn)"
        )));
    }
    setrlimit(Resource::RLIMIT_NOFILE, need.max(soft), hard)
        .map_err(|e| Error::Io(format!("setrlimit: {e}")))
}

/// This process's user and system CPU seconds so far.
fn cpu_seconds() -> Result<(f64, f64), Error> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| Error::Io(format!("getrusage: {e}")))?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((secs(u.user_time()), secs(u.system_time())))
}

fn progress_bar(config: &Config) -> indicatif::ProgressBar {
    let len = match config.stop {
        Stop::DurationS(d) => ((d + config.warmup_s) * 1000.0) as u64,
        Stop::Requests(n) => n,
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    bar
}

fn update_bar(
    bar: &indicatif::ProgressBar,
    config: &Config,
    progress: &[Progress],
    t0: Instant,
    measure_start: Instant,
) {
    let responses: u64 = progress.iter().map(|p| p.responses.load(Relaxed)).sum();
    let errors: u64 = progress.iter().map(|p| p.errors.load(Relaxed)).sum();
    let now = Instant::now();
    let measuring = now.saturating_duration_since(measure_start).as_secs_f64();
    match config.stop {
        Stop::DurationS(_) => bar.set_position((now - t0).as_millis() as u64),
        Stop::Requests(_) => bar.set_position(responses + errors),
    }
    let phase = if now < measure_start { "warm-up, " } else { "" };
    bar.set_message(format!(
        "{phase}{responses} requests, {:.0} req/s, {errors} errors",
        if measuring > 0.0 {
            responses as f64 / measuring
        } else {
            0.0
        }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: &str, w: u32) -> RouteSpec {
        RouteSpec {
            target: t.into(),
            weight: w,
        }
    }

    #[test]
    fn mix_is_weighted_and_interleaved() {
        let m = mix(&[spec("/a", 3), spec("/b", 1)]);
        assert_eq!(m, vec![0, 0, 1, 0]);
        let m = mix(&[spec("/a", 200), spec("/b", 100)]);
        assert_eq!(m, vec![0, 1, 0]);
        assert_eq!(mix(&[spec("/a", 1)]), vec![0]);
    }

    #[test]
    fn split_uses_every_connection() {
        let t = Target::parse("http://127.0.0.1:1/", None, None).unwrap();
        let mut c = Config::new(t);
        c.connections = 10;
        c.stop = Stop::Requests(101);
        c.rate = Some(1000.0);
        let s = split(&c, 3);
        assert_eq!(
            s.iter().map(|s| s.connections).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(s.iter().map(|s| s.quota.unwrap()).sum::<u64>(), 101);
        let rate: f64 = s.iter().map(|s| s.rate.unwrap()).sum();
        assert!((rate - 1000.0).abs() < 1e-6);
    }
}
