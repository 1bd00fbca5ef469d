//! The io_uring backend of the engine (`--io uring`, the default where the
//! kernel allows it): the same slots, schedule, verification and
//! histograms as the epoll backend, with the system calls batched.
//!
//! * **One `io_uring_enter` per turn of the loop**: it submits every send
//!   and connect the turn queued and waits for completions, with the wait's
//!   own timeout (`IORING_ENTER_EXT_ARG`, to the nanosecond) as the
//!   open-loop schedule's timer and the tick: no timerfd, no `epoll_wait`,
//!   no `read`/`write` per request.
//! * **Multishot receive with a provided buffer ring**: one recv request per
//!   connection stays armed for its life; the kernel picks a 4 KiB buffer
//!   from a ring registered once when a response arrives, the engine copies
//!   the bytes into the slot's read buffer (where they are parsed and
//!   verified as in the epoll backend) and gives the buffer back.
//! * **Registered (direct) descriptors**: each socket goes into the ring's
//!   fixed file table when it is made and its own descriptor is closed, so
//!   no request looks a descriptor up; closing is an
//!   `IORING_OP_ASYNC_CANCEL` of every request on the socket (which ends
//!   the armed receive) hard-linked to an `IORING_OP_CLOSE` of the table
//!   entry, both riding on the next enter.
//! * **Set-up**: `SINGLE_ISSUER | DEFER_TASKRUN` (6.1: completions are
//!   posted only inside our wait, in one batch), else `COOP_TASKRUN`, else
//!   none. The backend needs 6.0 (multishot receive); [`available`] says
//!   why not, and the run falls back to epoll unless io_uring was asked.
//!
//! Stale completions: every connection of a slot has a generation; a
//! completion of an earlier one (a receive that ends after its socket was
//! closed, a late send) only returns what it owned (a buffer) and is not
//! reported. The kernel never reads or writes the engine's memory: sends
//! copy their bytes into buffers this module owns until their completion,
//! receives use the buffer ring, and the connect address is owned here.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use iomodels_bufring::BufRing;
use nix::errno::Errno;
use nix::sys::socket::{
    setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage,
    UnixAddr,
};
use slab::Slab;

use crate::config::Addr;

/// The buffer group of the receive buffers.
const BGID: u16 = 0;

// What a completion is for: the top byte of its user_data.
const CONNECT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const CLOSE: u64 = 4;
/// Cancels: nothing to do when they complete.
const IGNORE: u64 = u64::MAX;

/// A completion for the engine, of connection `gen` of its slot (stale
/// ones are dropped in [`Ring::wait`], and by [`Ring::current`] if the
/// connection was closed while handling an earlier one of the same batch).
#[derive(Debug)]
pub(crate) enum Completion {
    /// Slot `slot`'s connect finished.
    Connected {
        slot: usize,
        gen: u32,
        result: Result<(), Errno>,
    },
    /// Slot `slot` received bytes (buffer id and length: read them with
    /// [`Ring::bytes`], then [`Ring::give_back`]), or end of file (`None`).
    /// `more`: the receive stays armed.
    Received {
        slot: usize,
        gen: u32,
        result: Result<Option<(u16, usize)>, Errno>,
        more: bool,
    },
    /// A send of slot `slot` finished: how many bytes went.
    Sent {
        slot: usize,
        gen: u32,
        result: Result<usize, Errno>,
    },
}

/// The address connects go to, owned here: the kernel reads it after
/// `io_uring_enter` returns.
enum Sockaddr {
    Inet(SockaddrStorage),
    Unix(UnixAddr),
}

impl Sockaddr {
    fn parts(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            Sockaddr::Inet(a) => (a.as_ptr(), a.len()),
            Sockaddr::Unix(a) => (SockaddrLike::as_ptr(a), SockaddrLike::len(a)),
        }
    }
}

/// What the ring knows of one slot of the engine.
#[derive(Debug, Default, Clone, Copy)]
struct SlotIo {
    /// Generation of the slot's current connection (24 bits are used).
    gen: u32,
    /// Its entry in the fixed file table.
    fixed: Option<u32>,
    /// A connect is in flight.
    connecting: bool,
}

