//! HTTP/1.1, both sides, without I/O.
//!
//! The server side parses one request head at a time with httparse from the
//! bytes the connection holds; partial input is [`Parse::Partial`], never an
//! error. Bodies come by `Content-Length` only: any `Transfer-Encoding` is
//! answered 501, as RFC 9112 §6.1 allows a server that implements none.
//! The client side (for tests and the load generator) encodes requests and
//! parses responses the same way.

use std::fmt;

/// Largest request head accepted (request line and headers): 8 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;
/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;

/// A request head, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// Request method.
    pub method: &'a str,
    /// Request target (origin form: path and query).
    pub target: &'a str,
    /// Length of the head in bytes, the blank line included.
    pub head_len: usize,
    /// Length of the body (`Content-Length`, 0 when absent).
    pub body_len: usize,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 (answers must say `Connection: keep-alive` to keep it open).
    pub http10: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Why a request head is refused; each closes the connection after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The bytes are not an HTTP/1.x request (400).
    Malformed,
    /// The head is over [`MAX_HEAD`] or has too many fields (431).
    HeadTooLarge,
    /// `Content-Length` over [`MAX_BODY`] (413).
    BodyTooLarge,
    /// A `Transfer-Encoding` this server does not implement (501).
    UnsupportedEncoding,
}

impl HeadError {
    /// The status code that answers this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed => 400,
            HeadError::HeadTooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::UnsupportedEncoding => 501,
        }
    }

    /// The one-line reason sent as the body.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed request",
            HeadError::HeadTooLarge => "request head larger than 8 KiB",
            HeadError::BodyTooLarge => "request body larger than 1 MiB",
            HeadError::UnsupportedEncoding => {
                "Transfer-Encoding is not supported; send Content-Length"
            }
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

/// The result of looking for one request head at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<'a> {
    /// A whole head (its body may still be arriving).
    Complete(Head<'a>),
    /// Not enough bytes yet.
    Partial,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether a comma-separated header value lists `token`.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| std::str::from_utf8(t).is_ok_and(|t| eq(t.trim(), token)))
}

/// Parses the request head at the start of `input`.
pub fn parse_head(input: &[u8]) -> Result<Parse<'_>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(HeadError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_len > MAX_HEAD {
        return Err(HeadError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut body_len: Option<usize> = None;
    let mut expect_continue = false;
    for field in req.headers.iter() {
        let name = field.name;
        if eq(name, "content-length") {
            let value = std::str::from_utf8(field.value)
                .map_err(|_| HeadError::Malformed)?
                .trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Malformed);
            }
            let n = match value.parse::<u64>() {
                Ok(n) if n <= MAX_BODY as u64 => n as usize,
                Ok(_) => return Err(HeadError::BodyTooLarge),
                Err(_) if value.len() > 7 => return Err(HeadError::BodyTooLarge),
                Err(_) => return Err(HeadError::Malformed),
            };
            // Two different lengths make the message's end ambiguous.
            if body_len.is_some_and(|prev| prev != n) {
                return Err(HeadError::Malformed);
            }
            body_len = Some(n);
        } else if eq(name, "transfer-encoding") {
            return Err(HeadError::UnsupportedEncoding);
        } else if eq(name, "connection") {
            if has_token(field.value, "close") {
                keep_alive = false;
            } else if has_token(field.value, "keep-alive") {
                keep_alive = true;
            }
        } else if eq(name, "expect") {
            expect_continue = has_token(field.value, "100-continue");
        }
    }
    let target = request_target(method, target).ok_or(HeadError::Malformed)?;
    Ok(Parse::Complete(Head {
        method,
        target,
        head_len,
        body_len: body_len.unwrap_or(0),
        keep_alive,
        http10,
        expect_continue,
    }))
}

/// The path and query a request target names (RFC 9112 §3.2): origin-form
/// (`/hello?x`) as it is; absolute-form (`http://host/hello?x`), which a
/// server MUST accept, with its scheme and authority dropped (this is an
/// origin server, not a proxy: the authority is not checked); asterisk-form
/// (`*`) for OPTIONS only. Anything else (authority-form, a bare word) is
/// malformed.
pub fn request_target<'a>(method: &str, target: &'a str) -> Option<&'a str> {
    if target.starts_with('/') {
        return Some(target);
    }
    if target == "*" {
        return (method == "OPTIONS").then_some(target);
    }
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' && i > 0 => Some(&rest[i..]),
        // `http://host` names "/"; `http://host?q` would need a "/" added
        // before the query: refused rather than allocated.
        None if !rest.is_empty() => Some("/"),
        _ => None,
    }
}

