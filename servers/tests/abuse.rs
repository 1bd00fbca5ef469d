//! The abuse suite (issue 11): every model of `util::models::SERVERS`, over
//! both protocols where a case applies, against what a hostile client does.
//!
//! Each case checks three things:
//! 1. the right answer to the attack (a status, a close, a time bound);
//! 2. a fresh client is still served afterwards (`/hello` within 5 s);
//! 3. the server does not spin: its CPU, summed over its whole process
//!    tree from `/proc/PID/stat`, stays near zero while it is idle after
//!    the attack.
//!
//! The classes: request smuggling shapes, oversized heads, an HTTP/2
//! preface and HTTP/0.9, absolute-form targets, `/file` traversal and NUL,
//! out-of-range parameters, `/echo` with a huge length and then silence,
//! half-close, the FastCGI record abuses, clients that never read (the
//! per-connection memory bound), writers stuck at the idle timeout,
//! descriptor exhaustion under a lowered `ulimit -n`, and slowloris.
//!
//! The models run in parallel, one thread per (model, protocol) and each
//! server on its own port; cases within one run one after the other
//! against one server started with `--header-timeout 1 --idle-timeout 2`
//! (descriptor exhaustion and slowloris start servers of their own). The
//! suite prints a table of what it measured (the blocking models'
//! slowloris denial is their lesson: measured and printed, not asserted).
//!
//! Environment:
//! - `IOMODELS_ONLY=epoll-server,poll-server`: those binaries only;
//! - `IOMODELS_ABUSE_CASES=smuggling,half_close`: those cases only;
//! - `IOMODELS_ABUSE_JOBS=N`: models at once (default 10);
//! - `IOMODELS_ABUSE_ALL=1`: also run the checks in [`AWAITING`].

mod util;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iomodels_workload::fcgi::{self, ProtocolStatus};
use iomodels_workload::{http, Protocol, WINDOW};
use util::models::{chosen, Model, SERVERS};
use util::Server;

/// Flags of the server every shared case runs against.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const SHARED_FLAGS: &[&str] = &["--header-timeout", "1", "--idle-timeout", "2"];

/// Models whose workers (threads or processes) each hold one connection
/// at a time while they read or write it: a slow or stuck client pins one.
const BLOCKING: &[&str] = &[
    "iterative-server",
    "fork-server",
    "prefork-server",
    "thread-server",
    "threadpool-server",
    "fpm-server",
];

/// Of those, the ones with a fixed number of workers (the rest start a
/// thread or a process per connection).
const FIXED_WORKERS: &[&str] = &[
    "iterative-server",
    "prefork-server",
    "threadpool-server",
    "fpm-server",
];

/// Checks that fail on main today and wait for work there: (check, models
/// — none listed: every model —, why). Each is skipped with a printed reason;
/// `IOMODELS_ABUSE_ALL=1` runs them. When the work lands, delete the line.
/// (The rest of issue 11 — 460ca6c, 5d1ea6b, 4befe9a — switched on the
/// memory bound, absolute-form, writers released at the idle timeout,
/// `/status` write timeouts, FastCGI's request time limit and sigio's
/// EMFILE recovery.)
const AWAITING: &[(&str, &[&str], &str)] = &[];

const PROTOCOLS: [Protocol; 2] = [Protocol::Http, Protocol::Fcgi];

/// A failed check: its reason.
type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        let ok: bool = $cond;
        if !ok {
            return Err(format!($($fmt)+));
        }
    };
}

/// One case: a name, the protocol it applies to (`None`: both), and the
/// attack with its right answer. It returns the server it attacked when
/// that was one of its own (the fresh-client and spin checks then apply
/// to that one).
struct Case {
    name: &'static str,
    protocol: Option<Protocol>,
    run: fn(&Ctx) -> Result<Option<Server>, String>,
}

const CASES: &[Case] = &[
    case("smuggling", Some(Protocol::Http), smuggling),
    case("oversized_head", None, oversized_head),
    case("h2_preface_and_http09", None, h2_preface_and_http09),
    case("absolute_form", Some(Protocol::Http), absolute_form),
    case("file_traversal_and_nul", None, file_traversal_and_nul),
    case("out_of_range_parameters", None, out_of_range_parameters),
    case("echo_huge_length_then_silence", None, echo_huge_length),
    case("half_close", None, half_close),
    case(
        "fcgi_truncated_records",
        Some(Protocol::Fcgi),
        fcgi_truncated,
    ),
    case("fcgi_2gb_lengths", Some(Protocol::Fcgi), fcgi_2gb_lengths),
    case(
        "fcgi_100k_tiny_params",
        Some(Protocol::Fcgi),
        fcgi_tiny_params,
    ),
    case("fcgi_abort", Some(Protocol::Fcgi), fcgi_abort),
    case(
        "fcgi_repeated_begin",
        Some(Protocol::Fcgi),
        fcgi_repeated_begin,
    ),
    case("fcgi_versions", Some(Protocol::Fcgi), fcgi_versions),
    case(
        "fcgi_unknown_types",
        Some(Protocol::Fcgi),
        fcgi_unknown_types,
    ),
    case(
        "fcgi_garbage_get_values",
        Some(Protocol::Fcgi),
        fcgi_get_values,
    ),
    case(
        "fcgi_concurrent_ids",
        Some(Protocol::Fcgi),
        fcgi_concurrent_ids,
    ),
    case("non_reading_memory", None, non_reading_memory),
    case("stuck_writers", None, stuck_writers),
    case("descriptor_exhaustion", None, descriptor_exhaustion),
    case("slowloris", None, slowloris),
];

const fn case(
    name: &'static str,
    protocol: Option<Protocol>,
    run: fn(&Ctx) -> Result<Option<Server>, String>,
) -> Case {
    Case {
        name,
        protocol,
        run,
    }
}

/// What a case sees: the shared server, its model, and where to put what
/// it measured.
struct Ctx<'a> {
    s: &'a Server,
    m: &'a Model,
    protocol: Protocol,
    /// Measurements for the table at the end: (what, value).
    notes: RefCell<Vec<(String, String)>>,
    /// Checks skipped because they wait for work on main.
    skipped: RefCell<Vec<String>>,
}

impl Ctx<'_> {
    fn bin(&self) -> &'static str {
        self.m.bin
    }

    fn blocking(&self) -> bool {
        BLOCKING.contains(&self.m.bin)
    }

    /// Whether `check` waits for the lead's work on this model (then it is
    /// skipped, and the skip recorded).
    fn awaiting(&self, check: &str) -> bool {
        if std::env::var_os("IOMODELS_ABUSE_ALL").is_some() {
            return false;
        }
        let hit = AWAITING
            .iter()
            .find(|(c, bins, _)| *c == check && (bins.is_empty() || bins.contains(&self.m.bin)));
        match hit {
            Some((_, _, why)) => {
                self.skipped
                    .borrow_mut()
                    .push(format!("{check}: awaiting {why}"));
                true
            }
            None => false,
        }
    }

    fn note(&self, what: &str, value: String) {
        self.notes.borrow_mut().push((what.to_string(), value));
    }

    /// A raw connection to the shared server.
    fn raw(&self) -> Raw {
        Raw::connect(&self.s.addr)
    }
}

// ---------------------------------------------------------------------------
// Raw connections and answers

/// A connection that sends anything and reads what comes back.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// A client that will not read: a small fixed receive buffer, so the
    /// kernel does not soak up megabytes of the response on its behalf
    /// (loopback autotunes it up to tcp_rmem's 32 MB here).
    fn non_reader(addr: &str) -> Raw {
        let c = Raw::connect(addr);
        let _ = nix::sys::socket::setsockopt(&c.stream, nix::sys::socket::sockopt::RcvBuf, &16384);
        c
    }

    /// Sends `bytes`; the server may close before it has read them all.
    fn send(&mut self, bytes: &[u8]) -> &mut Raw {
        let _ = self.stream.write_all(bytes);
        self
    }

    fn shutdown_write(&mut self) -> &mut Raw {
        let _ = self.stream.shutdown(Shutdown::Write);
        self
    }

    /// Reads until EOF (or `limit`): the bytes, and when EOF came (`None`:
    /// the connection was still open at the limit).
    fn read_to_eof(&mut self, limit: Duration) -> (Vec<u8>, Option<Duration>) {
        let start = Instant::now();
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return (all, None);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return (all, Some(start.elapsed())),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (all, Some(start.elapsed()))
                }
                Err(_) => return (all, None),
            }
        }
    }

    /// Reads until `want` says the bytes are enough (or EOF, or `limit`).
    fn read_until(&mut self, limit: Duration, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let start = Instant::now();
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 65536];
        while !want(&all) {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
        all
    }
}

