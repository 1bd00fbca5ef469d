//! fpm-server's process manager: dynamic growth and shrinking, ondemand
//! from zero, recycling, crash replacement, the status page, php-fpm's
//! signals. Each test is bounded to a few seconds.

mod util;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iomodels_workload::Protocol;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use util::{Client, Response, Server};

/// One request on a fresh connection, verified; an error instead of a panic.
fn get(addr: &str, target: &str) -> Result<Response, String> {
    let r = get_unverified(addr, target)?;
    iomodels_workload::verify("GET", target, b"", r.status, &r.body).map_err(|e| e.to_string())?;
    Ok(r)
}

/// One request on a fresh connection, the response as it came.
fn get_unverified(addr: &str, target: &str) -> Result<Response, String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut c = Client::from_stream(stream, Protocol::Http);
    let wire = c.encode("GET", target, b"");
    c.send(&wire).map_err(|e| e.to_string())?;
    c.read_response(false)
}

/// `/status?full` as JSON.
fn status(s: &Server) -> serde_json::Value {
    let r = get(&s.addr, "/status?full").expect("status");
    serde_json::from_slice(&r.body).expect("status JSON")
}

/// Polls `/status?full` until `ok` holds (at most `limit`); returns the last page.
fn wait_status(
    s: &Server,
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + limit;
    loop {
        let page = status(s);
        if ok(&page) || Instant::now() >= end {
            return page;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn n(page: &serde_json::Value, key: &str) -> u64 {
    page[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {page}"))
}

/// The master's children, from /proc.
fn children(s: &Server) -> Vec<u32> {
    let pid = s.child.id();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn dynamic_grows_under_load_and_shrinks_when_idle() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &[
            "--pm",
            "dynamic",
            "--max-children",
            "6",
            "--start-servers",
            "1",
            "--min-spare",
            "1",
            "--max-spare",
            "2",
        ],
    );
    assert_eq!(n(&status(&s), "total processes"), 1);
    // Five keep-alive connections each pin a worker once served.
    let held: Vec<Client> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                scope.spawn(|| {
                    let mut c = s.connect();
                    c.request("GET", "/hello", b"");
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Grows 1 → 2 → 4 → 6 (the doubling spawn rate), capped at max-children.
    let page = wait_status(&s, Duration::from_secs(6), |p| {
        n(p, "total processes") == 6 && n(p, "active processes") >= 5
    });
    assert_eq!(n(&page, "total processes"), 6, "{page}");
    assert!(n(&page, "max active processes") >= 5, "{page}");
    // Idle again: retired down to the spare range, one worker per tick as
    // php-fpm does (6 idle to 2 takes four ticks, up to 4 s after the drop).
    drop(held);
    let page = wait_status(&s, Duration::from_secs(6), |p| {
        n(p, "idle processes") <= 2 && n(p, "total processes") <= 3
    });
    assert!(n(&page, "idle processes") <= 2, "{page}");
    assert!(n(&page, "total processes") <= 3, "{page}");
    assert!(n(&page, "total processes") >= 1, "{page}");
}

#[test]
fn ondemand_starts_with_no_worker_and_retires_idle_ones() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &[
            "--pm",
            "ondemand",
            "--max-children",
            "3",
            "--process-idle-timeout",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(children(&s).is_empty(), "{:?}", children(&s));
    get(&s.addr, "/hello").expect("first request forks a worker");
    assert_eq!(children(&s).len(), 1);
    let end = Instant::now() + Duration::from_secs(4);
    while !children(&s).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(children(&s).is_empty(), "idle worker not retired");
}

#[test]
fn max_requests_recycles_without_a_failed_request() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &[
            "--pm",
            "static",
            "--max-children",
            "2",
            "--max-requests",
            "5",
        ],
    );
    let mut workers = HashSet::new();
    for i in 0..30 {
        let r = get(&s.addr, &format!("/cpu?n={i}")).unwrap_or_else(|e| panic!("request {i}: {e}"));
        workers.insert(r.worker.unwrap());
    }
    // 30 requests at 5 per worker: at least 6 different workers served.
    assert!(workers.len() >= 6, "{workers:?}");
    assert!(children(&s).len() <= 2);
}

#[test]
fn a_killed_worker_fails_at_most_its_request_and_is_replaced() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &["--pm", "static", "--max-children", "4"],
    );
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match get(&s.addr, "/wait?us=2000") {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let victim = children(&s)[0];
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        let killed = Instant::now();
        let back = loop {
            let kids = children(&s);
            if kids.len() == 4 && !kids.contains(&victim) {
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(1),
                "pool not back: {kids:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        eprintln!("pool back to 4 workers {back:?} after the kill");
    });
    assert!(failed.load(Ordering::Relaxed) <= 1, "{failed:?} failed");
    assert!(ok.load(Ordering::Relaxed) > 100, "{ok:?}");
    let page = status(&s);
    assert_eq!(n(&page, "total processes"), 4, "{page}");
}

#[test]
fn status_page_counts_match_the_requests_sent() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &[
            "--pm",
            "static",
            "--max-children",
            "2",
            "--slowlog-timeout",
            "0.2",
            "--request-terminate-timeout",
            "1",
        ],
    );
    for _ in 0..10 {
        get(&s.addr, "/hello").unwrap();
    }
    let mut c = s.connect();
    for _ in 0..5 {
        c.request("GET", "/bytes?n=10", b"");
    }
    drop(c);
    // One slow request, logged and counted once.
    get(&s.addr, "/wait?us=400000").unwrap();
    let page = status(&s);
    // 10 + 1 + 1 connections before this one, which is counted too.
    assert_eq!(n(&page, "accepted conn"), 13, "{page}");
    // 16 requests answered, plus this one (the workload's counter counts it).
    assert_eq!(n(&page, "requests"), 17, "{page}");
    assert_eq!(n(&page, "slow requests"), 1, "{page}");
    assert_eq!(page["model"], "fpm");
    assert_eq!(page["pool"], "www");
    assert_eq!(page["process manager"], "static");
    assert_eq!(n(&page, "total processes"), 2);
    assert_eq!(n(&page, "listen queue"), 0);
    assert_eq!(n(&page, "listen queue len"), 1024);
    let procs = page["processes"].as_array().unwrap();
    let per_worker: u64 = procs.iter().map(|p| n(p, "requests")).sum();
    assert_eq!(per_worker, 16, "{page}");
    assert!(
        procs
            .iter()
            .any(|p| p["request URI"] == "/status?full" && p["state"] == "Running"),
        "{page}"
    );
    // A stuck request: its worker is killed, the pool replaces it.
    assert!(get(&s.addr, "/wait?us=3000000").is_err());
    let page = wait_status(&s, Duration::from_secs(2), |p| n(p, "total processes") == 2);
    assert_eq!(n(&page, "total processes"), 2, "{page}");
    assert_eq!(n(&page, "slow requests"), 2, "{page}");
    // php-fpm's plain-text form.
    let text = get_unverified(&s.addr, "/status?text").unwrap().body;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("pool:                 www"), "{text}");
    assert!(text.contains("accepted conn:"), "{text}");
}

