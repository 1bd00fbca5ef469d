//! What every event-driven model does the same way, whatever tells it that
//! a socket is ready (epoll, poll, select, a signal, a sweep, mio,
//! `polling`): accept without blocking, move bytes between a non-blocking
//! socket and the workload's state machine until the socket would block,
//! keep deadlines in a timer heap, and stop gracefully.
//!
//! A model's file keeps only what makes it itself: how it waits for
//! readiness and how it tells the kernel what it waits for. It hands
//! readiness to [`Reactor::ready`] and gets back the [`Interest`] the
//! connection has now (or `None`: it was closed).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use iomodels_workload::Conn;
use nix::errno::Errno;
use nix::sys::socket::SockFlag;
use slab::Slab;

use crate::host::{Admitted, ServerHost};
use crate::net::{self, Accepted};
use crate::signals;
use crate::timers::Timers;

/// How far to read once a socket is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// Until a read returns less than the buffer: the socket is empty, and a
    /// level-triggered API reports any more later.
    Short,
    /// Until EAGAIN: an edge-triggered API (or a signal) will not report the
    /// data that is already there again.
    WouldBlock,
}

/// What a connection waits for after a round of I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// It takes input now.
    pub read: bool,
    /// It has output the socket did not take.
    pub write: bool,
}

/// One connection of an event-driven model.
#[derive(Debug)]
pub struct Connection {
    /// The non-blocking socket.
    pub fd: OwnedFd,
    /// Its protocol state.
    pub conn: Conn,
    /// The deadline this connection has in the timer heap.
    pub timer: Option<Instant>,
    /// Readiness said readable and no read has seen EAGAIN since.
    pub readable: bool,
    /// What the model last told its readiness API, in the API's own bits
    /// (epoll flags), so it only makes a call on a change.
    pub registered: u32,
    /// What the connection waits for since its last round of I/O (models
    /// that rebuild their interest sets each time, like poll and select,
    /// read it).
    pub interest: Interest,
    /// Bumped on every read or write that moved bytes (a sweeping model
    /// tells from it whether a sweep did anything).
    pub moved: u64,
    /// The file a `/file` request of it is reading.
    pub file: Option<std::fs::File>,
    /// Its place under `--max-conns`, freed with the connection.
    _admitted: Admitted,
}

impl Connection {
    /// A freshly accepted connection, admitted under `--max-conns`.
    pub fn new(fd: OwnedFd, host: &ServerHost, admitted: Admitted, now: Instant) -> Connection {
        Connection {
            _admitted: admitted,
            file: None,
            fd,
            conn: host.shared().new_conn(now),
            timer: None,
            readable: false,
            registered: 0,
            interest: Interest {
                read: true,
                write: false,
            },
            moved: 0,
        }
    }

    /// Does all the I/O the connection can do without blocking: reads (as
    /// far as `until` says, and only while the state machine takes input),
    /// hands the bytes over, writes the output. `blocking_wait` sleeps
    /// through a parked `/wait` right here, stalling the caller's loop on
    /// purpose. Returns the interest left, or `None` when the connection
    /// must be closed.
    pub fn pump(
        &mut self,
        now: Instant,
        host: &mut ServerHost,
        buf: &mut [u8],
        until: ReadUntil,
        blocking_wait: bool,
    ) -> Option<Interest> {
        let mut now = now;
        loop {
            // A blocking handler's clock is the real one: `now` was read
            // before the loop slept through other connections' /wait, and
            // a /wait parsed with it would end that much sooner (a batch
            // of them would all sleep as one).
            if blocking_wait {
                now = Instant::now();
            }
            let mut progress = false;
            // Read one chunk per round, so responses go out before more is read.
            if self.readable && self.conn.wants_read() {
                match nix::unistd::read(&self.fd, buf) {
                    Ok(0) => {
                        self.readable = false;
                        self.moved += 1;
                        self.conn.handle_eof(now, host);
                    }
                    Ok(n) => {
                        self.moved += 1;
                        if until == ReadUntil::Short && n < buf.len() {
                            self.readable = false;
                        }
                        self.conn.handle_input(&buf[..n], now, host);
                    }
                    Err(e) if net::would_block(e) => self.readable = false,
                    Err(Errno::EINTR) => {}
                    Err(_) => return None,
                }
                progress = true;
            }
            // A parked /file: read it now (a disk read blocks this loop,
            // which is what these models do; uring-server reads
            // asynchronously instead).
            if host.serve_file(&mut self.conn, &mut self.file, now) {
                progress = true;
            }
            // Write whatever the state machine produced.
            while !self.conn.output().is_empty() {
                match nix::unistd::write(&self.fd, self.conn.output()) {
                    Ok(n) => {
                        self.moved += 1;
                        self.conn.advance_output(n, now, host);
                        progress = true;
                    }
                    Err(e) if net::would_block(e) => break,
                    Err(Errno::EINTR) => {}
                    Err(_) => return None,
                }
            }
            if blocking_wait {
                if let Some(until) = self.conn.parked_until() {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    self.conn.handle_timeout(Instant::now(), host);
                    progress = true;
                }
            }
            if self.conn.wants_close() {
                return None;
            }
            // Another pass only if it could do something: read more, serve
            // a file, or sleep through a /wait. (After a request's read and
            // its response's write, a pass that finds nothing cost a tenth
            // of a keep-alive request's instructions.)
            let more = (self.readable && self.conn.wants_read())
                || self.conn.file_pending()
                || (blocking_wait && self.conn.parked_until().is_some());
            if !progress || !more {
                return Some(Interest {
                    read: self.conn.wants_read(),
                    write: !self.conn.output().is_empty(),
                });
            }
        }
    }
}