/// One answer: HTTP status and body (and `Connection: close`), or a
/// FastCGI request's id, status, body and END_REQUEST protocol status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    id: u16,
    status: u16,
    body: Vec<u8>,
    close: bool,
    end: Option<ProtocolStatus>,
}

/// The whole HTTP responses in `bytes`, in order.
fn http_answers(mut bytes: &[u8]) -> Result<Vec<Answer>, String> {
    let mut v = Vec::new();
    loop {
        match http::parse_response(bytes, false) {
            Ok(Some(r)) => {
                v.push(Answer {
                    id: 0,
                    status: r.status,
                    body: r.body.to_vec(),
                    close: r.close,
                    end: None,
                });
                bytes = &bytes[r.len..];
            }
            Ok(None) if bytes.is_empty() => return Ok(v),
            Ok(None) => return Err(format!("{} bytes of a cut response", bytes.len())),
            Err(e) => return Err(format!("unreadable response: {e}")),
        }
    }
}

/// The whole FastCGI responses in `bytes`, in order (management records
/// are left out; see [`records`]).
fn fcgi_answers(mut bytes: &[u8]) -> Result<Vec<Answer>, String> {
    let mut v = Vec::new();
    let mut reader = fcgi::ResponseReader::new();
    loop {
        match reader.read(bytes) {
            Ok(Some(r)) => {
                v.push(Answer {
                    id: r.id,
                    status: r.status,
                    body: reader.body().to_vec(),
                    close: false,
                    end: Some(r.protocol_status),
                });
                bytes = &bytes[r.len..];
            }
            Ok(None) => return Ok(v),
            Err(e) => return Err(format!("unreadable response: {e}")),
        }
    }
}

/// The whole records in `bytes`: (type, id, content).
fn records(mut bytes: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    let mut v = Vec::new();
    while let Ok(Some(r)) = fcgi::parse_record(bytes) {
        v.push((r.header.kind, r.header.id, r.content.to_vec()));
        bytes = &bytes[r.len..];
    }
    v
}

fn answers(protocol: Protocol, bytes: &[u8]) -> Result<Vec<Answer>, String> {
    match protocol {
        Protocol::Http => http_answers(bytes),
        Protocol::Fcgi => fcgi_answers(bytes),
    }
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    format!("{s:?}")
}

/// Sends `input` on a new connection and expects exactly one answer with
/// `status`, saying `Connection: close`, and the connection closed.
fn refused(ctx: &Ctx, what: &str, input: &[u8], status: u16) -> Check {
    let mut c = ctx.raw();
    let (out, eof) = c.send(input).read_to_eof(Duration::from_secs(4));
    let got = http_answers(&out).map_err(|e| format!("{what}: {e}"))?;
    let statuses: Vec<u16> = got.iter().map(|a| a.status).collect();
    ensure!(
        statuses == [status],
        "{what}: expected one {status}, got {statuses:?}"
    );
    ensure!(got[0].close, "{what}: {status} without Connection: close");
    ensure!(eof.is_some(), "{what}: connection left open after {status}");
    Ok(())
}

/// Sends `input` on a new connection, then half-closes, and expects these
/// answers (status, body) and the connection closed.
fn answered(ctx: &Ctx, what: &str, input: &[u8], expect: &[(u16, &[u8])]) -> Check {
    let mut c = ctx.raw();
    let (out, eof) = c
        .send(input)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let got = answers(ctx.protocol, &out).map_err(|e| format!("{what}: {e}"))?;
    let got: Vec<(u16, &[u8])> = got.iter().map(|a| (a.status, &a.body[..])).collect();
    ensure!(
        got == expect,
        "{what}: expected {:?}, got {:?}",
        expect.iter().map(|(s, b)| (s, show(b))).collect::<Vec<_>>(),
        got.iter().map(|(s, b)| (s, show(b))).collect::<Vec<_>>()
    );
    ensure!(eof.is_some(), "{what}: not closed after a half-close");
    Ok(())
}

/// Sends each input on a connection of its own (all at once, so their
/// timeouts run together) and expects no answer at all and each
/// connection closed within `limit` (a FastCGI protocol violation).
fn closed_silently(ctx: &Ctx, inputs: &[(&str, &[u8])], limit: Duration) -> Check {
    // One connection at a time (iterative-server): each waits its turn.
    let limit = if ctx.m.concurrent {
        limit
    } else {
        limit * inputs.len() as u32
    };
    let mut conns: Vec<Raw> = inputs
        .iter()
        .map(|(_, input)| {
            let mut c = ctx.raw();
            c.send(input);
            c
        })
        .collect();
    let start = Instant::now();
    for ((what, _), c) in inputs.iter().zip(&mut conns) {
        let (out, eof) = c.read_to_eof(limit.saturating_sub(start.elapsed()));
        let recs = records(&out);
        ensure!(
            !recs
                .iter()
                .any(|r| r.0 == fcgi::STDOUT || r.0 == fcgi::END_REQUEST),
            "{what}: answered {:?}",
            recs.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        ensure!(eof.is_some(), "{what}: not closed within {limit:?}");
    }
    Ok(())
}

/// A request in the case's protocol (FastCGI: id 1, keep-conn).
fn request_bytes(protocol: Protocol, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    match protocol {
        Protocol::Http => {
            http::encode_request(&mut wire, method, target, "localhost", &[], body);
        }
        Protocol::Fcgi => fcgi::encode_request(&mut wire, 1, true, method, target, &[], body),
    }
    wire
}

/// One request on a fresh client, verified against the workload.
fn verified(ctx: &Ctx, target: &str) -> Check {
    catch(|| {
        ctx.s.connect().request("GET", target, b"");
    })
    .map_err(|e| format!("{target}: {e}"))
}

/// Runs `f`, turning a panic (the util client's failed checks) into an error.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

// ---------------------------------------------------------------------------
// The process tree, from /proc

/// The server's process and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let path = t.path().join("children");
                if let Ok(kids) = std::fs::read_to_string(path) {
                    all.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// CPU time of the tree in clock ticks (USER_HZ, 100 a second on Linux):
/// utime + stime of each process (all its threads, exited ones included)
/// and cutime + cstime (its reaped children).
fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            // Fields after the command name, which may hold spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // state is f[0]; utime, stime, cutime, cstime are fields 14-17.
            f.get(11..15).map_or(0, |t| t.iter().sum())
        })
        .sum()
}

const TICKS_PER_SECOND: f64 = 100.0;

/// The tree's CPU as a percentage of one core over `window`.
fn cpu_percent(pid: u32, window: Duration) -> f64 {
    let (a, t) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(window);
    let used = cpu_ticks(pid).saturating_sub(a) as f64 / TICKS_PER_SECOND;
    100.0 * used / t.elapsed().as_secs_f64()
}

/// CPU while idle that counts as a spin: 10 % of a core, measured over
/// 300 ms windows (3 ticks of 10 ms).
const SPIN_PERCENT: f64 = 10.0;

/// The no-spin check: within 2 s of the attack's end the server's CPU
/// falls under [`SPIN_PERCENT`] for a whole window (a server finishing
/// real work settles; a spinning one never does).
fn no_spin(s: &Server) -> Result<f64, String> {
    let mut seen = Vec::new();
    for _ in 0..6 {
        let pct = cpu_percent(s.child.id(), Duration::from_millis(300));
        if pct < SPIN_PERCENT {
            return Ok(pct);
        }
        seen.push(format!("{pct:.0}%"));
    }
    Err(format!(
        "spins while idle: CPU {} of a core",
        seen.join(", ")
    ))
}

/// Proportional set size of the tree (shared pages split between the
/// processes that map them), in bytes.
fn pss(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        })
        .sum()
}

