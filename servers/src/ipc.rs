//! Framing for the unix socket pairs between a front end and its worker
//! processes (swoole-server's reactors and workers, workers and task
//! workers): each message is one frame, `[len u32][token u32][gen u32]
//! [flags u8]` (little-endian) and `len` bytes of payload — a whole request
//! in its own protocol one way, the whole response the other.
//!
//! `token` names the front end's connection and `gen` its generation, so an
//! answer that comes back after its connection closed (and the slot was
//! reused) is recognised and dropped.
//!
//! **Two kinds of pair** ([`Kind`]). A *stream* pair carries frames back to
//! back: a reader may get part of a frame, or several, and finds the ends
//! from the lengths (a blocking reader reads the header, then the payload:
//! two `read`s a frame). A *message* pair (`SOCK_DGRAM`, as Swoole's
//! reactor ↔ worker pipes are, or `SOCK_SEQPACKET`) keeps boundaries: one
//! `recv` returns one datagram, never part of one, so a frame that fits in
//! a datagram costs one `send` and one `recv`. A datagram cannot be larger
//! than the socket's send buffer, so a frame longer than [`CHUNK`] goes as
//! several datagrams in a row (Swoole splits its messages the same way, in
//! pieces of the pair's SO_SNDBUF less a header); each end has one writer
//! and a writer sends a frame's datagrams before the next frame's, so a
//! reader appends datagrams until the frame is whole.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType};

/// Bytes of a frame's header.
pub const HEAD: usize = 13;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The front end's connection.
    pub token: u32,
    /// Its generation.
    pub gen: u32,
    /// What the two ends agree on (swoole-server: "offload to a task worker").
    pub flags: u8,
}

/// Appends one frame.
pub fn push(out: &mut Vec<u8>, head: Head, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&head.token.to_le_bytes());
    out.extend_from_slice(&head.gen.to_le_bytes());
    out.push(head.flags);
    out.extend_from_slice(payload);
}

/// A whole frame at the start of `buf`: its header and where it ends (the
/// payload is `buf[HEAD..end]`); `None` until it is all there.
pub fn parse(buf: &[u8]) -> Option<(Head, usize)> {
    let (head, len) = decode(buf.first_chunk::<HEAD>()?);
    let end = HEAD + len;
    (buf.len() >= end).then_some((head, end))
}

/// A header's fields and the payload length.
fn decode(h: &[u8; HEAD]) -> (Head, usize) {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let head = Head {
        token: word(4),
        gen: word(8),
        flags: h[12],
    };
    (head, word(0) as usize)
}

/// The largest datagram a message pair carries (a frame longer than this
/// goes in several); a reader of a message pair reads with a buffer this
/// large, or a datagram would be cut short.
pub const CHUNK: usize = 64 * 1024;

/// What kind of socket pair carries the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SOCK_STREAM`: a byte stream, frames found by their lengths.
    Stream,
    /// `SOCK_DGRAM`: one frame (or chunk) per datagram; a closed peer is
    /// not reported to the reader (no end of file on a datagram socket).
    Dgram,
    /// `SOCK_SEQPACKET`: datagrams in a connection: boundaries kept, and
    /// end of file when the peer closes.
    SeqPacket,
}

/// A unix socket pair of `kind`, both ends close-on-exec. A message pair
/// gets a send buffer that holds a few chunks (the kernel caps it at
/// `net.core.wmem_max`); if even one chunk would not fit, that is an error.
pub fn socket_pair(kind: Kind) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        Kind::Stream => SockType::Stream,
        Kind::Dgram => SockType::Datagram,
        Kind::SeqPacket => SockType::SeqPacket,
    };
    let (a, b) = socket::socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| anyhow::anyhow!("socketpair: {e}"))?;
    if kind != Kind::Stream {
        for fd in [&a, &b] {
            let _ = socket::setsockopt(fd, sockopt::SndBuf, &(4 * CHUNK));
            let got = socket::getsockopt(fd, sockopt::SndBuf)
                .map_err(|e| anyhow::anyhow!("getsockopt(SO_SNDBUF): {e}"))?;
            // The kernel keeps 32 bytes of a datagram socket's buffer back.
            anyhow::ensure!(
                got >= CHUNK + HEAD + 32,
                "a unix datagram socket's send buffer is {got} bytes here, less than one {CHUNK}-byte chunk (net.core.wmem_max)"
            );
        }
    }
    Ok((a, b))
}

/// Frames waiting to go out on a non-blocking pair: for a stream, bytes
/// back to back (written as far as the socket takes them); for a message
/// pair, one datagram each (a datagram goes whole or not at all).
#[derive(Debug)]
pub struct Outbox {
    kind: Kind,
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the front buffer already written (streams only).
    sent: usize,
}

impl Outbox {
    pub fn new(kind: Kind) -> Outbox {
        Outbox {
            kind,
            queue: VecDeque::new(),
            sent: 0,
        }
    }

