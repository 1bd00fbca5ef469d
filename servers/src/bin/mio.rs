//! # mio-server — an acceptor and N event-loop threads on mio
//!
//! The multi-reactor design of memcached (a dispatcher thread that accepts
//! and worker threads each with its own libevent base; nginx is different:
//! its worker processes each accept for themselves): the main thread blocks
//! in `accept` and deals connections
//! round-robin to `--workers` threads; each thread runs its own event loop
//! on a `mio::Poll` (epoll underneath, edge-triggered as mio always is) and
//! owns its connections for their whole life, so no lock is ever taken on
//! the request path.
//!
//! ```text
//!   acceptor: accept ─> send fd to loop (i++ % N) ─> Waker ─> accept …
//!   loop 1:   poll ─> new fds from the channel: register (edge-triggered)
//!                  ─> ready sockets: read until EAGAIN ─> write
//!   loop 2:   …                                 (each loop: one core)
//! ```
//!
//! **One keep-alive request costs** a `read`, a `read` that returns EAGAIN
//! (edge-triggered: the loop must drain the socket) and a `write`, plus a
//! share of one `epoll_wait` in the loop that owns the connection. Each new
//! connection also costs the hand-off: a channel send and an `eventfd`
//! write to wake the loop.
//!
//! **Trade-off.** Scales an event loop over cores without sharing state
//! between them. But the round-robin deal is blind: a loop that drew a few
//! heavy connections stays busy while others idle (no work stealing), and a
//! blocking handler still stalls every connection of its loop.
//!
//! **When it wins**: many connections on several cores, short handlers.
//! **Where it breaks**: a few connections doing very unequal work. Compare
//! with `epoll-server` (one loop) and `oneshot-server` (threads share one
//! poller and so share the load).
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin mio-server
//! -- --workers 2 --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{Reactor, ReadUntil};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// An acceptor thread dealing connections round-robin to N mio event loops.
#[derive(Debug, Parser)]
#[command(name = "mio-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait by sleeping in the loop, to show what one blocking call does to a reactor
    #[arg(long)]
    blocking_wait: bool,
}

/// The waker's token, above any slab index.
const WAKE: Token = Token(usize::MAX);

fn main() -> ExitCode {
    cli::main(run)
}

/// The acceptor's handle on one event loop.
struct LoopHandle {
    inbox: Sender<OwnedFd>,
    waker: Arc<Waker>,
}

fn run(args: Args) -> anyhow::Result<()> {
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        workers,
        ..
    } = Startup::begin(
        "mio",
        &args.common,
        Workers::FromFlag,
        ListenOptions::BLOCKING,
    )?;
    net::set_recv_timeout(&listener, blocking::TICK);
    let stop = Arc::new(AtomicBool::new(false));

    // Start the loops: each gets a channel for new connections and a waker.
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for index in 1..=workers as usize {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (inbox, rx) = mpsc::channel();
        handles.push(LoopHandle {
            inbox,
            waker: waker.clone(),
        });
        let host = ServerHost::for_thread(&shared, index);
        let reactor = Reactor::new(host, ReadUntil::WouldBlock, args.blocking_wait);
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            event_loop(poll, reactor, rx, stop)
        }));
    }
    cli::ready(&shown);

    // The acceptor: deal connections round-robin (the backlog too, at stop).
    let mut next = 0;
    blocking::accept_loop(&listener, |fd, _origin| {
        let handle = &handles[next % handles.len()];
        next += 1;
        if handle.inbox.send(fd).is_ok() {
            let _ = handle.waker.wake();
        }
    })?;
    // Stopping: tell every loop, then wait for them to drain.
    stop.store(true, Ordering::SeqCst);
    for h in &handles {
        let _ = h.waker.wake();
    }
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("mio-server: event loop: {e:#}");
        }
    }
    Ok(())
}

/// One event loop: its own poll, its own connections.
fn event_loop(
    mut poll: Poll,
    mut reactor: Reactor,
    inbox: Receiver<OwnedFd>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut events = Events::with_capacity(1024);
    loop {
        // 1. Sleep until something is ready, a new connection, or a deadline.
        let timeout = reactor.wait_ms(Instant::now()).map(Duration::from_millis);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            if event.token() == WAKE {
                // 2. New connections from the acceptor: register each for
                // both directions, once (mio is edge-triggered). Over
                // --max-conns the reactor refuses them (503 / OVERLOADED).
                for fd in inbox.try_iter() {
                    let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                    let registry = poll.registry();
                    let token = reactor.adopt(fd, now, &mut |token, fd: &OwnedFd| {
                        let raw = fd.as_raw_fd();
                        registry
                            .register(
                                &mut SourceFd(&raw),
                                Token(token),
                                Interest::READABLE | Interest::WRITABLE,
                            )
                            .ok()
                            .map(|()| 0)
                    });
                    // Data that arrived before registration is reported by
                    // epoll at registration, but a read now costs nothing extra.
                    if let Some(token) = token {
                        reactor.ready(token, true, now);
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    reactor.begin_stop(now);
                }
                continue;
            }
            // 3. A ready connection: read until EAGAIN, write.
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            reactor.ready(event.token().0, readable, now);
        }
        // 4. Deadlines; a stop in progress.
        reactor.expire();
        if reactor.stopping() && reactor.drain_step() {
            return Ok(());
        }
    }
}
