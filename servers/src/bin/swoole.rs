//! # swoole-server — reactor threads in front of worker processes (Swoole)
//!
//! Swoole's server design. The **master** process runs an acceptor (the
//! main thread) and `--reactors` **reactor threads**; each reactor owns the
//! connections handed to it and drives them with epoll: it reads, finds the
//! boundaries of whole requests, and writes responses — it never runs a
//! request. A **manager** process forks `--workers` **worker processes**
//! (and `--task-workers` **task workers**) and replaces any that die. A
//! reactor passes each whole request to a worker over a unix socket pair
//! and writes the worker's answer back to the connection.
//!
//! ```text
//!  master:  acceptor ──fd──▶ reactor 0 ─┐   ┌─ reactor 1 ◀──fd── acceptor
//!           (epoll: client sockets + one socketpair per worker)
//!                     request frames │  ▲ response frames
//!  manager: fork / waitpid / respawn ▼  │
//!           worker 0   worker 1   …   (blocking: poll its pairs, run one
//!              │ /cpu?…&task=1          request, answer, next)
//!              ▼
//!           task worker 0 …            (blocking pool for offloaded work)
//! ```
//!
//! **How a request crosses** (an honest account of what this model does,
//! since the workload's state machine makes response bytes itself): the
//! reactor frames requests with the workload's parsers (`http::parse_head`:
//! head + Content-Length; `fcgi::parse_record`: BEGIN_REQUEST … the empty
//! STDIN record) and sends each whole request's raw bytes, in a frame
//! `[len u32][conn u32][flags u8]`, to a worker chosen by `--dispatch`. The
//! worker feeds them to a fresh `Conn` (so parsing, routing and response
//! formatting stay in the workload), sleeps through a `/wait` if there is
//! one, and sends back `[len][conn][close]` + the response bytes. A
//! connection has at most one request at a worker, so pipelined requests
//! are answered in order. The reactor keeps the connection-level rules: the
//! header and idle timeouts (an expired head goes to a worker flagged
//! "timed out", whose `Conn` answers 408), `100 Continue`, `Connection:
//! close`, graceful stop (requests sent flagged "drain").
//!
//! **One request costs**: in the reactor a `read` of the client socket, a
//! `write` to the worker's socket, an `epoll_wait` wake-up and a `read` of
//! the answer, a `write` to the client; in the worker a `poll`, two `read`s
//! and a `write`. Twice prefork's system calls, and two context switches.
//!
//! **`--dispatch`** (Swoole's `dispatch_mode`): `round-robin` (1) — each
//! reactor cycles through the workers; `fd-mod` (2) — worker = client fd mod
//! workers, so a connection always lands on the same worker (state kept in
//! a worker stays valid); `idle` (3) — the first worker the shared
//! scoreboard shows idle and this reactor has nothing queued at, else the
//! one with the shortest queue from this reactor.
//!
//! **Task workers**: a request whose query has `task=1` on `/cpu` is
//! offloaded: the worker forwards it to a task worker and waits for the
//! answer (Swoole's `taskwait`), so CPU-heavy work has its own pool.
//! `--max-request N` recycles a worker after N requests (the manager forks
//! its replacement, which reads the same socket pairs, so nothing queued is
//! lost). A request held by a worker that *crashes* is lost: its connection
//! waits for the idle timeout, then closes.
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

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{DataDir, ServerHost, Shared};
use iomodels_servers::scoreboard::{Scoreboard, State};
use iomodels_servers::{net, signals};
use iomodels_workload::fcgi::{self, CgiRequest};
use iomodels_workload::routes::{self, Route};
use iomodels_workload::{http, Protocol};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use slab::Slab;

/// How a reactor picks the worker for a request (Swoole's dispatch_mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dispatch {
    /// 1: each reactor cycles through the workers.
    RoundRobin,
    /// 2: client fd modulo workers: a connection sticks to one worker.
    FdMod,
    /// 3: an idle worker (shared scoreboard), else the shortest queue.
    Idle,
}

/// Swoole's design: reactor threads own the connections, worker processes run the requests.
#[derive(Debug, Parser)]
#[command(name = "swoole-server", version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Reactor threads in the master process
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    reactors: u32,

    /// How a reactor picks a worker for each request (Swoole dispatch_mode 1, 2, 3)
    #[arg(long, value_enum, default_value_t = Dispatch::RoundRobin)]
    dispatch: Dispatch,

    /// Task worker processes for offloaded requests (/cpu?…&task=1); 0: run them in the worker
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    task_workers: u32,

    /// Requests a worker serves before the manager replaces it (0: never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_request: u64,
}