    /// Queues one frame (as [`CHUNK`]-sized datagrams on a message pair).
    pub fn push(&mut self, head: Head, payload: &[u8]) {
        let mut frame = Vec::with_capacity(HEAD + payload.len());
        push(&mut frame, head, payload);
        match (self.kind, self.queue.back_mut()) {
            (Kind::Stream, Some(back)) => back.extend_from_slice(&frame),
            (Kind::Stream, None) => self.queue.push_back(frame),
            _ if frame.len() <= CHUNK => self.queue.push_back(frame),
            _ => self.queue.extend(frame.chunks(CHUNK).map(<[u8]>::to_vec)),
        }
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes what the socket takes; `Ok` when it would block or all went.
    pub fn flush(&mut self, fd: &impl AsFd) -> nix::Result<()> {
        while let Some(front) = self.queue.front() {
            match nix::unistd::write(fd, &front[self.sent..]) {
                Ok(n) if self.sent + n < front.len() => self.sent += n, // streams only
                Ok(_) => {
                    self.queue.pop_front();
                    self.sent = 0;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads one frame from a blocking socket of `kind`, or `None` at EOF.
pub fn read(fd: &impl AsFd, kind: Kind) -> nix::Result<Option<(Head, Vec<u8>)>> {
    if kind != Kind::Stream {
        return read_datagrams(fd);
    }
    let mut head = [0u8; HEAD];
    if !read_exact(fd, &mut head)? {
        return Ok(None);
    }
    let (parsed, len) = decode(&head);
    let mut payload = vec![0u8; len];
    if !read_exact(fd, &mut payload)? {
        return Err(Errno::EPIPE);
    }
    Ok(Some((parsed, payload)))
}

thread_local! {
    /// A message pair's receive buffer: one per thread, allocated once.
    static DATAGRAM: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// Reads one frame from a blocking message pair: datagrams until it is
/// whole (one, unless the frame is longer than a chunk).
fn read_datagrams(fd: &impl AsFd) -> nix::Result<Option<(Head, Vec<u8>)>> {
    DATAGRAM.with_borrow_mut(|buf| {
        let mut frame: Vec<u8> = Vec::new();
        loop {
            let n = match nix::unistd::read(fd, buf) {
                Ok(0) if frame.is_empty() => return Ok(None),
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            };
            if frame.is_empty() {
                // The usual case: the whole frame in one datagram.
                if let Some((head, end)) = parse(&buf[..n]) {
                    return whole(head, end, &buf[..n]);
                }
            }
            frame.extend_from_slice(&buf[..n]);
            if let Some((head, end)) = parse(&frame) {
                return whole(head, end, &frame);
            }
        }
    })
}

/// The frame read: exactly `end` bytes, or the writer broke the rule.
fn whole(head: Head, end: usize, got: &[u8]) -> nix::Result<Option<(Head, Vec<u8>)>> {
    if got.len() != end {
        return Err(Errno::EPROTO);
    }
    Ok(Some((head, got[HEAD..end].to_vec())))
}

/// Writes one frame to a blocking socket of `kind`.
pub fn write(fd: &impl AsFd, kind: Kind, head: Head, payload: &[u8]) -> nix::Result<()> {
    let mut frame = Vec::with_capacity(HEAD + payload.len());
    push(&mut frame, head, payload);
    if kind == Kind::Stream {
        return write_all(fd, &frame);
    }
    for datagram in frame.chunks(CHUNK) {
        loop {
            match nix::unistd::write(fd, datagram) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Fills `buf` from a blocking descriptor; `Ok(false)` at EOF before any byte.
pub fn read_exact(fd: &impl AsFd, buf: &mut [u8]) -> nix::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf` to a blocking descriptor.
pub fn write_all(fd: &impl AsFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_a_socket_pair() {
        let head = Head {
            token: 7,
            gen: 3,
            flags: 1,
        };
        let mut buf = Vec::new();
        push(&mut buf, head, b"abc");
        assert_eq!(parse(&buf[..HEAD + 2]), None, "not whole yet");
        assert_eq!(parse(&buf), Some((head, HEAD + 3)));
        let (a, b) = socket_pair(Kind::Stream).unwrap();
        write(&a, Kind::Stream, head, b"payload").unwrap();
        assert_eq!(
            read(&b, Kind::Stream).unwrap(),
            Some((head, b"payload".to_vec()))
        );
        drop(a);
        assert_eq!(read(&b, Kind::Stream).unwrap(), None);
    }

    #[test]
    fn a_frame_longer_than_a_datagram_goes_in_chunks() {
        let head = Head {
            token: 1,
            gen: 2,
            flags: 0,
        };
        let big: Vec<u8> = (0..CHUNK * 2 + 5).map(|i| i as u8).collect();
        for kind in [Kind::Dgram, Kind::SeqPacket] {
            let (a, b) = socket_pair(kind).unwrap();
            let reader = std::thread::spawn(move || {
                let first = read(&b, kind).unwrap().unwrap();
                let second = read(&b, kind).unwrap().unwrap();
                (first, second)
            });
            write(&a, kind, head, &big).unwrap();
            let mut out = Outbox::new(kind);
            out.push(head, b"small");
            out.flush(&a).unwrap();
            assert!(out.is_empty());
            let (first, second) = reader.join().unwrap();
            assert_eq!(first, (head, big.clone()), "{kind:?}");
            assert_eq!(second, (head, b"small".to_vec()), "{kind:?}");
        }
    }
}
