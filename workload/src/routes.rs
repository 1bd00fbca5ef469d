//! The routes of the workload and what their bodies must be.
//!
//! Every body is a deterministic function of the request (only `/status`
//! reports live state), so the load generator can check every response it
//! receives with [`Expectation`]. The routes are the same over HTTP and
//! FastCGI; [`route`] only sees a method, a request target and a body.

use std::fmt;

/// Largest `n` accepted by `/cpu`.
pub const MAX_CPU_ROUNDS: u64 = 1_000_000_000;
/// Largest `us` accepted by `/wait` (ten seconds).
pub const MAX_WAIT_US: u64 = 10_000_000;
/// Largest `n` accepted by `/bytes` (64 MiB).
pub const MAX_BYTES: u64 = 1 << 26;
/// The body of `/hello` (TechEmpower plaintext).
pub const HELLO: &[u8] = b"Hello, World!";
/// The files every generated data dir holds, with their sizes; each holds the
/// `/bytes` pattern.
pub const DATA_FILES: [(&str, usize); 3] = [("4k", 4096), ("64k", 65536), ("1m", 1 << 20)];

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The `/cpu` computation: `n` rounds of the splitmix64 mix, wrapping on u64.
pub fn cpu(n: u64) -> u64 {
    let mut x = GOLDEN ^ n;
    for _ in 0..n {
        x = x.wrapping_add(GOLDEN);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

/// Byte `i` of the `/bytes` pattern.
#[inline]
pub fn pattern_byte(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// Appends `n` bytes of the `/bytes` pattern to `out`.
pub fn extend_pattern(out: &mut Vec<u8>, n: usize) {
    const ALPHABET: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    out.reserve(n);
    let mut left = n;
    while left >= 26 {
        out.extend_from_slice(ALPHABET);
        left -= 26;
    }
    out.extend_from_slice(&ALPHABET[..left]);
}

/// Appends bytes `start .. start + n` of the `/bytes` pattern to `out` (a
/// body produced in chunks continues where the last chunk ended).
pub fn extend_pattern_at(out: &mut Vec<u8>, start: usize, n: usize) {
    const ALPHABET: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    out.reserve(n);
    // The bytes up to the next 'a', then whole alphabets from there.
    let at = start % 26;
    let first = if at == 0 { 0 } else { (26 - at).min(n) };
    out.extend_from_slice(&ALPHABET[at..at + first]);
    extend_pattern(out, n - first);
}

/// True when `name` may name a file of the data dir: `[A-Za-z0-9._-]+`,
/// never `.` or `..`, so never a path.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What a request asks for, decided from its method and target alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /hello`.
    Hello,
    /// `GET /cpu?n=N`.
    Cpu(u64),
    /// `GET /wait?us=D`.
    Wait(u64),
    /// `GET /bytes?n=N`.
    Bytes(u64),
    /// `GET /file?name=F`.
    File(&'a str),
    /// `POST /echo`.
    Echo,
    /// `OPTIONS *`: what the server allows (200, no body).
    Options,
    /// `GET /status`.
    Status,
    /// A known path asked with the wrong method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A known path with a bad query; carries the one-line reason.
    BadRequest(&'static str),
    /// Anything else.
    NotFound,
}

/// Splits a request target into its path and its query (without `?`).
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

/// The value of query parameter `key`, if present.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn number(
    query: &str,
    key: &str,
    max: u64,
    missing: &'static str,
    bad: &'static str,
) -> Result<u64, &'static str> {
    let value = query_param(query, key).ok_or(missing)?;
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad),
    }
}

/// Decides the route of a request. `HEAD` is answered like `GET` (without
/// the body, which is the protocol layer's business).
pub fn route<'a>(method: &str, target: &'a str) -> Route<'a> {
    if target == "*" {
        return if method == "OPTIONS" {
            Route::Options
        } else {
            Route::BadRequest("* is a target for OPTIONS only")
        };
    }
    let (path, query) = split_target(target);
    let get = method == "GET" || method == "HEAD";
    let known = matches!(
        path,
        "/hello" | "/cpu" | "/wait" | "/bytes" | "/file" | "/status"
    );
    if known && !get {
        return Route::MethodNotAllowed("GET, HEAD");
    }
    let param = |r: Result<u64, &'static str>, f: fn(u64) -> Route<'a>| match r {
        Ok(n) => f(n),
        Err(reason) => Route::BadRequest(reason),
    };
    match path {
        "/hello" => Route::Hello,
        "/status" => Route::Status,
        "/cpu" => param(
            number(
                query,
                "n",
                MAX_CPU_ROUNDS,
                "missing query parameter n",
                "n must be an integer from 0 to 1000000000",
            ),
            Route::Cpu,
        ),
        "/wait" => param(
            number(
                query,
                "us",
                MAX_WAIT_US,
                "missing query parameter us",
                "us must be an integer from 0 to 10000000",
            ),
            Route::Wait,
        ),
        "/bytes" => param(
            number(
                query,
                "n",
                MAX_BYTES,
                "missing query parameter n",
                "n must be an integer from 0 to 67108864",
            ),
            Route::Bytes,
        ),
        "/file" => match query_param(query, "name") {
            None => Route::BadRequest("missing query parameter name"),
            Some(name) if valid_file_name(name) => Route::File(name),
            Some(_) => Route::BadRequest("name must match [A-Za-z0-9._-]+ and not be . or .."),
        },
        "/echo" if method == "POST" => Route::Echo,
        "/echo" => Route::MethodNotAllowed("POST"),
        _ => Route::NotFound,
    }
}

