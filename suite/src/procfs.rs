//! The server's own costs, read from /proc over its whole process tree
//! (children found through `/proc/PID/task/*/children`, recursively).
//!
//! CPU counts `utime + stime` of every live process of the tree plus
//! `cutime + cstime` (children already reaped, e.g. fork-server's
//! per-request processes), so the difference of two snapshots is the CPU
//! the tree spent between them, whoever spent it. Context switches are
//! summed over every thread (`/proc/PID/task/TID/status`): the per-process
//! `status` file only shows its main thread's.

use serde::{Deserialize, Serialize};

use crate::accounting::{CpuReading, CpuSource, CswSource};

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// User CPU seconds (live processes and reaped children).
    pub user_s: f64,
    /// System CPU seconds (likewise).
    pub sys_s: f64,
    /// Voluntary context switches, all threads.
    pub voluntary_csw: u64,
    /// Involuntary context switches, all threads.
    pub involuntary_csw: u64,
    /// Processes in the tree.
    pub processes: u64,
    /// Threads in the tree.
    pub threads: u64,
    /// Sum of each process's peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Sum of proportional set sizes (smaps_rollup `Pss`), KiB.
    pub pss_kib: u64,
    /// read(2)-family system calls (`/proc/PID/io` `syscr`), summed over
    /// the tree: each process's figure covers its exited threads and its
    /// reaped children too.
    #[serde(default)]
    pub syscr: u64,
    /// write(2)-family system calls (`syscw`), likewise.
    #[serde(default)]
    pub syscw: u64,
}

/// Every pid of the tree rooted at `root`, root first.
pub fn tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `utime stime cutime cstime` in ticks from a `/proc/PID/stat` line.
pub fn parse_stat(stat: &str) -> Option<[u64; 4]> {
    // The command name is in parentheses and may hold spaces: fields
    // after the last ')' start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, so index 14 - 3 = 11 here.
    let n = |i: usize| f.get(i).and_then(|v| v.parse().ok());
    Some([n(11)?, n(12)?, n(13)?, n(14)?])
}

/// The value (first number) of `key:` in a status-like file.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Reads the tree rooted at `root`. Processes that vanish while being read
/// are skipped.
pub fn snapshot(root: u32) -> Snapshot {
    let hz = ticks_per_second();
    let mut s = Snapshot::default();
    for pid in tree(root) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some([ut, st, cut, cst]) = parse_stat(&stat) else {
            continue;
        };
        s.processes += 1;
        s.user_s += (ut + cut) as f64 / hz;
        s.sys_s += (st + cst) as f64 / hz;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            s.threads += field(&status, "Threads").unwrap_or(0);
            s.peak_rss_kib += field(&status, "VmHWM").unwrap_or(0);
        }
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            s.syscr += field(&io, "syscr").unwrap_or(0);
            s.syscw += field(&io, "syscw").unwrap_or(0);
        }
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            s.pss_kib += field(&rollup, "Pss").unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Ok(ts) = std::fs::read_to_string(t.path().join("status")) {
                    s.voluntary_csw += field(&ts, "voluntary_ctxt_switches").unwrap_or(0);
                    s.involuntary_csw += field(&ts, "nonvoluntary_ctxt_switches").unwrap_or(0);
                }
            }
        }
    }
    s
}

/// What the tree spent between two snapshots, per request, with the
/// memory and sizes of the later one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// User CPU µs per request.
    pub user_us_per_request: f64,
    /// System CPU µs per request.
    pub sys_us_per_request: f64,
    /// User + system CPU µs per request.
    pub cpu_us_per_request: f64,
    /// CPU used over the run as a share of one core.
    pub cpu_cores: f64,
    /// Voluntary context switches per request.
    pub voluntary_csw_per_request: f64,
    /// Involuntary context switches per request.
    pub involuntary_csw_per_request: f64,
    /// Processes at the end of the run.
    pub processes: u64,
    /// Threads at the end of the run.
    pub threads: u64,
    /// Sum of peak RSS over the tree, KiB.
    pub peak_rss_kib: u64,
    /// Sum of PSS over the tree, KiB.
    pub pss_kib: u64,
    /// How the CPU figures were measured (`proc-ticks` in files written
    /// before cgroup accounting existed).
    #[serde(default = "ticks")]
    pub cpu_source: CpuSource,
    /// Context switches per request, every thread and child counted
    /// (exited ones too when `csw_source` is `perf`).
    #[serde(default)]
    pub csw_per_request: Option<f64>,
    /// How `csw_per_request` was counted.
    #[serde(default)]
    pub csw_source: Option<CswSource>,
    /// read(2)-family system calls per request (`/proc/PID/io` `syscr`,
    /// read, readv, pread…; not recv*, not io_uring).
    #[serde(default)]
    pub syscr_per_request: Option<f64>,
    /// write(2)-family system calls per request (`syscw`).
    #[serde(default)]
    pub syscw_per_request: Option<f64>,
    /// The cgroup's peak memory (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`) over the server's life, KiB.
    #[serde(default)]
    pub cgroup_peak_kib: Option<u64>,
}

