//! # uring-server — one thread, io_uring completions
//!
//! Every other event loop here asks the kernel "which sockets are *ready*?"
//! and then makes the `read`/`write` calls itself. io_uring turns that
//! around: the program writes *requests* ("receive on this socket", "send
//! these bytes", "read that file") into a submission ring shared with the
//! kernel, and later finds their *results* in a completion ring. One
//! `io_uring_enter` hands the kernel a whole batch and waits for the next
//! completions; while the kernel is busy it needs no system call at all.
//! The model of monoio, glommio and frevib's io_uring echo server.
//!
//! ```text
//!          user space                         kernel
//!   ┌───────────────────────┐ io_uring_enter ┌──────────────────────┐
//!   │ SQ  [send c7][recv c9]│ ─────────────> │ runs each request,   │
//!   │     [timeout][ ... ]  │                │ on sockets that wait │
//!   │ CQ  [c7: 130][c9: 0 ] │ <───────────── │ (internal poll)      │
//!   │     [acc: fd 12]      │  completions   └──────────────────────┘
//!   └───────────────────────┘
//!     loop: submit what was queued, wait for ≥ 1 completion (one enter),
//!           handle every completion: accepted fd -> new slot,
//!           bytes received -> state machine -> queue a send, ...
//! ```
//!
//! * **Accept** is one *multishot* request: it stays armed and posts one
//!   completion per connection.
//! * **Receive** is one multishot recv per connection with *provided
//!   buffers*: the kernel picks a buffer from a ring of 4 KiB buffers we
//!   registered (`--buffers`) only when data arrives, so an idle connection
//!   owns no buffer at all; the model hands the bytes to the state machine
//!   and gives the buffer back. When the ring runs dry the kernel ends the
//!   recv with `ENOBUFS` and the model re-arms it.
//! * **Send** owns its bytes until its completion: the kernel reads them
//!   *after* `io_uring_enter` returns, so they may not move or change. The
//!   state machine's output can grow meanwhile (a pipelined request, a
//!   timer), so the model copies the bytes into a buffer the send op owns —
//!   a memcpy of one response, small next to the system call it saves. A
//!   short send advances the output by what went and sends the rest.
//! * **`/wait`, slow heads, idle connections**: a timer heap whose earliest
//!   deadline is one `IORING_OP_TIMEOUT`.
//! * **`/file`** is `IORING_OP_OPENAT` + `IORING_OP_READ`: the one model
//!   where a disk read that misses the page cache does not stall the loop.
//! * **SIGTERM**: a poll request on the signal self-pipe.
//!
//! Every request in flight has a token in a slab, its index and a
//! generation number in the request's `user_data`. A connection's slot is
//! freed only when every request naming it has completed: closing cancels
//! them and waits, since the kernel may still write into their buffers.
//!
//! **One keep-alive request costs** no system call of its own: its recv
//! completion and its send submission ride on the loop's one
//! `io_uring_enter`, which serves many requests at once. Measured with
//! `strace -f -c` under wrk (`docs/models/uring.md`): 0.118 system calls
//! per request at 50 connections and 0.028 at 500, against epoll-server's
//! 2.03 (`read` + `write` + a share of `epoll_wait`).
//!
//! **Trade-off.** Fewer system calls and no readiness round trip, but the
//! kernel holds your buffers: ownership rules (who may touch a buffer,
//! when a slot may be freed) that readiness models never have. Like
//! epoll-server it is one thread: a slow handler (`/cpu`) still stalls
//! every connection.
//!
//! **When it wins**: many busy connections, where one `io_uring_enter`
//! carries many sends and receives, and disk reads. **Where it loses**:
//! one connection at a time (each enter carries one request, like a
//! `read`/`write` pair, plus ring bookkeeping), and large streamed bodies,
//! where copying dominates and system calls do not matter.
//!
//! `--workers N` runs N rings on N threads, each with its own
//! `SO_REUSEPORT` listener (default 1: the lesson is one ring). `--sqpoll`
//! gives each ring a kernel thread that polls the submission queue, so a
//! busy loop needs no `io_uring_enter` to submit: it helps when a spare
//! core exists, and hurts on a small machine, where that thread burns a
//! core the load generator or the server itself needed.

