//! The results file: serde round trip, and compare's gate on copies.

mod util;

use iomodels_suite::compare;
use iomodels_suite::results::Results;

#[test]
fn results_round_trip_through_json() {
    let r = util::fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    r.save(&path).unwrap();
    let back = Results::load(&path).unwrap();
    assert_eq!(back, r);
    // And the histograms come back whole.
    let h = back.runs[0]
        .report
        .as_ref()
        .unwrap()
        .latency
        .histogram()
        .unwrap();
    assert_eq!(h.len(), 1001);
}

#[test]
fn a_wrong_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut v = serde_json::to_value(util::fixture()).unwrap();
    v["schema_version"] = 99.into();
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Results::load(&path).unwrap_err().to_string();
    assert!(e.contains("schema_version"), "{e}");
}

#[test]
fn compare_passes_an_unchanged_copy() {
    let r = util::fixture();
    let c = compare::compare(&r, &r.clone(), 0.10);
    assert!(!c.failed(), "{}", compare::markdown(&c));
    assert!(c.changes.iter().any(|x| x.gated));
    assert!(compare::markdown(&c).contains("No regression."));
}

#[test]
fn compare_flags_cpu_per_request_made_20_percent_worse() {
    let base = util::fixture();
    let mut new = base.clone();
    let run = new
        .runs
        .iter_mut()
        .find(|r| r.model == "prefork" && r.key() == "prefork/hello/http")
        .unwrap();
    run.server.as_mut().unwrap().cpu_us_per_request *= 1.2;
    let c = compare::compare(&base, &new, 0.10);
    assert!(c.failed());
    let bad: Vec<_> = c.changes.iter().filter(|x| x.regressed).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        (bad[0].key.as_str(), bad[0].metric),
        ("prefork/hello/http", "cpu_us_per_request")
    );
    assert!(compare::markdown(&c).contains("**REGRESSED**"));
    // A looser threshold lets it pass.
    assert!(!compare::compare(&base, &new, 0.25).failed());
}

#[test]
fn compare_flags_throughput_relative_to_epoll_but_not_raw_rps() {
    let base = util::fixture();
    // Everything 20 % slower (a busier machine): ratios hold, no failure.
    let mut slower = base.clone();
    for r in &mut slower.runs {
        r.report.as_mut().unwrap().rps *= 0.8;
    }
    assert!(!compare::compare(&base, &slower, 0.10).failed());
    // One model 30 % slower than epoll: its ratio regresses (ratios are
    // gated at twice the threshold).
    let mut one = base.clone();
    for r in one.runs.iter_mut().filter(|r| r.model == "select") {
        r.report.as_mut().unwrap().rps *= 0.7;
    }
    let c = compare::compare(&base, &one, 0.10);
    assert!(c.failed());
    assert!(c
        .changes
        .iter()
        .filter(|x| x.regressed)
        .all(|x| x.metric == "rps_ratio_to_epoll"));
}

#[test]
fn bmf_has_a_measure_per_run() {
    let v = compare::bmf(&util::fixture());
    let hello = &v["epoll/hello/http"];
    assert_eq!(hello["throughput"]["value"], 32768.0);
    assert_eq!(hello["cpu-us-per-request"]["value"], 12.0);
    assert!(v["select/idle/fcgi/idle=1000"]["rps-ratio-to-epoll"]["value"].is_number());
}
