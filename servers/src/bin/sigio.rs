//! # sigio-server — one thread, signal-driven I/O with real-time signals
//!
//! The "signal-driven I/O" of the five I/O models, in the Linux form that
//! high-performance servers used before epoll (nginx's rtsig module, the
//! phhttpd and X15 servers): each socket is put in O_ASYNC mode with
//! `F_SETOWN` (send signals to this process) and `F_SETSIG` (send this
//! *real-time* signal, which queues — one per event, each carrying the
//! descriptor in `si_fd` — instead of plain SIGIO, which merges). The
//! signal is blocked, and the loop takes queued signals one at a time with
//! `sigtimedwait`: the signal queue *is* the ready list.
//!
//! ```text
//!   kernel: data arrives on fd 7 ─> queue RT signal {si_fd = 7, si_band = POLLIN}
//!   loop:   sigtimedwait(RT, SIGIO; timeout = next deadline)
//!             RT, si_fd = listener  -> accept4 until EAGAIN, O_ASYNC each new socket
//!             RT, si_fd = conn      -> read until EAGAIN, write
//!             SIGIO (queue overflow) -> events were lost: poll(2) every socket
//! ```
//!
//! **One keep-alive request costs** a `sigtimedwait` (one per event:
//! `sigtimedwait` takes one siginfo per call; a `signalfd` read could take
//! many queued siginfo at once, the batching this model forgoes), a `read`, a second `read` that returns EAGAIN (a signal is
//! sent on a change of state, so the socket must be drained, like
//! edge-triggered epoll) and a `write` — and in the kernel, a siginfo
//! queued per event.
//!
//! **Trade-off.** Readiness is pushed to us, one descriptor at a time, so
//! there is no O(n) scan per wake-up (that was its attraction in 2000). But
//! one system call per event, and the real-time queue is bounded
//! (RLIMIT_SIGPENDING): when it overflows the kernel sends plain SIGIO and
//! the events are gone — the server must then fall back to a full `poll`
//! scan, exactly when it is busiest. Signals are also process-wide state:
//! a library that blocks or handles them differently breaks the server.
//!
//! **When it wins**: historically, many connections on kernels without
//! epoll. **Where it breaks**: bursts that overflow the queue, and any
//! program with other uses for signals. Compare with `epoll-server`
//! (edge-triggered epoll is the same idea, batched and without the queue).
//!
//! **Where the rules live**: the rules every event loop shares live in
//! `servers/src/event.rs`: the non-blocking read/write pump
//! (`Connection::pump`: read until the socket is empty, hand bytes to the
//! workload's `Conn`, write its output), the connection slab, deadlines,
//! `--max-conns` at adopt, the accept ladder and pause
//! (`net::accept_next`), and the graceful stop (`signals::may_close`). This
//! file holds only how the model waits.
//!
//! **Run it**: `cargo run --release -p iomodels-servers --bin sigio-server
//! -- --listen 127.0.0.1:8080`, then `curl 127.0.0.1:8080/hello`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use iomodels_servers::cli::{self, Common};
use iomodels_servers::event::{AcceptEnd, Reactor, ReadUntil};
use iomodels_servers::host::ServerHost;
use iomodels_servers::net::ListenOptions;
use iomodels_servers::signals;
use iomodels_servers::startup::{Startup, Workers};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One thread, O_ASYNC sockets, real-time signals taken with sigtimedwait.
#[derive(Debug, Parser)]
#[command(name = "sigio-server", version, long_about = None)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Serve /wait by sleeping in the loop, to show what one blocking call does to a reactor
    #[arg(long)]
    blocking_wait: bool,
}

fn main() -> ExitCode {
    cli::main(run)
}

/// What a descriptor is, indexed by its number (signals name descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Listener,
    Stop,
    Conn(usize),
}

