//! `iomodels cost`: user-space instructions per request, counted by
//! valgrind (cachegrind with its cache and branch simulation off: an exact
//! count of the instructions the server's own code executed, in every
//! thread and every worker process; a worker's file also holds the master's
//! start-up instructions it inherited at fork, which the subtraction below
//! cancels).
//!
//! The server runs under valgrind twice, for a small and a large number of
//! requests (2,000 and 12,000 over one connection by default); each time its
//! instruction total from start to exit is summed over its processes. The
//! difference over the difference of requests is the cost of one request:
//! start-up, the ready line and the graceful stop cancel out.
//!
//! One connection makes it exact for single-threaded models (the same
//! count to a few instructions in every run): with several, how many
//! ready connections one `epoll_wait` returns depends on timing, and so
//! does the loop's cost per request. Models with several threads handing
//! connections to each other (mio, oneshot) still vary by a few percent;
//! `--repeat` measures that spread, and `compare` allows it.
//!
//! The figure does not depend on the machine's load, so it is the one the
//! CI gate leans on first. It leaves out what the kernel does for the
//! server (system calls), which [`crate::procfs`]'s CPU time and system
//! call counts cover. io_uring models are skipped: valgrind does not
//! follow the kernel's side of the rings, and most of their work is in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::{ConnMode, Protocol, Stop};
use serde::{Deserialize, Serialize};

use crate::runner::{self, Server};
use crate::scenarios::{self, Scenario};

/// Models valgrind cannot measure, and why.
pub fn unsupported(model: &str) -> Option<&'static str> {
    if crate::models::quirks(model).closes_each_request {
        return Some(
            "forks a process per request: valgrind copies its counts into every child, so each child's total repeats the parent's instructions up to that fork",
        );
    }
    match model {
        "uring" | "monoio" => Some(
            "uses io_uring: valgrind does not model the kernel's side of the rings (and most of the model's work is there)",
        ),
        _ => None,
    }
}

/// What `iomodels cost` measures.
#[derive(Debug, Clone)]
pub struct CostPlan {
    /// Directory holding the server binaries.
    pub bin_dir: PathBuf,
    /// Models.
    pub models: Vec<String>,
    /// Scenarios (hello, new-conn, cpu, file make sense; the others depend on time).
    pub scenarios: Vec<Scenario>,
    /// Protocols.
    pub protocols: Vec<Protocol>,
    /// The two request counts, small then large.
    pub counts: (u64, u64),
    /// Connections of the load.
    pub connections: usize,
    /// Server `--workers`.
    pub workers: usize,
    /// Measurements of each pair of counts (the median is reported).
    pub repeat: u32,
}

/// One model × scenario × protocol's instructions per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrCost {
    /// Model.
    pub model: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Protocol.
    pub protocol: Protocol,
    /// Connections of the load.
    pub connections: usize,
    /// A new connection per request.
    pub new_conn: bool,
    /// The two request counts.
    pub requests: [u64; 2],
    /// Instructions the server executed, start to exit, for each count.
    pub instructions: [u64; 2],
    /// (instructions[1] − instructions[0]) / (requests[1] − requests[0]),
    /// the median over the repetitions.
    pub per_request: Option<f64>,
    /// Each repetition's figure.
    #[serde(default)]
    pub samples: Vec<f64>,
    /// Why it was not measured.
    pub skipped: Option<String>,
    /// Why the measurement failed.
    pub error: Option<String>,
}

impl InstrCost {
    /// The key shared with the matrix's runs: `model/scenario/protocol`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.model,
            self.scenario.name(),
            self.protocol.name()
        )
    }
}

/// Whether valgrind is installed (`valgrind --version` runs).
pub fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Sums the `summary:` lines of every cachegrind output file in `dir`.
pub fn sum_cachegrind(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut files = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        let text = std::fs::read_to_string(e.path())?;
        let ir = text
            .lines()
            .find_map(|l| l.strip_prefix("summary:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no summary line in {}", e.path().display()))?;
        total += ir;
        files += 1;
    }
    if files == 0 {
        anyhow::bail!("valgrind wrote no output (did the server exit cleanly on SIGTERM?)");
    }
    Ok(total)
}

/// The server's instructions from start to exit with `requests` requests.
fn instructions(
    plan: &CostPlan,
    model: &str,
    scenario: Scenario,
    protocol: Protocol,
    requests: u64,
) -> anyhow::Result<u64> {
    let out = tempfile::tempdir()?;
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=cachegrind",
        "--cache-sim=no",
        "--branch-sim=no",
        "--trace-children=no",
        "-q",
    ])
    .arg(format!(
        "--cachegrind-out-file={}/cg.%p",
        out.path().display()
    ))
    .arg(runner::server_bin(&plan.bin_dir, model));
    let mut server = Server::start_with(cmd, protocol, plan.workers)?;
    let mut load = scenarios::load(scenario, model, 0, None);
    load.connections = if crate::models::quirks(model).one_connection {
        1
    } else {
        plan.connections
    };
    let t = runner::target(&server.addr, protocol)?;
    let mut c = scenarios::config(t, scenario, &load, 1.0);
    c.stop = Stop::Requests(requests);
    c.timeout_s = 30.0;
    let report = loadgen::run(&c).map_err(|e| anyhow::anyhow!("{e}"));
    // valgrind writes its counts when the server exits: give it time.
    server.stop_within(Duration::from_secs(30));
    let report = report?;
    if report.errors.total() > 0 {
        anyhow::bail!("{} errors under valgrind", report.errors.total());
    }
    sum_cachegrind(out.path())
}

