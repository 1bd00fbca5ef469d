//! What a run does: the [`Config`] the binary builds from its flags and the
//! orchestrator builds directly (it is serde-serializable), and the small
//! parsers for what users type (targets, routes with weights, durations).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The wire protocol spoken to the target: the workload's one type.
pub use iomodels_workload::Protocol;

/// Where the target listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// A TCP host and port (resolved once, before the run).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix stream socket.
    Unix {
        /// Path of the socket.
        path: PathBuf,
    },
}

/// A target: protocol, endpoint and the default request path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request target used when no route is given (path and query).
    pub path: String,
}

impl Target {
    /// Parses `http://HOST:PORT/path` or `fcgi://HOST:PORT/path`. With a
    /// unix socket `unix`, `url` may also be just a path (`/hello`), and
    /// `protocol` (default: the URL's scheme, else HTTP) says what to speak.
    pub fn parse(
        url: &str,
        unix: Option<PathBuf>,
        protocol: Option<Protocol>,
    ) -> Result<Target, Error> {
        let bad = |why: &str| Error::Config(format!("bad target {url:?}: {why}"));
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (Some(s), r),
            None if url.starts_with('/') && unix.is_some() => (None, url),
            None => {
                return Err(bad(
                    "expected http://HOST:PORT/path or fcgi://HOST:PORT/path",
                ))
            }
        };
        let scheme_protocol = match scheme {
            Some("http") => Some(Protocol::Http),
            Some("fcgi") => Some(Protocol::Fcgi),
            Some(other) => return Err(bad(&format!("unknown scheme {other:?} (http or fcgi)"))),
            None => None,
        };
        if let (Some(a), Some(b)) = (scheme_protocol, protocol) {
            if a != b {
                return Err(bad(&format!(
                    "--protocol {} contradicts the {}:// scheme",
                    b.name(),
                    a.name()
                )));
            }
        }
        let protocol = protocol.or(scheme_protocol).unwrap_or(Protocol::Http);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let endpoint = match unix {
            Some(path) => Endpoint::Unix { path },
            None => {
                let (host, port) = split_host_port(authority).ok_or_else(|| {
                    bad("expected HOST:PORT (a port is required, e.g. 127.0.0.1:8080)")
                })?;
                Endpoint::Tcp {
                    host: host.to_string(),
                    port,
                }
            }
        };
        Ok(Target {
            protocol,
            endpoint,
            path: path.to_string(),
        })
    }

    /// The value of the HTTP `Host` header.
    pub fn host_header(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix { .. } => "localhost".to_string(),
        }
    }

    /// Resolves the endpoint to something to connect to.
    pub(crate) fn resolve(&self) -> Result<Addr, Error> {
        match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                let mut addrs = (host.as_str(), *port).to_socket_addrs().map_err(|e| {
                    Error::Unreachable(format!("cannot resolve {host}:{port}: {e}"))
                })?;
                addrs
                    .next()
                    .map(Addr::Tcp)
                    .ok_or_else(|| Error::Unreachable(format!("{host} has no address")))
            }
            Endpoint::Unix { path } => Ok(Addr::Unix(path.clone())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { .. } => write!(
                f,
                "{}://{}{}",
                self.protocol.name(),
                self.host_header(),
                self.path
            ),
            Endpoint::Unix { path } => write!(
                f,
                "{} over unix:{} {}",
                self.protocol.name(),
                path.display(),
                self.path
            ),
        }
    }
}

/// A resolved endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        authority.rsplit_once(':')?
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// One route of the mix and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Request target: path and query, e.g. `/cpu?n=100`.
    pub target: String,
    /// Relative weight (at least 1).
    pub weight: u32,
}

impl RouteSpec {
    /// Parses `PATH[?QUERY][:WEIGHT]`, e.g. `/hello:3` or `/cpu?n=100:1`.
    pub fn parse(s: &str) -> Result<RouteSpec, Error> {
        let (target, weight) = match s.rsplit_once(':') {
            Some((t, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let w = w
                    .parse::<u32>()
                    .map_err(|_| Error::Config(format!("route {s:?}: weight too large")))?;
                (t, w)
            }
            _ => (s, 1),
        };
        if !target.starts_with('/') {
            return Err(Error::Config(format!(
                "route {s:?}: expected PATH[?QUERY][:WEIGHT] starting with /"
            )));
        }
        if weight == 0 {
            return Err(Error::Config(format!(
                "route {s:?}: weight must be at least 1"
            )));
        }
        if target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Error::Config(format!(
                "route {s:?}: spaces are not allowed"
            )));
        }
        Ok(RouteSpec {
            target: target.to_string(),
            weight,
        })
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// After this many seconds of measurement.
    DurationS(f64),
    /// After exactly this many requests (answered or failed) were measured.
    Requests(u64),
}

