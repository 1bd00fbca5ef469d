//! `crash`: SIGKILL one worker process — or the only process — in the
//! middle of a run of keep-alive clients, each with a request in flight
//! (`/wait?us=20000`). What is lost?
//!
//! * A process per worker (prefork, fpm, swoole's worker processes): the
//!   killed worker's request(s) in flight; the master forks a replacement,
//!   the clients reconnect and are served.
//! * One process (threadpool, epoll): every connection and every request in
//!   flight; afterwards nothing answers.
//!
//! Lost requests are those that got no response (the connection failed
//! while a response was due); each was alone on its connection, so lost
//! requests are also the connections lost. Refused connections are the
//! reconnects of clients to a server that is gone.

use super::{missing, ChartSpec, Judgement, Lab, Measured, Point, Probe};

/// (model, flags, a process per worker?) — a plain list.
const MODELS: &[(&str, &[&str], bool)] = &[
    ("prefork", &[], true),
    ("fpm", &["--pm", "static"], true),
    ("swoole", &[], true),
    ("threadpool", &[], false),
    ("epoll", &[], false),
];

/// Clients (each one request in flight).
const CLIENTS: usize = 4;

pub(super) fn lab() -> Lab {
    Lab {
        name: "crash",
        title: "Crash isolation: SIGKILL one worker under load",
        shape: "a process per worker (prefork, fpm, swoole) loses ≤ 2 requests and keeps serving; a single process (threadpool, epoll) loses every request in flight and serves nothing after",
        points: |quick| {
            // Early enough that the last second is wholly after it.
            let at = if quick { 0.6 } else { 1.2 };
            MODELS
                .iter()
                .enumerate()
                .map(|(i, (m, f, _))| {
                    let mut p = Point::new(m, i as f64, m, "/wait?us=20000", CLIENTS)
                        .flags(f)
                        .workers(CLIENTS)
                        .probe(Probe::Timeline);
                    p.crash = Some(at);
                    p
                })
                .collect()
        },
        timing: ((2.0, 1), (4.0, 3)),
        chart: ChartSpec {
            x_desc: "model",
            y_desc: "requests lost",
            log_x: false,
            log_y: false,
            y: |m| m.x("lost"),
            ideal: None,
            lines: None,
        },
        judge,
    }
}

/// Requests answered in the run's last second.
fn last_second(m: &Measured) -> f64 {
    let n = (0..)
        .take_while(|i| m.extra.contains_key(&format!("t{i}.requests")))
        .count();
    if n == 0 {
        return 0.0;
    }
    m.x(&format!("t{}.requests", n - 1))
}

fn judge(ms: &[Measured], _quick: bool) -> Judgement {
    let mut holds = true;
    let mut reasons = Vec::new();
    for &(model, _, per_worker) in MODELS {
        let Some(m) = ms
            .iter()
            .find(|m| m.point.series == model && m.error.is_none())
        else {
            return missing(model);
        };
        let (lost, refused, bad) = (m.x("lost"), m.x("refused"), m.x("status_errors"));
        let after = last_second(m);
        let ok = if per_worker {
            lost + bad <= 2.0 && after > 0.0
        } else {
            lost >= (CLIENTS - 1) as f64 && after == 0.0
        };
        holds &= ok;
        reasons.push(format!(
            "{model} ({}): {lost:.0} requests lost (= connections lost), {bad:.0} error responses, {refused:.0} reconnects refused, {after:.0} requests answered in the last second, {} served in all — {}",
            if per_worker { "a process per worker" } else { "one process" },
            m.requests,
            if ok { "as expected" } else { "NOT as expected" }
        ));
    }
    Judgement {
        holds,
        reasons,
        figures: Vec::new(),
    }
}
