//! `iomodels run --agents ssh://host1,ssh://user@host2:2222,…`: load
//! generator agents started over SSH, one load split between them, their
//! histograms added.
//!
//! No cluster manager: each agent is a plain `loadgen` started with the
//! OpenSSH client (`BatchMode=yes`, the user's keys and `~/.ssh/config`).
//! For each agent, in parallel:
//!
//! 1. **Locate** `loadgen` on the agent (`--agent-loadgen`, else `loadgen`
//!    on its PATH, else `<agent-dir>/loadgen-<version>`) and check that
//!    `loadgen --version` is this suite's; if none is, and the agent's
//!    architecture is this machine's, **copy** the local `loadgen` there.
//! 2. **Measure the clock offset**: over one SSH session the agent prints
//!    its clock on request five times; the exchange with the shortest
//!    round trip gives `offset = remote − (sent + received) / 2`.
//!
//! Then a start time `--start-in` (default 3 s) in the future is agreed,
//! each agent gets it in its own clock, and all run `loadgen … --segment
//! K/N --start-at T_K --json … --hdr-log …` with the same other flags.
//! Each one's report and interval log come back on its SSH session's
//! stdout; the reports are merged ([`crate::merge`]: histograms added) and
//! the logs too. The run fails, naming the agent, when any agent could not
//! be reached, had no usable loadgen, failed, was killed, began late (more
//! than loadgen's 100 ms), or saturated.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loadgen::Report;

use crate::merge;

/// `iomodels run`'s agent flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// Run the load from these agents over SSH instead of from here:
    /// ssh://[USER@]HOST[:PORT], comma-separated. Needs --target.
    #[arg(long, value_delimiter = ',', help_heading = "Agents (--agents)")]
    pub agents: Vec<String>,
    /// Read the agents from this file, one ssh:// URL a line (# comments).
    #[arg(long, help_heading = "Agents (--agents)")]
    pub agents_file: Option<PathBuf>,
    /// The URL every agent loads (a server you started, reachable from the
    /// agents): http://HOST:PORT/path or fcgi://HOST:PORT/path. With
    /// --models: http://HOST:{port}, how the agents reach this machine
    /// ({port} becomes each server's port; the scenario gives the path).
    #[arg(long, help_heading = "Agents (--agents)")]
    pub target: Option<String>,
    /// Connections in all, shared out between the agents (with --models the
    /// scenario sets them).
    #[arg(long, default_value_t = 30, help_heading = "Agents (--agents)")]
    pub agent_connections: usize,
    /// Threads per agent (with --models: one, as the scenarios).
    #[arg(long, default_value_t = 1, help_heading = "Agents (--agents)")]
    pub agent_threads: usize,
    /// loadgen's path on the agents [default: on their PATH, else copied
    /// into --agent-dir].
    #[arg(long, help_heading = "Agents (--agents)")]
    pub agent_loadgen: Option<String>,
    /// Where loadgen is copied on an agent that has none [default: $HOME/.cache/iomodels].
    #[arg(long, help_heading = "Agents (--agents)")]
    pub agent_dir: Option<String>,
    /// An ssh -o option for every agent (repeatable): IdentityFile=~/.ssh/lab.
    #[arg(long = "ssh-option", help_heading = "Agents (--agents)")]
    pub ssh_options: Vec<String>,
    /// ssh's configuration file (ssh -F) [default: the user's].
    #[arg(long, help_heading = "Agents (--agents)")]
    pub ssh_config: Option<String>,
    /// An agent whose own send lag reaches this p99 is saturated (loadgen --max-lag).
    #[arg(long, default_value = "10ms", value_parser = loadgen::parse_duration, help_heading = "Agents (--agents)")]
    pub agent_max_lag: Duration,
    /// With --models: where the servers listen, as the agents need it
    /// (all interfaces by default; a fixed port if a relay or firewall
    /// must know it).
    #[arg(long, default_value = "0.0.0.0:0", help_heading = "Agents (--agents)")]
    pub agent_listen: String,
    /// Agree the start this far in the future (after the clocks are measured).
    #[arg(long, default_value = "3s", value_parser = loadgen::parse_duration, help_heading = "Agents (--agents)")]
    pub start_in: Duration,
}

