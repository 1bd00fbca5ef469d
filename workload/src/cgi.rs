//! CGI/1.1 (RFC 3875) without I/O: what a server hands a program it
//! executes per request, and how it reads what the program writes back.
//!
//! * [`ProgramRequest`] — one request as a program sees it, built from an
//!   HTTP head or FastCGI PARAMS by [`crate::Conn`] in program mode
//!   ([`crate::Conn::run_programs`]). Every value in it is checked here, so
//!   the environment [`ProgramRequest::meta_variables`] builds comes from
//!   validated values only:
//!   - request headers become `HTTP_*` variables under one rule (upper
//!     case, `-` → `_`); a name with anything but letters, digits and `-`
//!     (an underscore above all: `X_Forwarded_For` would collide with
//!     `X-Forwarded-For`) is dropped, as nginx and Apache 2.4 drop it;
//!   - `Proxy:` is dropped (httpoxy, CVE-2016-5385: `HTTP_PROXY` is read as
//!     a proxy setting by many HTTP libraries), and so are credentials
//!     (`Authorization`, RFC 3875 §4.1.18);
//!   - `PATH_INFO` is never taken from a client or a front end: it is the
//!     request path, percent-decoded here, and a path that decodes to a
//!     control character (the `%0a` of CVE-2019-11043, which walked
//!     php-fpm's PATH_INFO pointer out of its buffer) is refused with 400;
//!   - `CONTENT_LENGTH` is the length of the body received, never a header.
//! * [`parse_output`] — the head of a program's output (§6): `Status:`,
//!   `Content-Type`, `Location`, `Content-Length` and other header fields,
//!   up to the blank line.

use std::fmt;

/// The most bytes of a program's output head (its header block).
pub const MAX_OUTPUT_HEAD: usize = 8 * 1024;
/// The most header fields in a program's output head.
const MAX_OUTPUT_FIELDS: usize = 64;

/// One request for a CGI program: the checked values its meta-variables
/// are made from, and its body (the program's stdin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRequest {
    /// `REQUEST_METHOD`.
    pub method: String,
    /// The request target (origin form), also given as `REQUEST_URI`.
    pub target: String,
    /// `PATH_INFO`: the target's path, percent-decoded.
    pub path_info: String,
    /// `QUERY_STRING`, as received (not decoded).
    pub query: String,
    /// `SERVER_PROTOCOL`.
    pub protocol: &'static str,
    /// `CONTENT_TYPE`, when the request had one.
    pub content_type: Option<String>,
    /// `HTTP_*` variables: names normalised, repeated fields joined.
    pub http: Vec<(String, String)>,
    /// The client's address as a FastCGI front end gave it (checked to be
    /// an IP address); over HTTP the model takes it from the socket.
    pub remote_addr: Option<String>,
    /// The request body, for the program's stdin.
    pub body: Vec<u8>,
}

/// What the server adds to a request's meta-variables: its own names and
/// the connection's addresses.
#[derive(Debug, Clone, Default)]
pub struct Site<'a> {
    /// `SERVER_SOFTWARE` (`iomodels-cgi`).
    pub software: &'a str,
    /// `SERVER_NAME`: the local address when the `Host` header is unusable.
    pub server_name: &'a str,
    /// `SERVER_PORT`.
    pub server_port: u16,
    /// `REMOTE_ADDR` (and `REMOTE_PORT`) of the peer, when it has one.
    pub remote: Option<(String, u16)>,
    /// `DOCUMENT_ROOT`.
    pub document_root: &'a str,
    /// `SCRIPT_FILENAME`, for interpreters (php-cgi) that run a script.
    pub script_filename: Option<&'a str>,
    /// More fixed variables the server sets (never `HTTP_*`).
    pub extra: &'a [(String, String)],
}

/// Why a request cannot be handed to a program (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The path has a bad `%` escape, or decodes to a control character
    /// or to bytes that are not UTF-8.
    BadPath,
    /// A request value is not UTF-8 or holds a control character.
    BadValue,
}

