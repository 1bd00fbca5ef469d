//! prefork-server's accept strategies (UNP ch.30's design 2, its design 3
//! with flock(2) in place of fcntl(2) locks, and the Linux-only SO_REUSEPORT
//! and EPOLLEXCLUSIVE, and epoll without it): each serves every request, and the per-worker
//! request counts (from `X-Worker`) show how each spreads connections over
//! 4 workers.

mod util;

use std::collections::BTreeMap;
use std::sync::Mutex;

use iomodels_workload::Protocol;
use util::Server;

#[test]
fn accept_strategies_balance_per_worker() {
    for how in ["shared", "flock", "reuseport", "exclusive", "epoll"] {
        let s = Server::start(
            "prefork-server",
            Protocol::Http,
            &["--workers", "4", "--accept", how],
        );
        let counts: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
        // 8 clients × 25 requests, a new connection each (balance is
        // decided per connection).
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let mut c = s.connect();
                        let r = c.request("GET", "/wait?us=500", b"");
                        *counts.lock().unwrap().entry(r.worker.unwrap()).or_default() += 1;
                    }
                });
            }
        });
        let counts = counts.into_inner().unwrap();
        let per_worker: Vec<u32> = counts.values().copied().collect();
        eprintln!("--accept {how:9}: requests per worker {per_worker:?}");
        assert_eq!(per_worker.iter().sum::<u32>(), 200, "{how}");
        assert!(per_worker.len() <= 4, "{how}: {counts:?}");
        // 8 concurrent clients and 4 workers: every strategy keeps more
        // than one worker busy.
        assert!(per_worker.len() >= 2, "{how}: {counts:?}");
        let status = s.status();
        assert!(status["requests"].as_u64().unwrap() > 200, "{how}");
    }
}

#[test]
fn reuseport_needs_tcp_and_bad_strategy_is_one_line() {
    let out = std::process::Command::new(util::bin_path("prefork-server"))
        .args([
            "--listen",
            "unix:/tmp/iomodels-accept-test.sock",
            "--accept",
            "reuseport",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a TCP address"),
        "{err}"
    );
    let out = std::process::Command::new(util::bin_path("prefork-server"))
        .args(["--accept", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// The price of SO_REUSEPORT: a connection waits in the queue of the
/// socket the kernel hashed it to, even when other workers are idle. One
/// worker pinned by a slow client (half a head, `--header-timeout 1`)
/// delays the connections hashed to it until its timeout; with a shared
/// socket an idle worker takes them at once.
#[test]
fn reuseport_queue_waits_for_its_busy_worker() {
    for (how, delayed) in [("shared", false), ("reuseport", true)] {
        let s = Server::start(
            "prefork-server",
            Protocol::Http,
            &["--workers", "4", "--accept", how, "--header-timeout", "1"],
        );
        let mut slow = s.connect();
        slow.send(b"GET /hello HTTP/1.1\r\nHost: sl").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let start = std::time::Instant::now();
        // 40 connections: the chance that none hashes to the pinned
        // worker's socket is (3/4)^40, about 1e-5.
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..40 {
            let t = std::time::Instant::now();
            s.connect().request("GET", "/hello", b"");
            slowest = slowest.max(t.elapsed());
        }
        eprintln!(
            "--accept {how:9}: 40 requests in {:?}, slowest {slowest:?}",
            start.elapsed()
        );
        if delayed {
            assert!(
                slowest >= std::time::Duration::from_millis(400),
                "{how}: {slowest:?}"
            );
        } else {
            assert!(
                slowest < std::time::Duration::from_millis(400),
                "{how}: {slowest:?}"
            );
        }
    }
}
