//! # fpm-server — php-fpm's process manager: pools, a scoreboard, a status page
//!
//! Run it: `fpm-server --listen 127.0.0.1:9000 --pm dynamic --max-children 8`
//! (several pools: `--config FILE`, see docs/models/fpm.md).
//!
//! `prefork-server` with the part php-fpm adds around it. A master process
//! creates each pool's listening socket and forks workers that block in
//! `accept` and serve one connection at a time (exactly the prefork
//! worker). The master never touches a request: it *manages* — it reads
//! what every worker is doing from a shared-memory scoreboard and decides
//! whom to fork, retire or kill.
//!
//! ```text
//!   master ──mmap(MAP_SHARED) scoreboard──┐   per pool: counters + one slot
//!     │ fork / SIGQUIT (retire) / SIGKILL │   per worker (pid, state, URI,
//!     │ poll(self-pipe, ondemand listener)│   requests, durations)
//!     ▼                                   ▼
//!   [pool www]  listen 127.0.0.1:9000     worker: accept → read → run →
//!     worker 1   worker 2   …  ≤ max-children      write → (keep-alive) read …
//!   [pool api]  listen 127.0.0.1:9001     each stage written to its slot
//!     worker 1 …
//! ```
//!
//! **Process managers** (`--pm`, per pool; the rules are in `pm.rs`):
//! * `static` — always `--max-children` workers.
//! * `dynamic` — starts `--start-servers`; once a second the master counts
//!   idle workers: below `--min-spare` it forks 1, then 2, 4 … up to 32 per
//!   tick while still short (php-fpm's doubling spawn rate, never beyond
//!   `--max-children`); above `--max-spare` it retires one worker per tick,
//!   the idle one forked first (php-fpm's rule).
//! * `ondemand` — starts none. When no worker is idle or starting, the
//!   master polls the listening socket itself; a waiting connection makes it
//!   fork one worker. Once a tick, the idle worker forked first is retired
//!   if it has been idle longer than `--process-idle-timeout`.
//!
//! **One keep-alive request costs** what it costs in prefork (a `read` and a
//! `write` in the worker), plus a few relaxed atomic stores to the
//! scoreboard — no system call. The master costs a `poll` wake-up each
//! 100 ms and a scan of the scoreboard.
//!
//! **Trade-off.** The pool breathes: idle capacity is bounded (memory),
//! bursts are absorbed within a few seconds, a stuck request is killed
//! (`--request-terminate-timeout`), a leaky worker is recycled
//! (`--max-requests`), slow requests are logged (`--slowlog-timeout`), and
//! the scoreboard makes all of it observable on `/status` (`status.rs`).
//! The price is reaction time: `dynamic` grows at most once a second and
//! shrinks by one a second, `ondemand` pays a `fork` on the first request
//! after a quiet period, and concurrency is still capped at
//! `--max-children` connections, exactly like prefork.
//!
//! **When it wins**: blocking handlers (PHP) behind a web server that keeps
//! few connections to it (nginx `fastcgi_pass`), load that varies over
//! the day, several applications with their own limits on one host (one
//! pool each). **Where it breaks**: many idle keep-alive clients (each pins
//! a worker; max children reached), and sudden bursts faster than the
//! maintenance tick. Compare with `prefork-server` (`--pm static` without
//! the manager) and `swoole-server` (reactor threads in front of the
//! workers, so idle connections no longer pin a process).
//!
//! **Signals.** SIGQUIT — graceful stop, as php-fpm's: workers finish the
//! requests they hold (here also the listen backlog); the master waits for
//! them all. SIGTERM/SIGINT — a graceful stop too, because every model of
//! this suite drains on SIGTERM; the master kills workers still running
//! after `--process-control-timeout`. That is *not* php-fpm's SIGTERM:
//! there SIGTERM/SIGINT stop at once (workers keep SIGTERM's default
//! action and die mid-request; `fpm_signals.c`, `fpm_process_ctl.c` in
//! php-src's sapi/fpm/fpm). SIGUSR2 — reload: a graceful stop of the
//! workers, then the master re-executes itself keeping the listening
//! sockets (the runtime's `reload` module), so no connection is refused
//! meanwhile. A worker that dies is replaced (after a back-off if it died
//! right after its start: the runtime's `supervisor`); if
//! `--emergency-restart-threshold` workers die by a signal within
//! `--emergency-restart-interval`, the master reloads.

mod config;
mod control;
mod pm;
mod status;
mod worker;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{DataDir, Shared};
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::reload::{self, Inherited};
use iomodels_servers::scoreboard::{Scoreboard, State};
use iomodels_servers::supervisor::Supervisor;
use iomodels_servers::{blocking, signals};
use nix::sys::signal::Signal;

use config::{Pm, PoolConf};
use control::{QUIT, RELOAD};

/// How often the master looks at the scoreboard for slow and stuck requests.
const CHECK: Duration = Duration::from_millis(100);
/// How often the process manager runs (php-fpm: once a second).
const MAINTENANCE: Duration = Duration::from_secs(1);

