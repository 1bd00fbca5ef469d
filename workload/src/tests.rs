//! Tests of the connection state machine, driven in memory on a virtual clock.

use std::io;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::conn::{Conn, FileRequest, Host, Protocol, Relay, Timeouts, WINDOW};
use crate::routes::{self, Status};
use crate::{fcgi, http};

struct TestHost {
    requests: u64,
}

impl Host for TestHost {
    fn response_headers(&self) -> &[u8] {
        b"Server: iomodels-test\r\nX-Worker: 1\r\n"
    }
    fn max_conns(&self) -> u64 {
        100
    }
    fn status(&mut self) -> Status {
        Status {
            model: "test".into(),
            requests: self.requests,
            ..Status::default()
        }
    }
    fn on_request(&mut self) {
        self.requests += 1;
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(5),
    idle: Duration::from_secs(30),
};

fn new_conn(protocol: Protocol, now: Instant) -> Conn {
    Conn::new(protocol, TIMEOUTS, now)
}

/// The data dir the tests read `/file` from: the generated files only.
fn read_file(name: &str) -> io::Result<Vec<u8>> {
    match routes::DATA_FILES.iter().find(|(n, _)| *n == name) {
        Some((_, size)) => {
            let mut v = Vec::new();
            routes::extend_pattern(&mut v, *size);
            Ok(v)
        }
        None => Err(io::ErrorKind::NotFound.into()),
    }
}

/// What a model does for a file request, with the generated files.
fn serve_file(conn: &mut Conn, req: FileRequest, host: &mut dyn Host, now: Instant) {
    match req {
        FileRequest::Open(name) => {
            OPENED.with(|o| *o.borrow_mut() = name.to_string());
            let size = read_file(&name).map(|v| v.len() as u64);
            conn.file_opened(size, now, host);
        }
        FileRequest::Read { offset, len } => {
            let data = read_file(OPENED.with(|o| o.borrow().clone()).as_str()).unwrap();
            let end = (offset as usize + len).min(data.len());
            conn.file_read(Ok(&data[offset as usize..end]), now, host);
        }
    }
}

thread_local! {
    /// The file the test's model has open (one connection at a time).
    static OPENED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Feeds `chunks` one by one, writing out everything and running timers as
/// a perfect model would; returns all output and whether it wants to close.
fn drive(protocol: Protocol, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut host = TestHost { requests: 0 };
    let mut now = Instant::now();
    let mut conn = new_conn(protocol, now);
    let mut written = Vec::new();
    let flush = |conn: &mut Conn, host: &mut TestHost, now: &mut Instant, written: &mut Vec<u8>| {
        // Bounded: every round either writes or fires a due timer.
        for _ in 0..10_000 {
            let out = conn.output();
            if !out.is_empty() {
                written.extend_from_slice(out);
                let n = out.len();
                conn.advance_output(n, *now, host);
            } else if let Some(t) = conn.parked_until() {
                *now = t;
                conn.handle_timeout(*now, host);
            } else if let Some(req) = conn.take_file_request() {
                serve_file(conn, req, host, *now);
            } else {
                break;
            }
        }
    };
    for chunk in chunks {
        assert!(conn.input.len() <= super::conn::tests_max_input());
        if conn.wants_close() {
            break;
        }
        conn.handle_input(chunk, now, &mut host);
        flush(&mut conn, &mut host, &mut now, &mut written);
    }
    conn.handle_eof(now, &mut host);
    flush(&mut conn, &mut host, &mut now, &mut written);
    (written, conn.wants_close())
}

fn http_requests(targets: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (m, t, body) in targets {
        http::encode_request(&mut wire, m, t, "localhost", &[], body);
    }
    wire
}

fn fcgi_requests(targets: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, (m, t, body)) in targets.iter().enumerate() {
        fcgi::encode_request(&mut wire, i as u16 + 1, true, m, t, &[], body);
    }
    wire
}

/// Parses HTTP responses and checks each against its request.
fn check_http(out: &[u8], reqs: &[(&str, &str, Vec<u8>)]) {
    let mut rest = out;
    for (m, t, body) in reqs {
        let r = http::parse_response(rest, *m == "HEAD")
            .unwrap()
            .unwrap_or_else(|| panic!("no response to {t}"));
        routes::verify(m, t, body, r.status, r.body).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(r.worker, Some(&b"1"[..]));
        rest = &rest[r.len..];
    }
    assert!(
        rest.is_empty(),
        "extra output: {:?}",
        String::from_utf8_lossy(rest)
    );
}

fn check_fcgi(out: &[u8], reqs: &[(&str, &str, Vec<u8>)]) {
    let mut rest = out;
    let mut reader = fcgi::ResponseReader::new();
    for (i, (m, t, body)) in reqs.iter().enumerate() {
        let r = reader
            .read(rest)
            .unwrap()
            .unwrap_or_else(|| panic!("no response to {t}"));
        assert_eq!(r.id, i as u16 + 1);
        assert_eq!(r.protocol_status, fcgi::ProtocolStatus::RequestComplete);
        routes::verify(m, t, body, r.status, reader.body()).unwrap_or_else(|e| panic!("{t}: {e}"));
        rest = &rest[r.len..];
    }
    assert!(rest.is_empty());
}

fn sample() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("GET", "/hello", vec![]),
        ("GET", "/cpu?n=1000", vec![]),
        ("GET", "/wait?us=1500", vec![]),
        ("GET", "/bytes?n=70000", vec![]),
        ("GET", "/file?name=4k", vec![]),
        ("GET", "/file?name=missing", vec![]),
        ("POST", "/echo", b"some body bytes".to_vec()),
        ("GET", "/status", vec![]),
        ("GET", "/nope", vec![]),
        ("GET", "/cpu?n=x", vec![]),
        ("POST", "/hello", vec![]),
        ("GET", "/hello", vec![]),
    ]
}

