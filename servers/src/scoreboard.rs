//! A process manager's scoreboard, as php-fpm keeps one per pool: a
//! shared-memory table the master maps *before* forking, in which every
//! worker writes what it is doing (its slot) and the pool's counters, and
//! from which the master decides whom to spawn, retire or kill and the
//! status page reads.
//!
//! Everything is an atomic in an anonymous `MAP_SHARED` mapping (the
//! pattern of [`crate::stats`]): no locks across processes. A reader may
//! see a slot mid-update (a URI from one request, the method of the next);
//! a status page tolerates that, and nothing decides on those fields.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// Bytes of the request URI a slot keeps (longer ones are truncated).
pub const URI_LEN: usize = 128;
/// Bytes of the request method a slot keeps.
pub const METHOD_LEN: usize = 8;

/// What a worker is doing, as the status page names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    /// The slot holds no process.
    Free = 0,
    /// Forked, not yet waiting for a connection.
    Starting = 1,
    /// Blocked in accept(2): ready to take a connection (php-fpm's "Idle").
    Idle = 2,
    /// Holds a connection and waits in read(2) for a request or the rest
    /// of one — including a keep-alive connection between requests
    /// (php-fpm's "Reading headers").
    Reading = 3,
    /// Runs a whole request: from its dispatch until its response is
    /// formatted (a `/wait` sleeps in this state).
    Executing = 4,
    /// Writes a response out (php-fpm's "Finishing").
    Finishing = 5,
}

impl State {
    fn from_u32(v: u32) -> State {
        match v {
            1 => State::Starting,
            2 => State::Idle,
            3 => State::Reading,
            4 => State::Executing,
            5 => State::Finishing,
            _ => State::Free,
        }
    }

    /// php-fpm's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Free => "Free",
            State::Starting => "Starting",
            State::Idle => "Idle",
            State::Reading => "Reading headers",
            State::Executing => "Running",
            State::Finishing => "Finishing",
        }
    }

    /// Holds a connection (php-fpm's "active").
    pub fn active(self) -> bool {
        matches!(self, State::Reading | State::Executing | State::Finishing)
    }
}

/// One worker's slot.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Slot {
    /// The worker's pid, 0 for a free slot.
    pub pid: AtomicU32,
    state: AtomicU32,
    /// Set by the master once it logged this request as slow.
    pub slow_logged: AtomicU32,
    /// Requests served by this worker.
    pub requests: AtomicU64,
    /// When the worker was forked (µs since the epoch).
    pub spawned_us: AtomicU64,
    /// When the current request was dispatched (µs since the epoch).
    pub request_start_us: AtomicU64,
    /// How long the last finished request ran (µs).
    pub last_duration_us: AtomicU64,
    /// Since when the worker is idle (µs since the epoch).
    pub idle_since_us: AtomicU64,
    method: [AtomicU64; METHOD_LEN / 8],
    uri: [AtomicU64; URI_LEN / 8],
}

impl Slot {
    /// The worker's state.
    pub fn state(&self) -> State {
        State::from_u32(self.state.load(Relaxed))
    }

    /// Sets the state (and the idle time when it becomes idle).
    pub fn set_state(&self, s: State) {
        if s == State::Idle && self.state() != State::Idle {
            self.idle_since_us.store(now_us(), Relaxed);
        }
        self.state.store(s as u32, Relaxed);
    }

    /// A request starts running.
    pub fn begin_request(&self, method: &str, uri: &str) {
        store_bytes(&self.method, method.as_bytes());
        store_bytes(&self.uri, uri.as_bytes());
        self.slow_logged.store(0, Relaxed);
        self.request_start_us.store(now_us(), Relaxed);
        self.set_state(State::Executing);
    }

