//! # cgi-server — fork + execve of a program per request (CGI/1.1)
//!
//! The Common Gateway Interface (RFC 3875), as NCSA httpd and Apache's
//! mod_cgi ran it: for every request the server **forks and executes a
//! program**, hands it the request as environment variables (the
//! "meta-variables": `REQUEST_METHOD`, `QUERY_STRING`, `PATH_INFO`,
//! `HTTP_*`, …) and the body on its stdin, and reads the response from its
//! stdout: a CGI head (`Status:`, `Content-Type`, `Location`, other
//! fields), a blank line, the body. `fork-server` pays a fork per request;
//! this model pays the fork **and** the `execve` **and** the program's
//! start-up — for an interpreter such as `php-cgi`, loading and
//! initialising the whole language before the first line of the script.
//! That start-up is what FastCGI (`fpm-server`) was invented to pay once.
//!
//! ```text
//!   acceptor ─> thread per connection (thread-server's structure)
//!   connection thread, per request:
//!     pipe ×2 ─> fork ─> child: setpgid, dup2 → 0/1, close_range(3..), execve(program)
//!             └> parent: poll { socket ← response, stdin → body,
//!                               stdout → Conn::program_output, pidfd → exit }
//!                        waitpid ─> Conn::program_exit ─> response
//! ```
//!
//! **One request costs** (besides the connection's reads and writes): two
//! `pipe2`, `clone` (the connection thread's process copied: page tables
//! of the whole server), in the child `setpgid`, `dup2` ×2, `close_range`
//! and `execve` (the new program's address space built from scratch: the
//! loader, shared libraries, relocations, its `main`), the program's own
//! work and `exit_group`; in the server `pidfd_open`, a few `poll`, `read`
//! and `write` on the pipes, `wait4`. CPU µs per request against
//! `fork-server` (fork only) and `fpm-server` (neither) is measured in
//! `docs/models/cgi-fastcgi.md`.
//!
//! **The protocol stays in the workload.** The connection's `Conn` runs in
//! program mode (`Conn::run_programs`): it frames requests as every model
//! does, builds each request's meta-variables from checked values only
//! (`workload/src/cgi.rs`: header names normalised, a name that could
//! collide after normalising dropped, `Proxy:` never `HTTP_PROXY`
//! (httpoxy), `PATH_INFO` computed from the path and a decoded control
//! character refused (CVE-2019-11043)), parses the program's output and
//! answers in HTTP or FastCGI. Bad output — no head, a malformed field, a
//! program that exits non-zero or writes nothing — is a 502 and the server
//! goes on; a program still running at `--cgi-timeout` is killed (its
//! whole process group) and answered 504. `/status` is the server's own.
//!
//! **Why a thread per connection and not fork-server's process?** The
//! connection's own process would then fork again for the program: two
//! forks per request. A thread forks once, and the child does only
//! async-signal-safe calls before `execve` (everything it needs is built
//! before the fork), which is what `posix_spawn` does too.
//!
//! **Trade-off.** Any language, perfect isolation, nothing to leak between
//! requests, a crash costs one request. But process creation and program
//! start-up on every request, nothing (a cache, a database connection, a
//! compiled script) survives a request, and a slow program holds a process.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin cgi-server
//! -- --listen 127.0.0.1:8080` (the program is `hello-cgi`, built beside
//! it: every route of the workload through the workload crate), then `curl
//! 127.0.0.1:8080/hello`. With PHP: `--program /usr/bin/php-cgi --script
//! suite/peers/workload.php`.

mod program;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use iomodels_servers::blocking::{self, ServeHost};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net::{self, ListenOptions};
use iomodels_servers::startup::{Startup, Workers};
use iomodels_workload::cgi::ProgramRequest;
use iomodels_workload::routes::Status;
use iomodels_workload::{Conn, Host};

/// CGI/1.1: fork + execve of a program per request (RFC 3875).
#[derive(Debug, Parser)]
#[command(name = "cgi-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// The CGI program run for each request (default: `hello-cgi` beside
    /// this binary, the workload as a CGI program).
    #[arg(long, value_name = "PATH")]
    program: Option<PathBuf>,
    /// A script for an interpreter given as --program (php-cgi), passed as
    /// SCRIPT_FILENAME.
    #[arg(long, value_name = "PATH")]
    script: Option<PathBuf>,
    /// Kill a program still running after this long (its request gets 504).
    #[arg(long, value_name = "S", default_value = "30", value_parser = cli::parse_seconds)]
    cgi_timeout: Duration,
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let program = program::Program::new(
        args.program.as_deref(),
        args.script.as_deref(),
        args.cgi_timeout,
    )?;
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        ..
    } = Startup::begin(
        "cgi",
        &args.common,
        Workers::Fixed(0),
        ListenOptions::BLOCKING,
    )?;
    let program = Arc::new(program.with_server(&shared.data_dir, shared.timeouts.idle));
    net::set_recv_timeout(&listener, blocking::TICK);
    cli::ready(&shown);
    // thread-server's loop: a thread per connection, bounded by
    // --max-conns; the threads run the shared blocking serve loop, which
    // calls `run_program` below for each request. Stopping, the threads
    // finish what they have in flight (their programs included: a program
    // is never killed by a stop).
    blocking::thread_per_connection(&listener, &shared, move |shared, n| {
        CgiHost::new(shared, n, program.clone())
    })
}

/// A connection thread's host: the server's, plus the program to run.
struct CgiHost {
    inner: ServerHost,
    program: Arc<program::Program>,
}

impl CgiHost {
    fn new(shared: &Shared, index: usize, program: Arc<program::Program>) -> CgiHost {
        CgiHost {
            inner: ServerHost::for_thread(shared, index),
            program,
        }
    }
}

impl ServeHost for CgiHost {
    fn shared(&self) -> &Shared {
        self.inner.shared()
    }

    fn runs_programs(&self) -> bool {
        true
    }

    fn run_program(&mut self, request: Box<ProgramRequest>, conn: &mut Conn, fd: BorrowedFd<'_>) {
        let program = self.program.clone();
        program.run(&request, conn, fd, self);
    }
}

impl Host for CgiHost {
    fn response_headers(&self) -> &[u8] {
        self.inner.response_headers()
    }
    fn max_conns(&self) -> u64 {
        self.inner.max_conns()
    }
    fn status(&mut self) -> Status {
        self.inner.status()
    }
    fn on_request(&mut self) {
        self.inner.on_request()
    }
    fn on_write_timeout(&mut self) {
        self.inner.on_write_timeout()
    }
}