#[test]
fn http_pipelined_routes_in_order() {
    let reqs = sample();
    let (out, close) = drive(Protocol::Http, &[&http_requests(&reqs)]);
    check_http(&out, &reqs);
    assert!(close, "closes after the peer's EOF");
}

#[test]
fn fcgi_routes_in_order() {
    let reqs = sample();
    let (out, _) = drive(Protocol::Fcgi, &[&fcgi_requests(&reqs)]);
    check_fcgi(&out, &reqs);
}

#[test]
fn head_has_no_body() {
    let (out, _) = drive(
        Protocol::Http,
        &[b"HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n"],
    );
    let r = http::parse_response(&out, true).unwrap().unwrap();
    assert_eq!(r.body, b"");
    let r2 = http::parse_response(&out[r.len..], false).unwrap().unwrap();
    assert_eq!(r2.body, routes::HELLO);
}

#[test]
fn http_errors_close_only_after_answer() {
    for (input, status) in [
        (&b"BLAH\r\n\r\n"[..], 400),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
            413,
        ),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
    ] {
        let (out, close) = drive(Protocol::Http, &[input, b"GET /hello HTTP/1.1\r\n\r\n"]);
        let r = http::parse_response(&out, false).unwrap().unwrap();
        assert_eq!((r.status, r.close), (status, true));
        assert_eq!(r.len, out.len(), "nothing after the error");
        assert!(close);
    }
    let mut big = b"GET /hello HTTP/1.1\r\nX: ".to_vec();
    big.resize(9000, b'a');
    let (out, _) = drive(Protocol::Http, &[&big]);
    assert_eq!(
        http::parse_response(&out, false).unwrap().unwrap().status,
        431
    );
}

#[test]
fn connection_close_and_http10() {
    let (out, close) = drive(
        Protocol::Http,
        &[b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\nGET /hello HTTP/1.1\r\n\r\n"],
    );
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert!(r.close && close && r.len == out.len());
    let (out, _) = drive(
        Protocol::Http,
        &[b"GET /hello HTTP/1.0\r\n\r\nGET /hello HTTP/1.0\r\n\r\n"],
    );
    assert_eq!(
        http::parse_response(&out, false).unwrap().unwrap().len,
        out.len()
    );
    let two = b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /hello HTTP/1.0\r\n\r\n";
    let (out, _) = drive(Protocol::Http, &[two]);
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert!(!r.close);
    assert!(
        http::parse_response(&out[r.len..], false)
            .unwrap()
            .unwrap()
            .close
    );
}

#[test]
fn expect_continue() {
    let head = b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    let (out, _) = drive(Protocol::Http, &[head, b"abc"]);
    assert!(out.starts_with(http::CONTINUE));
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert_eq!((r.status, r.body), (200, &b"abc"[..]));
}

#[test]
fn slow_head_times_out_with_408() {
    let mut host = TestHost { requests: 0 };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    conn.handle_input(b"GET /hello HT", t0, &mut host);
    let deadline = conn.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(5));
    conn.handle_input(b"T", t0 + Duration::from_secs(3), &mut host);
    assert_eq!(
        conn.poll_timeout(),
        Some(deadline),
        "trickling does not extend it"
    );
    conn.handle_timeout(deadline, &mut host);
    let r = http::parse_response(conn.output(), false).unwrap().unwrap();
    assert_eq!(r.status, 408);
    let n = conn.output().len();
    conn.advance_output(n, deadline, &mut host);
    assert!(conn.wants_close());
}

