//! # prefork-server — a master and N pre-forked workers blocking in accept
//!
//! Run it: `prefork-server --listen 127.0.0.1:8080 --workers 4 --accept shared`.
//!
//! php-fpm's `pm = static`, and UNP ch.30's "preforked server, no locking
//! around accept" (design 2). The master binds the listening socket, forks
//! `--workers` children, and then only watches them (the runtime's
//! `supervisor`): a child that dies is replaced, after a back-off if it
//! died right after its start. Each child loops: `accept` (blocking; the kernel wakes one
//! waiter per connection), serve that connection to its end with blocking
//! `read`/`write`, accept the next.
//!
//! ```text
//!             listen socket (one, shared by every child)
//!            /        |        \
//!   worker 1      worker 2      worker N      <- each blocks in accept(2),
//!   read/write    read/write    read/write       then in read(2) on its one
//!                                                connection
//!   master: poll(self-pipe) -> waitpid -> fork a replacement
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write` in the worker
//! that holds the connection (plus `accept`, `setsockopt` and `close` once
//! per connection). No readiness API, no user-space scheduling: the kernel
//! schedules the processes.
//!
//! **Trade-off.** Simple, isolated (a crash kills one request), and every
//! worker may block — on `/wait`, on disk, on a slow client — without
//! stalling the others. But concurrency is capped at N: with N workers
//! each holding a keep-alive connection, connection N+1 waits in the
//! backlog, and `/wait?us=10000` tops out at N × 100 requests/s (Little's
//! law). Memory grows with N processes, not with connections.
//!
//! **When it wins**: CPU-bound or blocking handlers with few, short
//! connections — which is why PHP runs this way. **Where it breaks**: many
//! idle keep-alive connections (each pins a worker) and slow clients.
//! Compare with `epoll-server` (one thread, thousands of connections) and
//! `fpm-server` (the same design with a process manager).
//!
//! **How workers take connections** (`--accept`; the first two are UNP
//! ch.30's designs, the last two are Linux designs UNP does not have):
//! * `shared` (default, UNP design 2) — every worker blocks in `accept` on
//!   the one socket; the kernel wakes one waiter per connection (no
//!   thundering herd on Linux for blocking accept). Blocked accept callers
//!   wait as *exclusive* waiters added at the tail of the socket's wait
//!   queue, and a wake-up starts from the head: FIFO, the worker that has
//!   waited longest (`prepare_to_wait_exclusive` in kernel/sched/wait.c).
//!   LIFO — the last to wait is woken first — is what processes blocked in
//!   `epoll_wait` on one shared epoll instance get (fs/eventpoll.c).
//! * `flock` — a lock around `accept`, so one worker at a time waits in
//!   accept and the others wait for the lock: UNP design 3, for kernels
//!   where accept on a shared socket is not safe or wakes everyone. UNP
//!   locks with `fcntl(F_SETLKW)` record locks (its design 4 puts a
//!   process-shared pthread mutex in shared memory instead, not built
//!   here); `flock(2)` is our substitute, the same idea with a simpler
//!   call. Two more system calls per connection.
//! * `reuseport` (Linux 3.9) — one SO_REUSEPORT socket per worker, all
//!   bound to the same port; the kernel spreads connections by a hash of
//!   the 4-tuple, so balance is statistical and a busy worker's queue
//!   waits for it even when others are idle.
//! * `exclusive` (Linux 4.5) — each worker has its own epoll instance
//!   watching the shared (non-blocking) listener with EPOLLEXCLUSIVE: a
//!   connection wakes one (or a few) of the waiting workers, which then
//!   accept; one that lost the race sees EAGAIN. An `epoll_wait` more per
//!   connection.
//! * `epoll` — the same without EPOLLEXCLUSIVE, the way a shared listener
//!   in per-process epoll sets was written before Linux 4.5: every worker
//!   waiting in `epoll_wait` is woken for each connection, one wins the
//!   accept and the rest see EAGAIN and go back to sleep — the thundering
//!   herd, kept here to be measured (`iomodels lab run herd`).
//!
//! Per-worker balance shows in the `X-Worker` header (the load generator
//! counts it; `servers/tests/accept.rs` prints it for each strategy).
//!
//! SIGTERM/SIGINT: the master forwards SIGTERM; each worker finishes its
//! connection's request in flight, answers whatever is still in the listen
//! backlog, and exits; the master exits 0 when all have.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net::{self, ListenAddr, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::supervisor::Supervisor;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::SockFlag;

/// A master that forks N workers which block in accept(2) (php-fpm pm=static).
#[derive(Debug, Parser)]
#[command(name = "prefork-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// How workers take connections: one shared socket, a file lock around accept, a SO_REUSEPORT socket each, epoll with EPOLLEXCLUSIVE, or epoll without it (the thundering herd)
    #[arg(long, value_name = "HOW", value_enum, default_value_t = Accept::Shared)]
    accept: Accept,
}

/// How workers take connections (UNP ch.30 designs 2 and 3, SO_REUSEPORT, epoll with and without EPOLLEXCLUSIVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Accept {
    /// Every worker blocks in accept(2) on the one listening socket.
    Shared,
    /// flock(2) on a temporary file around accept(2).
    Flock,
    /// One SO_REUSEPORT listening socket per worker, on the same port.
    Reuseport,
    /// A per-worker epoll instance watching the shared listener with EPOLLEXCLUSIVE.
    Exclusive,
    /// A per-worker epoll instance watching the shared listener, every waiter woken (the herd).
    Epoll,
}

/// A worker's place in the pool: under `--accept reuseport`, slot `n` (and
/// every replacement of its worker) owns listening socket `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(usize);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let reuseport = args.accept == Accept::Reuseport;
    anyhow::ensure!(
        !(reuseport && matches!(args.common.listen, ListenAddr::Unix(_))),
        "--accept reuseport needs a TCP address"
    );
    let opts = ListenOptions {
        reuseport,
        // Exclusive, epoll: a worker woken by epoll may lose the race for
        // the connection; accept must then say EAGAIN, not block.
        nonblocking: matches!(args.accept, Accept::Exclusive | Accept::Epoll),
        // Reuseport: one socket per worker, all bound to the same port.
        per_worker: reuseport,
    };
    let Startup {
        data: _data,
        shared,
        listener,
        more,
        shown,
        workers,
    } = Startup::begin("prefork", &args.common, Workers::FromFlag, opts)?;
    let listeners: Vec<OwnedFd> = std::iter::once(listener).chain(more).collect();
    for l in &listeners {
        // accept(2) honours SO_RCVTIMEO: a worker wakes each tick to look
        // at the stop flag even when no connection comes.
        net::set_recv_timeout(l, blocking::TICK);
    }
    // The accept lock of `--accept flock`: a file created and unlinked at
    // once (nothing is left behind, even after SIGKILL); workers reopen it
    // through /proc/self/fd, which gives each its own open file description.
    let lock = (args.accept == Accept::Flock)
        .then(|| {
            let path =
                std::env::temp_dir().join(format!("iomodels-prefork-{}.lock", std::process::id()));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            anyhow::Ok(file)
        })
        .transpose()?;
    let how = Worker {
        accept: args.accept,
        lock: lock.as_ref().map(|f| f.as_raw_fd()),
    };

    // The master: fork one worker per slot, then only supervise them —
    // sleep until a signal (stop, or a child exited), reap, replace (with a
    // back-off if a worker dies right after its start), forward the stop.
    // It never touches a connection.
    let mut supervisor = Supervisor::new()?;
    let body = |slot: &Slot| worker(&listeners[slot.0 % listeners.len()], &shared, how);
    for slot in 0..workers as usize {
        supervisor.spawn(Slot(slot), body)?;
    }
    cli::ready(&shown);
    supervisor.run(body)
}

