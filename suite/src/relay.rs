//! A delaying TCP relay: where the kernel has no `sch_netem`, this is what
//! puts a round-trip time between the load generator and the server.
//!
//! `iomodels relay --listen 127.0.0.1:0 --to 10.213.0.1:8080 --delay 500us`
//! runs in the generator's network namespace. Every accepted connection
//! gets its own connection to the server; each chunk read in either
//! direction is written `delay` (half the RTT, plus up to `jitter`) after
//! it was read, never before an earlier chunk of the same direction (a TCP
//! stream does not reorder). A new connection's first bytes to the server
//! wait one more round trip: the handshake a real link would cost.
//!
//! One thread, one epoll loop (mio, edge-triggered) and one timerfd: a
//! read queues its chunk with its due time on a heap; the timer fires at
//! the earliest due time and the chunks due are written. A direction whose
//! queue holds more than [`MAX_QUEUED`] bytes stops reading until it drains.
//!
//! What it does not reproduce, unlike netem on the link: packet loss and
//! retransmission, reordering, the congestion window growing over the
//! first round trips (its own hops are on loopback and an undelayed veth),
//! delayed ACKs and Nagle meeting a real RTT (it re-chunks the stream:
//! what arrives in one read leaves in one write), bandwidth-delay effects
//! on large bodies; the server accepts a connection one round trip earlier
//! than it would behind a real link.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// A direction stops reading while this many bytes wait in its queue.
const MAX_QUEUED: usize = 4 << 20;
const LISTENER: Token = Token(0);
const TIMER: Token = Token(1);

/// One direction of a relayed connection.
#[derive(Default)]
struct Dir {
    /// Chunks read and not yet written, each with its due time.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of the front chunk already written.
    pos: usize,
    queued: usize,
    /// Due time of the last chunk queued (the next is never earlier).
    last_due: Option<Instant>,
    /// The source said end-of-file: shut the destination's write side
    /// once the queue is written.
    eof: bool,
    /// The destination's write side is shut.
    done: bool,
}

/// A client and its connection to the server. Side 0 is the client.
struct Pair {
    socks: [TcpStream; 2],
    /// dirs[0]: client → server, dirs[1]: server → client.
    dirs: [Dir; 2],
    /// When the first bytes may reach the server (one handshake RTT).
    open_at: Instant,
}

struct Relay {
    poll: Poll,
    timer: TimerFd,
    armed: Option<Instant>,
    pairs: Vec<Option<Pair>>,
    /// (due, pair, direction): when to write a direction's front chunk.
    heap: BinaryHeap<Reverse<(Instant, usize, usize)>>,
    delay: Duration,
    jitter: Duration,
    rng: u64,
    buf: Vec<u8>,
}

/// Serves forever: prints `listening on ADDR`, then relays every
/// connection to `to` with `delay` (+ up to `jitter`) each way.
pub fn serve(listen: &str, to: &str, delay: Duration, jitter: Duration) -> anyhow::Result<()> {
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| anyhow::anyhow!("relay: bad --listen {listen:?}"))?;
    let to: SocketAddr = to
        .parse()
        .map_err(|_| anyhow::anyhow!("relay: bad --to {to:?}"))?;
    let mut listener = TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("relay: cannot listen on {listen}: {e}"))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK)?;
    let fd = timer.as_fd().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), TIMER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut r = Relay {
        poll,
        timer,
        armed: None,
        pairs: Vec::new(),
        heap: BinaryHeap::new(),
        delay,
        jitter,
        rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()),
        buf: vec![0; 64 * 1024],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        match r.poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => r.accept(&listener, to),
                TIMER => {
                    let _ = r.timer.wait();
                    r.armed = None;
                }
                Token(t) => {
                    let (p, side) = ((t - 2) / 2, (t - 2) % 2);
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        r.read(p, side);
                    }
                    if ev.is_writable() {
                        // The side that became writable is the destination
                        // of the direction that reads from the other side.
                        r.flush(p, 1 - side);
                    }
                }
            }
        }
        r.due();
        r.arm();
    }
}