impl RequestError {
    /// The one-line reason sent as the body.
    pub fn reason(self) -> &'static str {
        match self {
            RequestError::BadPath => "path must decode to printable UTF-8 (no %00-%1f, %7f)",
            RequestError::BadValue => "request value is not printable UTF-8",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A printable value (no control characters but tab), trimmed.
fn clean_value(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?.trim();
    s.chars()
        .all(|c| c == '\t' || !c.is_control())
        .then(|| s.to_string())
}

/// The request path, percent-decoded, refused if it decodes to a control
/// character or to anything but UTF-8.
pub fn decode_path(path: &str) -> Result<String, RequestError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(RequestError::BadPath)?;
                let hex = std::str::from_utf8(hex).map_err(|_| RequestError::BadPath)?;
                i += 2;
                u8::from_str_radix(hex, 16).map_err(|_| RequestError::BadPath)?
            }
            b => b,
        };
        if b < 0x20 || b == 0x7f {
            return Err(RequestError::BadPath);
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RequestError::BadPath)
}

/// The `HTTP_*` name of request header `name`, or `None` when the header
/// is not handed on: a name with characters other than letters, digits and
/// `-` (it could collide with another after normalising), `Proxy`
/// (httpoxy), credentials, and the fields that have variables of their own
/// or belong to the connection's framing.
pub fn http_variable(name: &str) -> Option<String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    const DROPPED: &[&str] = &[
        "proxy",
        "authorization",
        "proxy-authorization",
        "content-length",
        "content-type",
        "transfer-encoding",
    ];
    if DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name)) {
        return None;
    }
    let upper: String = name
        .bytes()
        .map(|b| match b {
            b'-' => '_',
            b => b.to_ascii_uppercase() as char,
        })
        .collect();
    Some(format!("HTTP_{upper}"))
}

/// Adds `value` under `name`, joining a repeated field with ", " (§4.1.18).
fn add_joined(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => {
            v.push_str(", ");
            v.push_str(&value);
        }
        None => vars.push((name, value)),
    }
}

