//! The engine: one mio event loop per thread, driving its share of the
//! connections.
//!
//! Every connection is a [`Slot`]: a socket (or none, between connections),
//! a read buffer and a write buffer that live as long as the slot, and a
//! fixed-capacity queue of the requests in flight on it. The request bytes of
//! each route are encoded once before the run ([`Prepared`]); sending a
//! request copies them into the slot's write buffer, answering one parses the
//! response in place in the read buffer with the workload crate's client
//! codecs and checks it against the route's [`Expectation`]. Nothing is
//! allocated per request (the FastCGI reader's `X-Worker` string aside).
//!
//! # One request costs
//!
//! Sockets are registered once, readable and writable, edge-triggered, and
//! never re-registered, so a keep-alive request costs one `write(2)`, one
//! `read(2)` and a share of one `epoll_wait(2)`. A read that returns less
//! than the room it was given has drained the socket (the kernel hands over
//! everything queued), so it is not followed by a read that would only say
//! `EAGAIN`; the next arrival raises a new edge.
//!
//! # Closed and open loop
//!
//! Slots that can take a request wait on a `ready` stack. In a closed loop
//! every ready slot gets a request at once (latency runs from the write). In
//! an open loop requests have intended send times on a fixed schedule
//! (`t0 + k / rate`) and a due request goes to the first ready slot; when no
//! slot is ready it waits, and its latency still runs from its intended time
//! (wrk2's correction for coordinated omission). A timerfd wakes the loop at
//! the next due time with microsecond precision (`epoll_wait` alone only
//! knows milliseconds).
//!
//! The schedule is fixed (`t0 + k / rate`) or Poisson (exponential gaps of
//! mean `1 / rate`, drawn from a seeded generator, so a run repeats). Two
//! histograms tell how well it was kept: the *send lag* of each request
//! (its actual send against its intended time, waiting for a free
//! connection included) and the *generator lag* (the part of it when a
//! connection was already free: the generator's own delay, the figure that
//! says the generator, not the server, fell behind).
//!
//! # Requests in flight
//!
//! Each thread integrates the number of requests written and not yet
//! answered over the measured window, so the report can state the mean
//! concurrency the load really had (Little's law: it equals the achieved
//! rate × the mean uncorrected latency in a steady state).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iomodels_workload::fcgi::{ProtocolStatus, ResponseReader};
use iomodels_workload::{http, Expectation, VerifyError};
use mio::net::{TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::config::{Addr, Arrivals, Protocol};
use crate::report::Errors;

/// Timeouts are checked, failed connections retried and progress published
/// this often.
const TICK: Duration = Duration::from_millis(100);
/// Initial read buffer of a connection; it grows for larger responses.
const READ_BUF: usize = 16 * 1024;
/// Token of the open-loop timer.
const TIMER: Token = Token(usize::MAX - 1);

/// Largest latency recorded (one hour in µs); larger values saturate.
pub(crate) const MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds with 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// One route, ready to send and to check.
pub(crate) struct Prepared {
    /// The whole request, encoded once.
    pub bytes: Vec<u8>,
    /// What its response must be.
    pub expect: Expectation,
    /// A HEAD request (its response has no body).
    pub head: bool,
}

/// What every thread shares, read-only.
pub(crate) struct Plan {
    pub addr: Addr,
    pub protocol: Protocol,
    pub routes: Vec<Prepared>,
    /// Route indices in mix order (smooth weighted round-robin).
    pub mix: Vec<u16>,
    pub new_conn: bool,
    pub pipeline: usize,
    pub timeout: Duration,
    /// Start of the load (warm-up included) and of the open-loop schedule.
    pub t0: Instant,
    /// Start of measurement (`t0` + warm-up).
    pub measure_start: Instant,
    /// End of measurement, in duration mode.
    pub end: Option<Instant>,
    /// Open loop (a rate was asked).
    pub open_loop: bool,
    /// The open loop's schedule.
    pub arrivals: Arrivals,
    /// Send one histogram per second for the interval log.
    pub intervals: bool,
}

/// One thread's share of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadSpec {
    pub index: usize,
    pub connections: usize,
    /// Measured requests this thread makes (`-n` mode).
    pub quota: Option<u64>,
    /// Requests/s this thread sends (open loop).
    pub rate: Option<f64>,
    /// Its first request's offset from `t0` on the schedule.
    pub phase: Duration,
    /// Seeds its Poisson gaps (distinct per agent and thread).
    pub stream: u64,
}

