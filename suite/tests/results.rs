//! The results file: serde round trip, and compare's gate on copies.

mod util;

use iomodels_suite::compare::{self, Thresholds};
use iomodels_suite::results::Results;

/// The default thresholds with `wall` for wall-clock figures.
fn wall(wall: f64) -> Thresholds {
    Thresholds {
        wall,
        ..Thresholds::default()
    }
}

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
    let c = compare::compare(&r, &r.clone(), wall(0.10));
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
    let c = compare::compare(&base, &new, wall(0.10));
    assert!(c.failed());
    let bad: Vec<_> = c.changes.iter().filter(|x| x.regressed).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        (bad[0].key.as_str(), bad[0].metric),
        ("prefork/hello/http", "cpu_us_per_request")
    );
    assert!(compare::markdown(&c).contains("**REGRESSED**"));
    // A looser threshold lets it pass.
    assert!(!compare::compare(&base, &new, wall(0.25)).failed());
}

#[test]
fn compare_flags_throughput_relative_to_epoll_but_not_raw_rps() {
    let base = util::fixture();
    // Everything 20 % slower (a busier machine): ratios hold, no failure.
    let mut slower = base.clone();
    for r in &mut slower.runs {
        r.report.as_mut().unwrap().rps *= 0.8;
    }
    assert!(!compare::compare(&base, &slower, wall(0.10)).failed());
    // One model 30 % slower than epoll: its ratio regresses.
    let mut one = base.clone();
    for r in one.runs.iter_mut().filter(|r| r.model == "select") {
        r.report.as_mut().unwrap().rps *= 0.7;
    }
    let c = compare::compare(&base, &one, wall(0.10));
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
    assert_eq!(hello["instructions-per-request"]["value"], 2048.0);
    assert!(v.get("epoll/hello/http/aa").is_none());
}

#[test]
fn compare_gates_wall_clock_figures_only_beyond_the_noise_floor() {
    let base = util::fixture();
    let mut new = base.clone();
    for r in new
        .runs
        .iter_mut()
        .filter(|r| r.key() == "prefork/hello/http")
    {
        r.server.as_mut().unwrap().cpu_us_per_request *= 1.2;
    }
    assert!(compare::compare(&base, &new, wall(0.10)).failed());
    // The same change in a run whose A/A copies differed by 30 %: noise.
    for r in new.runs.iter_mut().filter(|r| r.aa) {
        r.server.as_mut().unwrap().cpu_us_per_request *= 1.3;
    }
    let c = compare::compare(&base, &new, wall(0.10));
    assert!(!c.failed(), "{}", compare::markdown(&c));
    assert!(compare::markdown(&c).contains("A/A: requests/s 0.0 %, CPU 30.0 %"));
    // Without any A/A copy, wall-clock figures are informational.
    let mut bare = base.clone();
    bare.runs.retain(|r| !r.aa);
    let mut worse = bare.clone();
    for r in &mut worse.runs {
        r.server.as_mut().unwrap().cpu_us_per_request *= 2.0;
    }
    let c = compare::compare(&bare, &worse, wall(0.10));
    assert!(!c.failed());
    assert!(c
        .changes
        .iter()
        .any(|x| x.note == Some("no A/A noise floor in either set")));
}

#[test]
fn compare_fails_instructions_raised_by_5_percent() {
    let base = util::fixture();
    let mut new = base.clone();
    for c in &mut new.cost {
        let x = c.per_request.unwrap() * 1.05;
        c.per_request = Some(x);
        c.samples = vec![x];
    }
    let c = compare::compare(&base, &new, Thresholds::default());
    assert!(c.failed());
    assert!(c
        .changes
        .iter()
        .filter(|x| x.regressed)
        .all(|x| x.metric == "instructions_per_request"));
    // 1 % more is within the 2 % threshold.
    let mut slight = base.clone();
    for c in &mut slight.cost {
        c.per_request = Some(c.per_request.unwrap() * 1.01);
    }
    assert!(!compare::compare(&base, &slight, Thresholds::default()).failed());
}

