//! The conformance suite: every server binary × {http, fcgi} goes through
//! the same cases. Adding a model is one line in `SERVERS`
//! (tests/util/models.rs, shared with the abuse suite). Set
//! `IOMODELS_ONLY=bin,bin` to run the cases for some binaries only.

mod util;

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iomodels_workload::fcgi::{self, ProtocolStatus};
use iomodels_workload::{http, Protocol};
use util::models::{chosen, Model, SERVERS};
use util::{Client, Server};

const PROTOCOLS: [Protocol; 2] = [Protocol::Http, Protocol::Fcgi];

/// Runs `case` against every server and protocol, each with a fresh server
/// started with `extra` flags added. A model that cannot run here (io_uring
/// disabled by sysctl or seccomp) is skipped with a message.
/// `IOMODELS_ONLY=uring-server,epoll-server` runs the cases for those
/// binaries only (for working on one model; CI runs them all).
fn each(extra: &[&str], case: impl Fn(&mut Server, &Model)) {
    for m in SERVERS.iter().filter(|m| chosen(m.bin)) {
        for protocol in PROTOCOLS {
            let args: Vec<&str> = m.flags.iter().chain(extra).copied().collect();
            let Some(mut server) = Server::start_or_skip(m.bin, protocol, &args) else {
                continue;
            };
            server.one_request_per_connection = !m.keep_alive;
            eprintln!("case on {} {args:?} over {}", m.bin, protocol.name());
            case(&mut server, m);
        }
    }
}

/// Every route with body verification, on one keep-alive connection.
#[test]
fn every_route_verified() {
    let mut echo = Vec::new();
    iomodels_workload::routes::extend_pattern(&mut echo, 300_000);
    each(&[], |s, m| {
        let mut c = s.connect();
        for (method, target, body) in [
            ("GET", "/hello", &b""[..]),
            ("GET", "/cpu?n=1000", b""),
            ("GET", "/cpu?n=0", b""),
            ("GET", "/wait?us=2000", b""),
            ("GET", "/bytes?n=0", b""),
            ("GET", "/bytes?n=100000", b""),
            ("GET", "/file?name=4k", b""),
            ("GET", "/file?name=64k", b""),
            ("GET", "/file?name=1m", b""),
            ("GET", "/file?name=absent", b""),
            ("POST", "/echo", b"hello echo"),
            ("POST", "/echo", &echo),
            ("GET", "/status", b""),
            ("GET", "/nowhere", b""),
            ("GET", "/cpu?n=abc", b""),
            ("GET", "/wait?us=10000001", b""),
            ("GET", "/bytes?n=67108865", b""),
            ("GET", "/file?name=..", b""),
            ("DELETE", "/hello", b""),
            ("GET", "/hello", b""),
        ] {
            let r = c.request(method, target, body);
            assert_eq!(
                r.close,
                !m.keep_alive && s.protocol == Protocol::Http,
                "{target}: keep-alive"
            );
            assert!(
                r.worker.as_deref().is_some_and(|w| !w.is_empty()),
                "{target}: X-Worker"
            );
        }
        let missing = c.request("GET", "/file?name=absent", b"");
        assert_eq!(missing.status, 404);
        let r = c.request("GET", "/status", b"");
        let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(status["requests"].as_u64().unwrap() >= 20);
        assert_eq!(status["protocol"], s.protocol.name());
    });
}

