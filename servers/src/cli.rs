//! The command line every server shares (DESIGN.md, "Shared command line"),
//! and the `main` wrapper: a user's mistake is one line on stderr and a
//! non-zero exit, never a panic or a backtrace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};
use iomodels_workload::{Protocol, Timeouts};

use crate::net::ListenAddr;

/// Flags every server takes, with the same defaults.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Address to listen on: HOST:PORT (port 0 picks a free port) or unix:/path
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = ListenAddr::parse)]
    pub listen: ListenAddr,

    /// Protocol spoken on the listening socket
    #[arg(long, value_name = "P", value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,

    /// Worker processes or threads, for models that have them [default: number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: Option<u32>,

    /// listen(2) backlog
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub backlog: i32,

    /// Directory /file reads from [default: a temporary directory holding the generated files 4k, 64k and 1m]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Connections held at once (per process for multi-process models); beyond it new ones get 503 (FastCGI: OVERLOADED) and are closed [default: the open-file limit less a margin]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,

    /// Seconds to receive a whole request once its first byte arrived (slowloris guard)
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,

    /// Seconds a keep-alive connection may sit idle before the server closes it
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
}

impl Common {
    /// The protocol to speak.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `--workers`, or the number of CPUs.
    pub fn workers(&self) -> u32 {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }

    /// The timeouts connections apply.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
        }
    }

    /// `--max-conns`, or what the open-file limit allows (after raising the
    /// soft limit to the hard one).
    pub fn max_conns(&self) -> u64 {
        let files = crate::net::raise_fd_limit();
        self.max_conns.unwrap_or(files.saturating_sub(64).max(1))
    }
}

/// Parses seconds: `10`, `0.5`.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "'{s}' must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs a server's `main`: parses `A`, runs `run`, and turns any error into
/// one line `NAME: error: …` and exit status 1 (2 for a bad command line).
pub fn main<A: Parser>(run: impl FnOnce(A) -> anyhow::Result<()>) -> ExitCode {
    let name = crate::net::program();
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("{name}: error: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the ready line `listening on ADDR` and flushes stdout: scripts
/// and tests wait for this line.
pub fn ready(addr: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout is not a reason to stop serving.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Test {
        #[command(flatten)]
        common: Common,
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Test::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let t = Test::try_parse_from(["x"]).unwrap();
        assert_eq!(t.common.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(t.common.protocol(), Protocol::Http);
        assert_eq!(t.common.backlog, 1024);
        assert_eq!(t.common.header_timeout, Duration::from_secs(10));
        assert!(Test::try_parse_from(["x", "--idle-timeout", "-1"]).is_err());
        assert!(Test::try_parse_from(["x", "--listen", "nonsense"]).is_err());
        let u =
            Test::try_parse_from(["x", "--listen", "unix:/tmp/s", "--protocol", "fcgi"]).unwrap();
        assert_eq!(u.common.listen.to_string(), "unix:/tmp/s");
    }
}
