//! POSIX asynchronous I/O as glibc provides it, in one small box: the
//! control blocks (`aiocb`) of the operations in flight, `aio_read` and
//! `aio_write` with a real-time signal as the completion notice,
//! `aio_error`/`aio_return` to collect a result, glibc's `aio_init` (the
//! size of its thread pool), and the signalfd the completions are read
//! from. Every `unsafe` block of aio-server is here.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// glibc's `struct aioinit` (`<aio.h>`, a GNU extension): tuning for the
/// thread pool that carries out POSIX AIO requests.
#[repr(C)]
#[derive(Default)]
struct AioInit {
    /// Most threads glibc starts (default 20).
    aio_threads: libc::c_int,
    /// Simultaneous requests expected (preallocated; default 64).
    aio_num: libc::c_int,
    aio_locks: libc::c_int,
    aio_usedba: libc::c_int,
    aio_debug: libc::c_int,
    aio_numusers: libc::c_int,
    /// Seconds an idle thread waits for work before it exits (default 1).
    aio_idle_time: libc::c_int,
    aio_reserved: libc::c_int,
}

extern "C" {
    fn aio_init(init: *const AioInit);
}

/// Sizes glibc's AIO thread pool: at most `threads` threads, each leaving
/// after `idle_s` seconds without work. Call before the first request.
pub fn init(threads: u32, idle_s: u32) {
    let init = AioInit {
        aio_threads: threads.min(i32::MAX as u32) as libc::c_int,
        aio_num: threads.min(i32::MAX as u32) as libc::c_int,
        aio_idle_time: idle_s.min(i32::MAX as u32) as libc::c_int,
        ..AioInit::default()
    };
    // SAFETY: `init` is a valid struct of the layout glibc declares.
    unsafe { aio_init(&init) };
}

/// What an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `aio_read` from the connection's socket.
    Recv,
    /// `aio_write` to the connection's socket.
    Send,
    /// `aio_read` of a `/file` piece at an offset.
    FileRead,
}

/// One operation in flight: its control block and its buffer, boxed so
/// that their addresses stay put until it completes (glibc's thread and
/// the kernel write through them).
pub struct Op {
    cb: libc::aiocb,
    buf: Vec<u8>,
    /// What it is.
    pub kind: Kind,
}

impl Op {
    /// Starts an operation on `fd`: a read of up to `len` bytes (at
    /// `offset`: files only), or a write of `data`. Its completion queues
    /// `signal` carrying `token`.
    pub fn start(
        kind: Kind,
        fd: RawFd,
        len: usize,
        data: &[u8],
        offset: u64,
        signal: libc::c_int,
        token: usize,
    ) -> io::Result<Box<Op>> {
        let buf = match kind {
            Kind::Send => data.to_vec(),
            Kind::Recv | Kind::FileRead => vec![0u8; len],
        };
        // SAFETY: aiocb is plain data; all-zero is its documented initial state.
        let cb: libc::aiocb = unsafe { std::mem::zeroed() };
        let mut op = Box::new(Op { cb, buf, kind });
        op.cb.aio_fildes = fd;
        op.cb.aio_buf = op.buf.as_mut_ptr().cast();
        op.cb.aio_nbytes = op.buf.len();
        op.cb.aio_offset = offset as libc::off_t;
        op.cb.aio_sigevent.sigev_notify = libc::SIGEV_SIGNAL;
        op.cb.aio_sigevent.sigev_signo = signal;
        op.cb.aio_sigevent.sigev_value = libc::sigval {
            sival_ptr: token as *mut libc::c_void,
        };
        // SAFETY: the control block and its buffer live in the box, which
        // the caller keeps until `result` says the operation is over.
        let rc = unsafe {
            match kind {
                Kind::Send => libc::aio_write(&mut op.cb),
                Kind::Recv | Kind::FileRead => libc::aio_read(&mut op.cb),
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(op)
    }

    /// The result once the operation is over (`aio_error` is no longer
    /// EINPROGRESS, then `aio_return`); `None` while it is in flight.
    pub fn result(&mut self) -> Option<io::Result<usize>> {
        // SAFETY: the control block was submitted by `start` and is alive.
        let err = unsafe { libc::aio_error(&self.cb) };
        if err == libc::EINPROGRESS {
            return None;
        }
        // SAFETY: as above; aio_return is called once, after completion.
        let n = unsafe { libc::aio_return(&mut self.cb) };
        Some(match err {
            0 => Ok(n.max(0) as usize),
            e => Err(io::Error::from_raw_os_error(e)),
        })
    }

    /// The bytes a completed read brought.
    pub fn data(&self, n: usize) -> &[u8] {
        &self.buf[..n.min(self.buf.len())]
    }
}

/// The real-time signal completions are queued as.
pub fn completion_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Blocks `signal` in this thread (threads made later inherit the mask, and
/// glibc's AIO threads block every signal) and returns a signalfd that
/// reads its queued instances.
pub fn signal_fd(signal: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset; the
    // calls take valid pointers to it.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads the queued completion signals (as many as there are, up to 64 per
/// read) and calls `done` with each one's token.
pub fn read_completions(fd: &OwnedFd, mut done: impl FnMut(usize)) {
    const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: signalfd_siginfo is plain data; all-zero is a valid value.
    let mut infos: [libc::signalfd_siginfo; 64] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: the buffer is valid for its whole length in bytes.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                infos.as_mut_ptr().cast(),
                std::mem::size_of_val(&infos),
            )
        };
        if n <= 0 {
            return;
        }
        for info in &infos[..n as usize / SIZE] {
            done(info.ssi_ptr as usize);
        }
    }
}

/// Ends an operation blocked in a glibc thread that the connection no
/// longer wants to wait for (glibc cannot cancel a request its thread is
/// running: `aio_cancel` answers AIO_NOTCANCELED). A read is ended by
/// shutting the socket's reading side when the connection must `close` or
/// has a response to write (it would queue behind the read: requests on one
/// descriptor are served in order); a write stuck on a peer that reads
/// nothing, when the connection must close. The call then completes.
pub fn unblock(op: Option<&Op>, sock: &OwnedFd, close: bool, write_waits: bool) {
    use nix::sys::socket::{shutdown, Shutdown};
    let how = match op.map(|op| op.kind) {
        Some(Kind::Recv | Kind::Send) if close => Shutdown::Both,
        Some(Kind::Recv) if write_waits => Shutdown::Read,
        _ => return,
    };
    let _ = shutdown(sock.as_raw_fd(), how);
}
