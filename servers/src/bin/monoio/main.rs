//! # monoio-server — thread-per-core io_uring, async/await on monoio
//!
//! The async counterpart of uring-server, as tokio-server is of
//! epoll-server and mio-server: a task per connection whose code reads
//! like blocking code, on a runtime whose reactor is an io_uring instead of
//! epoll. monoio (ByteDance's runtime) is *thread-per-core*: `--workers`
//! threads (default: one per CPU), each with its own ring, timer wheel,
//! tasks and SO_REUSEPORT listener. Tasks never move between threads, so
//! nothing on the request path is shared, locked or `Send`; the kernel's
//! hash of each new connection picks the thread that serves it for good.
//!
//! ```text
//!   thread k (one per core):          kernel
//!   ┌───────────────────────────┐     ┌──────────────────────────────┐
//!   │ tasks: acceptor, conn 1.. │ SQ  │ listener k (SO_REUSEPORT)    │
//!   │ each .await on an op:     │ ──> │ runs each request, wakes the │
//!   │   accept, recv(buf),      │     │ socket's waiters (internal   │
//!   │   send(buf), read_at(f)   │ CQ  │ poll), reads files           │
//!   │ nothing ready: submit and │ <── └──────────────────────────────┘
//!   │   wait (io_uring_enter)   │
//!   │ completion -> wake task   │
//!   └───────────────────────────┘
//! ```
//!
//! * **Accept** is one `IORING_OP_ACCEPT` in flight per thread, re-armed
//!   after each connection (monoio 0.2 has no multishot accept).
//! * **Receive and send** are a request each, in flight at once, each owning
//!   its buffer until it completes (`ops.rs`): the "rent" API, `read(buf)`
//!   → `(result, buf)`. A receive stays armed while the connection waits,
//!   so each connection owns an 8 KiB buffer all its life (uring-server's
//!   provided-buffer ring lends one only when bytes arrive), and the
//!   output is copied into the send's own buffer.
//! * **Deadlines** (`/wait`, slow heads, idle peers, stuck writers):
//!   `monoio::time`'s wheel, the next one `io_uring_enter`'s timeout.
//! * **`/file`**: `IORING_OP_OPENAT`, `statx`, then `IORING_OP_READ` per
//!   piece: the disk read never blocks the thread (tokio-server's
//!   `tokio::fs` hands each call to a blocking-pool thread instead).
//! * **SIGTERM**: monoio has no readiness wrapper for a plain pipe, so a
//!   small thread waits on the self-pipe and tells every runtime through a
//!   `watch` channel (monoio's `sync` feature lets a waker be woken from
//!   another thread). Each thread then cancels its accept (a connection the
//!   kernel accepted meanwhile is still served), takes its backlog, and
//!   lets its connections finish (`tasks::Tasks`, `signals::may_close`).
//! * **`--blocking-wait`**: `std::thread::sleep` in a task stalls that
//!   thread's ring: every connection the kernel hashed to it waits, while
//!   the other threads go on (nothing is stolen: thread-per-core).
//!
//! **One keep-alive request costs** no system call of its own: its recv
//! completion and its send ride on the thread's `io_uring_enter`, which
//! serves every connection ready at that moment: 0.07 system calls per
//! `/hello` at 50 connections, like uring-server's 0.14, but 10.0 µs of
//! CPU against uring-server's 7.0 (a single-shot recv re-armed per
//! request, a boxed future per op, a task wake-up per completion). The
//! figures, against tokio, mio and epoll too: `docs/models/tokio.md`.
//!
//! **Trade-off.** No cross-thread traffic, no locks, completions instead of
//! readiness; but a hot connection cannot move off a busy thread, and a
//! task that blocks or computes stalls every connection of its thread.
//! **When io_uring is unavailable** (sysctl `kernel.io_uring_disabled`, a
//! seccomp filter, an old kernel) the server says `io_uring unavailable:
//! …` at start-up and exits 1, as uring-server does; no epoll fallback is
//! built in, so a run never measures the wrong model by accident.
//!
//! **Where the rules live**: protocol `Conn`; listeners and threads
//! `Startup`, `ring::listen_options`/`run_rings`; `--max-conns`
//! `Shared::admit`/`refuse`; accept errors `net::accept_ladder`; stop `tasks`.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin monoio-server
//! -- --workers 2 --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

mod ops;

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, Accepted, ListenAddr};
use iomodels_servers::ring;
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::tasks::{self, Tasks, Ticket};
use iomodels_workload::{Conn, FileRequest};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, Canceller, Split};
use monoio::time::Instant as MonoInstant;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::SockFlag;
use ops::{transient, Done, Ops};
use tokio::sync::watch;

/// Thread-per-core io_uring on monoio: N threads, each its own ring and listener.
#[derive(Debug, Parser)]
#[command(name = "monoio-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait with std::thread::sleep inside the task (it stalls that thread's ring)
    #[arg(long)]
    blocking_wait: bool,
}

