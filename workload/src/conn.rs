//! The per-connection state machine, the same for every model and both
//! protocols, in the style of quinn-proto: no I/O, the caller hands in bytes
//! and the time and takes out bytes to write and decisions.
//!
//! # The order of calls
//!
//! 1. Bytes arrive: [`Conn::handle_input`]. The peer shut its side:
//!    [`Conn::handle_eof`].
//! 2. Write [`Conn::output`] to the socket; after each write say how much
//!    went with [`Conn::advance_output`] (this may produce more output from
//!    pipelined requests that waited for room).
//! 3. Close the socket when [`Conn::wants_close`] says so.
//! 4. Wake up at [`Conn::poll_timeout`] and call [`Conn::handle_timeout`]: that
//!    finishes a parked `/wait`, times out a slow head, or ends an idle
//!    keep-alive connection.
//! 5. Read only while [`Conn::wants_read`]: a connection that has a response
//!    parked or a lot of output pending stops taking requests (backpressure).
//!
//! A blocking model may instead sleep until [`Conn::parked_until`]; an
//! event-driven model parks the connection on a timer and serves others.
//!
//! `/file` always parks: [`Conn::take_file_request`] asks the model to open
//! the file ([`Conn::file_opened`] with its size), then to read it piece by
//! piece as the window has room ([`Conn::file_read`]); the model does the
//! I/O, synchronously or not.
//!
//! **Bounded memory.** A connection holds at most [`WINDOW`] bytes of
//! response at a time: larger bodies (`/bytes`, `/echo`, `/file`) are
//! produced in chunks as the peer reads, and a connection whose window is
//! full takes no new request.
//!
//! **Relay mode** ([`Conn::relay_requests`]): a front end that passes whole
//! requests to someone else (Swoole's reactors and workers) frames requests
//! here, then [`Conn::take_relay`] gives each whole request's bytes once,
//! the connection parks, and [`Conn::relay_data`] takes the finished
//! response back. The front end keeps every connection-level rule (timeouts,
//! caps, `100 Continue`, FastCGI management records, keep-alive); the
//! worker feeds the bytes to an ordinary `Conn` of its own.
//!
//! **Program mode** ([`Conn::run_programs`]): a CGI server hands each
//! request to a program it executes. [`Conn::take_program`] gives the
//! request once (a [`ProgramRequest`]: its checked meta-variables and
//! body) and the connection parks; the model feeds the program's stdout
//! to [`Conn::program_output`] while [`Conn::program_room`] says so, and
//! says how the program ended with [`Conn::program_exit`]. The connection
//! parses the output's CGI head and answers in its own protocol. The head
//! goes out when the program has exited (so a failure is still a clean
//! 502, a timeout a 504) or, for a body larger than the window, when the
//! window is full: from then on the body streams, and a program that dies
//! short of its `Content-Length` can only cut the connection. `/status`
//! and `OPTIONS *` are the server's own and answered here.
//!
//! Idle connections are cheap: the input buffer is freed as soon as it is
//! empty, and so is the output buffer, unless it is small (at most
//! [`KEEP_OUTPUT`] bytes): that one is kept for the next response, since a
//! keep-alive connection would otherwise pay an allocation and a free per
//! request (a tenth of the instructions of a `/hello` in a model's own
//! code, measured with `iomodels cost`). A connection that has not answered
//! anything holds no heap memory at all.

use std::io;
use std::time::{Duration, Instant};

use crate::cgi::{self, ProgramRequest};
use crate::fcgi::{self, ProtocolStatus};
use crate::http::{self, Parse};
use crate::routes::{self, Route, Status};

/// An emptied output buffer this small is kept for the next response.
pub const KEEP_OUTPUT: usize = 1024;

/// The wire protocol a listener speaks (servers, load generator and
/// orchestrator share this one type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http,
    /// FastCGI 1.0, responder role.
    Fcgi,
}

impl Protocol {
    /// `http` or `fcgi`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Fcgi => "fcgi",
        }
    }
}

/// Timeouts a connection applies to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed to receive one whole request once its first byte came.
    pub header: Duration,
    /// Time a connection may sit with nothing to do (or with output the
    /// peer does not read) before it is closed.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "http" => Ok(Protocol::Http),
            "fcgi" | "fastcgi" => Ok(Protocol::Fcgi),
            _ => Err(format!("unknown protocol '{s}' (http or fcgi)")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One whole request a connection in relay mode hands on (see
/// [`Conn::take_relay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The request in its own protocol: an HTTP request exactly as it came,
    /// or a FastCGI request re-encoded whole (BEGIN_REQUEST, PARAMS, STDIN).
    pub bytes: Vec<u8>,
    /// The request target (`/cpu?n=5`), for a front end that routes by it.
    pub target: String,
    /// The connection closes after this response (`Connection: close`, a
    /// stop): the worker's `Conn` should answer it with
    /// [`Conn::single_request`] so the response says so.
    pub last: bool,
}
/// What a connection needs from the server around it.
pub trait Host {
    /// Header lines every response carries, each ending in CRLF:
    /// `Server: iomodels-<model>` and `X-Worker: <id>` (made by
    /// [`identity_headers`]).
    fn response_headers(&self) -> &[u8];
    /// FCGI_MAX_CONNS, for GET_VALUES.
    fn max_conns(&self) -> u64;
    /// The server's state, for `/status`.
    fn status(&mut self) -> Status;
    /// Called once for every request answered.
    fn on_request(&mut self) {}
    /// Called when a connection is dropped because the peer read none of
    /// its output for a whole idle timeout (a write timeout).
    fn on_write_timeout(&mut self) {}
    /// Called when a whole request is about to run, with its method and
    /// target (a process manager's scoreboard shows them). Default: nothing.
    fn on_dispatch(&mut self, _method: &str, _target: &str) {}
    /// A server that formats `/status` itself (php-fpm's status page, with
    /// `?full`, `?json`, …) returns its content type and body for the
    /// request's `query`; `None` (the default) answers the [`Status`] JSON.
    fn status_body(&mut self, _query: &str) -> Option<(String, Vec<u8>)> {
        None
    }
}

/// The header lines that say who answered, for [`Host::response_headers`]:
/// `Server: iomodels-<model>` and `X-Worker: <worker>` (`<pid>` or
/// `<pid>.<thread index>`).
pub fn identity_headers(model: &str, worker: &str) -> Vec<u8> {
    format!("Server: iomodels-{model}\r\nX-Worker: {worker}\r\n").into_bytes()
}

/// What a server over its connection limit writes before it closes: HTTP
/// 503, or FastCGI END_REQUEST(OVERLOADED) for request id 1 (the id web
/// servers use on a fresh connection). `headers` are the server's
/// [`identity_headers`].
pub fn refusal(protocol: Protocol, headers: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Http => {
            let body = b"server busy: too many connections";
            out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\n");
            out.extend_from_slice(headers);
            out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
            http::push_decimal(&mut out, body.len() as u64);
            out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            out.extend_from_slice(body);
        }
        Protocol::Fcgi => fcgi::push_end_request(&mut out, 1, 0, ProtocolStatus::Overloaded),
    }
    out
}

