//! io_uring for `uring-server`: the ring, its requests in flight, and the
//! rules the kernel sets. Every io_uring `unsafe` block of the crate is in
//! this file, each with the reason it holds (the buffer ring's are in
//! `iomodels-bufring`).
//!
//! * **Set-up** ([`Ring::new`]): the best setup flags this kernel takes
//!   (`SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL`, then `COOP_TASKRUN |
//!   SUBMIT_ALL`, then none; with `--sqpoll`, `SQPOLL | SINGLE_ISSUER`, then
//!   `SQPOLL`), a probe for every opcode submitted, and the provided-buffer
//!   ring. A machine without a usable io_uring gets one line: `io_uring
//!   unavailable: … (kernel X)`.
//! * **Requests in flight**: each one is an `Op` in a slab; its
//!   `user_data` is the slab index plus a generation number, so a late
//!   completion, or a cancel aimed at a request that already finished, never
//!   touches the request that reuses the index. Whatever the kernel reads or
//!   writes after `io_uring_enter` returns (a send's bytes, a read's buffer,
//!   a path) is owned by its `Op` until the last completion.
//! * **Completions** come back as [`Event`]s with typed results (a
//!   descriptor, a byte count, an [`Errno`]); cancels are
//!   handled here. A multishot request the kernel refuses (`EINVAL`) is
//!   re-submitted in its one-shot form, for the rest of the run.
//! * **Submission and waiting**: one `io_uring_enter` per turn submits and
//!   waits; its own timeout (`IORING_ENTER_EXT_ARG`) is the model's next
//!   deadline ([`Ring::wake_by`]), so no timer request is ever queued or
//!   re-armed. A full submission queue is handed to the kernel and
//!   retried, else the entry waits for the next turn; `io_uring_enter`
//!   failing with `ETIME`, `EINTR`, `EBUSY` or `EAGAIN` is not fatal.
//! * **The provided-buffer ring**: `--buffers` buffers of 4 KiB the kernel
//!   picks from when data arrives (the `iomodels-bufring` crate, which
//!   loadgen's io_uring backend uses too); a [`RecvBuf`] is one of them lent
//!   to the model until [`Ring::give_back`].
//! * **`/file`** ([`FileReads`]): `IORING_OP_OPENAT` and `fstat`
//!   ([`Ring::open_file`]), then one `IORING_OP_READ` per piece the
//!   connection's window has room for ([`Ring::read_at`]).
//! * **`--workers N`**: N rings on N threads ([`run_rings`]), each made on
//!   its own thread, each with its own listener ([`listen_options`]).

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use io_uring::types::{DestinationSlot, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use iomodels_bufring::{BufRing, BUF_SIZE};
use iomodels_workload::{Conn, FileRequest, Host};
use nix::errno::Errno;
use slab::Slab;

use crate::host::ServerHost;
use crate::net::{ListenAddr, ListenOptions};
use crate::signals;
use crate::startup::Startup;

/// `io_uring_enter` calls this process has made (each `submit_and_wait`,
/// and each submit forced by a full submission queue): `/status` shows it
/// as `enters`, so requests per enter are measured without tracing the
/// server (the uring-batching lab).
static ENTERS: AtomicU64 = AtomicU64::new(0);

/// `io_uring_enter` calls made so far by this process.
pub fn enters() -> u64 {
    ENTERS.load(Ordering::Relaxed)
}
/// Buffer group id of the ring of receive buffers.
const BGID: u16 = 0;
/// Submission queue entries (the completion queue gets four times more).
const SQ_ENTRIES: u32 = 4096;
/// `user_data` of requests whose completion needs no handling (cancels).
const IGNORE: u64 = u64::MAX;
/// At most this much output goes in one send request.
pub const SEND_MAX: usize = 256 * 1024;
/// Send buffers up to this size are kept for reuse, at most `SPARE_COUNT`.
const SPARE_MAX: usize = 64 * 1024;
const SPARE_COUNT: usize = 64;

/// How a ring is built: uring-server's own flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Config {
    /// Give each ring a kernel thread polling its submission queue (SQPOLL): no io_uring_enter to submit while busy, but it burns a core (on two cores it competes with the load generator)
    #[arg(long)]
    pub sqpoll: bool,

    /// Use one-shot accept and recv, re-armed after each completion (what kernels before 5.19/6.0 offer) instead of multishot
    #[arg(long)]
    pub single_shot: bool,

    /// Receive buffers of 4 KiB in each ring's registered buffer ring (a power of two)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_buffers)]
    pub buffers: u16,

    /// Accept into real descriptors, not into the ring's table of registered files (direct descriptors: the default where the kernel has them, 6.8+; receives, sends and the close name a connection by its index, and no system call touches it)
    #[arg(long)]
    pub no_direct: bool,
}

/// A connection's socket.
#[derive(Debug)]
pub enum Socket {
    /// A descriptor of the process.
    Real(OwnedFd),
    /// A direct descriptor (without `--no-direct`): an index into the ring's table of
    /// registered files, which only the ring's requests can use.
    Direct(u32),
}

impl Socket {
    #[inline]
    fn target(&self) -> Target {
        match self {
            Socket::Real(fd) => Target::Fd(fd.as_raw_fd()),
            Socket::Direct(i) => Target::Fixed(*i),
        }
    }
}