fn ticks() -> CpuSource {
    CpuSource::ProcTicks
}

impl Cost {
    /// Context switches per request: the exact count when there is one,
    /// else the /proc live-thread sum.
    pub fn csw(&self) -> f64 {
        self.csw_per_request
            .unwrap_or(self.voluntary_csw_per_request + self.involuntary_csw_per_request)
    }

    /// read + write system calls per request, when measured.
    pub fn syscalls_rw(&self) -> Option<f64> {
        Some(self.syscr_per_request? + self.syscw_per_request?)
    }
}

impl Cost {
    /// The cost of `requests` requests made in `wall_s` seconds between
    /// `before` and `after`.
    pub fn between(before: &Snapshot, after: &Snapshot, requests: u64, wall_s: f64) -> Cost {
        let per = |x: f64| {
            if requests == 0 {
                0.0
            } else {
                x / requests as f64
            }
        };
        let user = (after.user_s - before.user_s).max(0.0);
        let sys = (after.sys_s - before.sys_s).max(0.0);
        Cost {
            user_us_per_request: per(user * 1e6),
            sys_us_per_request: per(sys * 1e6),
            cpu_us_per_request: per((user + sys) * 1e6),
            cpu_cores: if wall_s > 0.0 {
                (user + sys) / wall_s
            } else {
                0.0
            },
            voluntary_csw_per_request: per(
                after.voluntary_csw.saturating_sub(before.voluntary_csw) as f64,
            ),
            involuntary_csw_per_request: per(after
                .involuntary_csw
                .saturating_sub(before.involuntary_csw)
                as f64),
            processes: after.processes,
            threads: after.threads,
            peak_rss_kib: after.peak_rss_kib,
            pss_kib: after.pss_kib,
            cpu_source: CpuSource::ProcTicks,
            csw_per_request: None,
            csw_source: Some(CswSource::ProcLiveThreads),
            syscr_per_request: Some(per(after.syscr.saturating_sub(before.syscr) as f64)),
            syscw_per_request: Some(per(after.syscw.saturating_sub(before.syscw) as f64)),
            cgroup_peak_kib: None,
        }
    }

    /// Replaces the CPU figures with a cgroup's exact ones, read before and
    /// after the same `requests` made in `wall_s` seconds.
    pub fn with_cgroup_cpu(
        mut self,
        source: CpuSource,
        before: CpuReading,
        after: CpuReading,
        requests: u64,
        wall_s: f64,
    ) -> Cost {
        let us = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1000.0 / requests.max(1) as f64;
        if requests > 0 {
            self.user_us_per_request = us(after.user_ns, before.user_ns);
            self.sys_us_per_request = us(after.sys_ns, before.sys_ns);
            self.cpu_us_per_request = us(after.total_ns, before.total_ns);
        }
        if wall_s > 0.0 {
            self.cpu_cores = after.total_ns.saturating_sub(before.total_ns) as f64 / 1e9 / wall_s;
        }
        self.cpu_source = source;
        self
    }

    /// Sets the exact context switches from a counter's two readings.
    pub fn with_csw_count(mut self, before: u64, after: u64, requests: u64) -> Cost {
        if requests > 0 {
            self.csw_per_request = Some(after.saturating_sub(before) as f64 / requests as f64);
            self.csw_source = Some(CswSource::Perf);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 5 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(line), Some([7, 3, 11, 5]));
    }

    #[test]
    fn reads_status_fields() {
        let s = "Name:\tx\nThreads:\t3\nVmHWM:\t  1234 kB\nvoluntary_ctxt_switches:\t9\n";
        assert_eq!(field(s, "Threads"), Some(3));
        assert_eq!(field(s, "VmHWM"), Some(1234));
        assert_eq!(field(s, "voluntary_ctxt_switches"), Some(9));
        assert_eq!(field(s, "Missing"), None);
    }

    #[test]
    fn snapshot_of_self_sees_this_process() {
        let s = snapshot(std::process::id());
        assert!(s.processes >= 1 && s.threads >= 1 && s.peak_rss_kib > 0);
    }
}