/// The load every agent shares.
#[derive(Debug, Clone)]
pub struct Load {
    /// Measured time.
    pub duration: Duration,
    /// Warm-up before it.
    pub warmup: Duration,
    /// Open-loop rate in all, requests/s (`None`: closed loop).
    pub rate: Option<f64>,
}

/// One agent: `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// As given.
    pub url: String,
    /// `user@host` or `host`.
    pub dest: String,
    /// `-p PORT`.
    pub port: Option<u16>,
}

impl Agent {
    /// Parses `ssh://[USER@]HOST[:PORT]`.
    pub fn parse(s: &str) -> Result<Agent, String> {
        let s = s.trim();
        let bad = || format!("bad agent {s:?}: expected ssh://[USER@]HOST[:PORT]");
        let rest = s.strip_prefix("ssh://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, tail) = r.split_once(']').ok_or_else(bad)?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad())?),
                None if tail.is_empty() => None,
                None => return Err(bad()),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse().map_err(|_| bad())?)),
                None => (hostport, None),
            }
        };
        let ok = |x: &str| {
            !x.is_empty()
                && !x.starts_with('-')
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        };
        if !ok(host) || user.is_some_and(|u| !ok(u)) {
            return Err(bad());
        }
        Ok(Agent {
            url: s.to_string(),
            dest: match user {
                Some(u) => format!("{u}@{host}"),
                None => host.to_string(),
            },
            port,
        })
    }

    fn ssh(&self, args: &AgentArgs, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        if let Some(f) = &args.ssh_config {
            c.args(["-F", f]);
        }
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
        for o in &args.ssh_options {
            c.args(["-o", o]);
        }
        if let Some(p) = self.port {
            c.args(["-p", &p.to_string()]);
        }
        c.arg(&self.dest).arg(remote);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// The agents of `--agents` and `--agents-file`.
pub fn list(args: &AgentArgs) -> anyhow::Result<Vec<Agent>> {
    let mut all = args.agents.clone();
    if let Some(f) = &args.agents_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        all.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    all.iter()
        .map(|a| Agent::parse(a).map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

/// Quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// This suite's loadgen version line.
fn want_version() -> String {
    format!("loadgen {}", env!("CARGO_PKG_VERSION"))
}

/// Output of `cmd` within `limit`, or an error naming `agent`.
fn output(
    mut cmd: Command,
    input: Option<&Path>,
    limit: Duration,
    what: &str,
) -> anyhow::Result<(i32, String, String)> {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ssh (Debian package openssh-client): {e}"))?;
    let feeder = input.map(|p| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let p = p.to_path_buf();
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::File::open(p) {
                let _ = std::io::copy(&mut f, &mut stdin);
            }
        })
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what}: no answer within {:.0} s", limit.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&ereader.join().unwrap_or_default()).into_owned();
    Ok((status.code().unwrap_or(-1), out, err))
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Finds (or copies) a loadgen of this version on the agent; its path.
fn locate(agent: &Agent, args: &AgentArgs, local_loadgen: &Path) -> anyhow::Result<String> {
    let want = want_version();
    let ver = env!("CARGO_PKG_VERSION");
    let dir = match &args.agent_dir {
        Some(d) => quote(d),
        None => "\"$HOME/.cache/iomodels\"".to_string(),
    };
    let candidates = match &args.agent_loadgen {
        Some(p) => quote(p),
        None => format!("\"$(command -v loadgen 2>/dev/null)\" {dir}/loadgen-{ver}"),
    };
    let script = format!(
        "for p in {candidates}; do [ -n \"$p\" ] && [ -x \"$p\" ] || continue; v=$(\"$p\" --version 2>/dev/null); \
         if [ \"$v\" = {w} ]; then echo \"found $p\"; exit 0; fi; echo \"other $p $v\"; done; echo \"missing $(uname -m)\"",
        w = quote(&want)
    );
    let (code, out, err) = output(
        agent.ssh(args, &script),
        None,
        Duration::from_secs(30),
        &agent.url,
    )?;
    if code != 0 {
        anyhow::bail!(
            "cannot reach it over ssh (exit {code}): {}",
            first_line(&err)
        );
    }
    if let Some(p) = out.lines().find_map(|l| l.strip_prefix("found ")) {
        return Ok(p.to_string());
    }
    let others: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("other "))
        .collect();
    if args.agent_loadgen.is_some() {
        anyhow::bail!(
            "--agent-loadgen is not {want}: {}",
            if others.is_empty() {
                "not found or not executable".to_string()
            } else {
                others.join("; ")
            }
        );
    }
    let arch = out
        .lines()
        .find_map(|l| l.strip_prefix("missing "))
        .unwrap_or("?")
        .trim();
    if arch != std::env::consts::ARCH {
        anyhow::bail!(
            "has no {want} and is {arch}, not {}: install loadgen there or give --agent-loadgen",
            std::env::consts::ARCH
        );
    }
    if !local_loadgen.exists() {
        anyhow::bail!(
            "has no {want}, and there is no local loadgen to copy at {}",
            local_loadgen.display()
        );
    }
    let path = format!("{dir}/loadgen-{ver}");
    let copy = format!(
        "mkdir -p {dir} && cat > {path}.tmp.$$ && chmod 755 {path}.tmp.$$ && mv {path}.tmp.$$ {path} && echo \"copied $(cd {dir} && pwd)/loadgen-{ver}\""
    );
    let (code, out, err) = output(
        agent.ssh(args, &copy),
        Some(local_loadgen),
        Duration::from_secs(120),
        &agent.url,
    )?;
    match out.lines().find_map(|l| l.strip_prefix("copied ")) {
        Some(p) if code == 0 => {
            eprintln!("iomodels: {}: copied loadgen to {p}", agent.url);
            Ok(p.to_string())
        }
        _ => anyhow::bail!("copying loadgen failed (exit {code}): {}", first_line(&err)),
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The agent's clock minus ours, ns, and the round trip it was measured
/// over: the best of five exchanges on one SSH session.
fn clock_offset(agent: &Agent, args: &AgentArgs) -> anyhow::Result<(i128, Duration)> {
    let mut cmd = agent.ssh(args, "while read x; do date +%s%N; done");
    cmd.stdin(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ssh: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut best: Option<(i128, Duration)> = None;
    let mut result = Ok(());
    // The first exchange also waits for the session to open: not used.
    for i in 0..6 {
        let sent = now_ns();
        let t = Instant::now();
        if writeln!(stdin, "t").and_then(|()| stdin.flush()).is_err() {
            result = Err(anyhow::anyhow!("its ssh session ended"));
            break;
        }
        let Some(Ok(line)) = lines.next() else {
            result = Err(anyhow::anyhow!("its ssh session ended"));
            break;
        };
        let rtt = t.elapsed();
        let received = now_ns();
        let Ok(remote) = line.trim().parse::<i128>() else {
            result = Err(anyhow::anyhow!(
                "its clock reads {line:?}, not ns (GNU date)"
            ));
            break;
        };
        if i > 0 && best.is_none_or(|b| rtt < b.1) {
            best = Some((remote - (sent + received) / 2, rtt));
        }
    }
    drop(stdin);
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    result.map_err(|e| anyhow::anyhow!("{e}: {}", first_line(&err)))?;
    best.ok_or_else(|| anyhow::anyhow!("no clock reading"))
}

/// What one agent sent back.
struct Outcome {
    report: Report,
    log: String,
}

/// Runs the agent's loadgen and takes its report and log from the output.
fn launch(
    agent: &Agent,
    args: &AgentArgs,
    loadgen: &str,
    flags: &[String],
    limit: Duration,
) -> anyhow::Result<Outcome> {
    let mut cmd = vec![quote(loadgen)];
    cmd.extend(flags.iter().map(|f| quote(f)));
    let script = format!(
        "d=$(mktemp -d) || exit 97; {} --json \"$d/r.json\" --hdr-log \"$d/r.hlog\" >\"$d/out\" 2>\"$d/err\"; rc=$?; \
         echo \"@@rc $rc\"; echo @@err; cat \"$d/err\"; echo @@json; cat \"$d/r.json\" 2>/dev/null; echo @@hlog; cat \"$d/r.hlog\" 2>/dev/null; rm -rf \"$d\"",
        cmd.join(" ")
    );
    let (code, out, err) = output(agent.ssh(args, &script), None, limit, &agent.url)?;
    let Some(rc) = out
        .lines()
        .find_map(|l| l.strip_prefix("@@rc "))
        .and_then(|r| r.trim().parse::<i32>().ok())
    else {
        anyhow::bail!(
            "lost its ssh session (exit {code}) before loadgen ended: {}",
            first_line(&err)
        );
    };
    let section = |name: &str| -> String {
        let start = format!("@@{name}\n");
        let Some(i) = out.find(&start) else {
            return String::new();
        };
        let rest = &out[i + start.len()..];
        let end = rest.find("\n@@").map_or(rest.len(), |j| j + 1);
        rest[..end].to_string()
    };
    if rc != 0 {
        let why = match rc {
            137 => "was killed (SIGKILL)".to_string(),
            143 => "was terminated (SIGTERM)".to_string(),
            r if r > 128 => format!("died of signal {}", r - 128),
            r => format!("exited with status {r}"),
        };
        let e = section("err");
        let line = e
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with("loadgen: error"))
            .unwrap_or_else(|| first_line(&e));
        anyhow::bail!(
            "loadgen {why}{}",
            if line.is_empty() {
                String::new()
            } else {
                format!(": {line}")
            }
        );
    }
    let report: Report = serde_json::from_str(&section("json"))
        .map_err(|e| anyhow::anyhow!("its report does not parse: {e}"))?;
    Ok(Outcome {
        report,
        log: section("hlog"),
    })
}

/// Agents located and their clocks measured: ready to run loads.
pub struct Prepared {
    agents: Vec<Agent>,
    /// Per agent: loadgen's path there, its clock offset (ns), the round trip.
    ready: Vec<(String, i128, Duration)>,
}

/// Steps 1–2 for every agent at once: locate (or copy) loadgen, measure
/// the clock. Fails naming every agent that could not be prepared.
pub fn prepare(args: &AgentArgs) -> anyhow::Result<Prepared> {
    let agents = list(args)?;
    if agents.is_empty() {
        anyhow::bail!("--agents: no agent given");
    }
    let local = crate::models::bin_dir().join("loadgen");
    eprintln!(
        "iomodels: {} agent(s): locating loadgen and measuring clocks",
        agents.len()
    );
    let prepared: Vec<anyhow::Result<(String, i128, Duration)>> = std::thread::scope(|s| {
        let hs: Vec<_> = agents
            .iter()
            .map(|a| {
                let local = &local;
                s.spawn(move || {
                    let path = locate(a, args, local)?;
                    let (off, rtt) = clock_offset(a, args)?;
                    Ok((path, off, rtt))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    let mut failed = Vec::new();
    let mut ready = Vec::new();
    for (a, p) in agents.iter().zip(prepared) {
        match p {
            Ok(x) => ready.push(x),
            Err(e) => failed.push(format!("agent {}: {e:#}", a.url)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    for (a, (path, off, rtt)) in agents.iter().zip(&ready) {
        eprintln!(
            "iomodels: {}: {path}, clock offset {:+.3} ms (±{:.3} ms)",
            a.url,
            *off as f64 / 1e6,
            rtt.as_secs_f64() * 1e3 / 2.0
        );
    }
    Ok(Prepared { agents, ready })
}

/// Steps 3–6: every agent runs its segment of `flags` (loadgen's flags
/// without --segment/--start-at), starting together; their reports and
/// logs are written into `dir` and merged. `limit` bounds the whole run.
pub fn run_once(
    prep: &Prepared,
    args: &AgentArgs,
    flags: &[String],
    limit: Duration,
    dir: &Path,
) -> anyhow::Result<merge::Merged> {
    let n = prep.agents.len();
    let start = now_ns() + args.start_in.as_nanos() as i128;
    let limit = args.start_in + limit + Duration::from_secs(30);
    let outcomes: Vec<anyhow::Result<Outcome>> = std::thread::scope(|s| {
        let hs: Vec<_> = prep
            .agents
            .iter()
            .zip(&prep.ready)
            .enumerate()
            .map(|(k, (a, (path, off, _)))| {
                let mut f = flags.to_vec();
                f.extend([
                    "--segment".to_string(),
                    format!("{k}/{n}"),
                    "--start-at".to_string(),
                    (start + off).to_string(),
                    "--max-lag".to_string(),
                    format!("{}us", args.agent_max_lag.as_micros()),
                ]);
                s.spawn(move || launch(a, args, path, &f, limit))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    let agents_dir = dir.join("agents");
    std::fs::create_dir_all(&agents_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", agents_dir.display()))?;
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    let mut logs = Vec::new();
    for (k, (a, o)) in prep.agents.iter().zip(outcomes).enumerate() {
        match o {
            Ok(o) => {
                std::fs::write(
                    agents_dir.join(format!("{k}.json")),
                    o.report.to_json() + "\n",
                )?;
                std::fs::write(agents_dir.join(format!("{k}.hlog")), &o.log)?;
                reports.push((a.url.clone(), o.report));
                logs.push(o.log);
            }
            Err(e) => failed.push(format!("agent {} failed: {e:#}", a.url)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    let merged = merge::merge(&reports)?;
    let (base, intervals) = merge::merge_logs(&logs)?;
    merge::write_log(&dir.join("merged.hlog"), base, &intervals)?;
    std::fs::write(
        dir.join("merged.json"),
        serde_json::to_string_pretty(&merged)? + "\n",
    )?;
    Ok(merged)
}

/// `iomodels run --agents … --target URL`: one distributed run against a
/// server you started. Writes `<out_dir>/agents/<K>.json|.hlog`,
/// `merged.json`, `merged.hlog`.
pub fn run(args: &AgentArgs, load: &Load, out_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(target) = args.target.clone() else {
        anyhow::bail!("--agents needs --target URL: the server the agents load, as they reach it");
    };
    loadgen::Target::parse(&target, None, None).map_err(|e| anyhow::anyhow!("--target: {e}"))?;
    let n = list(args)?.len();
    if args.agent_connections < n {
        anyhow::bail!(
            "--agent-connections {} is fewer than the {n} agents",
            args.agent_connections
        );
    }
    let prep = prepare(args)?;
    let mut flags = vec![
        target.clone(),
        "-d".to_string(),
        format!("{}ms", load.duration.as_millis()),
        "--warmup".to_string(),
        format!("{}ms", load.warmup.as_millis()),
        "-c".to_string(),
        args.agent_connections.to_string(),
        "-t".to_string(),
        args.agent_threads.to_string(),
    ];
    if let Some(r) = load.rate {
        flags.extend(["-R".to_string(), r.to_string()]);
    }
    eprintln!(
        "iomodels: starting {n} agent(s) together in {:.1} s against {target} for {:.1} s",
        args.start_in.as_secs_f64(),
        load.duration.as_secs_f64()
    );
    let merged = run_once(&prep, args, &flags, load.warmup + load.duration, out_dir)?;
    print!("{}", merge::table(&merged));
    println!(
        "results: {} (agents' reports and logs in {})",
        out_dir.join("merged.json").display(),
        out_dir.join("agents").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// loadgen's flags for `c`, its target's host and port replaced by
/// `base` (`http://HOST:{port}`, `{port}` being `port`).
pub fn flags_for(c: &loadgen::Config, base: &str, port: u16) -> Vec<String> {
    use loadgen::{Arrivals, ConnMode, Protocol, Stop};
    let base = base.replace("{port}", &port.to_string());
    let base = base.trim_end_matches('/');
    let base = match (c.target.protocol, base.split_once("://")) {
        (Protocol::Fcgi, Some((_, rest))) => format!("fcgi://{rest}"),
        (Protocol::Http, Some((_, rest))) => format!("http://{rest}"),
        _ => base.to_string(),
    };
    let mut f = vec![format!("{base}{}", c.target.path)];
    let mut add = |a: &str, b: String| f.extend([a.to_string(), b]);
    add("-c", c.connections.to_string());
    add("-t", c.threads.to_string());
    match c.stop {
        Stop::DurationS(d) => add("-d", format!("{}ms", (d * 1e3).round() as u64)),
        Stop::Requests(n) => add("-n", n.to_string()),
    }
    add(
        "--warmup",
        format!("{}ms", (c.warmup_s * 1e3).round() as u64),
    );
    add(
        "--timeout",
        format!("{}ms", (c.timeout_s * 1e3).round() as u64),
    );
    if let Some(r) = c.rate {
        add("-R", r.to_string());
        if c.arrivals == Arrivals::Poisson {
            add("--arrivals", "poisson".to_string());
        }
    }
    for r in &c.routes {
        add("--route", format!("{}:{}", r.target, r.weight));
    }
    if let Some(m) = &c.method {
        add("-m", m.clone());
    }
    for h in &c.headers {
        add("-H", h.clone());
    }
    for p in &c.params {
        add("--param", p.clone());
    }
    if c.body_size > 0 {
        add("--body-size", c.body_size.to_string());
    }
    if c.pipeline > 1 {
        add("--pipeline", c.pipeline.to_string());
    }
    if c.idle > 0 {
        add("--idle", c.idle.to_string());
    }
    if c.conn_mode == ConnMode::NewConn {
        f.push("--new-conn".to_string());
    }
    f
}

/// The agents that carry this thread's measured loads (`iomodels run
/// --agents … --models …`): set by [`install`], used by the runner.
struct Remote {
    prep: Prepared,
    args: AgentArgs,
    dir: PathBuf,
    runs: usize,
}

thread_local! {
    static REMOTE: std::cell::RefCell<Option<Remote>> = const { std::cell::RefCell::new(None) };
}

/// From now on the runner's measured loads in this thread come from the
/// agents (their warm-ups stay local); each run's agent reports and logs
/// go to `<dir>/agents-<N>/`. Servers listen on `--agent-listen`.
pub fn install(args: &AgentArgs, dir: &Path) -> anyhow::Result<()> {
    let Some(t) = &args.target else {
        anyhow::bail!(
            "--agents with --models needs --target http://HOST:{{port}}: the servers as the agents reach them"
        );
    };
    if !t.contains("://") {
        anyhow::bail!("--target {t:?}: expected http://HOST:{{port}} or http://HOST:PORT");
    }
    let prep = prepare(args)?;
    crate::netns::listen_on(Some(args.agent_listen.clone()));
    REMOTE.with(|r| {
        *r.borrow_mut() = Some(Remote {
            prep,
            args: args.clone(),
            dir: dir.to_path_buf(),
            runs: 0,
        })
    });
    Ok(())
}

/// The runner's hook: `None` when no agents are installed (the load is
/// local), else the agents' merged report for `c` (whose target is the
/// server's own address: its port is kept, its host is --target's).
pub fn remote(c: &loadgen::Config) -> Option<anyhow::Result<Report>> {
    REMOTE.with(|r| {
        let mut r = r.borrow_mut();
        let rem = r.as_mut()?;
        let port = match &c.target.endpoint {
            loadgen::Endpoint::Tcp { port, .. } => *port,
            loadgen::Endpoint::Unix { .. } => {
                return Some(Err(anyhow::anyhow!("agents cannot reach a unix socket")))
            }
        };
        let base = rem.args.target.clone().unwrap_or_default();
        let flags = flags_for(c, &base, port);
        rem.runs += 1;
        let dir = rem.dir.join(format!("agents-{}", rem.runs));
        let limit = match c.stop {
            loadgen::Stop::DurationS(d) => Duration::from_secs_f64(d + c.warmup_s),
            loadgen::Stop::Requests(_) => Duration::from_secs(600),
        };
        Some(
            run_once(&rem.prep, &rem.args, &flags, limit, &dir).map(|m| {
                let mut report = m.merged;
                report.target = flags[0].clone();
                report
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agents() {
        let a = Agent::parse("ssh://user@host2:2222").unwrap();
        assert_eq!((a.dest.as_str(), a.port), ("user@host2", Some(2222)));
        let a = Agent::parse("ssh://10.0.0.1").unwrap();
        assert_eq!((a.dest.as_str(), a.port), ("10.0.0.1", None));
        let a = Agent::parse("ssh://[::1]:22").unwrap();
        assert_eq!((a.dest.as_str(), a.port), ("::1", Some(22)));
        for bad in [
            "host",
            "ssh://",
            "ssh://h:x",
            "ssh://a b",
            "ssh://-oProxyCommand=x",
        ] {
            assert!(Agent::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
