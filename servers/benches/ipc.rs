//! The IPC methods the notes compare, measured between two processes:
//! `cargo bench -p iomodels-servers --bench ipc`.
//!
//! Two groups, one `BenchmarkId` per method and message size (64 B and
//! 4 KiB), so criterion's report puts the methods side by side:
//!
//! * `roundtrip` — the parent sends a message, the child sends it back:
//!   the time per round trip is the latency of one request/answer hop
//!   (what swoole-server's reactor ↔ worker channel pays twice per request);
//! * `throughput` — the parent sends a batch one way, the child reads every
//!   message and answers the last: bytes per second through the method.
//!
//! **Processes, not threads.** The two ends are a parent and a child made
//! by `fork`, because that is what the notes compare (php-fpm, Swoole's
//! reactor and worker, CGI) and what some methods are for (a FIFO or a
//! System V queue between threads would be an odd choice). Each case forks
//! a child that lives for the case; the channel is made before the fork
//! and each end keeps its half.
//!
//! The methods: `pipe` (two pipes), `fifo` (two named pipes), `unix-stream`
//! and `unix-dgram` and `unix-seqpacket` (socket pairs), `unix-socket` (a
//! listening unix socket and a connection to it) against `tcp-loopback`
//! (127.0.0.1, TCP_NODELAY), `posix-mq` (mq_send/mq_receive), `sysv-msg`
//! (msgsnd/msgrcv), and `shm-futex` / `shm-eventfd` / `shm-sem` (a ring
//! of slots in a shared mapping; a reader that finds it empty sleeps on a
//! futex, reads an eventfd or waits on a process-shared POSIX semaphore,
//! and the writer wakes it only when it sleeps).
//!
//! A method the kernel refuses here (POSIX queues without CONFIG_POSIX_MQUEUE,
//! System V IPC in a restricted container) is skipped with one line that
//! says so and why. `IOMODELS_IPC_CPUS=A,B` pins the parent to CPU A and
//! the child to CPU B (default: wherever the caller's affinity lets them
//! run; `taskset -c 1 cargo bench …` puts both on one core).
//!
//! **`IOMODELS_IPC_CLOCK=cpu`** reports the CPU time both processes spent
//! (the parent's and the child's CPU clocks, `clock_getcpuclockid`) instead
//! of the wall time: on a machine shared with other work, the wall time of
//! a round trip includes whatever else ran on the core meanwhile, the CPU
//! time only what the method cost the two processes (system calls,
//! wake-ups, the switches between them). criterion still labels it "time".
//!
//! `-- --test` runs every case once (a smoke test of each method);
//! `-- roundtrip/unix` runs a subset. docs/ipc.md has a table and what it
//! answers.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// The message sizes: a small request and a page.
const SIZES: [usize; 2] = [64, 4096];
/// Byte 0 of a message: what the child should do with it.
const DATA: u8 = 0;
/// Throughput: the last of a batch, answer it.
const LAST: u8 = 1;
/// Exit.
const QUIT: u8 = 2;

/// One end of a channel: sends and receives whole messages of a size both
/// ends know.
trait End {
    /// Sends `msg` whole.
    fn send(&mut self, msg: &[u8]) -> nix::Result<()>;
    /// Fills `buf` with one message.
    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()>;
}

/// The methods.
const METHODS: &[&str] = &[
    "pipe",
    "fifo",
    "unix-stream",
    "unix-dgram",
    "unix-seqpacket",
    "unix-socket",
    "tcp-loopback",
    "posix-mq",
    "sysv-msg",
    "shm-futex",
    "shm-eventfd",
    "shm-sem",
];

