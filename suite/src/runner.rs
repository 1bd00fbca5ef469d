//! Runs the matrix: for each run, a fresh server (`--workers 2 --listen
//! 127.0.0.1:0 --protocol P`), a warm-up load, a /proc snapshot of the
//! server's tree, the measured load, another snapshot, then SIGTERM.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use loadgen::{Protocol, Target};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::accounting;
use crate::peers::{Peer, Site};
use crate::procfs::{self, Cost};
use crate::results::{RunRecord, Syscalls};
use crate::scenarios::{self, Load, Scenario};

/// A run's generator CPU at or above this share of a core flags it.
pub const GENERATOR_LIMIT: f64 = 0.9;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Directory holding the `*-server` binaries.
    pub bin_dir: PathBuf,
    /// Models, in order.
    pub models: Vec<String>,
    /// Scenarios, in order (hello is run before open).
    pub scenarios: Vec<Scenario>,
    /// Protocols.
    pub protocols: Vec<Protocol>,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Repetitions.
    pub repeat: u32,
    /// Server `--workers`.
    pub workers: usize,
    /// Idle levels of the sweep.
    pub idle_levels: Vec<usize>,
    /// Models the sweep runs for (`None`: all).
    pub idle_models: Option<Vec<String>>,
    /// The open loop's rate for every model (`None`: half the lowest
    /// `hello` maximum among the models that set the equal load).
    pub open_rate: Option<f64>,
    /// Peers (real servers), run after the models in their own protocol.
    pub peers: Vec<Peer>,
    /// Where the peers' configurations are written (`<run dir>/peers`).
    pub peer_dir: PathBuf,
    /// The files the peers serve (present when there are peers).
    pub site: Option<Arc<Site>>,
    /// The model run twice in every round (the A/A check), if any.
    pub aa: Option<String>,
    /// `--base-bins`: every model is also run from the binaries here, in
    /// the same rounds, beside its new copy (the same-run A/B).
    pub base_bin_dir: Option<PathBuf>,
}

impl Plan {
    /// Whether the idle sweep runs for `model`.
    pub fn sweeps(&self, model: &str) -> bool {
        self.idle_models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Number of runs the plan makes (for the progress line).
    pub fn count(&self) -> usize {
        let per_model = |m: &str| {
            self.scenarios
                .iter()
                .map(|&s| match s {
                    Scenario::Idle if self.sweeps(m) => self.idle_levels.len(),
                    Scenario::Idle | Scenario::Sweep => 0,
                    _ => 1,
                })
                .sum::<usize>()
        };
        let copies = 1 + usize::from(self.base_bin_dir.is_some());
        let models = (self.models.iter().map(|m| per_model(m)).sum::<usize>() * copies
            + self.aa.as_deref().map_or(0, per_model))
            * self.protocols.len();
        let peers: usize = self
            .peers
            .iter()
            .filter(|p| self.protocols.contains(&p.protocol()))
            .map(|p| per_model(p.name()))
            .sum();
        (models + peers) * self.repeat as usize
    }

    /// The names of the models and then the peers, each with the
    /// protocols it is run in (a peer only in the one it speaks).
    pub fn subjects(&self) -> Vec<(String, Option<Peer>, Vec<Protocol>)> {
        let models = self
            .models
            .iter()
            .map(|m| (m.clone(), None, self.protocols.clone()));
        let peers = self.peers.iter().map(|&p| {
            let protocols = self
                .protocols
                .iter()
                .copied()
                .filter(|&x| x == p.protocol())
                .collect();
            (p.name().to_string(), Some(p), protocols)
        });
        models.chain(peers).collect()
    }
}

/// The exact counters attached to a server started by
/// [`Server::start_accounted`].
#[derive(Debug)]
pub struct Accounting {
    /// Its cgroup (CPU, peak memory), when one could be made and joined.
    pub cgroup: Option<accounting::Cgroup>,
    /// Its inherited context-switch counter, when perf allows it.
    pub csw: Option<accounting::CswCounter>,
    /// What could not be attached, and why.
    pub problems: Vec<String>,
}

/// The counters at one end of a measured interval: the server tree's
/// /proc snapshot and, where [`Accounting`] has them, its cgroup's CPU and
/// its perf context-switch count.
#[derive(Debug)]
pub struct Counters {
    proc: procfs::Snapshot,
    cpu: Option<accounting::CpuReading>,
    /// perf's context switches, when counted.
    pub csw: Option<u64>,
}

impl Counters {
    /// At the start of an interval: the exact counters first, /proc last,
    /// so that the exact ones bracket the /proc ones.
    pub fn start(acct: Option<&Accounting>, pid: u32) -> Counters {
        let cpu = acct.and_then(|a| a.cgroup.as_ref()?.cpu());
        let csw = acct.and_then(|a| a.csw.as_ref()?.read());
        let proc = procfs::snapshot(pid);
        Counters { proc, cpu, csw }
    }