use std::collections::VecDeque;
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use io_uring::types::{BufRingEntry, Fd, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use iomodels_servers::cli::{self, Common};
use iomodels_servers::host::{Admitted, DataDir, ServerHost, Shared};
use iomodels_servers::net::{self, ListenAddr, ListenOptions};
use iomodels_servers::signals;
use iomodels_servers::timers::Timers;
use iomodels_workload::routes::Status;
use iomodels_workload::{Conn, Host};
use nix::errno::Errno;
use nix::sys::socket::SockFlag;
use slab::Slab;

/// One thread, io_uring completions: multishot accept and recv, provided buffers.
#[derive(Debug, Parser)]
#[command(
    name = "uring-server",
    version,
    about,
    long_about = None,
    after_help = "For this model --workers defaults to 1: one ring on one thread. --workers N runs N rings on N threads, each with its own SO_REUSEPORT listener: it helps when the server saturates a core and others are free, not when the load generator needs them."
)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Give each ring a kernel thread polling its submission queue (SQPOLL): no io_uring_enter to submit while busy, but it burns a core (on two cores it competes with the load generator)
    #[arg(long)]
    sqpoll: bool,

    /// Use one-shot accept and recv, re-armed after each completion (what kernels before 5.19/6.0 offer) instead of multishot
    #[arg(long)]
    single_shot: bool,

    /// Receive buffers of 4 KiB in each ring's registered buffer ring (a power of two)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_buffers)]
    buffers: u16,
}

fn parse_buffers(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && n <= 32768 => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 1 to 32768")),
    }
}

/// Size of one provided receive buffer.
const BUF_SIZE: usize = 4096;
/// Buffer group id of the ring of receive buffers.
const BGID: u16 = 0;
/// Submission queue entries (the completion queue gets four times more).
const SQ_ENTRIES: u32 = 4096;
/// At most this much output goes in one send request.
const SEND_MAX: usize = 256 * 1024;
/// Send buffers up to this size are kept for reuse.
const SPARE_MAX: usize = 64 * 1024;
/// `user_data` of requests whose completion needs no handling (cancels).
const IGNORE: u64 = u64::MAX;
/// A connection taken from the backlog after a stop gets this long to send
/// its request.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// While stopping (or with accepts paused) the loop wakes at least this often.
const TICK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    cli::main(run)
}

/// What every ring of the server is built with.
struct Config {
    sqpoll: bool,
    buffers: u16,
    multishot_accept: bool,
    multishot_recv: bool,
    kernel: String,
}

fn run(args: Args) -> anyhow::Result<()> {
    signals::install()?;
    // The shared --workers defaults to the CPUs; this model's lesson is one ring.
    let workers = args.common.workers.unwrap_or(1);
    let data = DataDir::prepare(args.common.data_dir.as_deref())?;
    let shared = Shared::new("uring", &args.common, &data, workers)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    // Multishot accept came in 5.19, multishot recv in 6.0: older kernels
    // get the one-shot forms (a ring that refuses multishot with EINVAL
    // falls back at run time too).
    let version = kernel_version(&kernel);
    let config = Config {
        sqpoll: args.sqpoll,
        buffers: args.buffers,
        multishot_accept: !args.single_shot && version >= (5, 19),
        multishot_recv: !args.single_shot && version >= (6, 0),
        kernel,
    };
    let (listeners, shown) = listeners(&args.common, workers)?;
    if workers == 1 {
        let listener = listeners.into_iter().next().expect("one listener");
        let mut server = Server::new(&config, listener, ServerHost::for_process(&shared))?;
        cli::ready(&shown);
        return server.run();
    }
    // N rings on N threads. Each builds its own ring (SINGLE_ISSUER binds a
    // ring to the thread that made it) and reports whether it could.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (tx, config, shared) = (tx.clone(), &config, &shared);
                scope.spawn(move || {
                    match Server::new(config, listener, ServerHost::for_thread(shared, i)) {
                        Ok(mut server) => {
                            let _ = tx.send(Ok(()));
                            server.run()
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            Ok(())
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for ready in rx.iter().take(workers as usize) {
            if let Err(e) = ready {
                // The rings already running stop through the self-pipe.
                signals::request_stop();
                return Err(e);
            }
        }
        cli::ready(&shown);
        let mut result = Ok(());
        for t in threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a ring's thread panicked")));
            if let Err(e) = r {
                signals::request_stop();
                result = result.and(Err(e));
            }
        }
        result
    })
}

/// `6.18.44-foo` -> (6, 18).
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// One listener per ring: SO_REUSEPORT sockets on the same TCP port (the
/// kernel spreads connections over them), or one unix socket shared.
fn listeners(common: &Common, workers: u32) -> anyhow::Result<(Vec<OwnedFd>, String)> {
    let reuseport = workers > 1 && matches!(common.listen, ListenAddr::Tcp(_));
    let opts = ListenOptions {
        reuseport,
        nonblocking: false,
        per_worker: false,
    };
    let (first, shown) = net::listen(&common.listen, common.backlog, opts)?;
    let mut all = vec![first];
    for _ in 1..workers {
        if reuseport {
            // The port the first one got (port 0 asks for any).
            let addr = ListenAddr::parse(&shown).map_err(anyhow::Error::msg)?;
            all.push(net::listen(&addr, common.backlog, opts)?.0);
        } else {
            all.push(all[0].try_clone()?);
        }
    }
    Ok((all, shown))
}

/// The one line a machine without a usable io_uring gets.
fn unavailable(detail: impl std::fmt::Display, kernel: &str) -> anyhow::Error {
    anyhow::anyhow!("io_uring unavailable: {detail} (kernel {kernel})")
}

/// Builds a ring with the best setup flags this kernel takes, trying
/// newer ones first (an older kernel refuses unknown flags with EINVAL).
fn build_ring(config: &Config) -> anyhow::Result<IoUring> {
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
            Err(e) => return Err(setup_error(e, &config.kernel)),
        }
    }
    let e = last.expect("at least one attempt");
    Err(unavailable(format!("io_uring_setup: {e}"), &config.kernel))
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

