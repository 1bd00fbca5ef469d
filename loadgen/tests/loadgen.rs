//! The load generator against an in-process server (tests/util): exact
//! counts, verification, connection modes, FastCGI, unix sockets, failing
//! servers, the JSON report and the interval log, and the binary's errors.

mod util;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loadgen::{Config, ConnMode, Error, Io, RouteSpec, Stop, Target};
use util::{each_io, Options, TestServer};

fn config(url: &str, io: Io) -> Config {
    let mut c = Config::new(Target::parse(url, None, None).expect("target"));
    c.threads = 1;
    c.connections = 2;
    c.io = Some(io);
    c
}

#[test]
fn exact_count_under_n() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.threads = 3;
        c.connections = 7;
        c.stop = Stop::Requests(1000);
        c.routes = vec![
            RouteSpec::parse("/hello:3").unwrap(),
            RouteSpec::parse("/cpu?n=100:1").unwrap(),
            RouteSpec::parse("/bytes?n=40000:1").unwrap(),
        ];
        let r = loadgen::run(&c).expect("run");
        assert_eq!(r.requests, 1000);
        assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
        assert_eq!(r.latency.count, 1000);
        assert_eq!(server.counters.requests.load(Ordering::Relaxed), 1000);
        // Two X-Worker values, every response counted once.
        assert_eq!(r.workers.values().sum::<u64>(), 1000);
        assert_eq!(r.workers.len(), 2);
        // Every one of the 7 connections was used.
        assert_eq!(server.counters.accepts.load(Ordering::Relaxed), 7);
        assert!(r.cpu.user_s + r.cpu.sys_s > 0.0);
    });
}

#[test]
fn pipelined_count_is_exact() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.pipeline = 8;
        c.stop = Stop::Requests(999);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (999, 0));
    });
}

#[test]
fn verification_catches_a_corrupted_body() {
    each_io(|io| {
        let server = TestServer::start(Options {
            corrupt: true,
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::Requests(200);
        c.routes = vec![
            RouteSpec::parse("/hello:1").unwrap(),
            RouteSpec::parse("/cpu?n=7:1").unwrap(),
        ];
        let r = loadgen::run(&c).expect("run");
        assert_eq!(r.requests, 200);
        assert_eq!(r.errors.verify, 100, "{:?}", r.errors);
        assert_eq!(r.errors.total(), 100);
    });
}

#[test]
fn a_wrong_status_is_a_status_error() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.method = Some("POST".into());
        c.stop = Stop::Requests(50);
        // POST /hello is answered 405, which is what the route must answer: no error.
        let r = loadgen::run(&c).expect("run");
        assert_eq!(r.errors.total(), 0);
        // A route that does not exist is 404 and also verified as such.
        c.method = None;
        c.routes = vec![RouteSpec::parse("/cpu?n=x").unwrap()];
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (50, 0));
    });
}

#[test]
fn new_conn_opens_one_connection_per_request() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.connections = 3;
        c.conn_mode = ConnMode::NewConn;
        c.stop = Stop::Requests(150);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (150, 0));
        assert_eq!(server.counters.accepts.load(Ordering::Relaxed), 150);
        assert_eq!(r.connections_opened, 150);
        assert!(r.connect_time.count >= 149);
    });
}

#[test]
fn thousands_of_new_connections_cost_no_connect_errors() {
    // Each closed connection must give its io_uring table entry back within
    // the next turn; when closes were handed to kernel worker threads the
    // table ran dry and connects failed (EMFILE) at about 1 in 20 here.
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.connections = 32;
        c.conn_mode = ConnMode::NewConn;
        c.stop = Stop::Requests(4000);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors), (4000, Default::default()), "{io:?}");
        assert_eq!(r.connections_opened, 4000, "{io:?}");
    });
}

#[test]
fn idle_connections_are_held() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.idle = 60;
        c.stop = Stop::DurationS(0.3);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.idle.asked, r.idle.held), (60, 60));
        assert!(server.counters.max_open.load(Ordering::Relaxed) >= 62);
        assert!(r.requests > 0);
        // They are closed at the end.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.counters.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(server.counters.open.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn fastcgi_target() {
    each_io(|io| {
        let server = TestServer::start(Options {
            fcgi: true,
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::Requests(600);
        c.routes = vec![
            RouteSpec::parse("/hello:2").unwrap(),
            RouteSpec::parse("/cpu?n=1000:1").unwrap(),
            RouteSpec::parse("/echo:1").unwrap(),
        ];
        c.body_size = 3000;
        c.headers = vec!["X-Test: yes".into()];
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (600, 0), "{:?}", r.errors);
        assert_eq!(r.workers.values().sum::<u64>(), 600);
        // New connection per request over FastCGI (no FCGI_KEEP_CONN).
        c.conn_mode = ConnMode::NewConn;
        c.stop = Stop::Requests(60);
        let accepted = server.counters.accepts.load(Ordering::Relaxed);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (60, 0), "{:?}", r.errors);
        assert_eq!(
            server.counters.accepts.load(Ordering::Relaxed) - accepted,
            60
        );
    });
}