/// How a worker takes its connections.
#[derive(Debug, Clone, Copy)]
struct Worker {
    accept: Accept,
    /// The lock file of `--accept flock` (a descriptor of the master's).
    lock: Option<RawFd>,
}

/// One worker: accept, serve the connection to its end, repeat.
fn worker(listener: &OwnedFd, shared: &Shared, how: Worker) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let stats = host.stats();
    let mut buf = vec![0u8; 64 * 1024];
    let mut on_conn = |fd: OwnedFd, origin| {
        stats.opened();
        net::prepare_accepted(&fd);
        blocking::serve(fd, &mut host, &mut buf, origin);
        stats.closed();
    };
    let served = match (how.accept, how.lock) {
        (Accept::Flock, Some(fd)) => flock_accept_loop(listener, fd, &mut on_conn),
        (Accept::Exclusive, _) => epoll_accept_loop(listener, true, &mut on_conn),
        (Accept::Epoll, _) => epoll_accept_loop(listener, false, &mut on_conn),
        // Shared, and reuseport (where `listener` is this worker's own).
        _ => blocking::accept_loop(listener, &mut on_conn),
    };
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("prefork-server: worker {}: {e:#}", std::process::id());
            1
        }
    }
}

/// UNP design 3 with flock(2) for its fcntl(2) lock: `flock(LOCK_EX)`,
/// `accept`, `flock(LOCK_UN)`. Each worker
/// reopens the lock file itself: a lock belongs to an open file
/// description, which a descriptor inherited across fork would share with
/// every sibling (and then every worker would "hold" the lock at once).
fn flock_accept_loop(
    listener: &OwnedFd,
    lock: RawFd,
    on_conn: impl FnMut(OwnedFd, blocking::Origin),
) -> anyhow::Result<()> {
    let path = format!("/proc/self/fd/{lock}");
    let file = std::fs::File::open(&path).with_context(|| format!("cannot reopen {path}"))?;
    let mut file = Some(file);
    let mut locked_accept = || {
        let Some(f) = file.take() else {
            return Err(Errno::EBADF);
        };
        // A signal interrupts the wait for the lock (EINTR): the loop then
        // looks at the stop flag.
        let guard = match Flock::lock(f, FlockArg::LockExclusive) {
            Ok(guard) => guard,
            Err((f, e)) => {
                file = Some(f);
                return Err(e);
            }
        };
        let accepted = net::accept(listener, SockFlag::empty());
        file = Some(match guard.unlock() {
            Ok(f) => f,
            // Dropping the guard unlocks too; keep the file either way.
            Err((guard, _)) => guard.unlock().map_err(|(_, e)| e)?,
        });
        accepted
    };
    blocking::accept_with(
        listener,
        || false,
        || net::accept_ladder(locked_accept()),
        on_conn,
    )
}

