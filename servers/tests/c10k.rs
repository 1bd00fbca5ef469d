//! Many connections at once (a test binary of its own: it holds over
//! 10,000 descriptors, which must not meet other tests' in one process).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use iomodels_workload::Protocol;
use util::Server;

fn connect_many(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect()
}

/// Reads one whole /hello response (or EOF / a 503).
fn hello_status(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(r)) = iomodels_workload::http::parse_response(&buf, false) {
            return Some(r.status);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// select-server: descriptors from 1024 up have no bit in an fd_set, so
/// those connections are refused (503) and everyone below is still served.
#[test]
fn select_survives_1100_connections() {
    let s = Server::start("select-server", Protocol::Http, &[]);
    let mut conns = connect_many(&s.addr, 1100);
    let (mut ok, mut refused) = (0, 0);
    for c in conns.iter_mut() {
        match hello_status(c) {
            Some(200) => ok += 1,
            Some(503) | None => refused += 1,
            Some(other) => panic!("status {other}"),
        }
    }
    assert!(ok >= 1000, "served {ok}");
    assert!(refused >= 60, "refused {refused}");
    // The first thousand are still served, and so is a newcomer once room is made.
    assert_eq!(hello_status(&mut conns[0]), Some(200));
    drop(conns);
    std::thread::sleep(Duration::from_millis(200));
    s.connect().request("GET", "/hello", b"");
}

/// The models built for C10K hold 10,000 idle connections and still
/// answer a newcomer at once. Not listed, with the reason: a thread (or a
/// process) per connection — thread-server, cgi-server (its connection
/// threads), fork-server, the pools — and aio-server, where each idle
/// connection holds a thread of glibc's AIO pool blocked in `read` (see
/// [`aio_pool_threads_bound_the_connections`]).
#[test]
fn ten_thousand_idle_connections() {
    for (bin, flags) in [
        ("poll-server", &[][..]),
        ("epoll-server", &[]),
        ("sigio-server", &[]),
        ("mio-server", &["--workers", "2"]),
        ("oneshot-server", &["--workers", "2"]),
        ("uring-server", &[]),
        ("tokio-server", &["--workers", "2"]),
        ("monoio-server", &["--workers", "2"]),
    ] {
        let Some(s) = Server::start_or_skip(bin, Protocol::Http, flags) else {
            continue;
        };
        let mut idle = connect_many(&s.addr, 10_000);
        // Make sure the server has accepted them all.
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.status()["connections"].as_u64().unwrap() < 10_000 {
            assert!(Instant::now() < deadline, "{bin}: not all 10,000 accepted");
            std::thread::sleep(Duration::from_millis(50));
        }
        let start = Instant::now();
        s.connect().request("GET", "/hello", b"");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{bin}: newcomer waited {:?}",
            start.elapsed()
        );
        for i in [0, 4_999, 9_999] {
            assert_eq!(
                hello_status(&mut idle[i]),
                Some(200),
                "{bin}: idle connection {i}"
            );
        }
        eprintln!("{bin}: 10,000 idle connections held");
    }
}

/// aio-server holds no more waiting connections than glibc's AIO pool has
/// threads: each idle keep-alive connection keeps one blocked in `read`,
/// and a newcomer's read queues behind them until one of them leaves.
#[test]
fn aio_pool_threads_bound_the_connections() {
    let s = Server::start("aio-server", Protocol::Http, &["--aio-threads", "4"]);
    let mut idle = connect_many(&s.addr, 4);
    for c in idle.iter_mut() {
        assert_eq!(hello_status(c), Some(200));
    }
    // Four reads in flight, four threads blocked: the newcomer waits.
    let mut late = TcpStream::connect(&s.addr).unwrap();
    late.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    late.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        late.read(&mut byte).is_err(),
        "answered although every AIO thread was held by an idle connection"
    );
    // One idle client leaves: its thread's read returns 0, and the
    // newcomer's queued read gets that thread.
    drop(idle.remove(0));
    let start = Instant::now();
    assert_eq!(hello_status(&mut late), Some(200));
    eprintln!(
        "aio-server: the fifth connection was served {:?} after the first left",
        start.elapsed()
    );
}