/// How an open loop spaces its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// A fixed schedule, `t0 + k / rate` (wrk2).
    #[default]
    Fixed,
    /// A Poisson process: independent exponential gaps of mean `1 / rate`,
    /// as many independent users would send (seeded, so a run repeats).
    Poisson,
}

impl Arrivals {
    /// `fixed` or `poisson`.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Fixed => "fixed",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnMode {
    /// Connections stay open for many requests (the default).
    KeepAlive,
    /// A new connection for every request (`Connection: close`, or
    /// FastCGI without `FCGI_KEEP_CONN`).
    NewConn,
}

/// Everything a run needs. Build it from flags (the binary) or directly
/// (the orchestrator); [`crate::run`] checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// What to load.
    pub target: Target,
    /// The route mix; empty means the target's path alone.
    pub routes: Vec<RouteSpec>,
    /// Method for every request; `None` means POST for `/echo`, GET otherwise.
    pub method: Option<String>,
    /// Extra request headers, `Name: value` (FastCGI: sent as `HTTP_NAME` params).
    pub headers: Vec<String>,
    /// FastCGI only: extra PARAMS, `NAME=VALUE` (php-fpm needs
    /// `SCRIPT_FILENAME`, for one).
    #[serde(default)]
    pub params: Vec<String>,
    /// Body size of POST requests (bytes of the `/bytes` pattern).
    pub body_size: usize,
    /// Event-loop threads.
    pub threads: usize,
    /// Connections, spread over the threads.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// Seconds of load before measuring (not recorded).
    pub warmup_s: f64,
    /// Open loop at this many requests/s overall; `None` is a closed loop.
    pub rate: Option<f64>,
    /// The open loop's schedule: fixed or Poisson.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Keep-alive or a new connection per request.
    pub conn_mode: ConnMode,
    /// Requests in flight per connection (HTTP pipelining), at least 1.
    pub pipeline: usize,
    /// Extra connections opened first and held open, silent, during the run.
    pub idle: usize,
    /// Seconds one request (or connect) may take before it is a timeout error.
    pub timeout_s: f64,
    /// Write an HdrHistogram interval log (one interval per second) here.
    pub hdr_log: Option<PathBuf>,
    /// Show a live progress line (only when stderr is a terminal).
    pub progress: bool,
    /// Run only slice K of N of this load: one agent of a distributed run
    /// (see the `segment` module).
    #[serde(default)]
    pub segment: Option<crate::Segment>,
    /// Begin the load at this wall-clock instant, ns since the Unix epoch.
    #[serde(default)]
    pub start_at_ns: Option<u64>,
    /// An agent whose own send lag reaches this p99 is saturated, µs
    /// (`None`: [`crate::segment::LAG_LIMIT_US`]).
    #[serde(default)]
    pub max_lag_us: Option<u64>,
}

impl Config {
    /// A closed-loop keep-alive run of `target` with wrk's defaults
    /// (2 threads, 10 connections, 10 s).
    pub fn new(target: Target) -> Config {
        Config {
            target,
            routes: Vec::new(),
            method: None,
            headers: Vec::new(),
            params: Vec::new(),
            body_size: 0,
            threads: 2,
            connections: 10,
            stop: Stop::DurationS(10.0),
            warmup_s: 0.0,
            rate: None,
            arrivals: Arrivals::Fixed,
            conn_mode: ConnMode::KeepAlive,
            pipeline: 1,
            idle: 0,
            timeout_s: 10.0,
            hdr_log: None,
            progress: false,
            segment: None,
            start_at_ns: None,
            max_lag_us: None,
        }
    }