/// The sockets the tree holds open, by inode (a listener shared by
/// forked workers counts once). Cheap to poll, unlike /proc/net/tcp.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for p in tree(pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            // An io_uring's fixed file table (uring-server's direct descriptors) holds
            // sockets no descriptor names: its fdinfo lists them.
            let fdinfo = match &*link {
                "anon_inode:[io_uring]" => {
                    let info = format!("/proc/{p}/fdinfo/{}", fd.file_name().to_string_lossy());
                    std::fs::read_to_string(info).unwrap_or_default()
                }
                _ => String::new(),
            };
            let names = fdinfo
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(_, n)| n));
            for name in names.chain([&*link]) {
                if let Some(inode) = name
                    .trim()
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|i| i.parse().ok())
                {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

// ---------------------------------------------------------------------------
// The runner

/// What one case on one (model, protocol) came to.
struct Outcome {
    combo: String,
    case: &'static str,
    result: Result<(), String>,
    elapsed: Duration,
    idle_cpu: Option<f64>,
    notes: Vec<(String, String)>,
    skipped: Vec<String>,
}

/// A fresh client is served within 5 s (a refusal because the server has
/// not yet seen the attack's connections close is retried).
fn fresh_client(s: &Server) -> Check {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        let mut c = Raw::connect(&s.addr);
        let (out, _) = c
            .send(&request_bytes(s.protocol, "GET", "/hello", b""))
            .shutdown_write()
            .read_to_eof(Duration::from_secs(5).saturating_sub(start.elapsed()));
        match answers(s.protocol, &out) {
            Ok(a) if a.first().is_some_and(|a| a.body == b"Hello, World!") => return Ok(()),
            Ok(a) => last = format!("{:?}", a.iter().map(|a| a.status).collect::<Vec<_>>()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "a fresh client was not served within 5 s (last answer: {last})"
    ))
}

fn run_combo(m: &Model, protocol: Protocol, cases: &[&Case]) -> Vec<Outcome> {
    let combo = format!("{} {} {}", m.bin, m.flags.join(" "), protocol.name()).replace("  ", " ");
    let args: Vec<&str> = m.flags.iter().chain(SHARED_FLAGS).copied().collect();
    let Some(mut server) = Server::start_or_skip(m.bin, protocol, &args) else {
        return Vec::new();
    };
    server.one_request_per_connection = !m.keep_alive;
    let mut out = Vec::new();
    for case in cases {
        if case.protocol.is_some_and(|p| p != protocol) {
            continue;
        }
        let ctx = Ctx {
            s: &server,
            m,
            protocol,
            notes: RefCell::new(Vec::new()),
            skipped: RefCell::new(Vec::new()),
        };
        let start = Instant::now();
        let mut idle_cpu = None;
        let result = catch(|| (case.run)(&ctx)).and_then(|r| r).and_then(|own| {
            let target = own.as_ref().unwrap_or(&server);
            fresh_client(target)?;
            idle_cpu = Some(no_spin(target)?);
            Ok(())
        });
        if let Err(e) = &result {
            eprintln!("FAIL {combo}: {}: {e}", case.name);
        }
        out.push(Outcome {
            combo: combo.clone(),
            case: case.name,
            result,
            elapsed: start.elapsed(),
            idle_cpu,
            notes: ctx.notes.take(),
            skipped: ctx.skipped.take(),
        });
    }
    out
}

/// Every chosen model × protocol through every chosen case, `jobs` at a
/// time; then the table of measurements, the skipped checks, and the
/// failures.
#[test]
fn abuse_suite() {
    let only_cases = std::env::var("IOMODELS_ABUSE_CASES").ok();
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            only_cases
                .as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == c.name))
        })
        .collect();
    let jobs: usize = std::env::var("IOMODELS_ABUSE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(10);
    let mut combos: Vec<(&Model, Protocol)> = SERVERS
        .iter()
        .filter(|m| chosen(m.bin))
        .flat_map(|m| PROTOCOLS.map(|p| (m, p)))
        .collect();
    // Popped from the end: the slow blocking models first.
    combos.sort_by_key(|(m, _)| BLOCKING.contains(&m.bin));
    let queue = Mutex::new(combos);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some((m, p)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let done = run_combo(m, p, &cases);
                results.lock().unwrap().extend(done);
            });
        }
    });
    let results = results.into_inner().unwrap();
    report(&results, start.elapsed());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {}: {e}", o.combo, o.case))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

