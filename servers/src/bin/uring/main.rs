//! # uring-server — one thread, io_uring completions
//!
//! Every other event loop here asks the kernel "which sockets are *ready*?"
//! and then makes the `read`/`write` calls itself. io_uring turns that
//! around: the program writes *requests* ("receive on this socket", "send
//! these bytes", "read that file") into a submission ring shared with the
//! kernel, and later finds their *results* in a completion ring. One
//! `io_uring_enter` hands the kernel a whole batch and waits for the next
//! completions: one system call per turn of the loop, however busy the
//! kernel is (with `DEFER_TASKRUN`, 6.1+, completions are posted only
//! inside that wait). `--sqpoll` gives submitting to a kernel thread, but
//! this loop still enters to wait. The model of monoio, glommio and
//! frevib's io_uring echo server.
//!
//! ```text
//!          user space                         kernel
//!   ┌───────────────────────┐ io_uring_enter ┌──────────────────────┐
//!   │ SQ  [send c7][recv c9]│ ─────────────> │ runs each request,   │
//!   │     [timeout][ ... ]  │                │ on sockets that wait │
//!   │ CQ  [c7: 130][c9: 0 ] │ <───────────── │ (internal poll)      │
//!   │     [acc: fd 12]      │  completions   └──────────────────────┘
//!   └───────────────────────┘
//!     loop: submit what was queued, wait for ≥ 1 completion (one enter),
//!           handle every completion: accepted fd -> new slot,
//!           bytes received -> state machine -> queue a send, ...
//! ```
//!
//! * **Accept** is one *multishot* request: one completion per connection,
//!   a *direct descriptor* (6.8+; `--no-direct`: a real one), an index in
//!   the ring's own file table: socket options and the close are requests
//!   too. With a new connection per request, 3–7 % less CPU per request.
//! * **Receive** is one multishot recv per connection with *provided
//!   buffers*: the kernel takes a 4 KiB buffer from a ring we registered
//!   (`--buffers`) only when data arrives (an idle connection owns none);
//!   the state machine reads it, it goes back. A dry ring ends the recv.
//! * **Send** owns its bytes until its completion (the kernel reads them
//!   *after* `io_uring_enter` returns), so they are copied into a buffer
//!   the request owns. A short send leaves the rest for the next one; one
//!   send at a time per connection keeps the bytes in order.
//! * **`/wait`, slow heads, idle peers**: a timer heap whose earliest
//!   deadline is the timeout of the loop's `io_uring_enter` (no timer request).
//! * **`/file`** is `IORING_OP_OPENAT`, `fstat`, then `IORING_OP_READ`
//!   piece by piece as the window has room: the one single-threaded loop
//!   here that a read missing the page cache does not stall (`fstat` is
//!   still synchronous, on an inode the open brought into memory).
//! * **SIGTERM**: a poll request on the signal self-pipe. **Closing**
//!   cancels a connection's requests; its slot goes only when none is in
//!   flight, since the kernel may still use their buffers.
//!
//! **One keep-alive request costs** no system call of its own: its recv
//! completion and its send ride on the loop's one `io_uring_enter`, which
//! serves many requests. Under `strace -f -c` (which changes the batching;
//! `docs/models/uring.md`, with what each option tried cost): 0.118 system
//! calls per request at 50 connections, 0.028 at 500; epoll-server's 2.03.
//!
//! **Trade-off.** Fewer system calls, no readiness round trip, but the
//! kernel holds your buffers (ownership rules readiness models never have),
//! and one thread: a slow handler (`/cpu`) stalls every connection. **Wins**
//! with many busy connections and disk reads; **loses** with one connection
//! at a time, and with large bodies, where copying dominates.
//!
//! **Where the rules live.** io_uring (setup, probe, requests, file table,
//! waits, `/file`, flags, `unsafe`) is `servers/src/ring.rs`, the buffer ring
//! `bufring/`; the protocol `Conn`; `--max-conns` `Shared::admit`/`refuse`;
//! accept errors `net::accept_ladder`; the stop `signals::may_close`.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin uring-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{Admitted, ServerHost};
use iomodels_servers::net::{self, Accepted};
use iomodels_servers::ring::{self, Event, FileReads, OpId, Received, Ring, Socket};
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::timers::Timers;
use iomodels_workload::Conn;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::SockFlag;
use slab::Slab;

/// One thread, io_uring completions: multishot accept and recv, provided buffers.
#[derive(Debug, Parser)]
#[command(name = "uring-server", version, long_about = None, after_help = WORKERS)]
struct Args {
    #[command(flatten)]
    common: Common,

    #[command(flatten)]
    ring: ring::Config,
}

