//! Agents of one load (`--segment K/N`, `--start-at`) against the
//! in-process server: their shares add up to the whole, they begin at the
//! agreed instant, and one that is given a start already past refuses.

mod util;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loadgen::{Config, Error, Segment, Stop, Target};
use util::{Options, TestServer};

fn agent(url: &str, k: u32, n: u32) -> Config {
    let mut c = Config::new(Target::parse(url, None, None).expect("target"));
    c.threads = 1;
    c.connections = 6;
    c.segment = Some(Segment { index: k, of: n });
    c
}

fn ns_from_now(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn shares_add_up_to_the_whole_load() {
    let server = TestServer::start(Options::default());
    let url = server.url("/hello");
    let start = ns_from_now(Duration::from_millis(300));
    let reports: Vec<loadgen::Report> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|k| {
                let mut c = agent(&url, k, 3);
                c.stop = Stop::Requests(100);
                c.start_at_ns = Some(start);
                s.spawn(move || loadgen::run(&c).expect("agent run"))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let counts: Vec<u64> = reports.iter().map(|r| r.requests).collect();
    assert_eq!(counts, [34, 33, 33]);
    assert_eq!(server.counters.requests.load(Ordering::Relaxed), 100);
    for (k, r) in reports.iter().enumerate() {
        assert_eq!(r.connections, 2, "a third of -c 6");
        let a = r.agent.as_ref().expect("agent block");
        assert_eq!(
            a.segment,
            Some(Segment {
                index: k as u32,
                of: 3
            })
        );
        assert_eq!(a.start_at_ns, Some(start));
        assert!(a.start_late_ms < 100.0, "began {} ms late", a.start_late_ms);
    }
}

#[test]
fn open_loop_rate_is_the_agents_share() {
    let server = TestServer::start(Options::default());
    let mut c = agent(&server.url("/hello"), 1, 4);
    c.rate = Some(400.0);
    c.stop = Stop::DurationS(0.5);
    let r = loadgen::run(&c).expect("run");
    let ol = r.open_loop.as_ref().unwrap();
    assert_eq!(ol.asked_rps, 100.0, "a quarter of -R 400");
}

#[test]
fn an_agent_over_its_lag_limit_says_it_saturated() {
    let server = TestServer::start(Options::default());
    let mut c = agent(&server.url("/hello"), 0, 1);
    c.rate = Some(200.0);
    c.stop = Stop::DurationS(0.3);
    // Every send lags at least 1 µs (the histogram's floor): over the limit.
    c.max_lag_us = Some(1);
    let r = loadgen::run(&c).expect("run");
    let a = r.agent.expect("agent block");
    assert!(a.saturated);
    assert!(a.saturated_why.contains("send lag"), "{}", a.saturated_why);
}

#[test]
fn a_start_already_past_is_refused() {
    let server = TestServer::start(Options::default());
    let mut c = agent(&server.url("/hello"), 0, 2);
    c.stop = Stop::Requests(10);
    c.start_at_ns = Some(ns_from_now(Duration::ZERO) - 2_000_000_000);
    match loadgen::run(&c) {
        Err(Error::Io(e)) => assert!(e.contains("started late"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--segment", "2/2", &server.url("/hello")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad segment"), "{err}");
}
