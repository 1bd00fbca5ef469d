//! `loadgen`: the command line around [`loadgen::run`]. wrk's flags where
//! wrk has one (`-t -c -d -R -H --latency --timeout`), plus the workload's
//! own: routes with weights, FastCGI, new connection per request,
//! pipelining, idle connections, a JSON report and an HdrHistogram log.
//!
//! A mistake (bad flag, bad URL, unreachable target) is one line on stderr,
//! `loadgen: error: ...`, and exit status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use loadgen::{
    parse_duration, Arrivals, Config, ConnMode, Error, Protocol, RouteSpec, Stop, Target,
};

/// An HTTP and FastCGI load generator for the iomodels workload: closed loop
/// (wrk) or open loop with coordinated-omission correction (wrk2),
/// HdrHistogram latencies, every response body verified.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Target: http://HOST:PORT/path or fcgi://HOST:PORT/path (with --unix,
    /// just /path).
    url: String,
    /// Threads, one event loop each.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Connections, spread evenly over the threads.
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// Duration of measurement: 10s, 2m, 500ms [default: 10s].
    #[arg(short = 'd', long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<std::time::Duration>,
    /// Make exactly this many measured requests instead of running for a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Open loop: this many requests/s overall, latency measured from each
    /// request's intended send time (coordinated-omission corrected).
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// Open loop: how requests are spaced — `fixed` (t0 + k/R, as wrk2) or
    /// `poisson` (exponential gaps of mean 1/R, as independent users send).
    #[arg(long, value_enum, default_value = "fixed", requires = "rate")]
    arrivals: ArrivalsArg,
    /// Open loop: also print the uncorrected latency (from the actual send).
    #[arg(short = 'U', long = "u-latency")]
    uncorrected: bool,
    /// Print the full HdrHistogram percentile table.
    #[arg(long)]
    latency: bool,
    /// Time a request (or a connect) may take before it counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: std::time::Duration,
    /// Load before measuring, not recorded: 2s, 500ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: std::time::Duration,
    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// FastCGI: an extra PARAMS pair NAME=VALUE (repeatable), e.g.
    /// --param SCRIPT_FILENAME=/srv/hello.php for php-fpm.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Request method [default: POST for /echo, GET otherwise].
    #[arg(short = 'm', long)]
    method: Option<String>,
    /// A route of the mix, PATH[?QUERY][:WEIGHT] (repeatable), e.g.
    /// --route /hello:3 --route '/cpu?n=100:1'. Default: the URL's path.
    #[arg(long = "route")]
    routes: Vec<String>,
    /// Body size of POST requests, in bytes (the /bytes pattern).
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// A new connection for every request (instead of keep-alive).
    #[arg(long)]
    new_conn: bool,
    /// HTTP requests in flight per connection (pipelining).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Extra connections opened first and held open, silent, during the run.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Connect to this unix socket instead of HOST:PORT.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Protocol [default: from the URL's scheme].
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Write the report as JSON to this file (schema in loadgen/README.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one interval per second) here.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Run as agent K (from 0) of N of a distributed run: the open-loop
    /// schedule's request i is this agent's when i mod N = K; -c, -n and
    /// --idle are shared out. Give every agent the same other flags.
    #[arg(long, value_name = "K/N")]
    segment: Option<loadgen::Segment>,
    /// Begin at this wall-clock instant, nanoseconds since the Unix epoch
    /// (all agents of a run begin together); refuses to run if it passed
    /// more than 100 ms ago.
    #[arg(long, value_name = "UNIX_TIME_NS")]
    start_at: Option<u64>,
    /// An agent (--segment, --start-at) whose own send lag reaches this
    /// p99 reports itself saturated: 10ms (default), 50ms on a busy host.
    #[arg(long, value_parser = parse_duration)]
    max_lag: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalsArg {
    Fixed,
    Poisson,
}