/// Checks that the kernel has every request type the model submits.
fn probe(ring: &IoUring, kernel: &str) -> anyhow::Result<()> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unavailable(format!("IORING_REGISTER_PROBE (5.6): {e}"), kernel))?;
    for (code, name) in [
        (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
        (opcode::Recv::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
        (opcode::TimeoutRemove::CODE, "IORING_OP_TIMEOUT_REMOVE"),
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

/// A request in flight. Its slab index and generation are its `user_data`.
enum Op {
    /// The (multishot) accept on the listener.
    Accept,
    /// The poll on the signal self-pipe.
    Stop,
    /// The one timeout: the timer heap's earliest deadline. The kernel
    /// reads the timespec when it takes the request, so it lives as long.
    Timer { _spec: Box<Timespec> },
    /// A connection's (multishot) receive into a provided buffer.
    Recv { conn: usize },
    /// A send of `buf`, which the kernel reads until the completion.
    Send { conn: usize, buf: Vec<u8> },
    /// Opening a `/file` (the kernel reads the path when it runs the open).
    Open { conn: usize, _path: CString },
    /// Reading it into `buf[filled..]`.
    Read {
        conn: usize,
        file: OwnedFd,
        buf: Vec<u8>,
        filled: usize,
    },
}

impl Op {
    /// The connection this request belongs to.
    fn conn(&self) -> Option<usize> {
        match self {
            Op::Recv { conn }
            | Op::Send { conn, .. }
            | Op::Open { conn, .. }
            | Op::Read { conn, .. } => Some(*conn),
            Op::Accept | Op::Stop | Op::Timer { .. } => None,
        }
    }
}

struct Token {
    generation: u32,
    op: Op,
}

/// The ring and the requests in flight on it.
struct Submit {
    ring: IoUring,
    ops: Slab<Token>,
    generation: u32,
    /// Entries that found the submission queue full.
    backlog: VecDeque<squeue::Entry>,
}

impl Submit {
    /// Queues `sqe` for `op`; returns its `user_data`.
    fn queue(&mut self, op: Op, sqe: squeue::Entry) -> u64 {
        // The generation tells a late completion (or a cancel aimed at a
        // finished request) from the request that reuses the slab index.
        self.generation = self.generation.wrapping_add(1);
        let index = self.ops.insert(Token {
            generation: self.generation,
            op,
        });
        let user_data = (u64::from(self.generation) << 32) | index as u64;
        self.push(sqe.user_data(user_data));
        user_data
    }

    /// Asks the kernel to cancel the request `target`.
    fn cancel(&mut self, target: u64) {
        self.push(opcode::AsyncCancel::new(target).build().user_data(IGNORE));
    }

    fn push(&mut self, sqe: squeue::Entry) {
        if !self.backlog.is_empty() || !self.try_push(&sqe) {
            // The submission queue is full: hand the kernel what it holds
            // now (one more io_uring_enter) and try again, or keep the
            // entry for the next turn of the loop.
            let _ = self.ring.submit();
            if !self.backlog.is_empty() || !self.try_push(&sqe) {
                self.backlog.push_back(sqe);
            }
        }
    }

    fn try_push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: every pointer an entry carries points into heap memory
        // owned by its `Op` in `self.ops` (a send's buffer, a path, a
        // timespec, a read buffer), into the buffer ring, or at nothing;
        // an `Op` is dropped only after its final completion.
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

    /// The request a completion belongs to: removed from the slab if this
    /// is its last completion, copied if a multishot request goes on.
    /// `None` for completions that need no handling, or that belong to a
    /// request already finished (a stale generation).
    fn finish(&mut self, user_data: u64, more: bool) -> Option<Op> {
        if user_data == IGNORE {
            return None;
        }
        let index = (user_data & 0xffff_ffff) as usize;
        let generation = (user_data >> 32) as u32;
        let token = self.ops.get(index)?;
        if token.generation != generation {
            return None;
        }
        if more {
            return match token.op {
                Op::Accept => Some(Op::Accept),
                Op::Recv { conn } => Some(Op::Recv { conn }),
                _ => None,
            };
        }
        Some(self.ops.remove(index).op)
    }
}

/// Maps `len` bytes of fresh zeroed memory, faulted in now (MAP_POPULATE),
/// so its cost shows at start-up and not per connection.
fn map_memory(len: usize) -> anyhow::Result<NonNull<u8>> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let len = NonZeroUsize::new(len).ok_or_else(|| anyhow::anyhow!("empty mapping"))?;
    // SAFETY: a fresh private anonymous mapping, aliased by nothing.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
        )?
    };
    Ok(ptr.cast())
}