#[test]
fn idle_keep_alive_closes_and_holds_little() {
    let mut host = TestHost { requests: 0 };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    assert_eq!((conn.input.capacity(), conn.out.capacity()), (0, 0));
    // A large response's buffer goes once it is written...
    conn.handle_input(b"GET /bytes?n=100000 HTTP/1.1\r\n\r\n", t0, &mut host);
    while !conn.output().is_empty() {
        let n = conn.output().len();
        conn.advance_output(n, t0, &mut host);
    }
    assert_eq!((conn.input.capacity(), conn.out.capacity()), (0, 0));
    // ... a small one's stays for the next response (no allocation per
    // keep-alive request), and is reused.
    conn.handle_input(b"GET /hello HTTP/1.1\r\n\r\n", t0, &mut host);
    let n = conn.output().len();
    let buf = conn.output().as_ptr();
    conn.advance_output(n, t0, &mut host);
    assert_eq!(conn.input.capacity(), 0);
    assert!((1..=crate::conn::KEEP_OUTPUT).contains(&conn.out.capacity()));
    conn.handle_input(b"GET /hello HTTP/1.1\r\n\r\n", t0, &mut host);
    assert_eq!(conn.output().as_ptr(), buf);
    let n = conn.output().len();
    conn.advance_output(n, t0, &mut host);
    let idle = conn.poll_timeout().unwrap();
    assert_eq!(idle, t0 + Duration::from_secs(30));
    conn.handle_timeout(idle, &mut host);
    assert!(conn.wants_close());
}

#[test]
fn wait_parks_and_blocks_pipelined_requests() {
    let mut host = TestHost { requests: 0 };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    conn.handle_input(
        b"GET /wait?us=1000 HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n",
        t0,
        &mut host,
    );
    assert!(conn.output().is_empty() && !conn.wants_read());
    let t = conn.parked_until().unwrap();
    assert_eq!(t, t0 + Duration::from_millis(1));
    conn.handle_timeout(t, &mut host);
    let r = http::parse_response(conn.output(), false).unwrap().unwrap();
    assert_eq!(r.body, b"waited 1000 us");
    let r2 = http::parse_response(&conn.output()[r.len..], false)
        .unwrap()
        .unwrap();
    assert_eq!(r2.body, routes::HELLO);
}

#[test]
fn async_file_read() {
    struct Deferring(TestHost);
    impl Host for Deferring {
        fn response_headers(&self) -> &[u8] {
            self.0.response_headers()
        }
        fn max_conns(&self) -> u64 {
            1
        }
        fn status(&mut self) -> Status {
            self.0.status()
        }
    }
    let mut host = Deferring(TestHost { requests: 0 });
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    conn.handle_input(b"GET /file?name=4k HTTP/1.1\r\n\r\n", t0, &mut host);
    assert!(conn.output().is_empty() && conn.poll_timeout().is_none());
    assert_eq!(
        conn.take_file_request(),
        Some(FileRequest::Open("4k".into()))
    );
    assert_eq!(conn.take_file_request(), None, "asked once");
    conn.file_opened(Ok(4), t0, &mut host);
    assert!(conn.output().is_empty() || !conn.output().ends_with(b"data"));
    assert_eq!(
        conn.take_file_request(),
        Some(FileRequest::Read { offset: 0, len: 4 })
    );
    conn.file_read(Ok(b"da"), t0, &mut host);
    assert_eq!(
        conn.take_file_request(),
        Some(FileRequest::Read { offset: 2, len: 2 })
    );
    conn.file_read(Ok(b"ta"), t0, &mut host);
    let r = http::parse_response(conn.output(), false).unwrap().unwrap();
    assert_eq!(r.body, b"data");
}

#[test]
fn drain_closes_after_in_flight() {
    let mut host = TestHost { requests: 0 };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    conn.drain();
    assert!(conn.wants_close(), "an idle connection closes at once");
    let mut conn = new_conn(Protocol::Http, t0);
    conn.handle_input(b"GET /hel", t0, &mut host);
    conn.drain();
    assert!(!conn.wants_close(), "a request in flight is finished");
    conn.handle_input(b"lo HTTP/1.1\r\n\r\n", t0, &mut host);
    let r = http::parse_response(conn.output(), false).unwrap().unwrap();
    assert!(r.close && r.body == routes::HELLO);
}

fn fcgi_records(records: &[(u8, u16, &[u8])]) -> Vec<u8> {
    let mut wire = Vec::new();
    for &(kind, id, content) in records {
        fcgi::push_header(&mut wire, kind, id, content.len(), 0);
        wire.extend_from_slice(content);
    }
    wire
}

fn read_records(mut out: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(r) = fcgi::parse_record(out).unwrap() {
        v.push((r.header.kind, r.header.id, r.content.to_vec()));
        out = &out[r.len..];
    }
    assert!(out.is_empty());
    v
}