/// The body of `/wait?us=D`.
pub fn wait_body(us: u64) -> String {
    format!("waited {us} us")
}

/// The body of `/cpu?n=N`: 16 lowercase hex digits.
pub fn cpu_body(n: u64) -> String {
    format!("{:016x}", cpu(n))
}

/// What `/status` reports; the server fills it, the workload formats it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Model name, as in `Server: iomodels-<model>`.
    pub model: String,
    /// Process id of the process that answered.
    pub pid: u32,
    /// Value of this response's `X-Worker` header.
    pub worker: String,
    /// Workers (processes or threads) the model runs.
    pub workers: u32,
    /// Requests served by the whole server since start.
    pub requests: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections open now.
    pub connections: u64,
    /// Connections refused because `--max-conns` was reached.
    pub refused: u64,
    /// Connections dropped because the peer read none of their output for
    /// a whole idle timeout.
    #[serde(default)]
    pub write_timeouts: u64,
    /// `io_uring_enter` calls made so far (0 for models without io_uring).
    #[serde(default)]
    pub enters: u64,
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// Protocol served: `http` or `fcgi`.
    pub protocol: String,
}

/// Why a response did not match what its request must return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The status code was not the expected one.
    Status { expected: u16, got: u16 },
    /// The body length differs.
    Length { expected: usize, got: usize },
    /// The body differs at this byte offset.
    Body { offset: usize },
    /// A `/status` body that is not the expected JSON.
    StatusJson,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Status { expected, got } => write!(f, "status {got}, expected {expected}"),
            VerifyError::Length { expected, got } => {
                write!(f, "body of {got} bytes, expected {expected}")
            }
            VerifyError::Body { offset } => write!(f, "body differs at byte {offset}"),
            VerifyError::StatusJson => write!(f, "/status body is not the status JSON"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What the response to one request must be, computed once per request
/// kind (so checking `/cpu` does not cost the checker the server's work).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    status: u16,
    body: ExpectedBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ExpectedBody {
    Exact(Vec<u8>),
    Pattern(usize),
    /// The data dir's generated files hold the pattern; unknown names may
    /// hold anything (or be missing: 404).
    File(Option<usize>),
    StatusJson,
    Any,
}

impl Expectation {
    /// The expectation for `method target` with request body `body`.
    pub fn new(method: &str, target: &str, body: &[u8]) -> Expectation {
        let ok = |body| Expectation { status: 200, body };
        match route(method, target) {
            Route::Hello => ok(ExpectedBody::Exact(HELLO.to_vec())),
            Route::Cpu(n) => ok(ExpectedBody::Exact(cpu_body(n).into_bytes())),
            Route::Wait(us) => ok(ExpectedBody::Exact(wait_body(us).into_bytes())),
            Route::Bytes(n) => ok(ExpectedBody::Pattern(n as usize)),
            Route::File(name) => {
                let size = DATA_FILES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
                ok(ExpectedBody::File(size))
            }
            Route::Echo => ok(ExpectedBody::Exact(body.to_vec())),
            Route::Options => ok(ExpectedBody::Exact(Vec::new())),
            Route::Status => ok(ExpectedBody::StatusJson),
            Route::MethodNotAllowed(_) => Expectation {
                status: 405,
                body: ExpectedBody::Any,
            },
            Route::BadRequest(_) => Expectation {
                status: 400,
                body: ExpectedBody::Any,
            },
            Route::NotFound => Expectation {
                status: 404,
                body: ExpectedBody::Any,
            },
        }
    }

    /// The status code the response must carry.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Checks a response's status and body.
    pub fn check(&self, status: u16, body: &[u8]) -> Result<(), VerifyError> {
        if let ExpectedBody::File(None) = self.body {
            // A file the workload did not generate: any 200 or a 404.
            return match status {
                200 | 404 => Ok(()),
                got => Err(VerifyError::Status { expected: 200, got }),
            };
        }
        if status != self.status {
            return Err(VerifyError::Status {
                expected: self.status,
                got: status,
            });
        }
        match &self.body {
            ExpectedBody::Exact(want) => compare(want.len(), body, |i| want[i]),
            ExpectedBody::Pattern(n) | ExpectedBody::File(Some(n)) => {
                compare(*n, body, pattern_byte)
            }
            ExpectedBody::File(None) | ExpectedBody::Any => Ok(()),
            ExpectedBody::StatusJson => match serde_json::from_slice::<Status>(body) {
                Ok(s) if !s.model.is_empty() => Ok(()),
                _ => Err(VerifyError::StatusJson),
            },
        }
    }
}

fn compare(len: usize, body: &[u8], want: impl Fn(usize) -> u8) -> Result<(), VerifyError> {
    if body.len() != len {
        return Err(VerifyError::Length {
            expected: len,
            got: body.len(),
        });
    }
    match body.iter().enumerate().position(|(i, &b)| b != want(i)) {
        Some(offset) => Err(VerifyError::Body { offset }),
        None => Ok(()),
    }
}

/// Checks one response against its request: a shortcut for
/// `Expectation::new(..).check(..)`.
pub fn verify(
    method: &str,
    target: &str,
    request_body: &[u8],
    status: u16,
    body: &[u8],
) -> Result<(), VerifyError> {
    Expectation::new(method, target, request_body).check(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_test_vectors() {
        assert_eq!(cpu_body(0), "9e3779b97f4a7c15");
        assert_eq!(cpu_body(1), "e99ff867dbf682c9");
        assert_eq!(cpu_body(1000), "3b8da2fb439b1d77");
        assert_eq!(cpu_body(100_000), "b80222d40d1aa62c");
    }

    #[test]
    fn pattern() {
        let mut v = Vec::new();
        extend_pattern(&mut v, 60);
        assert_eq!(&v[..28], b"abcdefghijklmnopqrstuvwxyzab");
        assert!(v.iter().enumerate().all(|(i, &b)| b == pattern_byte(i)));
        assert_eq!(v.len(), 60);
    }

    #[test]
    fn routing() {
        assert_eq!(route("GET", "/hello"), Route::Hello);
        for start in [0, 1, 25, 26, 27, 100] {
            for n in [0, 1, 25, 26, 53] {
                let mut whole = Vec::new();
                extend_pattern(&mut whole, start + n);
                let mut part = Vec::new();
                extend_pattern_at(&mut part, start, n);
                assert_eq!(part, whole[start..], "start {start} n {n}");
            }
        }
        assert_eq!(route("HEAD", "/hello"), Route::Hello);
        assert_eq!(route("GET", "/cpu?n=10"), Route::Cpu(10));
        assert_eq!(route("GET", "/cpu?x=1&n=10"), Route::Cpu(10));
        assert!(matches!(route("GET", "/cpu"), Route::BadRequest(_)));
        assert!(matches!(route("GET", "/cpu?n=-1"), Route::BadRequest(_)));
        assert!(matches!(
            route("GET", "/cpu?n=1000000001"),
            Route::BadRequest(_)
        ));
        assert_eq!(route("GET", "/cpu?n=1000000000"), Route::Cpu(1_000_000_000));
        assert!(matches!(
            route("GET", "/wait?us=10000001"),
            Route::BadRequest(_)
        ));
        assert_eq!(route("GET", "/bytes?n=67108864"), Route::Bytes(1 << 26));
        assert!(matches!(
            route("GET", "/bytes?n=67108865"),
            Route::BadRequest(_)
        ));
        assert_eq!(route("GET", "/file?name=4k"), Route::File("4k"));
        assert!(matches!(
            route("GET", "/file?name=../etc"),
            Route::BadRequest(_)
        ));
        assert!(matches!(
            route("GET", "/file?name=.."),
            Route::BadRequest(_)
        ));
        assert_eq!(route("POST", "/echo"), Route::Echo);
        assert_eq!(route("GET", "/echo"), Route::MethodNotAllowed("POST"));
        assert_eq!(
            route("POST", "/hello"),
            Route::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(route("GET", "/status"), Route::Status);
    }

    #[test]
    fn expectations() {
        assert!(verify("GET", "/hello", b"", 200, b"Hello, World!").is_ok());
        assert_eq!(
            verify("GET", "/hello", b"", 200, b"Hello, World?"),
            Err(VerifyError::Body { offset: 12 })
        );
        assert!(verify("GET", "/bytes?n=5", b"", 200, b"abcde").is_ok());
        assert!(verify("GET", "/bytes?n=5", b"", 200, b"abcd").is_err());
        assert!(verify("POST", "/echo", b"xyz", 200, b"xyz").is_ok());
        assert!(verify("GET", "/nope", b"", 404, b"whatever").is_ok());
        assert!(verify("GET", "/cpu?n=1", b"", 200, b"e99ff867dbf682c9").is_ok());
        assert!(verify("GET", "/wait?us=5", b"", 200, b"waited 5 us").is_ok());
        assert!(verify("GET", "/status", b"", 200, b"{}").is_err());
        let s = serde_json::to_vec(&Status {
            model: "x".into(),
            ..Status::default()
        })
        .unwrap();
        assert!(verify("GET", "/status", b"", 200, &s).is_ok());
        assert!(verify("GET", "/file?name=other", b"", 404, b"").is_ok());
    }
}