/// Counters a thread publishes for the progress line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Progress {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    pub done: AtomicBool,
}

/// One second of latencies from one thread, for the interval log.
pub(crate) struct Interval {
    pub index: u64,
    pub hist: Histogram<u64>,
}

/// What a thread measured.
pub(crate) struct Stats {
    pub latency: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub connect: Histogram<u64>,
    interval: Option<Histogram<u64>>,
    pub errors: Errors,
    pub responses: u64,
    pub bytes: u64,
    pub workers: Vec<(Vec<u8>, u64)>,
    last_worker: usize,
    pub connections_opened: u64,
    pub lag_max: Duration,
    pub lag_sum: Duration,
    pub lag_count: u64,
    /// Open loop: intended time → actual send, µs.
    pub send_lag: Histogram<u64>,
    /// Open loop: the part of the send lag when a connection was free, µs.
    pub generator_lag: Histogram<u64>,
    /// Requests in flight integrated over the measured window, request·s.
    pub in_flight_area: f64,
    pub unsent: u64,
    /// When the last measured request finished (`-n` mode).
    pub finished_at: Option<Instant>,
}

impl Stats {
    fn new(intervals: bool) -> Stats {
        Stats {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            connect: new_histogram(),
            interval: intervals.then(new_histogram),
            errors: Errors::default(),
            responses: 0,
            bytes: 0,
            workers: Vec::new(),
            last_worker: 0,
            connections_opened: 0,
            lag_max: Duration::ZERO,
            lag_sum: Duration::ZERO,
            lag_count: 0,
            send_lag: new_histogram(),
            generator_lag: new_histogram(),
            in_flight_area: 0.0,
            unsent: 0,
            finished_at: None,
        }
    }

    fn count_worker(&mut self, worker: &[u8]) {
        if let Some((w, n)) = self.workers.get_mut(self.last_worker) {
            if w == worker {
                *n += 1;
                return;
            }
        }
        match self.workers.iter().position(|(w, _)| w == worker) {
            Some(i) => {
                self.workers[i].1 += 1;
                self.last_worker = i;
            }
            None => {
                self.workers.push((worker.to_vec(), 1));
                self.last_worker = self.workers.len() - 1;
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The error classes a failed request can end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Connect,
    Read,
    Write,
    Timeout,
}

/// A connection opened before the run with a blocking connect: the probe
/// that tells an unreachable target apart (it then serves as the run's
/// first connection) and the `--idle` connections.
pub(crate) enum Probe {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Probe {
    /// Connects, giving up after `timeout` (TCP; a unix connect does not wait).
    pub fn connect(addr: &Addr, timeout: Duration) -> io::Result<Probe> {
        Ok(match addr {
            Addr::Tcp(a) => Probe::Tcp(std::net::TcpStream::connect_timeout(a, timeout)?),
            Addr::Unix(p) => Probe::Unix(std::os::unix::net::UnixStream::connect(p)?),
        })
    }
}

/// A socket of either family.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(addr: &Addr) -> io::Result<Stream> {
        Ok(match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                // Requests are small and latency is the measure: no Nagle.
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Addr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        })
    }

    /// Takes over a connection opened before the run.
    fn from_probe(p: Probe) -> io::Result<Stream> {
        Ok(match p {
            Probe::Tcp(s) => {
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Stream::Tcp(TcpStream::from_std(s))
            }
            Probe::Unix(s) => {
                s.set_nonblocking(true)?;
                Stream::Unix(UnixStream::from_std(s))
            }
        })
    }

    fn register(&mut self, poll: &Poll, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Stream::Tcp(s) => poll.registry().register(s, token, interest),
            Stream::Unix(s) => poll.registry().register(s, token, interest),
        }
    }

