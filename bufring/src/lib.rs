//! The io_uring **provided-buffer ring** (Linux 5.19,
//! `IORING_REGISTER_PBUF_RING`): `count` receive buffers of [`BUF_SIZE`]
//! bytes that the kernel picks from only when data arrives, so an idle
//! connection owns none. A multishot receive names the ring by its group
//! id; each completion says which buffer it filled (its `bid`); the
//! program reads the bytes with [`BufRing::data`] and gives the buffer
//! back with [`BufRing::recycle`].
//!
//! uring-server (`servers/src/ring.rs`) and loadgen's io_uring backend
//! (`loadgen/src/uring.rs`) both receive this way; this crate is the one
//! place that maps the memory, registers it and holds the `unsafe` blocks
//! that rely on the kernel's rules for it.
//!
//! The ring must be dropped **after** the io_uring it is registered with
//! (declare the `IoUring` field first): the kernel may write into the
//! buffers until the registration goes with the ring.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Size of one provided receive buffer.
pub const BUF_SIZE: usize = 4096;

/// Maps `len` bytes of fresh zeroed memory, faulted in now (MAP_POPULATE),
/// so its cost shows at start-up and not per connection.
fn map_memory(len: usize) -> io::Result<NonNull<u8>> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty mapping"))?;
    // SAFETY: a fresh private anonymous mapping, aliased by nothing.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
        )
    }
    .map_err(|e| io::Error::other(format!("mmap of {len} bytes for the buffer ring: {e}")))?;
    Ok(ptr.cast())
}

/// The ring of `count` provided buffers (a power of two). The kernel takes
/// one from the head when data arrives; the program puts it back at the
/// tail once handled.
pub struct BufRing {
    /// The ring of `count` entries the kernel reads (page-aligned).
    entries: NonNull<BufRingEntry>,
    /// The buffers themselves.
    memory: NonNull<u8>,
    count: u16,
    tail: u16,
}

impl BufRing {
    /// Maps `count` buffers (a power of two) and their ring, every buffer
    /// already handed to the kernel's side of it.
    pub fn new(count: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::other(format!(
                "a buffer ring holds a power of two buffers, not {count}"
            )));
        }
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

    /// Registers the buffers with `ring` as buffer group `bgid`.
    pub fn register(&self, ring: &IoUring, bgid: u16) -> io::Result<()> {
        // SAFETY: the entries stay mapped until `self` drops, which its
        // owner does after the io_uring (see the crate's docs), so they are
        // valid for as long as they are registered.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                bgid,
                0,
            )
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    #[inline]
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid & (self.count - 1));
        // SAFETY: buffer `bid` lies inside `memory`; the kernel filled its
        // first `len` (≤ BUF_SIZE) bytes and writes it again only after
        // `recycle` puts it back, which needs `&mut self` and so cannot
        // happen while this slice lives.
        unsafe {
            std::slice::from_raw_parts(self.memory.as_ptr().add(bid * BUF_SIZE), len.min(BUF_SIZE))
        }
    }

    /// Gives buffer `bid` back to the kernel.
    #[inline]
    pub fn recycle(&mut self, bid: u16) {
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
        // nothing points into them any more: the owner drops its io_uring
        // (and with it the registration) before the buffer ring.
        unsafe {
            let _ = munmap(
                self.entries.cast(),
                self.count as usize * std::mem::size_of::<BufRingEntry>(),
            );
            let _ = munmap(self.memory.cast(), self.count as usize * BUF_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_holds_a_power_of_two_buffers() {
        assert!(BufRing::new(3).is_err());
        let ring = BufRing::new(8).expect("eight buffers");
        // Fresh buffers are zeroed and never longer than BUF_SIZE.
        assert_eq!(ring.data(7, 16), &[0u8; 16][..]);
        assert_eq!(ring.data(0, BUF_SIZE * 2).len(), BUF_SIZE);
    }

    #[test]
    fn a_receive_fills_a_buffer_that_goes_back() {
        use io_uring::{cqueue, opcode, types::Fd};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        // Declared before the ring, so dropped after it.
        let mut bufs = BufRing::new(2).expect("two buffers");
        let Ok(ring) = IoUring::new(8) else {
            return; // no io_uring here: nothing to check
        };
        if bufs.register(&ring, 7).is_err() {
            return; // a kernel before 5.19
        }
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let recv = opcode::Recv::new(Fd(b.as_raw_fd()), std::ptr::null_mut(), BUF_SIZE as u32)
            .buf_group(7)
            .build()
            .flags(io_uring::squeue::Flags::BUFFER_SELECT);
        for round in 0..3u8 {
            a.write_all(&[b'x', round]).unwrap();
            // SAFETY: the entry points at no memory of ours; the buffer it
            // gets is the ring's.
            unsafe { ring.submission_shared().push(&recv).unwrap() };
            ring.submit_and_wait(1).unwrap();
            // SAFETY: one thread uses the ring.
            let cqe = unsafe { ring.completion_shared() }.next().unwrap();
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            assert_eq!(bufs.data(bid, cqe.result() as usize), &[b'x', round]);
            // Two buffers, three rounds: the third needs one given back.
            bufs.recycle(bid);
        }
    }
}
