//! # nonblocking-server — one thread, O_NONBLOCK sweeps, no readiness API
//!
//! The "non-blocking I/O" of the classic five I/O models (blocking,
//! non-blocking, multiplexing, signal-driven, asynchronous): every socket
//! is non-blocking and there is no `select`, `poll` or `epoll` at all. The
//! thread sweeps: try `accept`, try `read` on every connection, `write`
//! what is pending; a call that has nothing to do returns EAGAIN at once.
//! When a whole sweep found nothing, it sleeps `--sleep-us` (or, with
//! `--spin`, not at all) and sweeps again.
//!
//! ```text
//!   loop:
//!     accept4      -> EAGAIN (usually)
//!     read conn 1  -> EAGAIN        a system call per connection per sweep,
//!     read conn 2  -> 31 bytes  ->  busy or not
//!        … write
//!     read conn n  -> EAGAIN
//!     nothing moved? nanosleep(--sleep-us)   (--spin: never)
//! ```
//!
//! **One keep-alive request costs** its `read` and `write` plus every
//! fruitless `read` of every other connection between its arrival and its
//! turn: the CPU is spent polling instead of the kernel telling us. Idle,
//! the server still wakes 1,000,000 / `--sleep-us` times a second and sweeps
//! every connection; with `--spin` it burns a whole core doing nothing.
//!
//! **Trade-off.** The sleep is a dial between latency and idle CPU: a
//! request arriving during the sleep waits for it to end (up to
//! `--sleep-us` added latency), a shorter sleep costs more CPU while
//! nothing happens, and every sweep costs O(connections) system calls.
//!
//! **When it wins**: almost never on a shared machine — but spinning on a
//! dedicated core is how kernel-bypass stacks (DPDK) get their lowest
//! latencies. **Where it breaks**: idle CPU, many connections. Compare with
//! `poll-server` (the kernel waits for us) and `epoll-server`.
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin nonblocking-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{Reactor, ReadUntil};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::ListenOptions;
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};

/// One thread sweeping O_NONBLOCK sockets with no readiness API at all.
#[derive(Debug, Parser)]
#[command(name = "nonblocking-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Microseconds to sleep after a sweep that found nothing to do
    #[arg(long, value_name = "US", default_value_t = 1000)]
    sleep_us: u64,

    /// Never sleep: sweep again at once (burns a core while idle)
    #[arg(long)]
    spin: bool,

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
        "nonblocking",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let mut listener = Some(listener);
    let host = ServerHost::for_process(&shared);
    let mut reactor = Reactor::new(host, ReadUntil::Short, args.blocking_wait);
    let nap = Duration::from_micros(args.sleep_us);
    let mut tokens: Vec<usize> = Vec::new();
    cli::ready(&shown);

    loop {
        let now = Instant::now();
        let mut moved = false;

        // 1. Try to accept (EAGAIN when nobody is waiting; not at all while
        // the reactor pauses accepting after running out of descriptors).
        if let (Some(l), false) = (&listener, reactor.accept_paused(now)) {
            let before = reactor.conns.len();
            reactor.accept(l, now, |_, _| Some(0));
            moved |= reactor.conns.len() != before;
        }

        // 2. Try every connection: read (EAGAIN when it sent nothing), write.
        tokens.clear();
        tokens.extend(reactor.conns.iter().map(|(t, _)| t));
        for &token in &tokens {
            let before = reactor.conns[token].moved;
            match reactor.ready(token, true, now) {
                Some(_) => moved |= reactor.conns[token].moved != before,
                None => moved = true, // closed
            }
        }

        // 3. A stop? The self-pipe is non-blocking too: just try to read it.
        if !reactor.stopping() && signals::stop_requested() {
            signals::drain_stop_fd();
            if let Some(l) = listener.take() {
                reactor.accept(&l, now, |_, _| Some(0));
            }
            reactor.begin_stop(now);
        }

        // 4. Deadlines; a stop in progress.
        reactor.expire();
        if reactor.stopping() && reactor.drain_step() {
            return Ok(());
        }

        // 5. Nothing moved in a whole sweep: nap (not past the next deadline).
        if !moved && !args.spin {
            let until_deadline = reactor.wait_ms(Instant::now()).map(Duration::from_millis);
            std::thread::sleep(until_deadline.map_or(nap, |d| d.min(nap)));
        }
    }
}
