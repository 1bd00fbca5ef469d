//! Distributed runs for real, on one machine: three OpenSSH servers
//! (Debian's openssh-server, host and user keys made in a temporary
//! directory, `sshd -f` with a temporary configuration: the system's ssh
//! set-up is not touched), each in its own network namespace with a
//! delaying relay (1 ms RTT) in front of epoll-server, which runs in a
//! fourth namespace. `iomodels run --agents` reaches the agents over veth
//! pairs, copies loadgen to them, and runs one open-loop load split three
//! ways. The test checks that the merged count is the agents' sum, that the
//! merged histogram is exactly every latency recorded (the agents' interval
//! logs added independently), that the total rate is within 2 % of the one
//! asked, and that an agent killed mid-run fails the run with its name.
//!
//! Skipped, with the reason, only where network namespaces cannot be made
//! (not root); as root under CI=true nothing is skipped (openssh-server is
//! installed by scripts/install-peers.sh). About 15 s.

mod util;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iomodels_suite::netns::{self, Net};
use iomodels_suite::runner::{Ready, Server};

const AGENTS: usize = 3;
const RATE: f64 = 600.0;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn sh(prog: &str, args: &[&str]) {
    let st = Command::new(prog).args(args).status().expect(prog);
    assert!(st.success(), "{prog} {args:?}: {st}");
}

/// Processes in namespace `ns` whose command name starts with `name`.
fn pids_in(ns: &str, name: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(n) = std::fs::metadata(format!("/run/netns/{ns}")) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == n.ino() && m.dev() == n.dev())
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with(name))
        })
        .collect()
}

fn histogram_of_logs(dir: &Path) -> Histogram<u64> {
    let logs: Vec<String> = (0..AGENTS)
        .map(|k| std::fs::read_to_string(dir.join(format!("agents/{k}.hlog"))).unwrap())
        .collect();
    let (_, intervals) = iomodels_suite::merge::merge_logs(&logs).unwrap();
    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for h in intervals.values() {
        all.add(h).unwrap();
    }
    all
}

