//! The one owner of "a master process and its forked children": fork a
//! child into a *place*, forward a stop to the children, reap them
//! (`waitpid` with `WNOHANG`, never blocking), start a new child for a
//! place with a back-off when the last one failed right after its start,
//! and know when everything is gone after a stop.
//!
//! A place `K` is what a child stands for: prefork's slot (each with its
//! own listener under `--accept reuseport`), fpm's pool, swoole's worker or
//! task worker. Models with fixed places call [`Supervisor::run`], the whole
//! loop. A process manager that grows and shrinks (fpm) drives the same
//! parts itself: [`Supervisor::sleep`], [`Supervisor::reap`],
//! [`Supervisor::respawn`] and [`Supervisor::due`], [`Supervisor::retire`],
//! [`Supervisor::stop`] and [`Supervisor::done`].
//!
//! The back-off: a child that *failed* (a non-zero exit, or a signal nobody
//! here sent) within [`YOUNG`] of its start makes the next child of its
//! place wait [`FIRST_BACKOFF`], doubling with every further young failure
//! up to [`MAX_BACKOFF`]; a child that lived longer resets it. That holds
//! for a clean exit (status 0) too when it comes that early, so a worker
//! that cannot start (or finds its channel closed) cannot become a fork
//! storm; recycling after N requests, later than that, is never delayed.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::{net, signals};

/// A child that fails sooner than this after its fork "died right after
/// start": the next child of its place waits out a back-off.
pub const YOUNG: Duration = Duration::from_secs(1);
/// The wait after the first young failure of a place.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait, however often a place keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long [`Supervisor::run`] sleeps when nothing happens (it wakes at
/// once on a signal or a child's exit anyway).
const IDLE: Duration = Duration::from_secs(1);

/// A child as the supervisor tracks it.
#[derive(Debug)]
struct Child<K> {
    place: K,
    started: Instant,
    retired: bool,
    terminated: bool,
}

/// A child that was reaped.
#[derive(Debug, Clone)]
pub struct Exited<K> {
    /// The place it filled.
    pub place: K,
    pub pid: Pid,
    /// How it ended.
    pub status: WaitStatus,
    /// From its fork to its reaping.
    pub lived: Duration,
    /// It was asked to leave ([`Supervisor::retire`]).
    pub retired: bool,
    /// It was killed on purpose ([`Supervisor::terminate`]).
    pub terminated: bool,
}

impl<K> Exited<K> {
    /// Whether it failed: not a clean exit (status 0), not retired, not
    /// killed on purpose. A failure counts towards the back-off.
    pub fn failed(&self) -> bool {
        !(self.retired || self.terminated || matches!(self.status, WaitStatus::Exited(_, 0)))
    }

    /// Whether a signal killed it that the supervisor did not send (a
    /// crash: php-fpm's emergency restart counts these).
    pub fn crashed(&self) -> bool {
        !self.retired && !self.terminated && matches!(self.status, WaitStatus::Signaled(..))
    }

    /// "exited with status 1 after 3 ms", "was killed by SIGKILL after 2.1 s".
    pub fn describe(&self) -> String {
        let how = match self.status {
            WaitStatus::Exited(_, code) => format!("exited with status {code}"),
            WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
            other => format!("ended ({other:?})"),
        };
        format!("{how} after {}", show(self.lived))
    }
}

/// A stop in progress.
#[derive(Debug)]
struct Stopping {
    /// When the children left get SIGKILL (None: wait for them forever).
    kill_at: Option<Instant>,
    killed: bool,
}

/// A master's children, by place. See the module page.
#[derive(Debug)]
pub struct Supervisor<K> {
    children: HashMap<Pid, Child<K>>,
    /// Places waiting for a new child, and from when it may start.
    pending: Vec<(Instant, K)>,
    /// Consecutive young failures per place.
    failures: HashMap<K, u32>,
    stopping: Option<Stopping>,
}

