//! # poll-server — one thread, poll(2)
//!
//! The multiplexing of TLPI ch.63 and the C10K page: one thread, every
//! socket non-blocking, and each time round the loop the thread hands the
//! kernel an array of `pollfd` — every connection and what it waits for —
//! and sleeps in `poll` until some are ready or the next deadline.
//!
//! ```text
//!   loop:
//!     build [ {listener,IN} {self-pipe,IN} {conn1,IN} {conn2,OUT} … ]   O(n)
//!     poll(array, timeout = next deadline)      kernel walks all n    O(n)
//!     walk the array for revents, do the I/O                         O(n)
//!     fire due deadlines
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write`, plus a share
//! of one `poll` — but that `poll` copies and checks *every* connection,
//! busy or idle. With 50 busy connections that is nothing; add 10,000 idle
//! keep-alive connections and each wake-up walks 10,000 entries twice (in
//! the kernel and here) to find a handful that are ready.
//!
//! **Trade-off.** Portable (POSIX), no descriptor limit but the process's
//! own (unlike select's 1024), simple state: the interest set is rebuilt
//! from the connections each time. But the cost per wake-up is O(all
//! connections), not O(ready ones): that is the problem epoll was made for
//! (TLPI table 63-9).
//!
//! **When it wins**: a few hundred connections, most of them busy.
//! **Where it breaks**: many idle connections. Compare with `select-server`
//! (the same with a fixed-size bitmap) and `epoll-server` (the kernel keeps
//! the interest set and returns only ready descriptors).
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin poll-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::{AsFd, OwnedFd};
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
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One thread, poll(2) over an array rebuilt each time round the loop.
#[derive(Debug, Parser)]
#[command(name = "poll-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait by sleeping in the loop, to show what one blocking call does to a reactor
    #[arg(long)]
    blocking_wait: bool,
}

/// Tokens above any slab index.
const LISTENER: usize = usize::MAX;
const STOP: usize = usize::MAX - 1;

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
        "poll",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let mut listener: Option<OwnedFd> = Some(listener);
    let host = ServerHost::for_process(&shared);
    let mut reactor = Reactor::new(host, ReadUntil::Short, args.blocking_wait);
    let mut tokens: Vec<usize> = Vec::new();
    let mut ready: Vec<(usize, PollFlags)> = Vec::new();
    cli::ready(&shown);

    loop {
        // 1. The pollfd array: what every descriptor waits for, this time.
        let mut fds = Vec::with_capacity(reactor.conns.len() + 2);
        tokens.clear();
        if let (Some(l), false) = (&listener, reactor.accept_paused(Instant::now())) {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            tokens.push(LISTENER);
        }
        fds.push(PollFd::new(signals::stop_fd(), PollFlags::POLLIN));
        tokens.push(STOP);
        for (token, c) in reactor.conns.iter() {
            let mut events = PollFlags::empty();
            if c.interest.read {
                events |= PollFlags::POLLIN;
            }
            if c.interest.write {
                events |= PollFlags::POLLOUT;
            }
            // An entry with no events still reports errors and hang-ups.
            fds.push(PollFd::new(c.fd.as_fd(), events));
            tokens.push(token);
        }

        // 2. Sleep until something is ready or the next deadline.
        let timeout = match reactor.wait_ms(Instant::now()) {
            Some(ms) => PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow::anyhow!("poll: {e}")),
        }

        // 3. Walk the whole array for the few that are ready.
        ready.clear();
        for (fd, token) in fds.iter().zip(&tokens) {
            if let Some(revents) = fd.revents().filter(|r| !r.is_empty()) {
                ready.push((*token, revents));
            }
        }
        drop(fds);
        let now = Instant::now();
        for &(token, revents) in &ready {
            match token {
                LISTENER => {
                    let l = listener.as_ref().expect("listener while listening");
                    // On exhaustion the reactor pauses accepting (step 1 leaves
                    // the listener out until the pause ends).
                    reactor.accept(l, now, |_, _| Some(0));
                }
                STOP => {
                    signals::drain_stop_fd();
                    if let Some(l) = listener.take() {
                        // Take what the backlog holds, then stop listening.
                        reactor.accept(&l, now, |_, _| Some(0));
                    }
                    reactor.begin_stop(now);
                }
                token => {
                    let readable = revents
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
                    reactor.ready(token, readable, now);
                }
            }
        }

        // 4. Deadlines; a stop in progress.
        reactor.expire();
        if reactor.stopping() && reactor.drain_step() {
            return Ok(());
        }
    }
}