/// What [`Reactor::accept`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptEnd {
    /// The backlog is empty.
    Drained,
    /// Out of descriptors or memory: stop accepting for a moment instead of
    /// spinning on a listener that stays ready.
    Exhausted,
}

/// The state a single-threaded event loop keeps: its connections in a slab
/// (the slab index is the token the readiness API hands back), their
/// deadlines, one read buffer for all of them, and the stop state.
pub struct Reactor {
    /// Who answers, the counters, the data dir.
    pub host: ServerHost,
    /// The connections, by token.
    pub conns: Slab<Connection>,
    /// Deadlines.
    pub timers: Timers,
    buf: Vec<u8>,
    until: ReadUntil,
    blocking_wait: bool,
    stopping_since: Option<Instant>,
    accept_paused_until: Option<Instant>,
}

impl Reactor {
    /// A loop answering as `host`.
    pub fn new(host: ServerHost, until: ReadUntil, blocking_wait: bool) -> Reactor {
        Reactor {
            host,
            conns: Slab::new(),
            timers: Timers::new(),
            buf: vec![0; 64 * 1024],
            until,
            blocking_wait,
            stopping_since: None,
            accept_paused_until: None,
        }
    }

    /// Accepts every pending connection (until EAGAIN), through the one
    /// accept-error ladder ([`net::accept_next`]). Each new one is
    /// [adopted](Reactor::adopt). On exhaustion (out of descriptors or
    /// memory) accepting pauses for [`net::ACCEPT_PAUSE`]: the model stops
    /// watching its listener while [`Reactor::accept_paused`] says so.
    pub fn accept(
        &mut self,
        listener: &impl AsFd,
        now: Instant,
        mut register: impl FnMut(usize, &OwnedFd) -> Option<u32>,
    ) -> AcceptEnd {
        loop {
            match net::accept_next(listener, SockFlag::SOCK_NONBLOCK) {
                Ok(Accepted::Conn(fd)) => {
                    self.adopt(fd, now, &mut register);
                }
                Ok(Accepted::Nothing) => return AcceptEnd::Drained,
                // A listener in a broken state (EBADF, EINVAL) is a bug;
                // it was logged; treat it like exhaustion, not a spin.
                Ok(Accepted::Exhausted) | Err(_) => {
                    self.accept_paused_until = Some(now + net::ACCEPT_PAUSE);
                    return AcceptEnd::Exhausted;
                }
            }
        }
    }

    /// Pauses accepting for [`net::ACCEPT_PAUSE`], as [`Reactor::accept`]
    /// does on exhaustion, for a model that accepts by itself (one
    /// connection per wake-up) and met it.
    pub fn pause_accepting(&mut self, now: Instant) {
        self.accept_paused_until = Some(now + net::ACCEPT_PAUSE);
    }

