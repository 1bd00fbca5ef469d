//! An in-process test server for the load generator's tests: a thread per
//! connection, std blocking sockets, and the workload crate's [`Conn`]
//! state machine, so it answers every route exactly as the real models do.
//! Knobs make it misbehave on purpose: corrupt bodies, stall for a while,
//! or drop connections; counters tell what the load generator did.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iomodels_workload::routes::Status;
use iomodels_workload::{Conn, Host, Protocol, Timeouts};

/// How the test server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Speak FastCGI instead of HTTP.
    pub fcgi: bool,
    /// Listen on a unix socket at this path instead of TCP.
    pub unix: Option<PathBuf>,
    /// Change one byte of every `Hello, World!` body.
    pub corrupt: bool,
    /// Answer nothing from `start` after the server started for `len`.
    pub stall: Option<(Duration, Duration)>,
    /// Close each connection, unanswered, when this many requests came.
    pub drop_after: Option<u64>,
    /// Never answer at all.
    pub mute: bool,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepts: AtomicU64,
    pub open: AtomicI64,
    pub max_open: AtomicI64,
    pub requests: AtomicU64,
}

/// A running test server; stops accepting when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` or `fcgi://…` (or `http://unix` for a unix socket).
    pub base: String,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    wake: Option<std::net::SocketAddr>,
}

impl TestServer {
    /// Starts a server with `options`.
    pub fn start(options: Options) -> TestServer {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let scheme = if options.fcgi { "fcgi" } else { "http" };
        let started = Instant::now();
        let (base, wake) = if let Some(path) = &options.unix {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).expect("bind unix");
            let (c, s, o) = (counters.clone(), stop.clone(), options.clone());
            std::thread::spawn(move || {
                for (i, stream) in listener.incoming().enumerate() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    spawn_conn(stream, i, &c, &o, started);
                }
            });
            (format!("{scheme}://unix"), None)
        } else {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let (c, s, o) = (counters.clone(), stop.clone(), options.clone());
            std::thread::spawn(move || {
                for (i, stream) in listener.incoming().enumerate() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_nodelay(true);
                    spawn_conn(stream, i, &c, &o, started);
                }
            });
            (format!("{scheme}://{addr}"), Some(addr))
        };
        TestServer {
            base,
            counters,
            stop,
            wake,
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        if let Some(a) = self.wake {
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(100));
        }
    }
}

struct TestHost {
    headers: Vec<u8>,
}

impl Host for TestHost {
    fn response_headers(&self) -> &[u8] {
        &self.headers
    }
    fn max_conns(&self) -> u64 {
        10_000
    }
    fn status(&mut self) -> Status {
        Status {
            model: "test".into(),
            ..Status::default()
        }
    }
}

fn spawn_conn<S: Read + Write + Send + 'static>(
    stream: S,
    index: usize,
    counters: &Arc<Counters>,
    options: &Options,
    started: Instant,
) {
    counters.accepts.fetch_add(1, Ordering::Relaxed);
    let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
    counters.max_open.fetch_max(open, Ordering::Relaxed);
    let (c, o) = (counters.clone(), options.clone());
    std::thread::spawn(move || {
        serve(stream, index, &c, &o, started);
        c.open.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Serves one connection until either side closes it.
fn serve<S: Read + Write>(
    mut stream: S,
    index: usize,
    counters: &Counters,
    options: &Options,
    started: Instant,
) {
    let protocol = if options.fcgi {
        Protocol::Fcgi
    } else {
        Protocol::Http
    };
    // Two "workers", so per-worker counts have something to count.
    let mut host = TestHost {
        headers: format!("Server: iomodels-test\r\nX-Worker: 1.{}\r\n", index % 2).into_bytes(),
    };
    let mut conn = Conn::new(protocol, Timeouts::default(), Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = 0u64;
    loop {
        while !conn.output().is_empty() {
            let mut out = conn.output().to_vec();
            if options.corrupt {
                corrupt(&mut out);
            }
            match stream.write(&out) {
                Ok(0) | Err(_) => return,
                Ok(n) => conn.advance_output(n, Instant::now(), &mut host),
            }
        }
        if conn.wants_close() {
            return;
        }
        if let Some(t) = conn.parked_until() {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), &mut host);
            continue;
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            conn.handle_eof(Instant::now(), &mut host);
            if conn.output().is_empty() {
                return;
            }
            continue;
        }
        if options.mute {
            continue;
        }
        if let Some((from, len)) = options.stall {
            let (a, b) = (started + from, started + from + len);
            let now = Instant::now();
            if now >= a && now < b {
                std::thread::sleep(b - now);
            }
        }
        let before = conn.requests();
        conn.handle_input(&buf[..n], Instant::now(), &mut host);
        let new = conn.requests() - before;
        counters.requests.fetch_add(new, Ordering::Relaxed);
        answered += new;
        if options.drop_after.is_some_and(|k| answered > k) {
            // Close without sending the answer just made.
            return;
        }
    }
}

fn corrupt(out: &mut [u8]) {
    let needle = b"Hello, World!";
    let mut i = 0;
    while i + needle.len() <= out.len() {
        if &out[i..i + needle.len()] == needle {
            out[i + 7] = b'w';
            i += needle.len();
        } else {
            i += 1;
        }
    }
}

/// A unix socket path unique to this test.
pub fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-test-{}-{name}.sock", std::process::id()))
}

/// Runs `test` on each I/O backend: epoll, then io_uring where this kernel
/// has what it needs (else a line says why it was skipped).
pub fn each_io(mut test: impl FnMut(loadgen::Io)) {
    eprintln!("backend: epoll");
    test(loadgen::Io::Epoll);
    match loadgen::io_uring_available() {
        Ok(()) => {
            eprintln!("backend: io_uring");
            test(loadgen::Io::Uring);
        }
        Err(e) => eprintln!("io_uring backend skipped: {e}"),
    }
}
