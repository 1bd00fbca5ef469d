//! # iomodels-workload
//!
//! What the bytes mean, with no I/O at all: every server model and the load
//! generator share this crate, so no model parses or formats a protocol by
//! itself.
//!
//! * [`http`] — HTTP/1.1 request heads (httparse), response framing, and the
//!   client side (request encoding, response parsing).
//! * [`fcgi`] — the FastCGI 1.0 record codec, both sides.
//! * [`routes`] — the routes (`/hello`, `/cpu`, `/wait`, `/bytes`, `/file`,
//!   `/echo`, `/status`), their deterministic bodies and [`routes::verify`].
//! * [`cgi`] — CGI/1.1 (RFC 3875): a request's meta-variables from checked
//!   values, and the head of a program's output.
//! * [`conn`] — the per-connection state machine models drive: bytes and the
//!   time in, bytes to write, deadlines and "close" out.

pub mod cgi;
pub mod conn;
pub mod fcgi;
pub mod http;
pub mod routes;

pub use conn::{
    identity_headers, refusal, Conn, FileRequest, Host, ProgramExit, Protocol, Relay, Timeouts,
    WINDOW,
};
pub use routes::{verify, Expectation, Status, VerifyError};

#[cfg(test)]
mod tests;
