//! # fpm-server — php-fpm's process manager: pools, a scoreboard, a status page
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
//! **Process managers** (`--pm`, per pool):
//! * `static` — always `--max-children` workers.
//! * `dynamic` — starts `--start-servers`; once a second the master counts
//!   idle workers: below `--min-spare` it forks 1, then 2, 4 … up to 32 per
//!   tick while still short (php-fpm's doubling spawn rate, never beyond
//!   `--max-children`); above `--max-spare` it retires the workers idle the
//!   longest.
//! * `ondemand` — starts none. When no worker is idle or starting, the
//!   master polls the listening socket itself; a waiting connection makes it
//!   fork one worker. Workers idle longer than `--process-idle-timeout` are
//!   retired.
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
//! the scoreboard makes all of it observable on `/status`. The price is
//! reaction time: `dynamic` grows at most once a second, `ondemand` pays a
//! `fork` on the first request after a quiet period, and concurrency is
//! still capped at `--max-children` connections, exactly like prefork.
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
//! **Signals** (as php-fpm's master): SIGQUIT — graceful: workers finish
//! their connections' requests and the listen backlog, the master waits for
//! all. SIGTERM/SIGINT — fast: the same, but the master kills workers still
//! running after `--process-control-timeout`. SIGUSR2 — reload: a graceful
//! stop of the workers, then the master re-executes itself keeping the
//! listening sockets (their numbers in `IOMODELS_LISTEN_FD`), so no
//! connection is refused meanwhile. A worker that dies is replaced; if
//! `--emergency-restart-threshold` workers die by a signal within
//! `--emergency-restart-interval`, the master reloads.
//!
//! **Status page**: `/status` (JSON, php-fpm's fields plus the workload's
//! `model`), `?full` adds one entry per worker, `?text` is php-fpm's
//! plain-text form. Several pools: `--config FILE` (docs/models/fpm.md).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use iomodels_servers::blocking::{self, ServeHost};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{DataDir, ServerHost, Shared};
use iomodels_servers::net::{self, ListenAddr};
use iomodels_servers::scoreboard::{self, Scoreboard, Slot, State};
use iomodels_servers::signals;
use iomodels_workload::{Host, Protocol, Status};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self as nsig, kill, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// The environment variable a reloading master passes its listening
/// sockets in: `pool=fd,pool=fd`.
const LISTEN_FD_ENV: &str = "IOMODELS_LISTEN_FD";
/// The most workers the dynamic manager forks in one tick.
const MAX_SPAWN_RATE: usize = 32;
/// How often the master looks at the scoreboard for slow and stuck requests.
const CHECK: Duration = Duration::from_millis(100);
/// How often the process manager runs (php-fpm: once a second).
const MAINTENANCE: Duration = Duration::from_secs(1);

/// The process manager of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pm {
    /// A fixed number of workers (--max-children).
    Static,
    /// Between --min-spare and --max-spare idle workers, at most --max-children.
    Dynamic,
    /// No worker until a connection waits; idle ones leave after --process-idle-timeout.
    Ondemand,
}

impl Pm {
    fn name(self) -> &'static str {
        match self {
            Pm::Static => "static",
            Pm::Dynamic => "dynamic",
            Pm::Ondemand => "ondemand",
        }
    }
}

/// php-fpm's process manager: pools of workers blocking in accept, a scoreboard, a status page.
#[derive(Debug, Parser)]
#[command(name = "fpm-server", version, about, long_about = None)]
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

    /// Seconds a fast stop (SIGTERM) waits for workers before killing them
    #[arg(long, value_name = "S", default_value = "10", value_parser = cli::parse_seconds)]
    process_control_timeout: Duration,

    /// Workers dying by a signal within --emergency-restart-interval that make the master reload (0: never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    emergency_restart_threshold: usize,

    /// Window of --emergency-restart-threshold, in seconds
    #[arg(long, value_name = "S", default_value = "60", value_parser = cli::parse_seconds)]
    emergency_restart_interval: Duration,

    /// Pools file (INI: a [name] section per pool; see docs/models/fpm.md); without it one pool "www" from the flags
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    cli::main(run)
}

