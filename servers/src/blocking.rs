//! The serve loop of the blocking models (iterative, fork, prefork, thread,
//! threadpool): one connection, blocking read and write, the worker sleeps
//! through `/wait`. The only wake-ups besides data are a once-a-second
//! receive timeout, so the worker can look at its deadlines and at the stop
//! flag (a signal that lands just before `read` starts would otherwise wait
//! for the next byte).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iomodels_workload::cgi::ProgramRequest;
use iomodels_workload::{Conn, Host, ProgramExit};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags, SockFlag};

use crate::host::{self, ServerHost, Shared};
use crate::net::{self, Accepted};
use crate::signals;

/// How often a blocked worker wakes to look at deadlines and the stop flag.
pub const TICK: Duration = Duration::from_secs(1);

/// When the stop was first seen by this process (the grace of connections
/// that arrived before it counts from here).
fn stopped_at() -> Instant {
    static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *AT.get_or_init(Instant::now)
}

/// How a connection came to this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Accepted while serving normally.
    Accepted,
    /// Taken from the listen backlog after a stop was asked: it gets one
    /// request (waiting up to [`TICK`] for it), then closes.
    Backlog,
    /// One request, then close: a process per request, CGI style.
    Single,
}

/// The host a blocking worker serves with: the workload's [`Host`], what
/// the server's workers share, and a hook for models that show what their
/// workers do.
pub trait ServeHost: Host {
    /// What every worker shares (protocol, timeouts, data dir).
    fn shared(&self) -> &Shared;
    /// The worker is about to block reading its connection (waiting for a
    /// request or the rest of one). A scoreboard marks "reading" here.
    fn reading(&mut self) {}
    /// Whether connections run a program per request (cgi-server):
    /// their `Conn` is put in program mode and requests come to
    /// [`ServeHost::run_program`].
    fn runs_programs(&self) -> bool {
        false
    }
    /// A connection in program mode (cgi-server) has a request for a
    /// program: run it, feeding its output to `conn` while
    /// `conn.program_running()`, and writing `conn`'s output to `fd`.
    /// Default: there is no program (502).
    fn run_program(&mut self, request: Box<ProgramRequest>, conn: &mut Conn, fd: BorrowedFd<'_>)
    where
        Self: Sized,
    {
        let _ = (request, fd);
        conn.program_exit(ProgramExit::Failed, Instant::now(), self);
    }
}

impl ServeHost for ServerHost {
    fn shared(&self) -> &Shared {
        ServerHost::shared(self)
    }
}

/// Serves `fd` to its end: requests are answered in order until the peer
/// closes, a timeout, an error, `Connection: close`, or a stop.
/// `buf` is the worker's read buffer.
pub fn serve<H: ServeHost>(fd: OwnedFd, host: &mut H, buf: &mut [u8], origin: Origin) {
    let start = Instant::now();
    let timeouts = host.shared().timeouts;
    let mut conn = host.shared().new_conn(start);
    // The file a /file request of this connection is reading.
    let mut file = None;
    if origin == Origin::Single {
        conn.single_request();
    }
    if host.runs_programs() {
        conn.run_programs();
    }
    net::set_recv_timeout(&fd, TICK);
    loop {
        // 1. Write everything there is to write. A peer that reads nothing
        // for a whole idle timeout is a stuck writer: the worker lets go.
        let mut progress = Instant::now();
        // (A connection that must close now, dropping its output, skips it.)
        while !conn.output().is_empty() && !conn.wants_close() {
            match socket::send(fd.as_raw_fd(), conn.output(), MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    progress = Instant::now();
                    conn.advance_output(n, progress, host);
                }
                Err(Errno::EINTR) => continue,
                Err(e) if net::would_block(e) => {
                    let left = (progress + timeouts.idle).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return host.on_write_timeout();
                    }
                    // Block until the socket is writable again (or the time
                    // is up: then a stuck writer, whatever room the kernel
                    // might still find for a last few bytes).
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                    let ms = left.as_millis().clamp(1, 60_000) as u16;
                    if let Ok(0) = poll(&mut fds, PollTimeout::from(ms)) {
                        if left.as_millis() < 60_000 {
                            return host.on_write_timeout();
                        }
                    }
                }
                Err(_) => return,
            }
        }
        if conn.wants_close() {
            return;
        }
        // 2. A parked /wait: the worker sleeps, which is this model's lesson.
        // A parked /file: the worker reads it, blocking too.
        if let Some(until) = conn.parked_until() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), host);
            continue;
        }
        if let Some(request) = conn.take_file_request() {
            let dir = host.shared().data_dir.clone();
            host::serve_file(&dir, request, &mut conn, &mut file, host, Instant::now());
            continue;
        }
        // A request for a program (cgi-server): the host runs it.
        if let Some(request) = conn.take_program() {
            host.run_program(request, &mut conn, fd.as_fd());
            continue;
        }
        // 3. A stop: answer what already arrived, then close. A connection
        // that has not sent its first request yet (taken from the backlog,
        // or accepted just before the stop) gets the stop grace for it.
        if signals::stop_requested()
            && signals::may_close(conn.requests(), start.max(stopped_at()), Instant::now())
        {
            if conn.wants_read() {
                if let Ok(n) = socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                    let now = Instant::now();
                    match n {
                        0 => conn.handle_eof(now, host),
                        n => conn.handle_input(&buf[..n], now, host),
                    }
                }
            }
            conn.drain();
            if conn.wants_close() {
                return;
            }
        }
        // 4. A deadline (slow head, idle keep-alive) that has passed.
        let now = Instant::now();
        if conn.poll_timeout().is_some_and(|d| now >= d) {
            conn.handle_timeout(now, host);
            continue;
        }
        // 5. Block in read until data, EOF, the tick, or a signal.
        host.reading();
        match nix::unistd::read(&fd, buf) {
            Ok(0) => conn.handle_eof(Instant::now(), host),
            Ok(n) => conn.handle_input(&buf[..n], Instant::now(), host),
            Err(e) if net::would_block(e) || e == Errno::EINTR => {}
            Err(_) => return,
        }
    }
}

