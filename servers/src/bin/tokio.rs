//! # tokio-server — a task per connection, async/await on tokio
//!
//! What most Rust network services deploy: each connection is a *task*
//! whose code reads top to bottom like the blocking `thread-server`
//! (`read().await`, `write().await`, `sleep().await`), and the runtime turns
//! every `.await` that cannot go on into "park this task, run another".
//! Underneath it is the event loop of `mio-server`:
//!
//! ```text
//!   worker thread 1..N (multi-thread) or the one thread (current-thread):
//!     run ready tasks from the local queue (LIFO slot first), then the
//!     global queue, then steal half of another worker's queue
//!     nothing to run: one worker "parks" in epoll_wait (mio, edge-triggered),
//!        the others sleep on a condvar (futex) until it or a waker calls them
//!     epoll says fd 17 is readable -> wake the task that awaited it
//!     the timer wheel's next deadline is epoll_wait's timeout
//!   blocking pool (spawn_blocking, tokio::fs): up to 512 threads, made on
//!     demand, kept 10 s idle; each tokio::fs call is a hand-off to one
//!     of them and a wake-up back
//! ```
//!
//! * **One task per connection** drives the workload's `Conn` (sans-IO):
//!   a `select!` waits for the first of: input (while `Conn` wants it),
//!   room for its output, its deadline (`tokio::time::sleep`: a parked
//!   `/wait`, a slow head, an idle peer, a stuck writer), or the stop.
//! * **Readiness is cached per socket**: a `read` that returned fewer
//!   bytes than asked clears it, so one keep-alive request costs one `read`
//!   and one `write`, like epoll-server's level-triggered loop, plus a
//!   share of `epoll_wait` and of the scheduler's wake-ups.
//! * **`/file` goes through `tokio::fs`**, which is not asynchronous I/O:
//!   Linux readiness says nothing about files, so every call (open,
//!   metadata, each read) is a `spawn_blocking` job on the blocking pool,
//!   a thread hand-off each way. uring-server reads the file through its
//!   ring instead, and epoll-server simply blocks its loop.
//! * **`--flavor multi-thread`** (default): `--workers` threads steal each
//!   other's tasks, so a connection may move between threads from one
//!   request to the next (`X-Worker` names the thread that answered).
//!   **`--flavor current-thread`**: one thread runs every task, the
//!   model of epoll-server with async syntax (and of Node.js).
//! * **`--blocking-wait`** shows the classic async mistake:
//!   `std::thread::sleep` inside a task blocks the *thread*, so every task
//!   queued on it waits (on current-thread, the whole server). Tasks a
//!   stalled worker holds in its LIFO slot are not even stolen.
//!
//! **Measured** (`docs/models/tokio.md`: one run, server on CPU 1, load
//! generator on CPU 0, perf counting system calls): `/hello` at 50
//! connections costs 2.06 system calls per request, as epoll-server's
//! (one `recvfrom`, one `sendto`, 0.05 `epoll_wait`), 6,385 user-space
//! instructions against epoll-server's 2,838 (valgrind), and 0–14 % more
//! CPU; `/file` through the blocking pool costs 2.3–2.6× epoll-server's
//! CPU and 13 context switches per request.
//!
//! **Trade-off.** The code of a blocking server with the scaling of an
//! event loop, and work stealing moves queued tasks off a busy thread
//! (the blocking-in-reactor lab shows it), which mio-server's round-robin
//! deal cannot. The price: every task is a heap
//! allocation holding its own read buffer (the event loops share one:
//! 10,000 idle connections cost tokio-server 9,995 bytes each,
//! epoll-server 365, `scripts/idle-rss.sh`),
//! wake-ups cross threads, and one blocking call stalls whatever runs on
//! that thread. **Wins** where programmer time matters and handlers await
//! other services; **loses** a little CPU per request against a
//! hand-written loop (see the page).
//!
//! **Where the rules live**: the protocol is the workload's `Conn`;
//! start-up, the listener and `--max-conns` are `Startup`,
//! `Shared::admit`/`refuse`; accept errors and their pause
//! `net::accept_next`/`ACCEPT_PAUSE`; the graceful stop
//! `tasks::stop_step` (`signals::may_close`/`STOP_GRACE`).
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin tokio-server
//! -- --flavor current-thread --listen 127.0.0.1:8080`, then `curl
//! 127.0.0.1:8080/hello`.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net::{self, Accepted, ListenAddr, ListenOptions};
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::tasks::{self, Tasks, Ticket};
use iomodels_workload::{Conn, FileRequest};
use nix::sys::socket::SockFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};