fn main() -> ExitCode {
    cli::main(run)
}

/// Frame flags, reactor to worker.
const DRAIN: u8 = 1;
/// The head did not arrive in time: answer as a header timeout.
const TIMED_OUT: u8 = 2;
/// Run it in a task worker.
const OFFLOAD: u8 = 4;
/// Frame header: payload length, connection token, flags.
const FRAME_HEAD: usize = 9;
/// How often reactors look at deadlines and the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Input a connection may buffer beyond one whole request.
const MAX_INPUT: usize = http::MAX_HEAD + http::MAX_BODY + fcgi::MAX_PARAMS + 4 * fcgi::MAX_RECORD;

fn push_frame(out: &mut Vec<u8>, token: u32, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&token.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(payload);
}

/// A whole frame at the start of `buf`: (token, flags, payload range end).
fn parse_frame(buf: &[u8]) -> Option<(u32, u8, usize)> {
    let head = buf.first_chunk::<FRAME_HEAD>()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let token = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    (buf.len() >= FRAME_HEAD + len).then_some((token, head[8], FRAME_HEAD + len))
}

/// A unix stream socket pair, both ends close-on-exec.
fn socket_pair() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
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
    signals::install()?;
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let workers = args.common.workers() as usize;
    let reactors = args.reactors as usize;
    let tasks = args.task_workers as usize;
    let shared = Shared::new("swoole", &args.common, &data, workers as u32)?;
    let board = Scoreboard::shared(workers)?;
    let opts = net::ListenOptions {
        nonblocking: true,
        ..Default::default()
    };
    let (listener, shown) = net::listen(&args.common.listen, args.common.backlog, opts)?;

    let mut wiring = Wiring {
        reactor: (0..reactors).map(|_| Vec::new()).collect(),
        worker: (0..workers).map(|_| Vec::new()).collect(),
        task_client: (0..workers).map(|_| Vec::new()).collect(),
        task_server: (0..tasks).map(|_| Vec::new()).collect(),
    };
    for r in 0..reactors {
        for w in 0..workers {
            let (a, b) = socket_pair()?;
            nix::fcntl::fcntl(
                a.as_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )?;
            wiring.reactor[r].push(a);
            wiring.worker[w].push(b);
        }
    }
    for w in 0..workers {
        for t in 0..tasks {
            let (a, b) = socket_pair()?;
            wiring.task_client[w].push(a);
            wiring.task_server[t].push(b);
        }
    }

    // The manager, forked while the master is still single-threaded.
    let master = nix::unistd::getpid();
    // SAFETY: no thread has been started yet, so the child starts with a
    // consistent heap and no lock held by a vanished thread.
    let manager = match unsafe { fork() }? {
        ForkResult::Child => {
            drop(std::mem::take(&mut wiring.reactor));
            drop(listener);
            let code = match signals::reinstall_in_child(master)
                .and_then(|()| signals::wake_on_child_exit())
            {
                Ok(()) => manage(&args, &shared, board, &wiring),
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
    let Wiring { reactor, .. } = wiring;

    // Reactor threads, each fed accepted descriptors through a pipe.
    let cfg = ReactorCfg {
        protocol: shared.protocol,
        timeouts: shared.timeouts,
        stats: shared.stats,
        board,
        dispatch: args.dispatch,
        offload: tasks > 0,
    };
    let mut feeds = Vec::new();
    let mut threads = Vec::new();
    for (index, pipes) in reactor.into_iter().enumerate() {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        feeds.push(tx);
        let cfg = cfg.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || Reactor::new(cfg, pipes, rx).and_then(|mut r| r.run()))?,
        );
    }
    cli::ready(&shown);
    let accepted = accept_loop(&listener, &feeds, &shared);
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
    // Workers have nothing left to answer: stop the manager and them.
    let _ = kill(manager, Signal::SIGTERM);
    let _ = waitpid(manager, None);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The acceptor (the master's main thread): accept, hand each connection
/// to the next reactor. After a stop it takes the backlog too.
fn accept_loop(listener: &OwnedFd, feeds: &[OwnedFd], shared: &Shared) -> anyhow::Result<()> {
    let max_conns = shared.max_conns;
    let counters = shared.stats.counters();
    let mut next = 0;
    let mut hand = |fd: OwnedFd| -> anyhow::Result<()> {
        if counters.open.load(Relaxed) >= max_conns {
            shared.refuse(fd);
            return Ok(());
        }
        shared.stats.opened();
        net::set_nodelay(&fd);
        let raw = fd.into_raw_fd();
        // Four bytes are written atomically to a pipe (at most PIPE_BUF
        // bytes always are); the reactor owns the descriptor once it reads
        // them.
        let feed = &feeds[next % feeds.len()];
        next += 1;
        write_all(feed, &raw.to_le_bytes())?;
        Ok(())
    };
    loop {
        let stopping = signals::stop_requested();
        loop {
            match net::accept(listener, SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => hand(fd)?,
                Err(Errno::EINTR) => {}
                Err(e) if net::would_block(e) => break,
                Err(e) if net::accept_error_is_transient(e) => {}
                Err(e) if net::accept_error_is_exhaustion(e) => {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                Err(e) => anyhow::bail!("accept: {e}"),
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
            Err(e) => return Err(e.into()),
        }
    }
}

/// What every reactor thread shares.
#[derive(Clone)]
struct ReactorCfg {
    protocol: Protocol,
    timeouts: iomodels_workload::Timeouts,
    stats: iomodels_servers::stats::Stats,
    board: Scoreboard,
    dispatch: Dispatch,
    offload: bool,
}

/// A client connection as a reactor holds it.
struct Client {
    fd: OwnedFd,
    input: Vec<u8>,
    output: Vec<u8>,
    out_pos: usize,
    /// A request of this connection is at a worker.
    in_flight: bool,
    /// The client is gone; the entry waits for the in-flight answer.
    dead: bool,
    /// Close once the output is written.
    close_after_output: bool,
    /// No more requests are taken (one asked to close, or a framing error).
    no_more: bool,
    peer_closed: bool,
    continue_sent: bool,
    partial_since: Option<Instant>,
    last_activity: Instant,
    /// Taken from the backlog after a stop: one request, until this instant.
    backlog_until: Option<Instant>,
    interest: EpollFlags,
}

/// A reactor's socket pair with one worker.
struct Pipe {
    fd: OwnedFd,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    /// Requests this reactor has at this worker.
    queued: usize,
}

/// What framing found at the start of a connection's input.
enum Framing {
    /// A whole request of `len` bytes; `last`: the connection ends after it.
    Whole {
        len: usize,
        last: bool,
        offload: bool,
    },
    /// Bytes that cannot be framed: a worker answers the error, then close.
    Broken,
    /// Not a whole request yet; `expect_continue`: its head asks for 100.
    Partial { expect_continue: bool },
}

const FEED: u64 = u64::MAX;
const PIPE_BASE: u64 = 1 << 40;

struct Reactor {
    cfg: ReactorCfg,
    epoll: Epoll,
    conns: Slab<Client>,
    pipes: Vec<Pipe>,
    feed: Option<OwnedFd>,
    feed_buf: Vec<u8>,
    next_worker: usize,
    stopping: bool,
}

impl Reactor {
    fn new(cfg: ReactorCfg, pipes: Vec<OwnedFd>, feed: OwnedFd) -> anyhow::Result<Reactor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&feed, EpollEvent::new(EpollFlags::EPOLLIN, FEED))?;
        let mut ps = Vec::new();
        for (w, fd) in pipes.into_iter().enumerate() {
            epoll.add(
                &fd,
                EpollEvent::new(EpollFlags::EPOLLIN, PIPE_BASE + w as u64),
            )?;
            ps.push(Pipe {
                fd,
                out: Vec::new(),
                out_pos: 0,
                input: Vec::new(),
                queued: 0,
            });
        }
        Ok(Reactor {
            cfg,
            epoll,
            conns: Slab::new(),
            pipes: ps,
            feed: Some(feed),
            feed_buf: Vec::new(),
            next_worker: 0,
            stopping: false,
        })
    }

    /// The loop: epoll_wait (at most a tick), handle each event, then look
    /// at deadlines and the stop flag. Ends after a stop once the acceptor
    /// is done and every connection is closed.
    fn run(&mut self) -> anyhow::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut last_sweep = Instant::now();
        loop {
            let n = match self
                .epoll
                .wait(&mut events, EpollTimeout::from(TICK.as_millis() as u16))
            {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            for ev in &events[..n] {
                let token = ev.data();
                let flags = ev.events();
                if token == FEED {
                    self.take_connections()?;
                } else if token >= PIPE_BASE {
                    self.pipe_ready((token - PIPE_BASE) as usize, flags)?;
                } else if self.conns.contains(token as usize) {
                    self.client_ready(token as usize, flags);
                }
                // Events for connections closed earlier in this batch: ignored.
            }
            if signals::stop_requested() && !self.stopping {
                self.stopping = true;
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.progress(key);
                }
            }
            if last_sweep.elapsed() >= TICK {
                last_sweep = Instant::now();
                self.sweep();
            }
            if self.stopping && self.feed.is_none() && self.conns.is_empty() {
                return Ok(());
            }
        }
    }

    /// Adopts descriptors the acceptor sent; EOF: the acceptor is done.
    fn take_connections(&mut self) -> anyhow::Result<()> {
        let Some(feed) = &self.feed else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        let n = match nix::unistd::read(feed, &mut buf) {
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            let feed = self.feed.take().expect("feed");
            let _ = self.epoll.delete(&feed);
            return Ok(());
        }
        self.feed_buf.extend_from_slice(&buf[..n]);
        let whole = self.feed_buf.len() / 4 * 4;
        let raws: Vec<RawFd> = self.feed_buf[..whole]
            .chunks_exact(4)
            .map(|c| RawFd::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.feed_buf.drain(..whole);
        let now = Instant::now();
        for raw in raws {
            // SAFETY: the acceptor gave up this descriptor (into_raw_fd) and
            // sent its number to this reactor only; we own it from here.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if self
                .epoll
                .add(&fd, EpollEvent::new(interest, key as u64))
                .is_err()
            {
                self.cfg.stats.closed();
                continue;
            }
            entry.insert(Client {
                fd,
                input: Vec::new(),
                output: Vec::new(),
                out_pos: 0,
                in_flight: false,
                dead: false,
                close_after_output: false,
                no_more: false,
                peer_closed: false,
                continue_sent: false,
                partial_since: None,
                last_activity: now,
                backlog_until: self.stopping.then(|| now + Duration::from_secs(1)),
                interest,
            });
        }
        Ok(())
    }

    /// Reads what a client sent (or its EOF) and moves the connection on.
    fn client_ready(&mut self, key: usize, flags: EpollFlags) {
        let c = &mut self.conns[key];
        if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            // Gone both ways: nothing can be written any more. Out of epoll
            // now (HUP is reported whatever the interest), closed once no
            // request of it is at a worker.
            c.dead = true;
            c.peer_closed = true;
            let _ = self.epoll.delete(&c.fd);
            return self.progress(key);
        }
        if flags.intersects(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLHUP
                | EpollFlags::EPOLLERR,
        ) && !c.peer_closed
            && c.input.len() < MAX_INPUT
        {
            let mut buf = [0u8; 65536];
            loop {
                match nix::unistd::read(&c.fd, &mut buf) {
                    Ok(0) => {
                        c.peer_closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        c.last_activity = Instant::now();
                        if c.input.len() >= MAX_INPUT {
                            break;
                        }
                    }
                    Err(Errno::EINTR) => {}
                    Err(e) if net::would_block(e) => break,
                    Err(_) => {
                        c.peer_closed = true;
                        c.dead = true;
                        break;
                    }
                }
            }
        }
        self.progress(key);
    }

    /// Moves a connection on: write its output, close it when due, frame
    /// and dispatch its next request, keep its epoll interest right.
    fn progress(&mut self, key: usize) {
        let now = Instant::now();
        let stopping = self.stopping;
        let protocol = self.cfg.protocol;
        let c = &mut self.conns[key];
        // 1. Write.
        while c.out_pos < c.output.len() && !c.dead {
            match nix::unistd::write(&c.fd, &c.output[c.out_pos..]) {
                Ok(n) => {
                    c.out_pos += n;
                    c.last_activity = now;
                }
                Err(Errno::EINTR) => {}
                Err(e) if net::would_block(e) => break,
                Err(_) => c.dead = true,
            }
        }
        if c.out_pos == c.output.len() {
            c.output = Vec::new();
            c.out_pos = 0;
        }
        let flushed = c.output.is_empty();
        // 2. Close: a dead client (once its request is back), an answer
        // that ends the connection, nothing more to do after EOF or a stop.
        if c.in_flight {
            if !c.dead {
                self.set_interest(key);
            }
            return;
        }
        if c.dead || (flushed && c.close_after_output) {
            return self.close(key);
        }
        // 3. The next request, one at a time per connection.
        let mut offload_ok = self.cfg.offload;
        let c = &mut self.conns[key];
        if !c.no_more && flushed {
            let framing = frame(protocol, &c.input);
            match framing {
                Framing::Whole { len, last, offload } => {
                    let bytes: Vec<u8> = c.input.drain(..len).collect();
                    c.partial_since = None;
                    c.continue_sent = false;
                    c.no_more = last || c.backlog_until.is_some();
                    let mut flags = if stopping { DRAIN } else { 0 };
                    offload_ok &= offload;
                    if offload_ok {
                        flags |= OFFLOAD;
                    }
                    if c.backlog_until.is_some() {
                        flags |= DRAIN;
                    }
                    return self.dispatch(key, flags, &bytes);
                }
                Framing::Broken => {
                    let bytes = std::mem::take(&mut c.input);
                    c.no_more = true;
                    return self.dispatch(key, 0, &bytes);
                }
                Framing::Partial { expect_continue } => {
                    if c.input.is_empty() {
                        c.partial_since = None;
                    } else {
                        c.partial_since.get_or_insert(now);
                    }
                    if expect_continue && !c.continue_sent {
                        c.continue_sent = true;
                        c.output.extend_from_slice(http::CONTINUE);
                        return self.progress(key);
                    }
                    let waiting_backlog = c.backlog_until.is_some_and(|t| now < t);
                    if flushed && (c.peer_closed || (stopping && !waiting_backlog)) {
                        return self.close(key);
                    }
                }
            }
        } else if flushed && (c.no_more || c.peer_closed) {
            return self.close(key);
        }
        self.set_interest(key);
    }

    /// Read while there is room and no request is at a worker; write while
    /// there is output.
    fn set_interest(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let mut want = EpollFlags::empty();
        if !c.peer_closed && c.input.len() < MAX_INPUT {
            want |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        }
        if !c.output.is_empty() {
            want |= EpollFlags::EPOLLOUT;
        }
        if want != c.interest {
            c.interest = want;
            let _ = self
                .epoll
                .modify(&c.fd, &mut EpollEvent::new(want, key as u64));
        }
    }

    fn close(&mut self, key: usize) {
        let c = self.conns.remove(key);
        let _ = self.epoll.delete(&c.fd);
        self.cfg.stats.closed();
    }

    /// Sends one request to the worker `--dispatch` picks.
    fn dispatch(&mut self, key: usize, flags: u8, bytes: &[u8]) {
        let workers = self.pipes.len();
        let w = match self.cfg.dispatch {
            Dispatch::RoundRobin => {
                self.next_worker = (self.next_worker + 1) % workers;
                self.next_worker
            }
            Dispatch::FdMod => self.conns[key].fd.as_raw_fd() as usize % workers,
            Dispatch::Idle => {
                let slots = self.cfg.board.slots();
                self.next_worker = (self.next_worker + 1) % workers;
                (0..workers)
                    .map(|i| (self.next_worker + i) % workers)
                    .find(|&w| self.pipes[w].queued == 0 && slots[w].state() == State::Idle)
                    .unwrap_or_else(|| {
                        (0..workers)
                            .min_by_key(|&w| self.pipes[w].queued)
                            .unwrap_or(0)
                    })
            }
        };
        let c = &mut self.conns[key];
        c.in_flight = true;
        let p = &mut self.pipes[w];
        p.queued += 1;
        push_frame(&mut p.out, key as u32, flags, bytes);
        self.flush_pipe(w);
        self.set_interest(key);
    }

    fn flush_pipe(&mut self, w: usize) {
        let p = &mut self.pipes[w];
        while p.out_pos < p.out.len() {
            match nix::unistd::write(&p.fd, &p.out[p.out_pos..]) {
                Ok(n) => p.out_pos += n,
                Err(Errno::EINTR) => {}
                // Full: the worker reads it; EPOLLOUT says when.
                Err(_) => break,
            }
        }
        let mut want = EpollFlags::EPOLLIN;
        if p.out_pos == p.out.len() {
            p.out.clear();
            p.out_pos = 0;
        } else {
            want |= EpollFlags::EPOLLOUT;
        }
        let _ = self
            .epoll
            .modify(&p.fd, &mut EpollEvent::new(want, PIPE_BASE + w as u64));
    }

    /// A worker's socket: more of our requests can go, answers came back.
    fn pipe_ready(&mut self, w: usize, flags: EpollFlags) -> anyhow::Result<()> {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush_pipe(w);
        }
        if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP) {
            return Ok(());
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let p = &mut self.pipes[w];
            match nix::unistd::read(&p.fd, &mut buf) {
                Ok(0) => anyhow::bail!("worker {w}'s socket closed: the manager is gone"),
                Ok(n) => p.input.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(e) if net::would_block(e) => break,
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            let p = &mut self.pipes[w];
            let Some((token, close, end)) = parse_frame(&p.input) else {
                break;
            };
            let answer: Vec<u8> = p.input.drain(..end).skip(FRAME_HEAD).collect();
            p.queued = p.queued.saturating_sub(1);
            let key = token as usize;
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            c.in_flight = false;
            if c.output.is_empty() {
                c.output = answer;
            } else {
                c.output.extend_from_slice(&answer);
            }
            if close != 0 || c.no_more {
                c.close_after_output = true;
            }
            self.progress(key);
        }
        Ok(())
    }

    /// Once a tick: header timeouts (a worker answers them), idle
    /// keep-alive connections, stuck writers, backlog connections after a
    /// stop that sent nothing.
    fn sweep(&mut self) {
        let now = Instant::now();
        let t = self.cfg.timeouts;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.conns[key];
            if c.in_flight {
                continue;
            }
            if c.partial_since.is_some_and(|s| now >= s + t.header) && !c.no_more {
                let bytes = std::mem::take(&mut c.input);
                c.no_more = true;
                c.partial_since = None;
                self.dispatch(key, TIMED_OUT, &bytes);
                continue;
            }
            let idle_for = now.saturating_duration_since(c.last_activity);
            let backlog_over = c.backlog_until.is_some_and(|u| now >= u);
            let waiting_first = c.backlog_until.is_some_and(|u| now < u);
            let idle_at_stop =
                self.stopping && !waiting_first && c.input.is_empty() && c.output.is_empty();
            if idle_for >= t.idle || backlog_over || idle_at_stop {
                self.close(key);
            }
        }
    }
}

