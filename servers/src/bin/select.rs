//! # select-server — one thread, select(2)
//!
//! The oldest multiplexing call (4.2BSD, 1983), as in TLPI ch.63: one
//! thread, non-blocking sockets, and each time round the loop two bitmaps —
//! descriptors to read from, descriptors to write to — filled from every
//! connection, handed to `select`, and scanned afterwards for the bits the
//! kernel left set.
//!
//! ```text
//!   loop:
//!     FD_ZERO; FD_SET every connection's fd in readfds / writefds   O(n)
//!     select(maxfd + 1, readfds, writefds, timeout = next deadline) O(maxfd)
//!     FD_ISSET for every connection, do the I/O                     O(n)
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write`, plus a share
//! of one `select`, which copies two bitmaps in and out (read and write;
//! this model passes no exception set) and checks every
//! descriptor up to the highest one: like poll, the cost of a wake-up grows
//! with all connections, not with the ready ones.
//!
//! **Trade-off.** Everywhere (even Windows sockets), and the bitmaps are
//! compact. But an `fd_set` holds descriptors below FD_SETSIZE (1024) only:
//! a descriptor numbered 1024 or more cannot be watched at all, and writing
//! its bit would scribble past the bitmap (nix's `FdSet` panics there). So
//! this server refuses such connections with 503 (FastCGI OVERLOADED) and
//! keeps serving the first thousand or so.
//!
//! **When it wins**: a handful of connections, portability. **Where it
//! breaks**: more than ~1,000 connections, many idle ones. Compare with
//! `poll-server` (no 1024 limit) and `epoll-server`.
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin select-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{Reactor, ReadUntil};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::ListenOptions;
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

/// One thread, select(2) over two bitmaps (descriptors below 1024 only).
#[derive(Debug, Parser)]
#[command(name = "select-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait by sleeping in the loop, to show what one blocking call does to a reactor
    #[arg(long)]
    blocking_wait: bool,
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        ..
    } = Startup::begin(
        "select",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let mut listener: Option<OwnedFd> = Some(listener);
    let host = ServerHost::for_process(&shared);
    let mut reactor = Reactor::new(host, ReadUntil::Short, args.blocking_wait);
    let mut ready: Vec<(usize, bool)> = Vec::new();
    // A descriptor at or above FD_SETSIZE has no bit in an fd_set: the
    // reactor refuses (503 / OVERLOADED) a connection we cannot watch.
    let mut register = |_: usize, fd: &OwnedFd| (fd.as_raw_fd() < FD_SETSIZE as i32).then_some(0);
    cli::ready(&shown);

    loop {
        // 1. Fill the bitmaps from every connection's interest.
        let mut readfds = FdSet::new();
        let mut writefds = FdSet::new();
        let mut maxfd = signals::stop_fd().as_raw_fd();
        readfds.insert(signals::stop_fd());
        if let (Some(l), false) = (&listener, reactor.accept_paused(Instant::now())) {
            readfds.insert(l.as_fd());
            maxfd = maxfd.max(l.as_raw_fd());
        }
        for (_, c) in reactor.conns.iter() {
            if c.interest.read {
                readfds.insert(c.fd.as_fd());
            }
            if c.interest.write {
                writefds.insert(c.fd.as_fd());
            }
            maxfd = maxfd.max(c.fd.as_raw_fd());
        }

        // 2. Sleep until something is ready or the next deadline.
        let mut timeout = reactor
            .wait_ms(Instant::now())
            .map(|ms| TimeVal::milliseconds(ms.min(60_000) as i64));
        match select(
            maxfd + 1,
            &mut readfds,
            &mut writefds,
            None,
            timeout.as_mut(),
        ) {
            Ok(_) => {}
            Err(Errno::EINTR) => {
                readfds.clear();
                writefds.clear();
            }
            Err(e) => return Err(anyhow::anyhow!("select: {e}")),
        }

        // 3. Test every connection's bits.
        ready.clear();
        for (token, c) in reactor.conns.iter() {
            let readable = readfds.contains(c.fd.as_fd());
            if readable || writefds.contains(c.fd.as_fd()) {
                ready.push((token, readable));
            }
        }
        let stop = readfds.contains(signals::stop_fd());
        let incoming = listener
            .as_ref()
            .is_some_and(|l| readfds.contains(l.as_fd()));
        let now = Instant::now();
        for &(token, readable) in &ready {
            reactor.ready(token, readable, now);
        }
        if incoming {
            let l = listener.as_ref().expect("listening");
            // On exhaustion the reactor pauses accepting (step 1 leaves the
            // listener out until the pause ends).
            reactor.accept(l, now, &mut register);
        }
        if stop {
            signals::drain_stop_fd();
            if let Some(l) = listener.take() {
                reactor.accept(&l, now, &mut register);
            }
            reactor.begin_stop(now);
        }

        // 4. Deadlines; a stop in progress.
        reactor.expire();
        if reactor.stopping() && reactor.drain_step() {
            return Ok(());
        }
    }
}
