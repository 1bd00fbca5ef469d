//! # hello-cgi — the iomodels workload as a CGI/1.1 program
//!
//! What `cgi-server` executes for each request by default: one process,
//! one request. It reads the request from its environment (RFC 3875
//! meta-variables) and stdin, and writes a CGI response (`Status:`,
//! header fields, a blank line, the body) to stdout.
//!
//! It answers every route through the workload crate, so the bodies are
//! the models' byte for byte and the load generator verifies them: the
//! meta-variables become the PARAMS of a FastCGI request (which is what
//! FastCGI's PARAMS are: the CGI environment, sent over a socket), fed to
//! a `Conn`, whose FastCGI answer is a CGI response inside STDOUT records;
//! those records' content is the program's output. `/wait` sleeps and
//! `/file` reads `DOCUMENT_ROOT`, blocking: the program is one request.
//!
//! **Run it by hand**: `REQUEST_METHOD=GET REQUEST_URI=/hello hello-cgi`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use iomodels_servers::host;
use iomodels_workload::routes::Status;
use iomodels_workload::{fcgi, Conn, Host, Protocol, Timeouts};

/// The program's host: it adds no header fields (the server says who
/// answered) and knows only its own process for `/status`.
struct Program;

impl Host for Program {
    fn response_headers(&self) -> &[u8] {
        b""
    }
    fn max_conns(&self) -> u64 {
        1
    }
    fn status(&mut self) -> Status {
        Status {
            model: "hello-cgi".into(),
            pid: std::process::id(),
            worker: std::process::id().to_string(),
            workers: 1,
            requests: 1,
            protocol: "cgi".into(),
            ..Status::default()
        }
    }
}

/// The meta-variables the workload's FastCGI side reads.
const PARAMS: &[&str] = &[
    "REQUEST_METHOD",
    "REQUEST_URI",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_LENGTH",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello-cgi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    let var = |n: &str| std::env::var(n).unwrap_or_default();
    // 1. The request: meta-variables as PARAMS, CONTENT_LENGTH bytes of stdin.
    let mut params = Vec::new();
    for name in PARAMS {
        fcgi::push_name_value(&mut params, name.as_bytes(), var(name).as_bytes());
    }
    let len: usize = var("CONTENT_LENGTH").parse().unwrap_or(0);
    let mut body = Vec::new();
    std::io::stdin()
        .take(len.min(fcgi::MAX_STDIN) as u64)
        .read_to_end(&mut body)?;
    let mut wire = Vec::new();
    fcgi::push_begin_request(&mut wire, 1, false);
    fcgi::push_stream(&mut wire, fcgi::PARAMS, 1, &params);
    fcgi::push_header(&mut wire, fcgi::PARAMS, 1, 0, 0);
    fcgi::push_stream(&mut wire, fcgi::STDIN, 1, &body);
    fcgi::push_header(&mut wire, fcgi::STDIN, 1, 0, 0);

    // 2. The workload answers it.
    let mut host = Program;
    let mut conn = Conn::new(Protocol::Fcgi, Timeouts::default(), Instant::now());
    conn.handle_input(&wire, Instant::now(), &mut host);
    let data_dir = std::path::PathBuf::from(var("DOCUMENT_ROOT"));
    let head_only = var("REQUEST_METHOD") == "HEAD";
    let mut out = std::io::stdout().lock();
    let (mut file, mut in_head) = (None, true);
    loop {
        // 3. Unwrap the STDOUT records straight from the output (it holds
        // whole records): their content is the CGI response (for HEAD, its
        // head only: RFC 3875 §4.3.3).
        let mut used = 0;
        while let Ok(Some(rec)) = fcgi::parse_record(&conn.output()[used..]) {
            used += rec.len;
            match rec.header.kind {
                fcgi::STDOUT if in_head && head_only => {
                    let end = rec.content.windows(4).position(|w| w == b"\r\n\r\n");
                    let keep = end.map_or(rec.content.len(), |e| e + 4);
                    out.write_all(&rec.content[..keep])?;
                    in_head = end.is_none();
                }
                fcgi::STDOUT if !head_only => out.write_all(rec.content)?,
                fcgi::END_REQUEST => return out.flush(),
                _ => {}
            }
        }
        conn.advance_output(used, Instant::now(), &mut host);
        // 4. A parked /wait sleeps; /file is read here, blocking.
        if let Some(until) = conn.parked_until() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            conn.handle_timeout(Instant::now(), &mut host);
        } else if let Some(request) = conn.take_file_request() {
            host::serve_file(
                &data_dir,
                request,
                &mut conn,
                &mut file,
                &mut host,
                Instant::now(),
            );
        } else if used == 0 {
            return Err(std::io::Error::other("the workload gave no answer"));
        }
    }
}
