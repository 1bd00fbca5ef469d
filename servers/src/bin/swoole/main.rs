//! # swoole-server — reactor threads in front of worker processes (Swoole)
//!
//! Run it: `swoole-server --listen 127.0.0.1:8080 --reactors 2 --workers 4`.
//!
//! Swoole's process mode (SWOOLE_PROCESS). The **master** process runs an
//! acceptor (its main thread) and `--reactors` **reactor threads**; each
//! reactor owns the connections handed to it and drives them with epoll: it
//! reads, finds where whole requests end, and writes responses — it never
//! runs a request. A **manager** process forks `--workers` **worker
//! processes** (and `--task-workers` **task workers**) and replaces any that
//! die. A reactor passes each whole request to a worker over a unix socket
//! pair and writes the worker's answer back to the connection.
//!
//! ```text
//!  master:  acceptor ──fd──▶ reactor 0 ─┐   ┌─ reactor 1 ◀──fd── acceptor
//!           (epoll: client sockets + one socket pair per worker)
//!                     request frames │  ▲ response frames
//!  manager: fork / waitpid / respawn ▼  │
//!           worker 0   worker 1   …   (blocking: poll its pairs, run one
//!              │ /cpu?…&task=1          request, answer, next)
//!              ▼
//!           task worker 0 …            (blocking pool for offloaded work)
//! ```
//!
//! **How a request crosses.** Every protocol byte is handled by the
//! workload crate. A reactor's connections run the workload's `Conn` in
//! *relay mode*: it frames requests, keeps the connection-level rules (the
//! header and idle timeouts, the PARAMS and body caps, `100 Continue`,
//! FastCGI management records, keep-alive, graceful stop) and hands each
//! whole request's bytes over (`take_relay`). The reactor sends them in a
//! frame ([`ipc`]) to the worker `--dispatch` picks; the worker feeds them
//! to an ordinary `Conn` of its own (routing and response formatting stay
//! in the workload), sleeps through a `/wait` there, and sends the response
//! back, which the reactor gives to the connection (`relay_done`). A
//! connection has at most one request at a worker, so pipelined requests
//! are answered in order. The reactor's own I/O is the runtime's
//! (`event::Reactor`, edge-triggered as in `mio-server`).
//!
//! **One request costs**, counted from the code: in the reactor a `read` of
//! the client socket, a `write` to the worker's socket, an `epoll_wait`
//! wake-up and a `read` of the answer, a `write` to the client; in the
//! worker a `poll`, two `read`s (one on a datagram pair) and a `write` —
//! about nine system calls where prefork-server makes two, and at least two
//! context switches (the orchestrator's syscall and context-switch columns
//! measure them; docs/models/swoole.md counts them under strace).
//!
//! **`--dispatch`** (Swoole's `dispatch_mode`): `round-robin` (1) — each
//! reactor cycles through the workers; `fd-mod` (2, Swoole's own default) —
//! worker = client fd mod workers, so a connection always lands on the same
//! worker; `idle` (3) — the first worker the shared scoreboard shows idle
//! and this reactor has nothing queued at, else the shortest queue. Here
//! the default is round-robin, so that one slow connection cannot hold up a
//! worker's other connections in the tests and labs. Swoole's reactor ↔
//! worker channels are `SOCK_DGRAM` pairs; these are `SOCK_STREAM` pairs
//! with a frame header, which one `read` per frame cannot tell apart on a
//! machine this size; `--ipc dgram` (or `seqpacket`) uses message pairs
//! instead: one `send` and one `recv` per frame, a frame longer than a
//! datagram split into chunks ([`ipc`] explains; the page measures it).
//!
//! **`--mode base`** (SWOOLE_BASE) is the other half of Swoole: no reactor
//! threads, no manager, no hop. `--workers` processes each accept from the
//! shared listener and run their own reactor *and* the requests in it,
//! like nginx workers ([`base`] explains the listener and what a blocking
//! handler does there). `--reactors`, `--dispatch`, `--ipc`,
//! `--task-workers` and `--max-request` are process-mode flags.
//!
//! **Task workers**: a `/cpu` request whose query has `task=1` is offloaded:
//! the worker forwards it to a task worker and waits for the answer
//! (Swoole's `taskwait`), so CPU-heavy work has its own pool.
//! `--max-request N` recycles a worker after N requests (the manager forks
//! its replacement, which reads the same socket pairs, so nothing queued is
//! lost). A request held by a worker that *crashes* is lost: its connection
//! waits eight idle timeouts (a request may queue long behind slow
//! clients), then closes.
//!
//! **Trade-off.** Idle and slow connections cost the reactors a slab entry,
//! not a process: thousands of keep-alive clients no longer pin workers,
//! and workers may still block (`/wait`, disk, CPU) without stalling the
//! reactors. The price is a hop per request (copies and context switches),
//! and that concurrency of *running* requests is still `--workers`.
//! **When it wins**: many connections, blocking handlers — PHP's case
//! without php-fpm's pinned worker per connection. **Where it breaks**:
//! tiny requests, where the hop costs more than the work (compare
//! `epoll-server`), and a slow worker with `fd-mod` (its connections wait
//! while others idle). Compare with `fpm-server` and `mio-server`.
//!
//! SIGTERM/SIGINT: the acceptor takes what is left in the backlog, reactors
//! finish requests in flight (answers say `Connection: close`), then the
//! manager stops the workers and everything exits 0.