/// A connection's window: the most response bytes it holds at a time.
/// Bodies larger than [`STREAM_MIN`] are produced in chunks as the peer
/// reads (the `/bytes` pattern, an `/echo` body, a file read piece by piece
/// by the model), so a client that asks for 64 MB and never reads pins this
/// much, not 64 MB. A connection with this much output pending also stops
/// taking new requests (backpressure).
pub const WINDOW: usize = 256 * 1024;
/// Bodies up to this size are written whole; larger ones stream.
pub const STREAM_MIN: usize = 64 * 1024;
/// Body bytes produced per step of a stream (within one FastCGI record).
const CHUNK: usize = 32 * 1024;
/// Bytes of a file asked for per read.
pub const FILE_CHUNK: usize = 64 * 1024;
/// Input held beyond what one request may need is a peer that does not
/// respect backpressure: the connection is closed.
const MAX_BUFFERED_INPUT: usize = http::MAX_BODY + http::MAX_HEAD + fcgi::MAX_RECORD;

#[cfg(test)]
pub(crate) fn tests_max_input() -> usize {
    MAX_BUFFERED_INPUT
}

/// How the response to a request is framed.
#[derive(Debug, Clone, Copy)]
struct Meta {
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    fcgi_id: u16,
}

#[derive(Debug)]
enum Parked {
    /// `/wait` until this instant, then answer `waited us`.
    Until(Instant, u64, Meta),
    /// `/file` to be read by the model: the name until it was taken.
    File(Meta, Option<Box<str>>),
    /// A whole request handed on (relay mode): its bytes until taken.
    Relay(Meta, Option<Box<Relay>>),
    /// A request run by a program (program mode): the request until taken,
    /// then the program's output until its head goes out.
    Program(Meta, Box<PendingProgram>),
}

/// A program's request and its output so far (see [`Parked::Program`]).
#[derive(Debug)]
struct PendingProgram {
    request: Option<Box<ProgramRequest>>,
    output: Vec<u8>,
}

/// How the program of [`Conn::take_program`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramExit {
    /// It exited with status 0 and closed its stdout.
    Success,
    /// It exited non-zero, died of a signal, or could not be started.
    Failed,
    /// It ran past the server's time limit and was killed.
    TimedOut,
}

/// A FastCGI request being received.
#[derive(Debug)]
struct FcgiRequest {
    id: u16,
    keep_conn: bool,
    params: Vec<u8>,
    stdin: Vec<u8>,
    params_done: bool,
    stdin_done: bool,
}

/// A response body.
enum Body<'a> {
    Bytes(&'a [u8]),
    Pattern(usize),
    /// A file of this size, read by the model piece by piece.
    File(usize),
    /// A program's output of this size, fed by the model as it comes.
    Program(usize),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Pattern(n) | Body::File(n) | Body::Program(n) => *n,
        }
    }

    /// Whether it is produced in chunks rather than written whole.
    fn streams(&self) -> bool {
        matches!(self, Body::File(_) | Body::Program(_)) || self.len() > STREAM_MIN
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Body::Bytes(b) => out.extend_from_slice(b),
            Body::Pattern(n) => routes::extend_pattern(out, *n),
            Body::File(_) | Body::Program(_) => unreachable!("a fed body always streams"),
        }
    }

    fn source(self) -> Source {
        match self {
            Body::Bytes(b) => Source::Bytes(b.to_vec()),
            Body::Pattern(_) => Source::Pattern,
            Body::File(_) => Source::File { asked: false },
            Body::Program(_) => Source::Program,
        }
    }
}

/// Where the rest of a streamed body comes from.
#[derive(Debug)]
enum Source {
    /// The `/bytes` pattern.
    Pattern,
    /// Bytes held whole (an `/echo` body, at most the 1 MiB request cap).
    Bytes(Vec<u8>),
    /// A file the model reads; `asked`: a read is under way.
    File { asked: bool },
    /// A program's stdout, fed by the model ([`Conn::program_output`]).
    Program,
}

/// A body being produced as the peer reads.
#[derive(Debug)]
struct Stream {
    source: Source,
    /// Bytes produced so far.
    pos: usize,
    /// Bytes still to produce.
    left: usize,
    /// FastCGI: the request id its STDOUT records carry.
    fcgi_id: Option<u16>,
}

