//! What the master decides, once a tick: the process manager of each pool
//! (php-fpm's `fpm_pctl_perform_idle_server_maintenance`, in
//! sapi/fpm/fpm/fpm_process_ctl.c), slow and stuck requests, and whether
//! enough workers crashed for an emergency restart.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use iomodels_servers::scoreboard::{self, Slot, State};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::Pm;
use crate::Master;

/// The most workers the dynamic manager forks in one tick (php-fpm's
/// FPM_MAX_SPAWN_RATE).
const MAX_SPAWN_RATE: usize = 32;

impl Master<'_> {
    /// The process manager's tick for pool `p`.
    ///
    /// * static: fork up to `max-children` (counting replacements the
    ///   supervisor holds back after a crash at start).
    /// * dynamic: below `min-spare` idle (or starting) workers, fork
    ///   1, 2, 4 … up to 32 per tick while still short; above `max-spare`,
    ///   retire ONE worker per tick, the idle one forked first — php-fpm's
    ///   rule (its `last_idle_child`), so an idle pool shrinks by one a second.
    /// * ondemand: once a tick, the idle worker forked first is retired if
    ///   it has been idle longer than `process-idle-timeout` (php-fpm's rule
    ///   too: one per tick; forking happens in the master's loop, when a
    ///   connection waits).
    pub(crate) fn maintain(&mut self, p: usize) -> anyhow::Result<()> {
        let pool = &mut self.pools[p];
        let board = pool.board;
        let c = &pool.conf;
        if let Some((queued, _)) = scoreboard::listen_queue(&pool.listener) {
            board.counters().max_listen_queue.fetch_max(queued, Relaxed);
        }
        let total = board.live().count() as u32 + self.supervisor.pending(&p) as u32;
        let (idle, active) = board.idle_active();
        let starting = board
            .live()
            .filter(|s| s.state() == State::Starting)
            .count() as u64;
        board.note_active(active);
        let mut to_spawn = 0;
        let mut retire = false;
        match c.pm {
            Pm::Static => to_spawn = c.max_children.saturating_sub(total) as usize,
            Pm::Dynamic => {
                let ready = idle + starting;
                if ready > c.max_spare as u64 {
                    retire = true;
                    pool.spawn_rate = 1;
                } else if ready < c.min_spare as u64 {
                    if total >= c.max_children {
                        board.counters().max_children_reached.fetch_add(1, Relaxed);
                        eprintln!(
                            "fpm-server: [pool {}] server reached max children ({}), consider raising it",
                            c.name, c.max_children
                        );
                        pool.spawn_rate = 1;
                    } else {
                        to_spawn = pool
                            .spawn_rate
                            .min((c.min_spare as u64 - ready) as usize)
                            .min((c.max_children - total) as usize);
                        if pool.spawn_rate < MAX_SPAWN_RATE {
                            pool.spawn_rate *= 2;
                        }
                    }
                } else {
                    pool.spawn_rate = 1;
                }
            }
            Pm::Ondemand => {
                let queued = scoreboard::listen_queue(&pool.listener).map_or(0, |q| q.0);
                if queued > 0 && idle == 0 && total >= c.max_children {
                    board.counters().max_children_reached.fetch_add(1, Relaxed);
                }
            }
        }
        let oldest_idle: Option<&Slot> = board
            .live()
            .filter(|s| s.state() == State::Idle)
            .min_by_key(|s| s.spawned_us.load(Relaxed));
        if let Some(slot) = oldest_idle {
            let idle_for = scoreboard::now_us().saturating_sub(slot.idle_since_us.load(Relaxed));
            if c.pm == Pm::Ondemand {
                retire = idle_for >= c.process_idle_timeout.as_micros() as u64;
            }
            if retire {
                // SIGQUIT: leave after the connection in hand, if any. A
                // worker already retired (still leaving) is not asked twice.
                let pid = Pid::from_raw(slot.pid.load(Relaxed) as i32);
                self.supervisor.retire(pid, Signal::SIGQUIT);
            }
        }
        for _ in 0..to_spawn {
            self.spawn(p)?;
        }
        Ok(())
    }

    /// Logs requests running past the slowlog timeout (once each) and
    /// kills workers whose request runs past the terminate timeout.
    pub(crate) fn check_requests(&mut self) {
        for pool in &self.pools {
            let c = &pool.conf;
            let (_, active) = pool.board.idle_active();
            pool.board.note_active(active);
            for slot in pool.board.live() {
                let Some(running) = slot.running_us() else {
                    continue;
                };
                let running = Duration::from_micros(running);
                let pid = slot.pid.load(Relaxed);
                let request = || {
                    format!(
                        "[pool {}] worker {pid}, request '{} {}'",
                        c.name,
                        slot.method(),
                        slot.uri()
                    )
                };
                if c.slowlog_timeout.is_some_and(|t| running >= t)
                    && slot.slow_logged.swap(1, Relaxed) == 0
                {
                    pool.board.counters().slow_requests.fetch_add(1, Relaxed);
                    eprintln!(
                        "fpm-server: {} executing too slow ({:.3} s)",
                        request(),
                        running.as_secs_f64()
                    );
                }
                if c.request_terminate_timeout.is_some_and(|t| running >= t) {
                    eprintln!(
                        "fpm-server: {} execution timed out ({:.3} s), terminating",
                        request(),
                        running.as_secs_f64()
                    );
                    // Killed on purpose: replaced when reaped, but not a
                    // crash. The slot stops reporting the request, so it is
                    // killed once.
                    slot.set_state(State::Finishing);
                    self.supervisor
                        .terminate(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }

    /// Whether enough workers crashed (died by a signal the master did not
    /// send) within `--emergency-restart-interval` to reload.
    pub(crate) fn emergency(&mut self) -> bool {
        let threshold = self.args.emergency_restart_threshold;
        let window = self.args.emergency_restart_interval;
        while self.deaths.front().is_some_and(|t| t.elapsed() > window) {
            self.deaths.pop_front();
        }
        if threshold > 0 && self.deaths.len() >= threshold {
            eprintln!(
                "fpm-server: {} workers died by a signal within {window:?}: emergency restart",
                self.deaths.len()
            );
            self.deaths.clear();
            return true;
        }
        false
    }

    /// Notes a crash for [`emergency`](Self::emergency).
    pub(crate) fn crashed(&mut self) {
        self.deaths.push_back(Instant::now());
    }
}
