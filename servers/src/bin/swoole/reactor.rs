//! A reactor thread: its connections on the runtime's `event::Reactor`
//! (edge-triggered epoll, as in mio-server), each connection's `Conn` in
//! relay mode, and one socket pair per worker to hand whole requests over.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use iomodels_servers::event::{Reactor, ReadUntil};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::scoreboard::{Scoreboard, State};
use iomodels_servers::{ipc, net, signals};
use iomodels_workload::routes::{self, Route};
use iomodels_workload::{Relay, WINDOW};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::{Dispatch, LAST, MORE, OFFLOAD};

/// What a reactor thread is given.
pub struct Cfg {
    /// What the server's workers share.
    pub shared: Shared,
    /// Its X-Worker thread index.
    pub index: usize,
    /// The workers' scoreboard (`--dispatch idle` reads it).
    pub board: Scoreboard,
    /// How to pick a worker.
    pub dispatch: Dispatch,
    /// Task workers exist: `/cpu?…&task=1` goes to one.
    pub offload: bool,
    /// What kind of socket pairs connect it with the workers.
    pub kind: ipc::Kind,
}

/// Tokens above any slab index.
const FEED: u64 = u64::MAX;
const PAIR_BASE: u64 = 1 << 40;
/// The loop looks at the stop flag at least this often.
const TICK: Duration = Duration::from_millis(100);

/// This reactor's socket pair with one worker.
struct Pair {
    fd: OwnedFd,
    out: ipc::Outbox,
    input: Vec<u8>,
    /// Requests this reactor has at this worker.
    queued: usize,
    /// A piece waits for this connection's window: the pair is not read.
    blocked_on: Option<usize>,
}

/// One reactor: its connections, its pairs with the workers, its feed.
pub struct Front {
    cfg: Cfg,
    epoll: Epoll,
    reactor: Reactor,
    pairs: Vec<Pair>,
    /// Where the acceptor sends descriptors; `None` once it closed it.
    feed: Option<OwnedFd>,
    feed_buf: Vec<u8>,
    /// Each slab slot's generation, so a late answer for a closed
    /// connection never reaches the next one in its slot.
    gens: Vec<u32>,
    next_gen: u32,
    next_worker: usize,
}

/// Sets a reactor up — its epoll instance, the feed and the pairs in it —
/// in the master's main thread, before the acceptor takes a connection: a
/// reactor that made its epoll instance later could find every descriptor
/// taken (EMFILE) by a flood of connections. Then [`run`] on its thread.
pub fn new(cfg: Cfg, pairs: Vec<OwnedFd>, feed: OwnedFd) -> anyhow::Result<Front> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
        .map_err(|e| anyhow::anyhow!("epoll_create: {e}"))?;
    epoll.add(&feed, EpollEvent::new(EpollFlags::EPOLLIN, FEED))?;
    let mut ps = Vec::new();
    for (w, fd) in pairs.into_iter().enumerate() {
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let ev = EpollEvent::new(EpollFlags::EPOLLIN, PAIR_BASE + w as u64);
        epoll
            .add(&fd, ev)
            .map_err(|e| anyhow::anyhow!("epoll_ctl: {e}"))?;
        ps.push(Pair {
            fd,
            out: ipc::Outbox::new(cfg.kind),
            input: Vec::new(),
            queued: 0,
            blocked_on: None,
        });
    }
    let host = ServerHost::for_thread(&cfg.shared, cfg.index);
    Ok(Front {
        reactor: Reactor::new(host, ReadUntil::WouldBlock, false),
        cfg,
        epoll,
        pairs: ps,
        feed: Some(feed),
        feed_buf: Vec::new(),
        gens: Vec::new(),
        next_gen: 0,
        next_worker: 0,
    })
}

/// The reactor thread's body: until a stop, once the acceptor is done and
/// every connection closed.
pub fn run(mut front: Front) -> anyhow::Result<()> {
    front.serve()
}