    /// At the end of an interval: /proc first, then the exact counters.
    pub fn end(acct: Option<&Accounting>, pid: u32) -> Counters {
        let proc = procfs::snapshot(pid);
        let csw = acct.and_then(|a| a.csw.as_ref()?.read());
        let cpu = acct.and_then(|a| a.cgroup.as_ref()?.cpu());
        Counters { proc, cpu, csw }
    }

    /// The cost of `attempts` requests made in `wall_s` seconds between
    /// `before` and `self`: from /proc, made exact by the cgroup's CPU and
    /// perf's context switches where both ends read them, with the
    /// cgroup's memory peak.
    pub fn cost_since(
        &self,
        before: &Counters,
        acct: Option<&Accounting>,
        attempts: u64,
        wall_s: f64,
    ) -> Cost {
        let cg = acct.and_then(|a| a.cgroup.as_ref());
        let mut cost = Cost::between(&before.proc, &self.proc, attempts, wall_s);
        if let (Some(g), Some(b), Some(a)) = (cg, before.cpu, self.cpu) {
            cost = cost.with_cgroup_cpu(g.cpu_source(), b, a, attempts, wall_s);
        }
        if let (Some(b), Some(a)) = (before.csw, self.csw) {
            cost = cost.with_csw_count(b, a, attempts);
        }
        cost.cgroup_peak_kib = cg.and_then(|g| g.memory_peak_kib());
        cost
    }
}

/// A started server, stopped (its stop signal, then SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// `host:port` from its ready line.
    pub addr: String,
    /// What stops it cleanly: SIGTERM for the models; a peer's own (nginx
    /// and php-fpm finish gracefully on SIGQUIT, lighttpd on SIGINT).
    pub stop_signal: Signal,
}

/// How [`Server::spawn`] knows the server is ready.
#[derive(Debug, Clone)]
pub enum Ready {
    /// It prints `listening on ADDR` on stdout (every model).
    Line,
    /// These addresses accept TCP connections, in order (a real server,
    /// which prints nothing); the last is the server's own address, the
    /// ones before it what it needs first (the FastCGI application behind
    /// nginx).
    Accepts(Vec<String>),
}

impl Server {
    /// Starts `bin` and waits at most 10 s for `listening on ADDR`.
    pub fn start(bin: &Path, protocol: Protocol, workers: usize) -> anyhow::Result<Server> {
        Server::start_with(Command::new(bin), protocol, workers)
    }

    /// Starts the server `cmd` runs (a wrapper such as strace may come first).
    pub fn start_with(
        mut cmd: Command,
        protocol: Protocol,
        workers: usize,
    ) -> anyhow::Result<Server> {
        // In a --netns run: the server's namespace, CPUs and veth address.
        crate::netns::place_server(&mut cmd);
        let listen = crate::netns::listen_addr();
        cmd.args(["--listen", &listen, "--protocol", protocol.name()])
            .args(["--workers", &workers.to_string()])
            .stderr(Stdio::null());
        Server::spawn(cmd, Ready::Line)
    }

    /// Starts `bin` inside a fresh cgroup and under an inherited
    /// context-switch counter (see [`accounting`]), attached before its
    /// first instruction. What could not be attached is `None` in the
    /// returned [`Accounting`], with the reason in its `problems`.
    pub fn start_accounted(
        bin: &Path,
        protocol: Protocol,
        workers: usize,
    ) -> anyhow::Result<(Server, Accounting)> {
        Server::start_accounted_with(Command::new(bin), protocol, workers)
    }

    /// [`Server::start_accounted`] of the server `cmd` runs (with its flags).
    pub fn start_accounted_with(
        mut cmd: Command,
        protocol: Protocol,
        workers: usize,
    ) -> anyhow::Result<(Server, Accounting)> {
        // In a --netns run: the server's namespace, CPUs and veth address.
        crate::netns::place_server(&mut cmd);
        let listen = crate::netns::listen_addr();
        cmd.args(["--listen", &listen, "--protocol", protocol.name()])
            .args(["--workers", &workers.to_string()])
            .stderr(Stdio::null());
        let cgroup = accounting::Cgroup::create();
        Server::spawn_with(cmd, Ready::Line, move |c| {
            let (child, csw, problems) = accounting::spawn(c, cgroup.as_ref())?;
            Ok((
                child,
                Accounting {
                    cgroup: cgroup.filter(|_| !problems.iter().any(|p| p.starts_with("cgroup"))),
                    csw,
                    problems,
                },
            ))
        })
    }

