//! `iomodels run --netns`: the server and the load generator in two
//! network namespaces joined by a veth pair, with a round-trip time (and
//! jitter, loss, a rate limit) on the link.
//!
//! ```text
//!   iom-<pid>-gen                          iom-<pid>-srv
//!   loadgen ─(relay)─ iom<pid>g 10.213.0.2 ══ 10.213.0.1 iom<pid>s ─ server
//!                      tc: netem delay RTT/2 (or tbf)   tc: the same
//! ```
//!
//! * Delay by netem (`--delay-by netem`, the default where the kernel has
//!   `sch_netem`): `tc qdisc add dev … root netem delay RTT/2 [jitter]
//!   [loss] [rate]` on both ends, so each direction carries half the RTT.
//! * Delay by relay (`--delay-by relay`, used — and said to be used — where
//!   netem does not exist): the link has no delay; a relay process in the
//!   generator's namespace ([`crate::relay`]) holds every chunk RTT/2 in
//!   each direction. `--rate` is then a `tbf` on both ends; `--loss` needs
//!   netem. What the relay does not reproduce is listed in its module.
//!
//! The server is started in its namespace by a `setns(2)` between fork and
//! exec (its cgroup accounting is attached as before); the load generator
//! runs in a thread that joined the generator's namespace (the threads it
//! starts inherit it). `--gen-cpus` and `--server-cpus` pin them with
//! `sched_setaffinity(2)`.
//!
//! Namespaces are named after the orchestrator's pid (`iom-<pid>-…`) and
//! removed when the [`Net`] is dropped, on an error, and on SIGINT, SIGTERM
//! or SIGHUP (a thread waits for them, kills what was started in the
//! namespaces, removes them and exits). Namespaces of an `iomodels` that
//! died by SIGKILL are removed by the next `--netns` run.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runner::{Ready, Server};

/// Subnet of the veth pair: server .1, generator .2.
const SERVER_IP: &str = "10.213.0.1";
const GEN_IP: &str = "10.213.0.2";

/// How the delay is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DelayBy {
    /// `tc qdisc netem` on the veth pair (packet level).
    Netem,
    /// A relay process in the generator's namespace (stream level).
    Relay,
}

/// `iomodels run`'s network flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetArgs {
    /// Run each server in its own network namespace and the load generator
    /// in another, joined by a veth pair (needs root; removed at the end).
    #[arg(long, help_heading = "Network (--netns)")]
    pub netns: bool,
    /// Round-trip time added between generator and server: 1ms, 10ms.
    #[arg(long, value_parser = loadgen::parse_duration, requires = "netns", help_heading = "Network (--netns)")]
    pub rtt: Option<Duration>,
    /// Jitter on the delay: netem's ± jitter/2 each way; the relay adds 0 to jitter each way.
    #[arg(long, value_parser = loadgen::parse_duration, requires = "netns", help_heading = "Network (--netns)")]
    pub jitter: Option<Duration>,
    /// Packet loss each way, percent: 0.1% (netem only).
    #[arg(long, value_parser = parse_pct, requires = "netns", help_heading = "Network (--netns)")]
    pub loss: Option<f64>,
    /// Link rate limit in tc's syntax: 1gbit, 100mbit (netem's rate, or a tbf
    /// with the relay). Named so because --rate is the open loop's.
    #[arg(long, requires = "netns", help_heading = "Network (--netns)")]
    pub link_rate: Option<String>,
    /// How the delay is made [default: netem where the kernel has it, else the relay].
    #[arg(
        long,
        value_enum,
        requires = "netns",
        help_heading = "Network (--netns)"
    )]
    pub delay_by: Option<DelayBy>,
    /// Pin the load generator (and the relay) to these CPUs: 1, 0-1, 0,2.
    #[arg(long, value_parser = CpuList::parse, requires = "netns", help_heading = "Network (--netns)")]
    pub gen_cpus: Option<CpuList>,
    /// Pin the server to these CPUs.
    #[arg(long, value_parser = CpuList::parse, requires = "netns", help_heading = "Network (--netns)")]
    pub server_cpus: Option<CpuList>,
}