impl Cli {
    fn config(&self) -> Result<Config, Error> {
        let target = Target::parse(&self.url, self.unix.clone(), self.protocol)?;
        let mut c = Config::new(target);
        c.routes = self
            .routes
            .iter()
            .map(|r| RouteSpec::parse(r))
            .collect::<Result<_, _>>()?;
        c.method = self.method.clone();
        c.headers = self.headers.clone();
        c.params = self.params.clone();
        c.body_size = self.body_size;
        c.threads = self.threads;
        c.connections = self.connections;
        c.stop = match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) => Stop::DurationS(d.as_secs_f64()),
            (None, None) => Stop::DurationS(10.0),
        };
        c.warmup_s = self.warmup.as_secs_f64();
        c.rate = self.rate;
        c.arrivals = match self.arrivals {
            ArrivalsArg::Fixed => Arrivals::Fixed,
            ArrivalsArg::Poisson => Arrivals::Poisson,
        };
        c.conn_mode = if self.new_conn {
            ConnMode::NewConn
        } else {
            ConnMode::KeepAlive
        };
        c.pipeline = self.pipeline;
        c.idle = self.idle;
        c.timeout_s = self.timeout.as_secs_f64();
        c.hdr_log = self.hdr_log.clone();
        c.progress = true;
        c.segment = self.segment;
        c.start_at_ns = self.start_at;
        c.max_lag_us = self.max_lag.map(|d| d.as_micros() as u64);
        c.validate()?;
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("loadgen: error: {line} (see loadgen --help)");
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    let config = cli.config()?;
    let load = loadgen::Run::new(&config)?;
    let what = match config.stop {
        Stop::DurationS(d) => fmt_secs(d),
        Stop::Requests(n) => format!("{n} requests"),
    };
    let mut mode = vec![match config.rate {
        Some(r) => format!(
            "open loop at {r} req/s ({} arrivals)",
            config.arrivals.name()
        ),
        None => "closed loop".to_string(),
    }];
    mode.push(match config.conn_mode {
        ConnMode::KeepAlive => "keep-alive".to_string(),
        ConnMode::NewConn => "new connection per request".to_string(),
    });
    if config.pipeline > 1 {
        mode.push(format!("pipeline {}", config.pipeline));
    }
    if config.idle > 0 {
        mode.push(format!("{} idle connections", config.idle));
    }
    if config.warmup_s > 0.0 {
        mode.push(format!("{} warm-up", fmt_secs(config.warmup_s)));
    }
    if let Some(s) = config.segment {
        mode.push(format!("agent {s} (its share of the load)"));
    }
    println!("Running {what} test @ {}", config.target);
    println!(
        "  {} threads and {} connections, {}",
        config.threads,
        config.connections,
        mode.join(", ")
    );
    let report = load.start()?;
    print!("{}", report.text(cli.latency, cli.uncorrected));
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json() + "\n")
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_build_a_config() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "-t1",
            "-c3",
            "-n",
            "100",
            "--route",
            "/hello:3",
            "--route",
            "/cpu?n=100:1",
            "-R",
            "50",
            "http://127.0.0.1:9/hello",
        ])
        .unwrap();
        let c = cli.config().unwrap();
        assert_eq!(c.stop, Stop::Requests(100));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.rate, Some(50.0));
        assert_eq!(c.arrivals, Arrivals::Fixed);
        let cli = Cli::try_parse_from([
            "loadgen",
            "-R",
            "50",
            "--arrivals",
            "poisson",
            "http://127.0.0.1:9/hello",
        ])
        .unwrap();
        assert_eq!(cli.config().unwrap().arrivals, Arrivals::Poisson);
        assert!(Cli::try_parse_from(["loadgen", "--arrivals", "poisson", "http://h:1/"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "-d", "1s", "-n", "5", "http://h:1/"]).is_err());
        let cli = Cli::try_parse_from(["loadgen", "-t", "4", "-c", "2", "http://h:1/"]).unwrap();
        assert!(cli.config().is_err());
    }
}
