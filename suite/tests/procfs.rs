//! /proc accounting over a process tree: a grandchild's CPU counts while it
//! runs (tree walk) and after it was reaped (cutime/cstime).
//!
//! Bounded by work seen, not by wall time: on a shared machine a busy loop
//! may get little CPU in a given second, so the test waits (up to a
//! deadline) until the tree has spent enough, then ends the loop itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iomodels_suite::procfs;

/// CPU the busy grandchild must have spent before the test stops it.
const ENOUGH_S: f64 = 0.2;
const DEADLINE: Duration = Duration::from_secs(60);

fn cpu_s(s: &procfs::Snapshot) -> f64 {
    s.user_s + s.sys_s
}

/// The parent of `pid`, from /proc/PID/stat (the field after the state).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}

#[test]
fn a_busy_grandchild_is_counted_live_and_after_reaping() {
    // sh (root) → timeout → sh busy loop; the root then sleeps.
    let mut root = Command::new("sh")
        .args(["-c", "timeout 90 sh -c 'while :; do :; done'; sleep 90"])
        .stdin(Stdio::null())
        .stderr(Stdio::null()) // the root says "Terminated" when the loop ends
        .spawn()
        .expect("sh");
    let pid = root.id();
    let before = procfs::snapshot(pid);
    let t0 = Instant::now();

    // Live: the tree walk sees the grandchild's CPU while it runs.
    let (spent_live, timeout_pid) = loop {
        std::thread::sleep(Duration::from_millis(50));
        let live = procfs::snapshot(pid);
        let tree = procfs::tree(pid);
        let spent = cpu_s(&live) - cpu_s(&before);
        let child = tree.iter().copied().find(|&p| parent_of(p) == Some(pid));
        if let (true, true, Some(child)) = (spent >= ENOUGH_S, tree.len() >= 3, child) {
            assert!(live.processes >= 3);
            break (spent, child);
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "live tree CPU {spent:.3} s after {:?}, tree {tree:?}",
            t0.elapsed()
        );
    };

    // End the loop: timeout passes SIGTERM on and reaps the loop, then the
    // root reaps timeout; the loop's CPU moves into the root's cutime/cstime.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(timeout_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill timeout");
    while procfs::tree(pid).len() > 2 && t0.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = procfs::snapshot(pid);
    let spent = cpu_s(&after) - cpu_s(&before);
    // Nothing lost on reaping: at least what was seen live (less a clock
    // tick of rounding), and not absurdly more.
    assert!(
        spent >= spent_live - 0.011 && spent < spent_live + 5.0,
        "reaped tree CPU {spent:.3} s (live {spent_live:.3} s), tree now {:?}",
        procfs::tree(pid)
    );
    let cost = procfs::Cost::between(&before, &after, 1000, t0.elapsed().as_secs_f64());
    assert!(cost.cpu_us_per_request >= ENOUGH_S * 1e6 / 1000.0 - 11.0);
    let _ = root.kill();
    let _ = root.wait();
}
