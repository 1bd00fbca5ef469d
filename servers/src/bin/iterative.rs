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
//! `accept`, `setsockopt` and `close` per connection): the fewest system
//! calls of any model, which is why it is the baseline for CPU per request.
//!
//! **Trade-off.** The simplest server there is, and the cheapest per
//! request — while one client at a time is all there is. A second client
//! waits until the first closes its connection: with keep-alive clients, a
//! single idle connection stops the whole server until `--idle-timeout`;
//! a slow client holds everyone for up to `--header-timeout`; `/wait`
//! serialises everyone.
//!
//! **When it wins**: one client making short requests over fresh
//! connections (a health check, a CLI tool). **Where it breaks**: any
//! concurrency at all. Compare with `fork-server` (one process per request)
//! and `prefork-server` (N of these loops sharing a listener).

use std::process::ExitCode;

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};

/// One connection at a time: accept, serve it to its end, accept the next (UNP design 0).
#[derive(Debug, Parser)]
#[command(name = "iterative-server", version, about, long_about = None)]
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
        net::set_nodelay(&fd);
        blocking::serve(fd, &mut host, &mut buf, origin);
        stats.closed();
    })
}