impl Front {
    fn serve(&mut self) -> anyhow::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut touched = Vec::new();
        loop {
            // 1. Sleep until something is ready, the next deadline, or a tick.
            let ms = self.reactor.wait_ms(Instant::now()).unwrap_or(u64::MAX);
            let timeout = EpollTimeout::from(ms.min(TICK.as_millis() as u64) as u16);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => anyhow::bail!("epoll_wait: {e}"),
            };
            // 2. New connections, answers from workers, ready clients.
            let now = Instant::now();
            for ev in &events[..n] {
                match ev.data() {
                    FEED => self.take_connections(now)?,
                    t if t >= PAIR_BASE => self.pair_ready((t - PAIR_BASE) as usize, now)?,
                    t => {
                        self.reactor.ready(t as usize, true, now);
                        self.after(t as usize);
                    }
                }
            }
            // 3. Deadlines (slow heads, idle peers), and a stop in progress.
            self.reactor.expire_with(|t, _, _| touched.push(t));
            if signals::stop_requested() && !self.reactor.stopping() {
                self.reactor.begin_stop(Instant::now());
            }
            let mut done = false;
            if self.reactor.stopping() {
                done = self.reactor.drain_step_with(|t, _, _| touched.push(t));
            }
            for t in touched.drain(..) {
                self.after(t);
            }
            if done && self.feed.is_none() {
                return Ok(());
            }
        }
    }

    /// Adopts descriptors the acceptor sent; EOF: the acceptor is done.
    fn take_connections(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(feed) = &self.feed else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        let n = match nix::unistd::read(feed, &mut buf) {
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(()),
            Err(e) => anyhow::bail!("read from the acceptor: {e}"),
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
        for raw in raws {
            // SAFETY: the acceptor gave up this descriptor (into_raw_fd) and
            // sent its number to this reactor only; we own it from here.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let epoll = &self.epoll;
            // Both directions, once, for good (edge-triggered).
            let flags = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET;
            let Some(token) = self.reactor.adopt(fd, now, &mut |token, fd: &OwnedFd| {
                let ev = EpollEvent::new(flags, token as u64);
                epoll.add(fd, ev).ok().map(|()| 0)
            }) else {
                continue; // refused (--max-conns) or not watchable
            };
            self.reactor.conns[token].conn.relay_requests();
            if self.gens.len() <= token {
                self.gens.resize(token + 1, 0);
            }
            self.next_gen = self.next_gen.wrapping_add(1);
            self.gens[token] = self.next_gen;
            self.reactor.ready(token, true, now);
            self.after(token);
        }
        Ok(())
    }

    /// If connection `token` has a whole request to hand over, sends it to
    /// the worker `--dispatch` picks.
    fn relay(&mut self, token: usize) {
        let Some(c) = self.reactor.conns.get_mut(token) else {
            return;
        };
        let Some(relay) = c.conn.take_relay() else {
            return;
        };
        let Relay {
            bytes,
            target,
            last,
        } = *relay;
        let fd = c.fd.as_raw_fd();
        let w = self.pick(fd);
        let mut flags = if last { LAST } else { 0 };
        if self.cfg.offload && offloaded(&target) {
            flags |= OFFLOAD;
        }
        let head = ipc::Head {
            token: token as u32,
            gen: self.gens[token],
            flags,
        };
        let p = &mut self.pairs[w];
        p.queued += 1;
        p.out.push(head, &bytes);
        self.flush(w);
    }

    /// The worker for the next request of the connection on `fd`.
    fn pick(&mut self, fd: RawFd) -> usize {
        let workers = self.pairs.len();
        match self.cfg.dispatch {
            Dispatch::RoundRobin => {
                self.next_worker = (self.next_worker + 1) % workers;
                self.next_worker
            }
            Dispatch::FdMod => fd as usize % workers,
            Dispatch::Idle => {
                let slots = self.cfg.board.slots();
                self.next_worker = (self.next_worker + 1) % workers;
                let mut order = (0..workers).map(|i| (self.next_worker + i) % workers);
                order
                    .find(|&w| self.pairs[w].queued == 0 && slots[w].state() == State::Idle)
                    .unwrap_or_else(|| {
                        (0..workers)
                            .min_by_key(|&w| self.pairs[w].queued)
                            .unwrap_or(0)
                    })
            }
        }
    }

    /// Writes what waits for worker `w`; EPOLLOUT says when more can go.
    fn flush(&mut self, w: usize) {
        if self.pairs[w].out.is_empty() {
            return;
        }
        let p = &mut self.pairs[w];
        // Until full (the worker reads it); an error means the worker has
        // gone, and the manager replaces it on the same pair.
        let _ = p.out.flush(&p.fd);
        let mut want = if p.blocked_on.is_some() {
            EpollFlags::empty()
        } else {
            EpollFlags::EPOLLIN
        };
        if !p.out.is_empty() {
            want |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(want, PAIR_BASE + w as u64);
        let _ = self.epoll.modify(&p.fd, &mut ev);
    }

    /// Worker `w`'s socket: more of our requests can go, answers came back.
    /// Answers come in pieces; a piece goes to its connection only while
    /// that connection's window has room. When it has none, this pair is
    /// not read until the connection drains (or closes): the worker then
    /// blocks writing, and the memory a slow reader pins stays one window
    /// (the price: other answers from that worker wait behind it).
    fn pair_ready(&mut self, w: usize, now: Instant) -> anyhow::Result<()> {
        self.flush(w);
        if self.pairs[w].blocked_on.is_some() {
            return Ok(());
        }
        // A message pair's datagrams are at most a chunk: never cut short.
        let mut buf = [0u8; ipc::CHUNK];
        loop {
            let p = &mut self.pairs[w];
            // Enough is buffered: a whole piece and a window's worth.
            if p.input.len() >= WINDOW && ipc::parse(&p.input).is_some() {
                break;
            }
            match nix::unistd::read(&p.fd, &mut buf) {
                Ok(0) => anyhow::bail!("worker {w}'s socket closed: the manager is gone"),
                Ok(n) => p.input.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(e) if net::would_block(e) => break,
                Err(e) => anyhow::bail!("read from worker {w}: {e}"),
            }
        }
        self.deliver(w, now);
        Ok(())
    }

    /// Hands the whole pieces read from worker `w` to their connections.
    fn deliver(&mut self, w: usize, now: Instant) {
        let mut used = 0;
        let mut touched = Vec::new();
        while let Some((head, end)) = ipc::parse(&self.pairs[w].input[used..]) {
            let (start, stop) = (used + ipc::HEAD, used + end);
            let token = head.token as usize;
            let last = head.flags & MORE == 0;
            let live = self.gens.get(token) == Some(&head.gen);
            if let Some(c) = self.reactor.conns.get_mut(token).filter(|_| live) {
                if !c.conn.relay_room() {
                    // Its client has not read the last window yet.
                    self.pairs[w].blocked_on = Some(token);
                    break;
                }
                let piece = &self.pairs[w].input[start..stop];
                c.conn.relay_data(piece, last, now, &mut self.reactor.host);
                touched.push(token);
            }
            used += end;
            if last {
                self.pairs[w].queued = self.pairs[w].queued.saturating_sub(1);
            }
        }
        self.pairs[w].input.drain(..used);
        let want = if self.pairs[w].blocked_on.is_some() {
            EpollFlags::empty()
        } else {
            EpollFlags::EPOLLIN
        };
        let p = &self.pairs[w];
        let out = if p.out.is_empty() {
            EpollFlags::empty()
        } else {
            EpollFlags::EPOLLOUT
        };
        let mut ev = EpollEvent::new(want | out, PAIR_BASE + w as u64);
        let _ = self.epoll.modify(&p.fd, &mut ev);
        touched.dedup();
        for token in touched {
            self.reactor.ready(token, false, now);
            self.after(token);
        }
    }

    /// After connection `token` moved: hand on a request it framed, and
    /// let a pair that waited for its window go on.
    fn after(&mut self, token: usize) {
        self.relay(token);
        let room = self
            .reactor
            .conns
            .get(token)
            .is_none_or(|c| c.conn.relay_room());
        if !room {
            return;
        }
        for w in 0..self.pairs.len() {
            if self.pairs[w].blocked_on == Some(token) {
                self.pairs[w].blocked_on = None;
                let _ = self.pair_ready(w, Instant::now());
            }
        }
    }
}

/// `/cpu` with `task=1` in its query goes to a task worker.
fn offloaded(target: &str) -> bool {
    let (_, query) = routes::split_target(target);
    matches!(routes::route("GET", target), Route::Cpu(_))
        && routes::query_param(query, "task") == Some("1")
}
