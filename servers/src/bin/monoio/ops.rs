//! A connection's requests in flight on monoio: at most one receive and
//! one send at a time, each a future that owns its half of the socket and
//! its buffer until the kernel has finished with them.
//!
//! This is the completion model's rule as uring-server's `ring.rs` states
//! it, in async form: the kernel writes a receive's buffer and reads a
//! send's bytes *after* `io_uring_enter` returned, so the buffer must be
//! owned by the request (monoio's "rent" API: `read(buf)` takes the buffer
//! and gives it back with the result), never borrowed. A request is never
//! dropped half-way while the connection lives: dropping one makes monoio
//! submit `IORING_OP_ASYNC_CANCEL`, and bytes a receive had already taken
//! would be lost. So a receive stays armed across turns of the loop, even
//! while the state machine holds input back (what it then receives, at most
//! one buffer, the state machine keeps).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Split, Splitable};

/// Bytes one receive asks for. The buffer belongs to the connection for
/// its whole life: monoio has no shared pool of receive buffers here
/// (uring-server's provided-buffer ring gives idle connections none).
const RECV_BUF: usize = 8 * 1024;

/// A request in flight: it gives back the half, the result and the buffer.
type InFlight<H> = Pin<Box<dyn Future<Output = (H, io::Result<usize>, Vec<u8>)>>>;

/// A half of the socket with its buffer: idle, or in a request in flight.
enum Half<H> {
    Idle(H, Vec<u8>),
    Busy(InFlight<H>),
}

/// What completed.
pub enum Done {
    /// A receive: bytes (in [`Ops::received`]), 0 at EOF, or an error.
    Received(io::Result<usize>),
    /// A send: how many bytes went, or an error.
    Sent(io::Result<usize>),
}

/// One connection's socket as requests in flight.
pub struct Ops<S: AsyncWriteRent> {
    read: Option<Half<OwnedReadHalf<S>>>,
    write: Option<Half<OwnedWriteHalf<S>>>,
}

impl<S> Ops<S>
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    /// A connection's socket, split so that a receive and a send can be in
    /// flight at once.
    pub fn new(stream: S) -> Ops<S> {
        let (r, w) = stream.into_split();
        Ops {
            read: Some(Half::Idle(r, Vec::with_capacity(RECV_BUF))),
            write: Some(Half::Idle(w, Vec::new())),
        }
    }

    /// Queues a receive unless one is in flight (its submission entry goes
    /// to the kernel with the runtime's next `io_uring_enter`).
    pub fn recv(&mut self) {
        self.read = match self.read.take() {
            Some(Half::Idle(mut h, mut buf)) => {
                buf.clear();
                Some(Half::Busy(Box::pin(async move {
                    let (r, buf) = h.read(buf).await;
                    (h, r, buf)
                })))
            }
            busy => busy,
        };
    }

    /// Queues a send of `bytes` unless one is in flight. They are copied:
    /// the request owns them until it completes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.write = match self.write.take() {
            Some(Half::Idle(mut h, mut buf)) => {
                buf.clear();
                buf.extend_from_slice(bytes);
                Some(Half::Busy(Box::pin(async move {
                    let (r, buf) = h.write(buf).await;
                    (h, r, buf)
                })))
            }
            busy => busy,
        };
    }

    /// The bytes of the last receive that completed.
    pub fn received(&self) -> &[u8] {
        match &self.read {
            Some(Half::Idle(_, buf)) => buf,
            _ => &[],
        }
    }

    /// The next completion, if any.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Done> {
        if let Some(r) = poll_half(&mut self.write, cx) {
            return Poll::Ready(Done::Sent(r));
        }
        if let Some(r) = poll_half(&mut self.read, cx) {
            return Poll::Ready(Done::Received(r));
        }
        Poll::Pending
    }
}

/// Polls a half's request; when it completed, the half is idle again,
/// with its buffer back.
fn poll_half<H>(half: &mut Option<Half<H>>, cx: &mut Context<'_>) -> Option<io::Result<usize>> {
    let Some(Half::Busy(op)) = half else {
        return None;
    };
    let Poll::Ready((h, result, buf)) = op.as_mut().poll(cx) else {
        return None;
    };
    *half = Some(Half::Idle(h, buf));
    Some(result)
}

/// Errors after which the connection goes on (the request is queued again).
pub fn transient(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw);
    matches!(errno, Some(Errno::EINTR | Errno::EAGAIN | Errno::ECANCELED))
}
