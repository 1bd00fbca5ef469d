//! Helpers shared by the integration tests: start a server binary and wait
//! for its ready line, and talk to it over HTTP or FastCGI with the
//! workload crate's client codecs.

#![allow(dead_code)]

pub mod models;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iomodels_workload::{fcgi, http, Protocol};

/// Where cargo put the server binaries (next to the test's `deps/`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built (cargo builds it before the tests)",
        path.display()
    );
    path
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub name: String,
    pub protocol: Protocol,
    /// The model closes after each request (fork-server): clients reconnect.
    pub one_request_per_connection: bool,
}

impl Server {
    /// Starts `bin` on a free loopback port with the given protocol and
    /// extra flags, and waits (at most 10 s) for `listening on ADDR`.
    pub fn start(bin: &str, protocol: Protocol, extra: &[&str]) -> Server {
        Server::start_or_skip(bin, protocol, extra)
            .unwrap_or_else(|| panic!("{bin} cannot run on this machine"))
    }

    /// Like [`Server::start`], but a server that exits with the line
    /// [`UNAVAILABLE`] (io_uring disabled by sysctl or seccomp) is skipped:
    /// a message on stderr and `None`. Any other early exit fails the test.
    pub fn start_or_skip(bin: &str, protocol: Protocol, extra: &[&str]) -> Option<Server> {
        Server::start_with(bin, protocol, extra, |_| {})
    }

    /// Like [`Server::start_or_skip`], with `setup` applied to the command
    /// before it is spawned (a lowered descriptor limit in `pre_exec`).
    pub fn start_with(
        bin: &str,
        protocol: Protocol,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Option<Server> {
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(["--listen", "127.0.0.1:0", "--protocol", protocol.name()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        // Pass the server's stderr on, and remember an "unavailable" line.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if line.contains(UNAVAILABLE) {
                    let _ = tx.send(line);
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let Some(addr) = wait_ready_line(stdout, bin) else {
            let _ = child.wait();
            let line = rx
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_else(|_| panic!("{bin} exited without printing its ready line"));
            eprintln!("skipped {bin} {extra:?}: {line}");
            return None;
        };
        Some(Server {
            child,
            addr,
            name: bin.to_string(),
            protocol,
            one_request_per_connection: false,
        })
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        let mut c = Client::connect(&self.addr, self.protocol);
        c.one_request_per_connection = self.one_request_per_connection;
        c
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    }

    /// Waits (at most `limit`) for the server to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks `/status` and returns the JSON.
    pub fn status(&self) -> serde_json::Value {
        let mut c = self.connect();
        let r = c.request("GET", "/status", b"");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("status JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a server that cannot use io_uring here says before exiting 1
/// (`uring-server: error: io_uring unavailable: … (kernel X)`).
pub const UNAVAILABLE: &str = "io_uring unavailable";

/// Reads the ready line from a child's stdout on a helper thread (so a
/// server that never prints it fails the test instead of hanging it).
pub fn read_ready_line(stdout: impl Read + Send + 'static, bin: &str) -> String {
    wait_ready_line(stdout, bin).unwrap_or_else(|| panic!("{bin} exited without its ready line"))
}

/// The ready line's address, or `None` if the server closed its stdout
/// (exited) without printing it; panics after 10 s of silence.
pub fn wait_ready_line(stdout: impl Read + Send + 'static, bin: &str) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{bin} printed no ready line within 10 s"),
    };
    Some(
        line.strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{bin}: unexpected first line {line:?}"))
            .to_string(),
    )
}

/// One response as the tests see it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub worker: Option<String>,
    /// HTTP: the server said `Connection: close`. FastCGI: END_REQUEST's
    /// protocol status is in `fcgi_status`.
    pub close: bool,
    pub fcgi_status: Option<fcgi::ProtocolStatus>,
}

/// A blocking client connection speaking either protocol.
pub struct Client {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: Vec<u8>,
    reader: fcgi::ResponseReader,
    next_id: u16,
    pub keep_conn: bool,
    /// Reconnect before each request after the first (fork-server).
    pub one_request_per_connection: bool,
    addr: Option<std::net::SocketAddr>,
    used: bool,
}

impl Client {
    pub fn connect(addr: &str, protocol: Protocol) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream, protocol)
    }

    pub fn from_stream(stream: TcpStream, protocol: Protocol) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let addr = stream.peer_addr().ok();
        Client {
            stream,
            protocol,
            buf: Vec::new(),
            reader: fcgi::ResponseReader::new(),
            next_id: 1,
            keep_conn: true,
            one_request_per_connection: false,
            addr,
            used: false,
        }
    }

    /// Encodes one request in this client's protocol.
    pub fn encode(&mut self, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        match self.protocol {
            Protocol::Http => {
                http::encode_request(&mut wire, method, target, "localhost", &[], body)
            }
            Protocol::Fcgi => {
                fcgi::encode_request(
                    &mut wire,
                    self.next_id,
                    self.keep_conn,
                    method,
                    target,
                    &[],
                    body,
                );
                self.next_id = self.next_id % 1000 + 1;
            }
        }
        wire
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One request, one response, verified against the workload.
    pub fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Response {
        if self.one_request_per_connection && self.used {
            let addr = self.addr.expect("peer address");
            let stream =
                TcpStream::connect(addr).unwrap_or_else(|e| panic!("reconnect {addr}: {e}"));
            let single = self.one_request_per_connection;
            *self = Client::from_stream(stream, self.protocol);
            self.one_request_per_connection = single;
        }
        self.used = true;
        let wire = self.encode(method, target, body);
        self.send(&wire)
            .unwrap_or_else(|e| panic!("send {target}: {e}"));
        let r = self
            .read_response(method == "HEAD")
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        iomodels_workload::verify(method, target, body, r.status, &r.body)
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        r
    }

    /// Reads one whole response.
    pub fn read_response(&mut self, head: bool) -> Result<Response, String> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.protocol {
                Protocol::Http => match http::parse_response(&self.buf, head) {
                    Ok(Some(r)) => {
                        let resp = Response {
                            status: r.status,
                            body: r.body.to_vec(),
                            worker: r.worker.map(|w| String::from_utf8_lossy(w).into_owned()),
                            close: r.close,
                            fcgi_status: None,
                        };
                        let len = r.len;
                        self.buf.drain(..len);
                        return Ok(resp);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                },
                Protocol::Fcgi => match self.reader.read(&self.buf) {
                    Ok(Some(r)) => {
                        let resp = Response {
                            status: r.status,
                            body: self.reader.body().to_vec(),
                            worker: self
                                .reader
                                .worker()
                                .map(|w| String::from_utf8_lossy(w).into_owned()),
                            close: false,
                            fcgi_status: Some(r.protocol_status),
                        };
                        self.buf.drain(..r.len);
                        return Ok(resp);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                },
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed after {} bytes of a response",
                        self.buf.len()
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Reads raw bytes until EOF (at most `limit`), for records and errors.
    pub fn read_to_eof(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return (all, true),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (all, true),
                Err(_) => return (all, false),
            }
        }
    }

    /// Whether the server has closed this connection (EOF within `limit`).
    pub fn is_closed_within(&mut self, limit: Duration) -> bool {
        self.read_to_eof(limit).1
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