mod base;
mod reactor;
mod worker;

use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::net::{self, Accepted, ListenOptions};
use iomodels_servers::scoreboard::Scoreboard;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::{ipc, signals};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::SockFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// How a reactor picks the worker for a request (Swoole's dispatch_mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dispatch {
    /// 1: each reactor cycles through the workers.
    RoundRobin,
    /// 2 (Swoole's default): client fd modulo workers: a connection sticks to one worker.
    FdMod,
    /// 3: an idle worker (shared scoreboard), else the shortest queue.
    Idle,
}

/// Swoole's server modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// SWOOLE_PROCESS: reactor threads hand whole requests to worker processes.
    Process,
    /// SWOOLE_BASE: each worker process accepts and runs its own reactor; no hop.
    Base,
}

/// The socket pairs between reactors and workers (process mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Ipc {
    /// SOCK_STREAM: frames back to back, found by their lengths.
    Stream,
    /// SOCK_DGRAM, as Swoole's own: one datagram per frame (chunks beyond 64 KiB).
    Dgram,
    /// SOCK_SEQPACKET: datagrams in a connection (end of file when a peer closes).
    Seqpacket,
}

impl Ipc {
    fn kind(self) -> ipc::Kind {
        match self {
            Ipc::Stream => ipc::Kind::Stream,
            Ipc::Dgram => ipc::Kind::Dgram,
            Ipc::Seqpacket => ipc::Kind::SeqPacket,
        }
    }
}

/// Swoole's design: reactor threads own the connections, worker processes run the requests.
#[derive(Debug, Parser)]
#[command(name = "swoole-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// process: reactor threads + worker processes; base: each worker accepts and runs its own reactor (no hop)
    #[arg(long, value_enum, default_value_t = Mode::Process)]
    mode: Mode,

    /// Socket pairs between reactors and workers (process mode)
    #[arg(long, value_enum, default_value_t = Ipc::Stream)]
    ipc: Ipc,

    /// Reactor threads in the master process (process mode)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    reactors: u32,

    /// How a reactor picks a worker for each request (Swoole dispatch_mode 1, 2, 3; process mode)
    #[arg(long, value_enum, default_value_t = Dispatch::RoundRobin)]
    dispatch: Dispatch,

    /// Task worker processes for offloaded requests (/cpu?…&task=1); 0: run them in the worker (process mode)
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    task_workers: u32,

    /// Requests a worker serves before the manager replaces it (0: never; process mode)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_request: u64,
}

/// Frame flag, reactor to worker: run it in a task worker.
const OFFLOAD: u8 = 1;
/// Frame flag, reactor to worker: the connection closes after this answer
/// (the worker's `Conn` says so in it).
const LAST: u8 = 2;
/// Frame flag, worker to reactor: more pieces of this response follow.
const MORE: u8 = 4;

fn main() -> ExitCode {
    cli::main(run)
}

