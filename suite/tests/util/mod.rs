//! Shared by the integration tests: a synthetic results file (so report and
//! compare tests need no servers), and where the built binaries are.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use iomodels_suite::accounting::{CpuSource, CswSource};
use iomodels_suite::cost::InstrCost;
use iomodels_suite::procfs::Cost;
use iomodels_suite::results::{Machine, Results, RunConfig, RunRecord, SCHEMA_VERSION};
use iomodels_suite::scenarios::{self, Scenario};
use loadgen::{ConnMode, Cpu, Errors, HistogramSummary, Idle, Protocol, Report};

/// The directory holding `iomodels` and, when the workspace is built, the
/// server binaries.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iomodels"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// Whether `name` is built; when not, the test is skipped (a message) or,
/// under CI=true, fails.
pub fn have_binary(name: &str) -> bool {
    if bin_dir().join(name).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is not built in {} (cargo build --workspace)",
        bin_dir().display()
    );
    eprintln!("skipping: {name} is not built (cargo build --workspace)");
    false
}

fn report(protocol: Protocol, rps: f64, p50: u64, conn_mode: ConnMode, idle: u64) -> Report {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..1000u64 {
        h.record(p50 / 2 + i * p50 / 1000).unwrap();
    }
    h.record(p50 * 20).unwrap();
    let latency = HistogramSummary::new(&h);
    Report {
        schema_version: loadgen::SCHEMA_VERSION,
        target: "http://127.0.0.1:1/hello".into(),
        protocol,
        routes: vec!["/hello:1".into()],
        threads: 1,
        connections: 10,
        conn_mode,
        pipeline: 1,
        warmup_s: 0.0,
        requests: (rps * 0.5) as u64,
        duration_s: 0.5,
        rps,
        bytes_read: 1000,
        errors: Errors::default(),
        latency: latency.clone(),
        latency_uncorrected: None,
        connect_time: latency,
        connections_opened: 10,
        open_loop: None,
        in_flight_mean: rps * p50 as f64 / 1e6,
        idle: Idle {
            asked: idle,
            held: idle,
        },
        workers: BTreeMap::new(),
        cpu: Cpu {
            user_s: 0.25,
            sys_s: 0.125,
            us_per_request: 10.0,
            utilization: 0.5,
        },
        agent: None,
    }
}

/// A result set with three models, four scenarios (an idle sweep among
/// them) and both protocols, with plausible, exactly representable figures,
/// an A/A copy of epoll-server (identical: a noise floor of 0) and
/// instructions per request for hello and new-conn.
pub fn fixture() -> Results {
    let models = ["epoll", "select", "prefork"];
    let mut runs = Vec::new();
    for (pi, protocol) in [Protocol::Http, Protocol::Fcgi].into_iter().enumerate() {
        for (mi, model) in models.iter().enumerate() {
            let scale = 1.0 - 0.25 * mi as f64 - 0.125 * pi as f64;
            for (scenario, idle) in [
                (Scenario::Hello, 0),
                (Scenario::NewConn, 0),
                (Scenario::Idle, 0),
                (Scenario::Idle, 1000),
                (Scenario::Open, 0),
            ] {
                let load = scenarios::load(scenario, model, idle, Some(16384.0));
                let base = match scenario {
                    Scenario::NewConn => 8192.0,
                    Scenario::Idle if *model == "select" && idle > 0 => 4096.0,
                    Scenario::Open => 16384.0,
                    _ => 32768.0,
                };
                let rep = report(
                    protocol,
                    base * scale,
                    64 << mi,
                    load.conn_mode,
                    idle as u64,
                );
                runs.push(RunRecord {
                    model: model.to_string(),
                    scenario,
                    protocol,
                    rep: 0,
                    load,
                    skipped: None,
                    report: Some(rep),
                    server: Some(Cost {
                        user_us_per_request: 4.0 + mi as f64,
                        sys_us_per_request: 8.0,
                        cpu_us_per_request: 12.0 + mi as f64,
                        cpu_cores: 0.5,
                        voluntary_csw_per_request: 0.25,
                        involuntary_csw_per_request: 0.0,
                        processes: 1 + 2 * (*model == "prefork") as u64,
                        threads: 1,
                        peak_rss_kib: 4096,
                        pss_kib: 2048,
                        cpu_source: CpuSource::CgroupV1,
                        csw_per_request: Some(0.25),
                        csw_source: Some(CswSource::Perf),
                        syscr_per_request: Some(1.0),
                        syscw_per_request: Some(1.0),
                        cgroup_peak_kib: Some(3072),
                    }),
                    generator_limited: false,
                    error: None,
                    aa: false,
                    base: false,
                });
            }
        }
    }
    // The A/A copy of epoll-server: the same figures (a noise floor of 0).
    let copies: Vec<RunRecord> = runs
        .iter()
        .filter(|r| r.model == "epoll")
        .map(|r| RunRecord {
            aa: true,
            ..r.clone()
        })
        .collect();
    runs.extend(copies);
    let cost = models
        .iter()
        .enumerate()
        .flat_map(|(mi, m)| {
            [Scenario::Hello, Scenario::NewConn].map(|scenario| InstrCost {
                model: m.to_string(),
                scenario,
                protocol: Protocol::Http,
                connections: 1,
                new_conn: scenario == Scenario::NewConn,
                requests: [2000, 12000],
                instructions: [6_000_000, 6_000_000 + 10_000 * (2048 + 512 * mi as u64)],
                per_request: Some((2048 + 512 * mi) as f64),
                samples: vec![(2048 + 512 * mi) as f64],
                skipped: None,
                error: None,
            })
        })
        .collect();
    Results {
        schema_version: SCHEMA_VERSION,
        run_id: "20261123-120000".into(),
        machine: Machine {
            kernel: "Linux 6.1.0 x86_64".into(),
            cpu_model: "Test CPU".into(),
            cpus: 2,
            rustc: Some("rustc 1.85.0".into()),
            git_sha: None,
            date: "2026-11-23T12:00:00Z".into(),
        },
        config: RunConfig {
            models: models.iter().map(|m| m.to_string()).collect(),
            scenarios: vec![
                Scenario::Hello,
                Scenario::NewConn,
                Scenario::Idle,
                Scenario::Open,
            ],
            protocols: vec![Protocol::Http, Protocol::Fcgi],
            duration_s: 0.5,
            warmup_s: 0.0,
            repeat: 1,
            workers: 2,
            idle_levels: vec![0, 1000],
            idle_models: vec!["epoll".into(), "select".into(), "prefork".into()],
            missing: vec![],
            peers: vec![],
            base_bins: None,
        },
        runs,
        syscalls: vec![],
        cost,
        sweep: Some(iomodels_suite::sweep::SweepSpec::default()),
        sweeps: models
            .iter()
            .enumerate()
            .map(|(i, m)| curve(m, i))
            .collect(),
    }
}