/// One pool's settings.
#[derive(Debug, Clone)]
struct PoolConf {
    name: String,
    listen: ListenAddr,
    protocol: Protocol,
    pm: Pm,
    max_children: u32,
    start_servers: u32,
    min_spare: u32,
    max_spare: u32,
    process_idle_timeout: Duration,
    max_requests: u64,
    request_terminate_timeout: Option<Duration>,
    slowlog_timeout: Option<Duration>,
}

impl PoolConf {
    /// Pool "www" from the command line.
    fn from_args(args: &Args) -> anyhow::Result<PoolConf> {
        let max_children = args.max_children.unwrap_or(args.common.workers());
        let explicit_spare = args.max_spare.is_some();
        let max_spare = args.max_spare.unwrap_or(3).min(max_children);
        let min_spare = if explicit_spare || args.min_spare <= max_spare {
            args.min_spare
        } else {
            max_spare
        };
        let conf = PoolConf {
            name: "www".into(),
            listen: args.common.listen.clone(),
            protocol: args.common.protocol(),
            pm: args.pm,
            max_children,
            start_servers: args
                .start_servers
                .unwrap_or(min_spare + max_spare.saturating_sub(min_spare) / 2),
            min_spare,
            max_spare,
            process_idle_timeout: args.process_idle_timeout,
            max_requests: args.max_requests,
            request_terminate_timeout: args.request_terminate_timeout,
            slowlog_timeout: args.slowlog_timeout,
        };
        conf.check()?;
        Ok(conf)
    }

    /// php-fpm's consistency rules.
    fn check(&self) -> anyhow::Result<()> {
        let n = &self.name;
        if self.pm == Pm::Dynamic {
            if self.min_spare > self.max_spare {
                bail!(
                    "pool {n}: min-spare ({}) is above max-spare ({})",
                    self.min_spare,
                    self.max_spare
                );
            }
            if self.max_spare > self.max_children {
                bail!(
                    "pool {n}: max-spare ({}) is above max-children ({})",
                    self.max_spare,
                    self.max_children
                );
            }
            if self.start_servers < self.min_spare || self.start_servers > self.max_spare {
                bail!(
                    "pool {n}: start-servers ({}) must be from min-spare ({}) to max-spare ({})",
                    self.start_servers,
                    self.min_spare,
                    self.max_spare
                );
            }
        }
        if self.max_children == 0 {
            bail!("pool {n}: max-children must be at least 1");
        }
        Ok(())
    }

    /// Workers the manager starts with.
    fn initial(&self) -> u32 {
        match self.pm {
            Pm::Static => self.max_children,
            Pm::Dynamic => self.start_servers,
            Pm::Ondemand => 0,
        }
    }
}