#[test]
fn fcgi_management_and_roles() {
    let mut names = Vec::new();
    for n in [
        "FCGI_MAX_CONNS",
        "FCGI_MAX_REQS",
        "FCGI_MPXS_CONNS",
        "OTHER",
    ] {
        fcgi::push_name_value(&mut names, n.as_bytes(), b"");
    }
    let begin_authorizer = [0, 2, 1, 0, 0, 0, 0, 0];
    let wire = fcgi_records(&[
        (fcgi::GET_VALUES, 0, &names),
        (77, 0, b""),
        (fcgi::BEGIN_REQUEST, 5, &begin_authorizer),
    ]);
    let (out, _) = drive(Protocol::Fcgi, &[&wire]);
    let recs = read_records(&out);
    assert_eq!(recs[0].0, fcgi::GET_VALUES_RESULT);
    let values: Vec<_> = fcgi::NameValues::new(&recs[0].2)
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            (&b"FCGI_MAX_CONNS"[..], &b"100"[..]),
            (b"FCGI_MAX_REQS", b"100"),
            (b"FCGI_MPXS_CONNS", b"0")
        ]
    );
    assert_eq!((recs[1].0, recs[1].2[0]), (fcgi::UNKNOWN_TYPE, 77));
    assert_eq!(
        (recs[2].0, recs[2].1, recs[2].2[4]),
        (fcgi::END_REQUEST, 5, 3)
    );
}

#[test]
fn fcgi_second_request_id_cant_mpx() {
    let begin = [0, 1, 1, 0, 0, 0, 0, 0];
    let mut wire = fcgi_records(&[
        (fcgi::BEGIN_REQUEST, 1, &begin),
        (fcgi::BEGIN_REQUEST, 2, &begin),
    ]);
    let mut rest = Vec::new();
    fcgi::encode_request(&mut rest, 1, true, "GET", "/hello", &[], b"");
    wire.extend_from_slice(&rest[16..]); // request 1's PARAMS and STDIN
    let (out, _) = drive(Protocol::Fcgi, &[&wire]);
    let recs = read_records(&out);
    assert_eq!(
        (recs[0].0, recs[0].1, recs[0].2[4]),
        (fcgi::END_REQUEST, 2, 1)
    );
    let last = recs.last().unwrap();
    assert_eq!((last.0, last.1, last.2[4]), (fcgi::END_REQUEST, 1, 0));
}

#[test]
fn fcgi_keep_conn_off_closes_and_version_checked() {
    let mut wire = Vec::new();
    fcgi::encode_request(&mut wire, 1, false, "GET", "/hello", &[], b"");
    fcgi::encode_request(&mut wire, 2, false, "GET", "/hello", &[], b"");
    let (out, close) = drive(Protocol::Fcgi, &[&wire]);
    let recs = read_records(&out);
    assert!(
        close && recs.iter().all(|r| r.1 == 1),
        "only the first answered, then closed"
    );
    let (out, close) = drive(Protocol::Fcgi, &[&[2, 1, 0, 1, 0, 0, 0, 0]]);
    assert!(out.is_empty() && close);
}

#[test]
fn fcgi_caps() {
    let begin = [0, 1, 1, 0, 0, 0, 0, 0];
    let chunk = vec![0u8; 60_000];
    let wire = fcgi_records(&[
        (fcgi::BEGIN_REQUEST, 1, &begin),
        (fcgi::PARAMS, 1, &chunk),
        (fcgi::PARAMS, 1, &chunk),
    ]);
    let (out, close) = drive(Protocol::Fcgi, &[&wire]);
    let mut reader = fcgi::ResponseReader::new();
    assert_eq!(reader.read(&out).unwrap().unwrap().status, 431);
    assert!(close);
    let mut recs = vec![
        (fcgi::BEGIN_REQUEST, 1, &begin[..]),
        (fcgi::PARAMS, 1, &[][..]),
    ];
    recs.extend(std::iter::repeat_n((fcgi::STDIN, 1, &chunk[..]), 18));
    let (out, _) = drive(Protocol::Fcgi, &[&fcgi_records(&recs)]);
    assert_eq!(reader.read(&out).unwrap().unwrap().status, 413);
    // Malformed name-value lengths in PARAMS: 400.
    let wire = fcgi_records(&[
        (fcgi::BEGIN_REQUEST, 1, &begin),
        (fcgi::PARAMS, 1, &[0xff, 0, 0, 9]),
        (fcgi::PARAMS, 1, &[]),
        (fcgi::STDIN, 1, &[]),
    ]);
    let (out, _) = drive(Protocol::Fcgi, &[&wire]);
    assert_eq!(reader.read(&out).unwrap().unwrap().status, 400);
}

