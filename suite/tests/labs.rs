//! Every teaching lab in `--quick` mode against the real servers: the
//! verdict must be SHAPE HOLDS, and the run must leave its sheet, chart and
//! measurements. The labs measure CPU and latency, so they run one at a
//! time (a lock), never beside each other; together about three minutes.

mod util;

use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lab_holds(name: &str, binaries: &[&str]) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !binaries.iter().all(|b| util::have_binary(b)) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["lab", "run", name, "--quick", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.contains(&format!("{name}: SHAPE HOLDS")),
        "lab {name}: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let runs: Vec<_> = std::fs::read_dir(out.path().join(name))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let dir = runs[0].path();
    let sheet = std::fs::read_to_string(dir.join("sheet.md")).unwrap();
    assert!(sheet.contains("SHAPE HOLDS"), "{sheet}");
    let svg = std::fs::read_to_string(dir.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "chart.svg is not an SVG");
    assert!(dir.join("lab.json").exists());
}

#[test]
fn littles_law() {
    lab_holds(
        "littles-law",
        &["prefork-server", "threadpool-server", "epoll-server"],
    );
}

#[test]
fn unp30() {
    lab_holds(
        "unp30",
        &["iterative-server", "fork-server", "prefork-server"],
    );
}

#[test]
fn tlpi63() {
    lab_holds("tlpi63", &["select-server", "poll-server", "epoll-server"]);
}

#[test]
fn blocking_in_reactor() {
    lab_holds("blocking-in-reactor", &["epoll-server", "tokio-server"]);
}

#[test]
fn libevent() {
    lab_holds("libevent", &["poll-server", "epoll-server"]);
}

#[test]
fn c10k() {
    lab_holds(
        "c10k",
        &[
            "select-server",
            "poll-server",
            "epoll-server",
            "uring-server",
            "thread-server",
        ],
    );
}

#[test]
fn herd() {
    lab_holds("herd", &["prefork-server"]);
}

#[test]
fn coordinated_omission() {
    lab_holds("coordinated-omission", &["epoll-server"]);
}

#[test]
fn fpm_pm() {
    lab_holds("fpm-pm", &["fpm-server"]);
}

#[test]
fn uring_batching() {
    if util::have_binary("uring-server") && !util::io_uring_allowed() {
        eprintln!("uring-batching: skipped, the kernel refuses io_uring here");
        return;
    }
    lab_holds("uring-batching", &["uring-server", "epoll-server"]);
}

#[test]
fn crash() {
    lab_holds(
        "crash",
        &[
            "prefork-server",
            "fpm-server",
            "swoole-server",
            "threadpool-server",
            "epoll-server",
        ],
    );
}

/// Across a link: each point in network namespaces of its own. Skipped,
/// with the reason, only where namespaces cannot be made (not root, or the
/// kernel refuses them outside CI); as root under CI=true it runs. About 16 s.
#[test]
fn littles_law_rtt() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("littles-law-rtt: skipped, network namespaces need root");
        return;
    }
    let made = iomodels_suite::netns::Net::new().and_then(|mut n| n.add("labprobe").map(|_| ()));
    if let Err(e) = made {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "as root under CI, namespaces must work: {e}"
        );
        eprintln!("littles-law-rtt: skipped, no network namespaces here: {e}");
        return;
    }
    lab_holds("littles-law-rtt", &["prefork-server", "epoll-server"]);
}

#[test]
fn unknown_lab_is_one_clear_line() {
    let run = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["lab", "run", "no-such-lab"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("littles-law"), "{err}");
}
