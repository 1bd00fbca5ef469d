//! The named scenarios: each is one `loadgen::Config` (the idle sweep is one
//! per idle level). Connection counts are chosen for a 2-core machine where
//! the generator (one thread) and the server (`--workers 2`) share the CPUs.

use clap::ValueEnum;
use loadgen::{Config, ConnMode, Stop, Target};
use serde::{Deserialize, Serialize};

/// A scenario of the matrix.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Scenario {
    /// `/hello` over 10 keep-alive connections: the cost of the model itself.
    Hello,
    /// `/hello` with a new connection per request: accept/close (and fork) costs.
    NewConn,
    /// `/cpu?n=2000` (tens of µs of work) over 10 connections: CPU-bound requests.
    Cpu,
    /// `/wait?us=10000` over 200 connections: N blocking workers are capped
    /// at N × 100 requests/s (Little's law); event loops park the
    /// connection on a timer and are not.
    Wait,
    /// `/file?name=64k` over 10 connections: page-cache reads and large writes.
    File,
    /// 4 active keep-alive connections on `/hello` plus 0, 1,000 and 10,000
    /// idle ones: select and poll scan every fd per call, epoll does not.
    Idle,
    /// Open loop on `/hello` at one rate for every model (`--rate`, or from
    /// the sweep, or half the lowest `hello` maximum among the models that
    /// set it), 10 connections: latency percentiles at equal load, free of
    /// coordinated omission.
    Open,
    /// A rate sweep on `/hello` (`iomodels sweep` with its defaults): each
    /// model's load–latency curve and capacity at p99 ≤ 1 ms.
    Sweep,
}

/// The core scenarios the default matrix runs.
pub const DEFAULT: &[Scenario] = &[
    Scenario::Hello,
    Scenario::NewConn,
    Scenario::Cpu,
    Scenario::Wait,
    Scenario::File,
    Scenario::Idle,
    Scenario::Open,
];

/// Idle connection levels of the sweep.
pub const IDLE_LEVELS: &[usize] = &[0, 1_000, 10_000];

/// Models the default matrix runs the idle sweep for (the rest would take
/// minutes and teach nothing more): the three readiness APIs compared.
pub const IDLE_MODELS: &[&str] = &["select", "poll", "epoll"];

/// The share of the `hello` maximum the open loop asks for.
pub const OPEN_FRACTION: f64 = 0.5;

impl Scenario {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Hello => "hello",
            Scenario::NewConn => "new-conn",
            Scenario::Cpu => "cpu",
            Scenario::Wait => "wait",
            Scenario::File => "file",
            Scenario::Idle => "idle",
            Scenario::Open => "open",
            Scenario::Sweep => "sweep",
        }
    }

    /// The request target.
    pub fn route(self) -> &'static str {
        match self {
            Scenario::Hello
            | Scenario::NewConn
            | Scenario::Idle
            | Scenario::Open
            | Scenario::Sweep => "/hello",
            Scenario::Cpu => "/cpu?n=2000",
            Scenario::Wait => "/wait?us=10000",
            Scenario::File => "/file?name=64k",
        }
    }

    /// Active connections.
    pub fn connections(self) -> usize {
        match self {
            Scenario::Wait => 200,
            Scenario::Idle => 4,
            _ => 10,
        }
    }
}

/// What one measured run asks of the load generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Active connections.
    pub connections: usize,
    /// Keep-alive or a connection per request.
    pub conn_mode: ConnMode,
    /// Idle connections held during the run.
    pub idle: usize,
    /// Open-loop rate, requests/s.
    pub rate: Option<f64>,
}

/// The load for `scenario` against `model` (its quirks applied), at `idle`
/// idle connections and, for the open loop, `rate`.
pub fn load(scenario: Scenario, model: &str, idle: usize, rate: Option<f64>) -> Load {
    let q = crate::models::quirks(model);
    let mut connections = scenario.connections();
    if q.one_connection {
        connections = 1;
    }
    let conn_mode = if scenario == Scenario::NewConn || q.closes_each_request {
        ConnMode::NewConn
    } else {
        ConnMode::KeepAlive
    };
    Load {
        connections,
        conn_mode,
        idle,
        rate: if scenario == Scenario::Open {
            rate
        } else {
            None
        },
    }
}

/// The loadgen configuration of one measured run (no warm-up: the runner
/// warms up with a separate run so the server's counters bracket the
/// measured part only).
pub fn config(target: Target, scenario: Scenario, load: &Load, duration_s: f64) -> Config {
    let mut c = Config::new(target);
    c.threads = 1;
    c.connections = load.connections;
    c.conn_mode = load.conn_mode;
    c.idle = load.idle;
    c.rate = load.rate;
    c.stop = Stop::DurationS(duration_s);
    c.timeout_s = 5.0;
    c.routes = vec![loadgen::RouteSpec {
        target: scenario.route().to_string(),
        weight: 1,
    }];
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks_shape_the_load() {
        assert_eq!(load(Scenario::Hello, "iterative", 0, None).connections, 1);
        assert_eq!(
            load(Scenario::Hello, "fork", 0, None).conn_mode,
            ConnMode::NewConn
        );
        assert_eq!(
            load(Scenario::Hello, "epoll", 0, None).conn_mode,
            ConnMode::KeepAlive
        );
        assert_eq!(load(Scenario::Wait, "epoll", 0, None).connections, 200);
        assert_eq!(load(Scenario::Hello, "epoll", 0, Some(5.0)).rate, None);
        assert_eq!(load(Scenario::Open, "epoll", 0, Some(5.0)).rate, Some(5.0));
        let t = Target::parse("http://127.0.0.1:1/", None, None).unwrap();
        let c = config(
            t,
            Scenario::Cpu,
            &load(Scenario::Cpu, "epoll", 0, None),
            0.5,
        );
        c.validate().unwrap();
        assert_eq!(c.routes[0].target, "/cpu?n=2000");
    }
}
