//! Listening sockets and the few socket calls every model makes, through nix.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr,
};

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (port 0: any free port).
    Tcp(SocketAddr),
    /// A unix stream socket at this path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `HOST:PORT`, `[::1]:PORT` or `unix:/path`.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/tmp/iomodels.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(ListenAddr::Tcp)
            .ok_or_else(|| format!("'{s}' is neither HOST:PORT nor unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Options for [`listen`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOptions {
    /// SO_REUSEPORT, so that several sockets can bind the same port.
    pub reuseport: bool,
    /// O_NONBLOCK on the listening socket (event-driven models).
    pub nonblocking: bool,
    /// With `reuseport`: one socket per worker, all on the same address
    /// (the kernel spreads connections over them by a hash).
    pub per_worker: bool,
}

impl ListenOptions {
    /// A blocking listener, nothing else.
    pub const BLOCKING: ListenOptions = ListenOptions {
        reuseport: false,
        nonblocking: false,
        per_worker: false,
    };
    /// A non-blocking listener (event-driven models), nothing else.
    pub const NONBLOCKING: ListenOptions = ListenOptions {
        reuseport: false,
        nonblocking: true,
        per_worker: false,
    };
}

/// `count` listening sockets on one address: the first as [`listen`] makes
/// it, the others bound to the address it got (the real port when port 0
/// was asked), which needs `opts.reuseport` when `count > 1`.
pub fn listen_many(
    addr: &ListenAddr,
    backlog: i32,
    opts: ListenOptions,
    count: u32,
) -> anyhow::Result<(Vec<OwnedFd>, String)> {
    anyhow::ensure!(
        count <= 1 || (opts.reuseport && matches!(addr, ListenAddr::Tcp(_))),
        "several listening sockets on one address need SO_REUSEPORT and a TCP address"
    );
    if let (true, ListenAddr::Tcp(sa)) = (opts.reuseport, addr) {
        if sa.port() != 0 {
            ensure_not_in_use(addr, backlog)?;
        }
    }
    let (first, shown) = listen(addr, backlog, opts)?;
    let mut all = vec![first];
    if count > 1 {
        let again = ListenAddr::parse(&shown).map_err(anyhow::Error::msg)?;
        for _ in 1..count {
            all.push(listen(&again, backlog, opts)?.0);
        }
    }
    Ok((all, shown))
}

/// With SO_REUSEPORT a second server on a port already in use would not
/// fail: it would silently join the first one's group (same user), and
/// the kernel would deal connections between the two. A socket without
/// the option binds first, so "address in use" is said as for any model.
fn ensure_not_in_use(addr: &ListenAddr, backlog: i32) -> anyhow::Result<()> {
    let plain = ListenOptions::BLOCKING;
    drop(listen(addr, backlog, plain)?);
    Ok(())
}

/// Creates, binds and listens; returns the socket and the address to print
/// in the ready line (with the real port when port 0 was asked).
pub fn listen(
    addr: &ListenAddr,
    backlog: i32,
    opts: ListenOptions,
) -> anyhow::Result<(OwnedFd, String)> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if opts.nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let backlog = Backlog::new(backlog).context("bad backlog")?;
    match addr {
        ListenAddr::Tcp(sa) => {
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, flags, None).context("socket")?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
            if opts.reuseport {
                socket::setsockopt(&fd, sockopt::ReusePort, &true).context("SO_REUSEPORT")?;
            }
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(*sa))
                .with_context(|| format!("cannot listen on {addr}"))?;
            socket::listen(&fd, backlog).with_context(|| format!("cannot listen on {addr}"))?;
            let local: SockaddrStorage =
                socket::getsockname(fd.as_raw_fd()).context("getsockname")?;
            let shown = local
                .as_sockaddr_in()
                .map(|a| SocketAddr::from((a.ip(), a.port())))
                .or_else(|| {
                    local
                        .as_sockaddr_in6()
                        .map(|a| SocketAddr::from((a.ip(), a.port())))
                })
                .map_or_else(|| addr.to_string(), |a| a.to_string());
            Ok((fd, shown))
        }
        ListenAddr::Unix(path) => {
            // A socket file left by an earlier run would make bind fail.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None)
                .context("socket")?;
            let ua = UnixAddr::new(path)
                .with_context(|| format!("bad unix socket path {}", path.display()))?;
            socket::bind(fd.as_raw_fd(), &ua)
                .with_context(|| format!("cannot listen on {addr}"))?;
            socket::listen(&fd, backlog).with_context(|| format!("cannot listen on {addr}"))?;
            Ok((fd, addr.to_string()))
        }
    }
}