impl<K: Clone + Eq + Hash> Supervisor<K> {
    /// A supervisor for this process, whose [`sleep`](Self::sleep) also
    /// wakes when a child exits (SIGCHLD on the self-pipe). Call after
    /// `signals::install` (or `reinstall_in_child` in a forked manager).
    pub fn new() -> anyhow::Result<Supervisor<K>> {
        signals::wake_on_child_exit().context("sigaction(SIGCHLD)")?;
        Ok(Supervisor {
            children: HashMap::new(),
            pending: Vec::new(),
            failures: HashMap::new(),
            stopping: None,
        })
    }

    /// Forks a child for `place` that runs `body` and exits with the status
    /// it returns (without running the master's destructors: a generated
    /// data dir stays the master's). In the child, the stop signals are
    /// re-armed with a self-pipe of its own, and SIGTERM comes when the
    /// master dies (`signals::reinstall_in_child`).
    pub fn spawn(&mut self, place: K, body: impl FnOnce(&K) -> i32) -> anyhow::Result<Pid> {
        let master = nix::unistd::getpid();
        // SAFETY: a supervising process is single-threaded when it forks
        // (every model forks before starting threads), so the child starts
        // with a consistent heap and no lock held by a vanished thread.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Parent { child } => {
                self.children.insert(
                    child,
                    Child {
                        place,
                        started: Instant::now(),
                        retired: false,
                        terminated: false,
                    },
                );
                Ok(child)
            }
            ForkResult::Child => {
                let run = || match signals::reinstall_in_child(master) {
                    Ok(()) => body(&place),
                    Err(e) => {
                        eprintln!("{}: worker: {e:#}", net::program());
                        1
                    }
                };
                // A panic must not unwind into the master's code in the child.
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or(101);
                std::process::exit(code)
            }
        }
    }

    /// Sleeps in poll(2) until a signal (a stop, a child's exit), one of
    /// `watch` becomes readable, `timeout` passes, or a pending place or
    /// the stop's kill deadline is due. Returns which of `watch` are
    /// readable.
    pub fn sleep(
        &mut self,
        watch: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> anyhow::Result<Vec<bool>> {
        let now = Instant::now();
        let mut wake = now + timeout;
        if let Some(at) = self.pending.iter().map(|(at, _)| *at).min() {
            wake = wake.min(at);
        }
        if let Some(Stopping {
            kill_at: Some(at),
            killed: false,
        }) = self.stopping
        {
            wake = wake.min(at);
        }
        let ms = wake.saturating_duration_since(now).as_millis();
        // Round up, so a due time is not missed by a fraction of a millisecond.
        let ms = u16::try_from(ms + 1).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
        fds.extend(watch.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        let ready = match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => fds[1..]
                .iter()
                .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .collect(),
            Err(Errno::EINTR) => vec![false; watch.len()],
            Err(e) => return Err(e).context("poll"),
        };
        signals::drain_stop_fd();
        Ok(ready)
    }

    /// Begins a stop: sends `sig` to every child (once; later calls do
    /// nothing), drops the pending places, and from then on starts nothing.
    /// With `kill_after`, [`reap`](Self::reap) kills the children still
    /// there after that long.
    pub fn stop(&mut self, sig: Signal, kill_after: Option<Duration>) {
        if self.stopping.is_some() {
            return;
        }
        for pid in self.children.keys() {
            let _ = kill(*pid, sig);
        }
        self.pending.clear();
        self.stopping = Some(Stopping {
            kill_at: kill_after.map(|d| Instant::now() + d),
            killed: false,
        });
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Whether a stop was asked and every child is gone.
    pub fn done(&self) -> bool {
        self.stopping.is_some() && self.children.is_empty()
    }

    /// Reaps every child that exited (never blocks), and after a stop whose
    /// deadline passed, kills the children left (SIGKILL, once).
    pub fn reap(&mut self) -> Vec<Exited<K>> {
        if let Some(s) = &mut self.stopping {
            if !s.killed && s.kill_at.is_some_and(|at| Instant::now() >= at) {
                s.killed = true;
                for pid in self.children.keys() {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
            }
        }
        let mut out = Vec::new();
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return out,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            out.push(Exited {
                place: child.place,
                pid,
                status,
                lived: child.started.elapsed(),
                retired: child.retired,
                terminated: child.terminated,
            });
        }
    }

    /// Schedules a new child for the place `gone` filled: at once, or after
    /// the back-off if it failed young. Returns the delay. Does nothing
    /// (and returns zero) while stopping.
    pub fn respawn(&mut self, gone: &Exited<K>) -> Duration {
        if self.stopping.is_some() {
            return Duration::ZERO;
        }
        let failures = self.failures.entry(gone.place.clone()).or_default();
        // Any exit nobody asked for, right after the fork: even a clean
        // one (a worker whose channel is gone exits 0 at once) must not
        // become a fork storm.
        let young = gone.lived < YOUNG && !gone.retired && !gone.terminated;
        let delay = if young {
            *failures += 1;
            FIRST_BACKOFF
                .saturating_mul(1 << (*failures - 1).min(16))
                .min(MAX_BACKOFF)
        } else {
            if gone.lived >= YOUNG {
                *failures = 0;
            }
            Duration::ZERO
        };
        self.pending
            .push((Instant::now() + delay, gone.place.clone()));
        delay
    }

    /// The scheduled places whose time has come (taken off the schedule):
    /// the caller spawns a child for each. Empty while stopping.
    pub fn due(&mut self) -> Vec<K> {
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending = later;
        due.into_iter().map(|(_, place)| place).collect()
    }

    /// How many new children `place` is waiting for.
    pub fn pending(&self, place: &K) -> usize {
        self.pending.iter().filter(|(_, p)| p == place).count()
    }

    /// Asks child `pid` to leave with `sig` (a pool shrinking, recycling):
    /// its exit is then neither a failure nor a crash. False when `pid` is
    /// not a child or was already retired.
    pub fn retire(&mut self, pid: Pid, sig: Signal) -> bool {
        match self.children.get_mut(&pid) {
            Some(c) if !c.retired => {
                c.retired = true;
                let _ = kill(pid, sig);
                true
            }
            _ => false,
        }
    }

    /// Kills child `pid` on purpose with `sig` (a stuck request): its
    /// exit is not a crash, and it is replaced like any other.
    pub fn terminate(&mut self, pid: Pid, sig: Signal) -> bool {
        match self.children.get_mut(&pid) {
            Some(c) => {
                c.terminated = true;
                let _ = kill(pid, sig);
                true
            }
            None => false,
        }
    }

    /// The live children and their places.
    pub fn children(&self) -> impl Iterator<Item = (Pid, &K)> {
        self.children.iter().map(|(pid, c)| (*pid, &c.place))
    }

    /// How many children are alive.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether no child is alive.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl<K: Clone + Eq + Hash + Display> Supervisor<K> {
    /// The whole life of a supervisor with fixed places (prefork's slots,
    /// swoole's workers), once their first children are spawned: sleep;
    /// on SIGTERM/SIGINT forward SIGTERM to every child; replace every
    /// child that exits before the stop (with the back-off), logging why;
    /// return when all are gone after the stop. `body` is what a child of
    /// a place runs.
    pub fn run(&mut self, mut body: impl FnMut(&K) -> i32) -> anyhow::Result<()> {
        let program = net::program();
        loop {
            self.sleep(&[], IDLE)?;
            if signals::stop_requested() {
                self.stop(Signal::SIGTERM, None);
            }
            for gone in self.reap() {
                if self.stopping() {
                    continue;
                }
                let delay = self.respawn(&gone);
                eprintln!(
                    "{program}: worker {} ({}) {}; starting a new one{}",
                    gone.pid,
                    gone.place,
                    gone.describe(),
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {}", show(delay))
                    }
                );
            }
            if self.done() {
                return Ok(());
            }
            for place in self.due() {
                if let Err(e) = self.spawn(place.clone(), &mut body) {
                    // fork failed (EAGAIN: too many processes): try again later.
                    eprintln!("{program}: {place}: {e:#}; trying again");
                    self.pending.push((Instant::now() + MAX_BACKOFF, place));
                }
            }
        }
    }
}

/// A duration for a log line: "3 ms", "2.1 s".
fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
