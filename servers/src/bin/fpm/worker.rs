//! A worker: prefork's accept → serve loop, writing each stage to its
//! scoreboard slot, and the host that gives it the pool's status page.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use iomodels_servers::blocking::{self, ServeHost};
use iomodels_servers::host::{ServerHost, Shared};
use iomodels_servers::net;
use iomodels_servers::scoreboard::{Slot, State};
use iomodels_workload::{Host, Status};
use nix::sys::signal::{self as nsig, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::control::QUIT;
use crate::status::{status_page, status_text};
use crate::Pool;

/// One worker: prefork's accept → serve loop, writing each stage to its
/// slot; leaves when retired (SIGQUIT) or after `--max-requests`.
pub fn run(pool: &Pool, slot_index: usize) -> i32 {
    QUIT.store(false, Relaxed);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: ignoring a signal installs no handler code.
    let _ = unsafe { nsig::sigaction(Signal::SIGUSR2, &ignore) };
    let slot = &pool.board.slots()[slot_index];
    slot.pid.store(std::process::id(), Relaxed);
    let mut host = FpmHost {
        inner: ServerHost::for_process(&pool.shared),
        slot,
        pool,
    };
    let stats = pool.shared.stats;
    let counters = pool.board.counters();
    let max_requests = pool.conf.max_requests;
    let mut buf = vec![0u8; 64 * 1024];
    slot.set_state(State::Idle);
    let served = blocking::accept_until(
        &pool.listener,
        || QUIT.load(Relaxed) || (max_requests > 0 && slot.requests.load(Relaxed) >= max_requests),
        |fd, origin| {
            counters.accepted.fetch_add(1, Relaxed);
            stats.opened();
            net::prepare_accepted(&fd);
            blocking::serve(fd, &mut host, &mut buf, origin);
            stats.closed();
            slot.set_state(State::Idle);
        },
    );
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fpm-server: worker {}: {e:#}", std::process::id());
            1
        }
    }
}

/// A worker's host: the usual one, plus its scoreboard slot and the
/// pool-wide status page.
struct FpmHost<'a> {
    inner: ServerHost,
    slot: &'static Slot,
    pool: &'a Pool,
}

impl Host for FpmHost<'_> {
    fn response_headers(&self) -> &[u8] {
        self.inner.response_headers()
    }

    fn max_conns(&self) -> u64 {
        self.inner.max_conns()
    }

    fn status(&mut self) -> Status {
        self.inner.status()
    }

    fn on_dispatch(&mut self, method: &str, target: &str) {
        self.slot.begin_request(method, target);
    }

    fn on_request(&mut self) {
        self.inner.on_request();
        self.slot.end_request();
    }

    fn on_write_timeout(&mut self) {
        self.inner.on_write_timeout();
    }

    fn status_body(&mut self, query: &str) -> Option<(String, Vec<u8>)> {
        let flags: HashSet<&str> = query
            .split('&')
            .map(|kv| kv.split('=').next().unwrap_or(""))
            .collect();
        let page = status_page(self.pool, self.inner.status(), flags.contains("full"));
        Some(if flags.contains("text") {
            ("text/plain".into(), status_text(&page).into_bytes())
        } else {
            (
                "application/json".into(),
                serde_json::to_vec(&page).unwrap_or_default(),
            )
        })
    }
}

impl ServeHost for FpmHost<'_> {
    fn shared(&self) -> &Shared {
        self.inner.shared()
    }

    fn reading(&mut self) {
        self.slot.set_state(State::Reading);
    }
}