/// The registered ring of provided receive buffers: `count` buffers of
/// [`BUF_SIZE`] bytes. The kernel takes one from the head when data
/// arrives; the model puts it back at the tail once handled.
struct BufRing {
    /// The ring of `count` entries the kernel reads (page-aligned).
    entries: NonNull<BufRingEntry>,
    /// The buffers themselves.
    memory: NonNull<u8>,
    count: u16,
    tail: u16,
}

impl BufRing {
    fn new(count: u16) -> anyhow::Result<BufRing> {
        let mut ring = BufRing {
            entries: map_memory(count as usize * std::mem::size_of::<BufRingEntry>())?.cast(),
            memory: map_memory(count as usize * BUF_SIZE)?,
            count,
            tail: 0,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.count);
        // SAFETY: buffer `bid` lies inside `memory`; the kernel filled its
        // first `len` (≤ BUF_SIZE) bytes and writes it again only after
        // `recycle` puts it back, which needs `&mut self` and so cannot
        // happen while this slice lives.
        unsafe {
            std::slice::from_raw_parts(self.memory.as_ptr().add(bid * BUF_SIZE), len.min(BUF_SIZE))
        }
    }

    /// Gives buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let mask = self.count - 1;
        let bid = bid & mask;
        // SAFETY: the index is masked into the `count` entries of our
        // mapping; the entry at our tail is past what we have published,
        // so the kernel does not read it yet; the buffer address is inside
        // `memory`.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(usize::from(self.tail & mask));
            entry.set_addr(self.memory.as_ptr().add(usize::from(bid) * BUF_SIZE) as u64);
            entry.set_len(BUF_SIZE as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the ring's tail is a u16 inside the first entry of our
        // mapping, 2-byte aligned; the kernel reads it concurrently, so it
        // is published with a release store after the entry is written.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        use nix::sys::mman::munmap;
        // SAFETY: both mappings were made in `new` with these lengths and
        // nothing points into them any more: the server drops its ring
        // (and with it the registration) before its buffer ring.
        unsafe {
            let _ = munmap(
                self.entries.cast(),
                self.count as usize * std::mem::size_of::<BufRingEntry>(),
            );
            let _ = munmap(self.memory.cast(), self.count as usize * BUF_SIZE);
        }
    }
}

/// The runtime's host. `/file` is read through the ring: the state machine
/// parks the request, the model takes its name (`take_file_request`),
/// queues an open and a read, then calls `Conn::file_done`.
struct UringHost {
    inner: ServerHost,
}

impl Host for UringHost {
    fn response_headers(&self) -> &[u8] {
        self.inner.response_headers()
    }

    fn max_conns(&self) -> u64 {
        self.inner.max_conns()
    }

    fn status(&mut self) -> Status {
        self.inner.status()
    }

    fn on_request(&mut self) {
        self.inner.on_request()
    }
}