/// What [`Conn::take_file_request`] asks the model to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    /// Open this file of the data dir (a plain file name, already checked)
    /// and answer with its size: [`Conn::file_opened`].
    Open(Box<str>),
    /// Read at most `len` bytes at `offset` of the file opened for this
    /// connection and answer with them: [`Conn::file_read`]. After the
    /// read that reaches the end the model may close the file.
    Read {
        /// Where to read.
        offset: u64,
        /// At most this many bytes.
        len: usize,
    },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Conn {
    protocol: Protocol,
    timeouts: Timeouts,
    pub(crate) input: Vec<u8>,
    pub(crate) out: Vec<u8>,
    out_pos: usize,
    parked: Option<Parked>,
    /// A body still being produced (the response's head is already out).
    stream: Option<Stream>,
    fcgi: Option<Box<FcgiRequest>>,
    /// Close once the output is written (an error, `Connection: close`).
    close_after_output: bool,
    /// Close now, dropping any output (protocol violation, timeout).
    done: bool,
    /// The server is stopping: finish what is in flight, then close.
    draining: bool,
    /// Answer one request only (CGI style), then close.
    single: bool,
    /// Hand whole requests on instead of running them.
    relay: bool,
    /// Have a program run each request (CGI).
    program: bool,
    peer_closed: bool,
    /// The input holds the start of a request, not a whole one.
    input_partial: bool,
    partial_since: Instant,
    last_activity: Instant,
    continue_sent: bool,
    requests: u64,
}

impl Conn {
    /// A new connection, opened at `now`, applying `timeouts` to itself.
    pub fn new(protocol: Protocol, timeouts: Timeouts, now: Instant) -> Conn {
        Conn {
            protocol,
            timeouts,
            input: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            parked: None,
            stream: None,
            fcgi: None,
            close_after_output: false,
            done: false,
            draining: false,
            single: false,
            relay: false,
            program: false,
            peer_closed: false,
            input_partial: false,
            partial_since: now,
            last_activity: now,
            continue_sent: false,
            requests: 0,
        }
    }

    /// The protocol this connection speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Requests answered on this connection.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Hands in bytes read from the peer.
    pub fn handle_input(&mut self, data: &[u8], now: Instant, host: &mut dyn Host) {
        if data.is_empty() {
            return;
        }
        self.last_activity = now;
        if self.done {
            return;
        }
        if self.input.is_empty() {
            // The common case: parse straight from the caller's buffer and
            // keep only what is left over.
            if !self.input_partial {
                self.partial_since = now;
            }
            let used = self.process(data, now, host);
            if used < data.len() {
                self.input.extend_from_slice(&data[used..]);
            }
            self.after_process(used, now);
        } else {
            if self.input.len() + data.len() > MAX_BUFFERED_INPUT {
                self.done = true;
                return;
            }
            self.input.extend_from_slice(data);
            self.resume(now, host);
        }
    }

    /// The peer shut its writing side: answer what is complete, then close.
    pub fn handle_eof(&mut self, now: Instant, host: &mut dyn Host) {
        self.peer_closed = true;
        self.resume(now, host);
    }

    /// Bytes to write to the peer.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`Conn::output`] were written.
    pub fn advance_output(&mut self, n: usize, now: Instant, host: &mut dyn Host) {
        if n == 0 {
            return;
        }
        self.last_activity = now;
        self.out_pos += n;
        debug_assert!(self.out_pos <= self.out.len());
        if self.stream.is_some() {
            // Produce more once the window is nearly drained (what is left
            // moves to the front of the buffer: keep that copy small; the
            // kernel's send buffer still holds bytes meanwhile).
            if self.out.len() - self.out_pos <= CHUNK {
                self.fill();
            }
            if self.stream.is_some() {
                return;
            }
        }
        if self.out_pos >= self.out.len() {
            // A small buffer stays for the next response; a large one goes,
            // so a connection between requests holds little heap.
            if self.out.capacity() <= KEEP_OUTPUT {
                self.out.clear();
            } else {
                self.out = Vec::new();
            }
            self.out_pos = 0;
            self.resume(now, host);
        }
    }

    /// Produces the next chunks of a streamed body while the window has
    /// room; finishes the response (FastCGI: the end of STDOUT and
    /// END_REQUEST) when the body is complete.
    fn fill(&mut self) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        if self.out_pos > 0 {
            // What the peer has read goes; the buffer stays for the rest.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        // A file's or a program's pieces come from the model instead.
        let produced_here = matches!(st.source, Source::Pattern | Source::Bytes(_));
        while produced_here && st.left > 0 && self.out.len() < WINDOW {
            let n = st.left.min(CHUNK);
            if let Some(id) = st.fcgi_id {
                fcgi::push_header(&mut self.out, fcgi::STDOUT, id, n, 0);
            }
            match &st.source {
                Source::Pattern => routes::extend_pattern_at(&mut self.out, st.pos, n),
                Source::Bytes(b) => self.out.extend_from_slice(&b[st.pos..st.pos + n]),
                Source::File { .. } | Source::Program => unreachable!("fed by the model"),
            }
            st.pos += n;
            st.left -= n;
        }
        if st.left == 0 {
            if let Some(id) = st.fcgi_id {
                fcgi::push_header(&mut self.out, fcgi::STDOUT, id, 0, 0);
                fcgi::push_end_request(&mut self.out, id, 0, ProtocolStatus::RequestComplete);
            }
            self.stream = None;
        }
    }

    /// Whether the model should read from the socket now.
    pub fn wants_read(&self) -> bool {
        self.can_process() && !self.peer_closed
    }

    /// Whether the socket should be closed now.
    pub fn wants_close(&self) -> bool {
        if self.done {
            return true;
        }
        let idle = self.output().is_empty() && self.parked.is_none() && self.stream.is_none();
        idle && (self.close_after_output
            || (self.peer_closed && (self.input.is_empty() || self.input_partial))
            || (self.draining && self.input.is_empty() && self.fcgi.is_none()))
    }

    /// When a parked `/wait` is due (blocking models sleep until then).
    pub fn parked_until(&self) -> Option<Instant> {
        match self.parked {
            Some(Parked::Until(t, _, _)) => Some(t),
            _ => None,
        }
    }