    /// Starts `cmd` and waits at most 10 s until it is ready. Every server
    /// the suite measures, model or peer, is started here.
    pub fn spawn(cmd: Command, ready: Ready) -> anyhow::Result<Server> {
        Server::spawn_with(cmd, ready, |c| Ok((c.spawn()?, ()))).map(|(s, ())| s)
    }

    /// [`Server::spawn`] with the process started by `spawn` (which may
    /// attach something to it and return it beside the child).
    fn spawn_with<T>(
        mut cmd: Command,
        ready: Ready,
        spawn: impl FnOnce(&mut Command) -> std::io::Result<(Child, T)>,
    ) -> anyhow::Result<(Server, T)> {
        cmd.stdin(Stdio::null()).stdout(match ready {
            Ready::Line => Stdio::piped(),
            Ready::Accepts(_) => Stdio::null(),
        });
        let (mut child, extra) = spawn(&mut cmd)
            .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", cmd.get_program()))?;
        if let Ready::Accepts(addrs) = ready {
            let mut server = Server {
                child,
                addr: addrs.last().cloned().unwrap_or_default(),
                stop_signal: Signal::SIGTERM,
            };
            let end = Instant::now() + Duration::from_secs(10);
            for a in &addrs {
                loop {
                    if std::net::TcpStream::connect(a).is_ok() {
                        break;
                    }
                    if let Ok(Some(st)) = server.child.try_wait() {
                        anyhow::bail!(
                            "{:?} exited ({st}) before accepting on {a}",
                            cmd.get_program()
                        );
                    }
                    if Instant::now() > end {
                        anyhow::bail!("{:?} did not accept on {a} within 10 s", cmd.get_program());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            return Ok((server, extra));
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stop_signal: Signal::SIGTERM,
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => {
                server.addr = addr;
                Ok((server, extra))
            }
            Err(_) => anyhow::bail!("{:?} printed no ready line within 10 s", cmd.get_program()),
        }
    }

    /// The server's pid (the root of its process tree).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stop signal, wait up to 3 s, then SIGKILL; then any process of
    /// the tree still alive (a daemon orphaned by its parent's death) is
    /// killed too, so no run leaves a server behind.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(3));
    }

    /// [`Server::stop`] with `grace` instead of 3 s before SIGKILL (a
    /// server under valgrind needs longer to write its counts).
    pub fn stop_within(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let tree = crate::survivors::tree(self.child.id());
        let _ = kill(Pid::from_raw(self.child.id() as i32), self.stop_signal);
        let end = Instant::now() + grace;
        let mut exited = false;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if tree.len() > 1 {
            crate::survivors::kill(&tree[1..]);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The load generator's target for `addr` in `protocol`.
pub fn target(addr: &str, protocol: Protocol) -> anyhow::Result<Target> {
    let scheme = match protocol {
        Protocol::Http => "http",
        Protocol::Fcgi => "fcgi",
    };
    Target::parse(&format!("{scheme}://{addr}/"), None, None).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The binary of `model` in `dir`.
pub fn server_bin(dir: &Path, model: &str) -> PathBuf {
    dir.join(format!("{model}-server"))
}

/// One measured run against a fresh server.
pub fn run_one(
    plan: &Plan,
    model: &str,
    scenario: Scenario,
    protocol: Protocol,
    rep: u32,
    load: Load,
) -> RunRecord {
    let mut rec = RunRecord {
        model: model.to_string(),
        scenario,
        protocol,
        rep,
        load: load.clone(),
        skipped: None,
        report: None,
        server: None,
        generator_limited: false,
        error: None,
        aa: false,
        base: false,
    };
    let q = crate::models::quirks(model);
    if q.fd_setsize && load.idle + load.connections + 16 > 1024 {
        rec.skipped = Some(format!(
            "{model}-server refuses fds >= FD_SETSIZE (1024): cannot hold {} idle connections",
            load.idle
        ));
        return rec;
    }
    if scenario == Scenario::Open && load.rate.is_none_or(|r| r < 1.0) {
        rec.skipped = Some("no rate for the open loop: give --rate, or run hello or sweep".into());
        return rec;
    }
    let measured = match Peer::parse(model).filter(|p| plan.peers.contains(p)) {
        Some(peer) => match peer.serves(scenario) {
            Err(why) => {
                rec.skipped = Some(format!("n/a: {why}"));
                return rec;
            }
            Ok(()) => crate::peers::measure(plan, peer, scenario, protocol, &load),
        },
        None => measure(plan, model, scenario, protocol, &load),
    };
    match measured {
        Ok((report, cost)) => {
            rec.generator_limited = report.cpu.utilization >= GENERATOR_LIMIT;
            rec.server = Some(cost);
            rec.report = Some(report);
        }
        Err(e) => rec.error = Some(e.to_string()),
    }
    rec
}

fn measure(
    plan: &Plan,
    model: &str,
    scenario: Scenario,
    protocol: Protocol,
    load: &Load,
) -> anyhow::Result<(loadgen::Report, Cost)> {
    let (mut server, acct) =
        Server::start_accounted(&server_bin(&plan.bin_dir, model), protocol, plan.workers)?;
    // In a --netns run with the relay's delay, the relay's address.
    let t = target(&crate::netns::route(&server.addr)?, protocol)?;
    let measured = measure_accounted(plan, &mut server, t, &[], scenario, load, Some(&acct));
    // The cgroup is removed once the server has left it.
    server.stop();
    drop(acct);
    measured
}

/// Warms up, then measures one run of `scenario` against the started
/// `server` at `t` (with FastCGI `params`), and stops it: the same
/// measurement for models and peers.
pub fn measure_on(
    plan: &Plan,
    server: &mut Server,
    t: Target,
    params: &[String],
    scenario: Scenario,
    load: &Load,
) -> anyhow::Result<(loadgen::Report, Cost)> {
    measure_accounted(plan, server, t, params, scenario, load, None)
}

/// [`measure_on`] with the server's exact counters, when it has them
/// (CPU and memory peak from its cgroup, context switches from perf);
/// without, the /proc figures are kept and marked.
fn measure_accounted(
    plan: &Plan,
    server: &mut Server,
    t: Target,
    params: &[String],
    scenario: Scenario,
    load: &Load,
    acct: Option<&Accounting>,
) -> anyhow::Result<(loadgen::Report, Cost)> {
    if plan.warmup_s > 0.0 {
        // Warm-up without the idle connections (they are opened by the
        // measured run and held through it), and with at most as many
        // connections as the server has workers: a blocking model serves
        // one connection per worker, and the rest would wait in its listen
        // backlog after the warm-up ended, each with a request that the
        // workers would serve first during the measured run.
        let warm = Load {
            idle: 0,
            connections: load.connections.min(plan.workers.max(1)),
            ..load.clone()
        };
        let mut c = scenarios::config(t.clone(), scenario, &warm, plan.warmup_s);
        c.params = params.to_vec();
        loadgen::run(&c).map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
    }
    let mut c = scenarios::config(t, scenario, load, plan.duration_s);
    c.params = params.to_vec();
    // Run::new connects once and opens nothing else: the snapshot taken
    // after it brackets the idle connections and the measured load.
    let run = loadgen::Run::new(&c).map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = Counters::start(acct, server.pid());
    let t0 = Instant::now();
    // With --agents (and --models) the measured load comes from them.
    let report = match crate::agents::remote(&c) {
        Some(r) => r?,
        None => run.start().map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let wall = t0.elapsed().as_secs_f64();
    let after = Counters::end(acct, server.pid());
    server.stop();
    let attempts = report.requests + report.errors.transport();
    Ok((report, after.cost_since(&before, acct, attempts, wall)))
}

/// Runs the whole plan, round by round: every round runs each scenario
/// (and idle level) for every model, then every peer, before the next
/// scenario, so the models compared in a scenario run seconds apart and
/// share the machine's noise; `--repeat N` makes N such rounds (A B C,
/// A B C, …), never A A A. The A/A model runs twice in each cell, right
/// after itself. The open loop runs last in each round, at one rate for
/// every model (per protocol): equal load, so its latencies compare.
///
/// `progress`: on a terminal, one line redrawn on stderr; otherwise (a CI
/// log) one line per finished run with the elapsed time.
pub fn run_plan(plan: &Plan, progress: bool) -> Vec<RunRecord> {
    crate::survivors::adopt_orphans();
    let total = plan.count();
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut done = 0usize;
    let mut out = Vec::new();
    let mut scenarios = plan.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    let open = scenarios.contains(&Scenario::Open);
    scenarios.retain(|s| *s != Scenario::Open && *s != Scenario::Sweep);
    // The base binaries' plan, for the same-run A/B (`--base-bins`).
    let base_plan = plan.base_bin_dir.as_ref().map(|dir| Plan {
        bin_dir: dir.clone(),
        ..plan.clone()
    });
    for rep in 0..plan.repeat {
        // (name, protocols, copy): the models, each with its base copy
        // beside it (after it in rounds 1, 3, …, before it in rounds 2,
        // 4, …: neither always goes first) and its A/A copy right after,
        // then the peers.
        let mut entrants: Vec<(String, Vec<Protocol>, Copy)> = Vec::new();
        for (name, peer, protocols) in plan.subjects() {
            let mut copies = vec![Copy::New];
            if peer.is_none() && base_plan.is_some() {
                copies.insert(1 - rep as usize % 2, Copy::Base);
            }
            if peer.is_none() && plan.aa.as_deref() == Some(name.as_str()) {
                copies.push(Copy::AA);
            }
            entrants.extend(
                copies
                    .into_iter()
                    .map(|c| (name.clone(), protocols.clone(), c)),
            );
        }
        let first = out.len();
        for pass in [
            scenarios.clone(),
            if open { vec![Scenario::Open] } else { vec![] },
        ] {
            let rates: Vec<(Protocol, Option<f64>)> = plan
                .protocols
                .iter()
                .map(|&p| {
                    let hello = out[first..]
                        .iter()
                        // The models' hello maxima set the equal load; a
                        // peer's (fcgiwrap's, say) or an A/A copy's does not.
                        .filter(|r: &&RunRecord| {
                            r.scenario == Scenario::Hello
                                && r.protocol == p
                                && !r.aa
                                && !r.base
                                && !plan.peers.iter().any(|x| x.name() == r.model)
                        })
                        .map(|r| (r.model.as_str(), r.rps() * scenarios::OPEN_FRACTION));
                    (
                        p,
                        plan.open_rate.or_else(|| crate::sweep::equal_rate(hello)),
                    )
                })
                .collect();
            for &protocol in &plan.protocols {
                for &scenario in &pass {
                    let mut levels: Vec<usize> = match scenario {
                        Scenario::Idle => plan.idle_levels.clone(),
                        _ => vec![0],
                    };
                    levels.dedup();
                    for idle in levels {
                        for (model, protocols, copy) in &entrants {
                            let (model, aa) = (model.as_str(), *copy == Copy::AA);
                            if !protocols.contains(&protocol)
                                || (scenario == Scenario::Idle && !plan.sweeps(model))
                            {
                                continue;
                            }
                            let what = format!(
                                "{model}{} {} {}{}",
                                copy.label(),
                                scenario.name(),
                                protocol.name(),
                                if scenario == Scenario::Idle {
                                    format!(" idle={idle}")
                                } else {
                                    String::new()
                                }
                            );
                            if progress && tty {
                                let mut e = std::io::stderr();
                                let _ = write!(
                                    e,
                                    "\r\x1b[2K[{}/{}] {:.0}s round {}/{} {what}",
                                    done + 1,
                                    total,
                                    started.elapsed().as_secs_f64(),
                                    rep + 1,
                                    plan.repeat
                                );
                                let _ = e.flush();
                            }
                            let rate = rates.iter().find(|r| r.0 == protocol).and_then(|r| r.1);
                            let mut load = scenarios::load(scenario, model, idle, rate);
                            if scenario == Scenario::Open {
                                load.connections = crate::sweep::connections(
                                    model,
                                    plan.workers,
                                    Some(load.connections),
                                    scenario.route(),
                                );
                            }
                            let from = match copy {
                                Copy::Base => base_plan.as_ref().unwrap_or(plan),
                                _ => plan,
                            };
                            let mut rec = run_one(from, model, scenario, protocol, rep, load);
                            rec.aa = aa;
                            rec.base = *copy == Copy::Base;
                            done += 1;
                            if progress && !tty {
                                let outcome = match (&rec.report, &rec.skipped, &rec.error) {
                                    (Some(r), _, _) => format!("{:.0} req/s", r.rps),
                                    (_, Some(s), _) => format!("skipped: {s}"),
                                    (_, _, Some(e)) => format!("failed: {e}"),
                                    _ => String::new(),
                                };
                                eprintln!(
                                    "iomodels: [{done}/{total}] {:.0} s  round {}/{}  {what}: {outcome}",
                                    started.elapsed().as_secs_f64(),
                                    rep + 1,
                                    plan.repeat
                                );
                            }
                            out.push(rec);
                        }
                    }
                }
            }
        }
    }
    if progress && tty {
        eprint!("\r\x1b[2K");
    }
    out
}

/// Which copy of a model a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// The binaries under test.
    New,
    /// The A/A copy: the same binary again, right after itself.
    AA,
    /// The `--base-bins` binary, beside the new one.
    Base,
}

impl Copy {
    fn label(self) -> &'static str {
        match self {
            Copy::New => "",
            Copy::AA => " (A/A)",
            Copy::Base => " (base)",
        }
    }
}

/// `strace -f -c` counts for `model` under a `seconds`-long `/hello` run;
/// `None` when strace is missing or the run failed.
pub fn syscalls(
    plan: &Plan,
    model: &str,
    protocol: Protocol,
    seconds: f64,
) -> anyhow::Result<Syscalls> {
    let out = std::env::temp_dir().join(format!(
        "iomodels-strace-{}-{model}.txt",
        std::process::id()
    ));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(server_bin(&plan.bin_dir, model));
    let mut server = Server::start_with(cmd, protocol, plan.workers)?;
    let load = scenarios::load(Scenario::Hello, model, 0, None);
    let c = scenarios::config(
        target(&server.addr, protocol)?,
        Scenario::Hello,
        &load,
        seconds,
    );
    let report = loadgen::run(&c).map_err(|e| anyhow::anyhow!("{e}"));
    // strace's child is the server: stop it, and strace writes its table.
    for pid in procfs::tree(server.pid()).into_iter().skip(1).take(1) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    server.stop();
    let report = report?;
    let text = std::fs::read_to_string(&out).map_err(|e| anyhow::anyhow!("strace output: {e}"))?;
    let _ = std::fs::remove_file(&out);
    Ok(Syscalls {
        model: model.to_string(),
        protocol,
        requests: report.requests,
        per_request: parse_strace(&text, report.requests),
    })
}

/// Calls per request by name from an `strace -c` table, most first.
pub fn parse_strace(text: &str, requests: u64) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            let name = *p.last()?;
            if p.len() < 5 || !p[0].starts_with(|c: char| c.is_ascii_digit()) || name == "total" {
                return None;
            }
            let calls: u64 = p[3].parse().ok()?;
            Some((name.to_string(), calls as f64 / requests.max(1) as f64))
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_summary() {
        let t = "% time     seconds  usecs/call     calls    errors syscall\n\
                 ------ ----------- ----------- --------- --------- ----------------\n\
                  60.00    0.006000           3      2000           read\n\
                  40.00    0.004000           2      1000        10 epoll_wait\n\
                 ------ ----------- ----------- --------- --------- ----------------\n\
                 100.00    0.010000                  3000        10 total\n";
        let r = parse_strace(t, 1000);
        assert_eq!(
            r,
            vec![("read".to_string(), 2.0), ("epoll_wait".to_string(), 1.0)]
        );
    }

    #[test]
    fn counts_runs_of_a_plan() {
        let plan = Plan {
            bin_dir: PathBuf::new(),
            models: vec!["epoll".into(), "thread".into()],
            scenarios: vec![Scenario::Hello, Scenario::Idle],
            protocols: vec![Protocol::Http, Protocol::Fcgi],
            duration_s: 1.0,
            warmup_s: 0.0,
            repeat: 2,
            workers: 2,
            idle_levels: vec![0, 10],
            idle_models: Some(vec!["epoll".into()]),
            open_rate: None,
            peers: vec![Peer::Nginx, Peer::PhpFpm],
            peer_dir: PathBuf::new(),
            site: None,
            aa: None,
            base_bin_dir: None,
        };
        // Models: both protocols; each peer: its own protocol only.
        assert_eq!(plan.count(), ((3 + 1) * 2 + 1 + 1) * 2);
        // The A/A copy of epoll: its 3 runs again in both protocols.
        let aa = Plan {
            aa: Some("epoll".into()),
            ..plan
        };
        assert_eq!(aa.count(), ((3 + 1 + 3) * 2 + 1 + 1) * 2);
        // With base binaries every model's runs twice (peers are not copied).
        let base = Plan {
            base_bin_dir: Some(PathBuf::from("/base")),
            ..aa
        };
        assert_eq!(base.count(), (((3 + 1) * 2 + 3) * 2 + 1 + 1) * 2);
    }
}
