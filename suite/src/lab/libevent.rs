//! `libevent`: the tlpi63 sweep with 1 and with 100 active connections —
//! the two curves of libevent's benchmark. poll(2) scans every watched
//! descriptor per call; with many active connections one scan finds many
//! ready ones, so its cost is shared among their requests.

use super::{missing, Judgement, Lab, Measured, Point};

/// The models and the active connections of the sweep (plain lists).
const MODELS: &[&str] = &["poll", "epoll"];
const ACTIVE: &[usize] = &[1, 100];

pub(super) fn lab() -> Lab {
    Lab {
        name: "libevent",
        title: "libevent's benchmark: poll's scan with 1 and with 100 active connections",
        shape: "at the most idle descriptors, poll's CPU per request with 100 active connections is ≤ ⅓ of its cost with 1 (the scan is amortised); epoll stays flat (≤ 2× over the sweep, against poll's 10× and more) with either",
        points: |quick| {
            let levels: &[usize] = if quick { &[10, 1000] } else { &[10, 100, 1000, 10_000] };
            let mut v = Vec::new();
            for &n in levels {
                for &m in MODELS {
                    for &a in ACTIVE {
                        let s = format!("{m}, {a} active");
                        v.push(Point::new(&s, n as f64, m, "/hello", a).idle(n).workers(1));
                    }
                }
            }
            v
        },
        timing: ((1.0, 2), (2.0, 3)),
        chart: super::cpu_per_watched_chart(),
        judge,
    }
}

fn cpu(ms: &[Measured], series: &str) -> Vec<(f64, f64)> {
    ms.iter()
        .filter(|m| m.point.series == series && m.error.is_none())
        .map(|m| (m.point.x, m.cost.cpu_us_per_request))
        .collect()
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let (p1, p100) = (cpu(ms, "poll, 1 active"), cpu(ms, "poll, 100 active"));
    let (Some(a), Some(b)) = (p1.last(), p100.last()) else {
        return missing("poll");
    };
    let amortised = a.1 / b.1;
    let mut holds = amortised >= 3.0;
    let mut reasons = vec![format!(
        "poll at {} idle: {:.1} µs/request with 1 active, {:.1} with 100 = {amortised:.1}× (needs ≥ 3×)",
        a.0, a.1, b.1
    )];
    for (s, pts) in [("poll, 1 active", &p1), ("poll, 100 active", &p100)] {
        if let (Some(f), Some(l)) = (pts.first(), pts.last()) {
            reasons.push(format!(
                "{s}: {:.1} → {:.1} µs/request from {} to {} idle = {:.1}×",
                f.1,
                l.1,
                f.0,
                l.0,
                l.1 / f.1
            ));
        }
    }
    for &act in ACTIVE {
        let e = cpu(ms, &format!("epoll, {act} active"));
        let (Some(f), Some(l)) = (e.first(), e.last()) else {
            return missing("epoll");
        };
        let g = l.1 / f.1;
        holds &= g <= 2.0;
        reasons.push(format!(
            "epoll, {act} active: {:.1} → {:.1} µs/request = {g:.2}× (needs ≤ 2×)",
            f.1, l.1
        ));
    }
    Judgement {
        holds,
        reasons,
        figures: Vec::new(),
    }
}