const WORKERS: &str = "For this model --workers defaults to 1: one ring on one thread. --workers N runs N rings on N threads, each with its own SO_REUSEPORT listener: it helps when the server saturates a core and others are free, not when the load generator needs them.";
/// While stopping the loop wakes at least this often.
const TICK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> Result<()> {
    // The shared --workers default is one per CPU; this model's is 1.
    let workers = args.common.workers.unwrap_or(1);
    let opts = ring::listen_options(workers, &args.common.listen);
    let start = Startup::begin("uring", &args.common, Workers::Fixed(workers), opts)?;
    let new = |host, listener| {
        Ok(Server {
            ring: Ring::new(&args.ring)?,
            host,
            listener: Some(listener),
            accept_op: None,
            conns: Slab::new(),
            timers: Timers::new(),
            stopping_since: None,
            accept_paused_until: None,
        })
    };
    ring::run_rings(start, new, |mut server: Server| server.run())
}

/// One connection.
struct Slot {
    sock: Socket,
    conn: Conn,
    /// Its place under `--max-conns`.
    _admitted: Admitted,
    /// The deadline this slot has in the timer heap.
    timer: Option<Instant>,
    /// The armed receive and the send in flight (one at a time).
    recv: Option<OpId>,
    sending: Option<OpId>,
    /// Closed: freed when the ring has no request for it in flight.
    closing: bool,
    /// The file a `/file` request is reading, piece by piece.
    file: FileReads,
}

struct Server {
    ring: Ring,
    host: ServerHost,
    listener: Option<OwnedFd>,
    accept_op: Option<OpId>,
    conns: Slab<Slot>,
    timers: Timers,
    stopping_since: Option<Instant>,
    accept_paused_until: Option<Instant>,
}

impl Server {
    fn run(&mut self) -> Result<()> {
        self.arm_accept(Instant::now());
        self.ring.poll_readable(signals::stop_fd());
        let mut events = VecDeque::new();
        loop {
            // 1. One io_uring_enter: submit what was queued, wait for ≥ 1 completion.
            self.ring.submit_and_wait(&mut events)?;
            // 2. Handle every completion. One clock read serves the whole turn.
            let now = Instant::now();
            while let Some(event) = events.pop_front() {
                let conn = event.conn();
                match event {
                    Event::Accepted { result, more } => self.on_accept(result, more, now)?,
                    Event::Readable => self.on_stop(now),
                    Event::Received { conn, result, more } => self.on_recv(conn, result, more, now),
                    Event::Sent { conn, result } => self.on_send(conn, result, now),
                    file => self.on_file(file, now),
                }
                if let Some(token) = conn {
                    self.free_if_done(token);
                }
            }
            // 3. Deadlines that came due: parked /wait, slow heads, idle peers.
            self.run_timers(now);
            // 4. Stopping: close idle connections, and the listener once its
            //    cancelled accept has completed (freeing the port); then leave.
            if let Some(since) = self.stopping_since {
                self.drain_all(since);
                self.listener = self.listener.take().filter(|_| self.accept_op.is_some());
                if self.conns.is_empty() && self.listener.is_none() {
                    return Ok(());
                }
            }
            // 5. A pause in accepting (out of descriptors, or of file table) that ended.
            self.arm_accept(now);
            // 6. Wake by the earliest deadline (a tick while stopping or paused).
            let ticking = self.stopping_since.map(|_| Instant::now() + TICK);
            let next = [self.timers.next(), ticking, self.accept_paused_until];
            if let Some(when) = next.into_iter().flatten().min() {
                self.ring.wake_by(when);
            }
        }
    }

    /// Arms the accept, unless it is armed, paused, stopped, or the file table full.
    fn arm_accept(&mut self, now: Instant) {
        self.accept_paused_until = self.accept_paused_until.filter(|&t| now < t);
        let waiting = self.accept_paused_until.or(self.stopping_since);
        if let (Some(l), None, None) = (&self.listener, self.accept_op, waiting) {
            self.accept_op = self.ring.accept(l.as_fd());
        }
    }

    /// A connection accepted, or why not. An accept that completes without
    /// `more` has stopped (a one-shot one always) and is re-armed.
    fn on_accept(&mut self, result: nix::Result<Socket>, more: bool, now: Instant) -> Result<()> {
        if !more {
            self.accept_op = None;
        }
        match result {
            // Cancelled: a stop, an accept pause, the file table running short.
            Err(Errno::ECANCELED) => {}
            result => match net::accept_ladder(result).context("IORING_OP_ACCEPT")? {
                Accepted::Conn(fd) => self.add_conn(fd, now),
                Accepted::Nothing => {}
                Accepted::Exhausted => {
                    self.accept_paused_until = Some(now + net::ACCEPT_PAUSE);
                    self.ring.cancel(self.accept_op);
                }
            },
        }
        self.arm_accept(now);
        Ok(())
    }

    /// A connection, or its refusal (on a real descriptor: a direct one comes back made real).
    fn add_conn(&mut self, sock: Socket, now: Instant) {
        let Some(admitted) = self.host.shared().admit() else {
            return match sock {
                Socket::Real(fd) => self.host.shared().refuse(fd),
                direct => self.ring.make_real(direct),
            };
        };
        self.host.stats().opened();
        let token = self.conns.insert(Slot {
            sock,
            conn: self.host.shared().new_conn(now),
            _admitted: admitted,
            timer: None,
            recv: None,
            sending: None,
            closing: false,
            file: FileReads::default(),
        });
        self.drive(token);
    }