/// A send in flight: the bytes the kernel reads until it completes.
struct Send {
    slot: usize,
    gen: u32,
    buf: Vec<u8>,
}

/// One thread's ring.
pub(crate) struct Ring {
    /// Declared first so that it is dropped first: the kernel lets go of
    /// the buffer ring, the sends' bytes and the address before they go.
    ring: IoUring,
    bufs: BufRing,
    addr: Box<Sockaddr>,
    family: AddressFamily,
    tcp: bool,
    slots: Vec<SlotIo>,
    free_fixed: Vec<u32>,
    sends: Slab<Send>,
    spare: Vec<Vec<u8>>,
    cqes: Vec<(u64, i32, u32)>,
}

/// Whether this kernel runs the io_uring backend; `Err` says why not, in
/// one line.
pub(crate) fn available() -> Result<(), String> {
    // Declared before the ring, so dropped after it.
    let bufs = BufRing::new(4).map_err(|e| format!("mmap: {e}"))?;
    let ring = build(64).map_err(|e| format!("io_uring_setup: {e}"))?;
    check(&ring)?;
    bufs.register(&ring, BGID)
        .map_err(|e| format!("provided buffer rings (5.19): {e}"))?;
    ring.submitter()
        .register_files_sparse(4)
        .map_err(|e| format!("sparse fixed files (5.19): {e}"))
}

/// The kernel features [`Ring`] uses beyond the ring itself.
fn check(ring: &IoUring) -> Result<(), String> {
    if !ring.params().is_feature_ext_arg() {
        return Err("the kernel lacks IORING_ENTER_EXT_ARG (5.11)".into());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    for (code, name) in [
        (opcode::Connect::CODE, "IORING_OP_CONNECT"),
        (opcode::Recv::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("the kernel lacks {name}"));
        }
    }
    // Multishot receive came in 6.0; the probe does not tell it apart.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 0) {
        return Err(format!(
            "multishot receive needs Linux 6.0 (kernel {})",
            release.trim()
        ));
    }
    Ok(())
}

/// Entries of the fixed file table of a thread with `connections` slots:
/// twice the slots, since a closed connection's entry is free again only
/// once its close completed, while the slot may already reconnect.
pub(crate) fn table_size(connections: usize) -> u32 {
    (connections * 2 + 16) as u32
}

