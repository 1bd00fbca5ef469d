//! Base mode (SWOOLE_BASE): no reactor threads and no hop. The master
//! forks `--workers` processes and only supervises them (the runtime's
//! `Supervisor`, as prefork-server's master); each worker is its own
//! reactor, like an nginx worker: it accepts from the one listening socket
//! all workers share, drives its connections with epoll, and runs each
//! request right there, in its event loop.
//!
//! ```text
//!   listen socket (one, inherited by every worker; epoll EPOLLEXCLUSIVE)
//!        /            |            \
//!   worker 0       worker 1      worker N-1   each: epoll_wait → accept one
//!   (reactor +     (reactor +                 → read → run the request →
//!    handler)       handler)                    write, all in one process
//!   master: waitpid → fork a replacement
//! ```
//!
//! **The shared listener, not SO_REUSEPORT.** Each worker's epoll instance
//! watches the shared socket with `EPOLLEXCLUSIVE` (Linux 4.5), so a new
//! connection wakes one waiting worker (or a few), not all of them, and a
//! worker takes **one** connection per wake-up (nginx's `multi_accept off`)
//! so a burst spreads over the workers that are waiting instead of landing
//! on the first one awake. Only a worker asleep in `epoll_wait` counts as
//! woken, and the wake-up walks the listener's wait queue from the same
//! end each time: under a light load one worker takes every connection,
//! and a busy one (inside a handler) is passed over — the same balance
//! nginx's workers get without `accept_mutex`. SO_REUSEPORT (Swoole's `enable_reuse_port`)
//! would give each worker its own queue chosen by a hash of the 4-tuple: a
//! worker busy in a blocking handler would still be handed new
//! connections while others idle, and it does not work for `unix:`
//! addresses (prefork-server `--accept reuseport` shows that design).
//!
//! **The handler blocks its loop.** A request runs in the reactor that
//! read it, the way PHP code runs in a Swoole base-mode worker: a `/wait`
//! sleeps there and a `/cpu` computes there, and every other connection of
//! that worker waits meanwhile (process mode's reactors keep reading and
//! writing while its workers block). Connections whose worker is free are
//! not affected: the other workers take the new ones.
//!
//! **One request costs** a `read` and a `write` of the client socket and a
//! share of an `epoll_wait` in one process, as epoll-server's edge-triggered
//! loop: no socket pair, no second process, no context switch.

use std::fmt;
use std::os::fd::OwnedFd;
use std::time::Instant;

use iomodels_servers::cli;
use iomodels_servers::event::{Reactor, ReadUntil};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net::{self, Accepted};
use iomodels_servers::signals;
use iomodels_servers::supervisor::Supervisor;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::SockFlag;

/// Tokens above any slab index.
const LISTENER: u64 = u64::MAX;
const STOP: u64 = u64::MAX - 1;

/// A worker's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(usize);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// The master in base mode: fork the workers, say the server is ready,
/// supervise them until a stop.
pub fn run(shared: &Shared, listener: OwnedFd, workers: usize, shown: &str) -> anyhow::Result<()> {
    let mut supervisor = Supervisor::new()?;
    let body = |_: &Slot| match serve(&listener, shared) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("swoole-server: worker {}: {e:#}", std::process::id());
            1
        }
    };
    for w in 0..workers {
        supervisor.spawn(Slot(w), body)?;
    }
    cli::ready(shown);
    supervisor.run(body)
}

/// One worker: its own epoll loop over the shared listener and its
/// connections, until a stop and its connections are done.
fn serve(listener: &OwnedFd, shared: &Shared) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let watch_listener = |epoll: &Epoll| {
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        epoll.add(listener, EpollEvent::new(flags, LISTENER))
    };
    watch_listener(&epoll)?;
    epoll.add(
        signals::stop_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, STOP),
    )?;
    // The handler runs in this loop: a /wait sleeps in it (see above).
    let host = ServerHost::for_process(shared);
    let mut reactor = Reactor::new(host, ReadUntil::WouldBlock, true);
    let mut listening = true;
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        // 1. Sleep until something is ready or the next deadline.
        let timeout = match reactor.wait_ms(Instant::now()) {
            Some(ms) => EpollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(EpollTimeout::MAX),
            None => EpollTimeout::NONE,
        };
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => anyhow::bail!("epoll_wait: {e}"),
        };
        // 2. A connection to take, a stop, ready clients.
        let now = Instant::now();
        for ev in &events[..n] {
            match ev.data() {
                LISTENER if listening => {
                    if !accept(&epoll, listener, &mut reactor, now, 1) {
                        // Out of descriptors: stop watching for a pause.
                        let _ = epoll.delete(listener);
                        listening = false;
                    }
                }
                LISTENER => {}
                STOP => {
                    signals::drain_stop_fd();
                    if !reactor.stopping() {
                        // Take this worker's share of the backlog, then
                        // stop listening and let connections finish.
                        accept(&epoll, listener, &mut reactor, now, usize::MAX);
                        if listening {
                            let _ = epoll.delete(listener);
                        }
                        listening = false;
                        reactor.begin_stop(now);
                    }
                }
                token => {
                    reactor.ready(token as usize, true, now);
                }
            }
        }
        // 3. Deadlines: parked /wait answers, slow heads, idle peers.
        reactor.expire();
        // 4. Stopping: leave once every connection is done.
        if reactor.stopping() {
            if reactor.drain_step() {
                return Ok(());
            }
        } else if !listening && !reactor.accept_paused(Instant::now()) {
            // 5. A pause in accepting that ended.
            watch_listener(&epoll)?;
            listening = true;
        }
    }
}

/// Accepts up to `max` connections and registers each edge-triggered for
/// both directions, once. `false`: out of descriptors or memory (the
/// reactor's accept pause has begun).
fn accept(
    epoll: &Epoll,
    listener: &OwnedFd,
    reactor: &mut Reactor,
    now: Instant,
    max: usize,
) -> bool {
    let flags =
        EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    for _ in 0..max {
        match net::accept_next(listener, SockFlag::SOCK_NONBLOCK) {
            Ok(Accepted::Conn(fd)) => {
                let token = reactor.adopt(fd, now, &mut |token, fd: &OwnedFd| {
                    let ev = EpollEvent::new(flags, token as u64);
                    epoll.add(fd, ev).ok().map(|()| flags.bits() as u32)
                });
                if let Some(token) = token {
                    reactor.ready(token, true, now);
                }
            }
            Ok(Accepted::Nothing) => return true,
            Ok(Accepted::Exhausted) | Err(_) => {
                reactor.pause_accepting(now);
                return false;
            }
        }
    }
    true
}
