//! FastCGI 1.0 records, both sides, without I/O.
//!
//! Written here because no maintained sans-IO crate exists. A record is an
//! 8-byte header (version, type, request id, content length, padding
//! length, reserved) followed by content and padding. Every length read from
//! the wire is checked against the bytes present before anything is sliced
//! or allocated, so a hostile peer can make us wait for at most one record
//! (8 + 65,535 + 255 bytes), never make us allocate more.

use std::fmt;

/// The only protocol version.
pub const VERSION: u8 = 1;
/// Record header length.
pub const HEADER_LEN: usize = 8;
/// Largest content of one record.
pub const MAX_CONTENT: usize = 0xffff;
/// Largest whole record (header, content, padding).
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CONTENT + 0xff;
/// Total PARAMS bytes accepted for one request.
pub const MAX_PARAMS: usize = 64 * 1024;
/// Total STDIN bytes accepted for one request.
pub const MAX_STDIN: usize = 1 << 20;

/// `FCGI_BEGIN_REQUEST`.
pub const BEGIN_REQUEST: u8 = 1;
/// `FCGI_ABORT_REQUEST`.
pub const ABORT_REQUEST: u8 = 2;
/// `FCGI_END_REQUEST`.
pub const END_REQUEST: u8 = 3;
/// `FCGI_PARAMS`.
pub const PARAMS: u8 = 4;
/// `FCGI_STDIN`.
pub const STDIN: u8 = 5;
/// `FCGI_STDOUT`.
pub const STDOUT: u8 = 6;
/// `FCGI_STDERR`.
pub const STDERR: u8 = 7;
/// `FCGI_DATA`.
pub const DATA: u8 = 8;
/// `FCGI_GET_VALUES`.
pub const GET_VALUES: u8 = 9;
/// `FCGI_GET_VALUES_RESULT`.
pub const GET_VALUES_RESULT: u8 = 10;
/// `FCGI_UNKNOWN_TYPE`.
pub const UNKNOWN_TYPE: u8 = 11;

/// `FCGI_RESPONDER`, the only role served.
pub const ROLE_RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN` flag of BEGIN_REQUEST.
pub const FLAG_KEEP_CONN: u8 = 1;

/// END_REQUEST protocol status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE`.
    RequestComplete = 0,
    /// `FCGI_CANT_MPX_CONN`: a second request on a connection that serves one at a time.
    CantMpxConn = 1,
    /// `FCGI_OVERLOADED`: out of a resource (connections, workers).
    Overloaded = 2,
    /// `FCGI_UNKNOWN_ROLE`: a role other than responder.
    UnknownRole = 3,
}

impl ProtocolStatus {
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<ProtocolStatus> {
        Some(match b {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            _ => return None,
        })
    }
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Record type.
    pub kind: u8,
    /// Request id (0 for management records).
    pub id: u16,
    /// Content length.
    pub content_len: u16,
    /// Padding length.
    pub padding_len: u8,
}

/// A protocol violation: the connection cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// A version byte other than 1.
    Version(u8),
    /// A record whose content is not what its type requires.
    Malformed,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Version(v) => write!(f, "FastCGI version {v} (only 1 exists)"),
            RecordError::Malformed => f.write_str("malformed FastCGI record"),
        }
    }
}

impl std::error::Error for RecordError {}

/// One record, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its header.
    pub header: Header,
    /// Its content (padding left out).
    pub content: &'a [u8],
    /// Bytes of input it used, padding included.
    pub len: usize,
}

/// Reads the record at the start of `input`: `Ok(None)` until it is whole.
pub fn parse_record(input: &[u8]) -> Result<Option<Record<'_>>, RecordError> {
    let Some(h) = input.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    if h[0] != VERSION {
        return Err(RecordError::Version(h[0]));
    }
    let header = Header {
        kind: h[1],
        id: u16::from_be_bytes([h[2], h[3]]),
        content_len: u16::from_be_bytes([h[4], h[5]]),
        padding_len: h[6],
    };
    let content_end = HEADER_LEN + header.content_len as usize;
    let len = content_end + header.padding_len as usize;
    if input.len() < len {
        return Ok(None);
    }
    Ok(Some(Record {
        header,
        content: &input[HEADER_LEN..content_end],
        len,
    }))
}

/// Appends a record header.
pub fn push_header(out: &mut Vec<u8>, kind: u8, id: u16, content_len: usize, padding_len: u8) {
    debug_assert!(content_len <= MAX_CONTENT);
    let [i0, i1] = id.to_be_bytes();
    let [l0, l1] = (content_len as u16).to_be_bytes();
    out.extend_from_slice(&[VERSION, kind, i0, i1, l0, l1, padding_len, 0]);
}