/// Reads a pools file: `[name]` starts a pool, `key = value` sets one of
/// its settings (php-fpm's names or the flags' names), `;` and `#` start
/// comments. Settings not given come from the command line.
fn parse_config(text: &str, path: &Path, args: &Args) -> anyhow::Result<Vec<PoolConf>> {
    let base = PoolConf::from_args(args)?;
    let mut pools: Vec<(PoolConf, bool, bool)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = raw.split([';', '#']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            if name.is_empty() || pools.iter().any(|(p, _, _)| p.name == name) {
                bail!("{}: empty or repeated pool name [{name}]", at());
            }
            let mut conf = base.clone();
            conf.name = name.to_string();
            pools.push((conf, false, false));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}: expected `key = value` or `[pool]`", at());
        };
        let (key, value) = (key.trim(), value.trim());
        let Some((pool, has_listen, has_start)) = pools.last_mut() else {
            bail!("{}: `{key}` before any [pool] section", at());
        };
        let num = |v: &str| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("{}: {key}: '{v}' is not a number", at()))
        };
        let secs = |v: &str| -> anyhow::Result<Duration> {
            cli::parse_seconds(v.trim_end_matches('s'))
                .map_err(|e| anyhow::anyhow!("{}: {key}: {e}", at()))
        };
        match key.trim_start_matches("pm.").replace('-', "_").as_str() {
            "listen" => {
                pool.listen =
                    ListenAddr::parse(value).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                *has_listen = true;
            }
            "protocol" => {
                pool.protocol = match value {
                    "http" => Protocol::Http,
                    "fcgi" => Protocol::Fcgi,
                    _ => bail!("{}: protocol must be http or fcgi", at()),
                }
            }
            "pm" => {
                pool.pm = Pm::from_str(value, true).map_err(|_| {
                    anyhow::anyhow!("{}: pm must be static, dynamic or ondemand", at())
                })?
            }
            "max_children" => pool.max_children = num(value)? as u32,
            "start_servers" => {
                pool.start_servers = num(value)? as u32;
                *has_start = true;
            }
            "min_spare_servers" | "min_spare" => pool.min_spare = num(value)? as u32,
            "max_spare_servers" | "max_spare" => pool.max_spare = num(value)? as u32,
            "process_idle_timeout" => pool.process_idle_timeout = secs(value)?,
            "max_requests" => pool.max_requests = num(value)?,
            "request_terminate_timeout" => pool.request_terminate_timeout = Some(secs(value)?),
            "request_slowlog_timeout" | "slowlog_timeout" => {
                pool.slowlog_timeout = Some(secs(value)?)
            }
            _ => bail!("{}: unknown setting `{key}`", at()),
        }
    }
    if pools.is_empty() {
        bail!("{}: no [pool] section", path.display());
    }
    let mut out = Vec::new();
    for (mut pool, has_listen, has_start) in pools {
        if !has_listen {
            bail!("{}: pool {} has no `listen`", path.display(), pool.name);
        }
        if !has_start {
            pool.start_servers = pool.min_spare + pool.max_spare.saturating_sub(pool.min_spare) / 2;
        }
        pool.check()?;
        out.push(pool);
    }
    Ok(out)
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

/// A worker as the master tracks it.
#[derive(Debug, Clone, Copy)]
struct Child {
    pool: usize,
    slot: usize,
    /// The master retired it (SIGQUIT): its exit is not replaced.
    dismissed: bool,
    /// The master killed it (a stuck request): replaced, but not a crash.
    killed: bool,
}

static QUIT: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_quit(_: libc::c_int) {
    QUIT.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// SIGQUIT (graceful stop in the master, "retire" in a worker) and SIGUSR2
/// (reload) as flags; without SA_RESTART, so poll(2) and accept(2) return
/// EINTR and the loops look at them.
fn install_fpm_signals() -> anyhow::Result<()> {
    for (sig, handler) in [
        (Signal::SIGQUIT, on_quit as extern "C" fn(libc::c_int)),
        (Signal::SIGUSR2, on_reload),
    ] {
        let action = SigAction::new(
            SigHandler::Handler(handler),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handlers only store to an atomic, which is async-signal-safe.
        unsafe { nsig::sigaction(sig, &action)? };
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    signals::install()?;
    signals::wake_on_child_exit()?;
    install_fpm_signals()?;
    let confs = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            parse_config(&text, path, &args)?
        }
        None => vec![PoolConf::from_args(&args)?],
    };
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let mut inherited = inherited_listeners();
    let reloaded = !inherited.is_empty();
    let mut pools = Vec::new();
    for conf in confs {
        let (listener, shown) = match inherited.remove(&conf.name) {
            Some(fd) => adopt_listener(fd, &conf.listen)?,
            None => net::listen(&conf.listen, args.common.backlog, Default::default())?,
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
        children: HashMap::new(),
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
            reexec(&master.pools)
        }
    }
}

/// Listening sockets a reloading master left us, by pool name.
fn inherited_listeners() -> HashMap<String, RawFd> {
    let Ok(spec) = std::env::var(LISTEN_FD_ENV) else {
        return HashMap::new();
    };
    std::env::remove_var(LISTEN_FD_ENV);
    spec.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Takes over an inherited listening socket after checking it is one.
fn adopt_listener(fd: RawFd, addr: &ListenAddr) -> anyhow::Result<(OwnedFd, String)> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};
    // SAFETY: the descriptor is only borrowed for the two checks below,
    // during which nothing closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)
        .with_context(|| format!("{LISTEN_FD_ENV}: {fd} is not a socket"))?;
    if !listening {
        bail!("{LISTEN_FD_ENV}: {fd} is not a listening socket");
    }
    // SAFETY: the previous master handed this descriptor to us (and only to
    // us: it exec'd into this process); from here on we own it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let shown = getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| format!("{}:{}", a.ip(), a.port()))
        })
        .unwrap_or_else(|| addr.to_string());
    Ok((owned, shown))
}