/// Prints the measurements (one line per model and case that noted any),
/// the skipped checks, and the time taken.
fn report(results: &[Outcome], took: Duration) {
    eprintln!("\n== abuse suite: measurements ==");
    for o in results.iter().filter(|o| !o.notes.is_empty()) {
        let notes: Vec<String> = o.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("{:45} {:24} {}", o.combo, o.case, notes.join("; "));
    }
    let mut skipped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in results {
        for s in &o.skipped {
            skipped.entry(s).or_default().push(&o.combo);
        }
    }
    if !skipped.is_empty() {
        eprintln!(
            "\n== checks skipped: they fail on main today (AWAITING; IOMODELS_ABUSE_ALL=1 runs them) =="
        );
        for (check, combos) in &skipped {
            eprintln!("{check} ({} runs)", combos.len());
        }
    }
    let mut per_case: BTreeMap<&str, (Duration, usize, f64)> = BTreeMap::new();
    for o in results {
        let e = per_case.entry(o.case).or_default();
        e.0 += o.elapsed;
        e.1 += 1;
        e.2 = e.2.max(o.idle_cpu.unwrap_or(0.0));
    }
    eprintln!("\n== cases: runs, time summed over runs, highest idle CPU after the attack ==");
    for (case, (t, n, cpu)) in &per_case {
        eprintln!(
            "{case:32} {n:3} runs {:7.1} s  idle CPU max {cpu:.1}%",
            t.as_secs_f64()
        );
    }
    let failed = results.iter().filter(|o| o.result.is_err()).count();
    eprintln!(
        "\nabuse suite: {} case runs, {failed} failed, in {:.1} s",
        results.len(),
        took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// The cases

/// Request smuggling shapes: a message whose end two parsers could see in
/// different places is refused and its connection closed, so no smuggled
/// second request is ever answered.
fn smuggling(ctx: &Ctx) -> Result<Option<Server>, String> {
    let smuggled = b"GET /bytes?n=7 HTTP/1.1\r\nHost: x\r\n\r\n";
    let with_tail = |head: &[u8]| [head, smuggled].concat();
    for (what, input, status) in [
        (
            "CL+TE",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            501,
        ),
        (
            "TE+CL",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            501,
        ),
        (
            "TE identity",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"),
            501,
        ),
        (
            "two CLs",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            400,
        ),
        (
            "CL list",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            400,
        ),
        (
            "CL +5",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
            400,
        ),
        (
            "CL -1",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            400,
        ),
        (
            "CL 0x5",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello"),
            400,
        ),
        (
            "space before colon",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
            400,
        ),
        (
            "obs-fold",
            with_tail(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
            400,
        ),
        (
            "obs-fold CL",
            with_tail(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n 0\r\n\r\n0123456789"),
            400,
        ),
        (
            "NUL in a value",
            with_tail(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            400,
        ),
        (
            "NUL in a name",
            with_tail(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-\0A: a\r\n\r\n"),
            400,
        ),
        (
            "CR in a value",
            with_tail(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\n\r\nhello"),
            400,
        ),
        (
            "bare CR line ends",
            with_tail(b"GET /hello HTTP/1.1\rHost: x\r\r"),
            400,
        ),
    ] {
        refused(ctx, what, &input, status)?;
    }
    // Bare LF ends a line (RFC 9112 §2.2 lets a recipient accept it, as
    // httparse and nginx do): the same framing everywhere, so the request
    // is answered and the next one on the connection too.
    let hello: &[u8] = b"Hello, World!";
    let both = [(200, hello), (200, &b"abcdefg"[..])];
    let n = if ctx.m.keep_alive { 2 } else { 1 };
    answered(
        ctx,
        "bare LF",
        b"GET /hello HTTP/1.1\nHost: x\n\nGET /bytes?n=7 HTTP/1.1\nHost: x\n\n",
        &both[..n],
    )?;
    // A bare LF inside the head: the Content-Length after it counts.
    let both = [(200, &b"hello"[..]), (200, hello)];
    answered(
        ctx,
        "bare LF before CL",
        b"POST /echo HTTP/1.1\r\nX-A: a\nContent-Length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\n\r\n",
        &both[..n],
    )?;
    Ok(None)
}

/// Oversized request lines, heads and header counts: 431 and close, at
/// once, without reading the rest. Just under the limits is served.
fn oversized_head(ctx: &Ctx) -> Result<Option<Server>, String> {
    if ctx.protocol == Protocol::Fcgi {
        // FastCGI's head is PARAMS: a 70 KB REQUEST_URI is over the cap.
        let target = format!("/hello?{}", "a".repeat(70_000));
        let mut c = ctx.raw();
        let (out, eof) = c
            .send(&request_bytes(Protocol::Fcgi, "GET", &target, b""))
            .read_to_eof(Duration::from_secs(4));
        let got = fcgi_answers(&out)?;
        ensure!(
            got.len() == 1 && got[0].status == 431,
            "70 KB REQUEST_URI: {:?}",
            got.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        ensure!(eof.is_some(), "70 KB REQUEST_URI: not closed");
        return Ok(None);
    }
    let long_target = format!(
        "GET /hello?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(9000)
    );
    refused(ctx, "9 KB request line", long_target.as_bytes(), 431)?;
    // 100 KB and no line end: answered after 8 KiB, never buffered whole.
    let mut endless = b"GET /".to_vec();
    endless.resize(100_000, b'a');
    refused(ctx, "100 KB without a line end", &endless, 431)?;
    let fields = |n: usize| {
        let mut head = b"GET /hello HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..n {
            head.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    refused(ctx, "65 fields", &fields(64), 431)?;
    refused(ctx, "2000 fields", &fields(2000), 431)?;
    // 64 fields (the limit) and a head just under 8 KiB are served.
    let at_limit = [fields(63), b"GET /hello HTTP/1.1\r\n\r\n".to_vec()].concat();
    let keep = ctx.m.keep_alive;
    let expect: &[(u16, &[u8])] = if keep {
        &[(200, b"Hello, World!"), (200, b"Hello, World!")]
    } else {
        &[(200, b"Hello, World!")]
    };
    answered(ctx, "64 fields", &at_limit, expect)?;
    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(8000)
    );
    answered(ctx, "8 KB head", big.as_bytes(), &[(200, b"Hello, World!")])?;
    Ok(None)
}

/// An HTTP/2 connection preface and an HTTP/0.9 request are not HTTP/1.x:
/// 400 and close (never a 0.9-style bare body). Over FastCGI, HTTP bytes
/// are a wrong version byte: closed without an answer.
fn h2_preface_and_http09(ctx: &Ctx) -> Result<Option<Server>, String> {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // The preface and an empty SETTINGS frame, as an h2 client sends them.
    let with_settings = [&preface[..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat();
    let limit = Duration::from_secs(3);
    match ctx.protocol {
        Protocol::Http => {
            refused(ctx, "h2 preface", preface, 400)?;
            refused(ctx, "h2 preface + SETTINGS", &with_settings, 400)?;
            refused(ctx, "HTTP/0.9", b"GET /hello\r\n", 400)?;
            refused(ctx, "HTTP/0.9 + blank line", b"GET /hello\r\n\r\n", 400)?;
            refused(ctx, "HTTP/2.0 line", b"GET /hello HTTP/2.0\r\n\r\n", 400)?;
            // An h2c upgrade offer is ignored: answered in HTTP/1.1.
            answered(
                ctx,
                "Upgrade: h2c",
                b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
                &[(200, b"Hello, World!")],
            )?;
        }
        Protocol::Fcgi => {
            closed_silently(
                ctx,
                &[
                    ("h2 preface", &with_settings),
                    ("HTTP/0.9", b"GET /hello\r\n"),
                    ("HTTP/1.1", b"GET /hello HTTP/1.1\r\n\r\n"),
                ],
                limit,
            )?;
        }
    }
    Ok(None)
}

/// Absolute-form targets (RFC 9112 §3.2.2: a server MUST accept them) are
/// served as their path; asterisk-form is for OPTIONS only.
fn absolute_form(ctx: &Ctx) -> Result<Option<Server>, String> {
    answered(
        ctx,
        "absolute-form /hello",
        b"GET http://localhost/hello HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[(200, b"Hello, World!")],
    )?;
    answered(
        ctx,
        "absolute-form with port and query",
        b"GET http://example.com:8080/bytes?n=30 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        &[(200, b"abcdefghijklmnopqrstuvwxyzabcd")],
    )?;
    refused(ctx, "GET *", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400)?;
    let mut c = ctx.raw();
    let (out, _) = c
        .send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        .shutdown_write()
        .read_to_eof(Duration::from_secs(3));
    let got = http_answers(&out)?;
    ensure!(
        got.len() == 1 && (200..300).contains(&got[0].status),
        "OPTIONS *: {:?}",
        got.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    Ok(None)
}

/// `/file` names that try to leave the data dir, or carry a NUL: 400 with
/// the reason, never a file's content.
fn file_traversal_and_nul(ctx: &Ctx) -> Result<Option<Server>, String> {
    let long = format!("/file?name={}", "a".repeat(300));
    for target in [
        "/file?name=../Cargo.toml",
        "/file?name=../../../../etc/passwd",
        "/file?name=..%2f..%2fetc%2fpasswd",
        "/file?name=%2e%2e",
        "/file?name=/etc/passwd",
        "/file?name=4k/../4k",
        "/file?name=.",
        "/file?name=..",
        "/file?name=",
        "/file?name=4k%00",
        "/file?name=4k%00.txt",
        "/file?name=4k\\..\\x",
        long.as_str(),
    ] {
        verified(ctx, target)?;
    }
    match ctx.protocol {
        // A raw NUL in the request line is not HTTP.
        Protocol::Http => refused(
            ctx,
            "raw NUL",
            b"GET /file?name=4k\0.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        )?,
        Protocol::Fcgi => {
            // A raw NUL inside REQUEST_URI, and traversal through
            // SCRIPT_NAME + QUERY_STRING (no REQUEST_URI).
            verified(ctx, "/file?name=4k\0")?;
            let mut params = Vec::new();
            fcgi::push_name_value(&mut params, b"REQUEST_METHOD", b"GET");
            fcgi::push_name_value(&mut params, b"SCRIPT_NAME", b"/file");
            fcgi::push_name_value(&mut params, b"QUERY_STRING", b"name=../../etc/passwd");
            let mut wire = Vec::new();
            fcgi::push_begin_request(&mut wire, 1, false);
            fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
            fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
            fcgi::push_header(&mut wire, fcgi::STDIN, 1, 0, 0);
            let mut c = ctx.raw();
            let (out, _) = c.send(&wire).read_to_eof(Duration::from_secs(4));
            let got = fcgi_answers(&out)?;
            ensure!(
                got.len() == 1 && got[0].status == 400,
                "SCRIPT_NAME=/file QUERY_STRING=name=../..: {:?}",
                got.iter().map(|a| a.status).collect::<Vec<_>>()
            );
        }
    }
    // And a real file is still served whole.
    verified(ctx, "/file?name=64k")?;
    Ok(None)
}

/// Parameters out of range, overflowing, signed, hex or missing: 400 with
/// the reason (the workload's verify knows each).
fn out_of_range_parameters(ctx: &Ctx) -> Result<Option<Server>, String> {
    for target in [
        "/cpu?n=1000000001",
        "/cpu?n=18446744073709551615",
        "/cpu?n=18446744073709551616",
        "/cpu?n=999999999999999999999999999999",
        "/cpu?n=-1",
        "/cpu?n=1e9",
        "/cpu?n=%31",
        "/cpu?n= 5",
        "/cpu?n=",
        "/cpu",
        "/cpu?n=5&n=1000000001",
        "/wait?us=10000001",
        "/wait?us=-5",
        "/wait?us=0",
        "/bytes?n=67108865",
        "/bytes?n=4294967296",
        "/bytes?n=0x10",
        "/bytes?n=0",
        "/bytes?x=1",
    ] {
        verified(ctx, target)?;
    }
    Ok(None)
}

/// `/echo` announcing a huge body: over the 1 MiB cap, 413 at once; at
/// the cap with a few bytes and then silence, the request's time runs out
/// at `--header-timeout` (HTTP 408; FastCGI: closed).
fn echo_huge_length(ctx: &Ctx) -> Result<Option<Server>, String> {
    let slack = Duration::from_millis(1500);
    match ctx.protocol {
        Protocol::Http => {
            refused(
                ctx,
                "CL 10^20",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                413,
            )?;
            refused(
                ctx,
                "CL 1 MiB + 1",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\nabc",
                413,
            )?;
            let mut c = ctx.raw();
            let (out, eof) = c
                .send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nabc")
                .read_to_eof(HEADER_TIMEOUT + slack + Duration::from_secs(1));
            let got = http_answers(&out)?;
            ensure!(
                got.len() == 1 && got[0].status == 408,
                "CL 1 MiB then silence: {:?}",
                got.iter().map(|a| a.status).collect::<Vec<_>>()
            );
            let took = eof.ok_or("CL 1 MiB then silence: not closed")?;
            ensure!(
                took >= HEADER_TIMEOUT - Duration::from_millis(300)
                    && took <= HEADER_TIMEOUT + slack,
                "CL 1 MiB then silence: closed after {took:?} (header timeout {HEADER_TIMEOUT:?})"
            );
            ctx.note("silent body closed after", format!("{took:.1?}"));
        }
        Protocol::Fcgi => {
            let mut params = Vec::new();
            fcgi::push_name_value(&mut params, b"REQUEST_METHOD", b"POST");
            fcgi::push_name_value(&mut params, b"REQUEST_URI", b"/echo");
            fcgi::push_name_value(&mut params, b"CONTENT_LENGTH", b"99999999999999999999");
            let mut wire = Vec::new();
            fcgi::push_begin_request(&mut wire, 1, true);
            fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
            fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
            fcgi::push_stream(&mut wire, fcgi::STDIN, 1, b"abc");
            let mut c = ctx.raw();
            let (out, eof) = c
                .send(&wire)
                .read_to_eof(HEADER_TIMEOUT + slack + Duration::from_secs(1));
            ensure!(
                fcgi_answers(&out)?.is_empty(),
                "CONTENT_LENGTH 10^20 then silence: answered"
            );
            let took = eof.ok_or("CONTENT_LENGTH 10^20 then silence: not closed")?;
            // Whole records and then silence: the request's time limit
            // (from BEGIN_REQUEST) ends it, not the idle timeout.
            ensure!(
                took >= HEADER_TIMEOUT - Duration::from_millis(300)
                    && took <= HEADER_TIMEOUT + slack,
                "CONTENT_LENGTH 10^20 then silence: closed after {took:?}"
            );
            ctx.note("silent body closed after", format!("{took:.1?}"));
        }
    }
    Ok(None)
}

/// The client shuts its writing side: whole requests before it are all
/// answered (a parked `/wait` too), then the server closes; half a request
/// is dropped without an answer.
fn half_close(ctx: &Ctx) -> Result<Option<Server>, String> {
    let p = ctx.protocol;
    let hello: &[u8] = b"Hello, World!";
    answered(
        ctx,
        "/hello",
        &request_bytes(p, "GET", "/hello", b""),
        &[(200, hello)],
    )?;
    answered(
        ctx,
        "/wait",
        &request_bytes(p, "GET", "/wait?us=300000", b""),
        &[(200, b"waited 300000 us")],
    )?;
    let mut pattern = Vec::new();
    iomodels_workload::routes::extend_pattern(&mut pattern, 1_000_000);
    answered(
        ctx,
        "/bytes 1 MB",
        &request_bytes(p, "GET", "/bytes?n=1000000", b""),
        &[(200, &pattern)],
    )?;
    answered(
        ctx,
        "/echo",
        &request_bytes(p, "POST", "/echo", b"half-closed body"),
        &[(200, b"half-closed body")],
    )?;
    let three = [
        request_bytes(p, "GET", "/hello", b""),
        request_bytes(p, "GET", "/bytes?n=5", b""),
        request_bytes(p, "GET", "/cpu?n=0", b""),
    ]
    .concat();
    let expect: &[(u16, &[u8])] = if ctx.m.keep_alive {
        &[(200, hello), (200, b"abcde"), (200, b"9e3779b97f4a7c15")]
    } else {
        &[(200, hello)]
    };
    answered(ctx, "three pipelined", &three, expect)?;
    // Half a request, then the half-close: closed, nothing answered.
    let whole = request_bytes(p, "GET", "/hello", b"");
    for cut in [5, whole.len() - 3] {
        let mut c = ctx.raw();
        let (out, eof) = c
            .send(&whole[..cut])
            .shutdown_write()
            .read_to_eof(Duration::from_secs(2));
        let got = answers(p, &out)?;
        ensure!(
            got.iter().all(|a| a.status != 200),
            "half a request ({cut} bytes) answered 200"
        );
        ensure!(
            eof.is_some(),
            "half a request ({cut} bytes): not closed within 2 s"
        );
    }
    Ok(None)
}

/// Records cut short: the server waits at most `--header-timeout`, then
/// closes without an answer; cut short and half-closed, it closes at once.
/// Whole records dripped slowly are a request that takes too long, too.
fn fcgi_truncated(ctx: &Ctx) -> Result<Option<Server>, String> {
    let limit = HEADER_TIMEOUT + Duration::from_millis(1500);
    let mut begin = Vec::new();
    fcgi::push_begin_request(&mut begin, 1, true);
    let mut params = begin.clone();
    fcgi::push_header(&mut params, fcgi::PARAMS, 1, 1000, 0);
    params.extend_from_slice(&[b'x'; 10]);
    // Padding announced and not sent.
    let mut padded = begin.clone();
    fcgi::push_header(&mut padded, fcgi::PARAMS, 1, 0, 255);
    closed_silently(
        ctx,
        &[
            ("5 bytes of a header", &begin[..5]),
            ("BEGIN_REQUEST cut in its body", &begin[..12]),
            ("PARAMS with 10 of 1000 bytes", &params),
            ("padding not sent", &padded),
        ],
        limit,
    )?;
    // Cut, then half-closed: no need to wait for the timeout.
    let mut c = ctx.raw();
    let (out, eof) = c
        .send(&params)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(3));
    ensure!(records(&out).is_empty(), "cut and half-closed: answered");
    let took = eof.ok_or("cut and half-closed: not closed")?;
    ensure!(
        took < HEADER_TIMEOUT,
        "cut and half-closed: closed only after {took:?}"
    );
    // Whole records, one byte of PARAMS every 300 ms (from the thread
    // below): the request as a whole is not received in time.
    let drip_start = Instant::now();
    let mut drip = ctx.raw();
    drip.send(&begin);
    let mut dripper = drip.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dripping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && drip_start.elapsed() < Duration::from_secs(4) {
                let mut rec = Vec::new();
                fcgi::push_stream(&mut rec, fcgi::PARAMS, 1, b"\x01");
                if dripper.write_all(&rec).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let (_, eof) = drip.read_to_eof(limit.saturating_sub(drip_start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let _ = dripping.join();
    let closed = eof.map(|_| drip_start.elapsed());
    ctx.note(
        "records dripped closed after",
        closed.map_or(format!("not within {limit:.1?}"), |t| format!("{t:.1?}")),
    );
    ensure!(
        closed.is_some_and(|t| t <= limit),
        "a request dripped in whole records was not closed within {limit:?} (closed: {closed:?})"
    );
    Ok(None)
}

/// PARAMS name and value lengths of 2 GB (the 4-byte form's largest): the
/// lengths are checked against what is there, never allocated: 400 and
/// close.
fn fcgi_2gb_lengths(ctx: &Ctx) -> Result<Option<Server>, String> {
    for (what, pair) in [
        ("2 GB name", &[0xff, 0xff, 0xff, 0xff, 0x00][..]),
        ("2 GB value", &[0x01, 0xff, 0xff, 0xff, 0xff, b'A'][..]),
        ("2 GB name and value", &[0xff; 8][..]),
        ("cut 4-byte length", &[0x80, 0x00][..]),
    ] {
        let mut wire = Vec::new();
        fcgi::push_begin_request(&mut wire, 1, true);
        let mut params = Vec::new();
        fcgi::push_name_value(&mut params, b"REQUEST_URI", b"/hello");
        params.extend_from_slice(pair);
        fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
        fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
        fcgi::push_header(&mut wire, fcgi::STDIN, 1, 0, 0);
        let mut c = ctx.raw();
        let (out, eof) = c.send(&wire).read_to_eof(Duration::from_secs(4));
        let got = fcgi_answers(&out)?;
        ensure!(
            got.len() == 1 && got[0].status == 400,
            "{what}: {:?}",
            got.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        ensure!(eof.is_some(), "{what}: not closed");
    }
    Ok(None)
}

/// 100,000 PARAMS records of one byte each: past the 64 KiB cap, 431 at
/// once; 60,000 of them making a valid request: served, in linear time.
fn fcgi_tiny_params(ctx: &Ctx) -> Result<Option<Server>, String> {
    let tiny = |params: &[u8]| {
        let mut wire = Vec::with_capacity(params.len() * 9 + 64);
        fcgi::push_begin_request(&mut wire, 1, true);
        for b in params {
            fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 1, 0);
            wire.push(*b);
        }
        fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
        fcgi::push_header(&mut wire, fcgi::STDIN, 1, 0, 0);
        wire
    };
    let start = Instant::now();
    let mut c = ctx.raw();
    let (out, eof) = c
        .send(&tiny(&vec![b'x'; 100_000]))
        .read_to_eof(Duration::from_secs(5));
    let got = fcgi_answers(&out)?;
    ensure!(
        got.len() == 1 && got[0].status == 431,
        "100k tiny records: {:?}",
        got.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    ensure!(eof.is_some(), "100k tiny records: not closed");
    ctx.note(
        "100k records refused in",
        format!("{:.0?}", start.elapsed()),
    );
    let mut params = Vec::new();
    fcgi::push_name_value(&mut params, b"REQUEST_URI", b"/hello");
    fcgi::push_name_value(&mut params, b"HTTP_X_FILL", &vec![b'f'; 59_900]);
    let start = Instant::now();
    let mut c = ctx.raw();
    let out = c
        .send(&tiny(&params))
        .read_until(Duration::from_secs(5), |b| {
            fcgi_answers(b).is_ok_and(|a| !a.is_empty())
        });
    let got = fcgi_answers(&out)?;
    ensure!(
        got.len() == 1 && got[0].body == b"Hello, World!",
        "60k tiny records: {:?}",
        got.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let took = start.elapsed();
    ensure!(
        took < Duration::from_secs(3),
        "60k tiny records took {took:?}"
    );
    ctx.note("60k records served in", format!("{took:.0?}"));
    Ok(None)
}

/// ABORT_REQUEST mid-request ends it (END_REQUEST, no STDOUT) and the
/// connection goes on (or closes without FCGI_KEEP_CONN); an ABORT after
/// the request is complete, or for an id never begun, changes nothing.
fn fcgi_abort(ctx: &Ctx) -> Result<Option<Server>, String> {
    let abort = |wire: &mut Vec<u8>, id| fcgi::push_header(wire, fcgi::ABORT_REQUEST, id, 0, 0);
    let mut full = Vec::new();
    fcgi::encode_request(&mut full, 1, true, "GET", "/hello", &[], b"");
    // BEGIN, part of PARAMS, ABORT; then request 2 on the same connection.
    let mut wire = Vec::new();
    fcgi::push_begin_request(&mut wire, 1, true);
    fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, b"\x0b\x06REQUEST_URI");
    abort(&mut wire, 1);
    let mut second = Vec::new();
    fcgi::encode_request(&mut second, 2, true, "GET", "/bytes?n=3", &[], b"");
    if ctx.m.keep_alive {
        wire.extend_from_slice(&second);
    }
    let mut c = ctx.raw();
    let (out, _) = c
        .send(&wire)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let recs = records(&out);
    let first: Vec<&(u8, u16, Vec<u8>)> = recs.iter().filter(|r| r.1 == 1).collect();
    ensure!(
        first.len() == 1
            && first[0].0 == fcgi::END_REQUEST
            && first[0].2[4] == ProtocolStatus::RequestComplete as u8,
        "ABORT mid-request: records for id 1 {:?}",
        first.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    if ctx.m.keep_alive {
        let got = fcgi_answers(&out)?;
        ensure!(
            got.iter().any(|a| a.id == 2 && a.body == b"abc"),
            "the request after an ABORT was not served"
        );
    }
    // Without KEEP_CONN: END_REQUEST, then closed.
    let mut wire = Vec::new();
    fcgi::push_begin_request(&mut wire, 1, false);
    abort(&mut wire, 1);
    let mut c = ctx.raw();
    let (out, eof) = c.send(&wire).read_to_eof(Duration::from_secs(3));
    ensure!(
        records(&out).iter().any(|r| r.0 == fcgi::END_REQUEST),
        "ABORT without KEEP_CONN: no END_REQUEST"
    );
    ensure!(eof.is_some(), "ABORT without KEEP_CONN: not closed");
    // ABORT for an id never begun, then a whole request; and an ABORT
    // right after a whole /wait request: answered once each.
    let mut wire = Vec::new();
    abort(&mut wire, 7);
    wire.extend_from_slice(&full);
    let mut wait = Vec::new();
    fcgi::encode_request(&mut wait, 3, true, "GET", "/wait?us=200000", &[], b"");
    if ctx.m.keep_alive {
        wire.extend_from_slice(&wait);
        abort(&mut wire, 3);
    }
    let mut c = ctx.raw();
    let (out, _) = c
        .send(&wire)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let got = fcgi_answers(&out)?;
    let bodies: Vec<(u16, String)> = got
        .iter()
        .map(|a| (a.id, String::from_utf8_lossy(&a.body).into_owned()))
        .collect();
    let mut expect = vec![(1, "Hello, World!".to_string())];
    if ctx.m.keep_alive {
        expect.push((3, "waited 200000 us".to_string()));
    }
    ensure!(
        bodies == expect,
        "ABORT of an unknown id / after the request: {bodies:?}"
    );
    Ok(None)
}

/// A second BEGIN_REQUEST with the same id while the request is being
/// received is ignored: one answer; a BEGIN_REQUEST whose body is not 8
/// bytes closes the connection.
fn fcgi_repeated_begin(ctx: &Ctx) -> Result<Option<Server>, String> {
    let mut full = Vec::new();
    fcgi::encode_request(&mut full, 1, true, "GET", "/bytes?n=11", &[], b"");
    let begin_len = fcgi::HEADER_LEN + 8;
    let wire = [&full[..begin_len], &full[..begin_len], &full[begin_len..]].concat();
    let mut c = ctx.raw();
    let (out, _) = c
        .send(&wire)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let got = fcgi_answers(&out)?;
    let ends = records(&out)
        .iter()
        .filter(|r| r.0 == fcgi::END_REQUEST)
        .count();
    ensure!(
        got.len() == 1 && got[0].body == b"abcdefghijk" && ends == 1,
        "repeated BEGIN: {} answers, {ends} END_REQUESTs",
        got.len()
    );
    let mut short = Vec::new();
    fcgi::push_header(&mut short, fcgi::BEGIN_REQUEST, 1, 4, 0);
    short.extend_from_slice(&[0, 1, 1, 0]);
    closed_silently(
        ctx,
        &[("BEGIN_REQUEST of 4 bytes", &short)],
        Duration::from_secs(3),
    )?;
    Ok(None)
}

/// Versions other than 1 (0, 2, 255), first or in the middle of a
/// request: the connection is closed, nothing answered.
fn fcgi_versions(ctx: &Ctx) -> Result<Option<Server>, String> {
    let limit = Duration::from_secs(3);
    let mut full = Vec::new();
    fcgi::encode_request(&mut full, 1, true, "GET", "/hello", &[], b"");
    let mut inputs = Vec::new();
    for v in [0u8, 2, 255] {
        let mut first = full.clone();
        first[0] = v;
        inputs.push((format!("version {v} BEGIN_REQUEST"), first));
        // BEGIN is version 1, the PARAMS after it is not.
        let mut mid = full.clone();
        mid[fcgi::HEADER_LEN + 8] = v;
        inputs.push((format!("version {v} PARAMS"), mid));
    }
    let inputs: Vec<(&str, &[u8])> = inputs.iter().map(|(w, i)| (&w[..], &i[..])).collect();
    closed_silently(ctx, &inputs, limit)?;
    Ok(None)
}

/// Record types nobody defined: UNKNOWN_TYPE naming the type, and the
/// request around them is still served.
fn fcgi_unknown_types(ctx: &Ctx) -> Result<Option<Server>, String> {
    let mut wire = Vec::new();
    for kind in [0u8, 12, 99, 255] {
        fcgi::push_header(&mut wire, kind, 0, 3, 5);
        wire.extend_from_slice(&[1, 2, 3, 0, 0, 0, 0, 0]);
    }
    // One inside a request, with that request's id.
    let mut req = Vec::new();
    fcgi::encode_request(&mut req, 1, true, "GET", "/hello", &[], b"");
    let begin_len = fcgi::HEADER_LEN + 8;
    wire.extend_from_slice(&req[..begin_len]);
    fcgi::push_header(&mut wire, 200, 1, 0, 0);
    wire.extend_from_slice(&req[begin_len..]);
    let mut c = ctx.raw();
    let (out, _) = c
        .send(&wire)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let unknown: Vec<u8> = records(&out)
        .iter()
        .filter(|r| r.0 == fcgi::UNKNOWN_TYPE)
        .map(|r| r.2[0])
        .collect();
    ensure!(
        unknown == [0, 12, 99, 255, 200],
        "UNKNOWN_TYPE answers {unknown:?}"
    );
    let got = fcgi_answers(&out)?;
    ensure!(
        got.len() == 1 && got[0].body == b"Hello, World!",
        "the request around an unknown record was not served"
    );
    Ok(None)
}

/// GET_VALUES with garbage content (lengths past the end, 2 GB names,
/// random bytes, 64 KB of it): a GET_VALUES_RESULT (empty or with what
/// was readable), and the connection goes on.
fn fcgi_get_values(ctx: &Ctx) -> Result<Option<Server>, String> {
    let mut noise = Vec::with_capacity(65_535);
    let mut x: u32 = 0x1234_5678;
    while noise.len() < 65_535 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let mut valid_then_garbage = Vec::new();
    fcgi::push_name_value(&mut valid_then_garbage, b"FCGI_MPXS_CONNS", b"");
    valid_then_garbage.extend_from_slice(&[0xff; 9]);
    let contents: [&[u8]; 6] = [
        &[0xff; 40],
        &[0x80, 0, 0],
        &[0x7f],
        &[0xff, 0xff, 0xff, 0xff, 0, b'F'],
        &noise,
        &valid_then_garbage,
    ];
    let mut wire = Vec::new();
    for content in contents {
        fcgi::push_header(&mut wire, fcgi::GET_VALUES, 0, content.len(), 0);
        wire.extend_from_slice(content);
    }
    // GET_VALUES with a request id is not a management record.
    fcgi::push_header(&mut wire, fcgi::GET_VALUES, 9, 0, 0);
    let mut req = Vec::new();
    fcgi::encode_request(&mut req, 1, true, "GET", "/hello", &[], b"");
    wire.extend_from_slice(&req);
    let mut c = ctx.raw();
    let (out, _) = c
        .send(&wire)
        .shutdown_write()
        .read_to_eof(Duration::from_secs(4));
    let recs = records(&out);
    let results = recs
        .iter()
        .filter(|r| r.0 == fcgi::GET_VALUES_RESULT && r.1 == 0)
        .count();
    ensure!(
        results == contents.len(),
        "{results} GET_VALUES_RESULT for {} GET_VALUES",
        contents.len()
    );
    let last = recs
        .iter()
        .rfind(|r| r.0 == fcgi::GET_VALUES_RESULT)
        .unwrap();
    ensure!(
        last.2.starts_with(b"\x0f\x01FCGI_MPXS_CONNS0"),
        "the readable pair before the garbage was not answered: {}",
        show(&last.2)
    );
    let got = fcgi_answers(&out)?;
    ensure!(
        got.len() == 1 && got[0].body == b"Hello, World!",
        "no request served after garbage GET_VALUES"
    );
    Ok(None)
}

/// 16 connections at once, each with its own request ids (1 to 65535),
/// and one connection with ids that jump: every answer carries its
/// request's id and its request's body.
fn fcgi_concurrent_ids(ctx: &Ctx) -> Result<Option<Server>, String> {
    let keep = ctx.m.keep_alive;
    let addr = ctx.s.addr.clone();
    let threads: Vec<_> = (0..16u32)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Check {
                let mut c = Raw::connect(&addr);
                for k in 0..30u32 {
                    let id = ((t * 4099 + k * 131) % 65_535 + 1) as u16;
                    let n = t * 97 + k * 13;
                    let target = format!("/bytes?n={n}");
                    let mut wire = Vec::new();
                    fcgi::encode_request(&mut wire, id, keep, "GET", &target, &[], b"");
                    if !keep && k > 0 {
                        c = Raw::connect(&addr);
                    }
                    let out = c.send(&wire).read_until(Duration::from_secs(5), |b| {
                        fcgi_answers(b).is_ok_and(|a| !a.is_empty())
                    });
                    let got = fcgi_answers(&out)?;
                    let a = got.first().ok_or(format!("id {id}: no answer"))?;
                    ensure!(a.id == id, "asked with id {id}, answered with id {}", a.id);
                    iomodels_workload::verify("GET", &target, b"", a.status, &a.body)
                        .map_err(|e| format!("id {id} {target}: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "client thread panicked")??;
    }
    if keep {
        let ids = [1u16, 65_535, 2, 40_000, 300, 65_534, 1, 17];
        let mut wire = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            fcgi::encode_request(
                &mut wire,
                *id,
                true,
                "GET",
                &format!("/bytes?n={i}"),
                &[],
                b"",
            );
        }
        let mut c = ctx.raw();
        let (out, _) = c
            .send(&wire)
            .shutdown_write()
            .read_to_eof(Duration::from_secs(4));
        let got: Vec<(u16, usize)> = fcgi_answers(&out)?
            .iter()
            .map(|a| (a.id, a.body.len()))
            .collect();
        let expect: Vec<(u16, usize)> = ids.iter().copied().zip(0..).collect();
        ensure!(got == expect, "pipelined ids: {got:?}");
    }
    Ok(None)
}

/// What one CGI program process may add to a server's PSS (see
/// [`non_reading_memory`]).
const PROGRAM_PSS: usize = 1 << 20;

/// Clients that ask for a large body and never read: the server holds at
/// most W bytes of response per connection, so its memory (PSS of the
/// whole tree) grows by less than 5 × W per connection.
fn non_reading_memory(ctx: &Ctx) -> Result<Option<Server>, String> {
    let pid = ctx.s.child.id();
    let before = pss(pid);
    let n = 8;
    let mut wire = request_bytes(ctx.protocol, "GET", "/bytes?n=16777216", b"");
    let echo_body = vec![b'e'; 1 << 20];
    let mut clients = Vec::new();
    for i in 0..n {
        if i >= 6 {
            wire = request_bytes(ctx.protocol, "POST", "/echo", &echo_body);
        }
        let mut c = Raw::non_reader(&ctx.s.addr);
        c.send(&wire);
        clients.push(c);
    }
    let mut peak = 0;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        peak = peak.max(pss(pid).saturating_sub(before));
    }
    ctx.note(
        "PSS growth",
        format!("{:.1} MB for {n} non-readers", peak as f64 / 1e6),
    );
    drop(clients);
    // cgi-server holds a program's process per request in flight (the
    // model's cost, measured: about 0.6 MB of PSS for hello-cgi, debug
    // build); it gets that on top of the window bound.
    let per_conn = 5 * WINDOW
        + if ctx.bin() == "cgi-server" {
            PROGRAM_PSS
        } else {
            0
        };
    {
        ensure!(
            (peak as usize) < per_conn * n,
            "{n} clients that never read raised PSS by {:.1} MB (limit {:.2} MB × {n})",
            peak as f64 / 1e6,
            per_conn as f64 / 1e6
        );
    }
    Ok(None)
}

/// Writers stuck on clients that never read: each is released (its
/// connection closed) once its write has made no progress for
/// `--idle-timeout`, and a fresh client is answered within 5 s of the
/// start even when the stuck ones outnumber a blocking model's workers.
fn stuck_writers(ctx: &Ctx) -> Result<Option<Server>, String> {
    // iterative-server serves one connection at a time: two stuck clients
    // already show its lesson.
    let n: usize = if ctx.bin() == "iterative-server" {
        2
    } else {
        10
    };
    // 8 MB: more than the server's socket buffer (tcp_wmem's 4 MB here)
    // and the non-reader's small one hold.
    let wire = request_bytes(ctx.protocol, "GET", "/bytes?n=8388608", b"");
    let baseline = socket_inodes(ctx.s.child.id());
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = Raw::non_reader(&ctx.s.addr);
        c.send(&wire);
        clients.push(c);
    }
    // A fresh client, on a thread, while the stuck ones are held.
    let (addr, protocol) = (ctx.s.addr.clone(), ctx.protocol);
    let fresh = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = Raw::connect(&addr);
        let (out, _) = c
            .send(&request_bytes(protocol, "GET", "/hello", b""))
            .shutdown_write()
            .read_to_eof(Duration::from_secs(15));
        let served = answers(protocol, &out).is_ok_and(|a| !a.is_empty());
        served.then(|| start.elapsed())
    });
    // Watch the server's sockets: when each connection it took was let go.
    let pid = ctx.s.child.id();
    let mut seen: HashSet<u64> = baseline;
    let mut held: HashSet<u64> = HashSet::new();
    let mut released: Vec<Duration> = Vec::new();
    // Blocking models with a fixed number of workers serve the stuck
    // clients in waves, one idle timeout each.
    let workers = match ctx.bin() {
        "iterative-server" => 1,
        b if FIXED_WORKERS.contains(&b) => 4,
        // Its 2 worker processes stream the responses: a worker is pinned
        // by a client that reads nothing until that client's idle timeout,
        // like a blocking worker (the reactors are not).
        "swoole-server" => 2,
        _ => n,
    };
    let waves = n.div_ceil(workers) as u32;
    let per_wave = IDLE_TIMEOUT;
    let allowed = (per_wave + Duration::from_millis(500)) * waves + Duration::from_secs(1);
    let deadline = start + allowed + Duration::from_secs(3);
    // (The fresh client's connection may come and go among them.)
    while !(released.len() >= n && held.is_empty()) && Instant::now() < deadline {
        let now_held = socket_inodes(pid);
        let now = start.elapsed();
        for i in &now_held {
            if seen.insert(*i) {
                held.insert(*i);
            }
        }
        held.retain(|i| {
            let gone = !now_held.contains(i);
            if gone {
                released.push(now);
            }
            !gone
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh = fresh.join().map_err(|_| "fresh client thread panicked")?;
    // The first wave: as many as the workers (the fresh client may be one).
    let first_wave = released
        .get(workers.min(n) - 1)
        .copied()
        .unwrap_or(Duration::MAX);
    let last = released.last().copied().unwrap_or_default();
    ctx.note(
        "fresh /hello",
        fresh.map_or("not served within 15 s".into(), |t| {
            format!("after {t:.1?}")
        }),
    );
    ctx.note(
        "stuck released",
        format!(
            "{} connections let go, first wave by {first_wave:.1?}, last at {last:.1?}",
            released.len()
        ),
    );
    // After the release, a stuck client gets EOF before the whole 8 MB.
    let (got, eof) = clients[0].read_to_eof(Duration::from_secs(5));
    drop(clients);
    ensure!(
        released.len() >= n && held.is_empty(),
        "{} connections still held {:?} after the start ({} let go)",
        held.len(),
        deadline - start,
        released.len()
    );
    ensure!(
        first_wave <= per_wave + Duration::from_millis(1500) && last <= allowed,
        "stuck connections: first wave released by {first_wave:?}, the last at {last:?} \
         ({waves} wave(s) of {per_wave:?} allowed {allowed:?})"
    );
    // (EOF may never come: the kernel drops an orphaned socket whose peer
    // kept a zero window too long, without a reset.)
    ensure!(
        got.len() < 8 << 20,
        "the first stuck client read the whole body ({} bytes, {}) after its release",
        got.len(),
        if eof.is_some() { "EOF" } else { "no EOF" }
    );
    if ctx.bin() != "iterative-server" {
        let t = fresh.ok_or("a fresh /hello was not served while writers were stuck")?;
        // It waits for the waves of stuck writers ahead of it on its worker.
        let ahead = (n / workers) as u32;
        let limit = (IDLE_TIMEOUT * ahead + Duration::from_secs(1)).max(Duration::from_secs(5));
        ensure!(
            t <= limit,
            "a fresh /hello was served only after {t:?} (allowed {limit:?})"
        );
    }
    let status = catch(|| ctx.s.status())?;
    ctx.note("write_timeouts", format!("{}", status["write_timeouts"]));
    ensure!(
        status["write_timeouts"].as_u64().unwrap_or(0) >= 1,
        "/status write_timeouts is {:?} after {n} stuck writers",
        status["write_timeouts"]
    );
    Ok(None)
}

/// Descriptor exhaustion: the server runs under `ulimit -n 64` and 120
/// clients connect and ask `/hello`. Those it took hold its descriptors
/// (keep-alive); the rest wait in the listen backlog. At the limit it
/// does not spin (the accept pause). Once the holders leave, the waiting
/// clients are served within 1 s (an event model: all of them; a blocking
/// model: the next one), and so is a new one.
fn descriptor_exhaustion(ctx: &Ctx) -> Result<Option<Server>, String> {
    const LIMIT: u64 = 64;
    // --max-conns defaults to what the limit allows (less 64 spare): set
    // it high, or the server refuses cleanly and never meets EMFILE.
    let args: Vec<&str> = ctx
        .m
        .flags
        .iter()
        .chain(SHARED_FLAGS)
        .chain(&["--max-conns", "1000"])
        .copied()
        .collect();
    let s = Server::start_with(ctx.bin(), ctx.protocol, &args, |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches no memory of
        // the parent; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                use nix::sys::resource::{setrlimit, Resource};
                setrlimit(Resource::RLIMIT_NOFILE, LIMIT, LIMIT).map_err(std::io::Error::from)
            });
        }
    })
    .ok_or("the server did not start under ulimit -n 64")?;
    let mut s = s;
    s.one_request_per_connection = !ctx.m.keep_alive;
    let protocol = ctx.protocol;
    let hello = request_bytes(protocol, "GET", "/hello", b"");
    let mut clients: Vec<(Raw, Vec<u8>)> = (0..120)
        .map(|_| {
            let mut c = Raw::connect(&s.addr);
            c.send(&hello);
            c.stream.set_nonblocking(true).unwrap();
            (c, Vec::new())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let at_limit = cpu_percent(s.child.id(), Duration::from_millis(1000));
    // Reads what has come, without waiting; true once a whole answer is in.
    let poll = |c: &mut Raw, buf: &mut Vec<u8>| -> bool {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = c.stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        answers(protocol, buf).is_ok_and(|a| !a.is_empty())
    };
    let (holders, mut waiting): (Vec<_>, Vec<_>) = clients
        .drain(..)
        .map(|(mut c, mut buf)| {
            let served = poll(&mut c, &mut buf);
            (served, c, buf)
        })
        .partition(|(served, _, _)| *served);
    ctx.note(
        "at the limit",
        format!(
            "{} served, {} waiting, CPU {at_limit:.0}%",
            holders.len(),
            waiting.len()
        ),
    );
    let waits = ctx.awaiting("fd_limit");
    if !waits {
        ensure!(
            at_limit < 25.0,
            "spins at the descriptor limit: {at_limit:.0}% of a core"
        );
    }
    drop(holders);
    // The waiting clients: an event model serves them all, a blocking one
    // the next (its workers are then held by those keep-alive clients).
    let gone = Instant::now();
    let want = if ctx.blocking() {
        waiting.len().min(1)
    } else {
        waiting.len()
    };
    let mut answered_at = Vec::new();
    while answered_at.len() < want && gone.elapsed() < Duration::from_secs(3) {
        waiting.retain_mut(|(_, c, buf)| {
            let done = poll(c, buf);
            if done {
                answered_at.push(gone.elapsed());
            }
            !done
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    let recovered =
        (answered_at.len() >= want).then(|| answered_at.last().copied().unwrap_or_default());
    ctx.note(
        "waiting served after",
        recovered.map_or(format!("{} of {want} within 3 s", answered_at.len()), |t| {
            format!("{t:.2?} ({want})")
        }),
    );
    drop(waiting);
    if waits {
        // Measured and printed; the fresh-client and spin checks go to the
        // shared server instead of this one.
        return Ok(None);
    }
    let t = recovered.ok_or_else(|| {
        format!(
            "{} of {want} waiting clients served within 3 s after the holders left",
            answered_at.len()
        )
    })?;
    ensure!(
        t <= Duration::from_secs(1),
        "the waiting clients were served only {t:?} after the holders left"
    );
    Ok(Some(s))
}

/// Slowloris: 200 connections trickle a head one byte at a time. An event
/// model serves fresh clients within 100 ms meanwhile; a blocking model's
/// workers are pinned until `--header-timeout`: that denial is its lesson,
/// measured and printed here, not asserted.
fn slowloris(ctx: &Ctx) -> Result<Option<Server>, String> {
    let args: Vec<&str> = ctx
        .m
        .flags
        .iter()
        .copied()
        .chain(["--header-timeout", "5", "--idle-timeout", "10"])
        .collect();
    let mut s = Server::start_or_skip(ctx.bin(), ctx.protocol, &args)
        .ok_or("the slowloris server did not start")?;
    s.one_request_per_connection = !ctx.m.keep_alive;
    let (head, drip): (Vec<u8>, u8) = match ctx.protocol {
        Protocol::Http => (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(), b'a'),
        Protocol::Fcgi => {
            let mut w = Vec::new();
            fcgi::push_begin_request(&mut w, 1, true);
            fcgi::push_header(&mut w, fcgi::PARAMS, 1, 60_000, 0);
            (w, b'a')
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let addr = s.addr.clone();
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut slow: Vec<TcpStream> = Vec::new();
            for _ in 0..200 {
                if let Ok(mut c) = TcpStream::connect(&addr) {
                    let _ = c.write_all(&head[..3]);
                    slow.push(c);
                }
            }
            let mut sent = 3;
            while !stop.load(Ordering::Relaxed) {
                for c in &mut slow {
                    let byte = if sent < head.len() { head[sent] } else { drip };
                    let _ = c.write_all(&[byte]);
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            slow.len()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Ten fresh clients, 100 ms apart, each given 2 s.
    let (addr, protocol) = (s.addr.clone(), ctx.protocol);
    let fresh: Vec<_> = (0..10)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 * i));
                let t = Instant::now();
                let mut c = Raw::connect(&addr);
                let (out, _) = c
                    .send(&request_bytes(protocol, "GET", "/hello", b""))
                    .shutdown_write()
                    .read_to_eof(Duration::from_secs(2));
                answers(protocol, &out)
                    .is_ok_and(|a| !a.is_empty())
                    .then(|| t.elapsed())
            })
        })
        .collect();
    let times: Vec<Option<Duration>> = fresh.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let slow = trickler.join().map_err(|_| "slowloris thread panicked")?;
    let served: Vec<Duration> = times.iter().flatten().copied().collect();
    let worst = served.iter().max().copied();
    ctx.note(
        "fresh clients",
        format!(
            "{} of 10 served within 2 s{} ({slow} slow heads)",
            served.len(),
            worst.map_or(String::new(), |w| format!(", slowest {w:.0?}"))
        ),
    );
    if !ctx.blocking() {
        ensure!(
            served.len() == 10,
            "only {} of 10 fresh clients served during slowloris",
            served.len()
        );
        // Each within 100 ms, give or take this shared machine's
        // scheduling: the median within 100 ms and none near a second (a
        // blocking model serves none of them within 2 s).
        let mut sorted = served.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let w = worst.unwrap_or_default();
        ensure!(
            median <= Duration::from_millis(100) && w < Duration::from_millis(1000),
            "fresh clients during slowloris: median {median:?}, slowest {w:?}"
        );
    }
    Ok(Some(s))
}