/// Several requests written at once are answered in order.
#[test]
fn keep_alive_and_pipelining() {
    each(&[], |s, m| {
        let mut c = s.connect();
        let targets: Vec<String> = (0..30)
            .map(|i| match i % 4 {
                0 => "/hello".to_string(),
                1 => format!("/bytes?n={}", i * 1000),
                2 => format!("/wait?us={}", i * 10),
                _ => format!("/cpu?n={i}"),
            })
            .collect();
        let mut wire = Vec::new();
        for t in &targets {
            wire.extend(c.encode("GET", t, b""));
        }
        c.send(&wire).unwrap();
        if !m.keep_alive {
            // One request per connection: the first is answered, then it closes.
            let r = c.read_response(false).unwrap();
            assert_eq!(r.body, b"Hello, World!");
            assert!(c.is_closed_within(Duration::from_secs(5)));
            return;
        }
        for t in &targets {
            let r = c.read_response(false).unwrap();
            iomodels_workload::verify("GET", t, b"", r.status, &r.body)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        // And the connection still serves afterwards.
        c.request("GET", "/hello", b"");
    });
}

/// `Connection: close`, HTTP/1.0 and FastCGI without KEEP_CONN close after
/// the response.
#[test]
fn close_after_response() {
    each(&[], |s, _| match s.protocol {
        Protocol::Http => {
            let mut c = s.connect();
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let r = c.read_response(false).unwrap();
            assert!(r.close && r.body == b"Hello, World!");
            assert!(
                c.is_closed_within(Duration::from_secs(5)),
                "closed after Connection: close"
            );

            let mut c = s.connect();
            c.send(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
            assert!(c.read_response(false).unwrap().close);
            assert!(
                c.is_closed_within(Duration::from_secs(5)),
                "HTTP/1.0 closes"
            );

            let mut c = s.connect();
            c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            if s.one_request_per_connection {
                assert!(c.read_response(false).unwrap().close);
                return;
            }
            assert!(
                !c.read_response(false).unwrap().close,
                "HTTP/1.0 keep-alive honoured"
            );
            c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            assert_eq!(c.read_response(false).unwrap().status, 200);
        }
        Protocol::Fcgi => {
            let mut c = s.connect();
            c.keep_conn = false;
            let r = c.request("GET", "/hello", b"");
            assert_eq!(r.fcgi_status, Some(ProtocolStatus::RequestComplete));
            assert!(
                c.is_closed_within(Duration::from_secs(5)),
                "closed without FCGI_KEEP_CONN"
            );
        }
    });
}

/// Bad input gets its status, closes that connection only, and the server
/// serves everyone else.
#[test]
fn malformed_and_oversized() {
    let mut big_head = b"GET /hello HTTP/1.1\r\nX-Big: ".to_vec();
    big_head.resize(9000, b'a');
    big_head.extend_from_slice(b"\r\n\r\n");
    each(&[], |s, m| {
        // A connection open all along (on models that serve several at once).
        let mut bystander = m.concurrent.then(|| s.connect());
        if let Some(b) = bystander.as_mut() {
            b.request("GET", "/hello", b"");
        }
        match s.protocol {
            Protocol::Http => {
                for (input, status) in [
                    (&b"THIS IS NOT HTTP\r\n\r\n"[..], 400),
                    (b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n", 400),
                    (&big_head, 431),
                    (
                        b"POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
                        413,
                    ),
                    (
                        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                        501,
                    ),
                ] {
                    let mut c = s.connect();
                    c.send(input).unwrap();
                    let r = c.read_response(false).unwrap();
                    assert_eq!(
                        r.status,
                        status,
                        "{:?}",
                        String::from_utf8_lossy(&input[..20])
                    );
                    assert!(r.close);
                    assert!(c.is_closed_within(Duration::from_secs(5)));
                }
            }
            Protocol::Fcgi => {
                // Wrong version: the connection is closed.
                let mut c = s.connect();
                c.send(&[2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
                    .unwrap();
                assert!(c.is_closed_within(Duration::from_secs(5)));
                // PARAMS over 64 KiB: 431; STDIN over 1 MiB: 413.
                for (kind, chunks, status) in [(fcgi::PARAMS, 2, 431), (fcgi::STDIN, 18, 413)] {
                    let mut c = s.connect();
                    let mut wire = Vec::new();
                    fcgi::push_header(&mut wire, fcgi::BEGIN_REQUEST, 1, 8, 0);
                    wire.extend_from_slice(&[0, 1, 1, 0, 0, 0, 0, 0]);
                    if kind == fcgi::STDIN {
                        let mut p = Vec::new();
                        fcgi::push_name_value(&mut p, b"REQUEST_URI", b"/echo");
                        fcgi::push_name_value(&mut p, b"REQUEST_METHOD", b"POST");
                        fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &p);
                        fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
                    }
                    for _ in 0..chunks {
                        fcgi::push_stream(&mut wire, kind, 1, &vec![0u8; 60_000]);
                    }
                    // The server may close before reading all of it.
                    let _ = c.send(&wire);
                    let r = c.read_response(false).unwrap();
                    assert_eq!(r.status, status);
                    assert!(c.is_closed_within(Duration::from_secs(5)));
                }
            }
        }
        if let Some(b) = bystander.as_mut() {
            b.request("GET", "/hello", b"");
        }
        s.connect().request("GET", "/cpu?n=5", b"");
    });
}

fn records(mut bytes: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(r) = fcgi::parse_record(bytes).unwrap() {
        v.push((r.header.kind, r.header.id, r.content.to_vec()));
        bytes = &bytes[r.len..];
    }
    v
}

/// GET_VALUES, unknown types and roles, and a second request id on a
/// connection that serves one request at a time.
#[test]
fn fastcgi_management_and_multiplexing() {
    for Model { bin, flags, .. } in SERVERS {
        let Some(s) = Server::start_or_skip(bin, Protocol::Fcgi, flags) else {
            continue;
        };
        let mut c = s.connect();
        let mut wire = Vec::new();
        let mut names = Vec::new();
        for n in ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
            fcgi::push_name_value(&mut names, n.as_bytes(), b"");
        }
        fcgi::push_header(&mut wire, fcgi::GET_VALUES, 0, names.len(), 0);
        wire.extend_from_slice(&names);
        fcgi::push_header(&mut wire, 42, 0, 0, 0);
        // Role 2 (authorizer) with KEEP_CONN: END_REQUEST(UNKNOWN_ROLE).
        fcgi::push_header(&mut wire, fcgi::BEGIN_REQUEST, 9, 8, 0);
        wire.extend_from_slice(&[0, 2, 1, 0, 0, 0, 0, 0]);
        // Request 1 begins; request 2 begins before 1 ends: CANT_MPX_CONN.
        let mut req1 = Vec::new();
        fcgi::encode_request(&mut req1, 1, true, "GET", "/hello", &[], b"");
        wire.extend_from_slice(&req1[..16]);
        fcgi::push_header(&mut wire, fcgi::BEGIN_REQUEST, 2, 8, 0);
        wire.extend_from_slice(&[0, 1, 1, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&req1[16..]);
        c.send(&wire).unwrap();
        c.shutdown_write();
        let (out, _) = c.read_to_eof(Duration::from_secs(5));
        let recs = records(&out);
        assert_eq!(recs[0].0, fcgi::GET_VALUES_RESULT, "{bin}");
        let values: Vec<(Vec<u8>, Vec<u8>)> = fcgi::NameValues::new(&recs[0].2)
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(values.len(), 3);
        assert_eq!(values[2], (b"FCGI_MPXS_CONNS".to_vec(), b"0".to_vec()));
        assert_eq!((recs[1].0, recs[1].2[0]), (fcgi::UNKNOWN_TYPE, 42));
        assert_eq!(
            (recs[2].0, recs[2].1, recs[2].2[4]),
            (fcgi::END_REQUEST, 9, ProtocolStatus::UnknownRole as u8)
        );
        assert_eq!(
            (recs[3].0, recs[3].1, recs[3].2[4]),
            (fcgi::END_REQUEST, 2, ProtocolStatus::CantMpxConn as u8)
        );
        let stdout: Vec<u8> = recs
            .iter()
            .filter(|r| r.0 == fcgi::STDOUT && r.1 == 1)
            .flat_map(|r| r.2.clone())
            .collect();
        assert!(stdout.ends_with(b"Hello, World!"), "{bin}");
        let last = recs.last().unwrap();
        assert_eq!((last.0, last.1, last.2[4]), (fcgi::END_REQUEST, 1, 0));
    }
}

/// 200 connections at once, each doing several requests, all verified.
#[test]
fn two_hundred_concurrent_connections() {
    each(&[], |s, _| {
        let ok = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..200)
            .map(|i| {
                let (addr, protocol, ok, single) = (
                    s.addr.clone(),
                    s.protocol,
                    ok.clone(),
                    s.one_request_per_connection,
                );
                std::thread::spawn(move || {
                    let mut c = Client::connect(&addr, protocol);
                    c.one_request_per_connection = single;
                    for j in 0..5 {
                        let target = match (i + j) % 3 {
                            0 => "/hello".to_string(),
                            1 => format!("/bytes?n={}", i * 10 + j),
                            _ => "/wait?us=1000".to_string(),
                        };
                        c.request("GET", &target, b"");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        assert_eq!(ok.load(Ordering::Relaxed), 1000);
    });
}

/// A client that sends half a head is timed out (HTTP: 408) and nobody
/// else waits for it.
#[test]
fn slow_client_times_out_without_delaying_others() {
    each(&["--header-timeout", "1"], |s, m| {
        let mut slow = s.connect();
        let half: &[u8] = match s.protocol {
            Protocol::Http => b"GET /hello HTTP/1.1\r\nHost: sl",
            Protocol::Fcgi => &[1, 1, 0, 1, 0, 8, 0],
        };
        slow.send(half).unwrap();
        let start = Instant::now();
        for _ in 0..20 {
            s.connect().request("GET", "/hello", b"");
        }
        // One connection at a time (iterative-server): the others wait for
        // the slow one's timeout, and no longer. Everyone else: not at all.
        let limit = if m.concurrent { 900 } else { 3000 };
        assert!(
            start.elapsed() < Duration::from_millis(limit),
            "others were delayed: {:?}",
            start.elapsed()
        );
        let (out, closed) = slow.read_to_eof(Duration::from_secs(5));
        assert!(closed, "slow client not closed");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited < Duration::from_secs(4),
            "closed after {waited:?}"
        );
        if s.protocol == Protocol::Http {
            assert_eq!(
                http::parse_response(&out, false).unwrap().unwrap().status,
                408
            );
        }
    });
}

/// SIGTERM while requests are in flight: every request the server had
/// received is answered, the server exits 0, and no response is cut.
#[test]
fn sigterm_during_load_loses_no_accepted_request() {
    each(&[], |s, _| {
        // Requests certainly received before the signal: each on its own
        // connection, sent 200 ms before it.
        let waiting: Vec<_> = (0..12)
            .map(|_| {
                let mut c = s.connect();
                let wire = c.encode("GET", "/wait?us=300000", b"");
                c.send(&wire).unwrap();
                c
            })
            .collect();
        // Keep-alive traffic racing the signal.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammers: Vec<_> = (0..4)
            .map(|_| {
                let (addr, protocol, stop) = (s.addr.clone(), s.protocol, stop.clone());
                let per_conn = if s.one_request_per_connection { 1 } else { 20 };
                std::thread::spawn(move || {
                    let mut done = 0u64;
                    'outer: while !stop.load(Ordering::Relaxed) {
                        let Ok(stream) = TcpStream::connect(&addr) else {
                            break;
                        };
                        let mut c = Client::from_stream(stream, protocol);
                        for _ in 0..per_conn {
                            let wire = c.encode("GET", "/hello", b"");
                            if c.send(&wire).is_err() {
                                continue 'outer;
                            }
                            match c.read_response(false) {
                                Ok(r) => {
                                    assert_eq!(
                                        (r.status, &r.body[..]),
                                        (200, &b"Hello, World!"[..])
                                    );
                                    done += 1;
                                }
                                // Closed before any byte of an answer: the server
                                // stopped; a cut response would be a bug.
                                Err(e) => {
                                    assert!(
                                        e.contains("after 0 bytes") || e.contains("reset"),
                                        "{e}"
                                    );
                                    break 'outer;
                                }
                            }
                        }
                    }
                    done
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        s.sigterm();
        for mut c in waiting {
            let r = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("{}: in-flight request lost: {e}", s.name));
            assert_eq!((r.status, &r.body[..]), (200, &b"waited 300000 us"[..]));
        }
        stop.store(true, Ordering::Relaxed);
        let served: u64 = hammers.into_iter().map(|h| h.join().expect("hammer")).sum();
        assert!(served > 0);
        let status = s
            .wait_exit(Duration::from_secs(10))
            .expect("server did not exit after SIGTERM");
        assert!(status.success(), "{status:?}");
    });
}

/// `--max-conns 10` with 20 keep-alive connections each asking once: at
/// most 10 are served at once, and a model that holds connections itself
/// (an event loop, a thread per connection, a queue) refuses the rest with
/// 503 / END_REQUEST(OVERLOADED) at once. Models whose workers hold one
/// connection each (iterative, prefork, fpm: `--max-conns` is per process)
/// leave the others waiting in the listen backlog instead, and fork-server
/// ends each connection after one request, so only the "at most 10" part
/// applies to them. swoole-server `--mode base` runs an event loop in each
/// worker process: at most 10 in each, and all answered at once.
#[test]
fn max_conns_refuses_beyond_the_limit() {
    each(&["--max-conns", "10"], |s, m| {
        let one_per_worker = ["iterative-server", "prefork-server", "fpm-server"].contains(&m.bin);
        // swoole-server --mode base: an event loop in each of its worker
        // processes, each with its own 10 places.
        let loop_per_process = m.flags.windows(2).any(|f| f == ["--mode", "base"]);
        let mut by_worker = std::collections::HashMap::<String, usize>::new();
        let mut clients: Vec<Client> = (0..20).map(|_| s.connect()).collect();
        for c in &mut clients {
            let wire = c.encode("GET", "/hello", b"");
            c.send(&wire).unwrap();
        }
        // One shared deadline: those waiting in a backlog cost it once.
        let deadline = Instant::now() + Duration::from_millis(1500);
        let (mut served, mut refused) = (0, 0);
        for c in &mut clients {
            let left = deadline.saturating_duration_since(Instant::now());
            c.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(20))))
                .unwrap();
            match c.read_response(false) {
                Ok(r) if r.status == 200 => {
                    served += 1;
                    *by_worker.entry(r.worker.unwrap_or_default()).or_default() += 1;
                }
                Ok(r) if r.status == 503 => refused += 1,
                Ok(r) if r.fcgi_status == Some(ProtocolStatus::Overloaded) => refused += 1,
                Ok(r) => panic!("{}: unexpected answer {}", m.bin, r.status),
                // Waiting in the backlog, or refused without a whole answer.
                Err(_) => {}
            }
        }
        if !m.keep_alive {
            // fork-server: a child per connection, gone after its one
            // answer, so "at once" cannot be seen from the answers.
        } else if loop_per_process {
            assert_eq!(served + refused, 20, "{}: all answered at once", m.bin);
            assert!(
                by_worker.values().all(|&n| n <= 10),
                "{}: more than 10 at once in one worker: {by_worker:?}",
                m.bin
            );
        } else if one_per_worker {
            assert!(served <= 10, "{}: {served} served at once", m.bin);
        } else {
            // threadpool-server admits 10 too, but its 4 workers hold 4 of
            // them (keep-alive) while 6 wait in its queue.
            let expect = if m.bin == "threadpool-server" { 4 } else { 10 };
            assert_eq!(
                (served, refused),
                (expect, 10),
                "{}: served and refused",
                m.bin
            );
        }
        drop(clients);
        // The places are free again once those connections are gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = s.connect();
            let wire = c.encode("GET", "/hello", b"");
            c.send(&wire).unwrap();
            match c.read_response(false) {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => panic!("{}: not served after the others left: {other:?}", m.bin),
            }
        }
    });
}

/// 240 KB of FastCGI PARAMS and never the empty PARAMS record: past the
/// 64 KiB cap the request is ended (or the connection closed) within a
/// second, and the server still serves others.
#[test]
fn fastcgi_params_past_the_cap_end_the_request_at_once() {
    for m in SERVERS.iter().filter(|m| chosen(m.bin)) {
        let Some(s) = Server::start_or_skip(m.bin, Protocol::Fcgi, m.flags) else {
            continue;
        };
        let mut c = s.connect();
        let mut wire = Vec::new();
        fcgi::push_begin_request(&mut wire, 1, true);
        let mut params = Vec::new();
        fcgi::push_name_value(&mut params, b"HTTP_X_FILL", &vec![b'x'; 60_000]);
        for _ in 0..4 {
            fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
        }
        let started = Instant::now();
        // The server may stop reading once it has answered.
        let _ = c.send(&wire);
        let (bytes, closed) = c.read_to_eof(Duration::from_secs(1));
        let ended = records(&bytes)
            .iter()
            .any(|(kind, id, _)| *kind == fcgi::END_REQUEST && *id == 1);
        assert!(
            ended || closed,
            "{}: no END_REQUEST and no close within {:?}",
            m.bin,
            started.elapsed()
        );
        s.connect().request("GET", "/hello", b"");
    }
}
