//! The runtime's supervisor, seen through prefork-server: a worker that
//! dies right after its start is replaced after a back-off that doubles
//! (100, 200, 400 ms), not in a tight loop; the stop still ends the master
//! with status 0.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits for the master's one worker, other than `old`.
fn worker(master: u32, old: Option<u32>, limit: Duration) -> (u32, Instant) {
    let end = Instant::now() + limit;
    loop {
        if let Some(&pid) = children(master).iter().find(|&&p| Some(p) != old) {
            return (pid, Instant::now());
        }
        assert!(Instant::now() < end, "no new worker within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_worker_dying_young_is_replaced_after_a_doubling_back_off() {
    let mut server = Command::new(util::bin_path("prefork-server"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let master = server.id();
    util::read_ready_line(server.stdout.take().unwrap(), "prefork-server");
    let (tx, lines) = mpsc::channel();
    let stderr = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut pid, _) = worker(master, None, Duration::from_secs(2));
    for expected in [100, 200, 400] {
        // Killed well within a second of its fork: a young failure.
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        let killed = Instant::now();
        let line = lines.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(
            line.contains("was killed by SIGKILL")
                && line.ends_with(&format!("starting a new one in {expected} ms")),
            "{line}"
        );
        let (next, seen) = worker(master, Some(pid), Duration::from_secs(2));
        let waited = seen - killed;
        eprintln!("back-off {expected} ms: replaced after {waited:?}");
        assert!(waited >= Duration::from_millis(expected - 10), "{waited:?}");
        pid = next;
    }
    kill(Pid::from_raw(master as i32), Signal::SIGTERM).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "master did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