    /// The current request's response is formatted.
    pub fn end_request(&self) {
        let start = self.request_start_us.load(Relaxed);
        self.last_duration_us
            .store(now_us().saturating_sub(start), Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.set_state(State::Finishing);
    }

    /// Microseconds the current request has run, if one is running.
    pub fn running_us(&self) -> Option<u64> {
        (self.state() == State::Executing)
            .then(|| now_us().saturating_sub(self.request_start_us.load(Relaxed)))
    }

    /// The last (or current) request's method.
    pub fn method(&self) -> String {
        load_bytes(&self.method)
    }

    /// The last (or current) request's URI, truncated to [`URI_LEN`] bytes.
    pub fn uri(&self) -> String {
        load_bytes(&self.uri)
    }

    /// Makes the slot fresh for a new worker.
    pub fn reset(&self, pid: u32, state: State) {
        self.requests.store(0, Relaxed);
        self.last_duration_us.store(0, Relaxed);
        self.request_start_us.store(0, Relaxed);
        self.slow_logged.store(0, Relaxed);
        self.spawned_us.store(now_us(), Relaxed);
        store_bytes(&self.method, b"-");
        store_bytes(&self.uri, b"-");
        self.state.store(state as u32, Relaxed);
        self.pid.store(pid, Relaxed);
    }
}

/// A pool's counters.
#[derive(Debug, Default)]
#[repr(C)]
pub struct PoolCounters {
    /// Connections accepted by the pool.
    pub accepted: AtomicU64,
    /// The most connections seen waiting in the listen queue.
    pub max_listen_queue: AtomicU64,
    /// The most workers seen active at once.
    pub max_active: AtomicU64,
    /// Times the manager wanted to spawn but the pool was at max children.
    pub max_children_reached: AtomicU64,
    /// Requests that ran longer than the slowlog timeout.
    pub slow_requests: AtomicU64,
    /// When the pool started (seconds since the epoch).
    pub start_time: AtomicU64,
}

/// A pool's shared table: its counters and `slots` worker slots.
#[derive(Debug, Clone, Copy)]
pub struct Scoreboard {
    counters: &'static PoolCounters,
    slots: &'static [Slot],
}

impl Scoreboard {
    /// Maps a zeroed scoreboard with `slots` slots, shared with every child
    /// forked later.
    pub fn shared(slots: usize) -> anyhow::Result<Scoreboard> {
        let head = std::mem::size_of::<PoolCounters>().next_multiple_of(64);
        let len = head + slots * std::mem::size_of::<Slot>();
        let len = NonZeroUsize::new(len).expect("non-empty");
        // SAFETY: a fresh anonymous mapping, not aliased by anything else.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        let base = ptr.as_ptr().cast::<u8>();
        // SAFETY: the mapping is page-aligned and zero-filled (a valid
        // all-zero `PoolCounters` and `Slot`s: atomics of 0); the counters
        // sit at offset 0 and the slots at `head`, a multiple of 64 (more
        // than their alignment), all within `len` bytes; it is never
        // unmapped, so `'static` shared references are sound, and every
        // access goes through atomics.
        let (counters, slots) = unsafe {
            (
                &*base.cast::<PoolCounters>(),
                std::slice::from_raw_parts(base.add(head).cast::<Slot>(), slots),
            )
        };
        counters.start_time.store(now_us() / 1_000_000, Relaxed);
        Ok(Scoreboard { counters, slots })
    }

    /// The pool's counters.
    pub fn counters(&self) -> &'static PoolCounters {
        self.counters
    }

    /// Every slot.
    pub fn slots(&self) -> &'static [Slot] {
        self.slots
    }

    /// The slots that hold a process.
    pub fn live(&self) -> impl Iterator<Item = &'static Slot> {
        self.slots
            .iter()
            .filter(|s| s.pid.load(Relaxed) != 0 && s.state() != State::Free)
    }

    /// Idle and active processes now.
    pub fn idle_active(&self) -> (u64, u64) {
        let (mut idle, mut active) = (0, 0);
        for s in self.live() {
            match s.state() {
                State::Idle => idle += 1,
                st if st.active() => active += 1,
                _ => {}
            }
        }
        (idle, active)
    }

    /// Records the active count for `max active processes`.
    pub fn note_active(&self, active: u64) {
        self.counters.max_active.fetch_max(active, Relaxed);
    }
}

/// The listen queue of a listening TCP socket: (connections waiting to be
/// accepted now, the backlog limit), from TCP_INFO — for a listener Linux
/// reports the accept queue in `tcpi_unacked` and its limit in
/// `tcpi_sacked`. `None` for a unix socket or on error.
pub fn listen_queue(listener: &impl AsFd) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes given;
    // the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some((info.tcpi_unacked as u64, info.tcpi_sacked as u64))
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn store_bytes(dst: &[AtomicU64], src: &[u8]) {
    for (i, word) in dst.iter().enumerate() {
        let mut b = [0u8; 8];
        let from = (i * 8).min(src.len());
        let to = (i * 8 + 8).min(src.len());
        b[..to - from].copy_from_slice(&src[from..to]);
        word.store(u64::from_le_bytes(b), Relaxed);
    }
}

fn load_bytes(src: &[AtomicU64]) -> String {
    let mut v: Vec<u8> = src
        .iter()
        .flat_map(|w| w.load(Relaxed).to_le_bytes())
        .collect();
    if let Some(end) = v.iter().position(|&b| b == 0) {
        v.truncate(end);
    }
    String::from_utf8_lossy(&v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_shared_across_fork() {
        let board = Scoreboard::shared(4).unwrap();
        board.slots()[1].reset(42, State::Starting);
        // SAFETY: the child only touches atomics and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let s = &board.slots()[1];
                s.begin_request("GET", &format!("/cpu?n=1&pad={}", "x".repeat(200)));
                s.end_request();
                board.counters().accepted.fetch_add(1, Relaxed);
                // SAFETY: _exit skips the test harness's destructors in the child.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        let s = &board.slots()[1];
        assert_eq!(s.state(), State::Finishing);
        assert_eq!(s.requests.load(Relaxed), 1);
        assert_eq!(s.method(), "GET");
        assert_eq!(s.uri().len(), URI_LEN);
        assert!(s.uri().starts_with("/cpu?n=1&pad=xx"));
        assert_eq!(board.counters().accepted.load(Relaxed), 1);
        assert_eq!(board.live().count(), 1);
    }

    #[test]
    fn listen_queue_counts_unaccepted_connections() {
        let (fd, addr) = crate::net::listen(
            &crate::net::ListenAddr::parse("127.0.0.1:0").unwrap(),
            7,
            Default::default(),
        )
        .unwrap();
        let _a = std::net::TcpStream::connect(&addr).unwrap();
        let _b = std::net::TcpStream::connect(&addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(listen_queue(&fd), Some((2, 7)));
    }
}