/// Re-executes this program with the same arguments, keeping the listening
/// sockets open across exec (php-fpm's SIGUSR2).
fn reexec(pools: &[Pool]) -> anyhow::Result<()> {
    let mut spec = String::new();
    for pool in pools {
        fcntl(pool.listener.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        if !spec.is_empty() {
            spec.push(',');
        }
        let _ = write!(spec, "{}={}", pool.conf.name, pool.listener.as_raw_fd());
    }
    eprintln!("fpm-server: reloading (exec, keeping {spec})");
    let exe = std::env::current_exe().context("cannot find my executable")?;
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(LISTEN_FD_ENV, spec),
    );
    Err(err).context("reload: exec")
}

enum Exit {
    Stopped,
    Reload,
}

/// The master: pools, their workers, and the recent crashes.
struct Master<'a> {
    pools: Vec<Pool>,
    children: HashMap<Pid, Child>,
    deaths: VecDeque<Instant>,
    args: &'a Args,
}

impl Master<'_> {
    /// The master's loop: sleep in poll(2) on the self-pipe (stop, child
    /// exit) and the listeners of ondemand pools that have no worker ready;
    /// reap; look for slow and stuck requests; run the process manager once
    /// a second. It never accepts a connection.
    fn run(&mut self) -> anyhow::Result<Exit> {
        let mut last_maintenance = Instant::now();
        let mut stopping: Option<(Exit, Option<Instant>)> = None;
        loop {
            let watched: Vec<usize> = if stopping.is_some() {
                Vec::new()
            } else {
                (0..self.pools.len())
                    .filter(|&p| self.ondemand_watch(p))
                    .collect()
            };
            let mut fds = vec![PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
            fds.extend(
                watched
                    .iter()
                    .map(|&p| PollFd::new(self.pools[p].listener.as_fd(), PollFlags::POLLIN)),
            );
            let ready: Vec<bool> = match poll(&mut fds, PollTimeout::from(CHECK.as_millis() as u16))
            {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                    .collect(),
                Err(Errno::EINTR) => vec![false; fds.len()],
                Err(e) => return Err(e.into()),
            };
            drop(fds);
            signals::drain_stop_fd();

            // Signals: how to stop, if we are to.
            if stopping.is_none() {
                let fast = signals::stop_requested();
                let graceful = QUIT.load(Relaxed);
                let reload = RELOAD.swap(false, Relaxed) || self.emergency();
                if fast || graceful || reload {
                    let deadline = fast.then(|| Instant::now() + self.args.process_control_timeout);
                    let why = if fast {
                        "fast stop"
                    } else if graceful {
                        "graceful stop"
                    } else {
                        "reload"
                    };
                    eprintln!(
                        "fpm-server: {why}: waiting for {} workers",
                        self.children.len()
                    );
                    // Workers finish the requests they hold and the backlog.
                    for pid in self.children.keys() {
                        let _ = kill(*pid, Signal::SIGTERM);
                    }
                    let exit = if fast || graceful {
                        Exit::Stopped
                    } else {
                        Exit::Reload
                    };
                    stopping = Some((exit, deadline));
                }
            }
            self.reap(stopping.is_some())?;
            if let Some((exit, deadline)) = stopping.take() {
                if self.children.is_empty() {
                    return Ok(exit);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    for pid in self.children.keys() {
                        let _ = kill(*pid, Signal::SIGKILL);
                    }
                }
                self.check_requests();
                stopping = Some((exit, deadline));
                continue;
            }
            // ondemand: a connection waits and nobody can take it: fork one.
            for (i, &p) in watched.iter().enumerate() {
                if ready[i + 1] {
                    self.spawn(p)?;
                }
            }
            self.check_requests();
            if last_maintenance.elapsed() >= MAINTENANCE {
                last_maintenance = Instant::now();
                for p in 0..self.pools.len() {
                    self.maintain(p)?;
                }
            }
        }
    }

    /// Whether an ondemand pool's listener should wake the master: no
    /// worker idle or starting, and room for one more.
    fn ondemand_watch(&self, p: usize) -> bool {
        let pool = &self.pools[p];
        pool.conf.pm == Pm::Ondemand
            && (pool.board.live().count() as u32) < pool.conf.max_children
            && !pool
                .board
                .live()
                .any(|s| matches!(s.state(), State::Idle | State::Starting))
    }

    /// Forks a worker into a free slot of pool `p`.
    fn spawn(&mut self, p: usize) -> anyhow::Result<()> {
        let pool = &self.pools[p];
        let Some(slot) = pool
            .board
            .slots()
            .iter()
            .position(|s| s.pid.load(Relaxed) == 0 && s.state() == State::Free)
        else {
            return Ok(());
        };
        pool.board.slots()[slot].reset(0, State::Starting);
        let master = nix::unistd::getpid();
        // SAFETY: the master is single-threaded, so the child starts with a
        // consistent heap and no lock held by a vanished thread.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => {
                pool.board.slots()[slot]
                    .pid
                    .store(child.as_raw() as u32, Relaxed);
                self.children.insert(
                    child,
                    Child {
                        pool: p,
                        slot,
                        dismissed: false,
                        killed: false,
                    },
                );
                Ok(())
            }
            ForkResult::Child => {
                let code = match signals::reinstall_in_child(master) {
                    Ok(()) => worker(pool, slot),
                    Err(e) => {
                        eprintln!("fpm-server: worker: {e:#}");
                        1
                    }
                };
                // Leave without running the master's destructors (the data dir).
                std::process::exit(code)
            }
        }
    }

    /// Reaps every worker that exited; replaces those that left on their
    /// own (crash, `--max-requests`) unless the pool is ondemand or we stop.
    fn reap(&mut self, stopping: bool) -> anyhow::Result<()> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            let slot = &self.pools[child.pool].board.slots()[child.slot];
            slot.pid.store(0, Relaxed);
            slot.set_state(State::Free);
            if child.dismissed || stopping {
                continue;
            }
            let pool = &self.pools[child.pool];
            match status {
                WaitStatus::Exited(_, 0) => {}
                WaitStatus::Signaled(..) if child.killed => {}
                WaitStatus::Signaled(_, sig, _) => {
                    eprintln!(
                        "fpm-server: [pool {}] worker {pid} was killed by {sig}; starting a new one",
                        pool.conf.name
                    );
                    self.deaths.push_back(Instant::now());
                }
                other => eprintln!(
                    "fpm-server: [pool {}] worker {pid} ended ({other:?}); starting a new one",
                    pool.conf.name
                ),
            }
            if pool.conf.pm != Pm::Ondemand {
                self.spawn(child.pool)?;
            }
        }
    }

    /// Whether enough workers died by a signal recently to reload.
    fn emergency(&mut self) -> bool {
        let threshold = self.args.emergency_restart_threshold;
        let window = self.args.emergency_restart_interval;
        while self.deaths.front().is_some_and(|t| t.elapsed() > window) {
            self.deaths.pop_front();
        }
        if threshold > 0 && self.deaths.len() >= threshold {
            eprintln!(
                "fpm-server: {} workers died by a signal within {window:?}: emergency restart",
                self.deaths.len()
            );
            self.deaths.clear();
            return true;
        }
        false
    }

    /// Logs requests running past the slowlog timeout (once each) and
    /// kills workers whose request runs past the terminate timeout.
    fn check_requests(&mut self) {
        let mut kill_list = Vec::new();
        for pool in &self.pools {
            let c = &pool.conf;
            let (_, active) = pool.board.idle_active();
            pool.board.note_active(active);
            for slot in pool.board.live() {
                let Some(running) = slot.running_us() else {
                    continue;
                };
                let running = Duration::from_micros(running);
                let pid = slot.pid.load(Relaxed);
                if c.slowlog_timeout.is_some_and(|t| running >= t)
                    && slot.slow_logged.swap(1, Relaxed) == 0
                {
                    pool.board.counters().slow_requests.fetch_add(1, Relaxed);
                    eprintln!(
                        "fpm-server: [pool {}] worker {pid}, request '{} {}' executing too slow ({:.3} s)",
                        c.name,
                        slot.method(),
                        slot.uri(),
                        running.as_secs_f64()
                    );
                }
                if c.request_terminate_timeout.is_some_and(|t| running >= t) {
                    eprintln!(
                        "fpm-server: [pool {}] worker {pid}, request '{} {}' execution timed out ({:.3} s), terminating",
                        c.name,
                        slot.method(),
                        slot.uri(),
                        running.as_secs_f64()
                    );
                    kill_list.push(Pid::from_raw(pid as i32));
                }
            }
        }
        for pid in kill_list {
            // Killed by us: replaced when reaped, but not a crash.
            if let Some(child) = self.children.get_mut(&pid) {
                child.killed = true;
                // The slot stops reporting the request, so it is killed once.
                self.pools[child.pool].board.slots()[child.slot].set_state(State::Finishing);
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// The process manager's tick for pool `p` (php-fpm's
    /// fpm_pctl_perform_idle_server_maintenance).
    fn maintain(&mut self, p: usize) -> anyhow::Result<()> {
        let pool = &mut self.pools[p];
        let board = pool.board;
        let c = pool.conf.clone();
        if let Some((queued, _)) = scoreboard::listen_queue(&pool.listener) {
            board.counters().max_listen_queue.fetch_max(queued, Relaxed);
        }
        let total = board.live().count() as u32;
        let (idle, active) = board.idle_active();
        let starting = board
            .live()
            .filter(|s| s.state() == State::Starting)
            .count() as u64;
        board.note_active(active);
        let mut to_spawn = 0;
        let mut to_retire = 0;
        match c.pm {
            Pm::Static => to_spawn = c.max_children.saturating_sub(total) as usize,
            Pm::Dynamic => {
                let ready = idle + starting;
                if ready > c.max_spare as u64 {
                    to_retire = (ready - c.max_spare as u64) as usize;
                    pool.spawn_rate = 1;
                } else if ready < c.min_spare as u64 {
                    if total >= c.max_children {
                        board.counters().max_children_reached.fetch_add(1, Relaxed);
                        eprintln!(
                            "fpm-server: [pool {}] server reached max children ({}), consider raising it",
                            c.name, c.max_children
                        );
                        pool.spawn_rate = 1;
                    } else {
                        to_spawn = pool
                            .spawn_rate
                            .min((c.min_spare as u64 - ready) as usize)
                            .min((c.max_children - total) as usize);
                        if pool.spawn_rate < MAX_SPAWN_RATE {
                            pool.spawn_rate *= 2;
                        }
                    }
                } else {
                    pool.spawn_rate = 1;
                }
            }
            Pm::Ondemand => {
                let queued = scoreboard::listen_queue(&pool.listener).map_or(0, |q| q.0);
                if queued > 0 && idle == 0 && total >= c.max_children {
                    board.counters().max_children_reached.fetch_add(1, Relaxed);
                }
            }
        }
        // Retire: the workers idle the longest (dynamic, above max-spare)
        // or idle longer than the process idle timeout (ondemand).
        let now = scoreboard::now_us();
        let mut idle_slots: Vec<&Slot> =
            board.live().filter(|s| s.state() == State::Idle).collect();
        idle_slots.sort_by_key(|s| s.idle_since_us.load(Relaxed));
        if c.pm == Pm::Ondemand {
            let limit = c.process_idle_timeout.as_micros() as u64;
            to_retire = idle_slots
                .iter()
                .take_while(|s| now.saturating_sub(s.idle_since_us.load(Relaxed)) >= limit)
                .count();
        }
        for slot in idle_slots.into_iter().take(to_retire) {
            let pid = Pid::from_raw(slot.pid.load(Relaxed) as i32);
            if let Some(child) = self.children.get_mut(&pid) {
                if !child.dismissed {
                    // SIGQUIT: leave after the connection in hand, if any.
                    child.dismissed = true;
                    let _ = kill(pid, Signal::SIGQUIT);
                }
            }
        }
        for _ in 0..to_spawn {
            self.spawn(p)?;
        }
        Ok(())
    }
}

/// One worker: prefork's accept → serve loop, writing each stage to its
/// slot; leaves when retired (SIGQUIT) or after `--max-requests`.
fn worker(pool: &Pool, slot_index: usize) -> i32 {
    QUIT.store(false, Relaxed);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: ignoring a signal installs no handler code.
    let _ = unsafe { nsig::sigaction(Signal::SIGUSR2, &ignore) };
    let slot = &pool.board.slots()[slot_index];
    slot.pid.store(std::process::id(), Relaxed);
    let mut host = FpmHost {
        inner: ServerHost::for_process(&pool.shared),
        slot,
        pool,
    };
    let stats = pool.shared.stats;
    let counters = pool.board.counters();
    let max_requests = pool.conf.max_requests;
    let mut buf = vec![0u8; 64 * 1024];
    slot.set_state(State::Idle);
    let served = blocking::accept_until(
        &pool.listener,
        || QUIT.load(Relaxed) || (max_requests > 0 && slot.requests.load(Relaxed) >= max_requests),
        |fd, origin| {
            counters.accepted.fetch_add(1, Relaxed);
            stats.opened();
            net::set_nodelay(&fd);
            blocking::serve(fd, &mut host, &mut buf, origin);
            stats.closed();
            slot.set_state(State::Idle);
        },
    );
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fpm-server: worker {}: {e:#}", std::process::id());
            1
        }
    }
}

/// A worker's host: the usual one, plus its scoreboard slot and the
/// pool-wide status page.
struct FpmHost<'a> {
    inner: ServerHost,
    slot: &'static Slot,
    pool: &'a Pool,
}