/// One task per connection on tokio (multi-thread work stealing or current-thread).
#[derive(Debug, Parser)]
#[command(name = "tokio-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Which scheduler runs the tasks (--workers sets multi-thread's worker threads)
    #[arg(long, value_enum, default_value_t = Flavor::MultiThread)]
    flavor: Flavor,

    /// Serve /wait with std::thread::sleep inside the task (the classic async mistake: it blocks the worker thread)
    #[arg(long)]
    blocking_wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavor {
    /// `--workers` threads that steal each other's tasks
    MultiThread,
    /// One thread runs every task
    CurrentThread,
}

/// Bytes a task reads at a time; each task owns its buffer for its life.
const READ_BUF: usize = 8 * 1024;
/// A deadline far enough away to mean "none".
const NEVER: Duration = Duration::from_secs(86_400 * 365);
/// What the listener and the self-pipe are registered for.
const READABLE: Interest = Interest::READABLE;

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let workers = match args.flavor {
        Flavor::MultiThread => Workers::FromFlag,
        Flavor::CurrentThread => Workers::Fixed(1),
    };
    let start = Startup::begin("tokio", &args.common, workers, ListenOptions::NONBLOCKING)?;
    let mut builder = match args.flavor {
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(start.workers as usize);
            b
        }
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder.enable_all().build().context("tokio runtime")?;
    let server = Arc::new(Server {
        shared: start.shared,
        unix: matches!(args.common.listen, ListenAddr::Unix(_)),
        blocking_wait: args.blocking_wait,
    });
    let _data = start.data;
    runtime.block_on(server.serve(start.listener, &start.shown))
}

/// What every task shares.
struct Server {
    shared: Shared,
    unix: bool,
    blocking_wait: bool,
}

impl Server {
    /// The acceptor task: accept until a stop, then take the backlog, tell
    /// every connection, and wait for the last one to finish.
    async fn serve(self: Arc<Self>, listener: OwnedFd, shown: &str) -> anyhow::Result<()> {
        // 1. Register the listener and the signal self-pipe with the
        //    runtime's reactor (epoll through mio: AsyncFd is that step).
        // SAFETY: the listener is owned by the AsyncFd from here on, and
        // the self-pipe stays open for the whole process (signals.rs).
        let listener = unsafe { AsyncFd::register_with_interest(listener, READABLE) }
            .map_err(std::io::Error::from)?;
        // SAFETY: as above.
        let stop_pipe = unsafe { AsyncFd::register_with_interest(signals::stop_fd(), READABLE) }
            .map_err(std::io::Error::from)?;
        let tasks = Tasks::default();
        cli::ready(shown);
        loop {
            tokio::select! {
                _ = stop_pipe.readable() => break,
                ready = listener.readable() => {
                    let mut ready = ready?;
                    // 2. One accept per wake-up, through the shared ladder:
                    //    EAGAIN clears the cached readiness (the listener is
                    //    edge-triggered underneath); out of descriptors pauses.
                    match net::accept_next(listener.get_ref(), SockFlag::SOCK_NONBLOCK)? {
                        Accepted::Conn(fd) => self.spawn_conn(fd, &tasks),
                        Accepted::Nothing => ready.clear_ready(),
                        Accepted::Exhausted => tokio::time::sleep(net::ACCEPT_PAUSE).await,
                    }
                }
            }
        }
        // 3. Stopping: what the backlog holds is served too; then the
        //    listener closes, every task hears of the stop, and the last
        //    one to finish ends the server.
        while let Accepted::Conn(fd) =
            net::accept_next(listener.get_ref(), SockFlag::SOCK_NONBLOCK)?
        {
            self.spawn_conn(fd, &tasks);
        }
        drop(listener);
        tasks.stop(Instant::now());
        tasks.finished().await;
        Ok(())
    }

    /// Admits a connection under `--max-conns` (or refuses it: 503 /
    /// OVERLOADED) and spawns its task. The runtime puts the new task in
    /// this worker's LIFO slot, where it runs next unless another worker
    /// steals it first.
    fn spawn_conn(self: &Arc<Self>, fd: OwnedFd, tasks: &Tasks) {
        let Some(admitted) = self.shared.admit() else {
            return self.shared.refuse(fd);
        };
        net::prepare_accepted(&fd);
        self.shared.stats.opened();
        let (server, ticket) = (self.clone(), tasks.enter());
        tokio::spawn(async move {
            // A socket the runtime cannot register is closed at once.
            let _ = server.connection(fd, ticket).await;
            server.shared.stats.closed();
            drop(admitted);
        });
    }

    /// One connection's task: the socket, split into its read and write
    /// halves so that both can wait at once.
    async fn connection(&self, fd: OwnedFd, ticket: Ticket) -> std::io::Result<()> {
        if self.unix {
            let mut s = tokio::net::UnixStream::from_std(fd.into())?;
            let (r, w) = s.split();
            self.drive(r, w, ticket).await;
        } else {
            let mut s = tokio::net::TcpStream::from_std(fd.into())?;
            let (r, w) = s.split();
            self.drive(r, w, ticket).await;
        }
        Ok(())
    }