/// The reason phrase of the statuses this workload sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Appends the decimal form of `n` without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Appends one request to `out`. `headers` are extra `Name: value` lines.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[String],
    body: &[u8],
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// One parsed response, borrowed from the client's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientResponse<'a> {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: &'a [u8],
    /// The `X-Worker` header, if any.
    pub worker: Option<&'a [u8]>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Bytes of input this response used (head and body).
    pub len: usize,
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not an HTTP/1.x response.
    Malformed,
    /// No `Content-Length` (this workload always sends one).
    NoLength,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Malformed => f.write_str("malformed HTTP response"),
            ResponseError::NoLength => f.write_str("HTTP response without Content-Length"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Parses one whole response at the start of `input`; `Ok(None)` until all
/// of it is there. Interim `100 Continue` responses are skipped over.
/// `head_request` says the request was `HEAD` (no body follows).
pub fn parse_response(
    input: &[u8],
    head_request: bool,
) -> Result<Option<ClientResponse<'_>>, ResponseError> {
    let mut skipped = 0;
    loop {
        let input_now = &input[skipped..];
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut fields);
        let head_len = match resp.parse(input_now) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ResponseError::Malformed),
        };
        let status = resp.code.ok_or(ResponseError::Malformed)?;
        if status == 100 {
            skipped += head_len;
            continue;
        }
        let mut length = None;
        let mut worker = None;
        let mut close = resp.version == Some(0);
        for f in resp.headers.iter() {
            if eq(f.name, "content-length") {
                let v = std::str::from_utf8(f.value).map_err(|_| ResponseError::Malformed)?;
                length = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| ResponseError::Malformed)?,
                );
            } else if eq(f.name, "x-worker") {
                worker = Some(f.value);
            } else if eq(f.name, "connection") {
                close = has_token(f.value, "close") || (close && !has_token(f.value, "keep-alive"));
            }
        }
        let body_len = if head_request {
            0
        } else {
            length.ok_or(ResponseError::NoLength)?
        };
        if input_now.len() < head_len + body_len {
            return Ok(None);
        }
        return Ok(Some(ClientResponse {
            status,
            body: &input_now[head_len..head_len + body_len],
            worker,
            close,
            len: skipped + head_len + body_len,
        }));
    }
}

#[cfg(test)]
mod target_tests {
    use super::request_target;

    #[test]
    fn request_target_forms() {
        assert_eq!(request_target("GET", "/hello"), Some("/hello"));
        assert_eq!(
            request_target("GET", "http://h:80/hello?x=1"),
            Some("/hello?x=1")
        );
        assert_eq!(request_target("GET", "HTTPS://h/cpu"), Some("/cpu"));
        assert_eq!(request_target("GET", "http://h"), Some("/"));
        assert_eq!(request_target("OPTIONS", "*"), Some("*"));
        assert_eq!(request_target("GET", "*"), None);
        assert_eq!(request_target("CONNECT", "h:443"), None);
        assert_eq!(request_target("GET", "ftp://h/x"), None);
        assert_eq!(request_target("GET", "http:///x"), None);
        assert_eq!(request_target("GET", "hello"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(input: &[u8]) -> Head<'_> {
        match parse_head(input) {
            Ok(Parse::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(head(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn limits() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x"), Ok(Parse::Partial));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::HeadTooLarge));
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n"),
            Err(HeadError::BodyTooLarge)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Err(HeadError::BodyTooLarge)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n").body_len,
            MAX_BODY
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::UnsupportedEncoding)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(req.as_bytes()), Err(HeadError::HeadTooLarge));
    }

    #[test]
    fn client_round_trip() {
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/echo", "h", &["X-A: b".into()], b"hi");
        let h = head(&out);
        assert_eq!((h.method, h.target, h.body_len), ("POST", "/echo", 2));
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Worker: 7\r\nContent-Length: 2\r\n\r\nhiHTTP";
        let r = parse_response(resp, false).unwrap().unwrap();
        assert_eq!(
            (r.status, r.body, r.worker, r.close),
            (200, &b"hi"[..], Some(&b"7"[..]), false)
        );
        assert_eq!(&resp[r.len..], b"HTTP");
        assert_eq!(parse_response(&resp[..40], false), Ok(None));
    }
}
