//! Running one CGI program for one request: the environment, the fork and
//! `execve`, and the loop that moves bytes between the program's pipes,
//! the connection's `Conn` and its socket until the response is done.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use iomodels_workload::cgi::{ProgramRequest, Site};
use iomodels_workload::{Conn, Host, ProgramExit};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{self, MsgFlags, SockaddrLike, SockaddrStorage};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The program every request runs, with what its environment always has.
#[derive(Debug)]
pub struct Program {
    path: CString,
    script: Option<String>,
    timeout: Duration,
    /// `--idle-timeout`: a client that reads nothing for this long is let go.
    idle: Duration,
    document_root: String,
    /// Variables the server adds for programs: the data dir for /file.
    extra: Vec<(String, String)>,
}

impl Program {
    /// `path` (default: `hello-cgi` beside this binary) must be an
    /// executable file; `script` (SCRIPT_FILENAME) a readable one.
    pub fn new(
        path: Option<&Path>,
        script: Option<&Path>,
        timeout: Duration,
    ) -> anyhow::Result<Program> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()
                .context("cannot find this binary's directory")?
                .with_file_name("hello-cgi"),
        };
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("--program {}: cannot be read", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        anyhow::ensure!(
            meta.is_file() && meta.permissions().mode() & 0o111 != 0,
            "--program {} is not an executable file",
            path.display()
        );
        // php-cgi refuses a SCRIPT_FILENAME with `..` in it: canonical.
        let script = match script {
            Some(s) => {
                std::fs::File::open(s)
                    .with_context(|| format!("--script {}: cannot be read", s.display()))?;
                Some(std::fs::canonicalize(s)?.display().to_string())
            }
            None => None,
        };
        Ok(Program {
            path: CString::new(path.as_os_str().as_bytes())?,
            script,
            timeout,
            idle: Duration::from_secs(60),
            document_root: String::new(),
            extra: Vec::new(),
        })
    }

    /// `idle`: the server's idle timeout (a stuck writer is let go). And
    /// programs find the data dir (`/file`) as DOCUMENT_ROOT, and as
    /// IOMODELS_DATA_DIR (the name the PHP workload reads).
    pub fn with_server(mut self, dir: &Path, idle: Duration) -> Program {
        self.idle = idle;
        self.document_root = dir.display().to_string();
        self.extra = vec![("IOMODELS_DATA_DIR".into(), self.document_root.clone())];
        self
    }

    /// Runs the program for `request`, answering through `conn` on `sock`.
    pub fn run(
        &self,
        request: &ProgramRequest,
        conn: &mut Conn,
        sock: BorrowedFd<'_>,
        host: &mut dyn Host,
    ) {
        let env = self.environment(request, sock);
        match spawn(&self.path, &env) {
            Ok(child) => pump(
                child,
                &request.body,
                conn,
                sock,
                self.timeout,
                self.idle,
                host,
            ),
            Err(e) => {
                // Out of descriptors or processes, every request fails the
                // same way: one line a second says so, not one per request.
                static LAST: AtomicU64 = AtomicU64::new(0);
                let now_s = host_seconds();
                if LAST.swap(now_s, Ordering::Relaxed) != now_s {
                    eprintln!("cgi-server: cannot start the program: {e} (answering 502)");
                }
                conn.program_exit(ProgramExit::Failed, Instant::now(), host);
            }
        }
    }

    /// The meta-variables as `NAME=value` C strings for `execve`.
    fn environment(&self, request: &ProgramRequest, sock: BorrowedFd<'_>) -> Vec<CString> {
        let ip_port = |a: SockaddrStorage| {
            let (ip, port) = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => (v4.ip().to_string(), v4.port()),
                (_, Some(v6)) => (v6.ip().to_string(), v6.port()),
                _ => return None,
            };
            Some((ip, port))
        };
        let local = socket::getsockname::<SockaddrStorage>(sock.as_raw_fd())
            .ok()
            .and_then(ip_port);
        let remote = socket::getpeername::<SockaddrStorage>(sock.as_raw_fd())
            .ok()
            .and_then(|a| a.family().and(ip_port(a)));
        let (server_name, server_port) = local.unwrap_or(("localhost".into(), 0));
        let site = Site {
            software: "iomodels-cgi",
            server_name: &server_name,
            server_port,
            remote,
            document_root: &self.document_root,
            script_filename: self.script.as_deref(),
            extra: &self.extra,
        };
        let vars = request.meta_variables(&site);
        // Checked values never hold a NUL; one that did would be skipped.
        vars.into_iter()
            .filter_map(|(n, v)| CString::new(format!("{n}={v}")).ok())
            .collect()
    }
}

/// A started program: its pid (also its process group) and pipe ends.
struct Child {
    pid: Pid,
    stdin: OwnedFd,
    stdout: OwnedFd,
}

/// Forks, and in the child makes the pipes its stdin and stdout and
/// executes `path` with `env` as its whole environment.
fn spawn(path: &CString, env: &[CString]) -> nix::Result<Child> {
    let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Everything the child needs exists before the fork: between fork and
    // execve it may only make async-signal-safe calls (this process has
    // other threads, whose locks may be held at the fork).
    let argv = [path.as_ptr(), std::ptr::null()];
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|v| v.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (in_fd, out_fd) = (in_r.as_raw_fd(), out_w.as_raw_fd());
    // SAFETY: the child runs only async-signal-safe system calls on
    // memory prepared above, then execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only (see above); the pointers
        // stay valid since the child's copy of the memory is untouched.
        unsafe { exec_child(in_fd, out_fd, argv.as_ptr(), envp.as_ptr()) }
    }
    for fd in [&in_w, &out_r] {
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok(Child {
        pid: Pid::from_raw(pid),
        stdin: in_w,
        stdout: out_r,
    })
}