impl Relay {
    /// Accepts every waiting client and connects each to the server.
    fn accept(&mut self, listener: &TcpListener, to: SocketAddr) {
        loop {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // EMFILE and friends: the client waits
            };
            let Ok(server) = TcpStream::connect(to) else {
                continue; // dropping the client closes it
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let slot = match self.pairs.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.pairs.push(None);
                    self.pairs.len() - 1
                }
            };
            let mut pair = Pair {
                socks: [client, server],
                dirs: [Dir::default(), Dir::default()],
                open_at: Instant::now() + self.delay * 2,
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            let ok = (0..2).all(|s| {
                self.poll
                    .registry()
                    .register(&mut pair.socks[s], Token(2 + 2 * slot + s), interest)
                    .is_ok()
            });
            if ok {
                self.pairs[slot] = Some(pair);
            }
        }
    }

    fn extra(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        self.jitter.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Reads what side `side` of pair `p` has (until it would block) into
    /// the queue of the direction leaving from it.
    fn read(&mut self, p: usize, side: usize) {
        loop {
            let extra = self.extra();
            let (delay, now) = (self.delay, Instant::now());
            let Some(pair) = self.pairs[p].as_mut() else {
                return;
            };
            let d = &mut pair.dirs[side];
            if d.eof || d.queued > MAX_QUEUED {
                return;
            }
            match pair.socks[side].read(&mut self.buf) {
                Ok(0) => {
                    d.eof = true;
                    let at = d.last_due.unwrap_or(now).max(now);
                    self.heap.push(Reverse((at, p, side)));
                    return;
                }
                Ok(n) => {
                    let mut due = (now + delay + extra).max(d.last_due.unwrap_or(now));
                    if side == 0 {
                        due = due.max(pair.open_at + delay);
                    }
                    d.last_due = Some(due);
                    d.queued += n;
                    d.queue.push_back((due, self.buf[..n].to_vec()));
                    self.heap.push(Reverse((due, p, side)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(p),
            }
        }
    }

    /// Writes the due chunks of direction `dir` (read from side `dir`,
    /// written to the other side) of pair `p`.
    fn flush(&mut self, p: usize, dir: usize) {
        let now = Instant::now();
        let Some(pair) = self.pairs[p].as_mut() else {
            return;
        };
        let d = &mut pair.dirs[dir];
        let to = &mut pair.socks[1 - dir];
        let was_full = d.queued > MAX_QUEUED;
        while let Some((due, chunk)) = d.queue.front() {
            if *due > now {
                break;
            }
            match to.write(&chunk[d.pos..]) {
                Ok(n) => {
                    d.pos += n;
                    if d.pos == chunk.len() {
                        d.queued -= chunk.len();
                        d.pos = 0;
                        d.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(p),
            }
        }
        if d.queue.is_empty() && d.eof && !d.done {
            d.done = true;
            let _ = to.shutdown(Shutdown::Write);
        }
        if pair.dirs.iter().all(|d| d.done) {
            return self.close(p);
        }
        if was_full && pair.dirs[dir].queued <= MAX_QUEUED {
            self.read(p, dir);
        }
    }

    fn close(&mut self, p: usize) {
        if let Some(mut pair) = self.pairs[p].take() {
            for s in pair.socks.iter_mut() {
                let _ = self.poll.registry().deregister(s);
            }
        }
    }

    /// Writes every direction whose front chunk is due.
    fn due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, p, dir))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.flush(p, dir);
        }
    }

    /// Sets the timer to the earliest due chunk, to the microsecond.
    fn arm(&mut self) {
        let Some(&Reverse((at, _, _))) = self.heap.peek() else {
            return;
        };
        if self.armed == Some(at) {
            return;
        }
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        let spec = Expiration::OneShot(TimeSpec::from_duration(wait));
        if self.timer.set(spec, TimerSetTimeFlags::empty()).is_ok() {
            self.armed = Some(at);
        }
    }
}
