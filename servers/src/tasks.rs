//! The graceful stop of the models that run a task per connection
//! (tokio-server, monoio-server), whatever runtime polls the tasks.
//!
//! Each connection task holds a [`Ticket`]: a one-shot stop signal that
//! resolves with the time the stop was asked. [`Tasks::stop`] fires every
//! ticket at once; [`Tasks::finished`] resolves when the last ticket is
//! dropped, that is when every connection has closed. One global signal
//! that every task polls on every turn (a `watch` channel) would take a
//! shared lock per request; a one-shot per task costs an atomic.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

use slab::Slab;
use tokio::sync::oneshot;

/// The connection tasks of one runtime (a process, or one thread of a
/// thread-per-core server).
#[derive(Debug, Clone, Default)]
pub struct Tasks(Arc<Mutex<Registry>>);

#[derive(Debug, Default)]
struct Registry {
    /// When the stop was asked.
    stopped: Option<Instant>,
    /// The live tasks' stop signals (until the stop fires them).
    signals: Slab<oneshot::Sender<Instant>>,
    /// Tickets not yet dropped.
    live: usize,
    /// Who waits in [`Tasks::finished`].
    waiter: Option<Waker>,
}

impl Tasks {
    /// A ticket for a new connection task (already fired after a stop).
    pub fn enter(&self) -> Ticket {
        let (tx, stop) = oneshot::channel();
        let mut r = self.lock();
        r.live += 1;
        let key = match r.stopped {
            Some(at) => {
                let _ = tx.send(at);
                None
            }
            None => Some(r.signals.insert(tx)),
        };
        Ticket {
            tasks: self.clone(),
            key,
            stop,
        }
    }

    /// Fires every ticket, now and for tasks that enter later.
    pub fn stop(&self, now: Instant) {
        let mut r = self.lock();
        r.stopped.get_or_insert(now);
        for tx in r.signals.drain() {
            let _ = tx.send(now);
        }
    }

    /// Resolves once no ticket is left.
    pub fn finished(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut r = self.lock();
            if r.live == 0 {
                return Poll::Ready(());
            }
            r.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection task's hold on [`Tasks`]: await [`Ticket::stop`] for the
/// stop; dropping the ticket says the task is done.
#[derive(Debug)]
pub struct Ticket {
    tasks: Tasks,
    key: Option<usize>,
    /// Resolves with the time the stop was asked (an error only if the
    /// [`Tasks`] went away, which is a stop too).
    pub stop: oneshot::Receiver<Instant>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut r = self.tasks.lock();
        if let Some(key) = self.key {
            r.signals.try_remove(key);
        }
        r.live -= 1;
        if r.live == 0 {
            if let Some(w) = r.waiter.take() {
                w.wake();
            }
        }
    }
}

/// One turn of a connection task while its server stops: a connection
/// that may close now (`signals::may_close`) is told to drain (it closes
/// once idle); one that has not answered yet gets the end of its grace as
/// a deadline to wake at. `None` before a stop.
pub fn stop_step(
    conn: &mut iomodels_workload::Conn,
    stopping: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let since = stopping?;
    if crate::signals::may_close(conn.requests(), since, now) {
        conn.drain();
        None
    } else {
        Some(since + crate::signals::STOP_GRACE)
    }
}
