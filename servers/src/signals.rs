//! SIGTERM and SIGINT as a flag and a self-pipe.
//!
//! The handler is installed *without* SA_RESTART, so a blocking call
//! (accept, read, waitpid) returns EINTR and the model looks at
//! [`stop_requested`]. Event loops register [`stop_fd`] (the read end of a
//! non-blocking pipe the handler writes one byte to) with their readiness
//! API, the classic self-pipe trick: the signal becomes just another event.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// After a stop, a connection that has not sent a whole request yet (taken
/// from the backlog, or accepted just before the stop) gets this long to
/// send one; connections that already answered close once idle. The one
/// graceful-stop rule every model applies, through [`may_close`].
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// While stopping: may a connection that has answered `answered` requests
/// be told to close once idle? `since` is when the stop was asked (or when
/// the connection arrived, if later).
pub fn may_close(answered: u64, since: Instant, now: Instant) -> bool {
    answered > 0 || now >= since + STOP_GRACE
}

static STOP: AtomicBool = AtomicBool::new(false);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid
        // one-byte static; a full pipe (EAGAIN) already holds a wake-up.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// Installs the SIGTERM/SIGINT handler and ignores SIGPIPE (a peer that
/// went away is an EPIPE from write, not a dead server). Call once per
/// process, again in a forked child (it gets a pipe of its own).
pub fn install() -> anyhow::Result<()> {
    let pipe = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    PIPE_WRITE.store(pipe.1.as_raw_fd(), Ordering::SeqCst);
    PIPE.set(pipe)
        .map_err(|_| anyhow::anyhow!("signals::install called twice"))?;
    STOP.store(false, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only touches atomics and calls write(2), both
    // async-signal-safe.
    unsafe {
        signal::sigaction(Signal::SIGTERM, &action)?;
        signal::sigaction(Signal::SIGINT, &action)?;
        signal::sigaction(
            Signal::SIGPIPE,
            &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
        )?;
    }
    Ok(())
}

extern "C" fn on_child(_: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: as in `on_stop`: write(2) is async-signal-safe.
        unsafe { libc::write(fd, b"c".as_ptr().cast(), 1) };
    }
}

/// Also wakes [`stop_fd`] when a child exits (SIGCHLD), without setting the
/// stop flag: a master process then sleeps in poll(2) on one descriptor for
/// both "a worker died" and "stop".
pub fn wake_on_child_exit() -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_child),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls write(2), which is async-signal-safe.
    unsafe { signal::sigaction(Signal::SIGCHLD, &action)? };
    Ok(())
}

/// Re-arms the handler in a forked child: a pipe of its own (the parent's
/// is shared with every sibling), the default SIGCHLD, and SIGTERM when the
/// parent dies (PR_SET_PDEATHSIG), so workers never outlive a killed master.
/// `parent` is the pid of the process that forked. A child that forks
/// children of its own (swoole-server's manager) calls it again in each.
pub fn reinstall_in_child(parent: nix::unistd::Pid) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // The child keeps its new pipe for its whole life: both ends are
    // leaked on purpose, so the borrowed descriptor of `stop_fd` stays valid.
    PIPE_WRITE.store(w.into_raw_fd(), Ordering::SeqCst);
    CHILD_READ.store(r.into_raw_fd(), Ordering::SeqCst);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe { signal::sigaction(Signal::SIGCHLD, &default)? };
    // The parent may have died before PR_SET_PDEATHSIG took effect.
    if nix::unistd::getppid() != parent {
        request_stop();
    }
    Ok(())
}

/// The read end of a forked child's own self-pipe (-1: not a child).
static CHILD_READ: AtomicI32 = AtomicI32::new(-1);

/// Whether SIGTERM or SIGINT arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sets the stop flag as the handler would (for tests and for models that
/// stop for other reasons).
pub fn request_stop() {
    on_stop(0);
}

/// The read end of the self-pipe: readable once a stop was asked.
pub fn stop_fd() -> BorrowedFd<'static> {
    use std::os::fd::AsFd;
    let child = CHILD_READ.load(Ordering::SeqCst);
    if child >= 0 {
        // SAFETY: `reinstall_in_child` leaked this descriptor: it stays
        // open for the rest of the process's life.
        return unsafe { BorrowedFd::borrow_raw(child) };
    }
    match PIPE.get() {
        Some((r, _)) => r.as_fd(),
        None => panic!("signals::install was not called"),
    }
}

/// Empties the self-pipe after a wake-up.
pub fn drain_stop_fd() {
    let mut buf = [0u8; 64];
    while let Ok(n) = nix::unistd::read(stop_fd(), &mut buf) {
        if n == 0 {
            break;
        }
    }
}