/// Each worker's own epoll instance watches the shared listener. With
/// `exclusive` (EPOLLEXCLUSIVE) a connection wakes one waiter (or a few);
/// without, it wakes every worker waiting in `epoll_wait`, and all but one
/// find nothing to accept.
fn epoll_accept_loop(
    listener: &OwnedFd,
    exclusive: bool,
    on_conn: impl FnMut(OwnedFd, blocking::Origin),
) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut flags = EpollFlags::EPOLLIN;
    if exclusive {
        flags |= EpollFlags::EPOLLEXCLUSIVE;
    }
    epoll
        .add(listener, EpollEvent::new(flags, 0))
        .context(if exclusive {
            "epoll_ctl(EPOLLEXCLUSIVE)"
        } else {
            "epoll_ctl"
        })?;
    let mut events = [EpollEvent::empty()];
    let mut wait_then_accept = || match epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
        // The tick: the loop looks at the stop flag.
        Ok(0) => Err(Errno::EAGAIN),
        // Non-blocking: EAGAIN when another worker took the connection.
        Ok(_) => net::accept(listener, SockFlag::empty()),
        Err(e) => Err(e),
    };
    blocking::accept_with(
        listener,
        || false,
        || net::accept_ladder(wait_then_accept()),
        on_conn,
    )
}
