//! # aio-server — one thread, POSIX asynchronous I/O (aio_read / aio_write)
//!
//! The fifth of the five I/O models as the textbooks draw it (UNP §6.2,
//! "asynchronous I/O"): the process asks for a read *and the copy into its
//! buffer*, goes on, and is told when the whole operation is done — unlike
//! signal-driven I/O, which says only that a read would not block. POSIX
//! spells it `aio_read(aiocb)`, `aio_write(aiocb)`, then `aio_error` (still
//! EINPROGRESS?) and `aio_return` (the byte count); the notice is a
//! `sigevent`: here SIGEV_SIGNAL, a real-time signal carrying the
//! connection's token, blocked and read from a **signalfd** in the loop's
//! one `poll` (with the listener and the stop pipe).
//!
//! ```text
//!   loop: poll(signalfd, listener, stop pipe; timeout = next deadline)
//!     listener   -> accept4 until EAGAIN; aio_read(new socket)
//!     signalfd   -> for each queued siginfo: token = si_value
//!                     aio_error(cb) != EINPROGRESS -> n = aio_return(cb)
//!                     read done  -> Conn::handle_input -> aio_write(response)
//!                     write done -> Conn::advance_output -> aio_read(next)
//!   glibc, meanwhile, in a thread of its own per operation in flight:
//!     pread(sock) = ESPIPE -> read(sock) (blocks until data) -> rt_sigqueueinfo
//! ```
//!
//! **What glibc does underneath.** Linux has no asynchronous socket read
//! that POSIX AIO could use (the kernel's `io_submit` is asynchronous only
//! for O_DIRECT files), so glibc runs each request in a thread of a pool
//! (`aio_init`; `--aio-threads`), made whenever no pool thread is idle at
//! that instant and gone after an idle second. The thread makes the
//! *blocking* call — on a socket `pread` (ESPIPE), then `read`, which waits
//! for the client; `pwrite`, then `write` — and queues the signal with
//! `rt_sigqueueinfo`. So an idle keep-alive connection holds a thread
//! blocked in `read`, as in thread-server; requests on one descriptor are
//! served in order, so a write waits behind a read still blocked on the
//! same socket; and connections beyond the pool starve.
//!
//! **One keep-alive request costs** here an `aio_read` and an `aio_write`
//! (a futex wake of a pool thread, or a new thread), a `poll` and a
//! signalfd `read` per completion; in the pool the calls above and futex
//! waits. Measured (`docs/models/cgi-fastcgi.md`): 48.9 µs of CPU, 3.65
//! context switches and 0.37 new threads per `/hello`, against
//! uring-server's 7.35 µs and 0.35 switches.
//!
//! **signalfd or aio_suspend?** `aio_suspend(list, n)` wakes when one of
//! *n* control blocks is done and the caller scans them all (select's O(n),
//! and nothing else to wait on beside them). A queued real-time signal
//! names its operation (si_value), and a signalfd puts the queue in the
//! loop's one `poll`. Its limit is sigio-server's bounded queue: one
//! operation per connection keeps it below `--max-conns`, and a
//! once-a-second `aio_error` sweep catches a lost notice.
//!
//! **Why servers do not use it.** A thread hand-off and a signal per
//! operation, on top of the blocking call it replaces; no more connections
//! than threads; signals are process-wide. epoll and io_uring (completions
//! in the kernel) do the job without any of it. `/file` goes through
//! `aio_read` too (`pread` in a pool thread); native O_DIRECT AIO is not shown.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin aio-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

mod posix;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{self, Admitted, ServerHost};
use iomodels_servers::net::{self, Accepted, ListenOptions};
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::timers::Timers;
use iomodels_workload::{Conn, FileRequest};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown, SockFlag};
use posix::{Kind, Op};
use slab::Slab;

/// One thread, POSIX AIO (glibc's thread pool underneath), completions by signalfd.
#[derive(Debug, Parser)]
#[command(name = "aio-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Most threads glibc's AIO pool may run (aio_init's aio_threads; each
    /// open connection holds one). Default: --max-conns, at most 4096.
    #[arg(long, value_name = "N")]
    aio_threads: Option<u32>,
}

