//! # oneshot-server — N threads share one poller, oneshot registrations
//!
//! The EPOLLONESHOT pattern: every socket is registered *oneshot* with one
//! shared `polling::Poller` (epoll underneath), so the kernel reports a
//! ready socket once and then disarms it: exactly one thread owns a ready
//! connection until it re-arms it with what it waits for next. Any thread
//! can serve any connection, so the load spreads by itself.
//!
//! `polling` lets one thread at a time wait in a poller (a second waiter
//! would return at once), so the threads take turns in the leader/followers
//! pattern: the *leader* waits in the poller; when events come it hands
//! leadership on to a follower (who then waits for more) and serves the
//! connections it got — disarmed, so nobody else touches them meanwhile.
//!
//! ```text
//!   thread A: [leader] wait ─> 3 events ─> hand on ─> serve c1 c4 c9 ─> re-arm each
//!   thread B:                   [leader] wait ─> 1 event ─> hand on ─> serve c2 ─> …
//!   thread C:                                   [leader] wait …
//! ```
//!
//! **One keep-alive request costs** a `read`, a `write` and an
//! `epoll_ctl(MOD)` to re-arm (oneshot: the price of handing connections
//! between threads safely), plus a share of one `epoll_wait` and the
//! leader hand-off (a futex when a follower is waiting).
//!
//! **Trade-off.** Connections are not pinned to a thread: a thread stuck in
//! a slow request leaves the others serving everyone else. But every
//! request pays the re-arm, connections and deadlines live behind locks,
//! and a connection's data may be touched by a different core each time
//! (cache misses).
//!
//! **When it wins**: unequal requests over several cores. **Where it
//! breaks**: tiny requests, where the extra `epoll_ctl` and the locks
//! dominate. Compare with `mio-server` (connections pinned to a loop).
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin oneshot-server
//! -- --workers 2 --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{Connection, Interest, ReadUntil};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net::{self, Accepted, ListenOptions};
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::timers::Timers;
use nix::sys::socket::SockFlag;
use polling::{Event, Events, Poller};
use slab::Slab;

/// N threads sharing one polling::Poller with oneshot registrations.
#[derive(Debug, Parser)]
#[command(name = "oneshot-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait by sleeping in the serving thread, to show what one blocking call does
    #[arg(long)]
    blocking_wait: bool,
}

/// Keys above any slab index (`usize::MAX` is polling's own).
const LISTENER: usize = usize::MAX - 1;
const STOP: usize = usize::MAX - 2;

fn main() -> ExitCode {
    cli::main(run)
}

/// A connection, owned by whichever thread the poller handed it to.
type ConnCell = Arc<Mutex<Connection>>;

/// What every thread shares.
struct State {
    poller: Poller,
    /// Only the leader waits in the poller.
    leader: Mutex<()>,
    conns: Mutex<Slab<ConnCell>>,
    timers: Mutex<Timers>,
    listener: Mutex<Option<OwnedFd>>,
    stopping_since: Mutex<Option<Instant>>,
    shared: Shared,
    blocking_wait: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding a lock leaves the data as usable
    // as before (every update is a single step): carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        "oneshot",
        &args.common,
        Workers::FromFlag,
        ListenOptions::NONBLOCKING,
    )?;
    let poller = Poller::new()?;
    // SAFETY: `add` needs the source deleted before it is closed: the
    // listener is deleted at stop before it is dropped, and the stop pipe
    // lives as long as the process.
    unsafe {
        poller.add(&listener, Event::readable(LISTENER))?;
        poller.add(&signals::stop_fd(), Event::readable(STOP))?;
    }
    let state = Arc::new(State {
        poller,
        leader: Mutex::new(()),
        conns: Mutex::new(Slab::new()),
        timers: Mutex::new(Timers::new()),
        listener: Mutex::new(Some(listener)),
        stopping_since: Mutex::new(None),
        shared,
        blocking_wait: args.blocking_wait,
    });
    let threads: Vec<_> = (1..=workers as usize)
        .map(|index| {
            let state = state.clone();
            std::thread::spawn(move || worker(&state, index))
        })
        .collect();
    cli::ready(&shown);
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("oneshot-server: worker: {e:#}");
        }
    }
    Ok(())
}

fn worker(state: &State, index: usize) -> anyhow::Result<()> {
    let mut host = ServerHost::for_thread(&state.shared, index);
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::new();
    loop {
        // 1. Become the leader, wait for events, hand leadership on.
        {
            let _leader = lock(&state.leader);
            if state.finished() {
                // Let the next thread see it too.
                let _ = state.poller.notify();
                return Ok(());
            }
            events.clear();
            state.poller.wait(&mut events, state.wait_timeout())?;
        }
        // 2. Serve what we got: each of these connections is ours (the
        // poller disarmed it) until we re-arm it.
        let now = Instant::now();
        for ev in events.iter() {
            match ev.key {
                LISTENER => state.accept(now, &host),
                STOP => state.begin_stop(now, &host),
                key => state.serve(key, ev.readable, now, &mut host, &mut buf, |_, _| {}),
            }
        }
        // 3. Deadlines that came due; a stop in progress.
        state.expire(&mut host, &mut buf);
        if state.stopping_since().is_some() {
            state.drain_step(&mut host, &mut buf);
        }
    }
}

impl State {
    fn stopping_since(&self) -> Option<Instant> {
        *lock(&self.stopping_since)
    }

    fn finished(&self) -> bool {
        self.stopping_since().is_some() && lock(&self.conns).is_empty()
    }