/// The two ends of `method` (the parent's, the child's), or why not here.
fn channel(method: &str, size: usize) -> anyhow::Result<(Box<dyn End>, Box<dyn End>)> {
    Ok(match method {
        "pipe" => {
            let (r1, w1) = nix::unistd::pipe()?;
            let (r2, w2) = nix::unistd::pipe()?;
            (Box::new(Stream::new(r2, w1)), Box::new(Stream::new(r1, w2)))
        }
        "fifo" => {
            let (r1, w1) = fifo()?;
            let (r2, w2) = fifo()?;
            (Box::new(Stream::new(r2, w1)), Box::new(Stream::new(r1, w2)))
        }
        "unix-stream" => {
            let (a, b) = pair(SockType::Stream)?;
            (Box::new(Stream::socket(a)?), Box::new(Stream::socket(b)?))
        }
        "unix-dgram" => {
            let (a, b) = pair(SockType::Datagram)?;
            (Box::new(Packet(a)), Box::new(Packet(b)))
        }
        "unix-seqpacket" => {
            let (a, b) = pair(SockType::SeqPacket)?;
            (Box::new(Packet(a)), Box::new(Packet(b)))
        }
        "unix-socket" | "tcp-loopback" => {
            let (a, b) = connected(method == "tcp-loopback")?;
            (Box::new(Stream::socket(a)?), Box::new(Stream::socket(b)?))
        }
        "posix-mq" => {
            let (a, b) = (sys::PosixMq::open(size)?, sys::PosixMq::open(size)?);
            (
                Box::new(sys::MqEnd { tx: a.0, rx: b.0 }),
                Box::new(sys::MqEnd { tx: b.0, rx: a.0 }),
            )
        }
        "sysv-msg" => {
            let (a, b) = (sys::msg_queue()?, sys::msg_queue()?);
            (
                Box::new(sys::MsgEnd::new(a, b, size, true)),
                Box::new(sys::MsgEnd::new(b, a, size, false)),
            )
        }
        "shm-futex" => shm::channel(shm::How::Futex)?,
        "shm-eventfd" => shm::channel(shm::How::EventFd)?,
        "shm-sem" => shm::channel(shm::How::Sem)?,
        other => anyhow::bail!("no method {other}"),
    })
}

/// A byte stream (pipe, FIFO, stream socket): messages are `size` bytes
/// back to back; a read may return part of one.
struct Stream {
    rd: OwnedFd,
    wr: OwnedFd,
}

impl Stream {
    fn new(rd: OwnedFd, wr: OwnedFd) -> Stream {
        Stream { rd, wr }
    }

    fn socket(fd: OwnedFd) -> anyhow::Result<Stream> {
        Ok(Stream {
            wr: fd.try_clone()?,
            rd: fd,
        })
    }
}

impl End for Stream {
    fn send(&mut self, mut msg: &[u8]) -> nix::Result<()> {
        while !msg.is_empty() {
            match nix::unistd::write(&self.wr, msg) {
                Ok(n) => msg = &msg[n..],
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&self.rd, &mut buf[got..]) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => got += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A socket that keeps message boundaries (datagram, seqpacket): one
/// message per call.
struct Packet(OwnedFd);

impl End for Packet {
    fn send(&mut self, msg: &[u8]) -> nix::Result<()> {
        retry(|| socket::send(self.0.as_raw_fd(), msg, socket::MsgFlags::empty())).map(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()> {
        let n = retry(|| socket::recv(self.0.as_raw_fd(), buf, socket::MsgFlags::empty()))?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(Errno::EMSGSIZE)
        }
    }
}

/// Calls `f` again while it is interrupted.
fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => {}
            r => return r,
        }
    }
}

fn pair(kind: SockType) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket::socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)?;
    Ok((a, b))
}

/// A listening socket (unix path or 127.0.0.1), a connection to it and the
/// accepted end: what two unrelated processes would have.
fn connected(tcp: bool) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::net::{UnixListener, UnixStream};
    if tcp {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let c = std::net::TcpStream::connect(l.local_addr()?)?;
        let (s, _) = l.accept()?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        Ok((c.into(), s.into()))
    } else {
        let path = scratch("sock");
        let l = UnixListener::bind(&path)?;
        let c = UnixStream::connect(&path)?;
        let (s, _) = l.accept()?;
        let _ = std::fs::remove_file(&path);
        Ok((c.into(), s.into()))
    }
}

/// Both ends of a new FIFO (the path is removed at once; the ends stay).
/// The read end is opened non-blocking first, so that opening the write
/// end does not wait for a reader; then it is made blocking again.
fn fifo() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    use nix::sys::stat::Mode;
    let path = scratch("fifo");
    nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)?;
    let rd = open(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
    let wr = open(&path, OFlag::O_WRONLY, Mode::empty())?;
    let _ = std::fs::remove_file(&path);
    fcntl(rd.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((rd, wr))
}

/// A fresh path in the temp dir.
fn scratch(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("iomodels-ipc-{}-{what}-{n}", std::process::id()))
}

/// The child of one case: echoes (round trip) or reads batches and
/// answers their last message (throughput) until told to quit.
fn child(end: &mut dyn End, buf: &mut [u8]) -> i32 {
    loop {
        if end.recv(buf).is_err() {
            return 1;
        }
        if buf[0] == QUIT {
            return 0;
        }
        // Byte 1 = 1: a round trip, answer every message.
        let answer = buf[0] == LAST || buf[1] == 1;
        if answer && end.send(buf).is_err() {
            return 1;
        }
    }
}

