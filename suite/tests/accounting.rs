//! The figures the gate trusts, measured on real servers: exact CPU from a
//! cgroup (no more 0.00 µs on a low-rate run), context switches of threads
//! that exited, read+write calls from /proc/PID/io, progress lines in a
//! log, and instructions per request under valgrind that repeat.
//!
//! The cgroup and perf parts need a writable cgroup hierarchy and
//! perf_event_open (root on the development machine); without them the
//! runner falls back to /proc and marks the figures, and these tests say
//! so and check the rest. Without valgrind the cost test is skipped, unless
//! CI=true (scripts/install-peers.sh installs it).

mod util;

use std::path::Path;
use std::process::Command;

use iomodels_suite::accounting::{CpuSource, CswSource};
use iomodels_suite::results::Results;

fn iomodels() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iomodels"))
}

/// The results.json written under `out`.
fn results_in(out: &Path) -> Results {
    let dir = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("results/<run-id>/")
        .path();
    Results::load(&dir.join("results.json")).unwrap()
}

#[test]
fn cpu_context_switches_and_read_write_calls_are_counted_exactly() {
    let models = ["iterative", "prefork", "threadpool", "thread", "epoll"];
    if !models
        .iter()
        .all(|m| util::have_binary(&format!("{m}-server")))
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = iomodels()
        .args(["run", "--models", &models.join(",")])
        .args(["--scenarios", "hello,new-conn,cpu,wait,file"])
        .args(["--protocol", "http", "-d", "300ms", "--warmup", "100ms"])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // stderr is not a terminal here: one line per finished run.
    assert!(
        stderr.contains("iomodels: [1/") && stderr.contains("round 1/1  epoll (A/A) hello http"),
        "{stderr}"
    );
    let r = results_in(out.path());
    let exact_cpu = r.runs.iter().all(|x| {
        x.server
            .is_some_and(|s| s.cpu_source != CpuSource::ProcTicks)
    });
    let exact_csw = r.runs.iter().all(|x| {
        x.server
            .is_some_and(|s| s.csw_source == Some(CswSource::Perf))
    });
    let cost = |key: &str| {
        let run = r
            .runs
            .iter()
            .find(|x| x.key() == key)
            .unwrap_or_else(|| panic!("no {key}"));
        run.server
            .unwrap_or_else(|| panic!("{key}: {:?}", run.error))
    };

    // Every scenario of the blocking models, /wait included (~80 requests
    // for iterative-server), has a CPU figure above zero.
    if exact_cpu {
        for m in ["iterative", "prefork", "threadpool"] {
            for s in ["hello", "new-conn", "cpu", "wait", "file"] {
                let c = cost(&format!("{m}/{s}/http"));
                assert!(c.cpu_us_per_request > 0.0, "{m}/{s}: {c:?}");
            }
        }
    } else {
        eprintln!("no writable cgroup here: CPU is tick-based, the CPU check is skipped");
    }

    // thread-server's threads exit with their connections; their context
    // switches are still counted (about one per keep-alive request).
    if exact_csw {
        let c = cost("thread/hello/http");
        assert!(c.csw() >= 0.5, "thread-server hello: {c:?}");
    } else {
        eprintln!("perf_event_open is not allowed here: the context-switch check is skipped");
    }

    // epoll-server: one read and one write per keep-alive request (and an
    // occasional read that finds nothing), without strace's distortion.
    let c = cost("epoll/hello/http");
    let rw = c.syscalls_rw().expect("syscr/syscw");
    assert!(
        (1.9..=2.5).contains(&rw),
        "epoll hello r+w calls/request {rw}"
    );

    // The A/A copy ran and the report prints the noise floor.
    assert!(r
        .runs
        .iter()
        .any(|x| x.aa && x.key() == "epoll/hello/http/aa"));
    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Noise floor (largest A/A difference)"), "{md}");
}

