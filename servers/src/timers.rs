//! Deadlines for the event-driven models: a min-heap of `(when, token)`
//! with lazy deletion.
//!
//! A connection's deadline moves later on every request (the idle timeout
//! restarts), so removing and re-inserting on each request would cost a
//! heap operation per request. Instead each connection remembers the one
//! deadline it has in the heap ([`Timers::schedule`] pushes only an
//! *earlier* one); when an entry comes due the model asks the connection,
//! which knows its real deadline, and entries that no longer match are
//! skipped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The heap.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// An empty heap.
    pub fn new() -> Self {
        Timers::default()
    }

    /// Makes sure `token` is woken at `deadline`. `armed` is the deadline the
    /// connection already has in the heap (updated here).
    pub fn schedule(
        &mut self,
        armed: &mut Option<Instant>,
        token: usize,
        deadline: Option<Instant>,
    ) {
        let Some(deadline) = deadline else { return };
        if armed.is_none_or(|a| deadline < a) {
            self.heap.push(Reverse((deadline, token)));
            *armed = Some(deadline);
        }
    }

    /// How long the loop may sleep: until the earliest entry, rounded up to
    /// a whole millisecond (epoll and poll count milliseconds), or forever.
    pub fn wait_ms(&self, now: Instant) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| {
            let d = t.saturating_duration_since(now);
            (d + Duration::from_nanos(999_999)).as_millis() as u64
        })
    }

    /// The earliest entry's deadline (stale or not), for models that arm
    /// a kernel timer for an exact instant rather than a wait in milliseconds.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops one entry due at `now`: `(when, token)`. The caller checks
    /// `when` against the connection's armed deadline and skips stale ones.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries held (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_earlier_deadlines_are_pushed() {
        let mut t = Timers::new();
        let now = Instant::now();
        let mut armed = None;
        t.schedule(&mut armed, 1, Some(now + Duration::from_secs(5)));
        t.schedule(&mut armed, 1, Some(now + Duration::from_secs(9)));
        assert_eq!(t.len(), 1);
        t.schedule(&mut armed, 1, Some(now + Duration::from_secs(2)));
        assert_eq!((t.len(), armed), (2, Some(now + Duration::from_secs(2))));
        assert_eq!(t.wait_ms(now), Some(2000));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(3)),
            Some((now + Duration::from_secs(2), 1))
        );
    }
}