/// php-fpm's process manager: pools of workers blocking in accept, a scoreboard, a status page.
#[derive(Debug, Parser)]
#[command(name = "fpm-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Process manager of the pool
    #[arg(long, value_enum, default_value_t = Pm::Dynamic)]
    pm: Pm,

    /// Most workers at once [default: --workers]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_children: Option<u32>,

    /// Workers forked at start (dynamic) [default: min-spare + (max-spare - min-spare) / 2]
    #[arg(long, value_name = "N")]
    start_servers: Option<u32>,

    /// Fewest idle workers (dynamic)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    min_spare: u32,

    /// Most idle workers (dynamic) [default: 3, at most max-children]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_spare: Option<u32>,

    /// Seconds an ondemand worker may sit idle before it is retired
    #[arg(long, value_name = "S", default_value = "10", value_parser = cli::parse_seconds)]
    process_idle_timeout: Duration,

    /// Requests a worker serves before it is recycled (0: never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_requests: u64,

    /// Seconds after which a running request's worker is killed
    #[arg(long, value_name = "S", value_parser = cli::parse_seconds)]
    request_terminate_timeout: Option<Duration>,

    /// Seconds after which a running request is logged as slow (stderr) and counted
    #[arg(long, value_name = "S", value_parser = cli::parse_seconds)]
    slowlog_timeout: Option<Duration>,

    /// Seconds a stop by SIGTERM/SIGINT waits for workers before killing them
    #[arg(long, value_name = "S", default_value = "10", value_parser = cli::parse_seconds)]
    process_control_timeout: Duration,

    /// Workers dying by a signal within --emergency-restart-interval that make the master reload (0: never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    emergency_restart_threshold: usize,

    /// Window of --emergency-restart-threshold, in seconds
    #[arg(long, value_name = "S", default_value = "60", value_parser = cli::parse_seconds)]
    emergency_restart_interval: Duration,

    /// Pools file (INI: a `[name]` section per pool; see docs/models/fpm.md); without it one pool "www" from the flags
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    cli::main(run)
}

/// A running pool, as the master keeps it (a forked worker reads it too).
struct Pool {
    conf: PoolConf,
    listener: OwnedFd,
    shown: String,
    shared: Shared,
    board: Scoreboard,
    /// php-fpm's spawn rate: doubles while the pool stays short of idle workers.
    spawn_rate: usize,
}

fn run(args: Args) -> anyhow::Result<()> {
    let confs = config::pools(&args)?;
    // What `Startup::begin` does for the other models, done per pool: it
    // binds the one `--listen` address for one `Shared`, while fpm has a
    // listener and a `Shared` (its protocol) per pool from `--config`, and
    // after a reload (SIGUSR2) those listeners are inherited, not bound.
    signals::install()?;
    control::install()?;
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let mut inherited = Inherited::from_env();
    let reloaded = inherited.is_reload();
    let mut pools = Vec::new();
    for conf in confs {
        let (listener, shown) = match inherited.take(&conf.name, &conf.listen)? {
            Some(socket) => socket,
            None => net::listen(&conf.listen, args.common.backlog, ListenOptions::BLOCKING)?,
        };
        // accept(2) honours SO_RCVTIMEO: workers wake each tick to look at
        // their flags even when no connection comes.
        net::set_recv_timeout(&listener, blocking::TICK);
        let mut shared = Shared::new("fpm", &args.common, &data, conf.max_children)?;
        shared.protocol = conf.protocol;
        let board = Scoreboard::shared(conf.max_children as usize)?;
        pools.push(Pool {
            conf,
            listener,
            shown,
            shared,
            board,
            spawn_rate: 1,
        });
    }
    let mut master = Master {
        pools,
        supervisor: Supervisor::new()?,
        deaths: VecDeque::new(),
        args: &args,
    };
    for p in 0..master.pools.len() {
        for _ in 0..master.pools[p].conf.initial() {
            master.spawn(p)?;
        }
    }
    for pool in &master.pools {
        eprintln!(
            "fpm-server: pool {} ({}, pm {}) listening on {}",
            pool.conf.name,
            pool.conf.protocol.name(),
            pool.conf.pm.name(),
            pool.shown
        );
    }
    // A reloaded master is the same server: the ready line was printed once.
    if !reloaded {
        cli::ready(&master.pools[0].shown);
    }
    match master.run()? {
        Exit::Stopped => Ok(()),
        Exit::Reload => {
            drop(data);
            let sockets: Vec<(&str, &OwnedFd)> = (master.pools.iter())
                .map(|p| (p.conf.name.as_str(), &p.listener))
                .collect();
            Err(reload::reexec(&sockets))
        }
    }
}

/// Why the master's loop ended.
enum Exit {
    Stopped,
    Reload,
}

/// The master: pools, their workers (the supervisor's children; a child's
/// place is its pool's index), and the recent crashes.
struct Master<'a> {
    pools: Vec<Pool>,
    supervisor: Supervisor<usize>,
    deaths: VecDeque<Instant>,
    args: &'a Args,
}

