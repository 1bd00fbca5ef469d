//! The manager and the processes it forks: workers that run whole
//! requests handed over by the reactors, and task workers for offloaded
//! ones. Each request runs through an ordinary `Conn` of the workload in
//! the worker, on the real clock.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::scoreboard::{Scoreboard, State};
use iomodels_servers::{ipc, signals};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::{Args, Wiring, LAST, OFFLOAD};

/// The manager process: forks the workers and task workers, replaces any
/// that exit, and stops them all on SIGTERM.
pub fn manage(args: &Args, shared: &Shared, board: Scoreboard, wiring: &Wiring) -> i32 {
    let me = nix::unistd::getpid();
    // Which process fills which place: (task worker?, index).
    let mut children: HashMap<Pid, (bool, usize)> = HashMap::new();
    let spawn = |task: bool, index: usize| -> anyhow::Result<Pid> {
        // SAFETY: the manager is single-threaded.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The manager's signal handlers stay (SIGTERM sets the stop
                // flag); the worker also dies with the manager.
                let orphan = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
                    || nix::unistd::getppid() != me;
                let code = if orphan {
                    1
                } else if task {
                    task_worker(shared, &wiring.task_server[index])
                } else {
                    worker(args, shared, board, index, wiring)
                };
                std::process::exit(code)
            }
        }
    };
    let places = (0..wiring.worker.len())
        .map(|w| (false, w))
        .chain((0..wiring.task_server.len()).map(|t| (true, t)));
    for (task, index) in places {
        match spawn(task, index) {
            Ok(pid) => {
                children.insert(pid, (task, index));
            }
            Err(e) => {
                eprintln!("swoole-server: manager: {e:#}");
                return 1;
            }
        }
    }
    let mut forwarded = false;
    loop {
        let mut fds = [PollFd::new(signals::stop_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        signals::drain_stop_fd();
        let stopping = signals::stop_requested();
        if stopping && !forwarded {
            for pid in children.keys() {
                let _ = kill(*pid, Signal::SIGTERM);
            }
            forwarded = true;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let Some((task, index)) = children.remove(&pid) else {
                        continue;
                    };
                    if stopping {
                        continue;
                    }
                    if !matches!(status, WaitStatus::Exited(_, 0)) {
                        eprintln!(
                            "swoole-server: worker {pid} ended ({status:?}); starting a new one"
                        );
                        // A worker that cannot start must not become a fork storm.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    match spawn(task, index) {
                        Ok(pid) => {
                            children.insert(pid, (task, index));
                        }
                        Err(e) => eprintln!("swoole-server: manager: {e:#}"),
                    }
                }
            }
        }
        if stopping && children.is_empty() {
            return 0;
        }
    }
}

/// Runs one request's bytes through a fresh `Conn` and returns the
/// response bytes. A `/wait` sleeps here and a `/file` is read here: the
/// worker blocks, the reactors do not.
fn execute(host: &mut ServerHost, flags: u8, request: &[u8]) -> Vec<u8> {
    let mut conn = host.shared().new_conn(Instant::now());
    if flags & LAST != 0 {
        conn.single_request();
    }
    conn.handle_input(request, Instant::now(), host);
    let mut out = Vec::new();
    loop {
        if !conn.output().is_empty() {
            out.extend_from_slice(conn.output());
            let n = conn.output().len();
            conn.advance_output(n, Instant::now(), host);
        } else if let Some(until) = conn.parked_until() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), host);
        } else if !host.serve_file(&mut conn, Instant::now()) {
            return out;
        }
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
    let mut served = 0u64;
    let mut turn = 0;
    while !signals::stop_requested() {
        slot.set_state(State::Idle);
        turn += 1;
        let Some(r) = wait_readable(pairs, turn) else {
            continue;
        };
        let (head, request) = match ipc::read(&pairs[r]) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("swoole-server: worker {}: read: {e}", std::process::id());
                return 1;
            }
        };
        slot.set_state(State::Executing);
        let out = if head.flags & OFFLOAD != 0 && !tasks.is_empty() {
            // taskwait: a task worker runs it; this worker waits.
            let t = (served as usize + index) % tasks.len();
            match ipc::write(&tasks[t], head, &request).and_then(|()| ipc::read(&tasks[t])) {
                Ok(Some((_, out))) => out,
                _ => execute(&mut host, head.flags, &request),
            }
        } else {
            execute(&mut host, head.flags, &request)
        };
        if let Err(e) = ipc::write(&pairs[r], head, &out) {
            eprintln!("swoole-server: worker {}: write: {e}", std::process::id());
            return 1;
        }
        served += 1;
        if args.max_request > 0 && served >= args.max_request {
            return 0;
        }
    }
    0
}

/// A task worker: requests offloaded by workers, one at a time.
fn task_worker(shared: &Shared, pairs: &[OwnedFd]) -> i32 {
    let mut host = ServerHost::for_process(shared);
    let mut turn = 0;
    while !signals::stop_requested() {
        turn += 1;
        let Some(w) = wait_readable(pairs, turn) else {
            continue;
        };
        let Ok(Some((head, request))) = ipc::read(&pairs[w]) else {
            return 0;
        };
        let out = execute(&mut host, head.flags, &request);
        if ipc::write(&pairs[w], head, &out).is_err() {
            return 1;
        }
    }
    0
}

/// Waits (a tick at most) for one of `fds` to be readable; its index.
fn wait_readable(fds: &[OwnedFd], start: usize) -> Option<usize> {
    let mut polls: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut polls, PollTimeout::from(1000u16)) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let ready: Vec<bool> = polls
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect();
    // Start from a rotating index so no reactor starves the others.
    (0..fds.len())
        .map(|i| (start + i) % fds.len())
        .find(|&i| ready[i])
}
