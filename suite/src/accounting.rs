//! Exact accounting of a server's whole process tree: a cgroup for CPU and
//! peak memory, an inherited perf software counter for context switches.
//!
//! Both are attached *before the server's first instruction*: the server is
//! spawned through [`spawn`], whose child stops between `fork` and `exec`
//! until a helper thread of ours has put its pid into the cgroup(s) and
//! opened the counter on it. Everything the server then creates — threads,
//! worker processes, fork-server's per-request children — is born inside
//! the cgroup and inherits the counter, so what they spend is counted even
//! after they exited or were reaped, which /proc cannot do (a thread that
//! exited takes its context-switch counts with it; a reaped child only
//! leaves `cutime`/`cstime`, in 10 ms ticks).
//!
//! * **CPU**: cgroup v2 `cpu.stat` (`usage_usec`, `user_usec`,
//!   `system_usec`) where the unified hierarchy has the cpu controller;
//!   else cgroup v1 `cpuacct.usage` (ns) with `cpuacct.usage_user` /
//!   `cpuacct.usage_sys`; else cgroup v2 `cpu.stat` without the controller
//!   (its base statistics exist in every v2 cgroup). The total is exact
//!   (the scheduler's runtime in ns); the user/system split is the kernel's
//!   own, made from tick samples (see [`CPU_SPLIT_NOTE`]).
//! * **Peak memory**: v2 `memory.peak` or v1 `memory.max_usage_in_bytes`
//!   of a cgroup of the memory controller (v1: its own hierarchy).
//! * **Context switches**: `PERF_COUNT_SW_CONTEXT_SWITCHES` opened on the
//!   server's pid with `inherit`: the kernel adds each exited thread's and
//!   child's count into the parent counter, and a read includes the live
//!   ones. Voluntary and involuntary switches are not told apart by it.
//!
//! When no cgroup can be made (not root, no writable hierarchy) the
//! runner falls back to /proc ticks and marks the figures `proc-ticks`;
//! without perf it falls back to the live threads' counts in /proc
//! (`proc-live-threads`, which misses exited threads).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a short-lived child's CPU appears as user time (shown in reports).
pub const CPU_SPLIT_NOTE: &str = "The total CPU is exact: the scheduler's runtime in ns, read from the server's cgroup. \
The user/system split comes from timer-tick samples: over a whole cgroup and thousands of requests it is a sound \
statistic. The /proc fallback splits each process separately, and a process that lived less than one tick (10 ms at \
HZ=100) has no sample: the kernel then books all of its runtime as user time (kernel/sched/cputime.c, cputime_adjust: \
stime == 0 gives utime = runtime). fork-server's per-request children live well under a tick, which is why /proc \
showed fork-server's cost as mostly user time; the cgroup shows it as it is, mostly system time (fork, copying and \
tearing down the address space, exit).";

/// How a run's CPU figures were measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuSource {
    /// cgroup v2 `cpu.stat`, exact (µs).
    CgroupV2,
    /// cgroup v1 `cpuacct.usage*`, exact (ns).
    CgroupV1,
    /// `/proc/PID/stat` clock ticks (10 ms): coarse on short runs.
    #[default]
    ProcTicks,
}

impl CpuSource {
    /// Whether the figures are tick-based.
    pub fn is_ticks(self) -> bool {
        self == CpuSource::ProcTicks
    }
}

/// How a run's context switches were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CswSource {
    /// An inherited perf software counter: every thread and child, exited ones included.
    Perf,
    /// The live threads' `/proc/PID/task/TID/status` at each snapshot (misses exited threads).
    ProcLiveThreads,
}

/// One reading of a cgroup's CPU counters, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuReading {
    /// Total runtime.
    pub total_ns: u64,
    /// User part (the kernel's tick-proportioned split).
    pub user_ns: u64,
    /// System part.
    pub sys_ns: u64,
}

/// Where a cgroup's CPU counters live.
#[derive(Debug, Clone, PartialEq)]
enum CpuFiles {
    /// A v2 cgroup directory (`cpu.stat`).
    V2(PathBuf),
    /// A v1 cpuacct cgroup directory.
    V1(PathBuf),
}