/// A synthetic sweep of `model` on /hello: flat, then a knee at 4^(3−i)
/// × 1,000 requests/s.
fn curve(model: &str, i: usize) -> iomodels_suite::sweep::Curve {
    use iomodels_suite::sweep::{Curve, Step, Verdict};
    let knee = 1000.0 * 4f64.powi(3 - i as i32);
    let mut steps = Vec::new();
    let mut rate = 500.0;
    while rate <= knee * 2.0 {
        let p99 = if rate <= knee {
            100 + 10 * i as u64
        } else {
            50_000
        };
        let verdict = if rate <= knee {
            Verdict::Within
        } else {
            Verdict::Saturated
        };
        steps.push(Step {
            asked_rps: rate,
            achieved_rps: rate.min(knee * 1.2),
            p50_us: p99 / 2,
            p99_us: p99,
            p999_us: p99 * 2,
            mean_us: p99 as f64 / 2.0,
            errors: 0,
            connections: 50,
            little_l: rate * p99 as f64 / 2e6,
            little_sent: rate * p99 as f64 / 2e6,
            in_flight: rate * p99 as f64 / 2e6,
            send_lag_p99_us: 20,
            generator_lag_p99_us: 10,
            generator_cpu: 0.25,
            verdict,
            why: format!("p99 {p99} µs"),
            server: None,
            report: report(Protocol::Http, rate, p99 / 2, ConnMode::KeepAlive, 0),
        });
        rate *= 2.0;
    }
    Curve {
        model: model.to_string(),
        protocol: Protocol::Http,
        route: "/hello".into(),
        workers: 2,
        connections: 50,
        conn_mode: ConnMode::KeepAlive,
        floor_us: 0.0,
        slo_us: 1000.0,
        capacity_rps: steps
            .iter()
            .filter(|s| s.verdict == Verdict::Within)
            .map(|s| s.asked_rps)
            .next_back(),
        capacity_is_lower_bound: false,
        saturated_at_rps: steps
            .iter()
            .find(|s| s.verdict == Verdict::Saturated)
            .map(|s| s.asked_rps),
        max_achieved_rps: knee * 1.2,
        steps,
        stop: "saturated".into(),
        error: None,
    }
}

/// Whether uring-server can run here: it exits at once saying "io_uring
/// unavailable" when the kernel refuses io_uring (disabled by sysctl or
/// seccomp); the only case in which an io_uring test may skip.
#[allow(dead_code)]
pub fn io_uring_allowed() -> bool {
    use std::io::{BufRead, BufReader, Read};
    let Ok(mut child) = std::process::Command::new(bin_dir().join("uring-server"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        return false;
    };
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let ready = line.starts_with("listening on");
    let _ = child.kill();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let _ = child.wait();
    ready || !err.contains("io_uring unavailable")
}