/// A CPU list on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl CpuList {
    fn parse(s: &str) -> Result<CpuList, String> {
        parse_cpus(s).map(CpuList)
    }
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("bad percentage {s:?}: e.g. 0.1%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("bad percentage {s:?}: 0% to 100%"));
    }
    Ok(v)
}

impl NetArgs {
    /// The link these flags ask for.
    pub fn spec(&self) -> LinkSpec {
        LinkSpec {
            rtt: self.rtt.unwrap_or_default(),
            jitter: self.jitter.unwrap_or_default(),
            loss_pct: self.loss.unwrap_or(0.0),
            rate: self.link_rate.clone(),
            delay_by: self.delay_by,
            gen_cpus: self.gen_cpus.clone().map(|c| c.0),
            server_cpus: self.server_cpus.clone().map(|c| c.0),
        }
    }
}

/// Runs `f` in a thread inside the generator's namespace, with the
/// runner's servers placed by `placement`; returns what `f` returns.
pub fn run_in<T: Send>(placement: Placement, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            placement.enter_generator()?;
            placement.install();
            let out = f();
            // The last relay stops with its server's run.
            PLACEMENT.with(|p| p.borrow_mut().take());
            Ok(out)
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the run's thread panicked")))
    })
}

/// Adds `"net": setup` to the results file at `path` (after it was saved).
pub fn record(path: &std::path::Path, setup: &NetSetup) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut v: serde_json::Value = serde_json::from_str(&text)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("net".to_string(), serde_json::to_value(setup)?);
    }
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
    Ok(())
}

/// What the user asked for the link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSpec {
    /// Round-trip time added.
    pub rtt: Duration,
    /// Extra delay, up to this much (netem: ± around RTT/2 each way).
    pub jitter: Duration,
    /// Packet loss, percent (netem only).
    pub loss_pct: f64,
    /// Rate limit, tc syntax (`1gbit`, `100mbit`).
    pub rate: Option<String>,
    /// `None`: netem where it exists, else the relay.
    pub delay_by: Option<DelayBy>,
    /// CPUs of the load generator (and the relay).
    pub gen_cpus: Option<Vec<usize>>,
    /// CPUs of the server.
    pub server_cpus: Option<Vec<usize>>,
}

/// What was set up: recorded in results.json as `net`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSetup {
    /// Round-trip time added, ms.
    pub rtt_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Rate limit, as given.
    pub rate: Option<String>,
    /// How the delay was made.
    pub delay_by: DelayBy,
    /// Why it was made that way.
    pub delay_note: String,
    /// The namespaces (server, generator).
    pub namespaces: Vec<String>,
    /// The generator's (and relay's) CPUs, if pinned.
    pub gen_cpus: Option<Vec<usize>>,
    /// The server's CPUs, if pinned.
    pub server_cpus: Option<Vec<usize>>,
    /// The tc qdiscs installed, one line per device.
    pub qdiscs: Vec<String>,
}

/// What must go when the process is interrupted: namespaces and pids.
static CLEANUP: Mutex<(Vec<String>, Vec<u32>)> = Mutex::new((Vec::new(), Vec::new()));

/// Namespaces created by this process, removed on drop.
#[derive(Debug)]
pub struct Net {
    names: Vec<String>,
}

impl Net {
    /// An empty set; [`Net::add`] creates namespaces into it.
    pub fn new() -> anyhow::Result<Net> {
        check_root()?;
        remove_stale();
        Ok(Net { names: Vec::new() })
    }