/// Accepts one connection with the given flags (`SOCK_NONBLOCK` for event
/// loops). `SOCK_CLOEXEC` is always added.
pub fn accept(listener: impl AsFd, flags: SockFlag) -> nix::Result<OwnedFd> {
    let fd = socket::accept4(listener.as_fd().as_raw_fd(), flags | SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What every accepted connection gets, in every model: TCP_NODELAY
/// (responses are written whole, so Nagle's delay only ever hurts) and a
/// fixed send buffer of twice the workload's window. Without the fixed
/// buffer the kernel's autotuning grows it, up to `tcp_wmem`'s 4 MB, while
/// a peer reads nothing: that is kernel memory per stuck client, and each
/// growth lets a write move, which looks like progress and keeps a stuck
/// writer past its idle timeout. A unix socket is left alone (it refuses
/// the first option, and then gets none).
pub fn prepare_accepted(fd: &OwnedFd) {
    for (i, (level, name, value)) in ACCEPTED_TCP_OPTIONS.iter().enumerate() {
        // SAFETY: `value` is a c_int of a static, passed with its size; the
        // kernel only reads it during the call.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                *level,
                *name,
                std::ptr::from_ref(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 && i == 0 {
            return;
        }
    }
}

/// The options every accepted TCP socket gets, as (level, name, value), in
/// one list: [`prepare_accepted`] sets them with `setsockopt`, uring-server's
/// direct descriptors through the ring (`ring.rs`), which reads the values
/// after the call that queued them returns (so a static).
pub static ACCEPTED_TCP_OPTIONS: [(libc::c_int, libc::c_int, libc::c_int); 2] = [
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
    (
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        (2 * iomodels_workload::WINDOW) as libc::c_int,
    ),
];

/// A receive timeout (blocking models use it to look at their deadlines
/// and the stop flag now and then; `accept` honours it too).
pub fn set_recv_timeout(fd: &impl AsFd, d: std::time::Duration) {
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as _, d.subsec_micros() as _);
    let _ = socket::setsockopt(fd, sockopt::ReceiveTimeout, &tv);
}

/// Raises the soft open-file limit to the hard one (C10K needs more than
/// the usual 1024) and returns it.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// How long a server stops accepting after it ran out of descriptors or
/// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): long enough not to spin on a
/// listener that stays ready, short enough to recover within a second once
/// descriptors are free again. Every model uses this one value.
pub const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What one call of [`accept_next`] gave.
#[derive(Debug)]
pub enum Accepted<S = OwnedFd> {
    /// A connection.
    Conn(S),
    /// None now: the backlog is empty (EAGAIN), the receive timeout of a
    /// blocking listener passed, or a signal came (EINTR): look at the stop
    /// flag and call again.
    Nothing,
    /// Out of descriptors or memory: stop accepting for [`ACCEPT_PAUSE`]
    /// (the error was logged, naming what failed).
    Exhausted,
}

/// The one accept-error ladder every model climbs: accepts one connection
/// (`flags` for it, `SOCK_CLOEXEC` always added), skips connections that
/// died in the backlog (ECONNABORTED, EPROTO, …: only that connection is
/// lost), reports exhaustion once per pause, and fails on anything else
/// ("accept4: EBADF"), which is a bug, not a load.
pub fn accept_next(listener: &impl AsFd, flags: SockFlag) -> anyhow::Result<Accepted> {
    loop {
        match accept(listener, flags) {
            Err(e) if accept_error_is_transient(e) => continue,
            attempt => return accept_ladder(attempt),
        }
    }
}

/// The ladder of [`accept_next`] applied to an accept a model made its own
/// way (under a lock, after an epoll wake-up): a connection that died in
/// the backlog counts as [`Accepted::Nothing`].
pub fn accept_ladder<S>(attempt: nix::Result<S>) -> anyhow::Result<Accepted<S>> {
    match attempt {
        Ok(fd) => Ok(Accepted::Conn(fd)),
        Err(e) if would_block(e) || e == Errno::EINTR || accept_error_is_transient(e) => {
            Ok(Accepted::Nothing)
        }
        Err(e) if accept_error_is_exhaustion(e) => {
            eprintln!(
                "{}: accept4: {e}; pausing accepts for {} ms",
                program(),
                ACCEPT_PAUSE.as_millis()
            );
            Ok(Accepted::Exhausted)
        }
        Err(e) => anyhow::bail!("accept4: {e}"),
    }
}

/// This program's name, for log lines.
pub fn program() -> String {
    std::env::args()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "server".into())
}

/// True for the errors that mean "try again later" on a non-blocking socket.
pub fn would_block(e: Errno) -> bool {
    e == Errno::EAGAIN || e == Errno::EWOULDBLOCK
}

/// True for accept errors that concern only the connection being accepted
/// (it was reset before we took it, …): skip it and go on.
pub fn accept_error_is_transient(e: Errno) -> bool {
    matches!(
        e,
        Errno::ECONNABORTED
            | Errno::EPROTO
            | Errno::EPERM
            | Errno::ENETDOWN
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EHOSTUNREACH
            | Errno::EOPNOTSUPP
            | Errno::ENETUNREACH
    )
}

/// True for accept errors that mean we are out of descriptors or memory:
/// stop accepting for a moment instead of spinning.
pub fn accept_error_is_exhaustion(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_addresses() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:0"),
            Ok(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("localhost").is_err());
    }

    #[test]
    fn listen_reports_the_real_port_and_address_in_use() {
        let (fd, shown) = listen(
            &ListenAddr::parse("127.0.0.1:0").unwrap(),
            16,
            ListenOptions::BLOCKING,
        )
        .unwrap();
        assert!(!shown.ends_with(":0"));
        let again = listen(
            &ListenAddr::parse(&shown).unwrap(),
            16,
            ListenOptions::BLOCKING,
        );
        let msg = format!("{:#}", again.unwrap_err());
        assert!(
            msg.contains("cannot listen on") && msg.contains("in use"),
            "{msg}"
        );
        drop(fd);
    }
}