impl ProgramRequest {
    fn new(method: &str, target: &str, body: &[u8]) -> Result<ProgramRequest, RequestError> {
        let (path, query) = crate::routes::split_target(target);
        if query.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(RequestError::BadValue);
        }
        Ok(ProgramRequest {
            method: method.to_string(),
            target: target.to_string(),
            path_info: decode_path(path)?,
            query: query.to_string(),
            protocol: "HTTP/1.1",
            content_type: None,
            http: Vec::new(),
            remote_addr: None,
            body: body.to_vec(),
        })
    }

    /// From an HTTP request: its `head` bytes (as
    /// [`crate::http::parse_head`] accepted them), the target it gave and
    /// the body.
    pub fn from_http(
        head: &[u8],
        target: &str,
        http10: bool,
        body: &[u8],
    ) -> Result<ProgramRequest, RequestError> {
        let mut fields = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut fields);
        parsed.parse(head).map_err(|_| RequestError::BadValue)?;
        let method = parsed.method.unwrap_or("GET");
        let mut req = ProgramRequest::new(method, target, body)?;
        if http10 {
            req.protocol = "HTTP/1.0";
        }
        for field in parsed.headers.iter() {
            let Some(value) = clean_value(field.value) else {
                continue;
            };
            if field.name.eq_ignore_ascii_case("content-type") {
                req.content_type = Some(value);
            } else if let Some(name) = http_variable(field.name) {
                add_joined(&mut req.http, name, value);
            }
        }
        Ok(req)
    }

    /// From a FastCGI request: its PARAMS, the target they name, and STDIN.
    /// The front end's `HTTP_*` params are taken when well formed (never
    /// `HTTP_PROXY`); its `PATH_INFO` and `SCRIPT_NAME` are not.
    pub fn from_fcgi(
        params: &[u8],
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<ProgramRequest, RequestError> {
        let mut req = ProgramRequest::new(method, target, body)?;
        for (name, value) in crate::fcgi::NameValues::new(params).map_while(Result::ok) {
            let (Ok(name), Some(value)) = (std::str::from_utf8(name), clean_value(value)) else {
                continue;
            };
            match name {
                "CONTENT_TYPE" if !value.is_empty() => req.content_type = Some(value),
                "SERVER_PROTOCOL" if value == "HTTP/1.0" => req.protocol = "HTTP/1.0",
                "REMOTE_ADDR" if value.parse::<std::net::IpAddr>().is_ok() => {
                    req.remote_addr = Some(value)
                }
                "HTTP_PROXY" => {}
                _ if name.len() > 5
                    && name.starts_with("HTTP_")
                    && name[5..]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
                {
                    add_joined(&mut req.http, name.to_string(), value)
                }
                _ => {}
            }
        }
        Ok(req)
    }

    /// The program's whole environment (RFC 3875 §4.1, and the common
    /// `REQUEST_URI`, `REMOTE_PORT`, `DOCUMENT_ROOT`, `SCRIPT_FILENAME` and
    /// `REDIRECT_STATUS`, which php-cgi's `cgi.force_redirect` asks for).
    /// The script is the whole URL space: `SCRIPT_NAME` is empty and
    /// `PATH_INFO` the whole path.
    pub fn meta_variables(&self, site: &Site<'_>) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = Vec::with_capacity(24 + self.http.len());
        let mut set = |n: &str, v: &str| vars.push((n.to_string(), v.to_string()));
        set("GATEWAY_INTERFACE", "CGI/1.1");
        set("SERVER_SOFTWARE", site.software);
        let host = self
            .http
            .iter()
            .find(|(n, _)| n == "HTTP_HOST")
            .map(|(_, v)| v.rsplit_once(':').map_or(v.as_str(), |(h, _)| h))
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
            });
        set("SERVER_NAME", host.unwrap_or(site.server_name));
        set("SERVER_PORT", &site.server_port.to_string());
        set("SERVER_PROTOCOL", self.protocol);
        set("REQUEST_METHOD", &self.method);
        set("REQUEST_URI", &self.target);
        set("SCRIPT_NAME", "");
        set("PATH_INFO", &self.path_info);
        set("QUERY_STRING", &self.query);
        set("DOCUMENT_ROOT", site.document_root);
        set("REDIRECT_STATUS", "200");
        if let Some(f) = site.script_filename {
            set("SCRIPT_FILENAME", f);
        }
        match (&self.remote_addr, &site.remote) {
            (Some(addr), _) => set("REMOTE_ADDR", addr),
            (None, Some((addr, port))) => {
                set("REMOTE_ADDR", addr);
                set("REMOTE_PORT", &port.to_string());
            }
            (None, None) => {}
        }
        if !self.body.is_empty() || self.method == "POST" {
            set("CONTENT_LENGTH", &self.body.len().to_string());
        }
        if let Some(t) = &self.content_type {
            set("CONTENT_TYPE", t);
        }
        for (n, v) in site.extra.iter().filter(|(n, _)| !n.starts_with("HTTP_")) {
            set(n, v);
        }
        vars.extend(self.http.iter().cloned());
        vars
    }
}

/// The head of a program's output (RFC 3875 §6.2, §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputHead {
    /// `Status:`, or 302 for a bare `Location`, else 200.
    pub status: u16,
    /// `Content-Type` (`application/octet-stream` when a body has none).
    pub content_type: String,
    /// `Content-Length`, when the program gave one.
    pub content_length: Option<usize>,
    /// Other fields to pass on (`Location` among them), in order.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, the blank line included: the body follows.
    pub head_len: usize,
}

/// Why a program's output is not a CGI response (answered 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputError {
    /// No blank line ends the head within [`MAX_OUTPUT_HEAD`] bytes, or the
    /// output ended before it.
    NoHead,
    /// A line is not `Name: value`, or a name or value holds bytes a header
    /// may not (a CR or LF smuggled into a value, say).
    BadField,
    /// `Status:` is not a three-digit code from 200 to 599 (and a reason).
    BadStatus,
    /// `Content-Length` is not a number, or one of the CGI fields repeats.
    BadLength,
    /// The head has none of `Status`, `Content-Type`, `Location`.
    NoCgiField,
}