/// A ring with the best set-up flags this kernel takes.
fn build(entries: u32) -> io::Result<IoUring> {
    type Setup = fn(&mut io_uring::Builder);
    let attempts: [Setup; 3] = [
        |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_submit_all();
        },
        |b| {
            b.setup_coop_taskrun().setup_submit_all();
        },
        |_| {},
    ];
    let mut last = None;
    for setup in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(entries * 4);
        setup(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

impl Ring {
    /// A ring for `connections` slots connecting to `addr`, made on the
    /// thread that uses it (`SINGLE_ISSUER`).
    pub(crate) fn new(connections: usize, addr: &Addr) -> io::Result<Ring> {
        let entries = (connections * 4).clamp(64, 32768).next_power_of_two() as u32;
        let ring = build(entries)?;
        check(&ring).map_err(io::Error::other)?;
        let count = (connections * 2).clamp(256, 4096).next_power_of_two() as u16;
        let bufs = BufRing::new(count)?;
        bufs.register(&ring, BGID)?;
        let table = table_size(connections);
        ring.submitter().register_files_sparse(table)?;
        let (sockaddr, family, tcp) = match addr {
            Addr::Tcp(a) => (
                Sockaddr::Inet(SockaddrStorage::from(*a)),
                if a.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                },
                true,
            ),
            Addr::Unix(p) => (
                Sockaddr::Unix(UnixAddr::new(p.as_path()).map_err(io::Error::from)?),
                AddressFamily::Unix,
                false,
            ),
        };
        Ok(Ring {
            ring,
            bufs,
            addr: Box::new(sockaddr),
            family,
            tcp,
            slots: vec![SlotIo::default(); connections],
            free_fixed: (0..table).rev().collect(),
            sends: Slab::new(),
            spare: Vec::new(),
            cqes: Vec::new(),
        })
    }

    /// Opens a socket for `slot` and queues its connect; a
    /// [`Completion::Connected`] follows.
    pub(crate) fn connect(&mut self, slot: usize) -> io::Result<()> {
        let fd = socket(self.family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        if self.tcp {
            // Requests are small and latency is the measure: no Nagle.
            setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
        }
        let fixed = self.install(slot, fd)?;
        let (ptr, len) = self.addr.parts();
        let s = &mut self.slots[slot];
        s.connecting = true;
        let data = tag(CONNECT, s.gen, slot);
        self.push(
            opcode::Connect::new(Fixed(fixed), ptr, len)
                .build()
                .user_data(data),
        );
        Ok(())
    }

    /// Takes a connected socket for `slot` (the run's probe connection) and
    /// arms its receive.
    pub(crate) fn adopt(&mut self, slot: usize, fd: OwnedFd) -> io::Result<()> {
        self.install(slot, fd)?;
        self.recv(slot);
        Ok(())
    }

    /// Puts `fd` in the fixed file table for `slot` and closes the
    /// descriptor itself (the table keeps the socket).
    fn install(&mut self, slot: usize, fd: OwnedFd) -> io::Result<u32> {
        let fixed = self
            .free_fixed
            .pop()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(fixed, &[fd.as_raw_fd()])
        {
            self.free_fixed.push(fixed);
            return Err(e);
        }
        self.slots[slot].fixed = Some(fixed);
        Ok(fixed)
    }

    /// Arms `slot`'s multishot receive.
    pub(crate) fn recv(&mut self, slot: usize) {
        let s = self.slots[slot];
        if let Some(fixed) = s.fixed {
            let sqe = opcode::RecvMulti::new(Fixed(fixed), BGID).build();
            self.push(sqe.user_data(tag(RECV, s.gen, slot)));
        }
    }

    /// Queues a send of `bytes` on `slot`'s socket; they are copied into a
    /// buffer the send owns until it completes.
    pub(crate) fn send(&mut self, slot: usize, bytes: &[u8]) {
        let s = self.slots[slot];
        let Some(fixed) = s.fixed else {
            return;
        };
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.extend_from_slice(bytes);
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        let index = self.sends.insert(Send {
            slot,
            gen: s.gen,
            buf,
        });
        let sqe = opcode::Send::new(Fixed(fixed), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(sqe.user_data(SEND << 56 | index as u64));
    }

    /// Closes `slot`'s connection: every request still in flight on it (a
    /// connect, the armed receive, a send) is cancelled and its table entry
    /// closed. Completions of this connection that come later are stale.
    ///
    /// Both run inline in the next `io_uring_enter`, so the entry is free
    /// again by the end of it. (An `IORING_OP_SHUTDOWN` would end the
    /// receive too, but the kernel always hands a shutdown to an io-wq
    /// worker thread: with a new connection per request the closes then
    /// queued behind the workers, the table ran dry and connects failed
    /// with EMFILE.)
    pub(crate) fn close(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.gen = (s.gen + 1) & 0xff_ffff;
        s.connecting = false;
        let Some(fixed) = s.fixed.take() else {
            return;
        };
        // Hard-linked: the close runs even when the cancel found nothing.
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fixed(fixed)).all())
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(IGNORE);
        self.push(cancel);
        let close = opcode::Close::new(Fixed(fixed)).build();
        self.push(close.user_data(CLOSE << 56 | u64::from(fixed)));
    }

    /// One `io_uring_enter`: submits what was queued and waits up to
    /// `timeout` for at least one completion; appends the completions to
    /// `out`.
    pub(crate) fn wait(&mut self, timeout: Duration, out: &mut Vec<Completion>) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
            match e.raw_os_error() {
                // The timeout (ETIME), a signal, a full completion queue
                // (EBUSY) or short memory (EAGAIN): reap what there is.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        // Collect first: handling a completion may queue requests.
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, result, flags) in &cqes {
            if let Some(c) = self.complete(data, result, flags) {
                out.push(c);
            }
        }
        cqes.clear();
        self.cqes = cqes;
        Ok(())
    }

    /// The completion of request `data`, or `None` when it is stale or
    /// needs nothing from the engine.
    fn complete(&mut self, data: u64, result: i32, flags: u32) -> Option<Completion> {
        if data == IGNORE {
            return None;
        }
        let errno = |r: i32| Errno::from_raw(-r);
        match data >> 56 {
            SEND => {
                let Send { slot, gen, mut buf } =
                    self.sends.try_remove((data & 0xffff_ffff) as usize)?;
                buf.clear();
                if buf.capacity() <= 64 * 1024 && self.spare.len() < 64 {
                    self.spare.push(buf);
                }
                (self.slots[slot].gen == gen).then(|| Completion::Sent {
                    slot,
                    gen,
                    result: if result < 0 {
                        Err(errno(result))
                    } else {
                        Ok(result as usize)
                    },
                })
            }
            CLOSE => {
                self.free_fixed.push((data & 0xffff_ffff) as u32);
                None
            }
            kind => {
                let slot = (data & 0xffff_ffff) as usize;
                let gen = ((data >> 32) & 0xff_ffff) as u32;
                let bid = cqueue::buffer_select(flags);
                let current = self.slots.get(slot).is_some_and(|s| s.gen == gen);
                if !current {
                    if let Some(bid) = bid {
                        self.give_back(bid);
                    }
                    return None;
                }
                match kind {
                    CONNECT => {
                        self.slots[slot].connecting = false;
                        Some(Completion::Connected {
                            slot,
                            gen,
                            result: if result < 0 {
                                Err(errno(result))
                            } else {
                                Ok(())
                            },
                        })
                    }
                    RECV => Some(Completion::Received {
                        slot,
                        gen,
                        result: match (result, bid) {
                            (r, _) if r < 0 => Err(errno(r)),
                            (0, _) => Ok(None),
                            (n, Some(bid)) => Ok(Some((bid, n as usize))),
                            // Bytes without a buffer: the kernel broke its rule.
                            (_, None) => Err(Errno::EIO),
                        },
                        more: cqueue::more(flags),
                    }),
                    _ => None,
                }
            }
        }
    }

    /// `c` if its connection is still the slot's current one; else `None`
    /// (it was closed while an earlier completion of the same batch was
    /// handled), and a buffer it carried goes back to the kernel.
    pub(crate) fn current(&mut self, c: Completion) -> Option<Completion> {
        let (slot, gen) = match c {
            Completion::Connected { slot, gen, .. }
            | Completion::Received { slot, gen, .. }
            | Completion::Sent { slot, gen, .. } => (slot, gen),
        };
        if self.slots[slot].gen == gen {
            return Some(c);
        }
        if let Completion::Received {
            result: Ok(Some((bid, _))),
            ..
        } = c
        {
            self.give_back(bid);
        }
        None
    }

    /// The bytes a receive put in buffer `bid`.
    pub(crate) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        self.bufs.data(bid, len)
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn give_back(&mut self, bid: u16) {
        self.bufs.recycle(bid);
    }

    /// Queues `sqe`; a full submission queue is handed to the kernel first.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every pointer an entry carries points at memory this
            // ring owns until the request's completion (a send's buffer in
            // `sends`, the boxed address, the buffer ring) or at nothing;
            // `ring` is dropped before all of them.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // SUBMIT_ALL (or a kernel that takes what it can): the queue
            // empties, or an error we can only retry next turn.
            if self.ring.submit().is_err() {
                std::thread::yield_now();
            }
        }
    }
}

/// A request's `user_data`: kind, connection generation, slot.
fn tag(kind: u64, gen: u32, slot: usize) -> u64 {
    kind << 56 | u64::from(gen & 0xff_ffff) << 32 | slot as u64 & 0xffff_ffff
}
