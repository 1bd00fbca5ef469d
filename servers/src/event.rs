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
use std::time::{Duration, Instant};

use iomodels_workload::{Conn, Host};
use nix::errno::Errno;
use nix::sys::socket::SockFlag;
use slab::Slab;

use crate::host::{ServerHost, Shared};
use crate::net;
use crate::timers::Timers;

/// A connection taken from the backlog after a stop gets this long to send
/// its request.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

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
}

impl Connection {
    /// A freshly accepted connection.
    pub fn new(fd: OwnedFd, host: &ServerHost, now: Instant) -> Connection {
        Connection {
            fd,
            conn: Conn::new(host.shared().protocol, now),
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
        loop {
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
            if !progress {
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
    refusal: Vec<u8>,
    max_conns: usize,
    until: ReadUntil,
    blocking_wait: bool,
    stopping_since: Option<Instant>,
}

impl Reactor {
    /// A loop of `shared`'s server, answering as `host`.
    pub fn new(
        shared: &Shared,
        host: ServerHost,
        until: ReadUntil,
        blocking_wait: bool,
    ) -> Reactor {
        Reactor {
            refusal: net::refusal(shared.protocol, &shared.server_name()),
            max_conns: shared.max_conns as usize,
            host,
            conns: Slab::new(),
            timers: Timers::new(),
            buf: vec![0; 64 * 1024],
            until,
            blocking_wait,
            stopping_since: None,
        }
    }

    /// Accepts every pending connection (until EAGAIN). Each new one is
    /// offered to `register` with its token, which returns what it
    /// registered (kept in [`Connection::registered`]) or `None` on failure
    /// (the connection is then closed).
    /// Connections over `--max-conns` get the refusal and are closed.
    pub fn accept(
        &mut self,
        listener: &impl AsFd,
        now: Instant,
        mut register: impl FnMut(usize, &OwnedFd) -> Option<u32>,
    ) -> AcceptEnd {
        loop {
            let fd = match net::accept(listener, SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => fd,
                Err(e) if net::would_block(e) => return AcceptEnd::Drained,
                Err(Errno::EINTR) => continue,
                Err(e) if net::accept_error_is_transient(e) => continue,
                Err(e) => {
                    eprintln!(
                        "{}: accept: {e}; pausing accepts for 100 ms",
                        self.host.shared().server_name()
                    );
                    return AcceptEnd::Exhausted;
                }
            };
            if self.conns.len() >= self.max_conns {
                self.host.stats().refused();
                net::refuse(fd, &self.refusal);
                continue;
            }
            self.adopt(fd, now, &mut register);
        }
    }

    /// Takes in a connection accepted elsewhere (an acceptor thread, a
    /// model's own accept). Returns its token, or `None` if `register`
    /// refused it (it is then closed).
    pub fn adopt(
        &mut self,
        fd: OwnedFd,
        now: Instant,
        register: &mut impl FnMut(usize, &OwnedFd) -> Option<u32>,
    ) -> Option<usize> {
        net::set_nodelay(&fd);
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        let registered = register(token, &fd)?;
        self.host.stats().opened();
        let mut c = Connection::new(fd, &self.host, now);
        c.registered = registered;
        self.timers.schedule(
            &mut c.timer,
            token,
            c.conn.poll_timeout(self.host.timeouts()),
        );
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
                let deadline = c.conn.poll_timeout(self.host.timeouts());
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
    /// milliseconds, rounded up), at most 100 ms while stopping, or forever.
    pub fn wait_ms(&self, now: Instant) -> Option<u64> {
        let ms = self.timers.wait_ms(now);
        match self.stopping_since {
            Some(_) => Some(ms.map_or(100, |ms| ms.min(100))),
            None => ms,
        }
    }

    /// Fires due deadlines (a parked `/wait` is answered, a slow or idle
    /// peer timed out); `changed` hears each connection's new interest
    /// (`None`: closed). Stale heap entries are skipped.
    pub fn expire(&mut self, mut changed: impl FnMut(usize, Option<Interest>, &mut Reactor)) {
        let now = Instant::now();
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
    /// whose grace ran out) to close once idle, and pumps them. Returns true
    /// when none is left.
    pub fn drain_step(
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
            if c.conn.requests() > 0 || now >= since + STOP_GRACE {
                c.conn.drain();
            }
            let interest = self.ready(token, false, now);
            changed(token, interest, self);
        }
        self.conns.is_empty()
    }
}