#[test]
fn fcgi_abort() {
    let begin = [0, 1, 1, 0, 0, 0, 0, 0];
    let wire = fcgi_records(&[
        (fcgi::BEGIN_REQUEST, 1, &begin),
        (fcgi::ABORT_REQUEST, 1, &[]),
    ]);
    let (out, _) = drive(Protocol::Fcgi, &[&wire]);
    let recs = read_records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].0, recs[0].2[4]), (fcgi::END_REQUEST, 0));
}

fn split(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([wire.len()]) {
        chunks.push(wire[last..p].to_vec());
        last = p;
    }
    chunks
}

fn arb_requests() -> impl Strategy<Value = Vec<(&'static str, &'static str, Vec<u8>)>> {
    let one = prop_oneof![
        Just(("GET", "/hello", vec![])),
        Just(("GET", "/cpu?n=77", vec![])),
        Just(("GET", "/wait?us=300", vec![])),
        Just(("GET", "/bytes?n=3000", vec![])),
        Just(("GET", "/file?name=4k", vec![])),
        Just(("GET", "/nope", vec![])),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| ("POST", "/echo", b)),
    ];
    proptest::collection::vec(one, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_responses(reqs in arb_requests(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        for (protocol, wire) in [(Protocol::Http, http_requests(&reqs)), (Protocol::Fcgi, fcgi_requests(&reqs))] {
            let (whole, _) = drive(protocol, &[&wire]);
            let chunks = split(&wire, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
            let (pieces, _) = drive(protocol, &refs);
            prop_assert_eq!(&whole, &pieces);
            match protocol {
                Protocol::Http => check_http(&whole, &reqs),
                Protocol::Fcgi => check_fcgi(&whole, &reqs),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        for protocol in [Protocol::Http, Protocol::Fcgi] {
            let chunks = split(&data, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
            drive(protocol, &refs);
        }
    }

    #[test]
    fn arbitrary_fcgi_records_never_panic(records in proptest::collection::vec((0u8..14, 0u16..3, proptest::collection::vec(any::<u8>(), 0..64)), 0..24)) {
        let recs: Vec<(u8, u16, &[u8])> = records.iter().map(|(k, i, c)| (*k, *i, &c[..])).collect();
        drive(Protocol::Fcgi, &[&fcgi_records(&recs)]);
    }
}

#[test]
fn single_request_closes_after_the_first() {
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let mut host = TestHost { requests: 0 };
        let t0 = Instant::now();
        let mut conn = new_conn(protocol, t0);
        conn.single_request();
        assert!(!conn.wants_close(), "waits for its one request");
        let reqs = [("GET", "/hello", vec![]), ("GET", "/hello", vec![])];
        let wire = match protocol {
            Protocol::Http => http_requests(&reqs),
            Protocol::Fcgi => fcgi_requests(&reqs),
        };
        conn.handle_input(&wire, t0, &mut host);
        assert_eq!(conn.requests(), 1);
        let n = conn.output().len();
        if protocol == Protocol::Http {
            assert!(
                http::parse_response(conn.output(), false)
                    .unwrap()
                    .unwrap()
                    .close
            );
        }
        conn.advance_output(n, t0, &mut host);
        assert!(conn.wants_close());
    }
}

#[test]
fn status_body_and_on_dispatch_hooks() {
    struct Custom {
        inner: TestHost,
        seen: Vec<String>,
    }
    impl Host for Custom {
        fn response_headers(&self) -> &[u8] {
            self.inner.response_headers()
        }
        fn max_conns(&self) -> u64 {
            1
        }
        fn status(&mut self) -> Status {
            self.inner.status()
        }
        fn on_dispatch(&mut self, method: &str, target: &str) {
            self.seen.push(format!("{method} {target}"));
        }
        fn status_body(&mut self, query: &str) -> Option<(String, Vec<u8>)> {
            (query == "text").then(|| ("text/plain".into(), b"pool: www".to_vec()))
        }
    }
    let mut host = Custom {
        inner: TestHost { requests: 0 },
        seen: Vec::new(),
    };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Http, t0);
    conn.handle_input(
        b"GET /status?text HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\n",
        t0,
        &mut host,
    );
    let out = conn.output().to_vec();
    let first = http::parse_response(&out, false).unwrap().unwrap();
    assert_eq!(first.body, b"pool: www");
    let second = http::parse_response(&out[first.len..], false)
        .unwrap()
        .unwrap();
    assert!(routes::verify("GET", "/status", b"", 200, second.body).is_ok());
    assert_eq!(host.seen, ["GET /status?text", "GET /status"]);
}

/// Relay mode: a front-end `Conn` frames, a worker's `Conn` answers, and
/// the client sees the same bytes as from one ordinary `Conn`.
fn relay_drive(protocol: Protocol, chunks: &[&[u8]]) -> Vec<u8> {
    let mut host = TestHost { requests: 0 };
    let now = Instant::now();
    let mut front = new_conn(protocol, now);
    front.relay_requests();
    let mut written = Vec::new();
    for chunk in chunks {
        front.handle_input(chunk, now, &mut host);
        for _ in 0..1000 {
            if !front.output().is_empty() {
                written.extend_from_slice(front.output());
                let n = front.output().len();
                front.advance_output(n, now, &mut host);
            } else if let Some(relay) = front.take_relay() {
                let Relay { bytes, last, .. } = *relay;
                let (answer, _) = {
                    let mut worker = new_conn(protocol, now);
                    if last {
                        worker.single_request();
                    }
                    worker.handle_input(&bytes, now, &mut host);
                    let mut out = Vec::new();
                    for _ in 0..100 {
                        if !worker.output().is_empty() {
                            out.extend_from_slice(worker.output());
                            let n = worker.output().len();
                            worker.advance_output(n, now, &mut host);
                        } else if let Some(t) = worker.parked_until() {
                            worker.handle_timeout(t, &mut host);
                        } else {
                            break;
                        }
                    }
                    (out, ())
                };
                // Handed over in pieces, as a worker streams it.
                let pieces: Vec<&[u8]> = answer.chunks(1000).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    front.relay_data(piece, i + 1 == pieces.len(), now, &mut host);
                }
                if pieces.is_empty() {
                    front.relay_data(b"", true, now, &mut host);
                }
            } else {
                break;
            }
        }
    }
    written
}

#[test]
fn relay_mode_answers_like_a_plain_conn() {
    let reqs = [
        ("GET", "/hello", vec![]),
        ("GET", "/cpu?n=1000", vec![]),
        ("POST", "/echo", b"abcdef".to_vec()),
        ("GET", "/wait?us=0", vec![]),
    ];
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let wire = match protocol {
            Protocol::Http => http_requests(&reqs),
            Protocol::Fcgi => fcgi_requests(&reqs),
        };
        let plain = drive(protocol, &[&wire]).0;
        let relayed = relay_drive(protocol, &[&wire]);
        assert_eq!(relayed, plain, "{protocol}");
    }
}

#[test]
fn relay_mode_keeps_the_connection_rules_in_front() {
    let t0 = Instant::now();
    let mut host = TestHost { requests: 0 };
    // PARAMS over the cap are refused by the front end, never handed on.
    let mut front = new_conn(Protocol::Fcgi, t0);
    front.relay_requests();
    let mut wire = Vec::new();
    fcgi::push_begin_request(&mut wire, 1, true);
    let big = vec![b'x'; 60_000];
    for _ in 0..4 {
        let mut params = Vec::new();
        fcgi::push_name_value(&mut params, b"HTTP_X", &big);
        fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
    }
    front.handle_input(&wire, t0, &mut host);
    assert!(front.take_relay().is_none());
    let mut reader = fcgi::ResponseReader::new();
    let r = reader.read(front.output()).unwrap().unwrap();
    assert_eq!(r.status, 431);
    // A slow head times out in front, on the real clock.
    let mut front = new_conn(Protocol::Http, t0);
    front.relay_requests();
    front.handle_input(b"GET /hello HT", t0, &mut host);
    let deadline = front.poll_timeout().unwrap();
    front.handle_timeout(deadline, &mut host);
    let r = http::parse_response(front.output(), false)
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 408);
    // A request whose answer never comes back ends at the idle timeout.
    let mut front = new_conn(Protocol::Http, t0);
    front.relay_requests();
    front.handle_input(
        b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
        t0,
        &mut host,
    );
    let relay = front.take_relay().unwrap();
    assert!(relay.last && relay.target == "/hello");
    assert!(front.take_relay().is_none(), "given once");
    let idle = front.poll_timeout().unwrap();
    assert_eq!(
        idle,
        t0 + TIMEOUTS.idle * 8,
        "it may queue behind slow clients"
    );
    front.handle_timeout(idle, &mut host);
    assert!(front.wants_close());
}

