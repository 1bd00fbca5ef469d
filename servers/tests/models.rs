//! Behaviour particular to one model (the shared cases are in
//! `conformance.rs`).

mod util;

use std::time::{Duration, Instant};

use iomodels_workload::Protocol;
use util::Server;

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// prefork-server: a worker killed with SIGKILL is replaced, and the pool
/// keeps serving.
#[test]
fn prefork_replaces_a_dead_worker() {
    let s = Server::start("prefork-server", Protocol::Http, &["--workers", "3"]);
    let master = s.child.id();
    let before = children(master);
    assert_eq!(before.len(), 3, "{before:?}");
    let victim = before[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let now = children(master);
        if now.len() == 3 && !now.contains(&victim) {
            break;
        }
        assert!(Instant::now() < end, "pool not back to 3 workers: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        s.connect().request("GET", "/hello", b"");
    }
}

/// epoll-server parks /wait on a timer, so a /hello on another connection
/// is answered at once; with --blocking-wait the loop sleeps and the
/// /hello waits (the lesson of the flag).
#[test]
fn epoll_parks_wait_unless_blocking_wait() {
    for (flags, stalls) in [(&[][..], false), (&["--blocking-wait"][..], true)] {
        let s = Server::start("epoll-server", Protocol::Http, flags);
        let mut waiter = s.connect();
        let wire = waiter.encode("GET", "/wait?us=500000", b"");
        waiter.send(&wire).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        s.connect().request("GET", "/hello", b"");
        let took = start.elapsed();
        if stalls {
            assert!(
                took >= Duration::from_millis(300),
                "--blocking-wait did not stall: {took:?}"
            );
        } else {
            assert!(
                took < Duration::from_millis(300),
                "parked /wait stalled the loop: {took:?}"
            );
        }
        assert_eq!(
            waiter.read_response(false).unwrap().body,
            b"waited 500000 us"
        );
    }
}

/// --max-conns: connections beyond it get 503 and the server keeps serving.
#[test]
fn epoll_refuses_beyond_max_conns() {
    let s = Server::start("epoll-server", Protocol::Http, &["--max-conns", "2"]);
    let mut a = s.connect();
    let mut b = s.connect();
    a.request("GET", "/hello", b"");
    b.request("GET", "/hello", b"");
    let mut c = s.connect();
    let (out, closed) = c.read_to_eof(Duration::from_secs(5));
    assert!(closed);
    assert!(
        out.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    s.connect().request("GET", "/hello", b"");
    assert!(s.status()["refused"].as_u64().unwrap() >= 1);
}

/// fork-server reaps every child: no zombie is left after 10,000 requests.
#[test]
fn fork_leaves_no_zombie() {
    let s = Server::start("fork-server", Protocol::Http, &[]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                for _ in 0..2_500 {
                    let mut c = util::Client::connect(&addr, Protocol::Http);
                    let r = c.request("GET", "/hello", b"");
                    assert!(r.close);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let zombies = |pid: u32| {
        children(pid)
            .into_iter()
            .filter(|c| {
                std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                })
            })
            .count()
    };
    let end = Instant::now() + Duration::from_secs(2);
    while zombies(s.child.id()) > 0 || !children(s.child.id()).is_empty() {
        assert!(
            Instant::now() < end,
            "children left: {:?}",
            children(s.child.id())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.status()["requests"].as_u64().unwrap() >= 10_000);
}

/// threadpool-server answers 503 (FastCGI: OVERLOADED) when every worker
/// is busy and the queue is full, instead of leaving the client hanging.
#[test]
fn threadpool_refuses_when_saturated() {
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let s = Server::start(
            "threadpool-server",
            protocol,
            &["--workers", "1", "--queue", "1"],
        );
        let mut busy = s.connect();
        busy.request("GET", "/hello", b""); // pins the only worker (keep-alive)
        let _queued = s.connect(); // waits in the queue
        std::thread::sleep(Duration::from_millis(100));
        let mut c = s.connect();
        let start = Instant::now();
        let (out, closed) = c.read_to_eof(Duration::from_secs(5));
        assert!(
            closed && start.elapsed() < Duration::from_secs(2),
            "left hanging"
        );
        match protocol {
            Protocol::Http => assert!(
                out.starts_with(b"HTTP/1.1 503"),
                "{}",
                String::from_utf8_lossy(&out)
            ),
            Protocol::Fcgi => {
                let rec = iomodels_workload::fcgi::parse_record(&out)
                    .unwrap()
                    .unwrap();
                assert_eq!(rec.header.kind, iomodels_workload::fcgi::END_REQUEST);
                assert_eq!(
                    rec.content[4],
                    iomodels_workload::fcgi::ProtocolStatus::Overloaded as u8
                );
            }
        }
        busy.request("GET", "/hello", b"");
    }
}

/// uring-server: --max-conns refuses, and --workers N runs N rings (each
/// answering as `<pid>.<ring>`) that all stop on SIGTERM.
#[test]
fn uring_max_conns_and_workers() {
    let Some(s) = Server::start_or_skip("uring-server", Protocol::Http, &["--max-conns", "2"])
    else {
        return;
    };
    let mut a = s.connect();
    let mut b = s.connect();
    a.request("GET", "/hello", b"");
    b.request("GET", "/hello", b"");
    let (out, closed) = s.connect().read_to_eof(Duration::from_secs(5));
    assert!(closed && out.starts_with(b"HTTP/1.1 503"));
    drop((a, b));

    let Some(mut s) = Server::start_or_skip("uring-server", Protocol::Fcgi, &["--workers", "3"])
    else {
        return;
    };
    assert_eq!(s.status()["workers"], 3);
    let workers: std::collections::HashSet<String> = (0..30)
        .filter_map(|_| s.connect().request("GET", "/file?name=4k", b"").worker)
        .collect();
    let pid = s.child.id().to_string();
    assert!(
        workers.iter().all(|w| w.starts_with(&format!("{pid}."))),
        "{workers:?}"
    );
    s.sigterm();
    let status = s.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success());
}