/// Finds the first whole request in `input`.
fn frame(protocol: Protocol, input: &[u8]) -> Framing {
    match protocol {
        Protocol::Http => match http::parse_head(input) {
            Ok(http::Parse::Complete(head)) => {
                let len = head.head_len + head.body_len;
                if input.len() < len {
                    return Framing::Partial {
                        expect_continue: head.expect_continue,
                    };
                }
                Framing::Whole {
                    len,
                    last: !head.keep_alive,
                    offload: offloaded(head.target),
                }
            }
            Ok(http::Parse::Partial) => Framing::Partial {
                expect_continue: false,
            },
            Err(_) => Framing::Broken,
        },
        Protocol::Fcgi => frame_fcgi(input),
    }
}

/// FastCGI: records up to the empty STDIN of the open request; records
/// outside a request (management, unknown types and roles) go one by one.
fn frame_fcgi(input: &[u8]) -> Framing {
    let mut pos = 0;
    let mut open: Option<(u16, bool)> = None;
    let mut params = Vec::new();
    loop {
        let record = match fcgi::parse_record(&input[pos..]) {
            Ok(Some(r)) => r,
            Ok(None) if input.len() > MAX_INPUT - fcgi::MAX_RECORD => return Framing::Broken,
            Ok(None) => {
                return Framing::Partial {
                    expect_continue: false,
                }
            }
            Err(_) => return Framing::Broken,
        };
        pos += record.len;
        let id = record.header.id;
        match (record.header.kind, open) {
            (fcgi::BEGIN_REQUEST, None) if record.content.len() >= 3 => {
                let role = u16::from_be_bytes([record.content[0], record.content[1]]);
                if role == fcgi::ROLE_RESPONDER {
                    let keep = record.content[2] & fcgi::FLAG_KEEP_CONN != 0;
                    open = Some((id, keep));
                }
            }
            (fcgi::PARAMS, Some((open_id, _))) if id == open_id => {
                params.extend_from_slice(record.content)
            }
            (fcgi::STDIN, Some((open_id, keep))) if id == open_id && record.content.is_empty() => {
                let offload = CgiRequest::from_params(&params)
                    .map(|cgi| offloaded(&cgi.target()))
                    .unwrap_or(false);
                return Framing::Whole {
                    len: pos,
                    last: !keep,
                    offload,
                };
            }
            (fcgi::ABORT_REQUEST, Some((open_id, keep))) if id == open_id => {
                return Framing::Whole {
                    len: pos,
                    last: !keep,
                    offload: false,
                }
            }
            _ => {}
        }
        if open.is_none() {
            return Framing::Whole {
                len: pos,
                last: false,
                offload: false,
            };
        }
    }
}