/// Appends `content` as records of `kind`, split at 65,535 bytes. Empty
/// content writes nothing (the end-of-stream record is [`push_header`] with 0).
pub fn push_stream(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    for chunk in content.chunks(MAX_CONTENT) {
        push_header(out, kind, id, chunk.len(), 0);
        out.extend_from_slice(chunk);
    }
}

/// Appends a BEGIN_REQUEST record for the responder role.
pub fn push_begin_request(out: &mut Vec<u8>, id: u16, keep_conn: bool) {
    push_header(out, BEGIN_REQUEST, id, 8, 0);
    let [r0, r1] = ROLE_RESPONDER.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    out.extend_from_slice(&[r0, r1, flags, 0, 0, 0, 0, 0]);
}

/// Appends an END_REQUEST record.
pub fn push_end_request(out: &mut Vec<u8>, id: u16, app_status: u32, status: ProtocolStatus) {
    push_header(out, END_REQUEST, id, 8, 0);
    out.extend_from_slice(&app_status.to_be_bytes());
    out.extend_from_slice(&[status as u8, 0, 0, 0]);
}

/// Appends an UNKNOWN_TYPE record answering a record of type `kind`.
pub fn push_unknown_type(out: &mut Vec<u8>, kind: u8) {
    push_header(out, UNKNOWN_TYPE, 0, 8, 0);
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
}

/// Appends one name-value pair in its wire form (1- or 4-byte lengths).
pub fn push_name_value(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Iterates the name-value pairs of PARAMS or GET_VALUES content. Each
/// length is checked against what is left before it is used.
#[derive(Debug, Clone)]
pub struct NameValues<'a> {
    rest: &'a [u8],
}

impl<'a> NameValues<'a> {
    /// Pairs in `content`.
    pub fn new(content: &'a [u8]) -> Self {
        NameValues { rest: content }
    }

    fn length(&mut self) -> Option<usize> {
        let first = *self.rest.first()?;
        if first < 0x80 {
            self.rest = &self.rest[1..];
            Some(first as usize)
        } else {
            let b = self.rest.first_chunk::<4>()?;
            let n = u32::from_be_bytes(*b) & 0x7fff_ffff;
            self.rest = &self.rest[4..];
            Some(n as usize)
        }
    }
}

impl<'a> Iterator for NameValues<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let pair = (|| {
            let n = self.length()?;
            let v = self.length()?;
            if self.rest.len() < n.checked_add(v)? {
                return None;
            }
            let (name, rest) = self.rest.split_at(n);
            let (value, rest) = rest.split_at(v);
            self.rest = rest;
            Some((name, value))
        })();
        match pair {
            Some(p) => Some(Ok(p)),
            None => {
                self.rest = &[];
                Some(Err(RecordError::Malformed))
            }
        }
    }
}

/// The CGI meta-variables a request needs, picked from PARAMS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgiRequest<'a> {
    /// `REQUEST_METHOD`.
    pub method: &'a str,
    /// `REQUEST_URI`.
    pub request_uri: Option<&'a str>,
    /// `SCRIPT_NAME`.
    pub script_name: &'a str,
    /// `PATH_INFO`.
    pub path_info: &'a str,
    /// `QUERY_STRING`.
    pub query_string: &'a str,
}

impl<'a> CgiRequest<'a> {
    /// Picks the variables out of the PARAMS stream. Non-UTF-8 values of the
    /// variables used are malformed.
    pub fn from_params(params: &'a [u8]) -> Result<CgiRequest<'a>, RecordError> {
        let mut req = CgiRequest {
            method: "GET",
            ..CgiRequest::default()
        };
        for pair in NameValues::new(params) {
            let (name, value) = pair?;
            let slot = match name {
                b"REQUEST_METHOD" => &mut req.method,
                b"SCRIPT_NAME" => &mut req.script_name,
                b"PATH_INFO" => &mut req.path_info,
                b"QUERY_STRING" => &mut req.query_string,
                b"REQUEST_URI" => {
                    let v = std::str::from_utf8(value).map_err(|_| RecordError::Malformed)?;
                    req.request_uri = Some(v);
                    continue;
                }
                _ => continue,
            };
            *slot = std::str::from_utf8(value).map_err(|_| RecordError::Malformed)?;
        }
        Ok(req)
    }

    /// The request target: `REQUEST_URI` when present, else
    /// `SCRIPT_NAME + PATH_INFO + ? + QUERY_STRING`.
    pub fn target(&self) -> std::borrow::Cow<'a, str> {
        match self.request_uri {
            Some(uri) if !uri.is_empty() => uri.into(),
            _ if self.query_string.is_empty() => {
                format!("{}{}", self.script_name, self.path_info).into()
            }
            _ => format!(
                "{}{}?{}",
                self.script_name, self.path_info, self.query_string
            )
            .into(),
        }
    }
}

