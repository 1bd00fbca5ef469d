//! The manager and the processes it forks: workers that run whole
//! requests handed over by the reactors, and task workers for offloaded
//! ones. Each request runs through an ordinary `Conn` of the workload in
//! the worker, on the real clock.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::scoreboard::{Scoreboard, State};
use iomodels_servers::supervisor::Supervisor;
use iomodels_servers::{ipc, signals};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{Args, Wiring, LAST, MORE, OFFLOAD};

/// A place the manager keeps filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Worker(usize),
    Task(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Worker(w) => write!(f, "worker {w}"),
            Place::Task(t) => write!(f, "task worker {t}"),
        }
    }
}

/// The manager process: forks the workers and task workers, replaces any
/// that exit (with the runtime's back-off), and stops them all on SIGTERM —
/// the runtime's [`Supervisor`] does all of it.
pub fn manage(args: &Args, shared: &Shared, board: Scoreboard, wiring: &Wiring) -> i32 {
    let body = |place: &Place| match *place {
        Place::Worker(w) => worker(args, shared, board, w, wiring),
        Place::Task(t) => task_worker(shared, &wiring.task_server[t], args.ipc.kind()),
    };
    let run = || -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new()?;
        let places = (0..wiring.worker.len())
            .map(Place::Worker)
            .chain((0..wiring.task_server.len()).map(Place::Task));
        for place in places {
            supervisor.spawn(place, body)?;
        }
        supervisor.run(body)
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("swoole-server: manager: {e:#}");
            1
        }
    }
}

/// Runs one request's bytes through a fresh `Conn` and sends the response
/// piece by piece as the `Conn` produces it (`send(piece, last)`): a large
/// body streams within the workload's window here too, and a reactor that
/// stops reading (its client does not read) stops this worker. A `/wait`
/// sleeps here and a `/file` is read here: the worker blocks, the reactors
/// do not. The newest piece is held back until it is known whether more
/// follows, so that the last one carries the end: a small response is one
/// frame, not a piece and an empty "that was all" (one `write` here and
/// one `read` in the reactor less per request).
fn execute(
    host: &mut ServerHost,
    flags: u8,
    request: &[u8],
    mut send: impl FnMut(&[u8], bool) -> nix::Result<()>,
) -> nix::Result<()> {
    let mut conn = host.shared().new_conn(Instant::now());
    let mut file = None;
    if flags & LAST != 0 {
        conn.single_request();
    }
    conn.handle_input(request, Instant::now(), host);
    let mut held: Option<Vec<u8>> = None;
    loop {
        if !conn.output().is_empty() {
            if let Some(piece) = held.take() {
                send(&piece, false)?;
            }
            held = Some(conn.output().to_vec());
            let n = conn.output().len();
            conn.advance_output(n, Instant::now(), host);
        } else if let Some(until) = conn.parked_until() {
            // What is ready goes out before the sleep.
            if let Some(piece) = held.take() {
                send(&piece, false)?;
            }
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), host);
        } else if !host.serve_file(&mut conn, &mut file, Instant::now()) {
            return send(held.as_deref().unwrap_or_default(), true);
        }
    }
}

/// Sends one piece of a response as a frame (`MORE` unless it is the last).
fn frame_to(
    fd: &OwnedFd,
    kind: ipc::Kind,
    head: ipc::Head,
) -> impl FnMut(&[u8], bool) -> nix::Result<()> + '_ {
    move |piece, last| {
        let flags = if last { 0 } else { MORE };
        ipc::write(fd, kind, ipc::Head { flags, ..head }, piece)
    }
}

/// A worker process: take a request from any reactor, run it (or hand it
/// to a task worker and wait), answer, repeat.
fn worker(args: &Args, shared: &Shared, board: Scoreboard, index: usize, wiring: &Wiring) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let slot = &board.slots()[index];
    slot.reset(std::process::id(), State::Idle);
    let pairs = &wiring.worker[index];
    let tasks = &wiring.task_client[index];
    let kind = args.ipc.kind();
    let mut served = 0u64;
    let mut turn = 0;
    let mut closed = vec![false; pairs.len()];
    while !signals::stop_requested() {
        slot.set_state(State::Idle);
        turn += 1;
        if closed.iter().all(|&c| c) {
            return 0; // every reactor has gone: the server is stopping
        }
        let Some(r) = wait_readable(pairs, &closed, turn) else {
            continue;
        };
        let (head, request) = match ipc::read(&pairs[r], kind) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // That reactor has gone (the master is stopping): serve
                // the others until they go too.
                closed[r] = true;
                continue;
            }
            Err(e) => {
                eprintln!("swoole-server: worker {}: read: {e}", std::process::id());
                return 1;
            }
        };
        slot.set_state(State::Executing);
        let answered = if head.flags & OFFLOAD != 0 && !tasks.is_empty() {
            // taskwait: a task worker runs it; this worker passes its
            // answer on, piece by piece.
            let t = (served as usize + index) % tasks.len();
            ipc::write(&tasks[t], kind, head, &request).and_then(|()| loop {
                match ipc::read(&tasks[t], kind)? {
                    Some((h, piece)) => {
                        let last = h.flags & MORE == 0;
                        frame_to(&pairs[r], kind, head)(&piece, last)?;
                        if last {
                            break Ok(());
                        }
                    }
                    None => break Err(nix::errno::Errno::EPIPE),
                }
            })
        } else {
            execute(
                &mut host,
                head.flags,
                &request,
                frame_to(&pairs[r], kind, head),
            )
        };
        match answered {
            Ok(()) => {}
            // That reactor has gone (the master is stopping); a datagram
            // pair says so with ECONNREFUSED.
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED) => closed[r] = true,
            Err(e) => {
                eprintln!("swoole-server: worker {}: write: {e}", std::process::id());
                return 1;
            }
        }
        served += 1;
        if args.max_request > 0 && served >= args.max_request {
            return 0;
        }
    }
    0
}

/// A task worker: requests offloaded by workers, one at a time.
fn task_worker(shared: &Shared, pairs: &[OwnedFd], kind: ipc::Kind) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let mut turn = 0;
    while !signals::stop_requested() {
        turn += 1;
        let Some(w) = wait_readable(pairs, &vec![false; pairs.len()], turn) else {
            continue;
        };
        let Ok(Some((head, request))) = ipc::read(&pairs[w], kind) else {
            return 0;
        };
        let answer = frame_to(&pairs[w], kind, head);
        if execute(&mut host, head.flags, &request, answer).is_err() {
            return 1;
        }
    }
    0
}

/// Waits (a tick at most) for one of `fds` to be readable; its index.
/// Descriptors marked `closed` are left out (a reactor that has gone:
/// poll would report its hang-up at once, every time).
fn wait_readable(fds: &[OwnedFd], closed: &[bool], start: usize) -> Option<usize> {
    let open: Vec<usize> = (0..fds.len()).filter(|&i| !closed[i]).collect();
    let mut polls: Vec<PollFd> = open
        .iter()
        .map(|&i| PollFd::new(fds[i].as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut polls, PollTimeout::from(1000u16)) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let ready: Vec<usize> = polls
        .iter()
        .zip(&open)
        .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
        .map(|(_, &i)| i)
        .collect();
    // Start from a rotating index so no reactor starves the others.
    (0..fds.len())
        .map(|i| (start + i) % fds.len())
        .find(|i| ready.contains(i))
}