/// What a request names: a descriptor, or an index of the file table.
#[derive(Debug, Clone, Copy)]
enum Target {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds entry `$e` on `$t`, whichever kind of descriptor it is.
macro_rules! on {
    ($t:expr, |$fd:ident| $e:expr) => {
        match $t {
            Target::Fd(raw) => {
                let $fd = Fd(raw);
                $e
            }
            Target::Fixed(index) => {
                let $fd = Fixed(index);
                $e
            }
        }
    };
}

/// A request in flight: its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpId(u64);

/// A receive buffer the kernel filled, lent to the model: read it with
/// [`Ring::bytes`], then hand it back with [`Ring::give_back`].
#[derive(Debug)]
pub struct RecvBuf {
    bid: u16,
    len: usize,
}

/// What a receive gave: bytes in a buffer of the ring, or `None` at end of
/// file.
pub type Received = nix::Result<Option<RecvBuf>>;

/// A completion, with what its request owned handed back.
#[derive(Debug)]
pub enum Event {
    /// The accept: a connection or why not; `more`: a multishot accept
    /// stays armed (without it, arm a new one). A direct descriptor made
    /// real ([`Ring::make_real`]) comes back this way too, with `more`.
    Accepted {
        result: nix::Result<Socket>,
        more: bool,
    },
    /// The poll on a descriptor: it is readable.
    Readable,
    /// Connection `conn` received: `Some` bytes in a buffer of the ring,
    /// `None` at end of file. `more`: a multishot recv stays armed.
    Received {
        conn: usize,
        result: Received,
        more: bool,
    },
    /// A send for `conn` is done: how many bytes went.
    Sent {
        conn: usize,
        result: nix::Result<usize>,
    },
    /// A file opened for `conn` ([`Ring::open_file`]): it and its size, or
    /// why not.
    FileOpened {
        conn: usize,
        result: std::io::Result<(OwnedFd, u64)>,
    },
    /// A piece of a file read for `conn` ([`Ring::read_at`]): the bytes
    /// (fewer than asked at the end of the file), or why not.
    FileRead {
        conn: usize,
        result: std::io::Result<Vec<u8>>,
    },
}

impl Event {
    /// The connection the completion belongs to.
    #[inline]
    pub fn conn(&self) -> Option<usize> {
        match *self {
            Event::Received { conn, .. }
            | Event::Sent { conn, .. }
            | Event::FileOpened { conn, .. }
            | Event::FileRead { conn, .. } => Some(conn),
            Event::Accepted { .. } | Event::Readable => None,
        }
    }
}

/// What a request in flight owns until its last completion.
enum Op {
    Accept {
        fd: RawFd,
        tcp: bool,
    },
    /// A direct descriptor installed as a real one.
    Install,
    Poll {
        fd: RawFd,
    },
    Recv {
        conn: usize,
        fd: Target,
    },
    /// The kernel reads `buf` until the completion.
    Send {
        conn: usize,
        buf: Vec<u8>,
    },
    /// The kernel reads the path when it runs the open.
    Open {
        conn: usize,
        _path: CString,
    },
    /// The kernel writes `buf` until the completion. `file` is the
    /// connection's, which keeps it open while a request of it is in flight.
    Read {
        conn: usize,
        file: RawFd,
        offset: u64,
        buf: Vec<u8>,
    },
}

impl Op {
    #[inline]
    fn conn(&self) -> Option<usize> {
        match *self {
            Op::Recv { conn, .. }
            | Op::Send { conn, .. }
            | Op::Open { conn, .. }
            | Op::Read { conn, .. } => Some(conn),
            Op::Accept { .. } | Op::Poll { .. } | Op::Install => None,
        }
    }
}

struct Token {
    generation: u32,
    cancelled: bool,
    op: Op,
}

/// One io_uring instance and everything in flight on it.
pub struct Ring {
    /// Declared first so that it is dropped first: the kernel lets go of
    /// the buffer ring (and of every request's memory) before it is freed.
    ring: IoUring,
    bufs: BufRing,
    ops: Slab<Token>,
    generation: u32,
    /// Entries that found the submission queue full.
    backlog: VecDeque<squeue::Entry>,
    /// The next wait ends by then ([`Ring::wake_by`]): the wait's own
    /// timeout, so no timer request is ever queued or re-armed.
    deadline: Option<Instant>,
    /// Send buffers kept for reuse.
    spare: Vec<Vec<u8>>,
    /// Requests in flight per connection token.
    per_conn: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    /// Events that need no completion (a file name the kernel cannot take).
    ready: Vec<Event>,
    multishot_accept: bool,
    multishot_recv: bool,
    /// Accepts go into the file table (no `--no-direct`).
    direct: bool,
    /// The file table: entries, entries in use, and how many must stay
    /// free for a multishot accept into it (see [`Ring::accept`]).
    table: u32,
    used: u32,
    headroom: u32,
    /// The multishot accept into the table, cancelled when room runs short.
    table_accept: Option<OpId>,
    /// The listener accepted on, and whether it is a TCP one.
    listener_tcp: Option<(RawFd, bool)>,
}

impl Ring {
    /// Builds a ring, checks the opcodes, registers the buffer ring.
    pub fn new(config: &Config) -> anyhow::Result<Ring> {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let ring = build(config, &kernel)?;
        probe(&ring, &kernel)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(unavailable("no IORING_ENTER_EXT_ARG (5.11)", &kernel));
        }
        let bufs = BufRing::new(config.buffers)?;
        bufs.register(&ring, BGID).map_err(|e| {
            unavailable(
                format!("provided buffer rings (IORING_REGISTER_PBUF_RING, 5.19): {e}"),
                &kernel,
            )
        })?;
        // Multishot accept came in 5.19, multishot recv in 6.0.
        let version = kernel_version(&kernel);
        let table = if !config.no_direct {
            direct_table(&ring, version)
        } else {
            0
        };
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn");
        let headroom = somaxconn.map_or(4096, |s| s.trim().parse().unwrap_or(4096));
        Ok(Ring {
            ring,
            bufs,
            ops: Slab::new(),
            generation: 0,
            backlog: VecDeque::new(),
            deadline: None,
            spare: Vec::new(),
            per_conn: Vec::new(),
            cqes: Vec::new(),
            ready: Vec::new(),
            multishot_accept: !config.single_shot && version >= (5, 19),
            multishot_recv: !config.single_shot && version >= (6, 0),
            direct: table > 0,
            table,
            used: 0,
            headroom,
            table_accept: None,
            listener_tcp: None,
        })
    }

