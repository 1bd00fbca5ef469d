//! `herd`: how many workers one new connection wakes. Every worker of
//! prefork-server waits for connections; with blocking `accept` (and with
//! EPOLLEXCLUSIVE, or a lock) the kernel wakes one, with a plain shared
//! listener in per-worker epoll sets it wakes all of them, and all but one
//! go back to sleep empty-handed: the thundering herd.
//!
//! Wake-ups are counted as the context switches of the server's whole
//! process tree per connection (perf's inherited software counter where
//! the machine allows, else /proc's per-task counts): each waiter woken and
//! put back to sleep switches out once more.

use super::{missing, ChartSpec, Judgement, Lab, Measured, Point};

/// The `--accept` strategies measured (a plain list).
const STRATEGIES: &[&str] = &["shared", "flock", "exclusive", "epoll"];

pub(super) fn lab() -> Lab {
    Lab {
        name: "herd",
        title: "The thundering herd: workers woken per new connection, by accept strategy",
        shape: "with N workers, epoll without EPOLLEXCLUSIVE costs ≥ ½(N−1) more context switches per connection than blocking accept; EPOLLEXCLUSIVE and flock stay within ½(N−1) of it",
        points: |quick| {
            let ns: &[usize] = if quick { &[4] } else { &[2, 4, 8] };
            let mut v = Vec::new();
            for &n in ns {
                for &a in STRATEGIES {
                    if quick && a == "flock" {
                        continue;
                    }
                    // One client, a new connection per request: between
                    // connections every worker is back waiting.
                    v.push(
                        Point::new(&format!("--accept {a}"), n as f64, "prefork", "/hello", 1)
                            .flags(&["--accept", a])
                            .workers(n)
                            .new_conn(),
                    );
                }
            }
            v
        },
        timing: ((1.5, 1), (2.0, 3)),
        chart: ChartSpec {
            x_desc: "workers",
            y_desc: "context switches per connection",
            log_x: false,
            log_y: false,
            y: csw,
            ideal: None,
            lines: None,
        },
        judge,
    }
}

/// Context switches of the whole tree per connection.
fn csw(m: &Measured) -> f64 {
    let perf = m.x("csw");
    if perf.is_finite() {
        perf
    } else {
        m.cost.csw()
    }
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let n = ms.iter().map(|m| m.point.x).fold(0.0, f64::max);
    let at = |a: &str| {
        ms.iter()
            .find(|m| {
                m.point.x == n && m.point.series == format!("--accept {a}") && m.error.is_none()
            })
            .map(csw)
    };
    let (Some(shared), Some(epoll), Some(excl)) = (at("shared"), at("epoll"), at("exclusive"))
    else {
        return missing("shared, exclusive or epoll");
    };
    let herd = 0.5 * (n - 1.0);
    let mut holds = epoll - shared >= herd && excl - shared < herd;
    let mut reasons = vec![
        format!("{n} workers, context switches per connection: blocking accept {shared:.2}, EPOLLEXCLUSIVE {excl:.2}, plain epoll {epoll:.2}"),
        format!(
            "plain epoll − blocking accept = {:.2} extra switches per connection (needs ≥ ½(N−1) = {herd:.1}: the herd)",
            epoll - shared
        ),
        format!(
            "EPOLLEXCLUSIVE − blocking accept = {:.2} (needs < {herd:.1}: one or a few woken)",
            excl - shared
        ),
    ];
    if let Some(flock) = at("flock") {
        holds &= flock - shared < herd;
        reasons.push(format!(
            "flock − blocking accept = {:.2} (needs < {herd:.1})",
            flock - shared
        ));
    }
    Judgement {
        holds,
        reasons,
        figures: Vec::new(),
    }
}