/// Measures one model × scenario × protocol.
pub fn measure(plan: &CostPlan, model: &str, scenario: Scenario, protocol: Protocol) -> InstrCost {
    let load = scenarios::load(scenario, model, 0, None);
    let mut rec = InstrCost {
        model: model.to_string(),
        scenario,
        protocol,
        connections: if crate::models::quirks(model).one_connection {
            1
        } else {
            plan.connections
        },
        new_conn: load.conn_mode == ConnMode::NewConn,
        requests: [plan.counts.0, plan.counts.1],
        instructions: [0, 0],
        per_request: None,
        samples: Vec::new(),
        skipped: None,
        error: None,
    };
    if let Some(why) = unsupported(model) {
        rec.skipped = Some(why.to_string());
        return rec;
    }
    let dn = rec.requests[1].saturating_sub(rec.requests[0]).max(1);
    for _ in 0..plan.repeat.max(1) {
        let mut got = [0u64; 2];
        for (i, n) in rec.requests.into_iter().enumerate() {
            match instructions(plan, model, scenario, protocol, n) {
                Ok(ir) => got[i] = ir,
                Err(e) => {
                    rec.error = Some(format!("{n} requests: {e:#}"));
                    return rec;
                }
            }
        }
        rec.instructions = got;
        rec.samples
            .push((got[1] as f64 - got[0] as f64) / dn as f64);
    }
    rec.per_request = Some(crate::summary::median(rec.samples.clone()));
    rec
}

impl InstrCost {
    /// Half the range of the repetitions over the median (0 with one).
    pub fn spread(&self) -> f64 {
        let (lo, hi) = crate::summary::range(&self.samples);
        crate::summary::spread((lo, hi), self.per_request.unwrap_or(0.0))
    }
}

/// Measures the whole plan, printing one line per measurement on stderr
/// when `progress`.
pub fn run(plan: &CostPlan, progress: bool) -> Vec<InstrCost> {
    let started = Instant::now();
    let total = plan.models.len() * plan.scenarios.len() * plan.protocols.len();
    let mut out = Vec::new();
    for &protocol in &plan.protocols {
        for &scenario in &plan.scenarios {
            for model in &plan.models {
                let r = measure(plan, model, scenario, protocol);
                if progress {
                    let what = match (&r.per_request, &r.skipped, &r.error) {
                        (Some(x), _, _) => format!("{x:.0} instructions/request"),
                        (_, Some(s), _) => format!("skipped: {s}"),
                        (_, _, Some(e)) => format!("failed: {e}"),
                        _ => String::new(),
                    };
                    eprintln!(
                        "iomodels: cost [{}/{total}] {:.0} s  {}: {what}",
                        out.len() + 1,
                        started.elapsed().as_secs_f64(),
                        r.key()
                    );
                }
                out.push(r);
            }
        }
    }
    out
}

/// The instructions table (Markdown).
pub fn table(costs: &[InstrCost]) -> String {
    let mut s = String::from(
        "| model | scenario | proto | conns | instructions/request | requests | instructions (start to exit, last repetition) |\n\
         |---|---|---|---:|---:|---:|---:|\n",
    );
    for c in costs {
        let conns = format!("{}{}", c.connections, if c.new_conn { " new" } else { "" });
        let head = format!(
            "| {} | {} | {} | {conns} |",
            c.model,
            c.scenario.name(),
            c.protocol.name()
        );
        match (&c.per_request, &c.skipped, &c.error) {
            (Some(x), _, _) => s.push_str(&format!(
                "{head} {x:.0}{} | {} / {} | {} / {} |\n",
                if c.samples.len() > 1 {
                    format!(" ±{:.1}%", c.spread() * 100.0)
                } else {
                    String::new()
                },
                c.requests[0],
                c.requests[1],
                c.instructions[0],
                c.instructions[1]
            )),
            (_, Some(why), _) | (_, _, Some(why)) => {
                s.push_str(&format!("{head} – | | {} |\n", why.replace('|', "/")))
            }
            _ => s.push_str(&format!("{head} – | | |\n")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cachegrind_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("cg.1"),
            "desc: x\nevents: Ir\nsummary: 1000\n",
        )
        .unwrap();
        std::fs::write(d.path().join("cg.2"), "events: Ir\nsummary: 234 \n").unwrap();
        assert_eq!(sum_cachegrind(d.path()).unwrap(), 1234);
        std::fs::write(d.path().join("cg.3"), "events: Ir\n").unwrap();
        assert!(sum_cachegrind(d.path()).is_err());
        assert!(unsupported("uring").is_some() && unsupported("epoll").is_none());
    }
}