#[test]
fn refusal_and_identity_lines() {
    let headers = crate::identity_headers("epoll", "7.1");
    assert_eq!(headers, b"Server: iomodels-epoll\r\nX-Worker: 7.1\r\n");
    let r = crate::refusal(Protocol::Http, &headers);
    let parsed = http::parse_response(&r, false).unwrap().unwrap();
    assert_eq!((parsed.status, parsed.close), (503, true));
    let r = crate::refusal(Protocol::Fcgi, &headers);
    let parsed = fcgi::ResponseReader::new().read(&r).unwrap().unwrap();
    assert_eq!(parsed.protocol_status, fcgi::ProtocolStatus::Overloaded);
    assert_eq!(parsed.answered_status(), 0);
}

/// A large body streams: the connection never holds more than the window
/// of response, however large the body, and the bytes are the same.
#[test]
fn large_bodies_stream_within_the_window() {
    let big = 10_000_000;
    let target = format!("/bytes?n={big}");
    let echo: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        for (method, target, body) in [
            ("GET", target.as_str(), &b""[..]),
            ("POST", "/echo", &echo[..]),
            ("GET", "/file?name=1m", b""),
        ] {
            let wire = match protocol {
                Protocol::Http => http_requests(&[(method, target, body.to_vec())]),
                Protocol::Fcgi => fcgi_requests(&[(method, target, body.to_vec())]),
            };
            let mut host = TestHost { requests: 0 };
            let now = Instant::now();
            let mut conn = new_conn(protocol, now);
            conn.handle_input(&wire, now, &mut host);
            let mut got = Vec::new();
            let mut most = 0;
            for _ in 0..100_000 {
                most = most.max(conn.out.capacity());
                let out = conn.output();
                if !out.is_empty() {
                    // A slow reader: 10,000 bytes at a time.
                    let n = out.len().min(10_000);
                    got.extend_from_slice(&out[..n]);
                    conn.advance_output(n, now, &mut host);
                } else if let Some(req) = conn.take_file_request() {
                    serve_file(&mut conn, req, &mut host, now);
                } else {
                    break;
                }
            }
            assert!(
                most <= 2 * WINDOW,
                "{protocol} {target}: buffer grew to {most}"
            );
            let resp = match protocol {
                Protocol::Http => {
                    let r = http::parse_response(&got, false).unwrap().unwrap();
                    assert_eq!(r.len, got.len());
                    r.body.to_vec()
                }
                Protocol::Fcgi => {
                    let mut reader = fcgi::ResponseReader::new();
                    let r = reader.read(&got).unwrap().unwrap();
                    assert_eq!(r.len, got.len());
                    reader.body().to_vec()
                }
            };
            assert!(
                routes::verify(method, target, body_of(method, body), 200, &resp).is_ok(),
                "{protocol} {target}: body differs"
            );
            assert!(!conn.wants_close(), "keep-alive after the stream");
        }
    }
}

