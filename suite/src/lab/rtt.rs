//! `littles-law-rtt`: Little's law with the network's round trip in W.
//! Every point runs across a link of its own (see [`super::Point::rtt`]):
//! the server in one network namespace, the load generator in another,
//! a veth pair between them delayed by netem, or by a relay where the
//! kernel has no netem.
//!
//! A blocking worker holds its connection for the route's 10 ms *and* the
//! round trip before the next request on it arrives, so prefork with 2
//! workers serves at most 2 ÷ (10 ms + RTT). An event loop holds no thread
//! while a request is on the wire: its capacity is its connections ÷
//! (10 ms + RTT), far above the load offered here. The load is an open loop at
//! [`RATE`] requests/s on [`CONNECTIONS`] connections, the same for both
//! models at every RTT: what a model serves of it is its capacity.

use super::{missing, ChartSpec, Judgement, Lab, Line, Measured, Point};

/// The route: 10 ms of server time per request.
const ROUTE: &str = "/wait?us=10000";
const WAIT_S: f64 = 0.010;
/// prefork's workers.
const WORKERS: usize = 2;
/// Offered load, requests/s: 7.5× prefork's capacity at RTT 0, and within
/// epoll's at every RTT here (1,500 × (10 ms + 10 ms) = 30 requests in
/// flight on 50 connections).
const RATE: f64 = 1500.0;
const CONNECTIONS: usize = 50;

pub(super) fn lab() -> Lab {
    Lab {
        name: "littles-law-rtt",
        title: "Little's law with a round trip: a blocking worker's capacity falls with the RTT",
        shape: "prefork's throughput at the largest RTT ÷ at RTT 0 below 0.75 and within 0.6–1.5× of 2 ÷ (10 ms + RTT)'s 0.5; epoll ≥ 5× prefork at every RTT and its ratio above prefork's",
        points: |quick| {
            let rtts_ms: &[f64] = if quick { &[0.0, 10.0] } else { &[0.0, 1.0, 10.0] };
            let mut v = Vec::new();
            for &ms in rtts_ms {
                let rtt = Some(ms / 1e3);
                v.push(
                    Point::new("prefork", ms, "prefork", ROUTE, CONNECTIONS)
                        .workers(WORKERS)
                        .rate(RATE)
                        .rtt(rtt),
                );
                v.push(
                    Point::new("epoll", ms, "epoll", ROUTE, CONNECTIONS)
                        .workers(1)
                        .rate(RATE)
                        .rtt(rtt),
                );
            }
            v
        },
        timing: ((1.5, 2), (3.0, 3)),
        chart: ChartSpec {
            x_desc: "round-trip time, ms",
            y_desc: "requests/s",
            log_x: false,
            log_y: true,
            y: |m| m.rps,
            ideal: None,
            lines: Some(lines),
        },
        judge,
    }
}

/// prefork's bound by Little's law: workers ÷ (wait + RTT), RTT in ms.
fn bound(rtt_ms: f64) -> f64 {
    WORKERS as f64 / (WAIT_S + rtt_ms / 1e3)
}

/// The measured series and prefork's bound, against the RTT.
fn lines(ms: &[Measured]) -> Vec<Line> {
    let mut v: Vec<Line> = ["prefork", "epoll"]
        .iter()
        .map(|s| {
            let pts = ms
                .iter()
                .filter(|m| m.point.series == *s && m.error.is_none())
                .map(|m| (m.point.x, m.rps))
                .collect();
            (s.to_string(), pts)
        })
        .collect();
    let last = ms.iter().map(|m| m.point.x).fold(0.0, f64::max);
    let b = (0..=20)
        .map(|i| last * i as f64 / 20.0)
        .map(|x| (x, bound(x)));
    v.push(("bound 2 ÷ (10 ms + RTT)".to_string(), b.collect()));
    v
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let at = |s: &str, x: f64| {
        ms.iter()
            .find(|m| m.point.series == s && m.point.x == x && m.error.is_none())
    };
    let last = ms.iter().map(|m| m.point.x).fold(0.0, f64::max);
    let (Some(p0), Some(pn), Some(e0), Some(en)) = (
        at("prefork", 0.0),
        at("prefork", last),
        at("epoll", 0.0),
        at("epoll", last),
    ) else {
        return missing("prefork or epoll at RTT 0 and the largest RTT");
    };
    let predicted = bound(last) / bound(0.0);
    let rp = pn.rps / p0.rps;
    let re = en.rps / e0.rps;
    let prefork_ok = rp < 0.75 && (0.6 * predicted..=1.5 * predicted).contains(&rp);
    let mut holds = prefork_ok && re > rp;
    let mut reasons = vec![
        format!(
            "prefork ({WORKERS} workers): {:.0} req/s at RTT 0, {:.0} at {last} ms: ratio {rp:.2} (needs < 0.75 and within 0.6–1.5× of the predicted {predicted:.2})",
            p0.rps, pn.rps
        ),
        format!(
            "epoll: {:.0} req/s at RTT 0, {:.0} at {last} ms: ratio {re:.2} (needs > prefork's {rp:.2})",
            e0.rps, en.rps
        ),
    ];
    let mut figures = Vec::new();
    let mut line = String::from("epoll ÷ prefork (needs ≥ 5× at every RTT):");
    for p in ms
        .iter()
        .filter(|m| m.point.series == "prefork" && m.error.is_none())
    {
        let x = p.point.x;
        let Some(e) = at("epoll", x) else {
            return missing(&format!("epoll at {x} ms"));
        };
        let r = e.rps / p.rps;
        holds &= r >= 5.0;
        line.push_str(&format!(" {r:.1}× at {x} ms;"));
        figures.push((
            format!("prefork at RTT {x} ms against its bound 2 ÷ (10 ms + RTT)"),
            format!(
                "{:.0} of {:.0} req/s = {:.2}",
                p.rps,
                bound(x),
                p.rps / bound(x)
            ),
        ));
        figures.push((
            format!("epoll at RTT {x} ms against the offered load"),
            format!("{:.0} of {RATE:.0} req/s = {:.2}", e.rps, e.rps / RATE),
        ));
    }
    reasons.push(line.trim_end_matches(';').to_string());
    Judgement {
        holds,
        reasons,
        figures,
    }
}