    /// Creates namespace `iom-<pid>-<role>` with its loopback up.
    pub fn add(&mut self, role: &str) -> anyhow::Result<String> {
        let name = format!("iom-{}-{role}", std::process::id());
        ip(&["netns", "add", &name]).map_err(|e| {
            anyhow::anyhow!("the kernel refused to create network namespace {name}: {e}")
        })?;
        self.names.push(name.clone());
        lock().0.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair `a_dev` in `a` (address `a_ip`/24) to `b_dev` in `b`
    /// (`b_ip`/24); `a` `None` is the orchestrator's own namespace.
    pub fn veth(
        &self,
        (a, a_dev, a_ip): (Option<&str>, &str, &str),
        (b, b_dev, b_ip): (&str, &str, &str),
    ) -> anyhow::Result<()> {
        let mut args = vec!["link", "add", a_dev];
        if let Some(a) = a {
            args.extend(["netns", a]);
        }
        args.extend(["type", "veth", "peer", "name", b_dev, "netns", b]);
        ip(&args).map_err(|e| anyhow::anyhow!("cannot create the veth pair {a_dev}: {e}"))?;
        for (ns, dev, addr) in [(a, a_dev, a_ip), (Some(b), b_dev, b_ip)] {
            let pre: Vec<&str> = ns.map_or(vec![], |n| vec!["-n", n]);
            let cidr = format!("{addr}/24");
            ip(&[&pre[..], &["addr", "add", &cidr, "dev", dev]].concat())?;
            ip(&[&pre[..], &["link", "set", dev, "up"]].concat())?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in self.names.drain(..).rev() {
            kill_inside(&n);
            let _ = ip(&["netns", "del", &n]);
            lock().0.retain(|x| *x != n);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, (Vec<String>, Vec<u32>)> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills `pid` (and removes the namespaces) if the run is interrupted.
pub fn watch_pid(pid: u32) {
    lock().1.push(pid);
}

fn kill_all(pids: &[u32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// SIGKILLs every process whose network namespace is `name` (a server
/// or relay left by an interrupted run).
pub fn kill_inside(name: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        })
        .collect();
    kill_all(&pids);
}

/// Runs `ip ARGS`; its stderr is the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {prog} (Debian package iproute2): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::bail!("{prog} {}: {}", args.join(" "), err.trim())
}

/// Namespaces need CAP_SYS_ADMIN: say so before trying.
pub fn check_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run as root or with sudo"
        );
    }
    Ok(())
}

/// Removes `iom-<pid>-*` namespaces whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("iom-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("iomodels: removing stale network namespace {name}");
            kill_inside(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// From now on SIGINT, SIGTERM and SIGHUP remove the namespaces (and kill
/// what was started in them) and exit 130. Call before starting threads:
/// the signals are blocked in this thread and those it starts, and one
/// thread waits for them (child processes get a clean mask from std).
pub fn clean_up_on_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("iomodels: {sig}: removing the network namespaces and stopping");
        let (names, pids) = std::mem::take(&mut *lock());
        kill_all(&pids);
        for n in names.iter().rev() {
            kill_inside(n);
            let _ = ip(&["netns", "del", n]);
        }
        std::process::exit(130);
    });
}