    /// Drives the workload's `Conn` until it wants the socket closed.
    async fn drive(
        &self,
        mut r: impl AsyncRead + Unpin,
        mut w: impl AsyncWrite + Unpin,
        mut ticket: Ticket,
    ) {
        let arrived = Instant::now();
        let mut conn = self.shared.new_conn(arrived);
        let mut buf = vec![0u8; READ_BUF];
        let mut file = None;
        let mut stopping = None;
        // One timer for the task's life, moved as the deadline moves.
        let sleep = tokio::time::sleep(NEVER);
        tokio::pin!(sleep);
        let mut armed = None;
        loop {
            // 1. /file: open, then read piece by piece, on the blocking pool.
            while let Some(request) = conn.take_file_request() {
                self.file_step(request, &mut conn, &mut file).await;
            }
            // 2. Stopping: close once idle (tasks::stop_step); the grace
            //    of a connection that has not answered yet is a deadline.
            let now = Instant::now();
            let grace = tasks::stop_step(&mut conn, stopping, now);
            if conn.wants_close() {
                return;
            }
            // 3. --blocking-wait: the mistake, on purpose. The worker thread
            //    sleeps here and nothing else runs on it meanwhile.
            if let (true, Some(until)) = (self.blocking_wait, conn.parked_until()) {
                std::thread::sleep(until.saturating_duration_since(now));
                with_host(&self.shared, |h| conn.handle_timeout(Instant::now(), h));
                continue;
            }
            // 4. The deadline: a parked /wait, a slow head, an idle peer.
            let deadline = [conn.poll_timeout(), grace].into_iter().flatten().min();
            if deadline.is_some() && deadline != armed {
                sleep.as_mut().reset(deadline.unwrap_or(now).into());
                armed = deadline;
            }
            // 5. Wait for the first of: room for output, input, the deadline, the stop.
            tokio::select! {
                biased;
                n = w.write(conn.output()), if !conn.output().is_empty() => match n {
                    Ok(n) if n > 0 => {
                        with_host(&self.shared, |h| conn.advance_output(n, Instant::now(), h))
                    }
                    _ => return,
                },
                n = r.read(&mut buf), if conn.wants_read() => match n {
                    Ok(0) => with_host(&self.shared, |h| conn.handle_eof(Instant::now(), h)),
                    Ok(n) => {
                        with_host(&self.shared, |h| conn.handle_input(&buf[..n], Instant::now(), h))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                },
                () = &mut sleep, if deadline.is_some() => {
                    armed = None;
                    with_host(&self.shared, |h| conn.handle_timeout(Instant::now(), h));
                }
                at = &mut ticket.stop, if stopping.is_none() => {
                    stopping = Some(at.unwrap_or(now).max(arrived));
                }
            }
        }
    }

    /// One step of a `/file` request through `tokio::fs`: each await below
    /// is a job for the blocking pool (a thread runs `open(2)`, `statx(2)`
    /// or `read(2)`, then wakes this task). The pieces are asked for in
    /// order, so the file's own position is the offset asked.
    async fn file_step(
        &self,
        request: FileRequest,
        conn: &mut Conn,
        file: &mut Option<tokio::fs::File>,
    ) {
        match request {
            FileRequest::Open(name) => {
                let opened = async {
                    let f = tokio::fs::File::open(self.shared.file_path(&name)).await?;
                    let size = f.metadata().await?.len();
                    Ok((f, size))
                };
                let size = opened.await.map(|(f, size)| {
                    *file = Some(f);
                    size
                });
                with_host(&self.shared, |h| conn.file_opened(size, Instant::now(), h));
            }
            FileRequest::Read { len, .. } => {
                let mut piece = vec![0u8; len];
                let read = match file.as_mut() {
                    Some(f) => f.read(&mut piece).await.map(|n| &piece[..n]),
                    None => Err(std::io::ErrorKind::NotFound.into()),
                };
                with_host(&self.shared, |h| conn.file_read(read, Instant::now(), h));
            }
        }
    }
}

thread_local! {
    /// The host of the worker thread a task runs on right now: a task may
    /// move between threads, so `X-Worker` is whichever thread answered.
    static HOST: RefCell<Option<ServerHost>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's host (numbered 1, 2, … as threads first answer).
fn with_host<T>(shared: &Shared, f: impl FnOnce(&mut ServerHost) -> T) -> T {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    HOST.with(|host| {
        let mut host = host.borrow_mut();
        let host = host.get_or_insert_with(|| {
            ServerHost::for_thread(shared, NEXT.fetch_add(1, Ordering::Relaxed))
        });
        f(host)
    })
}
