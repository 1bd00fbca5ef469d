//! One agent of a distributed run: `--segment K/N` and `--start-at`.
//!
//! Every agent is given the *same* command line (the global `-R`, `-c`,
//! `-n`, `--idle`) and its own `--segment K/N`; what it runs is its slice:
//!
//! * Open loop: request `i` of the global fixed schedule `t0 + i / R`
//!   belongs to agent `i mod N`. Agent K sends at `t0 + K/R + m·N/R`, so
//!   the N agents together send exactly the single generator's schedule,
//!   never N requests at once. Inside an agent, thread `j` of `T` takes
//!   the agent's requests `m ≡ j (mod T)` (exact when `-c` divides evenly
//!   over the threads). Poisson arrivals: each agent and thread draws an
//!   independent Poisson stream of its share of the rate; their sum is a
//!   Poisson process of rate R (the same process, not the same draws).
//! * Closed loop: the agent opens its share of `-c` connections (`c/N`,
//!   the remainder one each to the first agents); `-n` and `--idle` are
//!   shared the same way.
//!
//! `--start-at UNIX_TIME_NS` makes every agent begin at the same instant
//! (after measuring clock offsets, the orchestrator gives each agent the
//! instant in its own clock): `t0` is that instant, so the schedules of
//! all agents are one schedule and their interval logs start together.
//! An agent that gets its command after that instant (by more than
//! [`LATE_LIMIT`]) refuses to run rather than send a burst to catch up.
//!
//! After the run the agent says whether it could keep up: it is
//! [`Agent::saturated`] when its own sending lag (a connection was free but
//! the request still went out late) reached a p99 of [`LAG_LIMIT_US`], or
//! its threads were busy for [`CPU_LIMIT`] of the time. Figures from a
//! saturated agent measure the agent, not the server.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Stop};
use crate::Error;

/// An agent starting this much after `--start-at` refuses to run.
pub const LATE_LIMIT: Duration = Duration::from_millis(100);
/// The generator's own send lag at p99 that marks an agent saturated, µs
/// (by default; `--max-lag` sets another).
pub const LAG_LIMIT_US: u64 = 10_000;
/// The share of its threads' time an agent may spend on CPU before it is
/// marked saturated (the orchestrator's `GEN` mark uses the same).
pub const CPU_LIMIT: f64 = 0.9;

/// `K/N`: the K-th (from 0, as Kubernetes' `JOB_COMPLETION_INDEX`) of N
/// interleaved slices of one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// This agent's index, `0..of`.
    pub index: u32,
    /// Number of agents.
    pub of: u32,
}

impl FromStr for Segment {
    type Err = String;