impl Host for FpmHost<'_> {
    fn response_headers(&self) -> &[u8] {
        self.inner.response_headers()
    }

    fn max_conns(&self) -> u64 {
        self.inner.max_conns()
    }

    fn status(&mut self) -> Status {
        self.inner.status()
    }

    fn on_dispatch(&mut self, method: &str, target: &str) {
        self.slot.begin_request(method, target);
    }

    fn on_request(&mut self) {
        self.inner.on_request();
        self.slot.end_request();
    }

    fn status_body(&mut self, query: &str) -> Option<(String, Vec<u8>)> {
        let flags: HashSet<&str> = query
            .split('&')
            .map(|kv| kv.split('=').next().unwrap_or(""))
            .collect();
        let page = status_page(self.pool, self.inner.status(), flags.contains("full"));
        Some(if flags.contains("text") {
            ("text/plain".into(), status_text(&page).into_bytes())
        } else {
            (
                "application/json".into(),
                serde_json::to_vec(&page).unwrap_or_default(),
            )
        })
    }
}

impl ServeHost for FpmHost<'_> {
    fn shared(&self) -> &Shared {
        self.inner.shared()
    }

    fn reading(&mut self) {
        self.slot.set_state(State::Reading);
    }
}

/// php-fpm's status page as JSON: its pool fields, the workload's
/// [`Status`] fields (so `/status` verifies like every model's), and with
/// `full` one entry per worker.
fn status_page(pool: &Pool, status: Status, full: bool) -> serde_json::Value {
    use serde_json::json;
    let board = &pool.board;
    let c = board.counters();
    let (queue, queue_len) = scoreboard::listen_queue(&pool.listener).unwrap_or((0, 0));
    c.max_listen_queue.fetch_max(queue, Relaxed);
    let (idle, active) = board.idle_active();
    board.note_active(active);
    let start = c.start_time.load(Relaxed);
    let now = scoreboard::now_us();
    let mut page = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    let fields = json!({
        "pool": pool.conf.name,
        "process manager": pool.conf.pm.name(),
        "start time": start,
        "start since": (now / 1_000_000).saturating_sub(start),
        "accepted conn": c.accepted.load(Relaxed),
        "listen queue": queue,
        "max listen queue": c.max_listen_queue.load(Relaxed),
        "listen queue len": queue_len,
        "idle processes": idle,
        "active processes": active,
        "total processes": board.live().count(),
        "max active processes": c.max_active.load(Relaxed),
        "max children reached": c.max_children_reached.load(Relaxed),
        "slow requests": c.slow_requests.load(Relaxed),
    });
    if let (Some(page), serde_json::Value::Object(fields)) = (page.as_object_mut(), fields) {
        page.extend(fields);
        if full {
            let processes: Vec<serde_json::Value> = board
                .live()
                .map(|s| {
                    let spawned = s.spawned_us.load(Relaxed);
                    json!({
                        "pid": s.pid.load(Relaxed),
                        "state": s.state().name(),
                        "start time": spawned / 1_000_000,
                        "start since": now.saturating_sub(spawned) / 1_000_000,
                        "requests": s.requests.load(Relaxed),
                        "request duration": s.running_us().unwrap_or(s.last_duration_us.load(Relaxed)),
                        "request method": s.method(),
                        "request URI": s.uri(),
                    })
                })
                .collect();
            page.insert("processes".into(), processes.into());
        }
    }
    page
}

/// The page as php-fpm's plain text: `name: value` lines, workers after a
/// line of stars.
fn status_text(page: &serde_json::Value) -> String {
    const POOL: [&str; 14] = [
        "pool",
        "process manager",
        "start time",
        "start since",
        "accepted conn",
        "listen queue",
        "max listen queue",
        "listen queue len",
        "idle processes",
        "active processes",
        "total processes",
        "max active processes",
        "max children reached",
        "slow requests",
    ];
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    for key in POOL {
        let _ = writeln!(out, "{:<21} {}", format!("{key}:"), show(&page[key]));
    }
    if let Some(procs) = page["processes"].as_array() {
        for p in procs {
            out.push_str("\n************************\n");
            if let Some(obj) = p.as_object() {
                for (k, v) in obj {
                    let _ = writeln!(out, "{:<21} {}", format!("{k}:"), show(v));
                }
            }
        }
    }
    out
}