fn run(args: Args) -> anyhow::Result<()> {
    let Startup {
        data: _data,
        shared,
        listener,
        shown,
        ..
    } = Startup::begin(
        "sigio",
        &args.common,
        Workers::Fixed(1),
        ListenOptions::NONBLOCKING,
    )?;
    let mut listener: Option<OwnedFd> = Some(listener);

    // The real-time signal every socket will send, blocked so that it queues
    // until sigtimedwait takes it (SIGIO too: it means the queue overflowed).
    let rtsig = sys::rt_signal();
    let waited = sys::block(&[rtsig, libc::SIGIO])?;
    let mut owners: Vec<Option<Owner>> = Vec::new();
    for (fd, owner) in [
        (
            listener.as_ref().expect("listener").as_raw_fd(),
            Owner::Listener,
        ),
        (signals::stop_fd().as_raw_fd(), Owner::Stop),
    ] {
        sys::signal_on_io(fd, rtsig)?;
        own(&mut owners, fd, Some(owner));
    }

    let host = ServerHost::for_process(&shared);
    let mut reactor = Reactor::new(host, ReadUntil::WouldBlock, args.blocking_wait);
    let mut fresh: Vec<usize> = Vec::new();
    // Accepting stopped on exhaustion: connections still wait in the
    // backlog, and no new signal will say so. Try again after the pause.
    let mut accept_again = false;
    cli::ready(&shown);

    loop {
        // 1. Take one queued signal (or time out at the next deadline).
        let timeout = reactor.wait_ms(Instant::now()).map(Duration::from_millis);
        let event = sys::wait(&waited, timeout)?;
        let now = Instant::now();

        // 2. Which descriptor, and what to do.
        let mut ready: Vec<(Owner, bool)> = Vec::new();
        if accept_again && !reactor.accept_paused(now) {
            accept_again = false;
            ready.push((Owner::Listener, true));
        }
        match event {
            None => {} // timeout, or a signal that interrupted us
            Some(sys::Event { signo, fd, band }) if signo == rtsig => {
                // A closed connection's entry stays behind until its number
                // is reused; a signal still queued for it is checked here.
                let owner = owners
                    .get(fd as usize)
                    .copied()
                    .flatten()
                    .filter(|o| match o {
                        Owner::Conn(token) => reactor
                            .conns
                            .get(*token)
                            .is_some_and(|c| c.fd.as_raw_fd() == fd),
                        _ => true,
                    });
                if let Some(owner) = owner {
                    let readable =
                        band & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) as libc::c_long != 0;
                    ready.push((owner, readable));
                }
            }
            Some(_) => {
                // Plain SIGIO: the real-time queue overflowed and events
                // were dropped. Ask every descriptor with one poll(2).
                ready = full_scan(listener.as_ref(), &reactor)?;
            }
        }
        for (owner, readable) in ready {
            match owner {
                Owner::Listener => {
                    let Some(l) = &listener else { continue };
                    if reactor.accept_paused(now) {
                        // Out of descriptors a moment ago: retry once the
                        // pause ends, not on every signal meanwhile.
                        accept_again = true;
                        continue;
                    }
                    fresh.clear();
                    let end = reactor.accept(l, now, |token, fd| {
                        // O_ASYNC on each new socket, then try it at once:
                        // data that came before that has no signal.
                        sys::signal_on_io(fd.as_raw_fd(), rtsig).ok()?;
                        fresh.push(token);
                        Some(0)
                    });
                    accept_again |= end == AcceptEnd::Exhausted;
                    for &token in &fresh {
                        own(
                            &mut owners,
                            reactor.conns[token].fd.as_raw_fd(),
                            Some(Owner::Conn(token)),
                        );
                        reactor.ready(token, true, now);
                    }
                }
                Owner::Stop => {
                    signals::drain_stop_fd();
                    if let Some(l) = listener.take() {
                        // Take what the backlog holds, then stop listening.
                        own(&mut owners, l.as_raw_fd(), None);
                        fresh.clear();
                        reactor.accept(&l, now, |token, fd| {
                            sys::signal_on_io(fd.as_raw_fd(), rtsig).ok()?;
                            fresh.push(token);
                            Some(0)
                        });
                        for &token in &fresh {
                            own(
                                &mut owners,
                                reactor.conns[token].fd.as_raw_fd(),
                                Some(Owner::Conn(token)),
                            );
                            reactor.ready(token, true, now);
                        }
                    }
                    reactor.begin_stop(now);
                }
                Owner::Conn(token) => {
                    reactor.ready(token, readable, now);
                }
            }
        }

        // 3. Deadlines; a stop in progress.
        reactor.expire();
        if reactor.stopping() && reactor.drain_step() {
            return Ok(());
        }
    }
}

/// Records what descriptor `fd` is.
fn own(owners: &mut Vec<Option<Owner>>, fd: RawFd, owner: Option<Owner>) {
    let i = fd as usize;
    if owners.len() <= i {
        owners.resize(i + 1, None);
    }
    owners[i] = owner;
}

