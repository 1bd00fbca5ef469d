//! The `iomodels` binary end to end: usage errors, a short real run
//! against epoll-server (skipped when the servers are not built, unless
//! CI=true), the report and compare subcommands on its results.

mod util;

use std::process::Command;

use iomodels_suite::results::Results;

fn iomodels() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iomodels"))
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let out = iomodels()
        .args(["run", "--scenarios", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("iomodels: error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = iomodels()
        .args(["run", "--models", "no-such-model", "--bin-dir"])
        .arg(util::bin_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model-server"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let out = iomodels()
        .args(["run", "--bin-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no *-server binaries"));

    let out = iomodels()
        .args(["compare", "/nonexistent/a.json", "/nonexistent/b.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("iomodels: error: cannot read"));
}

#[test]
fn a_short_run_against_epoll_writes_results_report_and_compares() {
    if !util::have_binary("epoll-server") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let bmf = out_dir.path().join("bmf.json");
    let out = iomodels()
        .args([
            "run",
            "--models",
            "epoll",
            "--scenarios",
            "hello,open,idle",
            "--protocol",
            "http",
        ])
        .args([
            "-d",
            "300ms",
            "--warmup",
            "100ms",
            "--idle-levels",
            "0,200",
            "--idle-models",
            "epoll",
        ])
        .arg("--out")
        .arg(out_dir.path())
        .arg("--bmf")
        .arg(&bmf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| epoll | hello | http |"), "{stdout}");
    assert!(stdout.contains("report:"), "{stdout}");

    let run_dir = std::fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("results/<run-id>/")
        .path();
    let json = run_dir.join("results.json");
    let r = Results::load(&json).unwrap();
    assert_eq!(
        r.runs.len(),
        8,
        "hello, idle 0, idle 200, open, and their A/A copies"
    );
    assert_eq!(r.runs.iter().filter(|x| x.aa).count(), 4);
    for run in &r.runs {
        let rep = run
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", run.key(), run.error));
        assert!(
            rep.requests > 100,
            "{}: {} requests",
            run.key(),
            rep.requests
        );
        assert_eq!(rep.errors.total(), 0, "{}", run.key());
        let cost = run.server.unwrap();
        assert!(cost.cpu_us_per_request > 0.0 && cost.peak_rss_kib > 0 && cost.threads >= 1);
    }
    let open = r
        .runs
        .iter()
        .find(|x| x.key() == "epoll/open/http")
        .unwrap();
    assert!(open.load.rate.unwrap() > 0.0);
    assert!(r
        .runs
        .iter()
        .any(|x| x.load.idle == 200 && x.report.as_ref().unwrap().idle.held == 200));
    assert!(run_dir.join("report.html").exists() && run_dir.join("report.md").exists());
    let bmf: serde_json::Value = serde_json::from_slice(&std::fs::read(&bmf).unwrap()).unwrap();
    assert!(
        bmf["epoll/hello/http"]["throughput"]["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // report: rebuilt from the results file alone.
    let rebuilt = tempfile::tempdir().unwrap();
    let out = iomodels()
        .arg("report")
        .arg(&json)
        .arg("--out")
        .arg(rebuilt.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let html = std::fs::read_to_string(rebuilt.path().join("report.html")).unwrap();
    assert!(html.contains("id=\"chart-rps-http\"") && html.contains("id=\"chart-idle-http\""));

    // compare: a file against itself passes; a copy with 20 % more
    // read+write calls per request (a counted figure, gated at 5 %) fails.
    let out = iomodels()
        .arg("compare")
        .arg(&json)
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut worse = r.clone();
    for run in &mut worse.runs {
        let s = run.server.as_mut().unwrap();
        s.syscr_per_request = s.syscr_per_request.map(|x| x * 1.2);
        s.syscw_per_request = s.syscw_per_request.map(|x| x * 1.2);
    }
    let worse_path = out_dir.path().join("worse.json");
    worse.save(&worse_path).unwrap();
    let out = iomodels()
        .arg("compare")
        .arg(&json)
        .arg(&worse_path)
        .args(["--threshold", "10%"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGRESSED"));
}

#[test]
fn sweep_usage_errors_are_one_line_and_exit_2() {
    for args in [
        &["sweep", "--factor", "1"][..],
        &["sweep", "--route", "hello"],
        &["sweep", "--slo", "5ms", "--cap", "1ms"],
    ] {
        let out = iomodels().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("iomodels: error: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn a_run_with_a_sweep_takes_the_open_loop_rate_from_it() {
    if !util::have_binary("epoll-server") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = iomodels()
        .args(["run", "--models", "epoll", "--scenarios", "open,sweep"])
        .args(["--protocol", "http", "-d", "200ms", "--warmup", "50ms"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| epoll | /hello | http |"), "{stdout}");
    let run_dir = std::fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let r = Results::load(&run_dir.join("results.json")).unwrap();
    assert_eq!(r.sweeps.len(), 1);
    let cap = r.sweeps[0]
        .capacity_rps
        .unwrap_or(r.sweeps[0].max_achieved_rps / 2.0);
    let open = r
        .runs
        .iter()
        .find(|x| x.key() == "epoll/open/http")
        .unwrap();
    let rate = open.load.rate.unwrap();
    assert!(
        rate <= cap && rate > cap / 3.0,
        "rate {rate}, capacity {cap}"
    );
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"chart-sweep-hello-http\""));
    assert!(html.contains(&format!(
        "at {} req/s",
        iomodels_suite::sweep::thousands(rate)
    )));
}