/// A deadline far enough away to mean "none".
const NEVER: Duration = Duration::from_secs(86_400 * 365);

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let opts = ring::listen_options(args.common.workers(), &args.common.listen);
    let start = Startup::begin("monoio", &args.common, Workers::FromFlag, opts)?;
    let unix = matches!(args.common.listen, ListenAddr::Unix(_));
    // The stop watcher: one thread asleep in poll(2) on the self-pipe.
    let (stop, stopped) = watch::channel(false);
    std::thread::spawn(move || {
        let mut fds = [PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
        while poll(&mut fds, PollTimeout::NONE) != Ok(1) {}
        stop.send_replace(true);
    });
    // One runtime per thread, each made on its own thread (a ring belongs
    // to the thread that made it); the ready line once all have started.
    let make = |host, listener| {
        let runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .map_err(ring::setup_failed)?;
        let ctx = Rc::new(Ctx {
            host: RefCell::new(host),
            unix,
            blocking_wait: args.blocking_wait,
        });
        Ok((runtime, ctx, listener, stopped.clone()))
    };
    ring::run_rings(start, make, |(mut runtime, ctx, listener, stopped)| {
        runtime.block_on(serve(ctx, listener, stopped))
    })
}

/// What the tasks of one thread share (not `Send`: it never leaves it).
struct Ctx {
    host: RefCell<ServerHost>,
    unix: bool,
    blocking_wait: bool,
}

impl Ctx {
    /// Runs `f` with this thread's host.
    fn with_host<T>(&self, f: impl FnOnce(&mut ServerHost) -> T) -> T {
        f(&mut self.host.borrow_mut())
    }
}

/// The acceptor task of one thread: one accept in flight until the stop,
/// then the backlog, then wait for this thread's connections to finish.
async fn serve(ctx: Rc<Ctx>, listener: OwnedFd, mut stopped: watch::Receiver<bool>) -> Result<()> {
    let tasks = Tasks::default();
    // monoio's listener gets a duplicate; ours takes the backlog at the stop.
    let ring_listener = Listener::new(listener.try_clone()?, ctx.unix)?;
    let mut stopping = false;
    while !stopping {
        // 1. One accept request in flight; wait for it or for the stop.
        let canceller = Canceller::new();
        let accept = ring_listener.accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let stop = stopped.wait_for(|s| *s);
        let mut stop = std::pin::pin!(stop);
        let first = std::future::poll_fn(|cx| match accept.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => stop.as_mut().poll(cx).map(|_| None),
        });
        let result = match first.await {
            Some(result) => result,
            // 2. The stop: cancel the accept and wait for its completion,
            //    which may still bring a connection.
            None => {
                stopping = true;
                canceller.cancel();
                accept.await
            }
        };
        // 3. The shared accept ladder (a cancelled accept is no error).
        let result = result.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
        match result {
            Err(Errno::ECANCELED) => {}
            result => match net::accept_ladder(result)? {
                Accepted::Conn(fd) => spawn_conn(&ctx, fd, &tasks),
                Accepted::Nothing => {}
                Accepted::Exhausted => monoio::time::sleep(net::ACCEPT_PAUSE).await,
            },
        }
    }
    // 4. What the backlog holds is served too; then the listener closes.
    fcntl(listener.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    while let Accepted::Conn(fd) = net::accept_next(&listener, SockFlag::empty())? {
        spawn_conn(&ctx, fd, &tasks);
    }
    drop((listener, ring_listener));
    tasks.stop(Instant::now());
    tasks.finished().await;
    Ok(())
}

/// A listening socket as monoio takes it.
enum Listener {
    Tcp(monoio::net::TcpListener),
    Unix(monoio::net::UnixListener),
}

impl Listener {
    fn new(fd: OwnedFd, unix: bool) -> std::io::Result<Listener> {
        Ok(match unix {
            true => Listener::Unix(monoio::net::UnixListener::from_std(fd.into())?),
            false => Listener::Tcp(monoio::net::TcpListener::from_std(fd.into())?),
        })
    }