fn body_of<'a>(method: &str, body: &'a [u8]) -> &'a [u8] {
    if method == "POST" {
        body
    } else {
        b""
    }
}

/// A peer that asks for 64 MB and reads nothing pins one window.
#[test]
fn a_non_reader_pins_one_window() {
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let wire = match protocol {
            Protocol::Http => http_requests(&[("GET", "/bytes?n=67108864", vec![])]),
            Protocol::Fcgi => fcgi_requests(&[("GET", "/bytes?n=67108864", vec![])]),
        };
        let mut host = TestHost { requests: 0 };
        let t0 = Instant::now();
        let mut conn = new_conn(protocol, t0);
        conn.handle_input(&wire, t0, &mut host);
        assert!(conn.output().len() <= WINDOW + 64 * 1024);
        assert!(!conn.wants_read(), "no new request while streaming");
        // Nothing read for the idle timeout: dropped as a write timeout.
        let deadline = conn.poll_timeout().unwrap();
        conn.handle_timeout(deadline, &mut host);
        assert!(conn.wants_close());
    }
}

/// RFC 9112 §3.2.2: absolute-form is accepted (authority ignored);
/// asterisk-form answers OPTIONS only.
#[test]
fn absolute_and_asterisk_form_targets() {
    let (out, _) = drive(
        Protocol::Http,
        &[b"GET http://example.com:8080/cpu?n=1 HTTP/1.1\r\nHost: example.com\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n"],
    );
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert_eq!((r.status, r.body), (200, &b"e99ff867dbf682c9"[..]));
    let r2 = http::parse_response(&out[r.len..], false).unwrap().unwrap();
    assert_eq!((r2.status, r2.body), (200, &b""[..]));
    let (out, close) = drive(Protocol::Http, &[b"GET * HTTP/1.1\r\n\r\n"]);
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert_eq!(r.status, 400);
    assert!(!close || r.close);
}

/// A FastCGI request sent as whole records with pauses is bounded by the
/// header timeout from its BEGIN_REQUEST, like an HTTP request's head.
#[test]
fn fastcgi_request_in_paused_records_times_out() {
    let mut host = TestHost { requests: 0 };
    let t0 = Instant::now();
    let mut conn = new_conn(Protocol::Fcgi, t0);
    let mut begin = Vec::new();
    fcgi::push_begin_request(&mut begin, 1, true);
    conn.handle_input(&begin, t0, &mut host);
    let deadline = conn.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + TIMEOUTS.header);
    let mut params = Vec::new();
    fcgi::push_name_value(&mut params, b"REQUEST_URI", b"/hello");
    let mut rec = Vec::new();
    fcgi::push_stream(&mut rec, fcgi::PARAMS, 1, &params);
    conn.handle_input(&rec, t0 + Duration::from_secs(3), &mut host);
    assert_eq!(
        conn.poll_timeout(),
        Some(deadline),
        "a whole record does not extend it"
    );
    conn.handle_timeout(deadline, &mut host);
    assert!(conn.wants_close());
}

