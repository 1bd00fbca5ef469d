//! The results file (`results/<run-id>/results.json`): machine facts, the
//! configuration and every run's figures and latency histogram. Reports and
//! comparisons are made from it alone. Documented in suite/README.md.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::procfs::Cost;
use crate::scenarios::{Load, Scenario};

/// Version of this file's layout; bumped only by an incompatible change
/// (new fields may be added without a bump).
pub const SCHEMA_VERSION: u32 = 1;

/// A whole result set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `YYYYmmdd-HHMMSS` (UTC) of the start; also the directory name.
    pub run_id: String,
    /// Where it ran.
    pub machine: Machine,
    /// What was asked.
    pub config: RunConfig,
    /// One entry per measured (or skipped) run.
    pub runs: Vec<RunRecord>,
    /// `--syscalls`: system calls per request for each model.
    #[serde(default)]
    pub syscalls: Vec<Syscalls>,
    /// `iomodels cost` (or `run --cost`): instructions per request under valgrind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost: Vec<crate::cost::InstrCost>,
    /// Rate sweeps (`iomodels sweep`, or the `sweep` scenario): how they
    /// were made, and one load–latency curve per model, route and protocol.
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepSpec>,
    /// The curves.
    #[serde(default)]
    pub sweeps: Vec<crate::sweep::Curve>,
}

/// Facts about the machine and build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Like `uname -srm`: system, release, machine.
    pub kernel: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// `rustc --version`, when rustc is on PATH.
    pub rustc: Option<String>,
    /// `git rev-parse HEAD`, when in a git checkout.
    pub git_sha: Option<String>,
    /// Start of the run, RFC 3339 UTC.
    pub date: String,
}

/// The configuration of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Models run.
    pub models: Vec<String>,
    /// Scenarios run.
    pub scenarios: Vec<Scenario>,
    /// Protocols run.
    pub protocols: Vec<loadgen::Protocol>,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds before each run.
    pub warmup_s: f64,
    /// Repetitions of each run.
    pub repeat: u32,
    /// Server `--workers`.
    pub workers: usize,
    /// Idle levels of the sweep, and the models it ran for.
    pub idle_levels: Vec<usize>,
    /// Models the idle sweep ran for.
    pub idle_models: Vec<String>,
    /// Server binaries that were asked for but not found (and peers
    /// that are not installed).
    pub missing: Vec<String>,
    /// Peers (real servers) run as rows; their configurations are in
    /// `peers/<name>/` beside results.json.
    #[serde(default)]
    pub peers: Vec<String>,
    /// `--base-bins`: the directory of the base binaries every model was
    /// also run from, in the same rounds (the same-run A/B of `compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_bins: Option<String>,
}

/// One run: a model, a scenario, a protocol (and idle level), repeated `rep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Model (binary without `-server`).
    pub model: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Protocol.
    pub protocol: loadgen::Protocol,
    /// Repetition index, from 0.
    pub rep: u32,
    /// What the generator was asked.
    pub load: Load,
    /// Why the run was not made (e.g. select at 10,000 idle connections).
    pub skipped: Option<String>,
    /// The load generator's report (requests, rps, errors, latency
    /// histogram, generator CPU); `None` when skipped or failed.
    pub report: Option<loadgen::Report>,
    /// The server tree's costs over the measured part.
    pub server: Option<Cost>,
    /// The generator used ≥ 90 % of a core: it may have set the pace.
    pub generator_limited: bool,
    /// A failure (server did not start, generator error).
    pub error: Option<String>,
    /// The A/A copy: the same model run a second time in the same rounds,
    /// whose difference from the first is the run's noise floor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aa: bool,
    /// The base copy: the same model run from the `--base-bins` binaries
    /// in the same rounds, right beside the new one (a same-run A/B).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base: bool,
}

impl RunRecord {
    /// Requests/s, 0 when there is no report.
    pub fn rps(&self) -> f64 {
        self.report.as_ref().map_or(0.0, |r| r.rps)
    }

    /// Key that identifies the same run across result sets.
    pub fn key(&self) -> String {
        let mut k = format!(
            "{}/{}/{}",
            self.model,
            self.scenario.name(),
            self.protocol.name()
        );
        if self.scenario == Scenario::Idle {
            k.push_str(&format!("/idle={}", self.load.idle));
        }
        if self.aa {
            k.push_str("/aa");
        }
        if self.base {
            k.push_str("/base");
        }
        k
    }
}

/// System calls per request of one model, from `strace -f -c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Syscalls {
    /// Model.
    pub model: String,
    /// Protocol.
    pub protocol: loadgen::Protocol,
    /// Requests made under strace.
    pub requests: u64,
    /// (name, calls per request), most frequent first.
    pub per_request: Vec<(String, f64)>,
}

impl Results {
    /// Reads and checks a results file.
    pub fn load(path: &Path) -> anyhow::Result<Results> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
        let version = v.get("schema_version").and_then(|s| s.as_u64());
        if version != Some(u64::from(SCHEMA_VERSION)) {
            anyhow::bail!(
                "{}: schema_version {version:?}, this iomodels reads {SCHEMA_VERSION}",
                path.display()
            );
        }
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("{} is not an iomodels results file: {e}", path.display()))
    }

    /// Writes it as pretty JSON.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Machine {
    /// Facts about this machine, now.
    pub fn current() -> Machine {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        };
        let kernel = format!(
            "{} {} {}",
            read("ostype"),
            read("osrelease"),
            std::env::consts::ARCH
        );
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        Machine {
            kernel,
            cpu_model,
            cpus,
            rustc: command_line("rustc", &["--version"]),
            git_sha: command_line("git", &["rev-parse", "HEAD"]),
            date: rfc3339(std::time::SystemTime::now()),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(t: std::time::SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// `2026-11-23T14:16:41Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20261123-141641`, the run id.
pub fn run_id(t: std::time::SystemTime) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_443_401);
        assert_eq!(rfc3339(t), "2026-11-23T14:16:41Z");
        assert_eq!(run_id(t), "20261123-141641");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