    /// Requests in flight that belong to connection `conn`: its slot (and
    /// socket) may go only when none is left, since the kernel may still
    /// use their buffers.
    #[inline]
    pub fn in_flight(&self, conn: usize) -> u32 {
        self.per_conn.get(conn).copied().unwrap_or(0)
    }

    /// Whether receives are multishot (one stays armed until cancelled).
    #[inline]
    pub fn multishot_recv(&self) -> bool {
        self.multishot_recv
    }

    /// Accepts on `listener` (multishot where the kernel has it).
    ///
    /// With direct descriptors, `None` while the file table is full. An accept into
    /// a full table takes the connection off the backlog and then drops it
    /// (the kernel's `io_accept` installs the file after accepting), where
    /// a full descriptor table leaves it waiting: so the table is never
    /// let fill. A multishot accept, which can take a whole backlog
    /// (`somaxconn`) in one go, is used while that much is free; below,
    /// one-shot accepts, one connection each.
    #[inline]
    pub fn accept(&mut self, listener: BorrowedFd<'_>) -> Option<OpId> {
        use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
        if self.direct && self.used >= self.table {
            return None;
        }
        let fd = listener.as_raw_fd();
        // Whether its sockets take TCP options (asked once per listener).
        let tcp = match self.listener_tcp {
            Some((known, tcp)) if known == fd => tcp,
            _ => {
                let family = getsockname::<SockaddrStorage>(fd).map(|a| a.family());
                let tcp = family.is_ok_and(|f| f.is_some_and(|f| f != AddressFamily::Unix));
                self.listener_tcp = Some((fd, tcp));
                tcp
            }
        };
        let sqe = self.accept_sqe(fd);
        let id = self.queue(Op::Accept { fd, tcp }, sqe);
        self.table_accept = (self.direct && self.multishot_accept_now()).then_some(id);
        Some(id)
    }

    /// Whether the next accept is multishot.
    #[inline]
    fn multishot_accept_now(&self) -> bool {
        self.multishot_accept
            && (!self.direct || self.table.saturating_sub(self.used) > self.headroom)
    }

    #[inline]
    fn accept_sqe(&self, fd: RawFd) -> squeue::Entry {
        // A direct descriptor has no close-on-exec flag (the kernel refuses it).
        let flags = if self.direct { 0 } else { libc::SOCK_CLOEXEC };
        let slot = self.direct.then(DestinationSlot::auto_target);
        if self.multishot_accept_now() {
            (opcode::AcceptMulti::new(Fd(fd)).allocate_file_index(self.direct))
                .flags(flags)
                .build()
        } else {
            opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(slot)
                .flags(flags)
                .build()
        }
    }