#[test]
fn compare_gates_counted_figures_at_5_percent_and_a_minimum_change() {
    let base = util::fixture();
    let mut new = base.clone();
    for r in new
        .runs
        .iter_mut()
        .filter(|r| r.key() == "select/hello/http")
    {
        let s = r.server.as_mut().unwrap();
        s.syscr_per_request = Some(1.09); // r+w 2.0 → 2.09: +4.5 %, within 5 %
        s.csw_per_request = Some(0.375); // +50 %, but only 0.125 → no: see below
    }
    let c = compare::compare(&base, &new, Thresholds::default());
    let bad: Vec<_> = c.changes.iter().filter(|x| x.regressed).collect();
    // csw 0.25 → 0.375 is +50 % and 0.125 per request: a regression.
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].metric, "csw_per_request");
    // 0.25 → 0.29 is +16 % but 0.04 per request: below the minimum change.
    for r in new
        .runs
        .iter_mut()
        .filter(|r| r.key() == "select/hello/http")
    {
        r.server.as_mut().unwrap().csw_per_request = Some(0.29);
    }
    let c = compare::compare(&base, &new, Thresholds::default());
    assert!(!c.failed(), "{}", compare::markdown(&c));
    for r in new
        .runs
        .iter_mut()
        .filter(|r| r.key() == "select/hello/http")
    {
        r.server.as_mut().unwrap().syscr_per_request = Some(1.2);
    }
    let c = compare::compare(&base, &new, Thresholds::default());
    let bad: Vec<_> = c.changes.iter().filter(|x| x.regressed).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].metric, "rw_calls_per_request");
}

#[test]
fn compare_needs_every_repetition_to_agree() {
    // Three rounds of prefork/hello/http with CPU 10, 12, 14 µs.
    let with_cpu = |cpus: [f64; 3]| {
        let mut r = util::fixture();
        let one: Vec<_> = r
            .runs
            .iter()
            .filter(|x| x.key() == "prefork/hello/http")
            .cloned()
            .collect();
        r.runs.retain(|x| x.key() != "prefork/hello/http");
        for (i, cpu) in cpus.into_iter().enumerate() {
            let mut run = one[0].clone();
            run.rep = i as u32;
            run.server.as_mut().unwrap().cpu_us_per_request = cpu;
            r.runs.push(run);
        }
        r
    };
    let base = with_cpu([10.0, 12.0, 14.0]);
    // Median +25 %, but one new repetition (13) is better than the base's worst.
    let c = compare::compare(&base, &with_cpu([13.0, 15.0, 16.0]), wall(0.10));
    assert!(!c.failed(), "{}", compare::markdown(&c));
    assert!(compare::markdown(&c).contains("repetitions overlap"));
    // Every new repetition worse than every base one: a regression.
    let c = compare::compare(&base, &with_cpu([15.0, 16.0, 17.0]), wall(0.10));
    assert!(c.failed());
}

/// `new` with a base copy of every model's run (`--base-bins`), whose CPU
/// per request is the new run's divided by `slower`.
fn with_base_copies(mut new: Results, slower: f64) -> Results {
    let copies: Vec<_> = new
        .runs
        .iter()
        .filter(|r| !r.aa)
        .map(|r| {
            let mut b = r.clone();
            b.base = true;
            if let Some(s) = b.server.as_mut() {
                s.cpu_us_per_request /= slower;
            }
            b
        })
        .collect();
    new.runs.extend(copies);
    new.config.base_bins = Some("/tmp/base/release".into());
    new
}

#[test]
fn compare_gates_cpu_in_the_same_run_against_the_base_binaries() {
    let base = util::fixture();
    // The whole machine was 40 % slower when the new set ran: every CPU
    // figure rose, the base copies' in the same rounds as much.
    let mut drifted = base.clone();
    for r in &mut drifted.runs {
        if let Some(s) = r.server.as_mut() {
            s.cpu_us_per_request *= 1.4;
        }
    }
    // Without base copies the drift looks like a regression everywhere.
    assert!(compare::compare(&base, &drifted, wall(0.10)).failed());
    // With them, CPU is gated in the same run: no regression, and the
    // cross-run CPU figures say why they are informational.
    let same = with_base_copies(drifted.clone(), 1.0);
    let c = compare::compare(&base, &same, wall(0.10));
    assert!(!c.failed(), "{}", compare::markdown(&c));
    assert!(c
        .changes
        .iter()
        .any(|x| x.metric == "cpu_us_per_request_vs_base_same_run" && x.gated));
    assert!(compare::markdown(&c).contains("gated in the same run"));
    // The base copies are not compared across runs, nor counted as new keys.
    assert!(c.only_new.is_empty(), "{:?}", c.only_new);
    // A new binary 20 % costlier than the base beside it: caught.
    let worse = with_base_copies(drifted, 1.2);
    let c = compare::compare(&base, &worse, wall(0.10));
    assert!(c.failed());
    assert!(c
        .changes
        .iter()
        .filter(|x| x.regressed)
        .all(|x| x.metric == "cpu_us_per_request_vs_base_same_run"));
    // And the report shows the pairs.
    let md = iomodels_suite::report::markdown(&worse);
    assert!(
        md.contains("Same-run A/B against the base binaries"),
        "{md}"
    );
    assert!(md.contains("| epoll/hello/http |"), "{md}");
}