/// One connection.
struct Slot {
    fd: OwnedFd,
    /// Its place under `--max-conns`.
    _admitted: Admitted,
    conn: Conn,
    /// The deadline this slot has in the timer heap.
    timer: Option<Instant>,
    /// The armed receive, and whether we asked to cancel it.
    recv: Option<u64>,
    recv_cancelled: bool,
    /// The send in flight (one at a time keeps the bytes in order).
    sending: Option<u64>,
    /// Requests in flight that name this slot.
    ops: u32,
    /// Closed: freed when `ops` reaches 0.
    closing: bool,
}

struct Server {
    /// Declared first so that it is dropped first: the kernel lets go of
    /// the buffer ring before its memory is unmapped.
    sq: Submit,
    bufs: BufRing,
    host: UringHost,
    data_dir: PathBuf,
    listener: Option<OwnedFd>,
    accept_op: Option<u64>,
    multishot_accept: bool,
    multishot_recv: bool,
    conns: Slab<Slot>,
    timers: Timers,
    /// The armed timeout: its deadline and `user_data`.
    timer_op: Option<(Instant, u64)>,
    /// Send buffers kept for reuse.
    spare: Vec<Vec<u8>>,
    stopping_since: Option<Instant>,
    accept_paused_until: Option<Instant>,
    completions: Vec<(u64, i32, u32)>,
}