/// The child's side of [`spawn`]: never returns.
///
/// # Safety
/// Only in a child just forked; the pointers must be the NULL-terminated
/// arrays `execve` takes.
unsafe fn exec_child(
    stdin: libc::c_int,
    stdout: libc::c_int,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // SAFETY: each call is async-signal-safe and takes plain values or the
    // caller's valid pointers.
    unsafe {
        // Its own process group: a timeout kills the program and anything
        // it started.
        libc::setpgid(0, 0);
        libc::dup2(stdin, 0);
        libc::dup2(stdout, 1);
        // No descriptor of the server (listener, other clients' sockets)
        // may live on in the program: close all but 0, 1, 2.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // The server ignores SIGPIPE and blocks nothing; a program starts
        // with the defaults (an ignored signal stays ignored across exec).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(*argv, argv, envp);
        libc::_exit(127)
    }
}

/// A descriptor that becomes readable when process `pid` exits.
fn pidfd(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Moves bytes until the program's response is done: the body to the
/// program's stdin, its stdout to `conn`, `conn`'s output to the socket,
/// and the program's exit (a pidfd in the same poll) to `conn`.
fn pump(
    child: Child,
    body: &[u8],
    conn: &mut Conn,
    sock: BorrowedFd<'_>,
    timeout: Duration,
    idle: Duration,
    host: &mut dyn Host,
) {
    let deadline = Instant::now() + timeout;
    let mut progress = Instant::now();
    let exit_fd = pidfd(child.pid).ok();
    let mut stdin = (!body.is_empty()).then_some(child.stdin);
    let mut stdout = Some(child.stdout);
    let (mut sent, mut exit) = (0, None);
    let mut buf = vec![0u8; 16 * 1024];
    let end = loop {
        // 1. Write what the connection has for the client.
        while !conn.output().is_empty() {
            match socket::send(sock.as_raw_fd(), conn.output(), MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    progress = Instant::now();
                    conn.advance_output(n, progress, host);
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        // 2. Done: the response is complete (or cut), or the program has
        // exited and its output is all read.
        if !conn.program_running() {
            break None;
        }
        if let (None, Some(e)) = (&stdout, exit) {
            break Some(e);
        }
        let now = Instant::now();
        if now >= deadline {
            break Some(ProgramExit::TimedOut);
        }
        // A client that reads none of the response for a whole idle
        // timeout: let go of it (and of its program).
        if !conn.output().is_empty() && now >= progress + idle {
            host.on_write_timeout();
            break Some(ProgramExit::Failed);
        }
        // 3. Wait for any of: room on the socket, room in the stdin pipe,
        // output from the program (while the window has room), its exit.
        let none = PollFlags::empty();
        let flag = |on: bool, f| if on { f } else { none };
        let want_out = !conn.output().is_empty();
        let mut fds = vec![PollFd::new(sock, flag(want_out, PollFlags::POLLOUT))];
        let stdin_at = watch(&mut fds, stdin.as_ref(), PollFlags::POLLOUT);
        let stdout_at = watch(
            &mut fds,
            stdout.as_ref(),
            flag(conn.program_room(), PollFlags::POLLIN),
        );
        let exit_at = watch(
            &mut fds,
            exit_fd.as_ref(),
            flag(exit.is_none(), PollFlags::POLLIN),
        );
        let wake = deadline.min(progress + idle);
        let ms = wake
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, 1000) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break Some(ProgramExit::Failed),
        }
        let ready = |at: Option<usize>| {
            at.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (stdin_ready, stdout_ready) = (ready(stdin_at), ready(stdout_at));
        let exit_ready = exit_at.is_none() || ready(exit_at);
        drop(fds);
        // 4. The body, as far as the pipe takes it; closed when all sent
        // (the program sees EOF) or when the program stopped reading.
        if stdin_ready {
            if let Some(fd) = &stdin {
                match nix::unistd::write(fd, &body[sent..]) {
                    Ok(n) => sent += n,
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => sent = body.len(),
                }
            }
            if sent == body.len() {
                stdin = None;
            }
        }
        // 5. The program's output, into the connection (0: EOF).
        if stdout_ready {
            if let Some(fd) = &stdout {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => stdout = None,
                    Ok(n) => conn.program_output(&buf[..n], Instant::now(), host),
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => stdout = None,
                }
            }
        }
        // 6. Its exit (without a pidfd, looked for on every turn).
        if exit.is_none() && exit_ready {
            exit = match waitpid(child.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, 0)) => Some(ProgramExit::Success),
                Ok(WaitStatus::StillAlive) => None,
                _ => Some(ProgramExit::Failed),
            };
        }
    };
    // The program is reaped here in every case; one still running (a
    // timeout, a response already complete, a client gone) is killed with
    // its process group first.
    if exit.is_none() {
        let _ = killpg(child.pid, Signal::SIGKILL);
        let _ = waitpid(child.pid, None);
    }
    if let Some(e) = end {
        conn.program_exit(e, Instant::now(), host);
    }
}

/// Adds `fd` (when there is one) to a poll set; its index there.
fn watch<'a>(fds: &mut Vec<PollFd<'a>>, fd: Option<&'a OwnedFd>, f: PollFlags) -> Option<usize> {
    let fd = fd?;
    fds.push(PollFd::new(fd.as_fd(), f));
    Some(fds.len() - 1)
}

/// Whole seconds since the Unix epoch (for rate-limiting a message).
fn host_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