/// Parses a CPU list: `0`, `0-1`, `0,2-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad CPU list {s:?}: expected e.g. 0, 0-1 or 0,2-3");
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= 1024 {
            return Err(bad());
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Opens a namespace's handle for `setns(2)`.
pub fn open_ns(name: &str) -> anyhow::Result<OwnedFd> {
    let f = File::open(format!("/run/netns/{name}"))
        .map_err(|e| anyhow::anyhow!("cannot open network namespace {name}: {e}"))?;
    Ok(OwnedFd::from(f))
}

/// Moves the calling thread into the namespace `fd` and onto `cpus`.
/// Async-signal-safe (two system calls): usable between fork and exec.
fn enter_raw(fd: i32, cpus: Option<&libc::cpu_set_t>) -> std::io::Result<()> {
    // SAFETY: setns takes a valid descriptor of a network namespace (or
    // fails with EBADF/EINVAL); it only changes this thread's namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(set) = cpus {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is
        // the calling thread.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c < 1024 (parse_cpus), within cpu_set_t's CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Every online CPU (a server not pinned leaves the generator's pinning).
fn all_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// Moves the calling thread (and the threads it starts from now on) into
/// namespace `name`, pinned to `cpus` if given.
pub fn enter(name: &str, cpus: Option<&[usize]>) -> anyhow::Result<()> {
    let fd = open_ns(name)?;
    let set = cpus.map(cpu_set);
    enter_raw(fd.as_raw_fd(), set.as_ref())
        .map_err(|e| anyhow::anyhow!("cannot enter network namespace {name}: {e}"))
}

/// Makes `cmd` start in namespace `fd` on `cpus` (set between fork and exec).
pub fn place(cmd: &mut Command, fd: &OwnedFd, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let set = cpu_set(cpus);
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (sigemptyset, pthread_sigmask, setns,
    // sched_setaffinity) on values made before fork;
    // it allocates nothing and takes no lock. `fd` outlives the spawn (the
    // caller holds it).
    unsafe {
        cmd.pre_exec(move || {
            // The signals this thread blocks (clean_up_on_signals) must
            // reach the child: a server stops on SIGTERM.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            enter_raw(raw, Some(&set))
        });
    }
}

/// Where the servers of this thread's runs go: set by [`Placement::install`]
/// in the thread that runs the load inside the generator's namespace.
pub struct Placement {
    server_ns: OwnedFd,
    server_cpus: Vec<usize>,
    gen_ns: OwnedFd,
    gen_cpus: Vec<usize>,
    relay: Option<(Duration, Duration)>,
    /// The relay of the current server (replaced with each server).
    current_relay: Option<Server>,
}

thread_local! {
    static PLACEMENT: RefCell<Option<Placement>> = const { RefCell::new(None) };
    static LISTEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes the servers this thread starts listen on `addr` (agents on other
/// hosts must reach them); `None` restores the default.
pub fn listen_on(addr: Option<String>) {
    LISTEN.with(|l| *l.borrow_mut() = addr);
}

impl Placement {
    /// Makes every server this thread starts through the runner start in
    /// the server's namespace, listening on the veth.
    pub fn install(self) {
        PLACEMENT.with(|p| *p.borrow_mut() = Some(self));
    }
}

/// The address a server listens on: the veth's in a `--netns` run, the
/// one given to [`listen_on`] in a run with agents.
pub fn listen_addr() -> String {
    if let Some(a) = LISTEN.with(|l| l.borrow().clone()) {
        return a;
    }
    PLACEMENT.with(|p| {
        p.borrow()
            .as_ref()
            .map_or("127.0.0.1:0".to_string(), |_| format!("{SERVER_IP}:0"))
    })
}

/// In a `--netns` run, puts `cmd` (a server) into the server's namespace
/// and onto its CPUs; otherwise does nothing.
pub fn place_server(cmd: &mut Command) {
    PLACEMENT.with(|p| {
        if let Some(pl) = p.borrow().as_ref() {
            place(cmd, &pl.server_ns, &pl.server_cpus);
        }
    });
}

/// The address the load generator should load for a server at `addr`:
/// `addr` itself, or a fresh relay's in front of it when the delay is the
/// relay's.
pub fn route(addr: &str) -> anyhow::Result<String> {
    PLACEMENT.with(|p| {
        let mut p = p.borrow_mut();
        let Some(pl) = p.as_mut() else {
            return Ok(addr.to_string());
        };
        pl.current_relay = None; // the previous server's relay stops
        let Some((half, jitter)) = pl.relay else {
            return Ok(addr.to_string());
        };
        let relay = start_relay(&pl.gen_ns, &pl.gen_cpus, addr, half, jitter)?;
        let a = relay.addr.clone();
        pl.current_relay = Some(relay);
        Ok(a)
    })
}

/// Starts `iomodels relay` in namespace `ns` in front of `to`.
pub fn start_relay(
    ns: &OwnedFd,
    cpus: &[usize],
    to: &str,
    half: Duration,
    jitter: Duration,
) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--to", to])
        .arg("--delay")
        .arg(format!("{}us", half.as_micros()))
        .arg("--jitter")
        .arg(format!("{}us", jitter.as_micros()));
    place(&mut cmd, ns, cpus);
    let s = Server::spawn(cmd, Ready::Line)?;
    watch_pid(s.pid());
    Ok(s)
}

/// Whether this kernel has `sch_netem`: tried on a dummy qdisc in `ns`.
fn has_netem(ns: &str, dev: &str) -> bool {
    let ok = run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "0ms",
        ],
    )
    .is_ok();
    if ok {
        let _ = run("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"]);
    }
    ok
}

fn ms(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

/// Builds the two namespaces and the link for a `--netns` run; returns the
/// namespaces (kept alive by the returned [`Net`]), what was set up, and
/// the [`Placement`] to install in the thread that will run the load.
pub fn build(spec: &LinkSpec) -> anyhow::Result<(Net, NetSetup, Placement)> {
    let mut net = Net::new()?;
    let srv = net.add("srv")?;
    let gen = net.add("gen")?;
    let pid = std::process::id();
    let (sdev, gdev) = (format!("iom{pid}s"), format!("iom{pid}g"));
    net.veth((Some(&srv), &sdev, SERVER_IP), (&gen, &gdev, GEN_IP))?;
    let netem = has_netem(&gen, &gdev);
    let delay_by = match (spec.delay_by, netem) {
        (Some(DelayBy::Netem), false) => anyhow::bail!(
            "--delay-by netem: this kernel has no sch_netem (tc: \"Specified qdisc kind is unknown\"); use --delay-by relay"
        ),
        (Some(d), _) => d,
        (None, true) => DelayBy::Netem,
        (None, false) => DelayBy::Relay,
    };
    let note = match (delay_by, netem) {
        _ if spec.rtt.is_zero() && spec.jitter.is_zero() => {
            "no delay asked (RTT 0): the veth pair alone, no relay".to_string()
        }
        (DelayBy::Netem, _) => "netem on both ends of the veth pair, RTT/2 each way".to_string(),
        (DelayBy::Relay, false) => "this kernel has no sch_netem: a relay in the generator's namespace holds each chunk RTT/2 each way (no packet loss, reordering or cwnd growth at the link)".to_string(),
        (DelayBy::Relay, true) => "asked: a relay in the generator's namespace holds each chunk RTT/2 each way (no packet loss, reordering or cwnd growth at the link)".to_string(),
    };
    if delay_by == DelayBy::Relay && spec.loss_pct > 0.0 {
        anyhow::bail!(
            "--loss needs netem: the relay cannot drop packets (this kernel has netem: {netem})"
        );
    }
    let half = spec.rtt / 2;
    let mut qdiscs = Vec::new();
    for (ns, dev) in [(&srv, &sdev), (&gen, &gdev)] {
        let mut args: Vec<String> = match delay_by {
            DelayBy::Netem => {
                let mut a: Vec<String> = ["netem", "delay", &ms(half)]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if !spec.jitter.is_zero() {
                    a.push(ms(spec.jitter / 2));
                }
                if spec.loss_pct > 0.0 {
                    a.extend(["loss".to_string(), format!("{}%", spec.loss_pct)]);
                }
                if let Some(r) = &spec.rate {
                    a.extend(["rate".to_string(), r.clone()]);
                }
                a
            }
            DelayBy::Relay => match &spec.rate {
                Some(r) => ["tbf", "rate", r, "burst", "64kb", "latency", "50ms"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                None => Vec::new(),
            },
        };
        if args.is_empty() {
            continue;
        }
        let mut full: Vec<String> = ["-n", ns, "qdisc", "add", "dev", dev, "root"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.append(&mut args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run("tc", &refs).map_err(|e| anyhow::anyhow!("the kernel refused the qdisc: {e}"))?;
        qdiscs.push(format!("{ns} {dev}: {}", refs[7..].join(" ")));
    }
    let setup = NetSetup {
        rtt_ms: spec.rtt.as_secs_f64() * 1e3,
        jitter_ms: spec.jitter.as_secs_f64() * 1e3,
        loss_pct: spec.loss_pct,
        rate: spec.rate.clone(),
        delay_by,
        delay_note: note,
        namespaces: vec![srv.clone(), gen.clone()],
        gen_cpus: spec.gen_cpus.clone(),
        server_cpus: spec.server_cpus.clone(),
        qdiscs,
    };
    let placement = Placement {
        server_ns: open_ns(&srv)?,
        server_cpus: spec.server_cpus.clone().unwrap_or_else(all_cpus),
        gen_ns: open_ns(&gen)?,
        gen_cpus: spec.gen_cpus.clone().unwrap_or_else(all_cpus),
        relay: (delay_by == DelayBy::Relay && !spec.rtt.is_zero()).then_some((half, spec.jitter)),
        current_relay: None,
    };
    Ok((net, setup, placement))
}

/// The generator's namespace and CPUs of a placement, for [`enter`].
impl Placement {
    /// Enters the generator's namespace (and CPUs) in the calling thread.
    pub fn enter_generator(&self) -> anyhow::Result<()> {
        let set = cpu_set(&self.gen_cpus);
        enter_raw(self.gen_ns.as_raw_fd(), Some(&set))
            .map_err(|e| anyhow::anyhow!("cannot enter the generator's namespace: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("0-2,5,1"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpus("2-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
