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
//! **Where the rules live**: the serve loop (read, hand bytes to the
//! workload's `Conn`, write, sleep through `/wait`, let go of a stuck
//! writer) is `servers/src/blocking.rs`; `--max-conns` is `Shared::admit`,
//! accept errors `net::accept_next`. This file holds only how the model
//! hands connections to workers.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin thread-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};

/// A thread per connection (UNP design 6), bounded by --max-conns.
#[derive(Debug, Parser)]
#[command(name = "thread-server", version, about, long_about = None)]
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
    let live = Arc::new(AtomicUsize::new(0));
    let mut next = 0usize;
    cli::ready(&shown);
    blocking::accept_loop(&listener, |fd, origin| {
        // --max-conns bounds the threads alive at once.
        let Some(admitted) = shared.admit() else {
            shared.refuse(fd);
            return;
        };
        // A new thread for this connection; it ends with the connection.
        live.fetch_add(1, Ordering::SeqCst);
        next += 1;
        let (shared, live_now, index) = (shared.clone(), live.clone(), next);
        let spawned = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut host = ServerHost::for_thread(&shared, index);
                let mut buf = vec![0u8; 16 * 1024];
                shared.stats.opened();
                net::prepare_accepted(&fd);
                blocking::serve(fd, &mut host, &mut buf, origin);
                shared.stats.closed();
                live_now.fetch_sub(1, Ordering::SeqCst);
                drop(admitted);
            });
        if let Err(e) = spawned {
            // Out of threads: the connection (moved into the failed closure) is closed.
            eprintln!("thread-server: cannot start a thread: {e}");
            live.fetch_sub(1, Ordering::SeqCst);
        }
    })?;
    // Stopping: the threads finish what they have in flight.
    while live.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