/// Bytes asked for per socket read.
const READ_LEN: usize = 16 * 1024;
/// How often every operation in flight is looked at (a lost notice).
const SWEEP: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> Result<()> {
    // The completion signal is blocked before any thread exists, so every
    // thread inherits the mask and the signal waits for the signalfd.
    let signal = posix::completion_signal();
    let completions = posix::signal_fd(signal)?;
    let start = Startup::begin(
        "aio",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let max = args.common.max_conns();
    posix::init(args.aio_threads.unwrap_or(max.min(4096) as u32), 1);
    let mut server = Server {
        host: ServerHost::for_process(&start.shared),
        listener: Some(start.listener),
        conns: Slab::new(),
        timers: Timers::new(),
        signal,
        stopping_since: None,
        accept_paused_until: None,
    };
    cli::ready(&start.shown);
    server.run(&completions)
}

/// One connection: its state machine and the one operation it has in
/// flight (glibc serves the requests of a descriptor in order anyway).
struct Slot {
    fd: OwnedFd,
    conn: Conn,
    _admitted: Admitted,
    timer: Option<Instant>,
    op: Option<Box<Op>>,
    /// The file a `/file` request reads.
    file: Option<std::fs::File>,
    /// Closed: freed once its operation in flight has completed.
    closing: bool,
}

struct Server {
    host: ServerHost,
    listener: Option<OwnedFd>,
    conns: Slab<Slot>,
    timers: Timers,
    signal: libc::c_int,
    stopping_since: Option<Instant>,
    accept_paused_until: Option<Instant>,
}

impl Server {
    fn run(&mut self, completions: &OwnedFd) -> Result<()> {
        let mut last_sweep = Instant::now();
        loop {
            // 1. Wait for completions, a connection, a stop, or a deadline.
            let now = Instant::now();
            self.accept_paused_until = self.accept_paused_until.filter(|&t| now < t);
            let accepting = self.accept_paused_until.is_none() && self.stopping_since.is_none();
            let mut wake = [
                self.timers.next(),
                Some(last_sweep + SWEEP),
                self.accept_paused_until,
            ];
            let when = wake.iter_mut().flatten().min().copied();
            let ms = when.map_or(1000, |t| t.saturating_duration_since(now).as_millis() + 1);
            let mut fds = vec![
                PollFd::new(completions.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals::stop_fd(), PollFlags::POLLIN),
            ];
            if let (Some(l), true) = (&self.listener, accepting) {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::from(ms.min(1000) as u16));
            let listener_ready = fds
                .get(2)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
            drop(fds);
            let now = Instant::now();
            // 2. Completions: each queued signal names a connection whose
            // operation is over; the sweep looks at every one in flight.
            let mut done = Vec::new();
            posix::read_completions(completions, |token| done.push(token));
            if now >= last_sweep + SWEEP {
                last_sweep = now;
                done.extend(
                    self.conns
                        .iter()
                        .filter(|(_, s)| s.op.is_some())
                        .map(|(t, _)| t),
                );
            }
            for token in done {
                self.complete(token, now);
            }
            // 3. New connections, each starting with an aio_read.
            if listener_ready {
                self.accept(now)?;
            }
            // 4. Deadlines: parked /wait, slow heads, idle peers.
            self.run_timers();
            // 5. Stopping: idle connections close; leave when none is left.
            if signals::stop_requested() {
                signals::drain_stop_fd();
                self.stop(now);
            }
            if self.stopping_since.is_some() && self.conns.is_empty() {
                return Ok(());
            }
        }
    }

    fn accept(&mut self, now: Instant) -> Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let result = loop {
            match net::accept_next(&listener, SockFlag::SOCK_CLOEXEC) {
                Ok(Accepted::Conn(fd)) => self.add_conn(fd, now),
                Ok(Accepted::Nothing) => break Ok(()),
                Ok(Accepted::Exhausted) => {
                    self.accept_paused_until = Some(now + net::ACCEPT_PAUSE);
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.listener = Some(listener);
        result
    }

    fn add_conn(&mut self, fd: OwnedFd, now: Instant) {
        let Some(admitted) = self.host.shared().admit() else {
            return self.host.shared().refuse(fd);
        };
        // glibc's threads make blocking calls on it: a blocking socket.
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
        net::prepare_accepted(&fd);
        self.host.stats().opened();
        let token = self.conns.insert(Slot {
            fd,
            conn: self.host.shared().new_conn(now),
            _admitted: admitted,
            timer: None,
            op: None,
            file: None,
            closing: false,
        });
        self.drive(token);
    }

    /// The operation of connection `token` may be over: collect its result
    /// and hand it to the state machine.
    fn complete(&mut self, token: usize, now: Instant) {
        let Some(slot) = self.conns.get_mut(token) else {
            return;
        };
        let Some(op) = slot.op.as_mut() else {
            return;
        };
        let Some(result) = op.result() else {
            return; // Still in flight (a sweep, or a stale notice).
        };
        let op = slot.op.take().expect("an operation");
        if slot.closing {
            return self.free(token);
        }
        let host = &mut self.host;
        match (op.kind, result) {
            (Kind::Recv, Ok(0)) => slot.conn.handle_eof(now, host),
            (Kind::Recv, Ok(n)) => slot.conn.handle_input(op.data(n), now, host),
            (Kind::Send, Ok(n)) if n > 0 => slot.conn.advance_output(n, now, host),
            (Kind::FileRead, read) => {
                let read = read.map(|n| op.data(n));
                slot.conn.file_read(read, now, host);
            }
            // An error, or a write of nothing: the peer is gone.
            _ => return self.close(token),
        }
        self.drive(token);
    }

    /// After any change to a connection: start what it needs next (one
    /// operation at a time: a file read, a write, a read), or close it.
    fn drive(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        let now = Instant::now();
        if slot.op.is_some() {
            // A read blocked in a glibc thread, while the connection now has
            // a response to write (a 408) or must close: end it.
            let (close, write) = (slot.conn.wants_close(), !slot.conn.output().is_empty());
            posix::unblock(
                slot.op.as_deref(),
                &slot.fd,
                close,
                write || !slot.conn.wants_read(),
            );
        } else {
            let (fd, sig) = (slot.fd.as_raw_fd(), self.signal);
            let start =
                |kind, fd, len, data: &[u8], at| Op::start(kind, fd, len, data, at, sig, token);
            let started = match slot.conn.take_file_request() {
                Some(FileRequest::Read { offset, len }) if slot.file.is_some() => {
                    let file = slot.file.as_ref().map_or(-1, |f| f.as_raw_fd());
                    Some(start(Kind::FileRead, file, len, &[], offset))
                }
                // open(2) has no asynchronous form in POSIX AIO: done here.
                Some(request) => {
                    let dir = self.host.shared().data_dir.clone();
                    host::serve_file(
                        &dir,
                        request,
                        &mut slot.conn,
                        &mut slot.file,
                        &mut self.host,
                        now,
                    );
                    return self.drive(token);
                }
                None if !slot.conn.output().is_empty() => {
                    let out = slot.conn.output();
                    Some(start(Kind::Send, fd, out.len(), out, 0))
                }
                None if slot.conn.wants_close() => return self.close(token),
                None if slot.conn.wants_read() => Some(start(Kind::Recv, fd, READ_LEN, &[], 0)),
                None => None,
            };
            match started {
                Some(Ok(op)) => slot.op = Some(op),
                Some(Err(e)) => {
                    eprintln!("aio-server: cannot start an operation: {e}");
                    return self.close(token);
                }
                None => {}
            }
        }
        self.timers
            .schedule(&mut slot.timer, token, slot.conn.poll_timeout());
    }

    /// Closes a connection; with an operation in flight, once it is over.
    fn close(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        slot.closing = true;
        if slot.op.is_some() {
            // glibc cannot cancel a request its thread is running (aio_cancel
            // says AIO_NOTCANCELED): end the blocked call instead.
            let _ = shutdown(slot.fd.as_raw_fd(), Shutdown::Both);
        } else {
            self.free(token);
        }
    }

    fn free(&mut self, token: usize) {
        drop(self.conns.remove(token));
        self.host.stats().closed();
    }

    /// Deadlines that came due. Stale heap entries are skipped.
    fn run_timers(&mut self) {
        let now = Instant::now();
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

    /// SIGTERM/SIGINT: take the backlog, close the listener, and let each
    /// connection close once idle (`signals::may_close`).
    fn stop(&mut self, now: Instant) {
        if let Some(listener) = self.listener.take() {
            self.stopping_since = Some(now);
            while let Ok(Accepted::Conn(fd)) = net::accept_next(&listener, SockFlag::SOCK_CLOEXEC) {
                self.add_conn(fd, now);
            }
        }
        let since = self.stopping_since.unwrap_or(now);
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