    /// Checks the values against each other; the first problem is the error.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::Config(s.to_string()));
        if self.connections == 0 {
            return bad("connections (-c) must be at least 1");
        }
        if self.threads == 0 {
            return bad("threads (-t) must be at least 1");
        }
        if self.threads > self.connections {
            return bad("connections (-c) must be at least threads (-t)");
        }
        if self.pipeline == 0 {
            return bad("--pipeline must be at least 1");
        }
        if self.pipeline > 1 && self.target.protocol == Protocol::Fcgi {
            return bad("--pipeline needs HTTP: FastCGI servers here answer one request at a time per connection");
        }
        if self.pipeline > 1 && self.conn_mode == ConnMode::NewConn {
            return bad("--pipeline and --new-conn do not go together");
        }
        match self.stop {
            Stop::DurationS(d) if !(d > 0.0 && d.is_finite()) => {
                return bad("duration (-d) must be positive")
            }
            Stop::Requests(0) => return bad("request count (-n) must be at least 1"),
            _ => {}
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            return bad("--warmup must be zero or positive");
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return bad("--timeout must be positive");
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return bad("rate (-R) must be positive");
            }
        }
        if self.arrivals == Arrivals::Poisson && self.rate.is_none() {
            return bad("--arrivals poisson needs an open loop: give a rate (-R)");
        }
        if let Some(m) = &self.method {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Error::Config(format!(
                    "method {m:?}: expected an upper-case token like GET"
                )));
            }
        }
        for h in &self.headers {
            let ok = h.split_once(':').is_some_and(|(n, _)| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            }) && !h.bytes().any(|b| b == b'\r' || b == b'\n');
            if !ok {
                return Err(Error::Config(format!(
                    "header {h:?}: expected \"Name: value\""
                )));
            }
        }
        for p in &self.params {
            if self.target.protocol != Protocol::Fcgi {
                return bad("--param is for FastCGI targets");
            }
            if p.split_once('=').is_none_or(|(n, _)| n.is_empty()) {
                return Err(Error::Config(format!("param {p:?}: expected NAME=VALUE")));
            }
        }
        if self.routes.iter().map(|r| u64::from(r.weight)).sum::<u64>() > 100_000 {
            return bad("route weights add up to more than 100000");
        }
        if !self.target.path.starts_with('/') {
            return bad("the target's path must start with /");
        }
        Ok(())
    }

    /// The route mix: the given routes, or the target's path alone.
    pub fn route_specs(&self) -> Vec<RouteSpec> {
        if self.routes.is_empty() {
            vec![RouteSpec {
                target: self.target.path.clone(),
                weight: 1,
            }]
        } else {
            self.routes.clone()
        }
    }

    /// The method used for `target`.
    pub fn method_for(&self, target: &str) -> &str {
        match &self.method {
            Some(m) => m,
            None if iomodels_workload::routes::split_target(target).0 == "/echo" => "POST",
            None => "GET",
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// Parses a duration as wrk writes them: `10s`, `2m`, `500ms`, `1h`, or
/// plain seconds (`3`, `2.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 10s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m or h)")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/hello", None, None).unwrap();
        assert_eq!(t.protocol, Protocol::Http);
        assert_eq!(t.path, "/hello");
        assert_eq!(t.host_header(), "127.0.0.1:8080");
        let t = Target::parse("fcgi://localhost:9000", None, None).unwrap();
        assert_eq!((t.protocol, t.path.as_str()), (Protocol::Fcgi, "/"));
        let t = Target::parse("http://[::1]:80/x?y=1", None, None).unwrap();
        assert_eq!(t.host_header(), "[::1]:80");
        assert_eq!(t.path, "/x?y=1");
        let t = Target::parse("/hello", Some("/tmp/s".into()), Some(Protocol::Fcgi)).unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Unix {
                path: "/tmp/s".into()
            }
        );
        assert_eq!(t.protocol, Protocol::Fcgi);
        for bad in [
            "127.0.0.1:80/x",
            "ftp://h:1/",
            "http://host/x",
            "http://:80/",
        ] {
            assert!(Target::parse(bad, None, None).is_err(), "{bad}");
        }
        assert!(Target::parse("http://h:1/", None, Some(Protocol::Fcgi)).is_err());
    }

    #[test]
    fn routes() {
        let r = RouteSpec::parse("/cpu?n=100:3").unwrap();
        assert_eq!((r.target.as_str(), r.weight), ("/cpu?n=100", 3));
        let r = RouteSpec::parse("/hello").unwrap();
        assert_eq!((r.target.as_str(), r.weight), ("/hello", 1));
        assert!(RouteSpec::parse("/hello:0").is_err());
        assert!(RouteSpec::parse("hello:1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn validation() {
        let t = Target::parse("http://127.0.0.1:1/", None, None).unwrap();
        let mut c = Config::new(t);
        assert!(c.validate().is_ok());
        c.threads = 20;
        assert!(c.validate().is_err());
        c.threads = 2;
        c.headers = vec!["NoColon".into()];
        assert!(c.validate().is_err());
        c.headers = vec!["X-A: b".into()];
        assert!(c.validate().is_ok());
        assert_eq!(c.method_for("/echo"), "POST");
        assert_eq!(c.method_for("/hello"), "GET");
        c.params = vec!["SCRIPT_FILENAME=/srv/x.php".into()];
        assert!(c.validate().is_err(), "params are for FastCGI");
        let f = Target::parse("fcgi://127.0.0.1:1/", None, None).unwrap();
        let mut c = Config::new(f);
        c.params = vec!["SCRIPT_FILENAME=/srv/x.php".into()];
        assert!(c.validate().is_ok());
        c.params = vec!["=x".into()];
        assert!(c.validate().is_err());
    }
}
