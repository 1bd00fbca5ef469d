//! swoole-server: dispatch modes, task workers, recycling, respawn, and
//! reactors that a sleeping worker does not block. Each test is bounded to
//! a few seconds.

mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use iomodels_workload::Protocol;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use util::Server;

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The worker processes (the manager's children).
fn workers(s: &Server) -> Vec<u32> {
    let manager = children_of(s.child.id());
    manager.iter().flat_map(|&m| children_of(m)).collect()
}

/// The X-Worker values of `n` requests of `target` on one connection.
fn served_by(s: &Server, target: &str, n: usize) -> Vec<String> {
    let mut c = s.connect();
    (0..n)
        .map(|_| c.request("GET", target, b"").worker.unwrap())
        .collect()
}

#[test]
fn dispatch_round_robin_spreads_and_fd_mod_sticks() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &[
            "--reactors",
            "1",
            "--workers",
            "2",
            "--dispatch",
            "round-robin",
        ],
    );
    let by = served_by(&s, "/hello", 6);
    assert_eq!(by.iter().collect::<HashSet<_>>().len(), 2, "{by:?}");
    assert!(by.windows(2).all(|w| w[0] != w[1]), "alternates: {by:?}");
    drop(s);
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--reactors", "2", "--workers", "2", "--dispatch", "fd-mod"],
    );
    let by = served_by(&s, "/hello", 6);
    assert_eq!(by.iter().collect::<HashSet<_>>().len(), 1, "{by:?}");
    drop(s);
    let s = Server::start(
        "swoole-server",
        Protocol::Fcgi,
        &["--reactors", "2", "--workers", "3", "--dispatch", "idle"],
    );
    let by = served_by(&s, "/cpu?n=10", 9);
    assert!(!by.is_empty());
}

#[test]
fn task_workers_run_offloaded_requests() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--reactors", "1", "--workers", "2", "--task-workers", "1"],
    );
    let tasked: HashSet<String> = served_by(&s, "/cpu?n=1000&task=1", 4).into_iter().collect();
    let plain: HashSet<String> = served_by(&s, "/cpu?n=1000", 4).into_iter().collect();
    // One task worker ran every offloaded request; the workers the others.
    assert_eq!(tasked.len(), 1, "{tasked:?}");
    assert!(tasked.is_disjoint(&plain), "{tasked:?} {plain:?}");
    assert_eq!(workers(&s).len(), 3);
}

#[test]
fn a_sleeping_worker_does_not_block_the_reactor() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--reactors", "1", "--workers", "2"],
    );
    let mut slow = s.connect();
    let wire = slow.encode("GET", "/wait?us=600000", b"");
    slow.send(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    s.connect().request("GET", "/hello", b"");
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    let r = slow.read_response(false).unwrap();
    assert_eq!(r.body, b"waited 600000 us");
}

#[test]
fn max_request_recycles_and_killed_workers_are_replaced() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--reactors", "2", "--workers", "2", "--max-request", "5"],
    );
    // 30 requests on one connection, none failing, 5 per worker at most.
    let by: HashSet<String> = served_by(&s, "/hello", 30).into_iter().collect();
    assert!(by.len() >= 6, "{by:?}");
    // SIGKILL an idle worker: the manager forks its replacement.
    // (The last recycled worker's replacement may still be forking.)
    let end = Instant::now() + Duration::from_secs(1);
    while workers(&s).len() != 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = workers(&s);
    assert_eq!(before.len(), 2, "{before:?}");
    kill(Pid::from_raw(before[0] as i32), Signal::SIGKILL).unwrap();
    let end = Instant::now() + Duration::from_secs(1);
    loop {
        let now = workers(&s);
        if now.len() == 2 && !now.contains(&before[0]) {
            break;
        }
        assert!(Instant::now() < end, "not replaced: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    served_by(&s, "/hello", 10);
}

/// CPU ticks (user + system) the master process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A client that hangs up while its request is at a worker costs the
/// reactor nothing while it waits for the answer (no busy loop on HUP).
#[test]
fn a_client_gone_during_its_request_is_not_a_busy_loop() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--reactors", "1", "--workers", "1"],
    );
    let mut c = s.connect();
    let wire = c.encode("GET", "/wait?us=700000", b"");
    c.send(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(c);
    let before = cpu_ticks(s.child.id());
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks(s.child.id()) - before;
    assert!(used <= 10, "{used} ticks in 0.5 s");
    // The worker finishes; the server goes on serving.
    s.connect().request("GET", "/hello", b"");
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// `--mode base`: the workers are the master's own children, one thread
/// each (no manager, no reactor threads); a handler that blocks holds up
/// the other connections of its worker, not those of the other workers.
#[test]
fn base_mode_workers_are_reactors_and_a_blocking_handler_holds_its_own() {
    let s = Server::start(
        "swoole-server",
        Protocol::Http,
        &["--mode", "base", "--workers", "2"],
    );
    let kids = children_of(s.child.id());
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(threads(s.child.id()), 1);
    assert!(kids.iter().all(|&k| threads(k) == 1), "{kids:?}");
    // Two connections on one worker (a, b). Under a light load they land
    // on the same one: EPOLLEXCLUSIVE wakes the first worker that waits.
    let mut conns: Vec<(util::Client, String)> = Vec::new();
    let (a, b) = loop {
        assert!(conns.len() < 64, "no two connections reached one worker");
        let mut c = s.connect();
        let w = c.request("GET", "/hello", b"").worker.unwrap();
        conns.push((c, w));
        let last = conns.len() - 1;
        if let Some(a) = (0..last).find(|&i| conns[i].1 == conns[last].1) {
            break (a, last);
        }
    };
    // a's worker sleeps 3 s in its loop.
    let wire = conns[a].0.encode("GET", "/wait?us=3000000", b"");
    conns[a].0.send(&wire).unwrap();
    // Until that worker sleeps (its kernel wait channel names a nanosleep,
    // not epoll), so that it cannot be the one to take the next connection.
    let wchan = format!("/proc/{}/wchan", conns[a].1);
    let end = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("sleep")) {
        assert!(Instant::now() < end, "the worker never slept");
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    // A new connection goes to a worker that waits in epoll_wait: the
    // other one, which answers while a's request is still running.
    let mut d = s.connect();
    let d_worker = d.request("GET", "/hello", b"").worker.unwrap();
    let d_took = start.elapsed();
    assert_ne!(
        d_worker, conns[a].1,
        "the sleeping worker took a connection"
    );
    // b shares a's worker: its answer waits for the sleep to end.
    conns[b].0.request("GET", "/hello", b"");
    let b_took = start.elapsed();
    assert!(
        b_took >= Duration::from_secs(2),
        "b answered after {b_took:?}"
    );
    // (Seconds of slack: d needs its own worker, not the end of a's sleep.)
    assert!(
        d_took < Duration::from_millis(2500),
        "d answered after {d_took:?}"
    );
    let r = conns[a].0.read_response(false).unwrap();
    assert_eq!(r.body, b"waited 3000000 us");
}

/// `--mode base` takes no process-mode-only flags it cannot honour.
#[test]
fn base_mode_refuses_task_workers() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swoole-server"))
        .args([
            "--mode",
            "base",
            "--task-workers",
            "1",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--mode process"), "{err}");
}