/// `/cpu` with `task=1` in its query goes to a task worker.
fn offloaded(target: &str) -> bool {
    let (_, query) = routes::split_target(target);
    matches!(routes::route("GET", target), Route::Cpu(_))
        && routes::query_param(query, "task") == Some("1")
}

/// The manager process: forks the workers and task workers, replaces any
/// that exit, and stops them all on SIGTERM.
fn manage(args: &Args, shared: &Shared, board: Scoreboard, wiring: &Wiring) -> i32 {
    let me = nix::unistd::getpid();
    // Which process fills which place: (task worker?, index).
    let mut children: HashMap<Pid, (bool, usize)> = HashMap::new();
    let spawn = |task: bool, index: usize| -> anyhow::Result<Pid> {
        // SAFETY: the manager is single-threaded.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The manager's signal handlers stay (SIGTERM sets the stop
                // flag); the worker also dies with the manager.
                let orphan = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
                    || nix::unistd::getppid() != me;
                let code = if orphan {
                    1
                } else if task {
                    task_worker(shared, &wiring.task_server[index])
                } else {
                    worker(args, shared, board, index, wiring)
                };
                std::process::exit(code)
            }
        }
    };
    let places = (0..wiring.worker.len())
        .map(|w| (false, w))
        .chain((0..wiring.task_server.len()).map(|t| (true, t)));
    for (task, index) in places {
        match spawn(task, index) {
            Ok(pid) => {
                children.insert(pid, (task, index));
            }
            Err(e) => {
                eprintln!("swoole-server: manager: {e:#}");
                return 1;
            }
        }
    }
    let mut forwarded = false;
    loop {
        let mut fds = [PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        signals::drain_stop_fd();
        let stopping = signals::stop_requested();
        if stopping && !forwarded {
            for pid in children.keys() {
                let _ = kill(*pid, Signal::SIGTERM);
            }
            forwarded = true;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let Some((task, index)) = children.remove(&pid) else {
                        continue;
                    };
                    if stopping {
                        continue;
                    }
                    if !matches!(status, WaitStatus::Exited(_, 0)) {
                        eprintln!(
                            "swoole-server: worker {pid} ended ({status:?}); starting a new one"
                        );
                        // A worker that cannot start must not become a fork storm.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    match spawn(task, index) {
                        Ok(pid) => {
                            children.insert(pid, (task, index));
                        }
                        Err(e) => eprintln!("swoole-server: manager: {e:#}"),
                    }
                }
            }
        }
        if stopping && children.is_empty() {
            return 0;
        }
    }
}

