//! Framing for the unix socket pairs between a front end and its worker
//! processes (swoole-server's reactors and workers, workers and task
//! workers): each message is one frame, `[len u32][token u32][gen u32]
//! [flags u8]` (little-endian) and `len` bytes of payload — a whole request
//! in its own protocol one way, the whole response the other.
//!
//! `token` names the front end's connection and `gen` its generation, so an
//! answer that comes back after its connection closed (and the slot was
//! reused) is recognised and dropped.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

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

/// A unix stream socket pair, both ends close-on-exec.
pub fn socket_pair() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| anyhow::anyhow!("socketpair: {e}"))
}

/// Reads one frame from a blocking socket, or `None` at EOF.
pub fn read(fd: &impl AsFd) -> nix::Result<Option<(Head, Vec<u8>)>> {
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

/// Writes one frame to a blocking socket.
pub fn write(fd: &impl AsFd, head: Head, payload: &[u8]) -> nix::Result<()> {
    let mut frame = Vec::with_capacity(HEAD + payload.len());
    push(&mut frame, head, payload);
    write_all(fd, &frame)
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
        let (a, b) = socket_pair().unwrap();
        write(&a, head, b"payload").unwrap();
        assert_eq!(read(&b).unwrap(), Some((head, b"payload".to_vec())));
        drop(a);
        assert_eq!(read(&b).unwrap(), None);
    }
}
