//! # threadpool-server — an acceptor, a bounded queue, N worker threads
//!
//! UNP ch.30's design 8 and most Java servlet containers: the main thread
//! blocks in `accept` and puts each connection in a bounded queue;
//! `--workers` threads, made once at start, take connections from the queue
//! and serve each to its end with blocking `read`/`write`. When the queue is
//! full the acceptor refuses the connection at once (HTTP 503, FastCGI
//! END_REQUEST(OVERLOADED)) instead of letting it hang.
//!
//! ```text
//!   acceptor: accept ─> queue.try_send ─┬─> [ conn | conn | … ] (--queue)
//!                                       └─ full: 503 / OVERLOADED, close
//!   worker 1..N:  queue.recv ─> read/write … close ─> queue.recv
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write` in the worker;
//! per connection, a futex hand-off through the queue instead of a thread
//! creation.
//!
//! **Trade-off.** Threads are made once, and the pool bounds memory and
//! concurrency: overload is refused explicitly. But like prefork, N
//! workers serve N connections at once: keep-alive connections pin workers,
//! and `/wait?us=10000` tops out at N × 100 requests/s (Little's law).
//!
//! **When it wins**: blocking handlers with bounded, predictable load.
//! **Where it breaks**: more concurrent (or idle keep-alive) connections
//! than workers. Compare with `thread-server` (unbounded threads) and
//! `prefork-server` (processes instead of threads).
//!
//! **Where the rules live**: the serve loop (read, hand bytes to the
//! workload's `Conn`, write, sleep through `/wait`, let go of a stuck
//! writer) is `servers/src/blocking.rs`; `--max-conns` is `Shared::admit`,
//! accept errors `net::accept_next`. This file holds only how the model
//! hands connections to workers.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin threadpool-server
//! -- --workers 4 --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex};

use clap::Parser;
use iomodels_servers::blocking::{self, Origin};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{Admitted, ServerHost};
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};

/// An acceptor thread, a bounded queue and N blocking worker threads (UNP design 8).
#[derive(Debug, Parser)]
#[command(name = "threadpool-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Connections that may wait in the queue for a free worker; beyond it they are refused
    #[arg(long, value_name = "N", default_value_t = 64)]
    queue: usize,
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
        workers,
        ..
    } = Startup::begin(
        "threadpool",
        &args.common,
        Workers::FromFlag,
        ListenOptions::BLOCKING,
    )?;
    net::set_recv_timeout(&listener, blocking::TICK);

    // The bounded queue: sync_channel(n) holds at most n connections.
    let (queue, inbox) = mpsc::sync_channel::<(OwnedFd, Origin, Admitted)>(args.queue);
    let inbox = Arc::new(Mutex::new(inbox));
    let pool: Vec<_> = (1..=workers as usize)
        .map(|index| {
            let (shared, inbox) = (shared.clone(), inbox.clone());
            std::thread::spawn(move || {
                let mut host = ServerHost::for_thread(&shared, index);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // Take the next connection; the queue closes at stop.
                    let next = inbox.lock().expect("queue lock").recv();
                    let Ok((fd, origin, _admitted)) = next else {
                        return;
                    };
                    shared.stats.opened();
                    net::prepare_accepted(&fd);
                    blocking::serve(fd, &mut host, &mut buf, origin);
                    shared.stats.closed();
                }
            })
        })
        .collect();
    cli::ready(&shown);

    blocking::accept_loop(&listener, |fd, origin| {
        // Over --max-conns (queued + being served): refuse.
        let Some(admitted) = shared.admit() else {
            return shared.refuse(fd);
        };
        match queue.try_send((fd, origin, admitted)) {
            Ok(()) => {}
            // Every worker busy and the queue full: refuse now, do not hang.
            Err(TrySendError::Full((fd, ..))) | Err(TrySendError::Disconnected((fd, ..))) => {
                shared.refuse(fd)
            }
        }
    })?;
    // Stopping: close the queue; workers finish it and what they hold.
    drop(queue);
    for worker in pool {
        let _ = worker.join();
    }
    Ok(())
}