    /// Whether accepting is paused after exhaustion (until
    /// [`net::ACCEPT_PAUSE`] has passed): the model leaves its listener out
    /// of what it waits for meanwhile, and [`Reactor::wait_ms`] wakes it
    /// when the pause ends.
    pub fn accept_paused(&mut self, now: Instant) -> bool {
        match self.accept_paused_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.accept_paused_until = None;
                false
            }
            None => false,
        }
    }

    /// Takes in a connection accepted elsewhere (an acceptor thread, a
    /// model's own accept) or by [`Reactor::accept`]. Over `--max-conns`
    /// (the one rule, [`crate::host::Shared::admit`]) it is refused and closed. Returns
    /// its token, or `None` if it was refused, also when `register` could
    /// not watch it.
    pub fn adopt(
        &mut self,
        fd: OwnedFd,
        now: Instant,
        register: &mut impl FnMut(usize, &OwnedFd) -> Option<u32>,
    ) -> Option<usize> {
        let Some(admitted) = self.host.shared().admit() else {
            self.host.shared().refuse(fd);
            return None;
        };
        net::prepare_accepted(&fd);
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        let Some(registered) = register(token, &fd) else {
            // A connection the model cannot watch (select: a descriptor past
            // FD_SETSIZE) is refused like one over the limit.
            self.host.shared().refuse(fd);
            return None;
        };
        self.host.stats().opened();
        let mut c = Connection::new(fd, &self.host, admitted, now);
        c.registered = registered;
        self.timers
            .schedule(&mut c.timer, token, c.conn.poll_timeout());
        entry.insert(c);
        Some(token)
    }

    /// Readiness for `token`: pumps the connection and returns its interest
    /// now, or `None` if it was closed (or never existed: a stale event).
    pub fn ready(&mut self, token: usize, readable: bool, now: Instant) -> Option<Interest> {
        let c = self.conns.get_mut(token)?;
        c.readable |= readable;
        match c.pump(
            now,
            &mut self.host,
            &mut self.buf,
            self.until,
            self.blocking_wait,
        ) {
            Some(interest) => {
                c.interest = interest;
                let deadline = c.conn.poll_timeout();
                self.timers.schedule(&mut c.timer, token, deadline);
                Some(interest)
            }
            None => {
                self.close(token);
                None
            }
        }
    }

    /// Closes a connection (dropping the descriptor also takes it out of
    /// an epoll set).
    pub fn close(&mut self, token: usize) {
        if self.conns.try_remove(token).is_some() {
            self.host.stats().closed();
        }
    }

    /// How long the loop may sleep: until the next deadline (whole
    /// milliseconds, rounded up), at most 100 ms while stopping or while
    /// accepting is paused, or forever.
    pub fn wait_ms(&self, now: Instant) -> Option<u64> {
        let ms = self.timers.wait_ms(now);
        if self.stopping_since.is_some() || self.accept_paused_until.is_some() {
            return Some(ms.map_or(100, |ms| ms.min(100)));
        }
        ms
    }

    /// Fires due deadlines (a parked `/wait` is answered, a slow or idle
    /// peer timed out). For models that rebuild what they wait for from
    /// [`Connection::interest`] each time (poll, select, …); an API that
    /// keeps registrations (epoll) uses [`Reactor::expire_with`].
    pub fn expire(&mut self) {
        self.expire_with(|_, _, _| {});
    }

    /// [`Reactor::expire`], telling `changed` each connection's new interest
    /// (`None`: closed). Stale heap entries are skipped.
    pub fn expire_with(&mut self, changed: impl FnMut(usize, Option<Interest>, &mut Reactor)) {
        self.expire_at(Instant::now(), changed);
    }

    /// [`Reactor::expire_with`] as of `now`: a loop that read the clock
    /// for its batch already spares itself another read.
    pub fn expire_at(
        &mut self,
        now: Instant,
        mut changed: impl FnMut(usize, Option<Interest>, &mut Reactor),
    ) {
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(c) = self.conns.get_mut(token) else {
                continue;
            };
            if c.timer != Some(when) {
                continue;
            }
            c.timer = None;
            c.conn.handle_timeout(now, &mut self.host);
            let interest = self.ready(token, false, now);
            changed(token, interest, self);
        }
    }

    /// A stop was asked: from now on connections close once they have
    /// answered what they received. Every socket is read once more, since
    /// data may have arrived that readiness has not reported yet.
    pub fn begin_stop(&mut self, now: Instant) {
        if self.stopping_since.is_none() {
            self.stopping_since = Some(now);
            for (_, c) in self.conns.iter_mut() {
                c.readable = true;
            }
        }
    }

    /// Whether a stop was asked.
    pub fn stopping(&self) -> bool {
        self.stopping_since.is_some()
    }

    /// While stopping: tells connections that have answered a request (or
    /// whose grace ran out, [`signals::may_close`]) to close once idle, and
    /// pumps them. Returns true when none is left.
    pub fn drain_step(&mut self) -> bool {
        self.drain_step_with(|_, _, _| {})
    }

    /// [`Reactor::drain_step`], telling `changed` each connection's new
    /// interest (`None`: closed).
    pub fn drain_step_with(
        &mut self,
        mut changed: impl FnMut(usize, Option<Interest>, &mut Reactor),
    ) -> bool {
        let Some(since) = self.stopping_since else {
            return false;
        };
        let now = Instant::now();
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let c = &mut self.conns[token];
            if signals::may_close(c.conn.requests(), since, now) {
                c.conn.drain();
            }
            let interest = self.ready(token, false, now);
            changed(token, interest, self);
        }
        self.conns.is_empty()
    }
}