/// The accept loop of a blocking model: block in accept(2) (waking each
/// [`TICK`] to look at the stop flag) and hand every connection to
/// `on_conn`. After a stop it takes what is left in the listen backlog
/// (those connections were already accepted by the kernel; dropping them
/// would reset their requests) and hands them over as [`Origin::Backlog`].
/// The listener must have a [`TICK`] receive timeout (`net::set_recv_timeout`).
pub fn accept_loop(
    listener: &OwnedFd,
    mut on_conn: impl FnMut(OwnedFd, Origin),
) -> anyhow::Result<()> {
    accept_until(
        listener,
        || false,
        |fd, origin| {
            on_conn(fd, origin);
        },
    )
}

/// A thread per connection (thread-server, and cgi-server's front end):
/// each accepted connection is admitted under `--max-conns` (refused over
/// it), served to its end by [`serve`] on a new thread with the host that
/// `host(&shared, n)` makes for the n-th connection, and the thread exits
/// with it. On a stop, waits until every thread has finished what it had
/// in flight.
pub fn thread_per_connection<H: ServeHost>(
    listener: &OwnedFd,
    shared: &Shared,
    host: impl Fn(&Shared, usize) -> H + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let host = Arc::new(host);
    let live = Arc::new(AtomicUsize::new(0));
    let mut next = 0usize;
    accept_loop(listener, |fd, origin| {
        let Some(admitted) = shared.admit() else {
            shared.refuse(fd);
            return;
        };
        live.fetch_add(1, Ordering::SeqCst);
        next += 1;
        let (shared, live_now, host, n) = (shared.clone(), live.clone(), host.clone(), next);
        let spawned = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut host = host(&shared, n);
                let mut buf = vec![0u8; 16 * 1024];
                shared.stats.opened();
                net::prepare_accepted(&fd);
                serve(fd, &mut host, &mut buf, origin);
                shared.stats.closed();
                live_now.fetch_sub(1, Ordering::SeqCst);
                drop(admitted);
            });
        if let Err(e) = spawned {
            // Out of threads: the connection (moved into the failed closure) is closed.
            eprintln!("{}: cannot start a thread: {e}", net::program());
            live.fetch_sub(1, Ordering::SeqCst);
        }
    })?;
    while live.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// [`accept_loop`] for workers that may also retire (a process manager
/// recycling or shrinking its pool): once `retire()` is true the loop
/// returns after the connection in hand, *without* taking the backlog,
/// which the pool's other workers go on serving.
pub fn accept_until(
    listener: &OwnedFd,
    retire: impl FnMut() -> bool,
    on_conn: impl FnMut(OwnedFd, Origin),
) -> anyhow::Result<()> {
    accept_with(
        listener,
        retire,
        || net::accept_next(listener, SockFlag::empty()),
        on_conn,
    )
}

/// [`accept_until`] with the accept itself given: `accept()` waits for and
/// takes one connection of `listener` in the worker's own way (under a
/// lock, after an epoll wake-up, …) through [`net::accept_next`], the one
/// accept-error ladder. The backlog after a stop is taken with plain accepts.
pub fn accept_with(
    listener: &OwnedFd,
    mut retire: impl FnMut() -> bool,
    mut accept: impl FnMut() -> anyhow::Result<Accepted>,
    mut on_conn: impl FnMut(OwnedFd, Origin),
) -> anyhow::Result<()> {
    while !signals::stop_requested() {
        if retire() {
            return Ok(());
        }
        match accept()? {
            Accepted::Conn(fd) => on_conn(fd, Origin::Accepted),
            // The tick (SO_RCVTIMEO) or a signal: look at the stop flag.
            Accepted::Nothing => {}
            Accepted::Exhausted => std::thread::sleep(net::ACCEPT_PAUSE),
        }
    }
    let _ = fcntl(listener.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    while let Ok(fd) = net::accept(listener, SockFlag::empty()) {
        on_conn(fd, Origin::Backlog);
    }
    Ok(())
}