#[test]
fn pools_file_runs_two_pools() {
    let dir = std::env::temp_dir().join(format!("fpm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.join("pools.ini");
    std::fs::write(
        &conf,
        format!(
            "; two pools\n[www]\nlisten = 127.0.0.1:0\npm = static\npm.max_children = 2\n\n\
             [api]\nlisten = 127.0.0.1:{port}\nprotocol = fcgi\npm = ondemand\npm.max_children = 1\n"
        ),
    )
    .unwrap();
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &["--config", conf.to_str().unwrap()],
    );
    let page = status(&s);
    assert_eq!(page["pool"], "www");
    assert_eq!(n(&page, "total processes"), 2);
    let mut api = Client::connect(&format!("127.0.0.1:{port}"), Protocol::Fcgi);
    let r = api.request("GET", "/status", b"");
    let page: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(page["pool"], "api");
    assert_eq!(page["process manager"], "ondemand");
    assert_eq!(page["protocol"], "fcgi");
    std::fs::write(&conf, "[www]\npm = static\n").unwrap();
    let out = std::process::Command::new(util::bin_path("fpm-server"))
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no `listen`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr2_reloads_keeping_the_socket_and_sigquit_stops() {
    let mut s = Server::start(
        "fpm-server",
        Protocol::Http,
        &["--pm", "static", "--max-children", "2"],
    );
    let before: HashSet<u32> = children(&s).into_iter().collect();
    let master = Pid::from_raw(s.child.id() as i32);
    kill(master, Signal::SIGUSR2).unwrap();
    // Requests during and after the reload wait in the backlog, never refused.
    let end = Instant::now() + Duration::from_secs(3);
    let mut after = HashSet::new();
    while Instant::now() < end {
        get(&s.addr, "/hello").expect("request across the reload");
        after = children(&s).into_iter().collect();
        if after.len() == 2 && after.is_disjoint(&before) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        after.len() == 2 && after.is_disjoint(&before),
        "{before:?} {after:?}"
    );
    assert_eq!(n(&status(&s), "total processes"), 2);
    kill(master, Signal::SIGQUIT).unwrap();
    let exit = s.wait_exit(Duration::from_secs(5)).expect("graceful stop");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn workers_dying_by_signal_trigger_an_emergency_restart() {
    let s = Server::start(
        "fpm-server",
        Protocol::Http,
        &[
            "--pm",
            "static",
            "--max-children",
            "3",
            "--emergency-restart-threshold",
            "2",
            "--emergency-restart-interval",
            "10",
        ],
    );
    let first = children(&s);
    assert_eq!(first.len(), 3);
    // Two crashes within the interval: the master reloads, so the third,
    // untouched worker is replaced too (and the master keeps its pid).
    for pid in &first[..2] {
        kill(Pid::from_raw(*pid as i32), Signal::SIGKILL).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let end = Instant::now() + Duration::from_secs(4);
    while children(&s).contains(&first[2]) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!children(&s).contains(&first[2]), "no emergency restart");
    get(&s.addr, "/hello").expect("served after the restart");
    assert_eq!(n(&status(&s), "total processes"), 3);
}