/// Runs one request through a connection in program mode: `program`
/// answers the request it is given with its stdout and how it ended.
fn program_drive(
    protocol: Protocol,
    wire: &[u8],
    program: impl Fn(&crate::cgi::ProgramRequest) -> (Vec<u8>, crate::ProgramExit),
) -> Vec<u8> {
    let mut host = TestHost { requests: 0 };
    let now = Instant::now();
    let mut conn = new_conn(protocol, now);
    conn.run_programs();
    conn.handle_input(wire, now, &mut host);
    let mut out = Vec::new();
    for _ in 0..10_000 {
        out.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.advance_output(n, now, &mut host);
        if let Some(req) = conn.take_program() {
            let (stdout, exit) = program(&req);
            let mut rest = &stdout[..];
            while !rest.is_empty() && conn.program_room() {
                let n = rest.len().min(4096);
                conn.program_output(&rest[..n], now, &mut host);
                rest = &rest[n..];
                out.extend_from_slice(conn.output());
                let n = conn.output().len();
                conn.advance_output(n, now, &mut host);
            }
            conn.program_exit(exit, now, &mut host);
            continue;
        }
        if conn.wants_close() || (conn.output().is_empty() && !conn.program_running()) {
            break;
        }
    }
    out.extend_from_slice(conn.output());
    out
}

#[test]
fn program_mode_answers_from_the_program_output() {
    use crate::ProgramExit::*;
    let ok = |body: &[u8]| {
        let mut v = b"Status: 201 Created\nContent-Type: text/x\nX-A: 1\nServer: no\n\n".to_vec();
        v.extend_from_slice(body);
        v
    };
    let get = http_requests(&[("GET", "/any%20thing?q=1", Vec::new())]);
    let out = program_drive(Protocol::Http, &get, |req| {
        assert_eq!(
            (req.path_info.as_str(), req.query.as_str()),
            ("/any thing", "q=1")
        );
        (ok(b"hello"), Success)
    });
    let r = http::parse_response(&out, false).unwrap().unwrap();
    assert_eq!((r.status, r.body), (201, &b"hello"[..]));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("X-A: 1\r\n") && text.contains("Server: iomodels-test"));
    assert!(!text.contains("Server: no"), "{text}");
    for (stdout, exit, status) in [
        (ok(b"x"), Failed, 502),
        (ok(b"x"), TimedOut, 504),
        (b"".to_vec(), Success, 502),
        (b"no head at all".to_vec(), Success, 502),
        (
            b"Content-Type: a\nContent-Length: 10\n\nshort".to_vec(),
            Success,
            502,
        ),
    ] {
        let out = program_drive(Protocol::Http, &get, |_| (stdout.clone(), exit));
        let r = http::parse_response(&out, false).unwrap().unwrap();
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&stdout));
    }
    // /status is the server's own: no program runs.
    let status = http_requests(&[("GET", "/status", Vec::new())]);
    let out = program_drive(Protocol::Http, &status, |_| panic!("ran a program"));
    assert_eq!(
        http::parse_response(&out, false).unwrap().unwrap().status,
        200
    );
    // A control character in the decoded path never reaches a program.
    let nl = http_requests(&[("GET", "/x%0a.php", Vec::new())]);
    let out = program_drive(Protocol::Http, &nl, |_| panic!("ran a program"));
    assert_eq!(
        http::parse_response(&out, false).unwrap().unwrap().status,
        400
    );
}

#[test]
fn program_mode_streams_a_large_body_within_the_window() {
    let n = 3 * WINDOW + 5;
    let mut stdout = format!("Content-Type: a/b\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    routes::extend_pattern(&mut stdout, n);
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let wire = match protocol {
            Protocol::Http => http_requests(&[("GET", "/big", Vec::new())]),
            Protocol::Fcgi => fcgi_requests(&[("GET", "/big", Vec::new())]),
        };
        let out = program_drive(protocol, &wire, |_| {
            (stdout.clone(), crate::ProgramExit::Success)
        });
        let body = match protocol {
            Protocol::Http => http::parse_response(&out, false)
                .unwrap()
                .unwrap()
                .body
                .to_vec(),
            Protocol::Fcgi => {
                let mut reader = fcgi::ResponseReader::new();
                reader.read(&out).unwrap().unwrap();
                reader.body().to_vec()
            }
        };
        assert_eq!(body.len(), n);
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == routes::pattern_byte(i)));
    }
}
