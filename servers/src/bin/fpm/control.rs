//! php-fpm's process-control signals besides SIGTERM/SIGINT (which the
//! runtime's `signals` module owns): SIGQUIT and SIGUSR2 as flags.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{self as nsig, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// SIGQUIT: in the master a graceful stop; in a worker "retire: leave
/// after the connection in hand".
pub static QUIT: AtomicBool = AtomicBool::new(false);
/// SIGUSR2: reload (the master only; workers ignore it).
pub static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_quit(_: libc::c_int) {
    QUIT.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Installs both handlers, without SA_RESTART, so poll(2) and accept(2)
/// return EINTR and the loops look at the flags.
pub fn install() -> anyhow::Result<()> {
    for (sig, handler) in [
        (Signal::SIGQUIT, on_quit as extern "C" fn(libc::c_int)),
        (Signal::SIGUSR2, on_reload),
    ] {
        let action = SigAction::new(
            SigHandler::Handler(handler),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handlers only store to an atomic, which is async-signal-safe.
        unsafe { nsig::sigaction(sig, &action) }
            .map_err(|e| anyhow::anyhow!("sigaction({sig}): {e}"))?;
    }
    Ok(())
}