    /// The socket an accept's result `fd` names, with every accepted
    /// socket's options (`net::ACCEPTED_TCP_OPTIONS`): a real one through
    /// `net::prepare_accepted`, a direct TCP one through the ring
    /// (`IORING_OP_URING_CMD`, run inline with the next submission, before
    /// the connection's first request).
    #[inline]
    fn accepted(&mut self, fd: i32, tcp: bool) -> Socket {
        if !self.direct {
            let fd = own(fd);
            crate::net::prepare_accepted(&fd);
            return Socket::Real(fd);
        }
        self.used += 1;
        if self.table.saturating_sub(self.used) <= self.headroom {
            let accept = self.table_accept.take();
            self.cancel(accept);
        }
        let options = crate::net::ACCEPTED_TCP_OPTIONS.iter().filter(|_| tcp);
        for (level, name, value) in options {
            let sqe = opcode::SetSockOpt::new(
                Fixed(fd as u32),
                *level as u32,
                *name as u32,
                std::ptr::from_ref(value).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            self.push(sqe.build().user_data(IGNORE));
        }
        Socket::Direct(fd as u32)
    }

    /// Turns direct descriptor `socket` into a real one
    /// (`IORING_OP_FIXED_FD_INSTALL`, then the table entry is closed); it
    /// comes back as an [`Event::Accepted`]. What uses it: a refusal under
    /// `--max-conns`, which `Shared::refuse` writes on a real descriptor.
    pub fn make_real(&mut self, socket: Socket) {
        match socket {
            Socket::Direct(index) => {
                let install = opcode::FixedFdInstall::new(Fixed(index), 0).build();
                self.queue(Op::Install, install.flags(squeue::Flags::IO_HARDLINK));
                self.release(Socket::Direct(index));
            }
            real => self.ready.push(Event::Accepted {
                result: Ok(real),
                more: true,
            }),
        }
    }

    /// Closes a socket no request uses any more: a real one now, a direct
    /// one with an `IORING_OP_CLOSE` of its table entry (inline in the next
    /// submission).
    #[inline]
    pub fn release(&mut self, socket: Socket) {
        if let Socket::Direct(index) = socket {
            self.used -= 1;
            let close = opcode::Close::new(Fixed(index)).build();
            self.push(close.user_data(IGNORE));
        }
    }

    /// Waits until `fd` is readable: one [`Event::Readable`] (a poll that
    /// fails, interrupted, is submitted again).
    #[inline]
    pub fn poll_readable(&mut self, fd: BorrowedFd<'_>) -> OpId {
        let fd = fd.as_raw_fd();
        let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build();
        self.queue(Op::Poll { fd }, sqe)
    }

    /// Receives on connection `conn`'s socket into a buffer the kernel picks
    /// from the buffer ring when data arrives.
    #[inline]
    pub fn recv(&mut self, conn: usize, socket: &Socket) -> OpId {
        let fd = socket.target();
        let sqe = self.recv_sqe(fd);
        self.queue(Op::Recv { conn, fd }, sqe)
    }

    #[inline]
    fn recv_sqe(&self, fd: Target) -> squeue::Entry {
        if self.multishot_recv {
            on!(fd, |fd| opcode::RecvMulti::new(fd, BGID).build())
        } else {
            on!(fd, |fd| opcode::Recv::new(
                fd,
                std::ptr::null_mut(),
                BUF_SIZE as u32
            ))
            .buf_group(BGID)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
        }
    }

    /// Sends `bytes` (at most [`SEND_MAX`] of them) on connection `conn`'s
    /// socket. They are copied into a buffer the request owns: the kernel
    /// reads it after this returns, while the caller's bytes may change.
    #[inline]
    pub fn send(&mut self, conn: usize, socket: &Socket, bytes: &[u8]) -> OpId {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.extend_from_slice(&bytes[..bytes.len().min(SEND_MAX)]);
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        let sqe = on!(socket.target(), |fd| opcode::Send::new(fd, ptr, len))
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.queue(Op::Send { conn, buf }, sqe)
    }

    /// Opens file `path` for connection `conn` through the ring: an
    /// `IORING_OP_OPENAT`, then an `fstat` (synchronous, on an inode the
    /// open brought into memory) for its size. [`Event::FileOpened`]
    /// reports it.
    pub fn open_file(&mut self, conn: usize, path: &Path) {
        match CString::new(path.as_os_str().as_bytes()) {
            Ok(path) => {
                let sqe = opcode::OpenAt::new(Fd(libc::AT_FDCWD), path.as_ptr())
                    .flags(libc::O_RDONLY | libc::O_CLOEXEC)
                    .build();
                self.queue(Op::Open { conn, _path: path }, sqe);
            }
            // A path with a NUL byte: no request, the answer now (with the
            // next batch of completions).
            Err(e) => self.ready.push(Event::FileOpened {
                conn,
                result: Err(e.into()),
            }),
        }
    }

    /// Reads at most `len` bytes at `offset` of `file` (the connection
    /// keeps it open until this completes) with `IORING_OP_READ`: one
    /// piece of a file that streams. [`Event::FileRead`] reports it.
    pub fn read_at(&mut self, conn: usize, file: BorrowedFd<'_>, offset: u64, len: usize) {
        let buf = vec![0u8; len];
        let fd = file.as_raw_fd();
        let sqe = opcode::Read::new(Fd(fd), buf.as_ptr().cast_mut(), len as u32)
            .offset(offset)
            .build();
        self.queue(
            Op::Read {
                conn,
                file: fd,
                offset,
                buf,
            },
            sqe,
        );
    }

    /// Asks the kernel to cancel request `id` (nothing if `None`, if it
    /// already ended, or if asked before). Its completion still comes, with
    /// `ECANCELED` or with what it did before the cancel landed.
    #[inline]
    pub fn cancel(&mut self, id: Option<OpId>) {
        let Some((id, token)) = id.and_then(|id| Some((id, self.live(id)?))) else {
            return;
        };
        if !std::mem::replace(&mut token.cancelled, true) {
            self.push(opcode::AsyncCancel::new(id.0).build().user_data(IGNORE));
        }
    }

    /// Makes sure the next wait ends by `when` (the earliest of the
    /// deadlines asked before it): the timeout of that `io_uring_enter`
    /// itself (`IORING_ENTER_EXT_ARG`), not a timeout request.
    #[inline]
    pub fn wake_by(&mut self, when: Instant) {
        self.deadline = Some(self.deadline.map_or(when, |d| d.min(when)));
    }

    /// The bytes a receive put in `buf`.
    #[inline]
    pub fn bytes(&self, buf: &RecvBuf) -> &[u8] {
        self.bufs.data(buf.bid, buf.len)
    }

    /// Gives a receive buffer back to the kernel.
    #[inline]
    pub fn give_back(&mut self, buf: RecvBuf) {
        self.bufs.recycle(buf.bid);
    }

    /// One `io_uring_enter`: submits everything queued and waits for at
    /// least one completion; then appends every completion there is to
    /// `events`.
    pub fn submit_and_wait(&mut self, events: &mut VecDeque<Event>) -> anyhow::Result<()> {
        self.flush_backlog();
        let timeout = self
            .deadline
            .take()
            .map(|d| Timespec::from(d.saturating_duration_since(Instant::now())));
        ENTERS.fetch_add(1, Ordering::Relaxed);
        let entered = match &timeout {
            Some(ts) => {
                (self.ring.submitter()).submit_with_args(1, &SubmitArgs::new().timespec(ts))
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        if let Err(e) = entered {
            match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                // The deadline came (ETIME); a signal interrupted the wait
                // (the model's poll on the signal pipe reports it); the
                // completion queue is full (EBUSY) or the kernel is short of
                // memory for requests (EAGAIN): reap first, submit again
                // next turn.
                Errno::ETIME | Errno::EINTR | Errno::EBUSY | Errno::EAGAIN => {}
                e => anyhow::bail!("io_uring_enter: {e}"),
            }
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, result, flags) in &cqes {
            if let Some(event) = self.finish(user_data, result, flags) {
                events.push_back(event);
            }
        }
        cqes.clear();
        self.cqes = cqes;
        if !self.ready.is_empty() {
            events.extend(self.ready.drain(..));
        }
        Ok(())
    }

    /// Queues `sqe` for `op`.
    #[inline]
    fn queue(&mut self, op: Op, sqe: squeue::Entry) -> OpId {
        self.generation = self.generation.wrapping_add(1);
        if let Some(conn) = op.conn() {
            if conn >= self.per_conn.len() {
                self.per_conn.resize(conn + 1, 0);
            }
            self.per_conn[conn] += 1;
        }
        let index = self.ops.insert(Token {
            generation: self.generation,
            cancelled: false,
            op,
        });
        let id = OpId((u64::from(self.generation) << 32) | index as u64);
        self.push(sqe.user_data(id.0));
        id
    }

    /// The request `id`, if still in flight.
    #[inline]
    fn live(&mut self, id: OpId) -> Option<&mut Token> {
        let token = self.ops.get_mut((id.0 & 0xffff_ffff) as usize)?;
        (token.generation == (id.0 >> 32) as u32).then_some(token)
    }

    #[inline]
    fn push(&mut self, sqe: squeue::Entry) {
        if !self.backlog.is_empty() || !self.try_push(&sqe) {
            // The submission queue is full: hand the kernel what it holds
            // now (one more io_uring_enter) and try again, or keep the
            // entry for the next turn of the loop.
            ENTERS.fetch_add(1, Ordering::Relaxed);
            let _ = self.ring.submit();
            if !self.backlog.is_empty() || !self.try_push(&sqe) {
                self.backlog.push_back(sqe);
            }
        }
    }

    #[inline]
    fn try_push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: every pointer an entry carries points into heap memory
        // owned by its `Op` in `self.ops` (a send's buffer, a path, a
        // read buffer), into the buffer ring, or at nothing;
        // an `Op` is dropped only after its last completion, and the ring
        // itself is dropped before the buffer ring.
        unsafe { self.ring.submission().push(sqe).is_ok() }
    }

    /// Moves entries that found the queue full into it.
    fn flush_backlog(&mut self) {
        while let Some(sqe) = self.backlog.pop_front() {
            if !self.try_push(&sqe) {
                self.backlog.push_front(sqe);
                return;
            }
        }
    }

    /// The event of one completion: `None` for completions handled here
    /// (cancels, a multishot refusal) or that belong to a
    /// request already finished (a stale generation). The request leaves
    /// the slab with its last completion.
    #[inline]
    fn finish(&mut self, user_data: u64, result: i32, flags: u32) -> Option<Event> {
        if user_data == IGNORE {
            return None;
        }
        let id = OpId(user_data);
        let more = cqueue::more(flags);
        let token = self.live(id)?;
        if more {
            // A multishot request that goes on stays in the slab.
            return match token.op {
                Op::Accept { tcp, .. } => Some(Event::Accepted {
                    result: code(result).map(|fd| self.accepted(fd, tcp)),
                    more,
                }),
                Op::Recv { conn, .. } => Some(Event::Received {
                    conn,
                    result: received(result, flags),
                    more,
                }),
                _ => None,
            };
        }
        let result = if result < 0 {
            self.retry(id, result)?
        } else {
            result
        };
        self.finish_last(id, result, flags)
    }

    /// A failed request this ring answers itself by submitting it again
    /// (same `user_data`): an interrupted poll, and a multishot request this
    /// kernel refuses (one-shot from then on; if it was cancelled, it ends
    /// with `ECANCELED`). `None`: submitted again; else the result to report.
    #[inline]
    fn retry(&mut self, id: OpId, result: i32) -> Option<i32> {
        enum Again {
            Poll(RawFd),
            Accept(RawFd),
            Recv(Target),
        }
        let refused = result == -libc::EINVAL;
        let (accept, recv) = (
            refused && self.multishot_accept,
            refused && self.multishot_recv,
        );
        let token = self.live(id)?;
        let cancelled = token.cancelled;
        let sqe = match token.op {
            Op::Poll { fd } => Again::Poll(fd),
            Op::Accept { fd, .. } if accept => Again::Accept(fd),
            Op::Recv { fd, .. } if recv => Again::Recv(fd),
            _ => return Some(result),
        };
        let sqe = match sqe {
            Again::Poll(fd) => opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build(),
            Again::Accept(fd) => {
                eprintln!("uring-server: multishot accept refused; using one-shot accepts");
                self.multishot_accept = false;
                self.accept_sqe(fd)
            }
            Again::Recv(fd) => {
                eprintln!("uring-server: multishot recv refused; using one-shot receives");
                self.multishot_recv = false;
                self.recv_sqe(fd)
            }
        };
        if cancelled {
            return Some(-libc::ECANCELED);
        }
        self.push(sqe.user_data(id.0));
        None
    }

    /// The last completion of request `id`: it leaves the slab.
    #[inline]
    fn finish_last(&mut self, id: OpId, result: i32, flags: u32) -> Option<Event> {
        let op = self.ops.remove((id.0 & 0xffff_ffff) as usize).op;
        if let Some(conn) = op.conn() {
            self.per_conn[conn] -= 1;
        }
        Some(match op {
            Op::Accept { tcp, .. } => Event::Accepted {
                result: code(result).map(|fd| self.accepted(fd, tcp)),
                more: false,
            },
            Op::Install => Event::Accepted {
                result: code(result).map(|fd| Socket::Real(own(fd))),
                more: true,
            },
            // Readable; a cancelled poll reports nothing.
            Op::Poll { .. } if result >= 0 => Event::Readable,
            Op::Poll { .. } => return None,
            Op::Recv { conn, .. } => Event::Received {
                conn,
                result: received(result, flags),
                more: false,
            },
            Op::Send { conn, mut buf } => {
                buf.clear();
                if buf.capacity() <= SPARE_MAX && self.spare.len() < SPARE_COUNT {
                    self.spare.push(buf);
                }
                Event::Sent {
                    conn,
                    result: code(result).map(|n| n as usize),
                }
            }
            Op::Open { conn, .. } => Event::FileOpened {
                conn,
                result: code(result)
                    .map(own)
                    .and_then(|file| {
                        nix::sys::stat::fstat(&file).map(|st| (file, st.st_size as u64))
                    })
                    .map_err(Into::into),
            },
            Op::Read {
                conn,
                file,
                offset,
                mut buf,
            } => match code(result) {
                Ok(n) => {
                    buf.truncate(n as usize);
                    Event::FileRead {
                        conn,
                        result: Ok(buf),
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {
                    // SAFETY: `file` is the connection's open file, which it
                    // keeps while a request of it is in flight.
                    let file = unsafe { BorrowedFd::borrow_raw(file) };
                    let len = buf.len();
                    self.read_at(conn, file, offset, len);
                    return None;
                }
                Err(e) => Event::FileRead {
                    conn,
                    result: Err(e.into()),
                },
            },
        })
    }
}

/// A connection's `/file`, read through the ring: opened with
/// [`Ring::open_file`], then read piece by piece with [`Ring::read_at`] as
/// the connection's window has room (`Conn::take_file_request`).
#[derive(Debug, Default)]
pub struct FileReads {
    file: Option<OwnedFd>,
}

impl FileReads {
    /// Queues what connection `conn`'s `/file` request needs now, if
    /// anything: the open (a file of `data_dir`), or the next piece.
    pub fn queue(&self, ring: &mut Ring, conn: usize, state: &mut Conn, data_dir: &Path) {
        match (state.take_file_request(), &self.file) {
            (Some(FileRequest::Open(name)), _) => ring.open_file(conn, &data_dir.join(&*name)),
            (Some(FileRequest::Read { offset, len }), Some(file)) => {
                ring.read_at(conn, file.as_fd(), offset, len)
            }
            _ => {}
        }
    }

    /// Hands a [`Event::FileOpened`] or [`Event::FileRead`] completion to
    /// the connection's state machine.
    pub fn complete(&mut self, event: Event, state: &mut Conn, host: &mut dyn Host, now: Instant) {
        match event {
            Event::FileOpened { result, .. } => {
                let size = result.map(|(file, size)| {
                    self.file = Some(file);
                    size
                });
                state.file_opened(size, now, host);
            }
            Event::FileRead { result, .. } => {
                let piece = result
                    .as_deref()
                    .map_err(|e| std::io::Error::from(e.kind()));
                state.file_read(piece, now, host);
            }
            _ => {}
        }
    }
}

/// How `workers` rings listen: one SO_REUSEPORT socket each on a TCP
/// address (the kernel spreads connections over them); one unix socket is
/// shared.
pub fn listen_options(workers: u32, addr: &ListenAddr) -> ListenOptions {
    let per_worker = workers > 1 && matches!(addr, ListenAddr::Tcp(_));
    ListenOptions {
        reuseport: per_worker,
        nonblocking: false,
        per_worker,
    }
}

/// Runs one ring per worker of `start`. Each ring is made by
/// `make(host, listener)` on the thread that runs it (`SINGLE_ISSUER` binds a
/// ring to the thread that made it; with one worker, the calling thread),
/// then driven by `run`. The ready line goes out once every ring has
/// started; a ring that cannot start, or fails, stops the others (through
/// the self-pipe).
pub fn run_rings<S>(
    start: Startup,
    make: impl Fn(ServerHost, OwnedFd) -> anyhow::Result<S> + Sync,
    run: impl Fn(S) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let Startup {
        data: _data,
        shared,
        listener,
        more,
        shown,
        workers,
    } = start;
    if workers <= 1 {
        let server = make(ServerHost::for_process(&shared), listener)?;
        crate::cli::ready(&shown);
        return run(server);
    }
    let mut listeners = vec![listener];
    listeners.extend(more);
    while listeners.len() < workers as usize {
        listeners.push(
            listeners[0]
                .try_clone()
                .context("dup of the listening socket")?,
        );
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = (listeners.into_iter().enumerate())
            .map(|(i, listener)| {
                let (tx, make, run) = (tx.clone(), &make, &run);
                let host = ServerHost::for_thread(&shared, i);
                scope.spawn(move || match make(host, listener) {
                    Ok(server) => {
                        let _ = tx.send(Ok(()));
                        run(server)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                })
            })
            .collect();
        let started: anyhow::Result<()> = rx.iter().take(workers as usize).collect();
        started.inspect_err(|_| signals::request_stop())?;
        crate::cli::ready(&shown);
        let mut result = Ok(());
        for t in threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a ring's thread panicked")));
            if r.is_err() {
                signals::request_stop();
            }
            result = result.and(r);
        }
        result
    })
}

/// Checks a `--buffers` value: a power of two the buffer ring can hold.
fn parse_buffers(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && n <= 32768 => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 1 to 32768")),
    }
}

/// A completion's result: a value, or the error the kernel gave as `-errno`.
#[inline]
fn code(result: i32) -> nix::Result<i32> {
    if result < 0 {
        Err(Errno::from_raw(-result))
    } else {
        Ok(result)
    }
}

/// A receive's result: bytes in a provided buffer, or end of file.
#[inline]
fn received(result: i32, flags: u32) -> Received {
    match (result, cqueue::buffer_select(flags)) {
        (n, _) if n < 0 => Err(Errno::from_raw(-n)),
        (0, _) => Ok(None),
        (n, Some(bid)) => Ok(Some(RecvBuf {
            bid,
            len: n as usize,
        })),
        // Bytes without a buffer: the kernel broke its own rule.
        (_, None) => Err(Errno::EIO),
    }
}

/// A descriptor a completion (accept, open) just installed.
#[inline]
fn own(fd: i32) -> OwnedFd {
    // SAFETY: a non-negative result of an accept or an open is a descriptor
    // the kernel just installed for this process, reported once; nothing
    // else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The one line a machine without a usable io_uring gets.
/// The start-up error of a model whose runtime builds its own ring
/// (monoio-server) when `io_uring_setup` failed with `e`: the same words
/// as uring-server's, `io_uring unavailable: … (kernel X)`.
pub fn setup_failed(e: std::io::Error) -> anyhow::Error {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease");
    setup_error(e, kernel.as_deref().map_or("unknown", str::trim))
}

fn unavailable(detail: impl std::fmt::Display, kernel: &str) -> anyhow::Error {
    anyhow::anyhow!("io_uring unavailable: {detail} (kernel {kernel})")
}

/// `6.18.44-foo` -> (6, 18).
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Builds a ring with the best setup flags this kernel takes, trying newer
/// ones first (an older kernel refuses unknown flags with EINVAL).
fn build(config: &Config, kernel: &str) -> anyhow::Result<IoUring> {
    type Setup = fn(&mut io_uring::Builder);
    let attempts: &[Setup] = if config.sqpoll {
        &[
            |b| {
                b.setup_sqpoll(2000).setup_single_issuer();
            },
            |b| {
                b.setup_sqpoll(2000);
            },
        ]
    } else {
        // DEFER_TASKRUN (6.1): completions are posted only when this thread
        // enters the kernel to wait, in one batch, never by interrupting it.
        &[
            |b| {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_submit_all();
            },
            |b| {
                b.setup_coop_taskrun().setup_submit_all();
            },
            |_| {},
        ]
    };
    let mut last = None;
    for setup in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(SQ_ENTRIES * 4);
        setup(&mut builder);
        match builder.build(SQ_ENTRIES) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(setup_error(e, kernel)),
        }
    }
    let e = last.expect("at least one attempt");
    Err(unavailable(format!("io_uring_setup: {e}"), kernel))
}