/// Appends GET_VALUES_RESULT answering the GET_VALUES `content`: the known
/// variables asked for, with this server's values.
pub fn push_get_values_result(out: &mut Vec<u8>, content: &[u8], max_conns: u64, max_reqs: u64) {
    let mut body = Vec::new();
    for (name, _) in NameValues::new(content).map_while(Result::ok) {
        let value = match name {
            b"FCGI_MAX_CONNS" => max_conns.to_string(),
            b"FCGI_MAX_REQS" => max_reqs.to_string(),
            b"FCGI_MPXS_CONNS" => "0".to_string(),
            _ => continue,
        };
        push_name_value(&mut body, name, value.as_bytes());
    }
    push_header(out, GET_VALUES_RESULT, 0, body.len(), 0);
    out.extend_from_slice(&body);
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Appends a whole responder request: BEGIN_REQUEST, PARAMS (and their
/// end), STDIN (and its end). `extra` are more PARAMS pairs.
pub fn encode_request(
    out: &mut Vec<u8>,
    id: u16,
    keep_conn: bool,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) {
    push_begin_request(out, id, keep_conn);
    let (path, query) = crate::routes::split_target(target);
    let mut params = Vec::with_capacity(128 + target.len() * 2);
    let len = body.len().to_string();
    let pairs = [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", target),
        ("SCRIPT_NAME", path),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", &len),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
    ];
    for (n, v) in pairs.iter().chain(extra) {
        push_name_value(&mut params, n.as_bytes(), v.as_bytes());
    }
    push_stream(out, PARAMS, id, &params);
    push_header(out, PARAMS, id, 0, 0);
    push_stream(out, STDIN, id, body);
    push_header(out, STDIN, id, 0, 0);
}

/// A response as a FastCGI client sees it once END_REQUEST has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Request id.
    pub id: u16,
    /// From the CGI `Status:` header (200 when absent, as CGI says).
    pub status: u16,
    /// END_REQUEST's protocol status.
    pub protocol_status: ProtocolStatus,
    /// END_REQUEST's application status.
    pub app_status: u32,
    /// Bytes of input this response used.
    pub len: usize,
}

impl ClientResponse {
    /// The status this response stands for: its `Status:` when the
    /// application completed the request; 0 (no answer) for any other
    /// END_REQUEST (overloaded, can't multiplex, unknown role), which a
    /// client counts as a status error.
    pub fn answered_status(&self) -> u16 {
        if self.protocol_status == ProtocolStatus::RequestComplete {
            self.status
        } else {
            0
        }
    }
}

/// Why a FastCGI response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// A record that breaks the protocol.
    Record(RecordError),
    /// STDOUT did not start with a valid CGI header block.
    BadCgiHead,
    /// An END_REQUEST protocol status that does not exist.
    BadEndRequest,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Record(e) => e.fmt(f),
            ClientError::BadCgiHead => f.write_str("STDOUT without a valid CGI header block"),
            ClientError::BadEndRequest => {
                f.write_str("END_REQUEST with an unknown protocol status")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Reads responses from a FastCGI application: feed it the input from the
/// start of a response; it collects STDOUT in a buffer it keeps (and reuses)
/// and returns the response at END_REQUEST. Nothing is allocated per
/// response once the buffer has grown to the largest response.
#[derive(Debug, Default)]
pub struct ResponseReader {
    stdout: Vec<u8>,
    used: usize,
    body_start: usize,
    worker: Option<std::ops::Range<usize>>,
}

impl ResponseReader {
    /// A reader with no response in progress.
    pub fn new() -> Self {
        ResponseReader::default()
    }

    /// Reads records from `input` (which starts where the previous call's
    /// finished response ended, or where the last call left off — pass the
    /// same unconsumed input again: it remembers how far it got). Returns the
    /// response once END_REQUEST arrived; [`ResponseReader::body`] then holds
    /// its body until the next call.
    pub fn read(&mut self, input: &[u8]) -> Result<Option<ClientResponse>, ClientError> {
        if self.used == 0 {
            self.stdout.clear();
            self.body_start = 0;
            self.worker = None;
        }
        loop {
            let rest = &input[self.used..];
            let Some(rec) = parse_record(rest).map_err(ClientError::Record)? else {
                return Ok(None);
            };
            self.used += rec.len;
            match rec.header.kind {
                STDOUT => self.stdout.extend_from_slice(rec.content),
                END_REQUEST => {
                    let c = rec.content;
                    if c.len() < 8 {
                        return Err(ClientError::Record(RecordError::Malformed));
                    }
                    let app_status = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    let protocol_status =
                        ProtocolStatus::from_u8(c[4]).ok_or(ClientError::BadEndRequest)?;
                    let status = if self.stdout.is_empty() {
                        0
                    } else {
                        self.parse_cgi_head()?
                    };
                    let len = self.used;
                    self.used = 0;
                    return Ok(Some(ClientResponse {
                        id: rec.header.id,
                        status,
                        protocol_status,
                        app_status,
                        len,
                    }));
                }
                // STDERR, management answers: not part of the response.
                _ => {}
            }
        }
    }

    fn parse_cgi_head(&mut self) -> Result<u16, ClientError> {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let (head_len, fields) = match httparse::parse_headers(&self.stdout, &mut fields) {
            Ok(httparse::Status::Complete((n, f))) => (n, f),
            _ => return Err(ClientError::BadCgiHead),
        };
        let mut status = 200;
        let base = self.stdout.as_ptr() as usize;
        for f in fields {
            if f.name.eq_ignore_ascii_case("status") {
                let v = std::str::from_utf8(f.value).map_err(|_| ClientError::BadCgiHead)?;
                let code = v.split_whitespace().next().unwrap_or("");
                status = code.parse().map_err(|_| ClientError::BadCgiHead)?;
            } else if f.name.eq_ignore_ascii_case("x-worker") {
                // The value borrows from `stdout`: keep where it is.
                let start = f.value.as_ptr() as usize - base;
                self.worker = Some(start..start + f.value.len());
            }
        }
        self.body_start = head_len;
        Ok(status)
    }

    /// The `X-Worker` header of the response last returned, if any.
    pub fn worker(&self) -> Option<&[u8]> {
        self.worker.clone().and_then(|r| self.stdout.get(r))
    }

    /// The body of the response last returned by [`ResponseReader::read`].
    pub fn body(&self) -> &[u8] {
        &self.stdout[self.body_start.min(self.stdout.len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_values_both_length_forms() {
        let mut buf = Vec::new();
        let long = vec![b'v'; 300];
        push_name_value(&mut buf, b"A", b"b");
        push_name_value(&mut buf, b"LONG", &long);
        let pairs: Vec<_> = NameValues::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            pairs,
            vec![(&b"A"[..], &b"b"[..]), (&b"LONG"[..], &long[..])]
        );
    }

    #[test]
    fn name_value_lengths_checked() {
        // Claims a 2 GiB name with four bytes present: an error, no allocation.
        let evil = [0xff, 0xff, 0xff, 0xff, 0x01, b'a'];
        assert_eq!(
            NameValues::new(&evil).next(),
            Some(Err(RecordError::Malformed))
        );
        assert_eq!(
            NameValues::new(&[5, 1, b'a']).next(),
            Some(Err(RecordError::Malformed))
        );
        assert_eq!(
            NameValues::new(&[0x80, 0]).next(),
            Some(Err(RecordError::Malformed))
        );
    }

    #[test]
    fn records() {
        assert_eq!(parse_record(&[1, 1, 0]), Ok(None));
        assert_eq!(
            parse_record(&[2, 1, 0, 1, 0, 0, 0, 0]),
            Err(RecordError::Version(2))
        );
        let mut buf = Vec::new();
        push_header(&mut buf, STDIN, 3, 2, 6);
        buf.extend_from_slice(b"hi");
        assert_eq!(parse_record(&buf), Ok(None));
        buf.extend_from_slice(&[0; 6]);
        let r = parse_record(&buf).unwrap().unwrap();
        assert_eq!(
            (r.header.kind, r.header.id, r.content, r.len),
            (STDIN, 3, &b"hi"[..], 16)
        );
    }

    #[test]
    fn target_from_params() {
        let mut p = Vec::new();
        push_name_value(&mut p, b"SCRIPT_NAME", b"/cpu");
        push_name_value(&mut p, b"QUERY_STRING", b"n=1");
        let r = CgiRequest::from_params(&p).unwrap();
        assert_eq!((r.method, r.target().as_ref()), ("GET", "/cpu?n=1"));
        push_name_value(&mut p, b"REQUEST_URI", b"/hello");
        push_name_value(&mut p, b"REQUEST_METHOD", b"POST");
        let r = CgiRequest::from_params(&p).unwrap();
        assert_eq!((r.method, r.target().as_ref()), ("POST", "/hello"));
    }

    #[test]
    fn client_reads_response() {
        let mut wire = Vec::new();
        push_stream(
            &mut wire,
            STDOUT,
            1,
            b"Status: 404 Not Found\r\nX-Worker: 9\r\n\r\nnope",
        );
        push_header(&mut wire, STDOUT, 1, 0, 0);
        push_end_request(&mut wire, 1, 0, ProtocolStatus::RequestComplete);
        let mut r = ResponseReader::new();
        assert_eq!(r.read(&wire[..20]), Ok(None));
        let resp = r.read(&wire).unwrap().unwrap();
        assert_eq!(
            (resp.status, r.worker(), resp.len),
            (404, Some(&b"9"[..]), wire.len())
        );
        assert_eq!(r.body(), b"nope");
    }
}
