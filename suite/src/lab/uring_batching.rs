//! `uring-batching`: what one system call carries. epoll-server pays a
//! `read` and a `write` per request whatever the load; uring-server hands
//! the kernel every queued operation in one `io_uring_enter`, so with more
//! connections each enter carries more requests.
//!
//! Counted without perturbing the servers (no strace, whose stops change
//! the batching): read/write-family system calls from `/proc/PID/io`
//! (`syscr`, `syscw`; io_uring's reads and sends do not count there), and
//! `io_uring_enter` calls from the server's own counter in `/status`
//! (`enters`). epoll_wait is counted by neither: epoll's figure leaves it
//! out.

use super::{missing, ChartSpec, Judgement, Lab, Measured, Point, Probe};

/// The models (a plain list).
const MODELS: &[&str] = &["uring", "epoll"];

pub(super) fn lab() -> Lab {
    Lab {
        name: "uring-batching",
        title: "io_uring batching: requests per io_uring_enter against connections",
        shape: "uring's requests per io_uring_enter grow ≥ 4× from 1 connection to the most; its counted system calls per request fall below ½ of epoll's read + write, which stay ≥ 1.5 per request at every level",
        points: |quick| {
            let cs: &[usize] = if quick { &[1, 64] } else { &[1, 4, 16, 64, 256] };
            let mut v = Vec::new();
            for &c in cs {
                for &m in MODELS {
                    v.push(
                        Point::new(m, c as f64, m, "/hello", c)
                            .workers(1)
                            .probe(Probe::Status),
                    );
                }
            }
            v
        },
        timing: ((1.0, 1), (2.0, 3)),
        chart: ChartSpec {
            x_desc: "connections",
            y_desc: "counted system calls per request",
            log_x: true,
            log_y: true,
            y: syscalls,
            ideal: None,
            lines: None,
        },
        judge,
    }
}

/// io_uring_enter calls per request (0 for epoll).
fn enters(m: &Measured) -> f64 {
    m.x("enters_status") / m.x("requests_status").max(1.0)
}

/// read/write system calls plus io_uring_enter calls, per request.
fn syscalls(m: &Measured) -> f64 {
    m.x("rw_syscalls") + enters(m)
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let of = |s: &str| -> Vec<&Measured> {
        ms.iter()
            .filter(|m| m.point.series == s && m.error.is_none())
            .collect()
    };
    let (u, e) = (of("uring"), of("epoll"));
    if u.is_empty() {
        let why = ms
            .iter()
            .find(|m| m.point.series == "uring")
            .and_then(|m| m.error.clone())
            .unwrap_or_default();
        return missing(&format!(
            "uring-server (io_uring refused by the kernel? {why})"
        ));
    }
    let (Some(u1), Some(un), Some(el)) = (u.first(), u.last(), e.last()) else {
        return missing("epoll");
    };
    let per_enter = |m: &Measured| 1.0 / enters(m).max(1e-9);
    let growth = per_enter(un) / per_enter(u1);
    let ratio = syscalls(un) / syscalls(el);
    let epoll_min = e
        .iter()
        .map(|m| m.x("rw_syscalls"))
        .fold(f64::MAX, f64::min);
    let holds = growth >= 4.0 && ratio <= 0.5 && epoll_min >= 1.5;
    let mut reasons = vec![
        format!(
            "uring requests per io_uring_enter: {:.2} at {} connection(s), {:.2} at {} = {growth:.1}× (needs ≥ 4×)",
            per_enter(u1),
            u1.point.x,
            per_enter(un),
            un.point.x
        ),
        format!(
            "counted system calls per request at {} connections: uring {:.2} ({:.2} read/write + {:.3} enter), epoll {:.2} read/write = {ratio:.2}× (needs ≤ 0.5×)",
            un.point.x,
            syscalls(un),
            un.x("rw_syscalls"),
            enters(un),
            el.x("rw_syscalls")
        ),
        format!("epoll's read + write per request, lowest over the levels: {epoll_min:.2} (needs ≥ 1.5: no batching)"),
    ];
    for m in &u {
        reasons.push(format!(
            "uring at {}: {:.0} req/s, {:.2} requests per enter",
            m.point.x,
            m.rps,
            per_enter(m)
        ));
    }
    Judgement {
        holds,
        reasons,
        figures: Vec::new(),
    }
}