#[test]
fn fastcgi_corruption_is_caught() {
    each_io(|io| {
        let server = TestServer::start(Options {
            fcgi: true,
            corrupt: true,
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::Requests(40);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.verify), (40, 40));
    });
}

#[test]
fn unix_socket_target() {
    each_io(|io| {
        let path = util::socket_path("unix");
        let _server = TestServer::start(Options {
            unix: Some(path.clone()),
            ..Options::default()
        });
        let mut c = Config::new(Target::parse("/hello", Some(path.clone()), None).unwrap());
        c.io = Some(io);
        c.threads = 1;
        c.connections = 3;
        c.stop = Stop::Requests(300);
        let r = loadgen::run(&c).expect("run");
        assert_eq!((r.requests, r.errors.total()), (300, 0));
        let _ = std::fs::remove_file(path);
    });
}

#[test]
fn a_server_that_drops_connections_is_counted_not_a_hang() {
    each_io(|io| {
        let server = TestServer::start(Options {
            drop_after: Some(4),
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::Requests(100);
        let r = loadgen::run(&c).expect("run");
        // Every fifth request on a connection is lost, the rest answered.
        assert_eq!(r.requests + r.errors.transport(), 100);
        assert!(r.errors.read >= 15, "{:?}", r.errors);
        assert!(r.requests >= 70);
    });
}

#[test]
fn a_server_that_stalls_times_out() {
    each_io(|io| {
        let server = TestServer::start(Options {
            mute: true,
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::Requests(4);
        c.timeout_s = 0.3;
        let started = Instant::now();
        let r = loadgen::run(&c).expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!((r.requests, r.errors.timeout), (0, 4));
    });
}

#[test]
fn json_report_and_hdr_log() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("run.hlog");
        let mut c = config(&server.url("/hello"), io);
        c.stop = Stop::DurationS(2.5);
        c.rate = Some(400.0);
        c.hdr_log = Some(log.clone());
        let r = loadgen::run(&c).expect("run");
        // Open loop: asked and achieved rates, corrected and uncorrected latency.
        let ol = r.open_loop.as_ref().expect("open loop");
        assert_eq!(ol.asked_rps, 400.0);
        assert!((350.0..=410.0).contains(&ol.achieved_rps), "{ol:?}");
        assert!(r.latency_uncorrected.is_some());
        // The JSON round-trips and carries its schema version.
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["errors"]["verify"], 0);
        let back: loadgen::Report = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (back.requests, back.errors, &back.latency.hdr, &back.workers),
            (r.requests, r.errors, &r.latency.hdr, &r.workers)
        );
        // Connections are taken in turn, so both were used.
        assert_eq!(r.workers.len(), 2, "{:?}", r.workers);
        assert_eq!(back.latency.histogram().unwrap().len(), r.requests);
        // The interval log: one interval per second, all requests in it.
        let text = std::fs::read(&log).unwrap();
        let mut intervals = 0;
        let mut total = 0;
        for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text) {
            if let hdrhistogram::serialization::interval_log::LogEntry::Interval(iv) = item.unwrap()
            {
                let bytes = base64_decode(iv.encoded_histogram());
                let h: hdrhistogram::Histogram<u64> =
                    hdrhistogram::serialization::Deserializer::new()
                        .deserialize(&mut bytes.as_slice())
                        .unwrap();
                assert_eq!(iv.start_timestamp(), Duration::from_secs(intervals));
                total += h.len();
                intervals += 1;
            }
        }
        assert_eq!(intervals, 3);
        assert_eq!(total, r.requests);
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_step_returns_histograms_send_lag_and_concurrency() {
    each_io(|io| {
        // /wait?us=5000 at 300 req/s: ~1.5 requests in flight on average
        // (Little's law), well within 8 connections, so nothing queues.
        let server = TestServer::start(Options::default());
        for arrivals in [loadgen::Arrivals::Fixed, loadgen::Arrivals::Poisson] {
            let mut c = config(&server.url("/wait?us=5000"), io);
            c.connections = 8;
            c.rate = Some(300.0);
            c.arrivals = arrivals;
            c.warmup_s = 0.2;
            c.stop = Stop::DurationS(1.5);
            let m = loadgen::step(&c).expect("step");
            let r = &m.report;
            let ol = r.open_loop.as_ref().expect("open loop");
            assert_eq!(ol.arrivals, arrivals);
            assert!(
                (250.0..=320.0).contains(&r.rps),
                "{arrivals:?}: {} req/s",
                r.rps
            );
            assert_eq!(m.latency.len(), r.requests);
            assert!(m.latency.min() >= 5000, "{arrivals:?}");
            // Every measured request that was sent has a send lag; the
            // generator's own lag is a part of it.
            assert!(m.send_lag.len() >= r.requests, "{arrivals:?}");
            assert_eq!(m.generator_lag.len(), m.send_lag.len());
            assert!(m.generator_lag.mean() <= m.send_lag.mean() + 1.0);
            let summary = ol.send_lag.as_ref().expect("send lag in the report");
            assert_eq!(summary.count, m.send_lag.len());
            // Little's law: in flight = rate × mean latency from the send.
            let w = r.latency_uncorrected.as_ref().unwrap().mean_us / 1e6;
            let little = r.rps * w;
            assert!(
                (r.in_flight_mean - little).abs() <= 0.2 * little,
                "{arrivals:?}: in flight {} vs rate × latency {little}",
                r.in_flight_mean
            );
        }
        let mut closed = config(&server.url("/hello"), io);
        closed.stop = Stop::Requests(10);
        assert!(matches!(loadgen::step(&closed), Err(Error::Config(_))));
        closed.arrivals = loadgen::Arrivals::Poisson;
        assert!(matches!(loadgen::run(&closed), Err(Error::Config(_))));
    });
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn warmup_is_not_recorded() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let mut c = config(&server.url("/hello"), io);
        c.warmup_s = 0.3;
        c.stop = Stop::Requests(100);
        let r = loadgen::run(&c).expect("run");
        assert_eq!(r.requests, 100);
        assert!(server.counters.requests.load(Ordering::Relaxed) > 100);
    });
}