impl Server {
    fn new(config: &Config, listener: OwnedFd, host: ServerHost) -> anyhow::Result<Server> {
        let ring = build_ring(config)?;
        probe(&ring, &config.kernel)?;
        let bufs = BufRing::new(config.buffers)?;
        // SAFETY: the ring memory belongs to `bufs`, which the server drops
        // only after the io_uring (field order), so it stays valid while
        // registered.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries.as_ptr() as u64,
                config.buffers,
                BGID,
                0,
            )
        }
        .map_err(|e| {
            unavailable(
                format!("provided buffer rings (IORING_REGISTER_PBUF_RING, 5.19): {e}"),
                &config.kernel,
            )
        })?;
        let shared = host.shared().clone();
        Ok(Server {
            sq: Submit {
                ring,
                ops: Slab::new(),
                generation: 0,
                backlog: VecDeque::new(),
            },
            bufs,
            host: UringHost { inner: host },
            data_dir: shared.data_dir.clone(),
            listener: Some(listener),
            accept_op: None,
            multishot_accept: config.multishot_accept,
            multishot_recv: config.multishot_recv,
            conns: Slab::new(),
            timers: Timers::new(),
            timer_op: None,
            spare: Vec::new(),
            stopping_since: None,
            accept_paused_until: None,
            completions: Vec::new(),
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        self.arm_accept();
        let stop =
            opcode::PollAdd::new(Fd(signals::stop_fd().as_raw_fd()), libc::POLLIN as u32).build();
        self.sq.queue(Op::Stop, stop);
        loop {
            // Submit everything queued and wait for one completion: one
            // io_uring_enter per turn of the loop.
            self.sq.flush_backlog();
            match self.sq.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                    // A signal interrupted the wait: the stop poll reports it.
                    Errno::EINTR => {}
                    // The completion queue is full (EBUSY) or the kernel is
                    // short of memory for requests (EAGAIN): reap first,
                    // submit again next turn.
                    Errno::EBUSY | Errno::EAGAIN => {}
                    _ => return Err(anyhow::anyhow!("io_uring_enter: {e}")),
                },
            }
            // Take every completion there is, then handle them (handlers
            // queue new requests, which needs the ring).
            let now = Instant::now();
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(
                self.sq
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                self.complete(user_data, result, flags, now);
            }
            completions.clear();
            self.completions = completions;

            self.run_timers();
            if let Some(since) = self.stopping_since {
                self.drain_all(since);
                // Exit once every connection is gone and the kernel has let
                // go of the listener (the cancelled accept completed): a
                // server started right after on the same port must not
                // find it still in use.
                if self.conns.is_empty() && self.accept_op.is_none() {
                    return Ok(());
                }
            }
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                self.arm_accept();
            }
            self.arm_timer();
        }
    }

    /// Handles one completion.
    fn complete(&mut self, user_data: u64, result: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let Some(op) = self.sq.finish(user_data, more) else {
            return;
        };
        let conn = op.conn();
        if let (false, Some(token)) = (more, conn) {
            if let Some(slot) = self.conns.get_mut(token) {
                slot.ops -= 1;
            }
        }
        match op {
            Op::Accept => self.on_accept(result, more, now),
            Op::Stop => self.on_stop(result, now),
            Op::Timer { .. } => {
                if self.timer_op.is_some_and(|(_, u)| u == user_data) {
                    self.timer_op = None;
                }
            }
            Op::Recv { conn } => self.on_recv(conn, result, flags, more, now),
            Op::Send { conn, buf } => self.on_send(conn, result, buf, now),
            Op::Open { conn, .. } => self.on_open(conn, result, now),
            Op::Read {
                conn,
                file,
                buf,
                filled,
            } => self.on_read(conn, result, file, buf, filled, now),
        }
        if let Some(token) = conn {
            self.free_if_done(token);
        }
    }

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept_op.is_some() || self.accept_paused_until.is_some() {
            return;
        }
        let fd = Fd(listener.as_raw_fd());
        let sqe = if self.multishot_accept {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        self.accept_op = Some(self.sq.queue(Op::Accept, sqe));
    }

    /// A connection accepted (or an accept error). A multishot accept that
    /// posts a completion without `more` has stopped and is re-armed.
    fn on_accept(&mut self, result: i32, more: bool, now: Instant) {
        if !more {
            self.accept_op = None;
        }
        if result >= 0 {
            // SAFETY: the kernel just installed this descriptor for us;
            // nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            self.add_conn(fd, now);
        } else {
            match Errno::from_raw(-result) {
                Errno::EINVAL if self.multishot_accept && !more => {
                    eprintln!("uring-server: multishot accept refused; using one-shot accepts");
                    self.multishot_accept = false;
                }
                e if net::accept_error_is_exhaustion(e) => {
                    // Out of descriptors: stop accepting for a moment rather
                    // than spin on a listener that stays ready.
                    eprintln!("uring-server: accept: {e}; pausing accepts for 100 ms");
                    self.accept_paused_until = Some(now + TICK);
                    if let (true, Some(op)) = (more, self.accept_op) {
                        self.sq.cancel(op);
                    }
                }
                // Cancelled at a stop, or a connection reset before we took it.
                _ => {}
            }
        }
        if self.accept_op.is_none() {
            self.arm_accept();
        }
    }

    fn add_conn(&mut self, fd: OwnedFd, now: Instant) {
        let stats = self.host.inner.stats();
        let Some(admitted) = self.host.inner.shared().admit() else {
            return self.host.inner.shared().refuse(fd);
        };
        net::set_nodelay(&fd);
        stats.opened();
        let token = self.conns.insert(Slot {
            fd,
            conn: self.host.inner.shared().new_conn(now),
            _admitted: admitted,
            timer: None,
            recv: None,
            recv_cancelled: false,
            sending: None,
            ops: 0,
            closing: false,
        });
        self.drive(token, now);
    }

    /// Bytes received (or EOF, or an error) on connection `token`.
    fn on_recv(&mut self, token: usize, result: i32, flags: u32, more: bool, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        if let Some(slot) = self.conns.get_mut(token) {
            if !more {
                slot.recv = None;
                slot.recv_cancelled = false;
            }
            if !slot.closing {
                match result {
                    n if n > 0 => {
                        if let Some(bid) = bid {
                            let data = self.bufs.data(bid, n as usize);
                            slot.conn.handle_input(data, now, &mut self.host);
                        }
                    }
                    0 => slot.conn.handle_eof(now, &mut self.host),
                    e => match Errno::from_raw(-e) {
                        // The buffer ring ran dry (ENOBUFS) or the recv was
                        // cancelled or interrupted: this recv has stopped, and
                        // `drive` arms a new one if the connection wants to read
                        // (by then this batch's buffers are back in the ring).
                        Errno::ENOBUFS | Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {}
                        Errno::EINVAL if self.multishot_recv && !more => {
                            eprintln!(
                                "uring-server: multishot recv refused; using one-shot receives"
                            );
                            self.multishot_recv = false;
                        }
                        _ => self.close(token),
                    },
                }
            }
        }
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        self.drive(token, now);
    }

    /// A send completed: `result` bytes went (a short send leaves the rest
    /// in the connection's output for the next send).
    fn on_send(&mut self, token: usize, result: i32, mut buf: Vec<u8>, now: Instant) {
        buf.clear();
        if buf.capacity() <= SPARE_MAX && self.spare.len() < 64 {
            self.spare.push(buf);
        }
        let Some(slot) = self.conns.get_mut(token) else {
            return;
        };
        slot.sending = None;
        if slot.closing {
            return;
        }
        match result {
            n if n > 0 => slot.conn.advance_output(n as usize, now, &mut self.host),
            e if e == -libc::EINTR || e == -libc::EAGAIN => {}
            // 0 bytes, EPIPE, ECONNRESET: the peer is gone.
            _ => return self.close(token),
        }
        self.drive(token, now);
    }

    /// Queues the open of file `name` for connection `token`.
    fn open_file(&mut self, token: usize, name: &str, now: Instant) {
        let path = self.data_dir.join(name);
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            let slot = &mut self.conns[token];
            let err = std::io::Error::from(std::io::ErrorKind::InvalidInput);
            return slot.conn.file_done(Err(err), now, &mut self.host);
        };
        let sqe = opcode::OpenAt::new(Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(libc::O_RDONLY | libc::O_CLOEXEC)
            .build();
        self.sq.queue(
            Op::Open {
                conn: token,
                _path: path,
            },
            sqe,
        );
        self.conns[token].ops += 1;
    }

    fn on_open(&mut self, token: usize, result: i32, now: Instant) {
        // SAFETY: a non-negative result is a descriptor the kernel just
        // opened for us; nothing else owns it.
        let file = (result >= 0).then(|| unsafe { OwnedFd::from_raw_fd(result) });
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        let Some(file) = file else {
            let err = std::io::Error::from_raw_os_error(-result);
            slot.conn.file_done(Err(err), now, &mut self.host);
            return self.drive(token, now);
        };
        // The inode is in memory once open: fstat does not touch the disk.
        match nix::sys::stat::fstat(&file) {
            Ok(st) => self.read_chunk(token, file, vec![0; st.st_size as usize], 0, now),
            Err(e) => {
                slot.conn.file_done(Err(e.into()), now, &mut self.host);
                self.drive(token, now);
            }
        }
    }

    /// Queues the read of `buf[filled..]`, or hands over the content when full.
    fn read_chunk(
        &mut self,
        token: usize,
        file: OwnedFd,
        buf: Vec<u8>,
        filled: usize,
        now: Instant,
    ) {
        if filled >= buf.len() {
            self.conns[token]
                .conn
                .file_done(Ok(buf), now, &mut self.host);
            return self.drive(token, now);
        }
        let len = (buf.len() - filled).min(1 << 30) as u32;
        let sqe = opcode::Read::new(Fd(file.as_raw_fd()), buf[filled..].as_ptr().cast_mut(), len)
            .offset(filled as u64)
            .build();
        self.sq.queue(
            Op::Read {
                conn: token,
                file,
                buf,
                filled,
            },
            sqe,
        );
        self.conns[token].ops += 1;
    }

    fn on_read(
        &mut self,
        token: usize,
        result: i32,
        file: OwnedFd,
        mut buf: Vec<u8>,
        filled: usize,
        now: Instant,
    ) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        match result {
            n if n > 0 => self.read_chunk(token, file, buf, filled + n as usize, now),
            // The file is shorter than it was at open.
            0 => {
                buf.truncate(filled);
                self.read_chunk(token, file, buf, filled, now)
            }
            e if e == -libc::EINTR || e == -libc::EAGAIN => {
                self.read_chunk(token, file, buf, filled, now)
            }
            e => {
                let err = std::io::Error::from_raw_os_error(-e);
                slot.conn.file_done(Err(err), now, &mut self.host);
                self.drive(token, now);
            }
        }
    }

    /// After any change to a connection: queue what it needs next — a
    /// file open, a send, a receive (or the cancel of one: a multishot
    /// recv cannot be paused) — or close it; then set its deadline.
    fn drive(&mut self, token: usize, now: Instant) {
        let file = self
            .conns
            .get_mut(token)
            .and_then(|s| s.conn.take_file_request());
        if let Some(name) = file {
            self.open_file(token, &name, now);
        }
        let Some(slot) = self.conns.get_mut(token) else {
            return;
        };
        if slot.closing {
            return;
        }
        if slot.sending.is_none() && !slot.conn.output().is_empty() {
            let out = slot.conn.output();
            let len = out.len().min(SEND_MAX);
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.extend_from_slice(&out[..len]);
            let sqe = opcode::Send::new(Fd(slot.fd.as_raw_fd()), buf.as_ptr(), len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            slot.sending = Some(self.sq.queue(Op::Send { conn: token, buf }, sqe));
            slot.ops += 1;
        }
        if slot.conn.wants_close() {
            return self.close(token);
        }
        match (slot.conn.wants_read(), slot.recv) {
            (true, None) => {
                let fd = Fd(slot.fd.as_raw_fd());
                let sqe = if self.multishot_recv {
                    opcode::RecvMulti::new(fd, BGID).build()
                } else {
                    opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                        .buf_group(BGID)
                        .build()
                        .flags(squeue::Flags::BUFFER_SELECT)
                };
                slot.recv = Some(self.sq.queue(Op::Recv { conn: token }, sqe));
                slot.ops += 1;
            }
            // Backpressure (a parked /wait, output the peer does not read):
            // stop receiving, so that TCP's window holds the peer back.
            (false, Some(op)) if self.multishot_recv && !slot.recv_cancelled => {
                self.sq.cancel(op);
                slot.recv_cancelled = true;
            }
            _ => {}
        }
        let deadline = slot.conn.poll_timeout();
        self.timers.schedule(&mut slot.timer, token, deadline);
    }

    /// Closes a connection: cancels its requests in flight; the slot (and
    /// the descriptor) go when the last of them has completed.
    fn close(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
            return;
        };
        slot.closing = true;
        if let (Some(op), false) = (slot.recv, slot.recv_cancelled) {
            self.sq.cancel(op);
            slot.recv_cancelled = true;
        }
        if let Some(op) = slot.sending {
            self.sq.cancel(op);
        }
        self.free_if_done(token);
    }

    fn free_if_done(&mut self, token: usize) {
        if self
            .conns
            .get(token)
            .is_some_and(|s| s.closing && s.ops == 0)
        {
            drop(self.conns.remove(token));
            self.host.inner.stats().closed();
        }
    }

    /// Arms the one timeout for the earliest deadline (the timer heap's,
    /// or a tick while stopping or with accepts paused), replacing the
    /// armed one if it is later.
    fn arm_timer(&mut self) {
        let now = Instant::now();
        let mut next = self.timers.next();
        if self.stopping_since.is_some() {
            next = Some(next.map_or(now + TICK, |t| t.min(now + TICK)));
        }
        if let Some(t) = self.accept_paused_until {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let Some(when) = next else {
            return;
        };
        if self.timer_op.is_some_and(|(armed, _)| armed <= when) {
            return;
        }
        if let Some((_, old)) = self.timer_op.take() {
            let remove = opcode::TimeoutRemove::new(old).build().user_data(IGNORE);
            self.sq.push(remove);
        }
        let ts = Box::new(Timespec::from(when.saturating_duration_since(now)));
        let sqe = opcode::Timeout::new(&*ts).build();
        self.timer_op = Some((when, self.sq.queue(Op::Timer { _spec: ts }, sqe)));
    }

    /// Fires due deadlines: a parked /wait is answered, a slow or idle peer
    /// is timed out. Stale heap entries (the deadline moved) are skipped.
    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(slot) = self.conns.get_mut(token).filter(|s| !s.closing) else {
                continue;
            };
            if slot.timer != Some(when) {
                continue;
            }
            slot.timer = None;
            slot.conn.handle_timeout(now, &mut self.host);
            self.drive(token, now);
        }
    }

    fn on_stop(&mut self, result: i32, now: Instant) {
        if result < 0 && result != -libc::ECANCELED {
            // Interrupted: poll again. (The pipe is not drained: with
            // several rings, every one of them must see it readable.)
            let stop =
                opcode::PollAdd::new(Fd(signals::stop_fd().as_raw_fd()), libc::POLLIN as u32)
                    .build();
            self.sq.queue(Op::Stop, stop);
            return;
        }
        if self.stopping_since.is_some() {
            return;
        }
        self.stopping_since = Some(now);
        // Take what the backlog holds (non-blocking now, so that the loop
        // ends at EAGAIN), then cancel the accept and close the listener.
        if let Some(listener) = self.listener.take() {
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            let _ = fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            loop {
                match net::accept(&listener, SockFlag::empty()) {
                    Ok(fd) => self.add_conn(fd, now),
                    Err(Errno::EINTR) => {}
                    Err(e) if net::accept_error_is_transient(e) => {}
                    Err(_) => break,
                }
            }
            if let Some(op) = self.accept_op {
                // A connection the accept takes before the cancel lands is
                // still served; the kernel holds the socket until then.
                self.sq.cancel(op);
            }
        }
    }

    /// While stopping: connections that had a request (or their grace)
    /// close once idle.
    fn drain_all(&mut self, since: Instant) {
        let now = Instant::now();
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let slot = &mut self.conns[token];
            if slot.closing {
                continue;
            }
            if slot.conn.requests() > 0 || now >= since + STOP_GRACE {
                slot.conn.drain();
            }
            self.drive(token, now);
        }
    }
}
