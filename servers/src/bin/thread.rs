//! # thread-server — a thread per connection
//!
//! UNP ch.30's design 6 and the classic Java (pre-NIO) server: the main
//! thread blocks in `accept`; each connection gets a new thread that serves
//! it to its end with blocking `read`/`write`, then exits. `--max-conns`
//! bounds the threads alive at once; connections over it are refused (503,
//! FastCGI OVERLOADED). (Apache's worker MPM is not this: it runs a fixed
//! pool of threads per process, closer to `threadpool-server`.)
//!
//! ```text
//!   main:     accept ─> spawn ─> accept ─> spawn ─> …
//!   thread 1:   read/write … close, exit
//!   thread 2:           read/write … (blocks in /wait, on disk, on a slow peer)
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write` in the thread
//! that owns the connection; each connection also costs a `clone`, a stack
//! `mmap` (with its guard page) and the thread's exit — tens of
//! microseconds, paid again for every new connection.
//!
//! **Trade-off.** Code as simple as the iterative server, concurrency like
//! prefork without a fixed cap: every connection may block. But each
//! connection costs a whole thread — a stack, a kernel task, a context
//! switch per wake-up — so 10,000 idle keep-alive connections are 10,000
//! sleeping threads, and short connections pay thread creation each time.
//!
//! **When it wins**: moderate numbers of long, busy connections with
//! blocking handlers. **Where it breaks**: many idle connections (memory,
//! scheduler) and connection churn. Compare with `threadpool-server`
//! (threads made once) and `epoll-server` (no thread per connection).
//!
//! **Where the rules live**: the loop above — accept, admit under
//! `--max-conns`, spawn, and on a stop wait for the threads — is
//! `blocking::thread_per_connection` (cgi-server's front end is the same);
//! the serve loop each thread runs (read, hand bytes to the workload's
//! `Conn`, write, sleep through `/wait`, let go of a stuck writer) is
//! `blocking::serve`; accept errors `net::accept_next`.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin thread-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::process::ExitCode;

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};

/// A thread per connection (UNP design 6), bounded by --max-conns.
#[derive(Debug, Parser)]
#[command(name = "thread-server", version, long_about = None)]
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
        "thread",
        &args.common,
        Workers::Fixed(0),
        ListenOptions::BLOCKING,
    )?;
    net::set_recv_timeout(&listener, blocking::TICK);
    cli::ready(&shown);
    // main: accept; a new thread for each connection, which serves it to
    // its end and exits (`--max-conns` bounds the threads alive at once);
    // on a stop, wait for the threads to finish what they have in flight.
    blocking::thread_per_connection(&listener, &shared, ServerHost::for_thread)
}
