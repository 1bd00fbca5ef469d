//! # fork-server — a new process per request, CGI style
//!
//! UNP ch.30's design 1 and the CGI era: the parent blocks in `accept`;
//! for each connection it `fork`s a child that serves exactly one request
//! (HTTP answers `Connection: close`, FastCGI closes after END_REQUEST) and
//! exits. The parent never touches a request; it only reaps children in its
//! SIGCHLD handler (UNP's `sig_chld`: `waitpid(-1, WNOHANG)` in a loop, so
//! no zombie survives even when signals merge) and bounds how many live at
//! once (`--max-conns`, default 256): over it, it waits for one to exit.
//!
//! ```text
//!   parent:  accept ─> fork ─> close(conn) ─> accept ─> fork ─> …
//!              │ SIGCHLD -> waitpid(-1, WNOHANG) until none
//!   child:     read request ─> write response ─> close ─> exit
//! ```
//!
//! **One request costs** its own process: `accept`, `clone` (copying the
//! page tables of the parent), the request's `read` and `write`, `close`,
//! `exit_group`, and the parent's `wait4` — plus the TCP handshake and
//! teardown of a fresh connection, since nothing is kept alive. Compare its
//! CPU µs per request with `prefork-server`'s: that difference is what
//! php-fpm and FastCGI were invented to remove.
//!
//! **Trade-off.** Perfect isolation and the simplest possible handler (a
//! crash, a leak, a global variable: all gone when the child exits). But
//! every request pays process creation and a new connection, and nothing
//! (a cache, a database connection) outlives a request.
//!
//! **FastCGI: it breaks the keep-connection contract.** A web server that
//! sets `FCGI_KEEP_CONN` in BEGIN_REQUEST asks the application to leave the
//! connection open for the next request (FastCGI 1.0 §5.1); the child
//! closes it anyway, since it exits. That is allowed here as the model's
//! lesson, and nginx copes: with `fastcgi_keep_conn on` and an upstream
//! `keepalive` pool it keeps only connections still open after a response
//! (ngx_http_upstream_keepalive_module), so each request simply costs it a
//! new connection to this server — the cost FastCGI's persistent
//! connections exist to avoid.
//!
//! **When it wins**: rare requests that must be isolated (CGI scripts,
//! inetd). **Where it breaks**: request rates above a few thousand per
//! second. Compare with `prefork-server`.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin fork-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use iomodels_servers::blocking::{self, Origin};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::ListenOptions;
use iomodels_servers::startup::{Startup, Workers};
use iomodels_servers::{net, signals};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// A process per request, CGI style: fork, serve one request, exit (UNP design 1).
#[derive(Debug, Parser)]
#[command(name = "fork-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,
}

/// Children alive now: the SIGCHLD handler counts them down.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// UNP's `sig_chld`: reap every child that has exited. Signals of the same
/// kind merge while one is pending, so one SIGCHLD may stand for many
/// exits: loop until `waitpid` finds none.
extern "C" fn reap_children(_: libc::c_int) {
    // waitpid(2) is async-signal-safe, and so are the atomics.
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if matches!(status, WaitStatus::StillAlive) {
            break;
        }
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
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
        "fork",
        &args.common,
        Workers::Fixed(0),
        ListenOptions::BLOCKING,
    )?;
    let reap = SigAction::new(
        SigHandler::Handler(reap_children),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler calls only waitpid(2) and atomics, both
    // async-signal-safe; no SA_RESTART, so accept(2) returns EINTR.
    unsafe { signal::sigaction(Signal::SIGCHLD, &reap)? };
    let limit = args.common.max_conns.unwrap_or(256) as usize;
    net::set_recv_timeout(&listener, blocking::TICK);
    let parent = nix::unistd::getpid();
    cli::ready(&shown);

    blocking::accept_loop(&listener, |fd, _origin| {
        // At the limit: wait for a child to exit (the handler counts it).
        while LIVE.load(Ordering::SeqCst) >= limit {
            std::thread::sleep(Duration::from_millis(1));
        }
        LIVE.fetch_add(1, Ordering::SeqCst);
        shared.stats.opened();
        // SAFETY: the parent is single-threaded, so the child starts with a
        // consistent heap; it only serves one connection and exits.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let mut host = ServerHost::for_process(&shared);
                let mut buf = vec![0u8; 64 * 1024];
                if signals::reinstall_in_child(parent).is_ok() {
                    net::prepare_accepted(&fd);
                    blocking::serve(fd, &mut host, &mut buf, Origin::Single);
                }
                shared.stats.closed();
                // SAFETY: _exit leaves without the parent's atexit work or
                // destructors (the data dir is the parent's to remove).
                unsafe { libc::_exit(0) };
            }
            Ok(ForkResult::Parent { .. }) => {}
            Err(e) => {
                eprintln!("fork-server: fork: {e}");
                LIVE.fetch_sub(1, Ordering::SeqCst);
                shared.stats.closed();
            }
        }
        // The parent's copy of the connection is closed here (fd dropped).
    })?;
    // Stopping: the children finish their one request each.
    while LIVE.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
