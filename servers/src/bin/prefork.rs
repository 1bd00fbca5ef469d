//! # prefork-server — a master and N pre-forked workers blocking in accept
//!
//! php-fpm's `pm = static`, and UNP ch.30's "preforked server, no locking
//! around accept" (design 2). The master binds the listening socket, forks
//! `--workers` children, and then only watches them: a child that dies is
//! replaced. Each child loops: `accept` (blocking; the kernel wakes one
//! waiter per connection), serve that connection to its end with blocking
//! `read`/`write`, accept the next.
//!
//! ```text
//!             listen socket (one, shared by every child)
//!            /        |        \
//!   worker 1      worker 2      worker N      <- each blocks in accept(2),
//!   read/write    read/write    read/write       then in read(2) on its one
//!                                                connection
//!   master: poll(self-pipe) -> waitpid -> fork a replacement
//! ```
//!
//! **One keep-alive request costs** a `read` and a `write` in the worker
//! that holds the connection (plus `accept`, `setsockopt` and `close` once
//! per connection). No readiness API, no user-space scheduling: the kernel
//! schedules the processes.
//!
//! **Trade-off.** Simple, isolated (a crash kills one request), and every
//! worker may block — on `/wait`, on disk, on a slow client — without
//! stalling the others. But concurrency is capped at N: with N workers
//! each holding a keep-alive connection, connection N+1 waits in the
//! backlog, and `/wait?us=10000` tops out at N × 100 requests/s (Little's
//! law). Memory grows with N processes, not with connections.
//!
//! **When it wins**: CPU-bound or blocking handlers with few, short
//! connections — which is why PHP runs this way. **Where it breaks**: many
//! idle keep-alive connections (each pins a worker) and slow clients.
//! Compare with `epoll-server` (one thread, thousands of connections) and
//! `fpm-server` (the same design with a process manager).
//!
//! SIGTERM/SIGINT: the master forwards SIGTERM; each worker finishes its
//! connection's request in flight, answers whatever is still in the listen
//! backlog, and exits; the master exits 0 when all have.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use clap::Parser;
use iomodels_servers::blocking;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{DataDir, ServerHost, Shared};
use iomodels_servers::{net, signals};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A master that forks N workers which block in accept(2) (php-fpm pm=static).
#[derive(Debug, Parser)]
#[command(name = "prefork-server", version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    signals::install()?;
    signals::wake_on_child_exit()?;
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let workers = args.common.workers();
    let shared = Shared::new("prefork", &args.common, &data, workers)?;
    let (listener, shown) =
        net::listen(&args.common.listen, args.common.backlog, Default::default())?;
    // accept(2) honours SO_RCVTIMEO: a worker wakes each tick to look at
    // the stop flag even when no connection comes.
    net::set_recv_timeout(&listener, blocking::TICK);

    // Fork the workers; remember which slot each pid fills.
    let mut children: HashMap<Pid, u32> = HashMap::new();
    for slot in 0..workers {
        children.insert(spawn(&listener, &shared)?, slot);
    }
    cli::ready(&shown);

    // The master's loop: sleep until a signal (stop, or a child exited),
    // reap, replace. It never touches a connection.
    let mut forwarded = false;
    loop {
        let mut fds = [PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => signals::drain_stop_fd(),
            Err(e) => return Err(e.into()),
        }
        let stopping = signals::stop_requested();
        if stopping && !forwarded {
            for pid in children.keys() {
                let _ = kill(*pid, Signal::SIGTERM);
            }
            forwarded = true;
        }
        // Reap every child that exited (WNOHANG: never block here).
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let Some(slot) = children.remove(&pid) else {
                        continue;
                    };
                    if !stopping {
                        eprintln!(
                            "prefork-server: worker {pid} (slot {slot}) {}; starting a new one",
                            describe(status)
                        );
                        children.insert(spawn(&listener, &shared)?, slot);
                    }
                }
            }
        }
        if stopping && children.is_empty() {
            return Ok(());
        }
    }
}

/// Forks one worker; the child never returns.
fn spawn(listener: &OwnedFd, shared: &Shared) -> anyhow::Result<Pid> {
    let master = nix::unistd::getpid();
    // SAFETY: the master is single-threaded, so the child starts with a
    // consistent heap and no lock held by a vanished thread.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = match signals::reinstall_in_child(master) {
                Ok(()) => worker(listener, shared),
                Err(e) => {
                    eprintln!("prefork-server: worker: {e:#}");
                    1
                }
            };
            // Leave without running the master's destructors (the data dir).
            std::process::exit(code)
        }
    }
}

/// One worker: accept, serve the connection to its end, repeat.
fn worker(listener: &OwnedFd, shared: &Shared) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let stats = host.stats();
    let mut buf = vec![0u8; 64 * 1024];
    let served = blocking::accept_loop(listener, |fd, origin| {
        stats.opened();
        net::set_nodelay(&fd);
        blocking::serve(fd, &mut host, &mut buf, origin);
        stats.closed();
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("prefork-server: worker {}: {e:#}", std::process::id());
            1
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
        other => format!("stopped ({other:?})"),
    }
}
