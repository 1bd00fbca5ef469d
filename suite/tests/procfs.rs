//! /proc accounting over a process tree: a grandchild's CPU counts while it
//! runs (tree walk) and after it was reaped (cutime/cstime).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iomodels_suite::procfs;

#[test]
fn a_busy_grandchild_is_counted_live_and_after_reaping() {
    // sh (root) → timeout → sh busy loop for 0.6 s; the root then sleeps.
    let mut root = Command::new("sh")
        .args(["-c", "timeout 0.6 sh -c 'while :; do :; done'; sleep 5"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sh");
    let pid = root.id();
    let before = procfs::snapshot(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    let live = procfs::snapshot(pid);
    let tree = procfs::tree(pid);
    assert!(tree.len() >= 3, "tree {tree:?}");
    let spent_live = live.user_s + live.sys_s - before.user_s - before.sys_s;
    assert!(
        spent_live >= 0.2,
        "live tree CPU {spent_live:.3} s after {:?}",
        t0.elapsed()
    );
    assert!(live.processes >= 3);

    // After the loop ended, its CPU moved into the root's cutime/cstime.
    while procfs::tree(pid).len() > 2 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = procfs::snapshot(pid);
    let spent = after.user_s + after.sys_s - before.user_s - before.sys_s;
    // Not less than was seen live (nothing lost on reaping), and most of
    // the 0.6 s (the machine may be shared).
    assert!(
        spent >= spent_live && (0.3..2.0).contains(&spent),
        "reaped tree CPU {spent:.3} s, tree now {:?}",
        procfs::tree(pid)
    );
    let cost = procfs::Cost::between(&before, &after, 1000, t0.elapsed().as_secs_f64());
    assert!(cost.cpu_us_per_request >= 300.0);
    let _ = root.kill();
    let _ = root.wait();
}