    /// The leader sleeps until the next deadline (at most 100 ms while stopping).
    fn wait_timeout(&self) -> Option<Duration> {
        let ms = lock(&self.timers).wait_ms(Instant::now());
        let ms = match self.stopping_since() {
            Some(_) => Some(ms.map_or(100, |ms| ms.min(100))),
            None => ms,
        };
        ms.map(Duration::from_millis)
    }

    /// Accepts until EAGAIN, registers each connection oneshot, re-arms the listener.
    fn accept(&self, now: Instant, host: &ServerHost) {
        let guard = lock(&self.listener);
        let Some(listener) = guard.as_ref() else {
            return;
        };
        loop {
            match net::accept_next(listener, SockFlag::SOCK_NONBLOCK) {
                Ok(Accepted::Conn(fd)) => self.adopt(fd, now, host),
                Ok(Accepted::Nothing) => break,
                // Out of descriptors (or a broken listener, logged): this
                // thread pauses accepting; the others go on serving.
                Ok(Accepted::Exhausted) | Err(_) => {
                    std::thread::sleep(net::ACCEPT_PAUSE);
                    break;
                }
            }
        }
        let _ = self.poller.modify(listener, Event::readable(LISTENER));
    }

    fn adopt(&self, fd: OwnedFd, now: Instant, host: &ServerHost) {
        let Some(admitted) = self.shared.admit() else {
            return self.shared.refuse(fd);
        };
        let mut conns = lock(&self.conns);
        net::prepare_accepted(&fd);
        let entry = conns.vacant_entry();
        let key = entry.key();
        let mut c = Connection::new(fd, host, admitted, now);
        // SAFETY: `add` needs the source deleted before it is closed: every
        // path that drops a connection deletes it from the poller first (`close`).
        let added = unsafe { self.poller.add(&c.fd, Event::readable(key)) };
        if added.is_err() {
            return;
        }
        host.stats().opened();
        let deadline = c.conn.poll_timeout();
        lock(&self.timers).schedule(&mut c.timer, key, deadline);
        entry.insert(Arc::new(Mutex::new(c)));
    }

    /// Pumps connection `key` and re-arms it (or closes it). `before` runs
    /// on the locked connection first (a timeout, a drain).
    fn serve(
        &self,
        key: usize,
        readable: bool,
        now: Instant,
        host: &mut ServerHost,
        buf: &mut [u8],
        before: impl FnOnce(&mut Connection, &mut ServerHost),
    ) {
        let Some(conn) = lock(&self.conns).get(key).cloned() else {
            return;
        };
        let mut c = lock(&conn);
        before(&mut c, host);
        c.readable |= readable;
        match c.pump(now, host, buf, ReadUntil::Short, self.blocking_wait) {
            Some(interest) => {
                c.interest = interest;
                let Interest { read, write } = interest;
                // Re-arm: from here another thread may get this connection.
                if self
                    .poller
                    .modify(&c.fd, Event::new(key, read, write))
                    .is_err()
                {
                    return self.close(key, &c, host);
                }
                let deadline = c.conn.poll_timeout();
                let mut timers = lock(&self.timers);
                let before = timers.wait_ms(now);
                timers.schedule(&mut c.timer, key, deadline);
                let after = timers.wait_ms(now);
                // A deadline earlier than the one the leader sleeps toward: wake it.
                let earlier = match (before, after) {
                    (None, Some(_)) => true,
                    (Some(b), Some(a)) => a < b,
                    _ => false,
                };
                if earlier {
                    let _ = self.poller.notify();
                }
            }
            None => self.close(key, &c, host),
        }
    }

    fn close(&self, key: usize, c: &Connection, host: &ServerHost) {
        let _ = self.poller.delete(&c.fd);
        lock(&self.conns).try_remove(key);
        host.stats().closed();
    }

    /// Fires due deadlines; stale heap entries are skipped.
    fn expire(&self, host: &mut ServerHost, buf: &mut [u8]) {
        let now = Instant::now();
        let due: Vec<(Instant, usize)> = {
            let mut timers = lock(&self.timers);
            std::iter::from_fn(|| timers.pop_due(now)).collect()
        };
        for (when, key) in due {
            self.serve(key, false, now, host, buf, |c, host| {
                if c.timer == Some(when) {
                    c.timer = None;
                    c.conn.handle_timeout(now, host);
                }
            });
        }
    }

    /// SIGTERM/SIGINT: take the backlog, stop listening, read every socket once more.
    fn begin_stop(&self, now: Instant, host: &ServerHost) {
        signals::drain_stop_fd();
        let mut since = lock(&self.stopping_since);
        if since.is_some() {
            return;
        }
        *since = Some(now);
        drop(since);
        if let Some(l) = lock(&self.listener).take() {
            while let Ok(Accepted::Conn(fd)) = net::accept_next(&l, SockFlag::SOCK_NONBLOCK) {
                self.adopt(fd, now, host);
            }
            let _ = self.poller.delete(&l);
        }
        for (_, c) in lock(&self.conns).iter() {
            if let Ok(mut c) = c.try_lock() {
                c.readable = true;
            }
        }
        let _ = self.poller.notify();
    }

    /// While stopping: connections close once they have answered (or their grace ran out).
    fn drain_step(&self, host: &mut ServerHost, buf: &mut [u8]) {
        let Some(since) = self.stopping_since() else {
            return;
        };
        let now = Instant::now();
        let keys: Vec<usize> = lock(&self.conns).iter().map(|(k, _)| k).collect();
        for key in keys {
            self.serve(key, false, now, host, buf, |c, _| {
                if signals::may_close(c.conn.requests(), since, now) {
                    c.conn.drain();
                }
            });
        }
    }
}
