//! Listening sockets inherited across a re-exec (php-fpm's SIGUSR2 reload).
//!
//! A reloading master clears FD_CLOEXEC on its listening sockets and
//! execs itself with their numbers, by name, in [`LISTEN_FD_ENV`]
//! (`www=3,api=4`). The new program takes them over instead of binding
//! again: the sockets never close, so clients that connect meanwhile wait
//! in the listen backlog instead of being refused.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};

use crate::net::ListenAddr;

/// The environment variable the sockets are passed in: `name=fd,name=fd`.
pub const LISTEN_FD_ENV: &str = "IOMODELS_LISTEN_FD";

/// The listening sockets a re-executing master left this process, by name
/// (not yet taken over).
#[derive(Debug, Default)]
pub struct Inherited(HashMap<String, RawFd>);

impl Inherited {
    /// Reads [`LISTEN_FD_ENV`] and removes it (so children and a later
    /// reload do not see stale numbers). Empty when this is a first start.
    pub fn from_env() -> Inherited {
        let Ok(spec) = std::env::var(LISTEN_FD_ENV) else {
            return Inherited::default();
        };
        std::env::remove_var(LISTEN_FD_ENV);
        Inherited(
            spec.split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect(),
        )
    }

    /// Whether this process was started by a reload.
    pub fn is_reload(&self) -> bool {
        !self.0.is_empty()
    }

    /// Takes over the socket named `name`, if one was inherited, after
    /// checking that it is a listening socket: the socket, close-on-exec
    /// again, and the address for log lines (`addr` when the socket cannot
    /// tell).
    pub fn take(
        &mut self,
        name: &str,
        addr: &ListenAddr,
    ) -> anyhow::Result<Option<(OwnedFd, String)>> {
        let Some(fd) = self.0.remove(name) else {
            return Ok(None);
        };
        // SAFETY: the descriptor is only borrowed for the check below,
        // during which nothing closes it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let listening = getsockopt(&borrowed, sockopt::AcceptConn)
            .with_context(|| format!("{LISTEN_FD_ENV}: {name}={fd}: not a socket"))?;
        if !listening {
            bail!("{LISTEN_FD_ENV}: {name}={fd}: not a listening socket");
        }
        // SAFETY: the previous master handed this descriptor to us (and only
        // to us: it exec'd into this process); from here on we own it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .context("fcntl(F_SETFD, FD_CLOEXEC)")?;
        let shown = getsockname::<SockaddrStorage>(fd)
            .ok()
            .and_then(|s| {
                s.as_sockaddr_in()
                    .map(|a| SocketAddr::from((a.ip(), a.port())))
                    .or_else(|| {
                        s.as_sockaddr_in6()
                            .map(|a| SocketAddr::from((a.ip(), a.port())))
                    })
            })
            .map_or_else(|| addr.to_string(), |a| a.to_string());
        Ok(Some((owned, shown)))
    }
}

/// Re-executes this program with the same arguments, keeping `sockets`
/// (name, listening socket) open across exec and naming them in
/// [`LISTEN_FD_ENV`]. Returns only if exec failed.
pub fn reexec(sockets: &[(&str, &OwnedFd)]) -> anyhow::Error {
    let mut spec = String::new();
    for (name, fd) in sockets {
        if let Err(e) = fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())) {
            return anyhow::anyhow!("reload: fcntl(F_SETFD) on {name}: {e}");
        }
        if !spec.is_empty() {
            spec.push(',');
        }
        let _ = write!(spec, "{name}={}", fd.as_raw_fd());
    }
    eprintln!(
        "{}: reloading (exec, keeping {spec})",
        crate::net::program()
    );
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::anyhow!("reload: cannot find my executable: {e}"),
    };
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env(LISTEN_FD_ENV, spec),
    );
    anyhow::anyhow!("reload: exec {}: {err}", exe.display())
}