impl OutputError {
    /// The one-line reason sent as the 502's body.
    pub fn reason(self) -> &'static str {
        match self {
            OutputError::NoHead => "CGI program wrote no header block",
            OutputError::BadField => "CGI program wrote a malformed header field",
            OutputError::BadStatus => "CGI program wrote a malformed Status",
            OutputError::BadLength => "CGI program wrote a malformed or repeated CGI field",
            OutputError::NoCgiField => "CGI program wrote no Status, Content-Type or Location",
        }
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Fields the server writes itself: a program's are dropped.
const SERVER_OWNED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "server",
    "x-worker",
];

/// Parses the head at the start of a program's output. `Ok(None)`: no
/// blank line yet (and fewer than [`MAX_OUTPUT_HEAD`] bytes). Lines end in
/// LF or CRLF (§6.3.4 allows either).
pub fn parse_output(out: &[u8]) -> Result<Option<OutputHead>, OutputError> {
    let mut head = OutputHead {
        status: 0,
        content_type: String::new(),
        content_length: None,
        headers: Vec::new(),
        head_len: 0,
    };
    let (mut pos, mut fields, mut location) = (0, 0, false);
    loop {
        let Some(nl) = out[pos..].iter().position(|&b| b == b'\n') else {
            return if out.len() > MAX_OUTPUT_HEAD {
                Err(OutputError::NoHead)
            } else {
                Ok(None)
            };
        };
        let line = &out[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if pos > MAX_OUTPUT_HEAD {
            return Err(OutputError::NoHead);
        }
        if line.is_empty() {
            break;
        }
        fields += 1;
        if fields > MAX_OUTPUT_FIELDS {
            return Err(OutputError::BadField);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(OutputError::BadField)?;
        let name = std::str::from_utf8(&line[..colon]).map_err(|_| OutputError::BadField)?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(OutputError::BadField);
        }
        let value = clean_value(&line[colon + 1..]).ok_or(OutputError::BadField)?;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("status") {
            let code = value.get(..3).and_then(|c| c.parse::<u16>().ok());
            let rest_ok = value.len() == 3 || value.as_bytes()[3] == b' ';
            match code {
                _ if head.status != 0 => return Err(OutputError::BadLength),
                Some(c) if (200..600).contains(&c) && rest_ok => head.status = c,
                _ => return Err(OutputError::BadStatus),
            }
        } else if is("content-type") {
            if !head.content_type.is_empty() {
                return Err(OutputError::BadLength);
            }
            head.content_type = value;
        } else if is("content-length") {
            let ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            match value.parse::<usize>() {
                Ok(n) if ok && head.content_length.is_none() => head.content_length = Some(n),
                _ => return Err(OutputError::BadLength),
            }
        } else if SERVER_OWNED.iter().any(|o| is(o)) {
            // The server frames the response and says who answered.
        } else {
            location |= is("location");
            head.headers.push((name.to_string(), value));
        }
    }
    if head.status == 0 && head.content_type.is_empty() && !location {
        return Err(OutputError::NoCgiField);
    }
    if head.status == 0 {
        head.status = if location { 302 } else { 200 };
    }
    if head.content_type.is_empty() {
        head.content_type = "application/octet-stream".into();
    }
    head.head_len = pos;
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(req: &ProgramRequest) -> Vec<(String, String)> {
        req.meta_variables(&Site {
            software: "iomodels-cgi",
            server_name: "127.0.0.1",
            server_port: 8080,
            remote: Some(("127.0.0.1".into(), 4000)),
            ..Site::default()
        })
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn headers_cannot_set_meta_variables() {
        let head = b"POST /echo/x%20y?a=1 HTTP/1.1\r\nHost: example.org:8080\r\n\
            Proxy: http://evil:1\r\nPath-Info: /evil\r\nPATH_INFO: /evil2\r\n\
            X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: a\r\nAccept: b\r\n\
            Content-Length: 999\r\nContent-Type: text/x\r\nAuthorization: secret\r\n\r\n";
        let req = ProgramRequest::from_http(head, "/echo/x%20y?a=1", false, b"hi").unwrap();
        let v = vars(&req);
        assert_eq!(get(&v, "PATH_INFO"), Some("/echo/x y"));
        assert_eq!(get(&v, "QUERY_STRING"), Some("a=1"));
        assert_eq!(get(&v, "CONTENT_LENGTH"), Some("2"));
        assert_eq!(get(&v, "CONTENT_TYPE"), Some("text/x"));
        assert_eq!(get(&v, "SERVER_NAME"), Some("example.org"));
        assert_eq!(get(&v, "HTTP_PROXY"), None);
        assert_eq!(get(&v, "HTTP_AUTHORIZATION"), None);
        assert_eq!(get(&v, "HTTP_PATH_INFO"), Some("/evil"));
        assert_eq!(get(&v, "HTTP_X_FORWARDED_FOR"), Some("1.2.3.4"));
        assert_eq!(get(&v, "HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(v.iter().filter(|(n, _)| n == "PATH_INFO").count(), 1);
        assert!(v.iter().all(|(_, val)| !val.contains("evil2")));
    }

    #[test]
    fn control_characters_in_the_path_are_refused() {
        for target in ["/a%0a.php", "/a%00", "/a%7f", "/a%zz", "/a%0", "/%ff"] {
            let r = ProgramRequest::from_http(b"GET / HTTP/1.1\r\n\r\n", target, false, b"");
            assert_eq!(r, Err(RequestError::BadPath), "{target}");
        }
    }

    #[test]
    fn fcgi_front_end_cannot_set_path_info_or_proxy() {
        let mut p = Vec::new();
        for (n, v) in [
            ("PATH_INFO", "/evil"),
            ("SCRIPT_NAME", "/evil"),
            ("HTTP_PROXY", "http://evil:1"),
            ("HTTP_X_A", "ok"),
            ("HTTP_x-b", "bad name"),
            ("REMOTE_ADDR", "not an ip"),
        ] {
            crate::fcgi::push_name_value(&mut p, n.as_bytes(), v.as_bytes());
        }
        let req = ProgramRequest::from_fcgi(&p, "GET", "/hello", b"").unwrap();
        let v = vars(&req);
        assert_eq!(get(&v, "PATH_INFO"), Some("/hello"));
        assert_eq!(get(&v, "SCRIPT_NAME"), Some(""));
        assert_eq!(get(&v, "HTTP_PROXY"), None);
        assert_eq!(get(&v, "HTTP_X_A"), Some("ok"));
        assert_eq!(get(&v, "HTTP_x-b"), None);
        assert_eq!(get(&v, "REMOTE_ADDR"), Some("127.0.0.1"));
    }

    #[test]
    fn output_heads() {
        let h = parse_output(b"Status: 404 Not Found\nContent-Type: text/plain\nX-A: 1\n\nbody")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.content_type.as_str()), (404, "text/plain"));
        assert_eq!(h.headers, vec![("X-A".to_string(), "1".to_string())]);
        assert_eq!(h.head_len, 55);
        let h = parse_output(b"Location: http://x/\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 302);
        let h = parse_output(b"Content-type: a/b\r\nContent-Length: 5\r\nServer: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.content_length), (200, Some(5)));
        assert!(h.headers.is_empty());
        assert_eq!(parse_output(b"Content-Type: a/b\r\n"), Ok(None));
        for (bad, err) in [
            (&b"Hello, World!\n\n"[..], OutputError::BadField),
            (b"Status: abc\n\n", OutputError::BadStatus),
            (b"Status: 100 Continue\n\n", OutputError::BadStatus),
            (
                b"Content-Length: -1\nContent-Type: a\n\n",
                OutputError::BadLength,
            ),
            (b"X-A: 1\n\n", OutputError::NoCgiField),
            (b"Bad Name: 1\n\n", OutputError::BadField),
            (b"X-A: a\x01b\nStatus: 200\n\n", OutputError::BadField),
        ] {
            assert_eq!(
                parse_output(bad),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_output(&[b'x'; MAX_OUTPUT_HEAD + 1]),
            Err(OutputError::NoHead)
        );
    }
}
