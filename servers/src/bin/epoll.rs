//! # epoll-server — one thread, epoll(7), non-blocking sockets
//!
//! The readiness model of nginx's worker, redis and libevent: every socket
//! is non-blocking and registered with one epoll instance; the thread
//! sleeps in `epoll_wait` until some of them are ready, does the I/O that
//! will not block, and goes back to sleep. Deadlines (the `/wait` route,
//! slow heads, idle keep-alive) come from a timer heap whose earliest entry
//! is `epoll_wait`'s timeout.
//!
//! ```text
//!   epoll_wait(timeout = next deadline) ──> ready list
//!     listener ready  -> accept4 until EAGAIN, register each socket
//!     self-pipe ready -> SIGTERM: stop accepting, drain
//!     socket ready    -> read -> workload state machine -> write
//!   due timers        -> finish parked /wait, time out slow or idle peers
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write`, plus a share
//! of one `epoll_wait` (with 50 busy connections one wait returns many
//! events). Level-triggered (the default) needs `epoll_ctl` only when a
//! connection's interest changes (output that did not fit, a parked
//! `/wait`); `--edge` registers every socket once for both directions and
//! never modifies it, but must then read until `EAGAIN` — one more `read`
//! per wake-up — because the kernel will not report the same data twice.
//!
//! **Trade-off.** One thread serves any number of connections, and an idle
//! connection costs only its kernel socket and a small slot here (buffers
//! are freed between requests). But nothing may block: a slow handler — a
//! blocking `/wait` (`--blocking-wait` shows it on purpose), a disk read
//! that misses the page cache, `/cpu` with a large `n` — stalls every
//! connection, and one thread uses one core.
//!
//! **When it wins**: many connections, short handlers: the C10K problem.
//! **Where it breaks**: CPU-heavy or blocking work. Compare with
//! `prefork-server` (blocking workers) and, later, with `mio-server`
//! (N such loops) and `uring-server` (completions instead of readiness).

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{DataDir, ServerHost, Shared};
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::signals;
use iomodels_servers::timers::Timers;
use iomodels_workload::{Conn, Host};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::SockFlag;
use slab::Slab;

/// One thread, non-blocking sockets, epoll(7) readiness (nginx's worker loop).
#[derive(Debug, Parser)]
#[command(name = "epoll-server", version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Edge-triggered (EPOLLET): register each socket once, read until EAGAIN
    #[arg(long)]
    edge: bool,

    /// Serve /wait by sleeping in the event loop, to show what one blocking call does to a reactor
    #[arg(long)]
    blocking_wait: bool,
}

/// Tokens above any slab index.
const LISTENER: u64 = u64::MAX;
const STOP: u64 = u64::MAX - 1;
/// A connection taken from the backlog after a stop gets this long to send
/// its request.
const STOP_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    signals::install()?;
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let shared = Shared::new("epoll", &args.common, &data, 1)?;
    let opts = ListenOptions {
        nonblocking: true,
        ..ListenOptions::default()
    };
    let (listener, shown) = net::listen(&args.common.listen, args.common.backlog, opts)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let edge = if args.edge {
        EpollFlags::EPOLLET
    } else {
        EpollFlags::empty()
    };
    epoll.add(
        &listener,
        EpollEvent::new(EpollFlags::EPOLLIN | edge, LISTENER),
    )?;
    epoll.add(
        signals::stop_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, STOP),
    )?;
    let mut server = Server {
        refusal: net::refusal(shared.protocol, &shared.server_name()),
        host: ServerHost::for_process(&shared),
        epoll,
        listener: Some(listener),
        conns: Slab::new(),
        timers: Timers::new(),
        buf: vec![0; 64 * 1024],
        edge: args.edge,
        blocking_wait: args.blocking_wait,
        max_conns: shared.max_conns as usize,
        stopping_since: None,
        accept_paused_until: None,
    };
    cli::ready(&shown);
    server.run()
}

/// One connection: its socket, its protocol state, and what epoll knows.
struct Slot {
    fd: OwnedFd,
    conn: Conn,
    /// Interest registered with epoll (level-triggered mode).
    interest: EpollFlags,
    /// The deadline this slot has in the timer heap.
    timer: Option<Instant>,
    /// epoll said readable and we have not seen EAGAIN since.
    readable: bool,
}

struct Server {
    host: ServerHost,
    epoll: Epoll,
    listener: Option<OwnedFd>,
    conns: Slab<Slot>,
    timers: Timers,
    /// One read buffer for every connection: data is handed to the
    /// connection's state machine at once, which keeps only leftovers.
    buf: Vec<u8>,
    edge: bool,
    blocking_wait: bool,
    max_conns: usize,
    refusal: Vec<u8>,
    stopping_since: Option<Instant>,
    accept_paused_until: Option<Instant>,
}

impl Server {
    fn run(&mut self) -> anyhow::Result<()> {
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            // Sleep until something is ready or the next deadline.
            let mut wait_ms = self.timers.wait_ms(Instant::now());
            if self.stopping_since.is_some() || self.accept_paused_until.is_some() {
                wait_ms = Some(wait_ms.map_or(100, |ms| ms.min(100)));
            }
            let timeout = match wait_ms {
                Some(ms) => {
                    EpollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(EpollTimeout::MAX)
                }
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(anyhow::anyhow!("epoll_wait: {e}")),
            };
            let now = Instant::now();
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(now),
                    STOP => self.begin_stop(now),
                    token => {
                        let token = token as usize;
                        // An event for a connection closed earlier in this batch: ignore.
                        let Some(slot) = self.conns.get_mut(token) else {
                            continue;
                        };
                        let flags = ev.events();
                        if flags.intersects(
                            EpollFlags::EPOLLIN
                                | EpollFlags::EPOLLHUP
                                | EpollFlags::EPOLLERR
                                | EpollFlags::EPOLLRDHUP,
                        ) {
                            slot.readable = true;
                        }
                        self.drive(token, now);
                    }
                }
            }
            self.run_timers();
            if let Some(since) = self.stopping_since {
                self.drain_all(since);
                if self.conns.is_empty() {
                    return Ok(());
                }
            }
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                if let Some(l) = &self.listener {
                    let _ = self
                        .epoll
                        .add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER));
                }
            }
        }
    }

    /// Accepts every pending connection (until EAGAIN: with EPOLLET the
    /// listener will not be reported again for connections already queued).
    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let fd = match net::accept(listener, SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => fd,
                Err(e) if net::would_block(e) => return,
                Err(Errno::EINTR) => continue,
                Err(e) if net::accept_error_is_transient(e) => continue,
                Err(e) => {
                    // Out of descriptors: stop listening for a moment rather
                    // than spin on a listener that stays readable.
                    eprintln!("epoll-server: accept: {e}; pausing accepts for 100 ms");
                    let _ = self.epoll.delete(listener);
                    self.accept_paused_until = Some(now + Duration::from_millis(100));
                    return;
                }
            };
            if self.conns.len() >= self.max_conns {
                self.host.stats().refused();
                net::refuse(fd, &self.refusal);
                continue;
            }
            net::set_nodelay(&fd);
            let entry = self.conns.vacant_entry();
            let token = entry.key();
            // Level-triggered: ask for input only; output interest is added
            // when a write does not finish. Edge-triggered: both, once.
            let interest = if self.edge {
                EpollFlags::EPOLLIN
                    | EpollFlags::EPOLLOUT
                    | EpollFlags::EPOLLRDHUP
                    | EpollFlags::EPOLLET
            } else {
                EpollFlags::EPOLLIN
            };
            if self
                .epoll
                .add(&fd, EpollEvent::new(interest, token as u64))
                .is_err()
            {
                continue;
            }
            self.host.stats().opened();
            let conn = Conn::new(self.host.shared().protocol, now);
            let mut slot = Slot {
                fd,
                conn,
                interest,
                timer: None,
                readable: false,
            };
            self.timers.schedule(
                &mut slot.timer,
                token,
                slot.conn.poll_timeout(self.host.timeouts()),
            );
            entry.insert(slot);
        }
    }

    /// Does all the I/O a connection can do without blocking, then closes
    /// it or updates its epoll interest and its timer.
    fn drive(&mut self, token: usize, now: Instant) {
        let Some(slot) = self.conns.get_mut(token) else {
            return;
        };
        loop {
            let mut progress = false;
            // Read (one chunk per round: the responses go out before more is read).
            if slot.readable && slot.conn.wants_read() {
                match nix::unistd::read(&slot.fd, &mut self.buf) {
                    Ok(0) => {
                        slot.readable = false;
                        slot.conn.handle_eof(now, &mut self.host);
                    }
                    Ok(n) => {
                        // Level-triggered: a short read emptied the socket;
                        // epoll_wait reports any more. Edge-triggered: keep
                        // reading until EAGAIN.
                        if !self.edge && n < self.buf.len() {
                            slot.readable = false;
                        }
                        slot.conn.handle_input(&self.buf[..n], now, &mut self.host);
                    }
                    Err(e) if net::would_block(e) => slot.readable = false,
                    Err(Errno::EINTR) => {}
                    Err(_) => return self.close(token),
                }
                progress = true;
            }
            // Write whatever the state machine produced.
            while !slot.conn.output().is_empty() {
                match nix::unistd::write(&slot.fd, slot.conn.output()) {
                    Ok(n) => {
                        slot.conn.advance_output(n, now, &mut self.host);
                        progress = true;
                    }
                    Err(e) if net::would_block(e) => break,
                    Err(Errno::EINTR) => {}
                    Err(_) => return self.close(token),
                }
            }
            // --blocking-wait: the lesson of what a blocking call does here.
            if self.blocking_wait {
                if let Some(until) = slot.conn.parked_until() {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    slot.conn.handle_timeout(Instant::now(), &mut self.host);
                    progress = true;
                }
            }
            if slot.conn.wants_close() {
                return self.close(token);
            }
            if !progress {
                break;
            }
        }
        // Level-triggered: tell epoll what we wait for now.
        if !self.edge {
            let mut want = EpollFlags::empty();
            if slot.conn.wants_read() {
                want |= EpollFlags::EPOLLIN;
            }
            if !slot.conn.output().is_empty() {
                want |= EpollFlags::EPOLLOUT;
            }
            if want != slot.interest {
                let mut ev = EpollEvent::new(want, token as u64);
                if self.epoll.modify(&slot.fd, &mut ev).is_err() {
                    return self.close(token);
                }
                slot.interest = want;
            }
        }
        let deadline = slot.conn.poll_timeout(self.host.timeouts());
        self.timers.schedule(&mut slot.timer, token, deadline);
    }

    /// Fires due deadlines: a parked /wait is answered, a slow or idle peer
    /// is timed out. Stale heap entries (the deadline moved) are skipped.
    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(slot) = self.conns.get_mut(token) else {
                continue;
            };
            if slot.timer != Some(when) {
                continue;
            }
            slot.timer = None;
            slot.conn.handle_timeout(now, &mut self.host);
            self.drive(token, now);
        }
    }

    /// SIGTERM/SIGINT: take what the backlog holds, stop listening, and let
    /// every connection finish what it has in flight.
    fn begin_stop(&mut self, now: Instant) {
        signals::drain_stop_fd();
        if self.stopping_since.is_some() {
            return;
        }
        self.accept(now);
        if let Some(l) = self.listener.take() {
            let _ = self.epoll.delete(&l);
        }
        self.stopping_since = Some(now);
        // Data may already sit in sockets epoll has not reported yet.
        for (_, slot) in self.conns.iter_mut() {
            slot.readable = true;
        }
    }

    /// While stopping: connections that had a request (or their grace)
    /// close once idle.
    fn drain_all(&mut self, since: Instant) {
        let now = Instant::now();
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let slot = &mut self.conns[token];
            if slot.conn.requests() > 0 || now >= since + STOP_GRACE {
                slot.conn.drain();
            }
            self.drive(token, now);
        }
    }

    fn close(&mut self, token: usize) {
        // Closing the descriptor removes it from the epoll set.
        drop(self.conns.remove(token));
        self.host.stats().closed();
    }
}