#[test]
fn agents_over_ssh_merge_exactly_and_fail_loudly() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: network namespaces need root (this test runs sshd in three of them)");
        return;
    }
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        assert!(
            !ci(),
            "/usr/sbin/sshd is missing (scripts/install-peers.sh installs openssh-server)"
        );
        eprintln!("skipping: /usr/sbin/sshd is missing (apt-get install openssh-server)");
        return;
    }
    if !["epoll-server", "loadgen"]
        .iter()
        .all(|b| util::have_binary(b))
    {
        return;
    }
    let mut net = match Net::new() {
        Ok(n) => n,
        Err(e) => panic!("as root, namespaces must work: {e}"),
    };
    let srv = net.add("dsrv").expect("a network namespace");
    let pid = std::process::id();
    let mut agents = Vec::new();
    for k in 0..AGENTS {
        let a = net.add(&format!("dag{k}")).unwrap();
        // Root ↔ agent (ssh), agent ↔ server (the load).
        net.veth(
            (None, &format!("i{pid}r{k}"), &format!("10.214.{k}.1")),
            (&a, &format!("i{pid}a{k}"), &format!("10.214.{k}.2")),
        )
        .unwrap();
        net.veth(
            (Some(&srv), &format!("i{pid}s{k}"), &format!("10.215.{k}.1")),
            (&a, &format!("i{pid}b{k}"), &format!("10.215.{k}.2")),
        )
        .unwrap();
        agents.push(a);
    }

    // Keys and sshd's configuration, all in a temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", &t("host_key")],
    );
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", &t("id")],
    );
    std::fs::copy(t("id.pub"), t("authorized_keys")).unwrap();
    std::fs::write(
        t("sshd_config"),
        format!(
            "HostKey {}\nAuthorizedKeysFile {}\nPidFile none\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\n",
            t("host_key"),
            t("authorized_keys")
        ),
    )
    .unwrap();
    // sshd's privilege-separation directory (the package's service makes it).
    std::fs::create_dir_all("/run/sshd").unwrap();

    let cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let bin = util::bin_dir();
    let mut servers: Vec<Server> = Vec::new();
    let srv_fd = netns::open_ns(&srv).unwrap();
    let mut cmd = Command::new(bin.join("epoll-server"));
    cmd.args(["--listen", "0.0.0.0:8080", "--workers", "1"])
        .stderr(Stdio::null());
    netns::place(&mut cmd, &srv_fd, &cpus);
    servers.push(Server::spawn(cmd, Ready::Line).expect("epoll-server in its namespace"));
    for (k, a) in agents.iter().enumerate() {
        let fd = netns::open_ns(a).unwrap();
        let mut relay = Command::new(bin.join("iomodels"));
        relay.args(["relay", "--listen", "127.0.0.1:9000", "--delay", "500us"]);
        relay.args(["--to", &format!("10.215.{k}.1:8080")]);
        netns::place(&mut relay, &fd, &cpus);
        servers.push(Server::spawn(relay, Ready::Line).expect("relay"));
        let mut d = Command::new(sshd);
        // (-e: its log to stderr, not syslog; quiet: the readiness probe's
        // bare connect would be logged as an error.)
        d.stderr(Stdio::null());
        d.args(["-D", "-e", "-f", &t("sshd_config")])
            .args(["-o", &format!("ListenAddress=10.214.{k}.2:22")])
            .args(["-o", &format!("ListenAddress=10.215.{k}.2:22")]);
        netns::place(&mut d, &fd, &cpus);
        let addr = format!("10.214.{k}.2:22");
        servers.push(Server::spawn(d, Ready::Accepts(vec![addr])).expect("sshd"));
    }

    let run = |secs: u32, out: &str| {
        let mut c = Command::new(bin.join("iomodels"));
        c.arg("run").arg("--agents").arg(
            (0..AGENTS)
                .map(|k| format!("ssh://10.214.{k}.2"))
                .collect::<Vec<_>>()
                .join(","),
        );
        c.args(["--target", "http://127.0.0.1:9000/hello"])
            .args(["--rate", &RATE.to_string(), "-d", &format!("{secs}s")])
            .args(["--warmup", "300ms", "--agent-connections", "12"])
            .args(["--agent-dir", &t("agent-bin"), "--ssh-config", "none"])
            .args(["--ssh-option", &format!("IdentityFile={}", t("id"))])
            .args(["--ssh-option", "UserKnownHostsFile=/dev/null"])
            .args(["--ssh-option", "StrictHostKeyChecking=no"])
            .args(["--ssh-option", "LogLevel=ERROR"])
            // A busy neighbour may delay an agent's sends by tens of ms:
            // saturation is tested by loadgen's own tests, not here.
            .args(["--agent-max-lag", "500ms"])
            .args(["--start-in", "3s", "--out", &t(out)]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };

    // 1. A whole run: three agents, one schedule, merged exactly.
    let o = run(3, "ok").output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("copied loadgen"),
        "loadgen copied to the agents: {stderr}"
    );
    let dir = std::fs::read_dir(t("ok"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("merged.json")).unwrap()).unwrap();
    let m: loadgen::Report = serde_json::from_value(merged["merged"].clone()).unwrap();
    let reports: Vec<loadgen::Report> = (0..AGENTS)
        .map(|k| {
            serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("agents/{k}.json"))).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let sum: u64 = reports.iter().map(|r| r.requests).sum();
    assert_eq!(m.requests, sum, "merged count = the agents' sum");
    assert_eq!(m.errors.total(), 0, "{:?}", m.errors);
    for (k, r) in reports.iter().enumerate() {
        let a = r.agent.as_ref().expect("an agent block");
        assert_eq!(
            a.segment.map(|s| (s.index, s.of)),
            Some((k as u32, AGENTS as u32))
        );
        assert!(!a.saturated);
    }
    // Exact: the merged histogram is every latency the agents recorded,
    // second by second in their own logs, added up.
    let merged_hist = m.latency.histogram().unwrap();
    let all = histogram_of_logs(&dir);
    assert_eq!(merged_hist.len(), sum);
    assert_eq!(all.len(), sum);
    assert!(
        merged_hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .eq(all
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))),
        "merged histogram differs from all recorded latencies"
    );
    let achieved = m.open_loop.as_ref().unwrap().achieved_rps;
    assert!(
        (achieved - RATE).abs() / RATE < 0.02,
        "achieved {achieved:.1} req/s in all, asked {RATE}"
    );
    // `iomodels merge` on the same reports: the same sum; and it refuses a
    // report whose agent said it saturated, naming it.
    let files: Vec<String> = (0..AGENTS)
        .map(|k| {
            dir.join(format!("agents/{k}.json"))
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let o = Command::new(bin.join("iomodels"))
        .arg("merge")
        .args(&files)
        .args(["--out", &t("hand.json")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hand: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t("hand.json")).unwrap()).unwrap();
    assert_eq!(hand["merged"]["requests"].as_u64(), Some(sum));
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[2]).unwrap()).unwrap();
    bad["agent"]["saturated"] = true.into();
    bad["agent"]["saturated_why"] = "test".into();
    std::fs::write(t("bad.json"), bad.to_string()).unwrap();
    let o = Command::new(bin.join("iomodels"))
        .args(["merge", &files[0], &files[1], &t("bad.json")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("bad.json (test)"),
        "{err}"
    );
    // The relay's RTT is in every latency.
    assert!(
        m.latency.min_us >= 1000,
        "min latency {} µs under a 1 ms RTT",
        m.latency.min_us
    );

    // 2. An agent killed mid-run fails the run, named.
    let mut child = run(6, "killed").spawn().unwrap();
    let victim = &agents[1];
    let end = Instant::now() + Duration::from_secs(30);
    let pids = loop {
        let p = pids_in(victim, "loadgen");
        if !p.is_empty() {
            break p;
        }
        assert!(Instant::now() < end, "agent 1's loadgen never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Past the agreed start (3 s after the agents were located) and
    // into the measured time (6 s).
    std::thread::sleep(Duration::from_secs(5));
    for p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "a run with a killed agent must fail");
    assert!(
        err.contains("agent ssh://10.214.1.2 failed: loadgen was killed"),
        "the killed agent is named: {err}"
    );

    // 3. The matrix with agents: iomodels itself in the server's namespace
    // starts epoll-server on the port the relays forward to (the hand-made
    // one is stopped first), the agents carry the measured load, and the
    // run's results.json has the merged report beside the server's CPU.
    servers.remove(0).stop();
    let mut c = Command::new(bin.join("iomodels"));
    c.args([
        "run",
        "--models",
        "epoll",
        "--scenarios",
        "hello",
        "--protocol",
        "http",
    ])
    .args(["-d", "2s", "--aa", "none", "--agents"])
    .arg(
        (0..AGENTS)
            .map(|k| format!("ssh://10.215.{k}.2"))
            .collect::<Vec<_>>()
            .join(","),
    )
    .args([
        "--target",
        "http://127.0.0.1:9000",
        "--agent-listen",
        "0.0.0.0:8080",
    ])
    .args(["--agent-loadgen", bin.join("loadgen").to_str().unwrap()])
    .args(["--ssh-config", "none", "--agent-max-lag", "500ms"])
    .args(["--ssh-option", &format!("IdentityFile={}", t("id"))])
    .args(["--ssh-option", "UserKnownHostsFile=/dev/null"])
    .args(["--ssh-option", "StrictHostKeyChecking=no"])
    .args(["--ssh-option", "LogLevel=ERROR", "--out", &t("matrix")]);
    netns::place(&mut c, &srv_fd, &cpus);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = std::fs::read_dir(t("matrix"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r = iomodels_suite::results::Results::load(&dir.join("results.json")).unwrap();
    assert_eq!(r.runs.len(), 1);
    let run = &r.runs[0];
    let rep = run
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", run.error));
    assert_eq!(rep.target, "http://127.0.0.1:9000/");
    assert_eq!(rep.routes, ["/hello:1"]);
    assert!(rep.requests > 100 && rep.errors.total() == 0, "{rep:?}");
    assert_eq!(
        rep.connections, 10,
        "the scenario's 10 connections, shared out"
    );
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("agents-1/merged.json")).unwrap())
            .unwrap();
    assert_eq!(merged["agents"].as_array().map(Vec::len), Some(AGENTS));
    assert!(run
        .server
        .as_ref()
        .is_some_and(|c| c.cpu_us_per_request > 0.0));

    drop(servers);
    drop(net);
    for a in agents.iter().chain([&srv]) {
        assert!(
            !Path::new(&format!("/run/netns/{a}")).exists(),
            "{a} removed"
        );
    }
}