#[test]
fn library_errors() {
    let mut c = config("http://127.0.0.1:1/hello", Io::Epoll);
    c.stop = Stop::Requests(1);
    assert!(matches!(loadgen::run(&c), Err(Error::Unreachable(_))));
    c.connections = 0;
    assert!(matches!(loadgen::run(&c), Err(Error::Config(_))));
}

fn loadgen_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

#[test]
fn binary_errors_are_one_line_and_exit_2() {
    for args in [
        &["http://127.0.0.1:1/hello"][..],
        &["not-a-url"],
        &["--bogus", "http://127.0.0.1:1/"],
        &["-d", "10x", "http://127.0.0.1:1/"],
        &["-t", "4", "-c", "2", "http://127.0.0.1:1/"],
    ] {
        let out = loadgen_bin(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("loadgen: error: "), "{args:?}: {err}");
    }
}

#[test]
fn binary_prints_a_wrk_like_summary() {
    each_io(|io| {
        let server = TestServer::start(Options::default());
        let dir = std::env::temp_dir().join(format!("loadgen-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("r.json");
        let url = server.url("/hello");
        let out = loadgen_bin(&[
            "--io",
            io.name(),
            "-t1",
            "-c2",
            "-n",
            "300",
            "--latency",
            "--json",
            json.to_str().unwrap(),
            &url,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            out.stderr.is_empty(),
            "progress must be silent off a terminal"
        );
        for line in [
            "Running 300 requests test @",
            "Latency Distribution",
            "Detailed Percentile spectrum",
            "300 requests in",
            "Requests/sec:",
            "In flight:",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(v["requests"], 300);
        assert_eq!(v["io"], io.name());
        assert!(text.contains(if io == Io::Uring { "io_uring" } else { "epoll" }));
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn both_backends_give_the_same_counts_and_verdicts() {
    // A mix of routes, a large body, pipelining, and a server that corrupts
    // every /hello body: the two backends must count and verify alike.
    let mut reports = Vec::new();
    each_io(|io| {
        let server = TestServer::start(Options {
            corrupt: true,
            ..Options::default()
        });
        let mut c = config(&server.url("/hello"), io);
        c.threads = 2;
        c.connections = 6;
        c.pipeline = 3;
        c.stop = Stop::Requests(900);
        c.routes = vec![
            RouteSpec::parse("/hello:1").unwrap(),
            RouteSpec::parse("/cpu?n=9:1").unwrap(),
            RouteSpec::parse("/bytes?n=70000:1").unwrap(),
        ];
        let r = loadgen::run(&c).expect("run");
        assert_eq!(r.io, io);
        assert_eq!(server.counters.requests.load(Ordering::Relaxed), 900);
        reports.push((io, r));
    });
    for (io, r) in &reports {
        assert_eq!(
            (
                r.requests,
                r.errors,
                r.latency.count,
                r.workers.values().sum::<u64>()
            ),
            (
                900,
                loadgen::Errors {
                    verify: 300,
                    ..Default::default()
                },
                900,
                900
            ),
            "{io:?}"
        );
        assert_eq!(r.bytes_read, reports[0].1.bytes_read, "{io:?}");
    }
}

#[test]
fn asking_for_io_uring_where_it_is_missing_is_a_clear_error() {
    let server = TestServer::start(Options::default());
    let mut c = config(&server.url("/hello"), Io::Uring);
    c.stop = Stop::Requests(10);
    match loadgen::io_uring_available() {
        Ok(()) => assert_eq!(loadgen::run(&c).expect("run").io, Io::Uring),
        Err(_) => assert!(matches!(loadgen::run(&c), Err(Error::Config(_)))),
    }
    // Asked for nothing, the run says what it used.
    c.io = None;
    let r = loadgen::run(&c).expect("run");
    let expected = if loadgen::io_uring_available().is_ok() {
        Io::Uring
    } else {
        Io::Epoll
    };
    assert_eq!(r.io, expected);
}