fn have_valgrind() -> bool {
    let ok = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "valgrind is not installed (scripts/install-peers.sh installs it)"
        );
        eprintln!("skipping: valgrind is not installed (scripts/install-peers.sh)");
    }
    ok
}

#[test]
fn two_cost_runs_agree_and_compare_gates_instructions() {
    if !util::have_binary("epoll-server") || !have_valgrind() {
        return;
    }
    let models = if util::bin_dir().join("uring-server").exists() {
        "epoll,uring"
    } else {
        "epoll"
    };
    let cost_run = |out: &Path| {
        let o = iomodels()
            .args(["cost", "--models", models, "--scenarios", "hello"])
            .args(["--requests", "300,1800"])
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut dirs: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs.pop().unwrap().join("results.json")
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ja, jb) = (cost_run(a.path()), cost_run(b.path()));
    let (ra, rb) = (Results::load(&ja).unwrap(), Results::load(&jb).unwrap());
    let per = |r: &Results| {
        let c = r.cost.iter().find(|c| c.model == "epoll").unwrap();
        c.per_request
            .unwrap_or_else(|| panic!("epoll under valgrind: {:?}", c.error))
    };
    let (x, y) = (per(&ra), per(&rb));
    assert!(x > 500.0, "{x} instructions per request");
    assert!((y / x - 1.0).abs() < 0.01, "two runs: {x} and {y}");
    if util::bin_dir().join("uring-server").exists() {
        let u = ra.cost.iter().find(|c| c.model == "uring").unwrap();
        assert!(u.skipped.as_deref().unwrap().contains("io_uring"));
    }

    // An unchanged re-run passes; a copy with 5 % more instructions fails.
    let gate = |base: &Path, new: &Path| {
        iomodels()
            .arg("compare")
            .arg(base)
            .arg(new)
            .output()
            .unwrap()
    };
    let o = gate(&ja, &jb);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let mut worse = ra.clone();
    for c in worse.cost.iter_mut().filter(|c| c.per_request.is_some()) {
        let v = c.per_request.unwrap() * 1.05;
        c.per_request = Some(v);
        c.samples = vec![v];
    }
    let wp = a.path().join("worse.json");
    worse.save(&wp).unwrap();
    let o = gate(&ja, &wp);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("instructions_per_request") && stdout.contains("REGRESSED"));
}

/// `--base-bins`: every model also runs from the base binaries, beside the
/// new one in the same rounds (base second in round 1, first in round 2),
/// and `compare` gates CPU on those pairs. Here both sides are the same
/// binaries: the same-run gate must pass where nothing changed.
#[test]
fn base_binaries_run_beside_the_new_ones_and_compare_gates_the_pairs() {
    if !util::have_binary("epoll-server") {
        return;
    }
    let bins = Path::new(env!("CARGO_BIN_EXE_iomodels")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = iomodels()
        .args(["run", "--models", "epoll", "--scenarios", "hello"])
        .args(["--protocol", "http", "-d", "300ms", "--warmup", "100ms"])
        .args(["--repeat", "2", "--peers", "none", "--base-bins"])
        .arg(bins)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // `iomodels: [1/6] 0 s  round 1/2  epoll (base) hello http: 9 req/s`
    let order: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split("  ").nth(2)?.split(':').next())
        .collect();
    let copies = ["", " (base)", " (A/A)", " (base)", "", " (A/A)"];
    let want: Vec<String> = copies
        .iter()
        .map(|c| format!("epoll{c} hello http"))
        .collect();
    assert_eq!(order, want, "{stderr}");
    let r = results_in(out.path());
    assert_eq!(r.runs.iter().filter(|x| x.base).count(), 2, "{stderr}");
    assert!(r.config.base_bins.is_some());
    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        report.contains("Same-run A/B against the base binaries"),
        "{report}"
    );
    // A base directory without the model's binary: one clear line.
    let empty = tempfile::tempdir().unwrap();
    let bad = iomodels()
        .args(["run", "--models", "epoll", "--peers", "none", "--base-bins"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("no epoll-server there"), "{e}");
}