/// A forked child at the other end of `method`, for one case.
struct Peer {
    end: Box<dyn End>,
    pid: Pid,
    msg: Vec<u8>,
    /// The child's CPU clock, under `IOMODELS_IPC_CLOCK=cpu`.
    child_clock: Option<libc::clockid_t>,
}

impl Peer {
    /// `echo`: the child answers every message (byte 1 = 1), else only each
    /// batch's last.
    fn start(method: &str, size: usize, echo: bool) -> anyhow::Result<Peer> {
        let (parent, mut theirs) = channel(method, size)?;
        let mut buf = vec![0u8; size];
        let cpus = pinning();
        // SAFETY: criterion runs the benchmarks on this one thread; the
        // child only makes system calls on memory allocated before the
        // fork, and leaves with _exit (no destructor, no atexit handler).
        match unsafe { fork() }? {
            ForkResult::Child => {
                // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                if let Some((_, c)) = cpus {
                    pin(c);
                }
                drop(parent);
                let code = child(theirs.as_mut(), &mut buf);
                // SAFETY: ends the child at once, as said above.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                if let Some((p, _)) = cpus {
                    pin(p);
                }
                let mut msg: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
                msg[0] = DATA;
                msg[1] = u8::from(echo);
                let child_clock = cpu_clock().then(|| child_cpu_clock(child)).transpose()?;
                Ok(Peer {
                    end: parent,
                    pid: child,
                    msg,
                    child_clock,
                })
            }
        }
    }

    /// The clock: wall time, or both processes' CPU time.
    fn now(&self) -> Duration {
        match self.child_clock {
            None => Instant::now().duration_since(*EPOCH.get_or_init(Instant::now)),
            Some(child) => read_clock(libc::CLOCK_PROCESS_CPUTIME_ID) + read_clock(child),
        }
    }

    /// `n` round trips; the time they took.
    fn round_trips(&mut self, n: u64, buf: &mut [u8]) -> Duration {
        let start = self.now();
        for _ in 0..n {
            self.end.send(&self.msg).expect("send");
            self.end.recv(buf).expect("recv");
        }
        self.now().saturating_sub(start)
    }

    /// `n` messages one way and the child's answer to the last.
    fn one_way(&mut self, n: u64, buf: &mut [u8]) -> Duration {
        let start = self.now();
        for i in 0..n {
            self.msg[0] = if i + 1 == n { LAST } else { DATA };
            self.end.send(&self.msg).expect("send");
        }
        self.end.recv(buf).expect("recv");
        self.msg[0] = DATA;
        self.now().saturating_sub(start)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.msg[0] = QUIT;
        let _ = self.end.send(&self.msg);
        let _ = waitpid(self.pid, None);
    }
}

/// Where wall-clock readings start.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// `IOMODELS_IPC_CLOCK=cpu`: measure CPU time, not wall time.
fn cpu_clock() -> bool {
    std::env::var("IOMODELS_IPC_CLOCK").is_ok_and(|v| v == "cpu")
}

/// The CPU clock of process `pid`.
fn child_cpu_clock(pid: Pid) -> anyhow::Result<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock is a valid place for the result.
    let r = unsafe { libc::clock_getcpuclockid(pid.as_raw(), &mut clock) };
    anyhow::ensure!(r == 0, "clock_getcpuclockid: {}", Errno::from_raw(r));
    Ok(clock)
}