/// Why io_uring_setup failed, in words: a sysctl, seccomp, or no io_uring.
fn setup_error(e: std::io::Error, kernel: &str) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let why = match sysctl.as_str() {
                "2" => "disabled by sysctl kernel.io_uring_disabled=2".to_string(),
                "1" => "kernel.io_uring_disabled=1 and this user is not in kernel.io_uring_group"
                    .to_string(),
                _ => format!("io_uring_setup: {e} (a seccomp filter or container policy?)"),
            };
            unavailable(why, kernel)
        }
        Some(libc::ENOSYS) => unavailable(
            "io_uring_setup: not implemented (kernel without CONFIG_IO_URING, or seccomp)",
            kernel,
        ),
        _ => anyhow::anyhow!("io_uring_setup: {e}"),
    }
}

/// Whether direct descriptors can be had: the kernel's socket `setsockopt`
/// through the ring (6.7) and `IORING_OP_FIXED_FD_INSTALL` (6.8), and a
/// sparse file table as large as the descriptor limit (at most 65,536
/// entries). If not, one line says why and real descriptors serve.
fn direct_table(ring: &IoUring, version: (u32, u32)) -> u32 {
    let size = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(65_536) as u32);
    let why = if version < (6, 8) {
        "needs kernel 6.8".to_string()
    } else {
        match ring.submitter().register_files_sparse(size) {
            Ok(()) => return size,
            Err(e) => format!("IORING_REGISTER_FILES_SPARSE: {e}"),
        }
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("uring-server: no direct descriptors ({why}); using real ones"));
    0
}