    /// `Ok(true)` once a non-blocking connect has finished, `Ok(false)`
    /// while it is still under way.
    fn connected(&self) -> io::Result<bool> {
        let (err, peer) = match self {
            Stream::Tcp(s) => (s.take_error(), s.peer_addr().map(drop)),
            Stream::Unix(s) => (s.take_error(), s.peer_addr().map(drop)),
        };
        if let Some(e) = err? {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket.
    Closed,
    /// A non-blocking connect under way since then.
    Connecting(Instant),
    /// Connected.
    Open,
}

/// One request on a connection.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    route: u16,
    /// When it should have been sent (open loop) or was sent (closed loop).
    intended: Instant,
    /// When its bytes went to the socket (`None` while connecting).
    sent: Option<Instant>,
    /// Issued during measurement (not warm-up).
    counted: bool,
}

/// One connection's slot; its buffers outlive its sockets.
struct Slot {
    stream: Option<Stream>,
    state: State,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    inflight: VecDeque<InFlight>,
    fcgi: ResponseReader,
    /// On the ready stack.
    ready: bool,
    /// When it last went on the ready stack.
    ready_at: Instant,
    /// Failed: reconnect at the next tick, not at once.
    retry: bool,
}

impl Slot {
    fn new(pipeline: usize) -> Slot {
        Slot {
            stream: None,
            state: State::Closed,
            rbuf: vec![0; READ_BUF],
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(512),
            wpos: 0,
            inflight: VecDeque::with_capacity(pipeline),
            fcgi: ResponseReader::new(),
            ready: false,
            ready_at: Instant::now(),
            retry: false,
        }
    }

    /// Writes what the write buffer holds until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.wpos < self.wbuf.len() {
            match stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                // Edge-triggered: a writable event comes when there is room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    /// Makes room at the end of the read buffer.
    fn make_room(&mut self) {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        if self.rend < self.rbuf.len() {
            return;
        }
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        } else {
            // One response larger than the buffer: grow it, once per size.
            let len = self.rbuf.len() * 2;
            self.rbuf.resize(len, 0);
        }
    }

    fn close(&mut self) {
        // Closing the descriptor removes it from the epoll set.
        self.stream = None;
        self.state = State::Closed;
        self.rstart = 0;
        self.rend = 0;
        self.wbuf.clear();
        self.wpos = 0;
    }
}

/// One thread's event loop and everything it owns.
struct Worker<'p> {
    plan: &'p Plan,
    spec: ThreadSpec,
    poll: Poll,
    slots: Vec<Slot>,
    /// Slots that can take a request now, oldest first (so an open loop
    /// takes its connections in turn).
    ready: VecDeque<usize>,
    stats: Stats,
    mix_pos: usize,
    /// Measured requests issued and finished (answered or failed).
    issued: u64,
    finished: u64,
    /// Open loop: the next request's number and intended time, the
    /// schedule's mean step, the timer.
    next_k: u64,
    next_due: Instant,
    step_ns: f64,
    /// Poisson arrivals: the generator state of the gaps (splitmix64).
    poisson: Option<u64>,
    /// Requests written (or queued on a connecting slot) and not finished,
    /// and when that count last changed.
    in_flight: u64,
    in_flight_since: Instant,
    timer: Option<TimerFd>,
    armed_for: Option<Instant>,
    schedule_done: bool,
}

/// Runs one thread's share until the end of the run.
pub(crate) fn run_thread(
    plan: &Plan,
    spec: ThreadSpec,
    progress: &Progress,
    intervals: Option<Sender<Interval>>,
    preconnected: Option<Probe>,
) -> io::Result<Stats> {
    let poll = Poll::new()?;
    let timer = if plan.open_loop {
        let t = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK)
            .map_err(io::Error::from)?;
        let fd = t.as_fd().as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), TIMER, Interest::READABLE)?;
        Some(t)
    } else {
        None
    };
    let mut w = Worker {
        plan,
        spec,
        poll,
        slots: (0..spec.connections)
            .map(|_| Slot::new(plan.pipeline))
            .collect(),
        ready: VecDeque::with_capacity(spec.connections),
        stats: Stats::new(plan.intervals),
        mix_pos: spec.index % plan.mix.len(),
        issued: 0,
        finished: 0,
        next_k: 0,
        next_due: plan.t0 + spec.phase,
        step_ns: spec.rate.map_or(0.0, |r| 1e9 / r),
        poisson: (plan.arrivals == Arrivals::Poisson)
            .then_some(0x243F_6A88_85A3_08D3 ^ (spec.stream + 1)),
        in_flight: 0,
        in_flight_since: plan.t0,
        timer,
        armed_for: None,
        schedule_done: false,
    };
    if w.poisson.is_some() {
        w.next_due = w.plan.t0 + spec.phase + w.gap();
    }
    if let Some(p) = preconnected {
        // The probe connection becomes slot 0's first connection.
        let mut s = Stream::from_probe(p)?;
        s.register(&w.poll, Token(0))?;
        w.slots[0].stream = Some(s);
        w.slots[0].state = State::Open;
        w.stats.connections_opened += 1;
    }
    w.run(progress, intervals.as_ref());
    progress.done.store(true, Ordering::Relaxed);
    Ok(w.stats)
}