    fn from_str(s: &str) -> Result<Segment, String> {
        let bad = || format!("bad segment {s:?}: expected K/N with 0 <= K < N, e.g. 0/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let of: u32 = n.trim().parse().map_err(|_| bad())?;
        if of == 0 || index >= of {
            return Err(bad());
        }
        Ok(Segment { index, of })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

impl Segment {
    /// This agent's share of `total` things (connections, requests):
    /// `total / N`, plus one for the first `total % N` agents.
    pub fn share(self, total: u64) -> u64 {
        let (n, k) = (u64::from(self.of), u64::from(self.index));
        total / n + u64::from(k < total % n)
    }
}

/// What an agent reports about itself (the report's `agent` block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// `K/N`, when the agent ran a segment.
    pub segment: Option<Segment>,
    /// The agreed start, ns since the Unix epoch (this agent's clock).
    pub start_at_ns: Option<u64>,
    /// How late the load really began after `start_at_ns`, ms.
    pub start_late_ms: f64,
    /// The host name the agent ran on.
    pub host: String,
    /// The agent could not keep up: its figures measure itself.
    pub saturated: bool,
    /// Why it is saturated (empty when it is not).
    #[serde(default)]
    pub saturated_why: String,
}

/// The configuration this agent runs: its share of the global `config`
/// (the rate, connections, requests and idle connections divided; the
/// threads at most its connections).
pub(crate) fn local(config: &Config) -> Result<Config, Error> {
    let Some(seg) = config.segment else {
        return Ok(config.clone());
    };
    let mut c = config.clone();
    let conns = seg.share(config.connections as u64) as usize;
    if conns == 0 {
        return Err(Error::Config(format!(
            "segment {seg}: -c {} gives this agent no connection (at least {} needed)",
            config.connections, seg.of
        )));
    }
    c.connections = conns;
    c.threads = config.threads.min(conns);
    c.idle = seg.share(config.idle as u64) as usize;
    c.rate = config.rate.map(|r| r / f64::from(seg.of));
    if let Stop::Requests(n) = config.stop {
        let mine = seg.share(n);
        if mine == 0 {
            return Err(Error::Config(format!(
                "segment {seg}: -n {n} gives this agent no request"
            )));
        }
        c.stop = Stop::Requests(mine);
    }
    Ok(c)
}

/// Where thread `thread` of the agent starts on the global schedule: the
/// agent's first request is global request K (at `K/R`), and thread `j`
/// takes the agent's `j`-th request first. `rate` is the agent's own.
pub(crate) fn phase(segment: Option<Segment>, rate: f64, thread: usize) -> Duration {
    let (k, n) = segment.map_or((0, 1), |s| (s.index, s.of));
    let global = rate * f64::from(n);
    Duration::from_secs_f64(f64::from(k) / global + thread as f64 / rate)
}

/// A distinct stream number per agent and thread (seeds Poisson gaps).
pub(crate) fn stream(segment: Option<Segment>, threads: usize, thread: usize) -> u64 {
    segment.map_or(0, |s| u64::from(s.index) * threads as u64) + thread as u64
}

/// Waits until `start_at_ns` (wall clock) and returns how late the wait
/// ended, or an error if the instant had passed by more than [`LATE_LIMIT`].
pub(crate) fn wait_for_start(start_at_ns: u64) -> Result<Duration, Error> {
    let at = UNIX_EPOCH + Duration::from_nanos(start_at_ns);
    match at.duration_since(SystemTime::now()) {
        Ok(wait) => std::thread::sleep(wait),
        Err(e) if e.duration() > LATE_LIMIT => {
            return Err(Error::Io(format!(
                "the start time (--start-at) passed {:.0} ms ago: this agent started late",
                e.duration().as_secs_f64() * 1e3
            )))
        }
        Err(_) => {}
    }
    Ok(SystemTime::now().duration_since(at).unwrap_or_default())
}

/// The report's verdict on the agent: why it is saturated, if it is.
pub(crate) fn saturation(
    generator_lag_p99_us: Option<u64>,
    limit_us: Option<u64>,
    cpu_utilization: f64,
) -> String {
    let mut why = Vec::new();
    let limit = limit_us.unwrap_or(LAG_LIMIT_US);
    if let Some(p99) = generator_lag_p99_us.filter(|&p| p >= limit) {
        why.push(format!(
            "its own send lag reached p99 {:.1} ms (limit {} ms)",
            p99 as f64 / 1e3,
            limit as f64 / 1e3
        ));
    }
    if cpu_utilization >= CPU_LIMIT {
        why.push(format!(
            "its threads were on CPU {:.0}% of the time (limit {:.0}%)",
            cpu_utilization * 100.0,
            CPU_LIMIT * 100.0
        ));
    }
    why.join("; ")
}

/// The host name, for the report (`?` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    #[test]
    fn parses_segments() {
        assert_eq!("1/3".parse::<Segment>(), Ok(Segment { index: 1, of: 3 }));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Segment>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 100, 101] {
            let sum: u64 = (0..3)
                .map(|k| Segment { index: k, of: 3 }.share(total))
                .sum();
            assert_eq!(sum, total);
        }
    }

    /// The agents' open-loop schedules, merged, are exactly the single
    /// generator's `i / R`.
    #[test]
    fn schedules_interleave_exactly() {
        let r = 1000.0;
        let n = 3u32;
        let mut times: Vec<u64> = Vec::new();
        for k in 0..n {
            let seg = Some(Segment { index: k, of: n });
            let rate = r / f64::from(n);
            // One thread: the agent's m-th request at phase + m / rate.
            let p = phase(seg, rate, 0).as_nanos() as f64;
            times.extend((0..100).map(|m| (p + m as f64 * 1e9 / rate).round() as u64));
        }
        times.sort_unstable();
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, (i as f64 * 1e9 / r).round() as u64, "request {i}");
        }
    }

    #[test]
    fn local_config_is_the_share() {
        let mut c = Config::new(Target::parse("http://127.0.0.1:1/", None, None).unwrap());
        c.connections = 10;
        c.threads = 4;
        c.rate = Some(900.0);
        c.stop = Stop::Requests(100);
        c.segment = Some(Segment { index: 2, of: 3 });
        let l = local(&c).unwrap();
        assert_eq!((l.connections, l.threads), (3, 3));
        assert_eq!(l.rate, Some(300.0));
        assert_eq!(l.stop, Stop::Requests(33));
        c.connections = 2;
        assert!(local(&c).is_err(), "agent 2 of 3 gets no connection");
    }
}