    /// When [`Conn::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        match self.parked {
            Some(Parked::Until(t, _, _)) => Some(t),
            // The model bounds a program's run time itself.
            Some(Parked::File(..) | Parked::Program(..)) => None,
            // A request handed on that never comes back (its worker died)
            // ends the connection at the idle timeout.
            Some(Parked::Relay(..)) => Some(self.relay_deadline()),
            None if self.input_partial && self.output().is_empty() => {
                Some(self.partial_since + self.timeouts.header)
            }
            None => Some(self.last_activity + self.timeouts.idle),
        }
    }

    /// The time has come (or passed) for the deadline [`Conn::poll_timeout`] gave.
    pub fn handle_timeout(&mut self, now: Instant, host: &mut dyn Host) {
        let timeouts = self.timeouts;
        if let Some(Parked::Relay(..)) = self.parked {
            if now >= self.relay_deadline() {
                if !self.output().is_empty() {
                    host.on_write_timeout();
                }
                self.done = true;
            }
            return;
        }
        if let Some(Parked::Until(t, us, meta)) = self.parked {
            if now >= t {
                self.parked = None;
                let body = routes::wait_body(us);
                self.respond(
                    meta,
                    200,
                    "text/plain",
                    Body::Bytes(body.as_bytes()),
                    &[],
                    host,
                );
                self.resume(now, host);
            }
            return;
        }
        if self.parked.is_some() {
            return;
        }
        if self.input_partial && self.output().is_empty() {
            if now >= self.partial_since + timeouts.header {
                // A slow or stalled client (slowloris): it loses its
                // connection, nobody else waits for it.
                match self.protocol {
                    Protocol::Http => {
                        self.input = Vec::new();
                        self.input_partial = false;
                        let meta = Meta {
                            keep_alive: false,
                            head_only: false,
                            http10: false,
                            fcgi_id: 0,
                        };
                        let body = Body::Bytes(b"request not received in time");
                        self.respond(meta, 408, "text/plain", body, &[], host);
                    }
                    Protocol::Fcgi => self.done = true,
                }
            }
        } else if now >= self.last_activity + timeouts.idle {
            if !self.output().is_empty() {
                // Output the peer has not read for a whole idle timeout: a
                // stuck writer, dropped like an idle connection.
                host.on_write_timeout();
            }
            self.done = true;
        }
    }

    /// Answer one request, then close (HTTP says `Connection: close`,
    /// FastCGI closes after END_REQUEST): the CGI way, one process per
    /// request.
    pub fn single_request(&mut self) {
        self.single = true;
    }

    /// The server is stopping: answer requests already received, then close.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// When a relayed request is given up. With response bytes pending, the
    /// idle timeout (a peer that reads nothing: a write timeout). Waiting
    /// for the answer, eight idle timeouts: it may queue at its worker
    /// behind slow clients (four stuck writers ahead of it on two workers
    /// took 4.1 idle timeouts in the abuse suite), and only a request whose
    /// worker crashed never comes back (the connection then closes).
    fn relay_deadline(&self) -> Instant {
        let waits = if self.output().is_empty() { 8 } else { 1 };
        self.last_activity + self.timeouts.idle * waits
    }

    /// Hand whole requests on instead of running them (see the module
    /// docs): [`Conn::take_relay`] and [`Conn::relay_data`].
    pub fn relay_requests(&mut self) {
        self.relay = true;
    }

    /// Whether a `/file` request is parked or being read: only then can
    /// [`Conn::take_file_request`] have something, now or once output
    /// drains. An event loop that has nothing else left to do skips a pass
    /// that would find nothing.
    pub fn file_pending(&self) -> bool {
        matches!(self.parked, Some(Parked::File(..)))
            || matches!(
                self.stream,
                Some(Stream {
                    source: Source::File { .. },
                    ..
                })
            )
    }

    /// What a `/file` request needs from the model now, each step given
    /// once: open the file, then read it piece by piece as the window has
    /// room (so a large file never sits whole in memory).
    pub fn take_file_request(&mut self) -> Option<FileRequest> {
        if let Some(Parked::File(_, name)) = &mut self.parked {
            return name.take().map(FileRequest::Open);
        }
        let pending = self.out.len() - self.out_pos;
        match self.stream.as_mut() {
            Some(Stream {
                source: Source::File { asked },
                pos,
                left,
                ..
            }) if !*asked && *left > 0 && pending < WINDOW => {
                *asked = true;
                Some(FileRequest::Read {
                    offset: *pos as u64,
                    len: (*left).min(FILE_CHUNK),
                })
            }
            _ => None,
        }
    }

    /// The file of [`FileRequest::Open`] was opened (its size) or not (a
    /// missing file answers 404, another error 500).
    pub fn file_opened(&mut self, result: io::Result<u64>, now: Instant, host: &mut dyn Host) {
        if let Some(Parked::File(meta, _)) = self.parked {
            self.parked = None;
            match result {
                Ok(size) => {
                    let body = Body::File(size as usize);
                    self.respond(meta, 200, "application/octet-stream", body, &[], host);
                }
                Err(e) => self.reply_file_error(meta, e, host),
            }
            if self.stream.is_none() {
                self.resume(now, host);
            }
        }
    }

    /// The bytes of [`FileRequest::Read`] (fewer than asked is fine; none,
    /// or an error, ends the connection: the length was already promised).
    pub fn file_read(&mut self, result: io::Result<&[u8]>, now: Instant, host: &mut dyn Host) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let Source::File { asked } = &mut st.source else {
            return;
        };
        *asked = false;
        match result {
            Ok(data) if !data.is_empty() && data.len() <= st.left => self.feed(data, now, host),
            _ => {
                self.stream = None;
                self.done = true;
            }
        }
    }

    /// Appends the next piece of a body the model feeds (at most what is
    /// left of it) and finishes the response when it is complete.
    fn feed(&mut self, data: &[u8], now: Instant, host: &mut dyn Host) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let data = &data[..data.len().min(st.left)];
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        match st.fcgi_id {
            Some(id) => fcgi::push_stream(&mut self.out, fcgi::STDOUT, id, data),
            None => self.out.extend_from_slice(data),
        }
        st.pos += data.len();
        st.left -= data.len();
        self.last_activity = now;
        self.fill();
        if self.stream.is_none() {
            self.resume(now, host);
        }
    }

    /// Have a program run every request (CGI; see the module docs):
    /// [`Conn::take_program`], [`Conn::program_output`],
    /// [`Conn::program_exit`].
    pub fn run_programs(&mut self) {
        self.program = true;
    }

    /// In program mode: the request to run a program for, given once.
    pub fn take_program(&mut self) -> Option<Box<ProgramRequest>> {
        match &mut self.parked {
            Some(Parked::Program(_, pending)) => pending.request.take(),
            _ => None,
        }
    }

    /// Whether a program's response is under way: its output is still
    /// wanted ([`Conn::program_output`]) or its end ([`Conn::program_exit`]).
    pub fn program_running(&self) -> bool {
        matches!(self.parked, Some(Parked::Program(..)))
            || matches!(&self.stream, Some(st) if matches!(st.source, Source::Program))
    }

    /// Whether the model should read the program's stdout now: its
    /// response is under way and the window has room (a program whose
    /// output is not read blocks in write: backpressure reaches it too).
    pub fn program_room(&self) -> bool {
        match &self.parked {
            Some(Parked::Program(_, p)) => p.output.len() <= WINDOW,
            _ => self.program_running() && self.out.len() - self.out_pos < WINDOW,
        }
    }

    /// The next bytes the program wrote to its stdout. Bytes past its
    /// `Content-Length` are dropped.
    pub fn program_output(&mut self, data: &[u8], now: Instant, host: &mut dyn Host) {
        if let Some(Parked::Program(_, pending)) = &mut self.parked {
            pending.output.extend_from_slice(data);
            if pending.output.len() > WINDOW {
                self.program_answer(None, now, host);
            }
        } else if self.program_running() {
            self.feed(data, now, host);
        }
    }

    /// The program's stdout reached its end and the program has ended
    /// (`exit`), or it was killed. Before its head went out this answers
    /// the request (502 for a failure or bad output, 504 for a timeout);
    /// after, a body short of its length cuts the connection.
    pub fn program_exit(&mut self, exit: ProgramExit, now: Instant, host: &mut dyn Host) {
        if let Some(Parked::Program(..)) = self.parked {
            self.program_answer(Some(exit), now, host);
        } else if self.program_running() {
            self.stream = None;
            self.done = true;
        }
    }

    /// Answers a program's request from its output so far; `exit`: the
    /// program has ended (else the window is full and the body streams).
    fn program_answer(&mut self, exit: Option<ProgramExit>, now: Instant, host: &mut dyn Host) {
        let Some(Parked::Program(meta, pending)) = self.parked.take() else {
            return;
        };
        const TEXT: &str = "text/plain";
        let output = &pending.output;
        let head = match exit {
            Some(ProgramExit::TimedOut) => Err((504, "CGI program timed out")),
            Some(ProgramExit::Failed) => Err((502, "CGI program failed")),
            _ => match cgi::parse_output(output) {
                Ok(Some(head)) => Ok(head),
                Ok(None) => Err((502, cgi::OutputError::NoHead.reason())),
                Err(e) => Err((502, e.reason())),
            },
        };
        let head = match head {
            Ok(head) => head,
            Err((status, reason)) => {
                let body = Body::Bytes(reason.as_bytes());
                self.respond(meta, status, TEXT, body, &[], host);
                return self.resume(now, host);
            }
        };
        let body = &output[head.head_len..];
        let len = head.content_length.unwrap_or(body.len());
        let extra: Vec<(&str, &str)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, ctype) = (head.status, head.content_type.as_str());
        if meta.head_only {
            // HEAD: the program's length, no body (§4.3.3: it sends none).
            self.respond(meta, status, ctype, Body::Program(len), &extra, host);
            return self.resume(now, host);
        }
        if body.len() >= len {
            let body = Body::Bytes(&body[..len]);
            self.respond(meta, status, ctype, body, &extra, host);
            return self.resume(now, host);
        }
        if exit.is_some() || head.content_length.is_none() {
            // Ended short of its length, or too large to hold whole
            // without one: the response's length cannot be told.
            let reason: &[u8] = match exit {
                Some(_) => b"CGI program wrote less than its Content-Length",
                None => b"CGI output over 256 KiB without a Content-Length",
            };
            self.respond(meta, 502, TEXT, Body::Bytes(reason), &[], host);
            return self.resume(now, host);
        }
        self.respond(meta, status, ctype, Body::Program(len), &extra, host);
        let body = body.to_vec();
        self.feed(&body, now, host);
    }

    /// Whether a front end in relay mode may hand this connection more
    /// response bytes now ([`Conn::relay_data`]): its window has room.
    pub fn relay_room(&self) -> bool {
        self.out.len() - self.out_pos < WINDOW
    }

    /// In relay mode: the whole request to hand on, given once. Answer with
    /// [`Conn::relay_data`].
    pub fn take_relay(&mut self) -> Option<Box<Relay>> {
        match &mut self.parked {
            Some(Parked::Relay(_, relay)) => relay.take(),
            _ => None,
        }
    }

    /// In relay mode: the next piece of the response to the request
    /// [`Conn::take_relay`] gave, in the connection's protocol; `last`: the
    /// response is complete. Hand pieces over only while
    /// [`Conn::relay_room`] says so, and the window bound holds here too.
    pub fn relay_data(&mut self, piece: &[u8], last: bool, now: Instant, host: &mut dyn Host) {
        let Some(Parked::Relay(meta, _)) = self.parked else {
            return;
        };
        if self.out_pos > 0 && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(piece);
        self.last_activity = now;
        if last {
            self.parked = None;
            self.requests += 1;
            if !meta.keep_alive {
                self.close_after_output = true;
            }
            self.resume(now, host);
        }
    }

    fn can_process(&self) -> bool {
        !self.done
            && !self.close_after_output
            && self.parked.is_none()
            && self.stream.is_none()
            && self.out.len() - self.out_pos < WINDOW
    }

    /// Processes buffered input.
    fn resume(&mut self, now: Instant, host: &mut dyn Host) {
        if self.input.is_empty() || !self.can_process() {
            return;
        }
        let mut buf = std::mem::take(&mut self.input);
        let used = self.process(&buf, now, host);
        if used == buf.len() {
            buf = Vec::new();
        } else {
            buf.drain(..used);
        }
        self.input = buf;
        self.after_process(used, now);
    }

    fn after_process(&mut self, used: usize, now: Instant) {
        // A FastCGI request whose BEGIN_REQUEST came is under way even
        // between whole records: the header timeout bounds the whole
        // request, as it does an HTTP request's head and body.
        let begun = self.fcgi.is_some();
        let partial = (!self.input.is_empty() || begun) && self.can_process();
        let restart = match self.protocol {
            // A request consumed: what is left is the start of the next one.
            Protocol::Http => used > 0 || !self.input_partial,
            // A request's clock starts at its BEGIN_REQUEST (set there);
            // other bytes start it only when nothing was under way.
            Protocol::Fcgi => !self.input_partial && !begun,
        };
        if partial && restart {
            self.partial_since = now;
        }
        self.input_partial = partial;
    }

    /// Answers every whole request at the start of `buf`; returns the bytes used.
    fn process(&mut self, buf: &[u8], now: Instant, host: &mut dyn Host) -> usize {
        match self.protocol {
            Protocol::Http => self.process_http(buf, now, host),
            Protocol::Fcgi => self.process_fcgi(buf, now, host),
        }
    }

    fn process_http(&mut self, buf: &[u8], now: Instant, host: &mut dyn Host) -> usize {
        let mut pos = 0;
        while pos < buf.len() && self.can_process() {
            let rest = &buf[pos..];
            let head = match http::parse_head(rest) {
                Ok(Parse::Complete(head)) => head,
                Ok(Parse::Partial) => break,
                Err(e) => {
                    // The rest of the stream cannot be framed: answer and close.
                    let meta = Meta {
                        keep_alive: false,
                        head_only: false,
                        http10: false,
                        fcgi_id: 0,
                    };
                    self.respond(
                        meta,
                        e.status(),
                        "text/plain",
                        Body::Bytes(e.reason().as_bytes()),
                        &[],
                        host,
                    );
                    return buf.len();
                }
            };
            let total = head.head_len + head.body_len;
            if rest.len() < total {
                if head.expect_continue && !self.continue_sent {
                    self.out.extend_from_slice(http::CONTINUE);
                    self.continue_sent = true;
                }
                break;
            }
            self.continue_sent = false;
            let meta = Meta {
                keep_alive: head.keep_alive && !self.draining && !self.single,
                head_only: head.method == "HEAD",
                http10: head.http10,
                fcgi_id: 0,
            };
            pos += total;
            if self.program && runs_program(head.target) {
                let body = &rest[head.head_len..total];
                let made = ProgramRequest::from_http(
                    &rest[..head.head_len],
                    head.target,
                    head.http10,
                    body,
                );
                self.park_program(meta, made, host);
                continue;
            }
            if self.relay {
                let relay = Relay {
                    bytes: rest[..total].to_vec(),
                    target: head.target.to_string(),
                    last: !meta.keep_alive,
                };
                self.parked = Some(Parked::Relay(meta, Some(Box::new(relay))));
                continue;
            }
            self.dispatch(
                head.method,
                head.target,
                &rest[head.head_len..total],
                meta,
                now,
                host,
            );
        }
        pos
    }

    fn process_fcgi(&mut self, buf: &[u8], now: Instant, host: &mut dyn Host) -> usize {
        let mut pos = 0;
        while pos < buf.len() && self.can_process() {
            let rec = match fcgi::parse_record(&buf[pos..]) {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(_) => {
                    // A wrong version byte: nothing after it can be trusted.
                    self.close_after_output = true;
                    return buf.len();
                }
            };
            pos += rec.len;
            self.fcgi_record(rec, now, host);
        }
        pos
    }

    fn fcgi_record(&mut self, rec: fcgi::Record<'_>, now: Instant, host: &mut dyn Host) {
        let (kind, id, content) = (rec.header.kind, rec.header.id, rec.content);
        if id == 0 {
            // Management records.
            match kind {
                fcgi::GET_VALUES => fcgi::push_get_values_result(
                    &mut self.out,
                    content,
                    host.max_conns(),
                    host.max_conns(),
                ),
                _ => fcgi::push_unknown_type(&mut self.out, kind),
            }
            return;
        }
        match kind {
            fcgi::BEGIN_REQUEST => {
                if content.len() != 8 {
                    self.close_after_output = true;
                    return;
                }
                if let Some(active) = &self.fcgi {
                    if active.id != id {
                        // One request at a time on a connection (FCGI_MPXS_CONNS=0).
                        fcgi::push_end_request(&mut self.out, id, 0, ProtocolStatus::CantMpxConn);
                    }
                    return;
                }
                let role = u16::from_be_bytes([content[0], content[1]]);
                let keep_conn = content[2] & fcgi::FLAG_KEEP_CONN != 0;
                if role != fcgi::ROLE_RESPONDER {
                    fcgi::push_end_request(&mut self.out, id, 0, ProtocolStatus::UnknownRole);
                    self.close_after_output |= !keep_conn;
                    return;
                }
                self.partial_since = now;
                self.fcgi = Some(Box::new(FcgiRequest {
                    id,
                    keep_conn,
                    params: Vec::new(),
                    stdin: Vec::new(),
                    params_done: false,
                    stdin_done: false,
                }));
            }
            fcgi::PARAMS | fcgi::STDIN | fcgi::ABORT_REQUEST | fcgi::DATA => {
                let Some(active) = self.fcgi.as_mut().filter(|a| a.id == id) else {
                    return; // Records of a request we are not serving.
                };
                let over = match kind {
                    fcgi::PARAMS if content.is_empty() => {
                        active.params_done = true;
                        None
                    }
                    fcgi::PARAMS if active.params.len() + content.len() > fcgi::MAX_PARAMS => {
                        Some((431, "FastCGI PARAMS larger than 64 KiB"))
                    }
                    fcgi::PARAMS => {
                        active.params.extend_from_slice(content);
                        None
                    }
                    fcgi::STDIN if content.is_empty() => {
                        active.stdin_done = true;
                        None
                    }
                    fcgi::STDIN if active.stdin.len() + content.len() > fcgi::MAX_STDIN => {
                        Some((413, "request body larger than 1 MiB"))
                    }
                    fcgi::STDIN => {
                        active.stdin.extend_from_slice(content);
                        None
                    }
                    fcgi::ABORT_REQUEST => {
                        let keep = active.keep_conn;
                        self.fcgi = None;
                        fcgi::push_end_request(
                            &mut self.out,
                            id,
                            0,
                            ProtocolStatus::RequestComplete,
                        );
                        self.close_after_output |= !keep;
                        return;
                    }
                    _ => None, // DATA belongs to the filter role only.
                };
                if let Some((status, reason)) = over {
                    self.fcgi = None;
                    let meta = Meta {
                        keep_alive: false,
                        head_only: false,
                        http10: false,
                        fcgi_id: id,
                    };
                    self.respond(
                        meta,
                        status,
                        "text/plain",
                        Body::Bytes(reason.as_bytes()),
                        &[],
                        host,
                    );
                    return;
                }
                if active.params_done && active.stdin_done {
                    let req = self.fcgi.take().expect("active request");
                    self.fcgi_dispatch(&req, now, host);
                }
            }
            fcgi::END_REQUEST
            | fcgi::STDOUT
            | fcgi::STDERR
            | fcgi::GET_VALUES_RESULT
            | fcgi::UNKNOWN_TYPE => {
                // Records only an application sends: ignore.
            }
            _ => fcgi::push_unknown_type(&mut self.out, kind),
        }
    }

    fn fcgi_dispatch(&mut self, req: &FcgiRequest, now: Instant, host: &mut dyn Host) {
        let meta = Meta {
            keep_alive: req.keep_conn && !self.draining && !self.single,
            head_only: false,
            http10: false,
            fcgi_id: req.id,
        };
        match fcgi::CgiRequest::from_params(&req.params) {
            Ok(cgi) if self.relay => {
                // The request, re-encoded whole for the worker's own Conn.
                let mut bytes = Vec::with_capacity(req.params.len() + req.stdin.len() + 64);
                fcgi::push_begin_request(&mut bytes, req.id, true);
                fcgi::push_stream(&mut bytes, fcgi::PARAMS, req.id, &req.params);
                fcgi::push_header(&mut bytes, fcgi::PARAMS, req.id, 0, 0);
                fcgi::push_stream(&mut bytes, fcgi::STDIN, req.id, &req.stdin);
                fcgi::push_header(&mut bytes, fcgi::STDIN, req.id, 0, 0);
                let relay = Relay {
                    bytes,
                    target: cgi.target().into_owned(),
                    last: !meta.keep_alive,
                };
                self.parked = Some(Parked::Relay(meta, Some(Box::new(relay))));
            }
            Ok(cgi) if self.program && runs_program(&cgi.target()) => {
                let target = cgi.target();
                let made = ProgramRequest::from_fcgi(&req.params, cgi.method, &target, &req.stdin);
                self.park_program(meta, made, host);
            }
            Ok(cgi) => {
                let target = cgi.target();
                self.dispatch(cgi.method, &target, &req.stdin, meta, now, host);
            }
            Err(_) => {
                let meta = Meta {
                    keep_alive: false,
                    ..meta
                };
                let body = Body::Bytes(b"malformed FastCGI PARAMS");
                self.respond(meta, 400, "text/plain", body, &[], host);
            }
        }
    }

    /// Parks a request for a program, or answers 400 when it cannot be
    /// handed to one.
    fn park_program(
        &mut self,
        meta: Meta,
        made: Result<ProgramRequest, cgi::RequestError>,
        host: &mut dyn Host,
    ) {
        match made {
            Ok(request) => {
                let pending = PendingProgram {
                    request: Some(Box::new(request)),
                    output: Vec::new(),
                };
                self.parked = Some(Parked::Program(meta, Box::new(pending)));
            }
            Err(e) => {
                let body = Body::Bytes(e.reason().as_bytes());
                self.respond(meta, 400, "text/plain", body, &[], host);
            }
        }
    }

    /// Runs the route of one whole request.
    fn dispatch(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        meta: Meta,
        now: Instant,
        host: &mut dyn Host,
    ) {
        const TEXT: &str = "text/plain";
        host.on_dispatch(method, target);
        match routes::route(method, target) {
            Route::Hello => self.respond(meta, 200, TEXT, Body::Bytes(routes::HELLO), &[], host),
            Route::Cpu(n) => {
                let body = routes::cpu_body(n);
                self.respond(meta, 200, TEXT, Body::Bytes(body.as_bytes()), &[], host)
            }
            Route::Wait(us) => {
                self.parked = Some(Parked::Until(now + Duration::from_micros(us), us, meta));
                if us == 0 {
                    self.handle_timeout(now, host);
                }
            }
            Route::Bytes(n) => self.respond(meta, 200, TEXT, Body::Pattern(n as usize), &[], host),
            Route::File(name) => self.parked = Some(Parked::File(meta, Some(name.into()))),
            Route::Echo => self.respond(
                meta,
                200,
                "application/octet-stream",
                Body::Bytes(body),
                &[],
                host,
            ),
            Route::Status => {
                let (_, query) = routes::split_target(target);
                if let Some((ctype, body)) = host.status_body(query) {
                    return self.respond(meta, 200, &ctype, Body::Bytes(&body), &[], host);
                }
                let status = serde_json::to_vec(&host.status()).unwrap_or_default();
                self.respond(
                    meta,
                    200,
                    "application/json",
                    Body::Bytes(&status),
                    &[],
                    host,
                )
            }
            Route::Options => {
                let allow = &[("Allow", "GET, HEAD, POST, OPTIONS")];
                self.respond(meta, 200, TEXT, Body::Bytes(b""), allow, host)
            }
            Route::MethodNotAllowed(allow) => {
                let body = Body::Bytes(b"method not allowed");
                self.respond(meta, 405, TEXT, body, &[("Allow", allow)], host)
            }
            Route::BadRequest(reason) => {
                self.respond(meta, 400, TEXT, Body::Bytes(reason.as_bytes()), &[], host)
            }
            Route::NotFound => self.respond(meta, 404, TEXT, Body::Bytes(b"not found"), &[], host),
        }
    }

    fn reply_file_error(&mut self, meta: Meta, e: io::Error, host: &mut dyn Host) {
        match e {
            e if e.kind() == io::ErrorKind::NotFound => self.respond(
                meta,
                404,
                "text/plain",
                Body::Bytes(b"no such file"),
                &[],
                host,
            ),
            _ => self.respond(
                meta,
                500,
                "text/plain",
                Body::Bytes(b"file could not be read"),
                &[],
                host,
            ),
        }
    }

    /// Writes one response in the connection's protocol.
    fn respond(
        &mut self,
        meta: Meta,
        status: u16,
        ctype: &str,
        body: Body<'_>,
        extra: &[(&str, &str)],
        host: &mut dyn Host,
    ) {
        host.on_request();
        self.requests += 1;
        let stream = body.streams() && !meta.head_only;
        if self.out.capacity() == 0 {
            let first = if stream { 0 } else { body.len().min(1 << 16) };
            self.out.reserve(256 + first);
        }
        match self.protocol {
            Protocol::Http => {
                let out = &mut self.out;
                out.extend_from_slice(b"HTTP/1.1 ");
                http::push_decimal(out, status as u64);
                out.push(b' ');
                out.extend_from_slice(http::reason_phrase(status).as_bytes());
                out.extend_from_slice(b"\r\n");
                head_fields(out, ctype, body.len(), extra, host);
                if !meta.keep_alive {
                    out.extend_from_slice(b"Connection: close\r\n");
                } else if meta.http10 {
                    out.extend_from_slice(b"Connection: keep-alive\r\n");
                }
                out.extend_from_slice(b"\r\n");
                if stream {
                    self.start_stream(body, None);
                } else if !meta.head_only {
                    body.write(out);
                }
            }
            Protocol::Fcgi => {
                // CGI output (Status + headers + body) in STDOUT records. The
                // header is written after the content when its length is known.
                let out = &mut self.out;
                let start = out.len();
                out.extend_from_slice(&[0; fcgi::HEADER_LEN]);
                out.extend_from_slice(b"Status: ");
                http::push_decimal(out, status as u64);
                out.push(b' ');
                out.extend_from_slice(http::reason_phrase(status).as_bytes());
                out.extend_from_slice(b"\r\n");
                head_fields(out, ctype, body.len(), extra, host);
                out.extend_from_slice(b"\r\n");
                if stream {
                    // The CGI head in a record of its own; the body follows
                    // in records as it is produced.
                    let content_len = out.len() - start - fcgi::HEADER_LEN;
                    let mut header = Vec::with_capacity(fcgi::HEADER_LEN);
                    fcgi::push_header(&mut header, fcgi::STDOUT, meta.fcgi_id, content_len, 0);
                    out[start..start + fcgi::HEADER_LEN].copy_from_slice(&header);
                    self.start_stream(body, Some(meta.fcgi_id));
                    if !meta.keep_alive {
                        self.close_after_output = true;
                    }
                    return;
                }
                body.write(out);
                let content_len = out.len() - start - fcgi::HEADER_LEN;
                if content_len <= fcgi::MAX_CONTENT {
                    let mut header = Vec::with_capacity(fcgi::HEADER_LEN);
                    fcgi::push_header(&mut header, fcgi::STDOUT, meta.fcgi_id, content_len, 0);
                    out[start..start + fcgi::HEADER_LEN].copy_from_slice(&header);
                } else {
                    let content = out.split_off(start + fcgi::HEADER_LEN);
                    out.truncate(start);
                    fcgi::push_stream(out, fcgi::STDOUT, meta.fcgi_id, &content);
                }
                fcgi::push_header(out, fcgi::STDOUT, meta.fcgi_id, 0, 0);
                fcgi::push_end_request(out, meta.fcgi_id, 0, ProtocolStatus::RequestComplete);
            }
        }
        if !meta.keep_alive {
            self.close_after_output = true;
        }
    }

    /// The response's head is out; its body follows chunk by chunk.
    fn start_stream(&mut self, body: Body<'_>, fcgi_id: Option<u16>) {
        let left = body.len();
        // Room for the window and one more piece (a chunk, a file read and
        // its FastCGI record headers), once: the buffer never doubles.
        let most = WINDOW + FILE_CHUNK + 1024;
        self.out.reserve_exact(most.saturating_sub(self.out.len()));
        self.stream = Some(Stream {
            source: body.source(),
            pos: 0,
            left,
            fcgi_id,
        });
        self.fill();
    }
}

/// Whether a request in program mode goes to the program: all but the
/// server's own `/status` and `OPTIONS *`.
fn runs_program(target: &str) -> bool {
    target != "*" && routes::split_target(target).0 != "/status"
}

/// The header fields every response has, in HTTP and CGI alike.
fn head_fields(
    out: &mut Vec<u8>,
    ctype: &str,
    len: usize,
    extra: &[(&str, &str)],
    host: &dyn Host,
) {
    out.extend_from_slice(host.response_headers());
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    http::push_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