impl Worker<'_> {
    fn run(&mut self, progress: &Progress, intervals: Option<&Sender<Interval>>) {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        // Keep-alive: open every connection first. An open loop only sends
        // on connected slots; a closed loop sends as each one connects.
        for i in 0..self.slots.len() {
            let unopened = self.slots[i].state == State::Closed;
            if self.plan.open_loop && !self.plan.new_conn && unopened {
                self.connect(i, start);
            } else {
                self.make_ready(i);
            }
        }
        let mut next_tick = start + TICK;
        let mut interval_index = 0u64;
        let mut next_interval = self.plan.measure_start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            if self.finished_all(now) {
                break;
            }
            self.dispatch();
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                progress
                    .responses
                    .store(self.stats.responses, Ordering::Relaxed);
                progress
                    .errors
                    .store(self.stats.errors.total(), Ordering::Relaxed);
                next_tick = now + TICK;
            }
            if now >= next_interval {
                if let (Some(tx), Some(h)) = (intervals, self.stats.interval.as_mut()) {
                    let hist = std::mem::replace(h, new_histogram());
                    let _ = tx.send(Interval {
                        index: interval_index,
                        hist,
                    });
                }
                interval_index += 1;
                next_interval += Duration::from_secs(1);
            }
            let mut wake = next_tick.min(next_interval);
            if let Some(end) = self.plan.end {
                wake = wake.min(end);
            }
            self.arm_timer(now);
            let timeout = wake.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Nothing sensible can go on without the poller.
                self.stats.errors.read += 1;
                break;
            }
            for event in events.iter() {
                let token = event.token();
                // The timer only wakes us; dispatch() does the work.
                if token == TIMER || token.0 >= self.slots.len() {
                    continue;
                }
                self.handle(token.0, event.is_readable() || event.is_read_closed());
            }
        }
        let now = Instant::now();
        if self.plan.open_loop && !self.schedule_done {
            // Requests the schedule asked for before the end but never sent.
            if let Some(end) = self.plan.end {
                while self.next_due < end {
                    if self.next_due >= self.plan.measure_start {
                        self.stats.unsent += 1;
                    }
                    self.advance();
                }
            }
        }
        self.count_in_flight(now, 0);
        if let (Some(tx), Some(h)) = (intervals, self.stats.interval.take()) {
            let _ = tx.send(Interval {
                index: interval_index,
                hist: h,
            });
        }
        progress
            .responses
            .store(self.stats.responses, Ordering::Relaxed);
        progress
            .errors
            .store(self.stats.errors.total(), Ordering::Relaxed);
        if self.stats.finished_at.is_none() && self.spec.quota.is_some() {
            self.stats.finished_at = Some(now);
        }
    }

    fn finished_all(&mut self, now: Instant) -> bool {
        if let Some(end) = self.plan.end {
            return now >= end;
        }
        match self.spec.quota {
            Some(q) if self.finished >= q => {
                if self.stats.finished_at.is_none() {
                    self.stats.finished_at = Some(now);
                }
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Whether a request intended at `at` may still be issued.
    fn can_issue(&self, at: Instant) -> bool {
        if let Some(end) = self.plan.end {
            if at >= end {
                return false;
            }
        }
        match self.spec.quota {
            Some(q) => at < self.plan.measure_start || self.issued < q,
            None => true,
        }
    }

    /// Moves the schedule to the next request: `t0 + k / rate` (fixed), or
    /// an exponential gap after the last one (Poisson).
    fn advance(&mut self) {
        self.next_k += 1;
        self.next_due = if self.poisson.is_some() {
            self.next_due + self.gap()
        } else {
            self.plan.t0
                + self.spec.phase
                + Duration::from_nanos((self.next_k as f64 * self.step_ns) as u64)
        };
    }

    /// One exponential gap of mean `step_ns` (inverse transform sampling).
    fn gap(&mut self) -> Duration {
        let Some(state) = self.poisson.as_mut() else {
            return Duration::from_nanos(self.step_ns as u64);
        };
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // u in (0, 1]: 53 random bits, never 0, so ln(u) is finite.
        let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
        Duration::from_nanos((-u.ln() * self.step_ns) as u64)
    }

    /// Adds `delta` to the requests in flight at `now`, integrating the
    /// count so far over the part of the measured window it covered.
    fn count_in_flight(&mut self, now: Instant, delta: i64) {
        let from = self.in_flight_since.max(self.plan.measure_start);
        let to = self.plan.end.map_or(now, |end| now.min(end));
        if to > from && self.in_flight > 0 {
            self.stats.in_flight_area += self.in_flight as f64 * (to - from).as_secs_f64();
        }
        self.in_flight = self.in_flight.saturating_add_signed(delta);
        self.in_flight_since = now;
    }

    fn make_ready(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if !slot.ready {
            slot.ready = true;
            slot.ready_at = Instant::now();
            self.ready.push_back(i);
        }
    }

    /// Hands requests to ready slots: all of them in a closed loop, those
    /// due in an open loop.
    fn dispatch(&mut self) {
        if self.plan.open_loop {
            while !self.schedule_done {
                let due = self.next_due;
                let now = Instant::now();
                if due > now {
                    break;
                }
                if !self.can_issue(due) {
                    self.schedule_done = true;
                    break;
                }
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                self.slots[i].ready = false;
                if due >= self.plan.measure_start {
                    let lag = now - due;
                    self.stats.lag_max = self.stats.lag_max.max(lag);
                    self.stats.lag_sum += lag;
                    self.stats.lag_count += 1;
                    self.stats.send_lag.saturating_record(micros(lag));
                    // The generator's own delay: since the request was due
                    // or since the connection was free, whichever is later.
                    let own = now.saturating_duration_since(due.max(self.slots[i].ready_at));
                    self.stats.generator_lag.saturating_record(micros(own));
                }
                self.advance();
                self.issue(i, due, now);
                self.start(i, now);
                let slot = &self.slots[i];
                if slot.state == State::Open && slot.inflight.len() < self.plan.pipeline {
                    self.make_ready(i);
                }
            }
        } else {
            while let Some(i) = self.ready.pop_front() {
                self.slots[i].ready = false;
                let mut now = Instant::now();
                while self.slots[i].inflight.len() < self.plan.pipeline && self.can_issue(now) {
                    self.issue(i, now, now);
                    now = Instant::now();
                }
                if !self.slots[i].inflight.is_empty() {
                    self.start(i, now);
                }
            }
        }
    }

    /// Queues one request on slot `i`.
    fn issue(&mut self, i: usize, intended: Instant, now: Instant) {
        let route = self.plan.mix[self.mix_pos];
        self.mix_pos += 1;
        if self.mix_pos == self.plan.mix.len() {
            self.mix_pos = 0;
        }
        let counted = intended >= self.plan.measure_start;
        if counted {
            self.issued += 1;
        }
        self.count_in_flight(now, 1);
        let slot = &mut self.slots[i];
        slot.wbuf
            .extend_from_slice(&self.plan.routes[route as usize].bytes);
        let sent = (slot.state == State::Open).then_some(now);
        slot.inflight.push_back(InFlight {
            route,
            intended,
            sent,
            counted,
        });
    }

    /// Sends what slot `i` has queued, connecting first if it has no socket.
    fn start(&mut self, i: usize, now: Instant) {
        match self.slots[i].state {
            State::Closed => self.connect(i, now),
            State::Connecting(_) => {}
            State::Open => {
                if self.slots[i].flush().is_err() {
                    self.fail(i, Class::Write, now);
                }
            }
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let stream = Stream::connect(&self.plan.addr).and_then(|mut s| {
            s.register(&self.poll, Token(i))?;
            Ok(s)
        });
        match stream {
            Ok(s) => {
                let slot = &mut self.slots[i];
                slot.stream = Some(s);
                slot.state = State::Connecting(now);
            }
            Err(_) => self.fail(i, Class::Connect, now),
        }
    }

    /// Ends slot `i`'s connection after an error: every request in flight
    /// on it fails with `class`; it reconnects at the next tick.
    fn fail(&mut self, i: usize, class: Class, now: Instant) {
        let measuring = now >= self.plan.measure_start;
        let dropped = self.slots[i].inflight.len() as i64;
        self.count_in_flight(now, -dropped);
        let slot = &mut self.slots[i];
        let mut failed = 0;
        for f in slot.inflight.drain(..) {
            if f.counted {
                failed += 1;
            }
        }
        // A connect that fails with no request waiting still counts once.
        if failed == 0 && class == Class::Connect && measuring {
            self.stats.errors.connect += 1;
        }
        self.finished += failed;
        let e = &mut self.stats.errors;
        *match class {
            Class::Connect => &mut e.connect,
            Class::Read => &mut e.read,
            Class::Write => &mut e.write,
            Class::Timeout => &mut e.timeout,
        } += failed;
        slot.close();
        slot.fcgi = ResponseReader::new();
        slot.retry = true;
        if slot.ready {
            slot.ready = false;
            self.ready.retain(|&r| r != i);
        }
    }

    /// The connection ended cleanly (the server closed it, or a new
    /// connection per request is done): requests still in flight on it
    /// were lost and are read errors; the slot is ready again at once.
    fn close_clean(&mut self, i: usize) {
        let dropped = self.slots[i].inflight.len() as i64;
        if dropped > 0 {
            self.count_in_flight(Instant::now(), -dropped);
        }
        let slot = &mut self.slots[i];
        let lost = slot.inflight.drain(..).filter(|f| f.counted).count() as u64;
        self.stats.errors.read += lost;
        self.finished += lost;
        slot.close();
        self.make_ready(i);
    }

    /// Checks timeouts, retries failed slots.
    fn tick(&mut self, now: Instant) {
        let timeout = self.plan.timeout;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            match slot.state {
                State::Connecting(since) if now - since > timeout => {
                    self.fail(i, Class::Connect, now);
                }
                State::Open => {
                    let late = slot
                        .inflight
                        .front()
                        .and_then(|f| f.sent)
                        .is_some_and(|sent| now - sent > timeout);
                    if late {
                        self.fail(i, Class::Timeout, now);
                    }
                }
                _ => {}
            }
            let slot = &mut self.slots[i];
            if slot.state == State::Closed && slot.retry {
                slot.retry = false;
                if self.plan.open_loop && !self.plan.new_conn {
                    self.connect(i, now);
                } else {
                    self.make_ready(i);
                }
            }
        }
    }

    /// Open loop: wakes the loop at the next due request, to the µs.
    fn arm_timer(&mut self, now: Instant) {
        let Some(timer) = &self.timer else {
            return;
        };
        if self.schedule_done || self.ready.is_empty() {
            return;
        }
        let due = self.next_due;
        if due <= now || self.armed_for == Some(due) {
            return;
        }
        let wait = TimeSpec::from_duration(due - now);
        if timer
            .set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())
            .is_ok()
        {
            self.armed_for = Some(due);
        }
    }

    /// An event on slot `i`.
    fn handle(&mut self, i: usize, readable: bool) {
        let now = Instant::now();
        if let State::Connecting(since) = self.slots[i].state {
            let Some(stream) = self.slots[i].stream.as_ref() else {
                return;
            };
            match stream.connected() {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => return self.fail(i, Class::Connect, now),
            }
            self.stats.connections_opened += 1;
            if now >= self.plan.measure_start {
                self.stats.connect.saturating_record(micros(now - since));
            }
            let slot = &mut self.slots[i];
            slot.state = State::Open;
            for f in slot.inflight.iter_mut() {
                f.sent.get_or_insert(now);
            }
            if slot.inflight.len() < self.plan.pipeline {
                self.make_ready(i);
            }
        }
        if self.slots[i].state != State::Open {
            return;
        }
        if self.slots[i].flush().is_err() {
            return self.fail(i, Class::Write, now);
        }
        if readable {
            self.read(i);
        }
    }

    /// Reads what slot `i`'s socket has and answers every whole response.
    fn read(&mut self, i: usize) {
        loop {
            let slot = &mut self.slots[i];
            slot.make_room();
            let room = slot.rbuf.len() - slot.rend;
            let Some(stream) = slot.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut slot.rbuf[slot.rend..]) {
                Ok(0) => {
                    let now = Instant::now();
                    if self.slots[i].inflight.is_empty() {
                        // The server closed an idle keep-alive connection.
                        self.close_clean(i);
                    } else {
                        self.fail(i, Class::Read, now);
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, Class::Read, Instant::now()),
            };
            slot.rend += n;
            let now = Instant::now();
            if !self.answer(i, now) {
                return;
            }
            // A short read drained the socket: no need for a read that
            // would only say EAGAIN (see the module docs).
            if n < room {
                return;
            }
        }
    }

    /// Answers the whole responses at the start of slot `i`'s read buffer.
    /// Returns false when the slot was closed.
    fn answer(&mut self, i: usize, now: Instant) -> bool {
        let plan = self.plan;
        let mut answered = false;
        loop {
            let slot = &mut self.slots[i];
            let Some(front) = slot.inflight.front().copied() else {
                if slot.rstart < slot.rend {
                    // Bytes nobody asked for: the stream cannot be trusted.
                    self.fail(i, Class::Read, now);
                    return false;
                }
                break;
            };
            let route = &plan.routes[front.route as usize];
            let input = &slot.rbuf[slot.rstart..slot.rend];
            let stats = &mut self.stats;
            // Ok(Some((server closes, bytes used))) once a response is whole.
            let parsed: Result<Option<(bool, usize)>, ()> = match plan.protocol {
                Protocol::Http => match http::parse_response(input, route.head) {
                    Ok(Some(r)) => {
                        record(
                            stats, plan, &front, route, r.status, r.body, r.worker, r.len, now,
                        );
                        Ok(Some((r.close, r.len)))
                    }
                    Ok(None) => Ok(None),
                    Err(_) => Err(()),
                },
                Protocol::Fcgi => match slot.fcgi.read(input) {
                    Ok(Some(r)) => {
                        // An END_REQUEST other than "complete" (overloaded,
                        // can't multiplex) is no answer: a status error.
                        let status = if r.protocol_status == ProtocolStatus::RequestComplete {
                            r.status
                        } else {
                            0
                        };
                        let worker = slot.fcgi.worker();
                        let body = slot.fcgi.body();
                        record(stats, plan, &front, route, status, body, worker, r.len, now);
                        Ok(Some((false, r.len)))
                    }
                    Ok(None) => Ok(None),
                    Err(_) => Err(()),
                },
            };
            let (close, len) = match parsed {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(()) => {
                    self.fail(i, Class::Read, now);
                    return false;
                }
            };
            if front.counted {
                self.finished += 1;
            }
            self.count_in_flight(now, -1);
            let slot = &mut self.slots[i];
            slot.rstart += len;
            slot.inflight.pop_front();
            answered = true;
            if close || plan.new_conn {
                self.close_clean(i);
                return false;
            }
        }
        if answered && self.slots[i].inflight.len() < plan.pipeline {
            self.make_ready(i);
        }
        true
    }
}

/// Records one answered request: latency, verification, worker, bytes.
#[allow(clippy::too_many_arguments)]
fn record(
    stats: &mut Stats,
    plan: &Plan,
    req: &InFlight,
    route: &Prepared,
    status: u16,
    body: &[u8],
    worker: Option<&[u8]>,
    len: usize,
    now: Instant,
) {
    let verdict = route.expect.check(status, body);
    if !req.counted || plan.end.is_some_and(|end| now >= end) {
        return;
    }
    stats.responses += 1;
    stats.bytes += len as u64;
    let latency = micros(now - req.intended);
    stats.latency.saturating_record(latency);
    if let Some(h) = stats.interval.as_mut() {
        h.saturating_record(latency);
    }
    if plan.open_loop {
        let sent = req.sent.unwrap_or(req.intended);
        stats
            .uncorrected
            .saturating_record(micros(now.saturating_duration_since(sent)));
    }
    match verdict {
        Ok(()) => {}
        Err(VerifyError::Status { .. }) => stats.errors.status += 1,
        Err(_) => stats.errors.verify += 1,
    }
    if let Some(w) = worker {
        stats.count_worker(w);
    }
}
