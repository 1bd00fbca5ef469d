//! Counters shared by every process and thread of one server, for
//! `/status`: they live in an anonymous MAP_SHARED mapping made before any
//! fork, so a prefork worker's increments are seen by all.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// The shared counters.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Counters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections refused at `--max-conns`.
    pub refused: AtomicU64,
    /// Connections dropped because the peer read nothing for a whole idle
    /// timeout while output was pending.
    pub write_timeouts: AtomicU64,
}

/// A handle to the shared counters and the server's start time.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    counters: &'static Counters,
    started: Instant,
}

impl Stats {
    /// Maps fresh zeroed counters shared with every child forked later.
    pub fn shared() -> anyhow::Result<Stats> {
        let len = NonZeroUsize::new(std::mem::size_of::<Counters>()).expect("non-empty");
        // SAFETY: a fresh anonymous mapping, not aliased by anything else.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        // SAFETY: the mapping is page-aligned, zero-filled (a valid
        // all-zero `Counters`: atomics of 0), at least `len` bytes, and is
        // never unmapped, so a `'static` shared reference is sound; all
        // access goes through atomics.
        let counters = unsafe { &*ptr.as_ptr().cast::<Counters>() };
        Ok(Stats {
            counters,
            started: Instant::now(),
        })
    }

    /// The counters.
    pub fn counters(&self) -> &'static Counters {
        self.counters
    }

    /// When the server started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// One more request answered.
    pub fn request(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was accepted and is now open.
    pub fn opened(&self) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed.
    pub fn closed(&self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was dropped as a stuck writer.
    pub fn write_timeout(&self) {
        self.counters.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused at `--max-conns`.
    pub fn refused(&self) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_across_fork() {
        let stats = Stats::shared().unwrap();
        stats.request();
        // SAFETY: the test process is single-threaded at this point in the
        // child's life: it only touches an atomic and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                stats.request();
                // SAFETY: _exit skips the test harness's destructors in the child.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(stats.counters().requests.load(Ordering::Relaxed), 2);
    }
}