/// The sockets between the processes, made before any fork.
struct Wiring {
    /// `reactor[r][w]`: reactor r's end of its pair with worker w.
    reactor: Vec<Vec<OwnedFd>>,
    /// `worker[w][r]`: worker w's end of its pair with reactor r.
    worker: Vec<Vec<OwnedFd>>,
    /// `task_client[w][t]`: worker w's end of its pair with task worker t.
    task_client: Vec<Vec<OwnedFd>>,
    /// `task_server[t][w]`: task worker t's end of its pair with worker w.
    task_server: Vec<Vec<OwnedFd>>,
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.mode == Mode::Base {
        anyhow::ensure!(
            args.task_workers == 0 && args.max_request == 0,
            "--task-workers and --max-request need --mode process"
        );
    }
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        workers,
        ..
    } = Startup::begin(
        "swoole",
        &args.common,
        Workers::FromFlag,
        ListenOptions::NONBLOCKING,
    )?;
    let (workers, reactors, tasks) = (
        workers as usize,
        args.reactors as usize,
        args.task_workers as usize,
    );
    if args.mode == Mode::Base {
        return base::run(&shared, listener, workers, &shown);
    }
    let kind = args.ipc.kind();
    let board = Scoreboard::shared(workers)?;

    // 1. The socket pairs: reactor × worker, worker × task worker.
    let mut wiring = Wiring {
        reactor: (0..reactors).map(|_| Vec::new()).collect(),
        worker: (0..workers).map(|_| Vec::new()).collect(),
        task_client: (0..workers).map(|_| Vec::new()).collect(),
        task_server: (0..tasks).map(|_| Vec::new()).collect(),
    };
    for r in 0..reactors {
        for w in 0..workers {
            let (a, b) = ipc::socket_pair(kind)?;
            wiring.reactor[r].push(a);
            wiring.worker[w].push(b);
        }
    }
    for w in 0..workers {
        for t in 0..tasks {
            let (a, b) = ipc::socket_pair(kind)?;
            wiring.task_client[w].push(a);
            wiring.task_server[t].push(b);
        }
    }

    // 2. The manager, forked while the master is still single-threaded.
    let master = nix::unistd::getpid();
    // SAFETY: no thread has been started yet, so the child starts with a
    // consistent heap and no lock held by a vanished thread.
    let manager = match unsafe { fork() }.map_err(|e| anyhow::anyhow!("fork: {e}"))? {
        ForkResult::Child => {
            drop(std::mem::take(&mut wiring.reactor));
            drop(listener);
            let code = match signals::reinstall_in_child(master) {
                Ok(()) => worker::manage(&args, &shared, board, &wiring),
                Err(e) => {
                    eprintln!("swoole-server: manager: {e:#}");
                    1
                }
            };
            // Leave without running the master's destructors (the data dir).
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    let Wiring { reactor: pairs, .. } = wiring;

    // 3. Reactor threads, each fed accepted descriptors through a pipe.
    let mut feeds = Vec::new();
    let mut threads = Vec::new();
    for (index, pairs) in pairs.into_iter().enumerate() {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        feeds.push(tx);
        let cfg = reactor::Cfg {
            shared: shared.clone(),
            index: index + 1,
            board,
            dispatch: args.dispatch,
            offload: tasks > 0,
            kind,
        };
        let front = reactor::new(cfg, pairs, rx)?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || {
                    // Said at once: the acceptor only sees the feed break.
                    reactor::run(front)
                        .inspect_err(|e| eprintln!("swoole-server: reactor {index}: {e:#}"))
                })?,
        );
    }
    cli::ready(&shown);

    // 4. The acceptor, until a stop (then the backlog too).
    let accepted = accept_loop(&listener, &feeds);
    // Closing the feeds tells the reactors that no connection will come.
    drop(feeds);
    let mut failed = accepted.err();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(_) => failed = failed.or(Some(anyhow::anyhow!("a reactor thread panicked"))),
        }
    }
    // 5. Workers have nothing left to answer: stop the manager and them.
    let _ = kill(manager, Signal::SIGTERM);
    let _ = waitpid(manager, None);
    failed.map_or(Ok(()), Err)
}

/// The acceptor (the master's main thread): accept, hand each connection
/// to the next reactor (which admits it under `--max-conns` or refuses it).
/// After a stop it takes the backlog too.
fn accept_loop(listener: &OwnedFd, feeds: &[OwnedFd]) -> anyhow::Result<()> {
    let mut next = 0;
    loop {
        let stopping = signals::stop_requested();
        loop {
            match net::accept_next(listener, SockFlag::SOCK_NONBLOCK)? {
                Accepted::Conn(fd) => {
                    // Four bytes are written atomically to a pipe (at most
                    // PIPE_BUF bytes always are); the reactor owns the
                    // descriptor once it reads them.
                    let raw = fd.into_raw_fd();
                    ipc::write_all(&feeds[next % feeds.len()], &raw.to_le_bytes())?;
                    next += 1;
                }
                Accepted::Nothing => break,
                Accepted::Exhausted => {
                    std::thread::sleep(net::ACCEPT_PAUSE);
                    break;
                }
            }
        }
        if stopping {
            return Ok(());
        }
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals::stop_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => anyhow::bail!("poll: {e}"),
        }
    }
}