/// Where a cgroup's peak memory lives.
#[derive(Debug, Clone, PartialEq)]
enum MemFiles {
    /// v2 `memory.peak`.
    V2(PathBuf),
    /// v1 `memory.max_usage_in_bytes`.
    V1(PathBuf),
}

/// A cgroup (one per hierarchy used) made for one server; removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    cpu: CpuFiles,
    mem: Option<MemFiles>,
    /// Directories made, removed (deepest last made first) on drop.
    made: Vec<PathBuf>,
}

/// A mounted cgroup hierarchy: mount point, v2 or not, v1 controllers.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    dir: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    parse_mounts(&text)
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dir, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
            match *fstype {
                "cgroup2" => Some(Mount {
                    dir: PathBuf::from(dir),
                    v2: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    dir: PathBuf::from(dir),
                    v2: false,
                    controllers: opts.split(',').map(str::to_string).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// This process's cgroup path in the v2 hierarchy (`0::/path`) or in the v1
/// hierarchy holding `controller`.
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (id, ctl, path) = (p.next()?, p.next()?, p.next()?);
        let hit = match controller {
            None => id == "0" && ctl.is_empty(),
            Some(c) => ctl.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Makes a fresh directory under `mount` + our own path (or the mount's
/// root when that is not writable).
fn make_under(mount: &Path, own: Option<&str>, name: &str) -> Option<PathBuf> {
    let mut bases = Vec::new();
    if let Some(own) = own {
        bases.push(mount.join(own.trim_start_matches('/')));
    }
    bases.push(mount.to_path_buf());
    for base in bases {
        let dir = base.join(name);
        if std::fs::create_dir(&dir).is_ok() {
            return Some(dir);
        }
    }
    None
}

/// The user part of `total` in the proportion `user : system` of the tick
/// samples; with no sample at all, all of it (the kernel's own convention,
/// cputime_adjust).
fn split(total: u64, user: u64, system: u64) -> u64 {
    if user + system == 0 {
        return total;
    }
    (total as u128 * user as u128 / (user + system) as u128) as u64
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (cpu.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Cgroup {
    /// Makes a cgroup for a server, trying in order: v2 with the cpu
    /// controller, v1 cpuacct, v2 without it. `None` when none can be
    /// made (not root, read-only hierarchy): the caller falls back to /proc.
    pub fn create() -> Option<Cgroup> {
        let name = format!(
            "iomodels-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let all = mounts();
        let v2 = all.iter().find(|m| m.v2);
        let v1 = |c: &str| {
            all.iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
        };
        let mut made = Vec::new();

        // A v2 cgroup (made once, used for cpu and/or memory if it has them).
        let v2_dir =
            v2.and_then(|m| make_under(&m.dir, own_path(&proc_cgroup, None).as_deref(), &name));
        let v2_has = |ctl: &str| {
            v2_dir.as_ref().is_some_and(|d| {
                std::fs::read_to_string(d.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == ctl))
            })
        };
        let v2_cpu_stat = v2_dir.as_ref().is_some_and(|d| {
            std::fs::read_to_string(d.join("cpu.stat"))
                .is_ok_and(|t| keyed(&t, "usage_usec").is_some())
        });
        if let Some(d) = &v2_dir {
            made.push(d.clone());
        }
        let cpu = if v2_cpu_stat && v2_has("cpu") {
            Some(CpuFiles::V2(v2_dir.clone()?))
        } else if let Some(d) = v1("cpuacct").and_then(|m| {
            make_under(
                &m.dir,
                own_path(&proc_cgroup, Some("cpuacct")).as_deref(),
                &name,
            )
        }) {
            made.push(d.clone());
            if read_u64(&d.join("cpuacct.usage")).is_some() {
                Some(CpuFiles::V1(d))
            } else {
                None
            }
        } else if v2_cpu_stat {
            Some(CpuFiles::V2(v2_dir.clone()?))
        } else {
            None
        };
        let mem = if v2_has("memory")
            && v2_dir
                .as_ref()
                .is_some_and(|d| d.join("memory.peak").exists())
        {
            v2_dir.clone().map(MemFiles::V2)
        } else if let Some(d) = v1("memory").and_then(|m| {
            make_under(
                &m.dir,
                own_path(&proc_cgroup, Some("memory")).as_deref(),
                &name,
            )
        }) {
            made.push(d.clone());
            Some(MemFiles::V1(d))
        } else {
            None
        };
        let Some(cpu) = cpu else {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return None;
        };
        let mut group = Cgroup {
            cpu,
            mem,
            made: Vec::new(),
        };
        // Directories made but not used are removed now (the rest on drop).
        let used: Vec<PathBuf> = group.dirs();
        for d in made {
            if used.contains(&d) {
                group.made.push(d);
            } else {
                let _ = std::fs::remove_dir(d);
            }
        }
        Some(group)
    }

    /// The directories this cgroup uses (one per hierarchy).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut v = vec![match &self.cpu {
            CpuFiles::V2(d) | CpuFiles::V1(d) => d.clone(),
        }];
        if let Some(MemFiles::V2(d) | MemFiles::V1(d)) = &self.mem {
            if !v.contains(d) {
                v.push(d.clone());
            }
        }
        v
    }

    /// How its CPU figures are measured.
    pub fn cpu_source(&self) -> CpuSource {
        match self.cpu {
            CpuFiles::V2(_) => CpuSource::CgroupV2,
            CpuFiles::V1(_) => CpuSource::CgroupV1,
        }
    }

    /// Moves `pid` into every hierarchy's cgroup.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for d in self.dirs() {
            let mut f = OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))?;
            f.write_all(pid.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The CPU the cgroup's tasks (live and exited) have used so far.
    pub fn cpu(&self) -> Option<CpuReading> {
        match &self.cpu {
            CpuFiles::V2(d) => {
                let t = std::fs::read_to_string(d.join("cpu.stat")).ok()?;
                Some(CpuReading {
                    total_ns: keyed(&t, "usage_usec")? * 1000,
                    user_ns: keyed(&t, "user_usec")? * 1000,
                    sys_ns: keyed(&t, "system_usec")? * 1000,
                })
            }
            CpuFiles::V1(d) => {
                let total_ns = read_u64(&d.join("cpuacct.usage"))?;
                // usage_user/usage_sys (or cpuacct.stat's) are tick
                // samples: they give the proportion, the total is exact.
                let (u, s) = match (
                    read_u64(&d.join("cpuacct.usage_user")),
                    read_u64(&d.join("cpuacct.usage_sys")),
                ) {
                    (Some(u), Some(s)) => (u, s),
                    _ => {
                        let t = std::fs::read_to_string(d.join("cpuacct.stat")).ok()?;
                        (keyed(&t, "user")?, keyed(&t, "system")?)
                    }
                };
                let user_ns = split(total_ns, u, s);
                let sys_ns = total_ns - user_ns;
                Some(CpuReading {
                    total_ns,
                    user_ns,
                    sys_ns,
                })
            }
        }
    }

    /// The cgroup's peak memory use so far, KiB (anonymous memory, page
    /// cache and kernel memory charged to it).
    pub fn memory_peak_kib(&self) -> Option<u64> {
        match self.mem.as_ref()? {
            MemFiles::V2(d) => read_u64(&d.join("memory.peak")).map(|b| b / 1024),
            MemFiles::V1(d) => read_u64(&d.join("memory.max_usage_in_bytes")).map(|b| b / 1024),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The server's last tasks may still be leaving: a cgroup with
        // tasks cannot be removed (EBUSY), so retry for a moment.
        let end = Instant::now() + Duration::from_secs(2);
        for d in self.made.iter().rev() {
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// `struct perf_event_attr` up to its first published size (64 bytes,
/// PERF_ATTR_SIZE_VER0), which every kernel accepts.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
/// `inherit` is bit 1 of the flags word.
const PERF_ATTR_INHERIT: u64 = 1 << 1;
/// `exclude_hv` (bit 6): harmless for a software event, and allowed at
/// perf_event_paranoid 2.
const PERF_ATTR_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The context-switch counter of a process tree.
#[derive(Debug)]
pub struct CswCounter(OwnedFd);

impl CswCounter {
    /// Opens an inherited context-switch counter on `pid` (counting from
    /// now, for it and every thread and process it creates afterwards).
    pub fn open(pid: u32) -> std::io::Result<CswCounter> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_CONTEXT_SWITCHES,
            sample_period: 0,
            sample_type: 0,
            read_format: 0,
            flags: PERF_ATTR_INHERIT | PERF_ATTR_EXCLUDE_HV,
            wakeup_events: 0,
            bp_type: 0,
            bp_addr: 0,
        };
        // SAFETY: perf_event_open reads `attr` (a valid, initialized
        // struct whose `size` field states its length) and returns a new
        // fd or -1; no memory of ours is kept by the kernel.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                pid as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(CswCounter(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Context switches so far (live tasks and exited ones).
    pub fn read(&self) -> Option<u64> {
        let mut b = [0u8; 8];
        let mut f = std::fs::File::from(self.0.try_clone().ok()?);
        f.read_exact(&mut b).ok()?;
        Some(u64::from_ne_bytes(b))
    }
}

/// Spawns `cmd` with its first instruction already inside `cgroup` and
/// under a context-switch counter: the child waits between fork and exec
/// until a helper thread has moved it and opened the counter. Returns the
/// child, the counter (`None` when perf is not available) and what could
/// not be attached (empty when everything was).
pub fn spawn(
    cmd: &mut Command,
    cgroup: Option<&Cgroup>,
) -> std::io::Result<(Child, Option<CswCounter>, Vec<String>)> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_w_fd, go_r_fd) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (getpid, write, read) on fds
    // that stay open in the child until exec closes them (O_CLOEXEC); it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut b = 0u8;
            loop {
                let n = libc::read(go_r_fd, (&mut b as *mut u8).cast(), 1);
                if n >= 0 {
                    return Ok(());
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        });
    }
    let cgroup_procs: Option<Vec<PathBuf>> = cgroup.map(|c| c.dirs());
    let helper = std::thread::spawn(move || {
        let mut problems = Vec::new();
        let mut ready = std::fs::File::from(ready_r);
        let mut pid = [0u8; 4];
        if ready.read_exact(&mut pid).is_err() {
            return (None, problems); // the child failed before it ran
        }
        let pid = i32::from_ne_bytes(pid) as u32;
        for d in cgroup_procs.iter().flatten() {
            let r = OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
            if let Err(e) = r {
                problems.push(format!("cgroup {}: {e}", d.display()));
            }
        }
        let counter = match CswCounter::open(pid) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("perf_event_open: {e}"));
                None
            }
        };
        let _ = std::fs::File::from(go_w).write_all(b"g");
        (counter, problems)
    });
    let spawned = cmd.spawn();
    // Our copies of the child's ends: once closed, a child that died before
    // writing its pid shows the helper end-of-file instead of a hang.
    drop(ready_w);
    drop(go_r);
    let (counter, problems) = helper
        .join()
        .unwrap_or((None, vec!["helper thread panicked".into()]));
    Ok((spawned?, counter, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hierarchies_and_own_paths() {
        let m = parse_mounts(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
             cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
             cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
        );
        assert_eq!(m.len(), 3);
        assert!(m[2].v2 && m[1].controllers.contains(&"cpu".to_string()));
        let pc = "4:memory:/a/b\n2:cpu,cpuacct:/\n0::/user.slice/x\n";
        assert_eq!(own_path(pc, None).as_deref(), Some("/user.slice/x"));
        assert_eq!(own_path(pc, Some("memory")).as_deref(), Some("/a/b"));
        assert_eq!(own_path(pc, Some("cpuacct")).as_deref(), Some("/"));
        assert_eq!(own_path(pc, Some("pids")), None);
        assert_eq!(keyed("usage_usec 12\nuser_usec 5\n", "user_usec"), Some(5));
        assert_eq!(split(1000, 1, 3), 250);
        assert_eq!(split(1000, 0, 0), 1000);
    }
}
