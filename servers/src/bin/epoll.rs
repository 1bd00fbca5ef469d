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
//! connection costs only its kernel socket and a small slot here (large
//! buffers are freed between requests; a response buffer of at most 1 KiB
//! stays, which spares a keep-alive request an allocation and a free). But nothing may block: a slow handler — a
//! blocking `/wait` (`--blocking-wait` shows it on purpose), a disk read
//! that misses the page cache, `/cpu` with a large `n` — stalls every
//! connection, and one thread uses one core.
//!
//! **When it wins**: many connections, short handlers: the C10K problem.
//! **Where it breaks**: CPU-heavy or blocking work. Compare with
//! `prefork-server` (blocking workers) and, later, with `mio-server`
//! (N such loops) and `uring-server` (completions instead of readiness).
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin epoll-server
//! -- --edge --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{AcceptEnd, Interest, Reactor, ReadUntil};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::ListenOptions;
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// One thread, non-blocking sockets, epoll(7) readiness (nginx's worker loop).
#[derive(Debug, Parser)]
#[command(name = "epoll-server", version, long_about = None)]
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

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        ..
    } = Startup::begin(
        "epoll",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    epoll.add(
        signals::stop_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, STOP),
    )?;
    let until = if args.edge {
        ReadUntil::WouldBlock
    } else {
        ReadUntil::Short
    };
    let reactor = Reactor::new(ServerHost::for_process(&shared), until, args.blocking_wait);
    let mut server = Server {
        epoll,
        listener: Some(listener),
        reactor,
        edge: args.edge,
        listening: true,
    };
    cli::ready(&shown);
    server.run()
}

struct Server {
    epoll: Epoll,
    listener: Option<OwnedFd>,
    reactor: Reactor,
    edge: bool,
    /// The listener is in the epoll set (it leaves it during an accept pause).
    listening: bool,
}

impl Server {
    fn run(&mut self) -> anyhow::Result<()> {
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            // 1. Sleep until something is ready or the next deadline.
            let timeout = match self.reactor.wait_ms(Instant::now()) {
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
            // 2. Handle what is ready. One clock read serves the whole batch.
            let now = Instant::now();
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(now),
                    STOP => self.begin_stop(now),
                    token => {
                        let flags = ev.events();
                        let readable = flags.intersects(
                            EpollFlags::EPOLLIN
                                | EpollFlags::EPOLLHUP
                                | EpollFlags::EPOLLERR
                                | EpollFlags::EPOLLRDHUP,
                        );
                        let interest = self.reactor.ready(token as usize, readable, now);
                        self.update(token as usize, interest);
                    }
                }
            }
            // 3. Deadlines that came due: parked /wait, slow heads, idle peers.
            let (epoll, edge) = (&self.epoll, self.edge);
            self.reactor.expire_at(now, |token, interest, r| {
                update(epoll, edge, r, token, interest)
            });
            // 4. Stopping: close connections as they become idle; leave when none is left.
            if self.reactor.stopping()
                && self
                    .reactor
                    .drain_step_with(|token, interest, r| update(epoll, edge, r, token, interest))
            {
                return Ok(());
            }
            // 5. A pause in accepting (out of descriptors) that ended.
            if !self.listening && !self.reactor.accept_paused(Instant::now()) {
                self.listening = true;
                if let Some(l) = &self.listener {
                    let _ = self
                        .epoll
                        .add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER));
                }
            }
        }
    }

    /// Accepts every pending connection (until EAGAIN) and registers each.
    /// Level-triggered: input interest only, output is added when a write
    /// does not finish. Edge-triggered: both directions, once, for good.
    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        let (epoll, edge) = (&self.epoll, self.edge);
        let end = self.reactor.accept(listener, now, |token, fd| {
            let flags = if edge {
                EpollFlags::EPOLLIN
                    | EpollFlags::EPOLLOUT
                    | EpollFlags::EPOLLRDHUP
                    | EpollFlags::EPOLLET
            } else {
                EpollFlags::EPOLLIN
            };
            epoll
                .add(fd, EpollEvent::new(flags, token as u64))
                .ok()
                .map(|()| flags.bits() as u32)
        });
        if end == AcceptEnd::Exhausted {
            // Out of descriptors: stop listening for the reactor's accept
            // pause rather than spin on a listener that stays readable.
            let _ = self.epoll.delete(listener);
            self.listening = false;
        }
    }

    /// SIGTERM/SIGINT: take what the backlog holds, stop listening, and let
    /// every connection finish what it has in flight.
    fn begin_stop(&mut self, now: Instant) {
        signals::drain_stop_fd();
        if self.reactor.stopping() {
            return;
        }
        self.accept(now);
        if let Some(l) = self.listener.take() {
            let _ = self.epoll.delete(&l);
        }
        self.reactor.begin_stop(now);
    }

    fn update(&mut self, token: usize, interest: Option<Interest>) {
        update(&self.epoll, self.edge, &mut self.reactor, token, interest);
    }
}

/// Level-triggered: tell epoll what the connection waits for now, with one
/// epoll_ctl only when that changed. Edge-triggered: nothing to do.
fn update(
    epoll: &Epoll,
    edge: bool,
    reactor: &mut Reactor,
    token: usize,
    interest: Option<Interest>,
) {
    let (Some(interest), false) = (interest, edge) else {
        return;
    };
    let Some(c) = reactor.conns.get_mut(token) else {
        return;
    };
    let mut want = EpollFlags::empty();
    if interest.read {
        want |= EpollFlags::EPOLLIN;
    }
    if interest.write {
        want |= EpollFlags::EPOLLOUT;
    }
    if want.bits() as u32 != c.registered {
        let mut ev = EpollEvent::new(want, token as u64);
        if epoll.modify(&c.fd, &mut ev).is_err() {
            reactor.close(token);
            return;
        }
        c.registered = want.bits() as u32;
    }
}