    /// One `IORING_OP_ACCEPT`, cancellable.
    async fn accept(&self, cancel: CancelHandle) -> std::io::Result<OwnedFd> {
        let raw = match self {
            Listener::Tcp(l) => l.cancelable_accept(cancel).await?.0.into_raw_fd(),
            Listener::Unix(l) => l.cancelable_accept(cancel).await?.0.into_raw_fd(),
        };
        // SAFETY: into_raw_fd just gave up the only owner of this
        // descriptor, which the accept created.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

/// Admits a connection under `--max-conns` (or refuses it) and spawns its
/// task on this thread, where it stays.
fn spawn_conn(ctx: &Rc<Ctx>, fd: OwnedFd, tasks: &Tasks) {
    let shared = ctx.host.borrow().shared().clone();
    let Some(admitted) = shared.admit() else {
        return shared.refuse(fd);
    };
    net::prepare_accepted(&fd);
    shared.stats.opened();
    let (ctx, ticket) = (ctx.clone(), tasks.enter());
    monoio::spawn(async move {
        // A socket the runtime cannot take is closed at once.
        if ctx.unix {
            if let Ok(s) = monoio::net::UnixStream::from_std(fd.into()) {
                drive(&ctx, s, ticket).await;
            }
        } else if let Ok(s) = monoio::net::TcpStream::from_std(fd.into()) {
            drive(&ctx, s, ticket).await;
        }
        shared.stats.closed();
        drop(admitted);
    });
}

/// Drives the workload's `Conn` until it wants the socket closed.
async fn drive<S>(ctx: &Ctx, stream: S, mut ticket: Ticket)
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    let arrived = Instant::now();
    let mut conn = ctx.host.borrow().shared().new_conn(arrived);
    let mut io = Ops::new(stream);
    let mut file = None;
    let mut stopping = None;
    let sleep = monoio::time::sleep(NEVER);
    let mut sleep = std::pin::pin!(sleep);
    let mut armed = None;
    loop {
        // 1. /file: open, then read piece by piece, through the ring.
        while let Some(request) = conn.take_file_request() {
            file_step(ctx, request, &mut conn, &mut file).await;
        }
        // 2. Stopping: close once idle (tasks::stop_step); the grace of
        //    a connection that has not answered yet is a deadline.
        let now = Instant::now();
        let grace = tasks::stop_step(&mut conn, stopping, now);
        // Closing drops the requests in flight: monoio cancels them, and
        // the socket closes when the last one has completed.
        if conn.wants_close() {
            return;
        }
        // 3. --blocking-wait: the mistake, on purpose: this thread's ring waits.
        if let (true, Some(until)) = (ctx.blocking_wait, conn.parked_until()) {
            std::thread::sleep(until.saturating_duration_since(now));
            ctx.with_host(|h| conn.handle_timeout(Instant::now(), h));
            continue;
        }
        // 4. Queue what the connection needs: a send of its output, a
        //    receive while it takes input (kept armed once queued, ops.rs).
        if !conn.output().is_empty() {
            io.send(conn.output());
        }
        if conn.wants_read() {
            io.recv();
        }
        // 5. The deadline: a parked /wait, a slow head, an idle peer.
        let deadline = [conn.poll_timeout(), grace].into_iter().flatten().min();
        if deadline.is_some() && deadline != armed {
            sleep
                .as_mut()
                .reset(MonoInstant::from_std(deadline.unwrap_or(now)));
            armed = deadline;
        }
        // 6. Wait for the first completion, the deadline, or the stop.
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = io.poll(cx) {
                return Poll::Ready(Event::Io(done));
            }
            if deadline.is_some() && sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Deadline);
            }
            match stopping {
                None => std::pin::Pin::new(&mut ticket.stop)
                    .poll(cx)
                    .map(|at| Event::Stop(at.ok())),
                Some(_) => Poll::Pending,
            }
        })
        .await;
        let now = Instant::now();
        match event {
            Event::Io(Done::Received(Ok(0))) => ctx.with_host(|h| conn.handle_eof(now, h)),
            Event::Io(Done::Received(Ok(_))) => {
                ctx.with_host(|h| conn.handle_input(io.received(), now, h))
            }
            Event::Io(Done::Sent(Ok(n))) if n > 0 => {
                ctx.with_host(|h| conn.advance_output(n, now, h))
            }
            Event::Io(Done::Received(Err(e)) | Done::Sent(Err(e))) if transient(&e) => {}
            // 0 bytes sent, EPIPE, ECONNRESET: the peer is gone.
            Event::Io(_) => return,
            Event::Deadline => {
                armed = None;
                ctx.with_host(|h| conn.handle_timeout(now, h));
            }
            Event::Stop(at) => stopping = Some(at.unwrap_or(now).max(arrived)),
        }
    }
}

/// What woke a connection's task.
enum Event {
    Io(Done),
    Deadline,
    Stop(Option<Instant>),
}

/// One step of a `/file` request through the ring: `IORING_OP_OPENAT` and
/// `statx`, or one `IORING_OP_READ` at the offset asked (the kernel may
/// hand a read that misses the page cache to its io-wq workers; this
/// thread goes on serving meanwhile).
async fn file_step(
    ctx: &Ctx,
    request: FileRequest,
    conn: &mut Conn,
    file: &mut Option<monoio::fs::File>,
) {
    match request {
        FileRequest::Open(name) => {
            let path = ctx.host.borrow().shared().file_path(&name);
            let opened = async {
                let f = monoio::fs::File::open(path).await?;
                let size = f.metadata().await?.len();
                Ok((f, size))
            };
            let size = opened.await.map(|(f, size)| {
                *file = Some(f);
                size
            });
            ctx.with_host(|h| conn.file_opened(size, Instant::now(), h));
        }
        FileRequest::Read { offset, len } => {
            let Some(f) = file.as_ref() else {
                let missing = Err(std::io::ErrorKind::NotFound.into());
                return ctx.with_host(|h| conn.file_read(missing, Instant::now(), h));
            };
            let (result, piece) = f.read_at(Vec::with_capacity(len), offset).await;
            let read = result.map(|n| &piece[..n]);
            ctx.with_host(|h| conn.file_read(read, Instant::now(), h));
        }
    }
}