/// Checks that the kernel has every request type [`Ring`] submits.
fn probe(ring: &IoUring, kernel: &str) -> anyhow::Result<()> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unavailable(format!("IORING_REGISTER_PROBE (5.6): {e}"), kernel))?;
    for (code, name) in [
        (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
        (opcode::Recv::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
        (opcode::OpenAt::CODE, "IORING_OP_OPENAT"),
        (opcode::Read::CODE, "IORING_OP_READ"),
    ] {
        if !probe.is_supported(code) {
            return Err(unavailable(format!("the kernel lacks {name}"), kernel));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v857"), (6, 18));
        assert_eq!(kernel_version("5.4.0"), (5, 4));
        assert_eq!(kernel_version("unknown"), (0, 0));
    }

    /// A ring with 4 receive buffers, or `None` where io_uring is off.
    fn ring_or_skip() -> Option<Ring> {
        let config = Config {
            sqpoll: false,
            single_shot: false,
            buffers: 4,
            no_direct: true,
        };
        match Ring::new(&config) {
            Ok(ring) => Some(ring),
            Err(e) if e.to_string().starts_with("io_uring unavailable") => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Events until `done` holds, for at most 5 s (the ring's own timeout
    /// wakes the wait).
    fn wait_for(
        ring: &mut Ring,
        events: &mut VecDeque<Event>,
        done: impl Fn(&VecDeque<Event>) -> bool,
    ) {
        let end = Instant::now() + Duration::from_secs(5);
        while !done(events) {
            assert!(Instant::now() < end, "no such events in 5 s: {events:?}");
            ring.wake_by(Instant::now() + Duration::from_millis(100));
            ring.submit_and_wait(events).unwrap();
        }
    }

    #[test]
    fn opens_and_reads_files_through_the_ring() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("iomodels-ring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        std::fs::write(dir.join("f"), &content).unwrap();
        ring.open_file(3, &dir.join("f"));
        ring.open_file(4, &dir.join("absent"));
        assert_eq!((ring.in_flight(3), ring.in_flight(4)), (1, 1));
        let mut events = VecDeque::new();
        wait_for(&mut ring, &mut events, |e| e.len() == 2);
        let mut file = None;
        for event in events.drain(..) {
            match event {
                Event::FileOpened { conn: 3, result } => {
                    let (fd, size) = result.unwrap();
                    assert_eq!(size, content.len() as u64);
                    file = Some(fd);
                }
                Event::FileOpened { conn: 4, result } => {
                    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::NotFound)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // A piece in the middle, and one that runs past the end (short).
        let file = file.expect("opened");
        ring.read_at(3, file.as_fd(), 1000, 4096);
        ring.read_at(3, file.as_fd(), 40_000, 70_000);
        assert_eq!(ring.in_flight(3), 2);
        wait_for(&mut ring, &mut events, |e| e.len() == 2);
        let mut pieces: Vec<Vec<u8>> = (events.drain(..))
            .map(|e| match e {
                Event::FileRead { conn: 3, result } => result.unwrap(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        pieces.sort_by_key(|p| p.len());
        assert!(pieces[0] == content[1000..5096] && pieces[1] == content[40_000..]);
        assert_eq!((ring.in_flight(3), ring.in_flight(4)), (0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn send_recv_cancel_and_a_stale_cancel() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Socket::Real(a.into()), Socket::Real(b.into()));
        let recv = ring.recv(7, &b);
        ring.send(8, &a, b"hello");
        let mut events = VecDeque::new();
        wait_for(&mut ring, &mut events, |e| {
            e.iter().any(|e| matches!(e, Event::Sent { .. }))
                && e.iter().any(|e| matches!(e, Event::Received { .. }))
        });
        for event in events.drain(..) {
            match event {
                Event::Sent { conn: 8, result } => assert_eq!(result, Ok(5)),
                Event::Received {
                    conn: 7,
                    result: Ok(Some(buf)),
                    more,
                } => {
                    assert_eq!(ring.bytes(&buf), b"hello");
                    assert_eq!(more, ring.multishot_recv());
                    ring.give_back(buf);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if ring.multishot_recv() {
            // A multishot recv stays armed until cancelled; its last
            // completion says so.
            assert_eq!(ring.in_flight(7), 1);
            ring.cancel(Some(recv));
            wait_for(&mut ring, &mut events, |e| !e.is_empty());
            assert!(matches!(
                events.make_contiguous(),
                [Event::Received {
                    conn: 7,
                    result: Err(Errno::ECANCELED),
                    more: false
                }]
            ));
        }
        assert_eq!(ring.in_flight(7), 0);
        // The finished request's id is stale: cancelling it queues nothing,
        // and a new request (which may reuse its slab index) is untouched.
        let again = ring.recv(7, &b);
        assert_ne!(again, recv);
        ring.cancel(Some(recv));
        assert!(ring.backlog.is_empty() && ring.ring.submission().len() == 1);
    }
}
