//! `iomodels`: the orchestrator's command line.
//!
//! * no arguments — the quick default matrix: every server model found
//!   beside this executable × the core scenarios × both protocols, a table,
//!   `results/<run-id>/results.json` and a report;
//! * `run` — the same with chosen models, scenarios, protocols, durations;
//! * `sweep` — open-loop rate sweeps: load–latency curves and each model's
//!   capacity at a p99 SLO;
//! * `report RESULTS` — rebuilds report.md and report.html from a results file;
//! * `compare BASE NEW` — the regression gate (exit 1 on a regression);
//! * `models` — the models known and the binaries found (`--names`: one
//!   name a line, the list scripts read).
//!
//! A mistake is one line, `iomodels: error: …`; usage errors exit 2.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};
use iomodels_suite::peers::{self, Peer};
use iomodels_suite::results::{Machine, RunConfig, SCHEMA_VERSION};
use iomodels_suite::runner::Plan;
use iomodels_suite::scenarios::{self, Scenario};
use iomodels_suite::{compare, cost, models, report, results, runner, summary, sweep};
use loadgen::Protocol;

/// Benchmark suite for server I/O models: runs every server model through
/// the same scenarios over HTTP and FastCGI, measures the servers' own
/// costs, writes results and reports, and compares result sets for CI.
/// Without a subcommand: the quick default matrix (`iomodels run`).
#[derive(Debug, Parser)]
#[command(name = "iomodels", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a matrix of models × scenarios × protocols (defaults: the quick matrix).
    Run(RunArgs),
    /// Sweep open-loop rates per model: load–latency curves, capacity at an SLO.
    Sweep(SweepArgs),
    /// Teaching labs: reproduce a classic result, get a sheet and a verdict.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Render report.md and report.html from a results.json.
    Report {
        /// The results file.
        results: PathBuf,
        /// Directory for the reports [default: the results file's directory].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare two results files; exit 1 when a gated figure regressed.
    Compare {
        /// The baseline results file.
        base: PathBuf,
        /// The new results file.
        new: PathBuf,
        /// Allowed worsening of a wall-clock figure (server CPU µs/request,
        /// requests/s relative to epoll-server), gated only when the change
        /// is also beyond the A/A noise floor: 10% or 0.1.
        #[arg(long, default_value = "10%", value_parser = compare::parse_threshold)]
        threshold: f64,
        /// Allowed worsening of instructions per request (valgrind).
        #[arg(long, default_value = "2%", value_parser = compare::parse_threshold)]
        instr_threshold: f64,
        /// Allowed worsening of context switches and read+write calls per request.
        #[arg(long, default_value = "5%", value_parser = compare::parse_threshold)]
        count_threshold: f64,
        /// Also write NEW's figures as Bencher Metric Format JSON here.
        #[arg(long)]
        bmf: Option<PathBuf>,
    },
    /// Instructions per request of each model under valgrind: two request
    /// counts subtracted, so start-up cancels. Deterministic, unlike
    /// anything timed: the CI gate's first figure.
    Cost(CostArgs),
    /// Merge load generator reports (loadgen --json, e.g. from agents run
    /// by hand or a Kubernetes Job): histograms added, counts summed; exit
    /// 1 if an agent saturated or the segments are not one load.
    Merge {
        /// The reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Their interval logs (loadgen --hdr-log), merged into --hdr-out.
        #[arg(long = "hdr-log")]
        hdr_logs: Vec<PathBuf>,
        /// Write the merged interval log here.
        #[arg(long, requires = "hdr_logs")]
        hdr_out: Option<PathBuf>,
        /// Write the merged result (merged report + one line per agent) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (internal) The delaying relay of `run --netns --delay-by relay`.
    #[command(hide = true)]
    Relay {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Address to relay to.
        #[arg(long)]
        to: String,
        /// Delay each way.
        #[arg(long, value_parser = loadgen::parse_duration)]
        delay: std::time::Duration,
        /// Up to this much more, each way.
        #[arg(long, value_parser = loadgen::parse_duration, default_value = "0s")]
        jitter: std::time::Duration,
    },
    /// List the models this suite knows and the server binaries found.
    Models {
        /// Print only the model names, one a line (for scripts): the known
        /// models in reading order, then any other `*-server` found.
        #[arg(long)]
        names: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct CostArgs {
    /// Models to measure, comma-separated [default: every `*-server`
    /// beside iomodels; io_uring models are listed as skipped].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Scenarios, comma-separated: hello, new-conn, cpu or file (their
    /// routes, over --connections; the others depend on time or rate).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "hello,new-conn"
    )]
    scenarios: Vec<Scenario>,
    /// Protocols.
    #[arg(long, value_enum, default_value = "http")]
    protocol: ProtocolArg,
    /// The two request counts whose difference prices one request.
    #[arg(long, value_delimiter = ',', default_value = "2000,12000")]
    requests: Vec<u64>,
    /// Connections of the load. One makes single-threaded models exact;
    /// with more, how many requests one wake-up serves depends on timing.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Measure each pair of counts N times; the median is reported and
    /// the spread shown (and allowed by `compare`).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Server --workers (as many as connections: a blocking model with
    /// fewer workers would leave connections waiting in its backlog).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Directory that receives `<run-id>/`.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Also write Bencher Metric Format JSON here.
    #[arg(long)]
    bmf: Option<PathBuf>,
    /// Directory holding the server binaries [default: beside iomodels].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Protocol choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// HTTP/1.1.
    Http,
    /// FastCGI.
    Fcgi,
    /// Both, one after the other.
    Both,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Models to run, comma-separated (`epoll,prefork`) [default: every
    /// `*-server` beside iomodels, unless only --peers is given].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Real servers to run as rows beside the models, comma-separated:
    /// nginx, apache-prefork, apache-worker, apache-event, lighttpd,
    /// php-fpm, nginx+php-fpm, nginx+fpm-server, fcgiwrap; `all` (every
    /// installed one) or `none` [default: every installed peer, unless
    /// only --models is given]. Each runs in the protocol it speaks.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Scenarios, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<Scenario>,
    /// Protocols to run.
    #[arg(long, value_enum, default_value = "both")]
    protocol: ProtocolArg,
    /// Measured time per run: 800ms, 2s.
    #[arg(short = 'd', long, default_value = "800ms", value_parser = loadgen::parse_duration)]
    duration: std::time::Duration,
    /// Warm-up load before each run (not measured).
    #[arg(long, default_value = "200ms", value_parser = loadgen::parse_duration)]
    warmup: std::time::Duration,
    /// Repeat every run N times; reports and compare use medians.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Server --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Idle connection levels of the idle sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    idle_levels: Vec<usize>,
    /// Models the idle sweep runs for, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "select,poll,epoll")]
    idle_models: Vec<String>,
    /// Run this model a second time in every round, right after itself
    /// (an A/A check): the two copies differ only by noise, and that
    /// difference is the run's noise floor, printed in the report and used
    /// by `compare`. `none` turns it off [default: epoll when it runs, else
    /// the first model].
    #[arg(long, value_name = "MODEL")]
    aa: Option<String>,
    /// Also run every model from the `*-server` binaries in DIR (e.g. a
    /// build of the base commit), beside the new one in the same rounds:
    /// a same-run A/B whose CPU per request `compare` gates on, where
    /// machine noise hits both sides alike (scripts/ci-perf.sh).
    #[arg(long, value_name = "DIR")]
    base_bins: Option<PathBuf>,
    /// Add an `strace -f -c` pass per model: system calls per request by
    /// name, measured under strace (which slows the server and changes its
    /// batching: read the names, trust /proc's read+write counts).
    #[arg(long)]
    syscalls: bool,
    /// Add `iomodels cost`'s pass (hello and new-conn over HTTP, 2,000 and
    /// 12,000 requests on one connection under valgrind, as many
    /// repetitions as --repeat, at most 2) to this result set.
    #[arg(long)]
    cost: bool,
    /// Directory that receives `<run-id>/`.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Also write Bencher Metric Format JSON here.
    #[arg(long)]
    bmf: Option<PathBuf>,
    /// Directory holding the server binaries [default: beside iomodels].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Open-loop rate of the `open` scenario, the same for every model
    /// [default: from the sweep when it runs, else half the lowest hello
    /// maximum among the models that serve concurrently].
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    net: iomodels_suite::netns::NetArgs,
    #[command(flatten)]
    agents: Box<iomodels_suite::agents::AgentArgs>,
}

#[derive(Debug, Clone, clap::Args)]
struct SweepArgs {
    /// Models to sweep, comma-separated [default: every `*-server` beside
    /// iomodels, unless only --peers is given].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Peers (real servers) to sweep too, comma-separated, or `all` (every
    /// installed one) [default: none]. Each in the protocol it speaks.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Routes to sweep, comma-separated or repeated: /hello, '/wait?us=10000', '/cpu?n=2000'.
    #[arg(long = "route", value_delimiter = ',', default_value = "/hello")]
    routes: Vec<String>,
    /// Protocols to sweep.
    #[arg(long, value_enum, default_value = "http")]
    protocol: ProtocolArg,
    /// Server --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// p99 allowed above the route's own wait (/wait?us=D: D + SLO): 1ms, 500us.
    #[arg(long, default_value = "1ms", value_parser = loadgen::parse_duration)]
    slo: std::time::Duration,
    /// p99 above the route's own wait that counts as saturated (ends the sweep).
    #[arg(long, default_value = "100ms", value_parser = loadgen::parse_duration)]
    cap: std::time::Duration,
    /// First rate, requests/s.
    #[arg(long, default_value_t = 100.0)]
    from: f64,
    /// Ratio between consecutive rates (geometric steps).
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// At most this many steps per model.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// No step above this rate, requests/s.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Measured time per step: 600ms, 2s.
    #[arg(short = 'd', long, default_value = "600ms", value_parser = loadgen::parse_duration)]
    duration: std::time::Duration,
    /// Load at the step's rate before measuring it.
    #[arg(long, default_value = "150ms", value_parser = loadgen::parse_duration)]
    warmup: std::time::Duration,
    /// Connections for models that do not pin one per worker [default: 50,
    /// more on routes that wait].
    #[arg(short = 'c', long)]
    connections: Option<usize>,
    /// Arrivals of the open loop: fixed schedule or Poisson.
    #[arg(long, value_enum, default_value = "fixed")]
    arrivals: ArrivalsArg,
    /// Count every step as first measured (by default a saturated step is
    /// measured once more before it ends the sweep).
    #[arg(long)]
    no_retry: bool,
    /// Directory that receives `<run-id>/`.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Directory holding the server binaries [default: beside iomodels].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    net: iomodels_suite::netns::NetArgs,
}

/// Arrivals choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ArrivalsArg {
    /// A fixed schedule, t0 + k/R (wrk2).
    Fixed,
    /// Exponential gaps of mean 1/R.
    Poisson,
}

impl SweepArgs {
    fn spec(&self) -> sweep::SweepSpec {
        sweep::SweepSpec {
            routes: self.routes.clone(),
            from_rps: self.from,
            factor: self.factor,
            max_steps: self.steps,
            max_rps: self.max_rate,
            step_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            slo_us: self.slo.as_secs_f64() * 1e6,
            cap_us: self.cap.as_secs_f64() * 1e6,
            connections: self.connections,
            params: Vec::new(),
            peer_dir: None,
            arrivals: match self.arrivals {
                ArrivalsArg::Fixed => loadgen::Arrivals::Fixed,
                ArrivalsArg::Poisson => loadgen::Arrivals::Poisson,
            },
            workers: self.workers,
            retries: u32::from(!self.no_retry),
        }
    }
}

/// A mistake of the user's: exit status 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

#[derive(Debug, Subcommand)]
enum LabCmd {
    /// List the labs and the shape each one checks.
    List,
    /// Run one lab: writes results/labs/NAME/<run-id>/ (chart, sheet, verdict).
    Run {
        /// The lab (see `iomodels lab list`).
        name: String,
        #[command(flatten)]
        opts: LabOpts,
    },
    /// Run every lab, one after the other; exit 1 if a shape differs.
    All {
        #[command(flatten)]
        opts: LabOpts,
    },
}

#[derive(Debug, clap::Args)]
struct LabOpts {
    /// Short runs (under a minute per lab; the full run gives steadier figures).
    #[arg(long)]
    quick: bool,
    /// Where labs write their runs.
    #[arg(long, default_value = "results/labs")]
    out: PathBuf,
}

fn run_lab(cmd: LabCmd) -> anyhow::Result<ExitCode> {
    use iomodels_suite::lab;
    let (names, opts) = match cmd {
        LabCmd::List => {
            for l in lab::labs() {
                println!("{:<22} {}\n{:<22} shape: {}", l.name, l.title, "", l.shape);
            }
            return Ok(ExitCode::SUCCESS);
        }
        LabCmd::Run { name, opts } => {
            if lab::find(&name).is_none() {
                let known: Vec<&str> = lab::labs().iter().map(|l| l.name).collect();
                return Err(Usage(format!(
                    "no lab named {name:?} (labs: {})",
                    known.join(", ")
                ))
                .into());
            }
            (vec![name], opts)
        }
        LabCmd::All { opts } => (
            lab::labs().iter().map(|l| l.name.to_string()).collect(),
            opts,
        ),
    };
    iomodels_suite::survivors::adopt_orphans();
    let one = names.len() == 1;
    let chosen: Vec<lab::Lab> = names.iter().filter_map(|n| lab::find(n)).collect();
    if lab::uses_netns(&chosen) {
        // Labs across a link need root; `lab all` runs the others without.
        if let Err(e) = iomodels_suite::netns::check_root() {
            if one {
                return Err(e);
            }
        } else {
            // Before any thread starts: Ctrl-C removes the namespaces.
            iomodels_suite::netns::clean_up_on_signals();
        }
    }
    let run_id = results::run_id(std::time::SystemTime::now());
    let mut all_hold = true;
    for l in chosen {
        let name = l.name;
        if lab::uses_netns(std::slice::from_ref(&l)) {
            if let Err(e) = iomodels_suite::netns::check_root() {
                println!("{name}: skipped ({e})");
                continue;
            }
        }
        eprintln!("lab {name}: {}", l.title);
        let (o, dir) = lab::run(
            &l,
            &models::bin_dir(),
            opts.quick,
            &opts.out,
            &run_id,
            &mut |m| eprintln!("{m}"),
        )?;
        all_hold &= o.judgement.holds;
        println!("{name}: {}", o.judgement.word());
        for r in &o.judgement.reasons {
            println!("  {r}");
        }
        println!("  sheet: {}", dir.join("sheet.md").display());
    }
    Ok(if all_hold {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, folded onto one line (without its usage and tips).
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .collect();
            let line = parts.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("iomodels: error: {line} (see iomodels --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iomodels: error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cmd = match cli.cmd {
        Some(c) => c,
        None => match Cli::parse_from(["iomodels", "run"]).cmd {
            Some(c) => c,
            None => unreachable!("parsing `run` gives the run subcommand"),
        },
    };
    match cmd {
        Cmd::Run(args) => run_matrix(args),
        Cmd::Cost(args) => run_cost(args),
        Cmd::Sweep(args) => run_sweep(args),
        Cmd::Lab { cmd } => run_lab(cmd),
        Cmd::Merge {
            reports,
            hdr_logs,
            hdr_out,
            out,
        } => run_merge(&reports, &hdr_logs, hdr_out.as_deref(), out.as_deref()),
        Cmd::Relay {
            listen,
            to,
            delay,
            jitter,
        } => iomodels_suite::relay::serve(&listen, &to, delay, jitter).map(|()| ExitCode::SUCCESS),
        Cmd::Report { results, out } => {
            let r = results::Results::load(&results)?;
            let dir =
                out.unwrap_or_else(|| results.parent().unwrap_or(Path::new(".")).to_path_buf());
            let html = report::write(&r, &dir)?;
            println!("report: {} (and report.md)", html.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Compare {
            base,
            new,
            threshold,
            instr_threshold,
            count_threshold,
            bmf,
        } => {
            let b = results::Results::load(&base)?;
            let n = results::Results::load(&new)?;
            if let Some(path) = bmf {
                write_bmf(&n, &path)?;
            }
            let c = compare::compare(
                &b,
                &n,
                compare::Thresholds {
                    wall: threshold,
                    instructions: instr_threshold,
                    counts: count_threshold,
                },
            );
            print_out(&compare::markdown(&c));
            Ok(if c.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Models { names } => {
            let dir = models::bin_dir();
            let found = models::discover(&dir);
            if names {
                print_out(&models::names(&found).join("\n"));
                print_out("\n");
                return Ok(ExitCode::SUCCESS);
            }
            let mut s = format!("server binaries in {}:\n", dir.display());
            for (m, d) in models::KNOWN {
                let mark = if found.iter().any(|f| f == m) {
                    "found  "
                } else {
                    "missing"
                };
                s.push_str(&format!("  {mark} {m:<12} {d}\n"));
            }
            for m in found
                .iter()
                .filter(|f| !models::KNOWN.iter().any(|(k, _)| k == f))
            {
                s.push_str(&format!("  found   {m:<12} {}\n", models::describe(m)));
            }
            s.push_str("peers (real servers, --peers):\n");
            for p in Peer::ALL {
                let (mark, note) = match p.missing(&dir) {
                    None => ("found  ", p.describe().to_string()),
                    Some(why) => ("missing", why),
                };
                s.push_str(&format!(
                    "  {mark} {:<16} [{}; vs {}] {note}\n",
                    p.name(),
                    p.protocol().name(),
                    p.counterparts().join(", ")
                ));
            }
            print_out(&s);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_out(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn write_bmf(r: &results::Results, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&compare::bmf(r))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn protocols(p: ProtocolArg) -> Vec<Protocol> {
    match p {
        ProtocolArg::Http => vec![Protocol::Http],
        ProtocolArg::Fcgi => vec![Protocol::Fcgi],
        ProtocolArg::Both => vec![Protocol::Http, Protocol::Fcgi],
    }
}

/// Checks `plan` (its counts taken from `requests`) and that valgrind is there.
fn cost_plan(mut plan: cost::CostPlan, requests: &[u64]) -> anyhow::Result<cost::CostPlan> {
    let [small, large] = requests else {
        return Err(Usage(format!(
            "--requests takes two counts, small and large (e.g. 2000,12000), not {requests:?}"
        ))
        .into());
    };
    if small >= large || plan.connections == 0 || plan.workers == 0 || plan.repeat == 0 {
        return Err(Usage(
            "--requests needs a small count then a larger one; --connections, --workers and --repeat at least 1".into(),
        )
        .into());
    }
    if cost::valgrind_version().is_none() {
        anyhow::bail!("valgrind is not installed (scripts/install-peers.sh installs it)");
    }
    plan.counts = (*small, *large);
    Ok(plan)
}

fn run_cost(args: CostArgs) -> anyhow::Result<ExitCode> {
    let dir = args.bin_dir.clone().unwrap_or_else(models::bin_dir);
    let (models, missing) = choose_models(&dir, &args.models)?;
    let mut scen = args.scenarios.clone();
    scen.sort();
    scen.dedup();
    if let Some(s) = scen.iter().find(|s| {
        !matches!(
            s,
            Scenario::Hello | Scenario::NewConn | Scenario::Cpu | Scenario::File
        )
    }) {
        return Err(Usage(format!(
            "--scenarios {}: iomodels cost measures hello, new-conn, cpu and file (the others depend on time or rate)",
            s.name()
        ))
        .into());
    }
    let protocols = protocols(args.protocol);
    let plan = cost_plan(
        cost::CostPlan {
            bin_dir: dir.clone(),
            models: models.clone(),
            scenarios: scen.clone(),
            protocols: protocols.clone(),
            counts: (0, 0),
            connections: args.connections,
            workers: args.workers,
            repeat: args.repeat,
        },
        &args.requests,
    )?;
    let start = SystemTime::now();
    let run_id = results::run_id(start);
    eprintln!(
        "iomodels: instructions per request under valgrind: {} model(s) × {} scenario(s) × {} protocol(s), {} and {} requests",
        models.len(),
        scen.len(),
        protocols.len(),
        plan.counts.0,
        plan.counts.1
    );
    let costs = cost::run(&plan, true);
    let r = results::Results {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.clone(),
        machine: Machine::current(),
        config: RunConfig {
            models,
            scenarios: scen,
            protocols,
            duration_s: 0.0,
            warmup_s: 0.0,
            repeat: 1,
            workers: args.workers,
            idle_levels: Vec::new(),
            idle_models: Vec::new(),
            missing,
            peers: Vec::new(),
            base_bins: None,
        },
        runs: Vec::new(),
        syscalls: Vec::new(),
        cost: costs,
        sweep: None,
        sweeps: Vec::new(),
    };
    let (json, html) = save(&r, &args.out, args.bmf.as_deref())?;
    print_out(&cost::table(&r.cost));
    let took = start.elapsed().map_or(0.0, |d| d.as_secs_f64());
    print_out(&format!(
        "\nresults: {}\nreport:  {} (and report.md), {took:.0} s\n",
        json.display(),
        html.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Writes `<out>/<run-id>/results.json`, the reports and BMF; returns the
/// JSON and HTML paths.
fn save(
    r: &results::Results,
    out: &Path,
    bmf: Option<&Path>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out_dir = out.join(&r.run_id);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
    let json = out_dir.join("results.json");
    r.save(&json)?;
    let html = report::write(r, &out_dir)?;
    if let Some(path) = bmf {
        write_bmf(r, path)?;
    }
    Ok((json, html))
}

fn run_merge(
    reports: &[PathBuf],
    logs: &[PathBuf],
    hdr_out: Option<&Path>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let mut rs = Vec::new();
    for p in reports {
        let r: loadgen::Report = serde_json::from_str(&read(p)?)
            .map_err(|e| anyhow::anyhow!("{}: not a loadgen report: {e}", p.display()))?;
        rs.push((p.display().to_string(), r));
    }
    let merged = iomodels_suite::merge::merge(&rs)?;
    if let Some(path) = hdr_out {
        let texts = logs.iter().map(read).collect::<anyhow::Result<Vec<_>>>()?;
        let (base, intervals) = iomodels_suite::merge::merge_logs(&texts)?;
        iomodels_suite::merge::write_log(path, base, &intervals)?;
    }
    if let Some(path) = out {
        std::fs::write(path, serde_json::to_string_pretty(&merged)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    print_out(&iomodels_suite::merge::table(&merged));
    Ok(ExitCode::SUCCESS)
}

fn run_matrix(args: RunArgs) -> anyhow::Result<ExitCode> {
    let with_agents = !args.agents.agents.is_empty() || args.agents.agents_file.is_some();
    if with_agents && args.models.is_empty() {
        let load = iomodels_suite::agents::Load {
            duration: args.duration,
            warmup: args.warmup,
            rate: args.rate,
        };
        let out_dir = args.out.join(results::run_id(SystemTime::now()));
        return iomodels_suite::agents::run(&args.agents, &load, &out_dir);
    }
    let dir = args.bin_dir.clone().unwrap_or_else(models::bin_dir);
    let peers_named = peers::parse_list(&args.peers).map_err(Usage)?;
    let only_peers = args.models.is_empty() && !peers_named.is_empty();
    let (models, mut missing) = if only_peers {
        (Vec::new(), Vec::new())
    } else {
        choose_models(&dir, &args.models)?
    };
    let by_default = args.peers.is_empty() && args.models.is_empty();
    let netns = args.net.netns;
    let peer_list = if netns || with_agents {
        if !peers_named.is_empty() || args.cost || args.syscalls || (netns && with_agents) {
            let why =
                "--netns and --agents run models only: no --peers, --cost, --syscalls, or both";
            return Err(Usage(why.into()).into());
        }
        Vec::new()
    } else {
        choose_peers(&dir, &args.peers, &peers_named, by_default, &mut missing)?
    };
    let mut scen = if args.scenarios.is_empty() {
        scenarios::DEFAULT.to_vec()
    } else {
        args.scenarios.clone()
    };
    let sweeping = scen.contains(&Scenario::Sweep);
    if scen.contains(&Scenario::Open)
        && !scen.contains(&Scenario::Hello)
        && !sweeping
        && args.rate.is_none()
    {
        // The open loop's rate comes from the measured hello maxima.
        scen.push(Scenario::Hello);
    }
    scen.sort();
    scen.dedup();
    let protocols = protocols(args.protocol);
    let cost_plan = if args.cost {
        Some(cost_plan(
            cost::CostPlan {
                bin_dir: dir.clone(),
                models: models.clone(),
                scenarios: vec![Scenario::Hello, Scenario::NewConn],
                protocols: vec![Protocol::Http],
                counts: (0, 0),
                connections: 1,
                workers: 4,
                repeat: args.repeat.min(2),
            },
            &[2000, 12000],
        )?)
    } else {
        None
    };
    if args.repeat == 0 || args.workers == 0 {
        return Err(Usage("--repeat and --workers must be at least 1".into()).into());
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Usage("--rate must be a positive rate".into()).into());
    }
    let idle_models = if args.idle_models.iter().any(|m| m == "all") {
        None
    } else {
        Some(args.idle_models.clone())
    };
    if let Some(base) = &args.base_bins {
        let absent: Vec<&str> = models
            .iter()
            .map(String::as_str)
            .filter(|m| !runner::server_bin(base, m).is_file())
            .collect();
        if !absent.is_empty() {
            return Err(Usage(format!(
                "--base-bins {}: no {} there",
                base.display(),
                absent
                    .iter()
                    .map(|m| format!("{m}-server"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
    }
    let aa = match args.aa.as_deref() {
        Some("none") => None,
        Some(m) if models.iter().any(|x| x == m) => Some(m.to_string()),
        Some(m) => {
            return Err(Usage(format!(
                "--aa {m}: not among the models run ({})",
                models.join(", ")
            ))
            .into())
        }
        None if models.iter().any(|x| x == "epoll") => Some("epoll".to_string()),
        None => models.first().cloned(),
    };
    for p in &peer_list {
        if !protocols.contains(&p.protocol()) {
            eprintln!(
                "iomodels: note: peer {} speaks {} only: not run over {}",
                p.name(),
                p.protocol().name(),
                protocols
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let start = SystemTime::now();
    let run_id = results::run_id(start);
    let out_dir = args.out.join(&run_id);
    let site = if peer_list.is_empty() {
        None
    } else {
        // The peers' configurations go into the run directory as they are made.
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
        Some(std::sync::Arc::new(peers::Site::create()?))
    };
    let machine = Machine::current();
    // The sweep first: its capacities choose the open loop's equal rate.
    let (spec, curves) = if sweeping {
        let spec = sweep::SweepSpec {
            workers: args.workers,
            step_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            peer_dir: Some(out_dir.join("peers")),
            ..sweep::SweepSpec::default()
        };
        eprintln!(
            "iomodels: sweeping {} model(s) and {} peer(s) × {} protocol(s) on /hello",
            models.len(),
            peer_list.len(),
            protocols.len()
        );
        let subjects: Vec<String> = models
            .iter()
            .cloned()
            .chain(peer_list.iter().map(|p| p.name().to_string()))
            .collect();
        let curves = sweep::sweep_all(&dir, &subjects, &protocols, &spec);
        (Some(spec), curves)
    } else {
        (None, Vec::new())
    };
    let open_rate = args.rate.or_else(|| {
        protocols
            .iter()
            .filter_map(|&p| sweep::equal_rate_from_sweeps(&curves, p))
            .reduce(f64::min)
    });
    let plan = Plan {
        aa,
        bin_dir: dir.clone(),
        models: models.clone(),
        scenarios: scen
            .iter()
            .copied()
            .filter(|s| *s != Scenario::Sweep)
            .collect(),
        protocols: protocols.clone(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        repeat: args.repeat,
        workers: args.workers,
        idle_levels: args.idle_levels.clone(),
        idle_models: idle_models.clone(),
        open_rate,
        peers: peer_list.clone(),
        peer_dir: out_dir.join("peers"),
        site,
        base_bin_dir: args.base_bins.clone(),
    };
    eprintln!(
        "iomodels: {} runs: {} model(s) and {} peer(s) × {} scenario(s) × {} protocol(s), {:.1} s each",
        plan.count(),
        models.len(),
        peer_list.len(),
        plan.scenarios.len(),
        protocols.len(),
        plan.duration_s + plan.warmup_s
    );
    let (runs, net) = if netns {
        if scen.contains(&Scenario::Sweep) {
            return Err(Usage("--netns does not run the sweep scenario yet".into()).into());
        }
        iomodels_suite::netns::clean_up_on_signals();
        let (net, setup, placement) = iomodels_suite::netns::build(&args.net.spec())?;
        eprintln!(
            "iomodels: --netns: RTT {:.3} ms by {:?}: {}",
            setup.rtt_ms, setup.delay_by, setup.delay_note
        );
        let runs = iomodels_suite::netns::run_in(placement, || runner::run_plan(&plan, true))?;
        drop(net);
        (runs, Some(setup))
    } else {
        if with_agents {
            if scen.contains(&Scenario::Sweep) {
                return Err(Usage("--agents does not run the sweep scenario".into()).into());
            }
            iomodels_suite::agents::install(&args.agents, &out_dir)?;
        }
        (runner::run_plan(&plan, true), None)
    };
    let mut syscalls = Vec::new();
    if args.syscalls {
        for m in &models {
            for &p in &protocols {
                match runner::syscalls(&plan, m, p, plan.duration_s.max(1.0)) {
                    Ok(s) => syscalls.push(s),
                    Err(e) => eprintln!("iomodels: strace pass for {m} ({}) failed: {e}", p.name()),
                }
            }
        }
    }
    let results = results::Results {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.clone(),
        machine,
        config: RunConfig {
            models,
            scenarios: scen,
            protocols,
            duration_s: plan.duration_s,
            warmup_s: plan.warmup_s,
            repeat: plan.repeat,
            workers: plan.workers,
            idle_levels: plan.idle_levels.clone(),
            idle_models: idle_models.unwrap_or_else(|| plan.models.clone()),
            missing,
            peers: peer_list.iter().map(|p| p.name().to_string()).collect(),
            base_bins: args.base_bins.as_ref().map(|d| d.display().to_string()),
        },
        runs,
        syscalls,
        cost: cost_plan
            .as_ref()
            .map(|p| cost::run(p, true))
            .unwrap_or_default(),
        sweep: spec,
        sweeps: curves,
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
    let json = out_dir.join("results.json");
    results.save(&json)?;
    if let Some(setup) = &net {
        iomodels_suite::netns::record(&json, setup)?;
    }
    let html = report::write(&results, &out_dir)?;
    if let Some(path) = &args.bmf {
        write_bmf(&results, path)?;
    }
    print_out(&summary::table(&summary::rows(&results)));
    if !results.cost.is_empty() {
        print_out(&format!("\n{}", cost::table(&results.cost)));
    }
    if !results.sweeps.is_empty() {
        print_out(&format!("\n{}", sweep::capacity_table(&results.sweeps)));
    }
    let took = start.elapsed().map_or(0.0, |d| d.as_secs_f64());
    print_out(&format!(
        "\nresults: {}\nreport:  {} (and report.md), {took:.0} s\n",
        json.display(),
        html.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `iomodels sweep`: the curves alone, in a result set of their own.
fn run_sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let dir = args.bin_dir.clone().unwrap_or_else(models::bin_dir);
    let mut spec = args.spec();
    spec.validate().map_err(Usage)?;
    let peers_named = peers::parse_list(&args.peers).map_err(Usage)?;
    let (models, mut missing) = if args.models.is_empty() && !peers_named.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        choose_models(&dir, &args.models)?
    };
    let peer_list = choose_peers(&dir, &args.peers, &peers_named, false, &mut missing)?;
    let protocols = match args.protocol {
        ProtocolArg::Http => vec![Protocol::Http],
        ProtocolArg::Fcgi => vec![Protocol::Fcgi],
        ProtocolArg::Both => vec![Protocol::Http, Protocol::Fcgi],
    };
    let start = SystemTime::now();
    let run_id = results::run_id(start);
    let machine = Machine::current();
    let out_dir = args.out.join(&run_id);
    if !peer_list.is_empty() {
        // The peers' configurations go into the run directory as they are made.
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
        spec.peer_dir = Some(out_dir.join("peers"));
    }
    eprintln!(
        "iomodels: sweeping {} model(s) and {} peer(s) × {} route(s) × {} protocol(s): from {} req/s ×{} per step, {:.1} s a step, SLO p99 ≤ route's wait + {}",
        models.len(),
        peer_list.len(),
        spec.routes.len(),
        protocols.len(),
        spec.from_rps,
        spec.factor,
        spec.step_s + spec.warmup_s,
        sweep::fmt_ms(spec.slo_us)
    );
    let subjects: Vec<String> = models
        .iter()
        .cloned()
        .chain(peer_list.iter().map(|p| p.name().to_string()))
        .collect();
    let (curves, net) = if args.net.netns {
        if !peer_list.is_empty() {
            return Err(Usage("--netns sweeps models only: no --peers".into()).into());
        }
        // Every request pays the round trip: the SLO is on top of it.
        let rtt_us = args.net.rtt.unwrap_or_default().as_secs_f64() * 1e6;
        spec.slo_us += rtt_us;
        spec.cap_us += rtt_us;
        if rtt_us > 0.0 {
            eprintln!(
                "iomodels: --netns: the SLO and the saturation cap count from the route's wait + the RTT ({})",
                sweep::fmt_ms(rtt_us)
            );
        }
        iomodels_suite::netns::clean_up_on_signals();
        let (net, setup, placement) = iomodels_suite::netns::build(&args.net.spec())?;
        eprintln!(
            "iomodels: --netns: RTT {:.3} ms by {:?}: {}",
            setup.rtt_ms, setup.delay_by, setup.delay_note
        );
        let curves = iomodels_suite::netns::run_in(placement, || {
            sweep::sweep_all(&dir, &subjects, &protocols, &spec)
        })?;
        drop(net);
        (curves, Some(setup))
    } else {
        (sweep::sweep_all(&dir, &subjects, &protocols, &spec), None)
    };
    let results = results::Results {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.clone(),
        machine,
        config: RunConfig {
            models,
            scenarios: vec![Scenario::Sweep],
            protocols,
            duration_s: spec.step_s,
            warmup_s: spec.warmup_s,
            repeat: 1,
            workers: spec.workers,
            idle_levels: Vec::new(),
            idle_models: Vec::new(),
            missing,
            peers: peer_list.iter().map(|p| p.name().to_string()).collect(),
            base_bins: None,
        },
        runs: Vec::new(),
        syscalls: Vec::new(),
        cost: Vec::new(),
        sweep: Some(spec),
        sweeps: curves,
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
    let json = out_dir.join("results.json");
    results.save(&json)?;
    if let Some(setup) = &net {
        iomodels_suite::netns::record(&json, setup)?;
    }
    let html = report::write(&results, &out_dir)?;
    print_out(&sweep::capacity_table(&results.sweeps));
    let took = start.elapsed().map_or(0.0, |d| d.as_secs_f64());
    print_out(&format!(
        "\nresults: {}\nreport:  {} (and report.md), {took:.0} s\n",
        json.display(),
        html.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The models to run: those asked for (each must be built in `dir`), or
/// every one found there; and the known models that are missing.
/// The peers to run: every installed one when `by_default` or `all` was
/// asked (the others named on stderr, one line each, and added to
/// `missing`), and each one `named` (which must be installed).
fn choose_peers(
    dir: &Path,
    asked: &[String],
    named: &[Peer],
    by_default: bool,
    missing: &mut Vec<String>,
) -> anyhow::Result<Vec<Peer>> {
    let mut list = Vec::new();
    if by_default || asked.iter().any(|p| p == "all") {
        for p in Peer::ALL {
            match p.missing(dir) {
                None => list.push(p),
                Some(why) => {
                    eprintln!("iomodels: skipping peer {why}");
                    missing.push(p.name().to_string());
                }
            }
        }
    }
    for &p in named {
        if list.contains(&p) || missing.iter().any(|m| m == p.name()) {
            continue;
        }
        if let Some(why) = p.missing(dir) {
            return Err(Usage(format!("peer {why}")).into());
        }
        list.push(p);
    }
    list.sort();
    list.dedup();
    Ok(list)
}

fn choose_models(dir: &Path, asked: &[String]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let found = models::discover(dir);
    let missing_known: Vec<&str> = models::KNOWN
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !found.iter().any(|f| f == m))
        .collect();
    let (models, missing) = if asked.is_empty() {
        if found.is_empty() {
            anyhow::bail!(
                "no *-server binaries in {}: build them with `cargo build --release --workspace`",
                dir.display()
            );
        }
        if !missing_known.is_empty() {
            eprintln!(
                "iomodels: not found in {} (not built, or not in this checkout): {}",
                dir.display(),
                missing_known
                    .iter()
                    .map(|m| format!("{m}-server"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        (
            found.clone(),
            missing_known
                .iter()
                .map(|m| format!("{m}-server"))
                .collect(),
        )
    } else {
        let absent: Vec<String> = asked
            .iter()
            .filter(|m| !found.contains(m))
            .map(|m| format!("{m}-server"))
            .collect();
        if !absent.is_empty() {
            return Err(Usage(format!(
                "not found in {}: {} (found: {})",
                dir.display(),
                absent.join(", "),
                found.join(", ")
            ))
            .into());
        }
        (asked.to_vec(), Vec::new())
    };
    if !dir.join("loadgen").exists() {
        eprintln!(
            "iomodels: note: no loadgen binary in {} (iomodels drives the loadgen library itself; build the workspace for the standalone tool)",
            dir.display()
        );
    }
    Ok((models, missing))
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
    fn parses_a_run() {
        let c = Cli::try_parse_from([
            "iomodels",
            "run",
            "--models",
            "epoll,poll",
            "--scenarios",
            "hello,idle",
            "-d",
            "300ms",
        ])
        .unwrap();
        let Some(Cmd::Run(a)) = c.cmd else {
            panic!("run")
        };
        assert_eq!(a.models, ["epoll", "poll"]);
        assert_eq!(a.scenarios, [Scenario::Hello, Scenario::Idle]);
        assert_eq!(a.duration.as_millis(), 300);
        assert!(Cli::try_parse_from(["iomodels", "run", "--scenarios", "nope"]).is_err());
    }
}