impl Master<'_> {
    /// The master's loop: sleep in poll(2) on the self-pipe (signals, child
    /// exits) and the listeners of ondemand pools that have no worker
    /// ready; reap and replace; look for slow and stuck requests; run the
    /// process manager once a second. It never accepts a connection.
    fn run(&mut self) -> anyhow::Result<Exit> {
        let mut last_maintenance = Instant::now();
        let mut exit = None;
        loop {
            let watched: Vec<usize> = (0..self.pools.len())
                .filter(|&p| exit.is_none() && self.ondemand_watch(p))
                .collect();
            let fds: Vec<BorrowedFd> = (watched.iter())
                .map(|&p| self.pools[p].listener.as_fd())
                .collect();
            let ready = self.supervisor.sleep(&fds, CHECK)?;
            if exit.is_none() {
                exit = self.signalled();
            }
            self.reap();
            if self.supervisor.done() {
                return Ok(exit.unwrap_or(Exit::Stopped));
            }
            self.check_requests();
            if exit.is_some() {
                continue;
            }
            // Replacements whose back-off is over; then ondemand: a
            // connection waits and nobody can take it, so fork one.
            for p in self.supervisor.due() {
                self.spawn(p)?;
            }
            for (&p, _) in watched.iter().zip(ready).filter(|(_, r)| *r) {
                self.spawn(p)?;
            }
            if last_maintenance.elapsed() >= MAINTENANCE {
                last_maintenance = Instant::now();
                for p in 0..self.pools.len() {
                    self.maintain(p)?;
                }
            }
        }
    }

    /// A stop or a reload, if a signal (or the emergency rule) asks for
    /// one: workers get SIGTERM (they finish the requests they hold and the
    /// backlog); after SIGTERM/SIGINT those still running after
    /// `--process-control-timeout` are killed.
    fn signalled(&mut self) -> Option<Exit> {
        let term = signals::stop_requested();
        let quit = QUIT.load(Relaxed);
        let reload = RELOAD.swap(false, Relaxed) || self.emergency();
        let (why, exit) = match (term, quit, reload) {
            (true, _, _) => ("stop (SIGTERM/SIGINT)", Exit::Stopped),
            (_, true, _) => ("graceful stop (SIGQUIT)", Exit::Stopped),
            (_, _, true) => ("reload", Exit::Reload),
            _ => return None,
        };
        eprintln!(
            "fpm-server: {why}: waiting for {} workers",
            self.supervisor.len()
        );
        let deadline = term.then_some(self.args.process_control_timeout);
        self.supervisor.stop(Signal::SIGTERM, deadline);
        Some(exit)
    }

    /// Whether an ondemand pool's listener should wake the master: no
    /// worker idle or starting, and room for one more.
    fn ondemand_watch(&self, p: usize) -> bool {
        let pool = &self.pools[p];
        pool.conf.pm == Pm::Ondemand
            && (pool.board.live().count() as u32) < pool.conf.max_children
            && !(pool.board.live()).any(|s| matches!(s.state(), State::Idle | State::Starting))
    }

    /// Forks a worker into a free slot of pool `p` (none free: nothing).
    fn spawn(&mut self, p: usize) -> anyhow::Result<()> {
        let pool = &self.pools[p];
        let slots = pool.board.slots();
        let Some(slot) = (0..slots.len())
            .find(|&i| slots[i].pid.load(Relaxed) == 0 && slots[i].state() == State::Free)
        else {
            return Ok(());
        };
        slots[slot].reset(0, State::Starting);
        let pid = self.supervisor.spawn(p, |_| worker::run(pool, slot))?;
        slots[slot].pid.store(pid.as_raw() as u32, Relaxed);
        Ok(())
    }

    /// Frees the slots of the workers that exited, and has the supervisor
    /// replace those that left on their own (a crash, `--max-requests`, a
    /// stuck request killed) unless the pool is ondemand. Retired workers
    /// are not replaced.
    fn reap(&mut self) {
        for gone in self.supervisor.reap() {
            let pool = &self.pools[gone.place];
            let pid = gone.pid.as_raw() as u32;
            if let Some(slot) = pool
                .board
                .slots()
                .iter()
                .find(|s| s.pid.load(Relaxed) == pid)
            {
                slot.pid.store(0, Relaxed);
                slot.set_state(State::Free);
            }
            if self.supervisor.stopping() || gone.retired {
                continue;
            }
            let ondemand = pool.conf.pm == Pm::Ondemand;
            let name = pool.conf.name.clone();
            let delay = if ondemand {
                Duration::ZERO
            } else {
                self.supervisor.respawn(&gone)
            };
            if gone.failed() {
                let next = match (ondemand, delay.as_millis()) {
                    (true, _) => "a new one starts when a connection waits".into(),
                    (false, 0) => "starting a new one".into(),
                    (false, ms) => format!("starting a new one in {ms} ms"),
                };
                let how = gone.describe();
                eprintln!("fpm-server: [pool {name}] worker {pid} {how}; {next}");
            }
            if gone.crashed() {
                self.crashed();
            }
        }
    }
}