/// A clock's reading.
fn read_clock(clock: libc::clockid_t) -> Duration {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: t is a valid timespec to write.
    unsafe { libc::clock_gettime(clock, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `IOMODELS_IPC_CPUS=A,B`: the parent's CPU and the child's.
fn pinning() -> Option<(usize, usize)> {
    let v = std::env::var("IOMODELS_IPC_CPUS").ok()?;
    let (a, b) = v.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity get a valid pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn bench(c: &mut Criterion) {
    if let Some((p, ch)) = pinning() {
        eprintln!("ipc: parent on CPU {p}, child on CPU {ch}");
    }
    if cpu_clock() {
        eprintln!("ipc: times are CPU time of both processes (IOMODELS_IPC_CLOCK=cpu)");
    }
    for (group, echo) in [("roundtrip", true), ("throughput", false)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for method in METHODS {
            for size in SIZES {
                let mut peer = match Peer::start(method, size, echo) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("skipping {group}/{method}/{size}: {e:#}");
                        continue;
                    }
                };
                g.throughput(if echo {
                    Throughput::Elements(1)
                } else {
                    Throughput::Bytes(size as u64)
                });
                let mut buf = vec![0u8; size];
                g.bench_function(BenchmarkId::new(*method, size), |b| {
                    b.iter_custom(|n| {
                        if echo {
                            peer.round_trips(n, &mut buf)
                        } else {
                            peer.one_way(n, &mut buf)
                        }
                    })
                });
            }
        }
        g.finish();
    }
}

/// POSIX and System V message queues: libc, since nix has not got them
/// all (System V not at all).
mod sys {
    use super::End;
    use nix::errno::Errno;
    use std::ffi::CString;

    /// A POSIX message queue, its name unlinked at once (the queue lives
    /// while a descriptor does), closed on drop.
    pub struct PosixMq(pub libc::mqd_t);

    impl PosixMq {
        pub fn open(size: usize) -> anyhow::Result<PosixMq> {
            let name = CString::new(format!("/iomodels-ipc-{}-{}", std::process::id(), next()))?;
            // SAFETY: an all-zero mq_attr is valid; the fields are set below.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            // 10 is the default per-queue limit (/proc/sys/fs/mqueue/msg_max).
            attr.mq_maxmsg = 10;
            attr.mq_msgsize = size as libc::c_long;
            // SAFETY: the name is NUL-terminated; attr lives for the call.
            let q = unsafe {
                libc::mq_open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            };
            if q == -1 {
                anyhow::bail!(
                    "mq_open: {} (is CONFIG_POSIX_MQUEUE in this kernel?)",
                    Errno::last()
                );
            }
            // SAFETY: the same name, NUL-terminated.
            unsafe { libc::mq_unlink(name.as_ptr()) };
            Ok(PosixMq(q))
        }
    }

    fn next() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// One end: sends on one queue, receives from the other. Both
    /// processes hold both descriptors (a queue is closed when the last
    /// holder exits).
    pub struct MqEnd {
        pub tx: libc::mqd_t,
        pub rx: libc::mqd_t,
    }

    impl End for MqEnd {
        fn send(&mut self, msg: &[u8]) -> nix::Result<()> {
            super::retry(|| {
                // SAFETY: msg is valid for its length.
                let r = unsafe { libc::mq_send(self.tx, msg.as_ptr().cast(), msg.len(), 0) };
                Errno::result(r).map(drop)
            })
        }

        fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()> {
            let n = super::retry(|| {
                // SAFETY: buf is valid for writes of its length, which is the
                // queue's message size.
                let r = unsafe {
                    libc::mq_receive(
                        self.rx,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        std::ptr::null_mut(),
                    )
                };
                Errno::result(r)
            })?;
            if n as usize == buf.len() {
                Ok(())
            } else {
                Err(Errno::EMSGSIZE)
            }
        }
    }

    /// A private System V message queue.
    pub fn msg_queue() -> anyhow::Result<libc::c_int> {
        // SAFETY: msgget takes plain integers.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        if id == -1 {
            anyhow::bail!("msgget: {}", Errno::last());
        }
        Ok(id)
    }

    /// One end: sends on one queue, receives from the other; the parent's
    /// removes both queues when dropped (System V queues outlive their
    /// processes).
    pub struct MsgEnd {
        tx: libc::c_int,
        rx: libc::c_int,
        /// `long mtype; char mtext[size]`, as longs for the alignment.
        buf: Vec<libc::c_long>,
        /// The process that removes the queues (the parent's end is also
        /// dropped in the child, which must not remove them).
        owner: Option<u32>,
    }

    const LONG: usize = std::mem::size_of::<libc::c_long>();

    impl MsgEnd {
        pub fn new(tx: libc::c_int, rx: libc::c_int, size: usize, owner: bool) -> MsgEnd {
            MsgEnd {
                tx,
                rx,
                buf: vec![0; 1 + size.div_ceil(LONG)],
                owner: owner.then(std::process::id),
            }
        }

        fn text(&mut self) -> &mut [u8] {
            // SAFETY: the vector's memory, viewed as bytes after the first long.
            unsafe {
                std::slice::from_raw_parts_mut(
                    self.buf.as_mut_ptr().add(1).cast::<u8>(),
                    (self.buf.len() - 1) * LONG,
                )
            }
        }
    }

    impl End for MsgEnd {
        fn send(&mut self, msg: &[u8]) -> nix::Result<()> {
            self.buf[0] = 1;
            self.text()[..msg.len()].copy_from_slice(msg);
            let p = self.buf.as_ptr();
            super::retry(|| {
                // SAFETY: p points at mtype followed by msg.len() bytes.
                Errno::result(unsafe { libc::msgsnd(self.tx, p.cast(), msg.len(), 0) }).map(drop)
            })
        }

        fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()> {
            let p = self.buf.as_mut_ptr();
            let n = super::retry(|| {
                // SAFETY: p has room for mtype and buf.len() bytes.
                Errno::result(unsafe { libc::msgrcv(self.rx, p.cast(), buf.len(), 0, 0) })
            })?;
            if n as usize != buf.len() {
                return Err(Errno::EMSGSIZE);
            }
            buf.copy_from_slice(&self.text()[..n as usize]);
            Ok(())
        }
    }

    impl Drop for MsgEnd {
        fn drop(&mut self) {
            if self.owner == Some(std::process::id()) {
                for id in [self.tx, self.rx] {
                    // SAFETY: IPC_RMID takes no buffer.
                    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
                }
            }
        }
    }
}

/// Shared memory: a single-producer single-consumer ring of slots in an
/// anonymous shared mapping (inherited across fork), one ring each way.
/// A reader that finds its ring empty (a writer that finds it full) says
/// it sleeps, checks again and sleeps on a futex or an eventfd; the other
/// side wakes it only when it said so — no system call while both are busy.
mod shm {
    use super::*;

    /// Slots per ring.
    const SLOTS: usize = 16;
    /// Bytes per slot (the largest message).
    const SLOT: usize = 4096;

    #[repr(C)]
    struct Ring {
        /// Messages written (the writer's counter).
        head: AtomicU32,
        /// Messages read (the reader's counter).
        tail: AtomicU32,
        /// The reader sleeps, waiting for `head` to move.
        reader_sleeps: AtomicU32,
        /// The writer sleeps, waiting for `tail` to move.
        writer_sleeps: AtomicU32,
        /// Process-shared semaphores (shm-sem): data written, room made.
        sems: [libc::sem_t; 2],
        slots: [[u8; SLOT]; SLOTS],
    }

    /// How a sleeper sleeps.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum How {
        Futex,
        EventFd,
        Sem,
    }

    /// How a sleeper sleeps and is woken.
    enum Wake {
        Futex,
        /// (data written, room made) for this ring.
        EventFd(std::sync::Arc<(EventFd, EventFd)>),
        /// The ring's own semaphores.
        Sem,
    }

    /// One end of a ring: the writer's or the reader's view.
    struct RingRef {
        ring: *mut Ring,
        wake: Wake,
    }

    // One channel end: writes to `tx`, reads from `rx`.
    struct ShmEnd {
        tx: RingRef,
        rx: RingRef,
    }

    pub fn channel(how: How) -> anyhow::Result<(Box<dyn End>, Box<dyn End>)> {
        let a = map()?;
        let b = map()?;
        let wake = |_| -> anyhow::Result<Wake> {
            Ok(match how {
                How::EventFd => {
                    let e = || EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC);
                    Wake::EventFd(std::sync::Arc::new((e()?, e()?)))
                }
                How::Futex => Wake::Futex,
                How::Sem => Wake::Sem,
            })
        };
        let (wa, wb) = (wake(0)?, wake(1)?);
        let dup = |w: &Wake| match w {
            Wake::Futex => Wake::Futex,
            Wake::EventFd(e) => Wake::EventFd(e.clone()),
            Wake::Sem => Wake::Sem,
        };
        let parent = ShmEnd {
            tx: RingRef {
                ring: a,
                wake: dup(&wa),
            },
            rx: RingRef {
                ring: b,
                wake: dup(&wb),
            },
        };
        let child = ShmEnd {
            tx: RingRef { ring: b, wake: wb },
            rx: RingRef { ring: a, wake: wa },
        };
        Ok((Box::new(parent), Box::new(child)))
    }

    /// A zeroed ring in a shared anonymous mapping (never unmapped: a few
    /// pages per case, for the bench's life).
    fn map() -> anyhow::Result<*mut Ring> {
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        let len = std::num::NonZeroUsize::new(std::mem::size_of::<Ring>()).expect("size");
        // SAFETY: a fresh anonymous mapping, aliasing nothing.
        let p = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        let ring: *mut Ring = p.as_ptr().cast();
        for i in 0..2 {
            // SAFETY: the semaphore lies in the fresh shared mapping;
            // pshared = 1: used by both processes.
            let r = unsafe { libc::sem_init(std::ptr::addr_of_mut!((*ring).sems[i]), 1, 0) };
            anyhow::ensure!(r == 0, "sem_init: {}", Errno::last());
        }
        Ok(ring)
    }

    impl RingRef {
        fn ring(&self) -> &Ring {
            // SAFETY: the mapping lives as long as the process; the ring's
            // shared fields are atomics, and a slot is touched only by the
            // side the counters give it to.
            unsafe { &*self.ring }
        }

        /// Sleeps while `word` still holds `seen` (after saying so in `flag`).
        fn sleep(&self, word: &AtomicU32, flag: &AtomicU32, seen: u32, data: bool) {
            flag.store(1, Ordering::SeqCst);
            if word.load(Ordering::SeqCst) == seen {
                match &self.wake {
                    Wake::Futex => {
                        // SAFETY: word is a valid, aligned u32 in a shared
                        // mapping (no FUTEX_PRIVATE_FLAG: two processes).
                        unsafe {
                            libc::syscall(
                                libc::SYS_futex,
                                word.as_ptr(),
                                libc::FUTEX_WAIT,
                                seen,
                                std::ptr::null::<libc::timespec>(),
                            )
                        };
                    }
                    Wake::EventFd(e) => {
                        let fd = if data { &e.0 } else { &e.1 };
                        let _ = fd.read();
                    }
                    // SAFETY: an initialised process-shared semaphore.
                    Wake::Sem => unsafe {
                        libc::sem_wait(self.sem(data));
                    },
                }
            }
            flag.store(0, Ordering::SeqCst);
        }

        /// Wakes the other side if it said it sleeps on `word`.
        fn wake(&self, word: &AtomicU32, flag: &AtomicU32, data: bool) {
            if flag.load(Ordering::SeqCst) == 0 {
                return;
            }
            match &self.wake {
                Wake::Futex => {
                    // SAFETY: as in sleep.
                    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
                }
                Wake::EventFd(e) => {
                    let fd = if data { &e.0 } else { &e.1 };
                    let _ = fd.write(1);
                }
                // SAFETY: an initialised process-shared semaphore.
                Wake::Sem => unsafe {
                    libc::sem_post(self.sem(data));
                },
            }
        }

        /// The ring's semaphore for data written (`data`) or room made.
        fn sem(&self, data: bool) -> *mut libc::sem_t {
            // SAFETY: a field of the mapped ring; no reference is made.
            unsafe { std::ptr::addr_of_mut!((*self.ring).sems[usize::from(!data)]) }
        }

        fn put(&self, msg: &[u8]) {
            let r = self.ring();
            loop {
                let tail = r.tail.load(Ordering::SeqCst);
                let head = r.head.load(Ordering::Relaxed);
                if head.wrapping_sub(tail) < SLOTS as u32 {
                    let slot = r.slots[head as usize % SLOTS].as_ptr().cast_mut();
                    // SAFETY: the slot is free (the reader is past it) and
                    // only this writer writes it until head moves on.
                    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), slot, msg.len()) };
                    r.head.store(head.wrapping_add(1), Ordering::SeqCst);
                    self.wake(&r.head, &r.reader_sleeps, true);
                    return;
                }
                self.sleep(&r.tail, &r.writer_sleeps, tail, false);
            }
        }

        fn take(&self, buf: &mut [u8]) {
            let r = self.ring();
            loop {
                let head = r.head.load(Ordering::SeqCst);
                let tail = r.tail.load(Ordering::Relaxed);
                if head != tail {
                    let slot = r.slots[tail as usize % SLOTS].as_ptr();
                    // SAFETY: the writer published this slot (head is past
                    // it) and does not touch it until tail moves on.
                    unsafe { std::ptr::copy_nonoverlapping(slot, buf.as_mut_ptr(), buf.len()) };
                    r.tail.store(tail.wrapping_add(1), Ordering::SeqCst);
                    self.wake(&r.tail, &r.writer_sleeps, false);
                    return;
                }
                self.sleep(&r.head, &r.reader_sleeps, head, true);
            }
        }
    }

    impl End for ShmEnd {
        fn send(&mut self, msg: &[u8]) -> nix::Result<()> {
            self.tx.put(msg);
            Ok(())
        }

        fn recv(&mut self, buf: &mut [u8]) -> nix::Result<()> {
            self.rx.take(buf);
            Ok(())
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