    /// Bytes received (or EOF, or an error) on connection `token`. The
    /// buffer goes back to the kernel's ring once the state machine has it.
    fn on_recv(&mut self, token: usize, result: Received, more: bool, now: Instant) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            // A closed connection: only the buffer matters.
            if let Ok(Some(buf)) = result {
                self.ring.give_back(buf);
            }
            return;
        };
        slot.recv = slot.recv.filter(|_| more);
        match result {
            Ok(Some(buf)) => {
                let bytes = self.ring.bytes(&buf);
                slot.conn.handle_input(bytes, now, &mut self.host);
                self.ring.give_back(buf);
            }
            Ok(None) => slot.conn.handle_eof(now, &mut self.host),
            // The buffer ring ran dry (ENOBUFS), or the recv was cancelled
            // or interrupted: it has stopped, and `drive` arms a new one if
            // the connection wants to read (this batch's buffers are back).
            Err(Errno::ENOBUFS | Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => return self.close(token),
        }
        self.drive(token);
    }

    /// A send completed: `n` bytes went (a short send leaves the rest in
    /// the connection's output for the next send).
    fn on_send(&mut self, token: usize, result: nix::Result<usize>, now: Instant) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        slot.sending = None;
        match result {
            Ok(n) if n > 0 => slot.conn.advance_output(n, now, &mut self.host),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            // 0 bytes, EPIPE, ECONNRESET: the peer is gone.
            _ => return self.close(token),
        }
        self.drive(token);
    }

    /// A file opened, or a piece of it read, for a connection.
    fn on_file(&mut self, event: Event, now: Instant) {
        let token = event.conn().unwrap_or(usize::MAX);
        if let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) {
            (slot.file).complete(event, &mut slot.conn, &mut self.host, now);
            self.drive(token);
        }
    }

    /// After any change to a connection: queue what it needs next — a file
    /// read, a send, a receive (or the cancel of one: a multishot recv
    /// cannot be paused) — or close it; then set its deadline.
    fn drive(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        let data_dir = &self.host.shared().data_dir;
        (slot.file).queue(&mut self.ring, token, &mut slot.conn, data_dir);
        if slot.sending.is_none() && !slot.conn.output().is_empty() {
            slot.sending = Some(self.ring.send(token, &slot.sock, slot.conn.output()));
        }
        if slot.conn.wants_close() {
            return self.close(token);
        }
        match (slot.conn.wants_read(), slot.recv) {
            (true, None) => slot.recv = Some(self.ring.recv(token, &slot.sock)),
            // Backpressure (a parked /wait, output the peer does not read):
            // stop receiving, so that TCP's window holds the peer back.
            (false, Some(_)) if self.ring.multishot_recv() => self.ring.cancel(slot.recv),
            _ => {}
        }
        self.timers
            .schedule(&mut slot.timer, token, slot.conn.poll_timeout());
    }

    /// Closes a connection: cancels its requests in flight; the slot (and
    /// the descriptor) go when the last of them has completed.
    fn close(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        slot.closing = true;
        self.ring.cancel(slot.recv);
        self.ring.cancel(slot.sending);
        self.free_if_done(token);
    }

    fn free_if_done(&mut self, token: usize) {
        let done = self.conns.get(token).is_some_and(|s| s.closing);
        if done && self.ring.in_flight(token) == 0 {
            self.ring.release(self.conns.remove(token).sock);
            self.host.stats().closed();
        }
    }

    /// Fires due deadlines: a parked /wait is answered, a slow or idle peer
    /// is timed out. Stale heap entries (the deadline moved) are skipped.
    fn run_timers(&mut self, now: Instant) {
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
                continue;
            };
            if slot.timer == Some(when) {
                slot.timer = None;
                slot.conn.handle_timeout(now, &mut self.host);
                self.drive(token);
            }
        }
    }

    /// SIGTERM/SIGINT (each ring sees the pipe): take the backlog, cancel the accept (the
    /// listener stays open until it completes), let connections finish.
    fn on_stop(&mut self, now: Instant) {
        if self.stopping_since.is_some() {
            return;
        }
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.stopping_since = Some(now);
        // Non-blocking now, so that taking the backlog ends at EAGAIN.
        let _ = fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        while let Ok(Accepted::Conn(fd)) = net::accept_next(&listener, SockFlag::empty()) {
            net::prepare_accepted(&fd);
            self.add_conn(Socket::Real(fd), now);
        }
        self.ring.cancel(self.accept_op);
        self.listener = Some(listener);
    }

    /// While stopping: a connection closes once idle (`signals::may_close`).
    fn drain_all(&mut self, since: Instant) {
        let now = Instant::now();
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let slot = &mut self.conns[token];
            if !slot.closing && signals::may_close(slot.conn.requests(), since, now) {
                slot.conn.drain();
            }
            self.drive(token);
        }
    }
}
