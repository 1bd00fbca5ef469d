//! # iterative-server — one connection at a time, blocking
//!
//! UNP ch.30's design 0, the baseline every other model is measured
//! against: one process, one thread, `accept` a connection, serve it to its
//! end with blocking `read`/`write`, then `accept` the next. Nothing runs
//! concurrently, so there is nothing to coordinate.
//!
//! ```text
//!   loop:  accept ──> read ─> (route) ─> write ─> read ─> … ─> close ──┐
//!     ^                                                                 │
//!     └─────────────────────────────────────────────────────────────────┘
//!   every other client waits in the listen backlog meanwhile
//! ```
//!
//! **One keep-alive request costs** one `read` and one `write` (plus
//! `accept`, `setsockopt` and `close` per connection), and a context
//! switch: the thread sleeps in `read` after every response. It is UNP's
//! baseline because it does no process control at all, not because it is
//! cheap: uring-server makes fewer system calls (its share of one
//! `io_uring_enter`), and in the committed run
//! `results/20261123-150458` iterative-server spent 25.6 µs of CPU per
//! `/hello` against epoll-server's 6.8 (mostly system time: the sleep and
//! wake-up per request).
//!
//! **Trade-off.** The simplest server there is — while one client at a
//! time is all there is. A second client
//! waits until the first closes its connection: with keep-alive clients, a
//! single idle connection stops the whole server until `--idle-timeout`;
//! a slow client holds everyone for up to `--header-timeout`; `/wait`
//! serialises everyone.
//!
//! **When it wins**: one client making short requests over fresh
//! connections (a health check, a CLI tool). **Where it breaks**: any
//! concurrency at all. Compare with `fork-server` (one process per request)
//! and `prefork-server` (N of these loops sharing a listener).
//!
//! **Where the rules live**: the serve loop (read, hand bytes to the
//! workload's `Conn`, write, sleep through `/wait`, let go of a stuck
//! writer) is `servers/src/blocking.rs`; `--max-conns` is `Shared::admit`,
//! accept errors `net::accept_next`. This file holds only how the model
//! hands connections to workers.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin iterative-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::process::ExitCode;

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};

/// One connection at a time: accept, serve it to its end, accept the next (UNP design 0).
#[derive(Debug, Parser)]
#[command(name = "iterative-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,
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
        "iterative",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::BLOCKING,
    )?;
    net::set_recv_timeout(&listener, blocking::TICK);
    let mut host = ServerHost::for_process(&shared);
    let stats = host.stats();
    let mut buf = vec![0u8; 64 * 1024];
    cli::ready(&shown);
    // The whole model: accept one, serve it to its end, accept the next.
    blocking::accept_loop(&listener, |fd, origin| {
        stats.opened();
        net::prepare_accepted(&fd);
        blocking::serve(fd, &mut host, &mut buf, origin);
        stats.closed();
    })
}