/// The fallback after a queue overflow: one poll(2) over every descriptor.
fn full_scan(listener: Option<&OwnedFd>, reactor: &Reactor) -> anyhow::Result<Vec<(Owner, bool)>> {
    let mut owners = Vec::new();
    let mut fds = Vec::new();
    if let Some(l) = listener {
        fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        owners.push(Owner::Listener);
    }
    fds.push(PollFd::new(signals::stop_fd(), PollFlags::POLLIN));
    owners.push(Owner::Stop);
    for (token, c) in reactor.conns.iter() {
        fds.push(PollFd::new(
            c.fd.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT,
        ));
        owners.push(Owner::Conn(token));
    }
    poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds
        .iter()
        .zip(owners)
        .filter_map(|(fd, owner)| {
            let r = fd.revents().filter(|r| !r.is_empty())?;
            Some((
                owner,
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR),
            ))
        })
        .collect())
}

/// The calls nix does not have (F_SETSIG, real-time signal sets,
/// sigtimedwait's `si_fd`), in one small place.
mod sys {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;
    use std::time::Duration;

    /// `F_SETSIG` from <asm-generic/fcntl.h> (the libc crate lacks it).
    const F_SETSIG: libc::c_int = 10;

    /// The real-time signal the sockets send: SIGRTMIN+1 (glibc keeps the
    /// first few real-time signals for itself; SIGRTMIN() already skips them).
    pub fn rt_signal() -> libc::c_int {
        libc::SIGRTMIN() + 1
    }

    fn check(r: libc::c_int) -> io::Result<libc::c_int> {
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// Blocks `signals` for this thread; returns the set to wait for.
    pub fn block(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset and
        // pthread_sigmask read the initialised set; the old mask is not asked for.
        unsafe {
            check(libc::sigemptyset(set.as_mut_ptr()))?;
            for &s in signals {
                check(libc::sigaddset(set.as_mut_ptr(), s))?;
            }
            let set = set.assume_init();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(set)
        }
    }

    /// O_ASYNC on `fd`, owned by this process, sending `sig` with `si_fd` set.
    pub fn signal_on_io(fd: RawFd, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor the caller owns, with integer
        // arguments only; errors come back as -1 and errno.
        unsafe {
            check(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
            check(libc::fcntl(fd, F_SETSIG, sig))?;
            let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
            check(libc::fcntl(
                fd,
                libc::F_SETFL,
                flags | libc::O_ASYNC | libc::O_NONBLOCK,
            ))?;
        }
        Ok(())
    }

    /// One signal taken from the queue.
    #[derive(Debug, Clone, Copy)]
    pub struct Event {
        pub signo: libc::c_int,
        /// `si_fd`: the descriptor the event is about (real-time signals only).
        pub fd: RawFd,
        /// `si_band`: POLLIN, POLLOUT, … as poll(2) would report them.
        pub band: libc::c_long,
    }

    /// The head of `siginfo_t` for SIGPOLL-class signals on Linux: three
    /// ints, padding to 8 bytes on 64-bit, then `si_band` and `si_fd`.
    #[repr(C)]
    struct SigPollInfo {
        si_signo: libc::c_int,
        si_errno: libc::c_int,
        si_code: libc::c_int,
        #[cfg(target_pointer_width = "64")]
        _pad: libc::c_int,
        si_band: libc::c_long,
        si_fd: libc::c_int,
    }

    /// sigtimedwait: the next queued signal of `set`, or `None` at the
    /// timeout (or if another signal, such as SIGTERM, interrupted it).
    pub fn wait(set: &libc::sigset_t, timeout: Option<Duration>) -> io::Result<Option<Event>> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `set` is an initialised sigset, `info` is writable memory
        // of the right type, `ts_ptr` is null or points to a live timespec.
        let r = unsafe { libc::sigtimedwait(set, info.as_mut_ptr(), ts_ptr) };
        if r == -1 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: siginfo_t is larger than SigPollInfo and starts with the
        // same fields (the kernel's layout for SIGPOLL); it was zeroed, then
        // filled by the kernel.
        let head = unsafe { &*info.as_ptr().cast::<SigPollInfo>() };
        debug_assert_eq!(head.si_signo, r);
        let _ = (head.si_errno, head.si_code);
        Ok(Some(Event {
            signo: r,
            fd: head.si_fd,
            band: head.si_band,
        }))
    }
}