/// Runs one request's bytes through a fresh `Conn`: the response bytes and
/// whether the connection must close after them. A `/wait` sleeps here.
fn execute(host: &mut ServerHost, flags: u8, payload: &[u8]) -> (Vec<u8>, bool) {
    let start = Instant::now();
    let mut conn = host.shared().new_conn(start);
    if flags & DRAIN != 0 {
        conn.drain();
    }
    conn.handle_input(payload, start, host);
    if flags & TIMED_OUT != 0 {
        let late = start + host.timeouts().header + Duration::from_millis(1);
        conn.handle_timeout(late, host);
    }
    let mut out = Vec::new();
    loop {
        if !conn.output().is_empty() {
            out.extend_from_slice(conn.output());
            let n = conn.output().len();
            conn.advance_output(n, Instant::now(), host);
        } else if let Some(until) = conn.parked_until() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), host);
        } else if !host.serve_file(&mut conn, Instant::now()) {
            break;
        }
    }
    (out, conn.wants_close())
}

/// Fills `buf` from a blocking socket; `Ok(false)` at EOF before any byte.
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf` to a blocking descriptor.
fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame from a blocking socket: (token, flags, payload), or
/// `None` at EOF.
fn read_frame(fd: &OwnedFd) -> nix::Result<Option<(u32, u8, Vec<u8>)>> {
    let mut head = [0u8; FRAME_HEAD];
    if !read_exact(fd, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let token = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut payload = vec![0u8; len];
    if !read_exact(fd, &mut payload)? {
        return Err(Errno::EPIPE);
    }
    Ok(Some((token, head[8], payload)))
}

fn write_frame(fd: &OwnedFd, token: u32, flags: u8, payload: &[u8]) -> nix::Result<()> {
    let mut frame = Vec::with_capacity(FRAME_HEAD + payload.len());
    push_frame(&mut frame, token, flags, payload);
    write_all(fd, &frame)
}

/// Waits (a tick at most) for one of `fds` to be readable; its index.
fn wait_readable(fds: &[OwnedFd], start: usize) -> Option<usize> {
    let mut polls: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut polls, PollTimeout::from(1000u16)) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let ready: Vec<bool> = polls
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect();
    // Start from a rotating index so no reactor starves the others.
    (0..fds.len())
        .map(|i| (start + i) % fds.len())
        .find(|&i| ready[i])
}

/// A worker process: take a request from any reactor, run it (or hand it
/// to a task worker and wait), answer, repeat.
fn worker(args: &Args, shared: &Shared, board: Scoreboard, index: usize, wiring: &Wiring) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let slot = &board.slots()[index];
    slot.reset(std::process::id(), State::Idle);
    let pipes = &wiring.worker[index];
    let tasks = &wiring.task_client[index];
    let mut served = 0u64;
    let mut turn = 0;
    while !signals::stop_requested() {
        slot.set_state(State::Idle);
        turn += 1;
        let Some(r) = wait_readable(pipes, turn) else {
            continue;
        };
        let (token, flags, payload) = match read_frame(&pipes[r]) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("swoole-server: worker {}: {e}", std::process::id());
                return 1;
            }
        };
        slot.set_state(State::Executing);
        let (out, close) = if flags & OFFLOAD != 0 && !tasks.is_empty() {
            // taskwait: a task worker runs it; this worker waits.
            let t = (served as usize + index) % tasks.len();
            match write_frame(&tasks[t], token, flags, &payload)
                .and_then(|()| read_frame(&tasks[t]))
            {
                Ok(Some((_, close, out))) => (out, close != 0),
                _ => execute(&mut host, flags & !OFFLOAD, &payload),
            }
        } else {
            execute(&mut host, flags, &payload)
        };
        if let Err(e) = write_frame(&pipes[r], token, close as u8, &out) {
            eprintln!("swoole-server: worker {}: {e}", std::process::id());
            return 1;
        }
        served += 1;
        if args.max_request > 0 && served >= args.max_request {
            return 0;
        }
    }
    0
}

/// A task worker: requests offloaded by workers, one at a time.
fn task_worker(shared: &Shared, pipes: &[OwnedFd]) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let mut turn = 0;
    while !signals::stop_requested() {
        turn += 1;
        let Some(w) = wait_readable(pipes, turn) else {
            continue;
        };
        let Ok(Some((token, flags, payload))) = read_frame(&pipes[w]) else {
            return 0;
        };
        let (out, close) = execute(&mut host, flags, &payload);
        if write_frame(&pipes[w], token, close as u8, &out).is_err() {
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_http_requests() {
        let two = b"GET /hello HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let Framing::Whole { len, last, .. } = frame(Protocol::Http, two) else {
            panic!("whole")
        };
        assert_eq!((len, last), (23, false));
        assert!(matches!(
            frame(Protocol::Http, &two[23..40]),
            Framing::Partial { .. }
        ));
        let Framing::Whole { len, .. } = frame(Protocol::Http, &two[23..]) else {
            panic!("whole")
        };
        assert_eq!(len, two.len() - 23);
        assert!(matches!(
            frame(Protocol::Http, b"NOT HTTP\r\n\r\n"),
            Framing::Broken
        ));
        let Framing::Whole { offload, .. } =
            frame(Protocol::Http, b"GET /cpu?n=5&task=1 HTTP/1.1\r\n\r\n")
        else {
            panic!("whole")
        };
        assert!(offload);
    }

    #[test]
    fn frames_fastcgi_requests() {
        let mut wire = Vec::new();
        fcgi::encode_request(&mut wire, 1, true, "GET", "/cpu?n=3&task=1", &[], b"");
        let whole = wire.len();
        fcgi::encode_request(&mut wire, 2, false, "GET", "/hello", &[], b"");
        let Framing::Whole { len, last, offload } = frame(Protocol::Fcgi, &wire) else {
            panic!("whole")
        };
        assert_eq!((len, last, offload), (whole, false, true));
        assert!(matches!(
            frame(Protocol::Fcgi, &wire[..whole - 1]),
            Framing::Partial { .. }
        ));
        let Framing::Whole { last, .. } = frame(Protocol::Fcgi, &wire[whole..]) else {
            panic!("whole")
        };
        assert!(last);
    }

    #[test]
    fn frame_round_trip() {
        let mut out = Vec::new();
        push_frame(&mut out, 7, OFFLOAD, b"abc");
        assert_eq!(parse_frame(&out), Some((7, OFFLOAD, out.len())));
        assert_eq!(parse_frame(&out[..5]), None);
    }
}
