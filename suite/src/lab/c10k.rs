//! `c10k`: hold 10,000 idle keep-alive connections (2,000 in `--quick`)
//! and serve a newcomer beside them. What does each idle connection cost —
//! memory, threads, CPU — and does the server still answer?
//!
//! Each model is measured twice on a fresh server: with no idle
//! connections and with N. Bytes per connection = (memory with N − memory
//! without) ÷ N, memory being the server's cgroup peak (user memory, socket
//! buffers and kernel stacks charged to it) where the machine has a memory
//! cgroup, else its PSS (user memory only). The newcomer is an open-loop
//! client at 50 requests/s, so the CPU shown is what holding the idle ones
//! costs plus a trickle of work.

use super::{missing, yes, ChartSpec, Judgement, Lab, Measured, Point, Probe};

/// The models (a plain list): select shows its refusal past FD_SETSIZE.
const MODELS: &[&str] = &[
    "select", "poll", "epoll", "uring", "tokio", "monoio", "thread",
];

fn idle_level(quick: bool) -> usize {
    if quick {
        2_000
    } else {
        10_000
    }
}

pub(super) fn lab() -> Lab {
    Lab {
        name: "c10k",
        title: "C10K: the cost of holding 10,000 idle connections, and whether a newcomer is served",
        shape: "poll, epoll, uring, tokio, monoio and thread hold every idle connection and serve the newcomer; thread-server pays a thread (and its stack) per connection, ≥ 2× epoll's bytes per connection; select refuses what lies past FD_SETSIZE; poll spends ≥ 2× epoll's CPU per request beside them",
        points: |quick| {
            let n = idle_level(quick);
            let mut v = Vec::new();
            for &m in MODELS {
                for idle in [0, n] {
                    v.push(
                        Point::new(m, idle as f64, m, "/hello", 1)
                            .idle(idle)
                            .workers(1)
                            .rate(50.0)
                            .probe(Probe::Newcomer),
                    );
                }
            }
            v
        },
        timing: ((3.0, 1), (4.0, 2)),
        chart: ChartSpec {
            x_desc: "idle connections held",
            y_desc: "server memory, MiB",
            log_x: false,
            log_y: false,
            y: |m| memory_kib(m) / 1024.0,
            ideal: None,
            lines: None,
        },
        judge,
    }
}

/// The server's memory: its cgroup's peak where measured, else its PSS.
fn memory_kib(m: &Measured) -> f64 {
    let cg = m.x("cgroup_peak_kib");
    if cg.is_finite() {
        cg
    } else {
        m.cost.pss_kib as f64
    }
}

/// (bytes per idle connection, the loaded point) of `model`.
fn per_conn<'a>(ms: &'a [Measured], model: &str) -> Option<(f64, &'a Measured)> {
    let of = |x: bool| {
        ms.iter()
            .find(|m| m.point.series == model && (m.point.idle > 0) == x && m.error.is_none())
    };
    let (base, full) = (of(false)?, of(true)?);
    let n = full.point.idle as f64;
    Some(((memory_kib(full) - memory_kib(base)) * 1024.0 / n, full))
}

/// Whether the newcomer (a fresh connection once the idle ones are held)
/// was answered, and the measured client had no failure.
fn served(m: &Measured) -> bool {
    m.x("newcomer_ok") == 1.0 && m.requests > 0 && m.errors == 0
}

/// Idle connections the server held when the newcomer came: its own
/// count less the newcomer and the measured client; without an answer,
/// its open descriptors.
fn held(m: &Measured) -> f64 {
    let c = m.x("server_connections");
    if c.is_finite() {
        c - 2.0
    } else {
        m.x("server_fds")
    }
}

fn judge(ms: &[Measured], quick: bool) -> Judgement {
    let n = idle_level(quick) as f64;
    let mut holds = true;
    let mut reasons = Vec::new();
    let mut figures = Vec::new();
    let source = if ms.iter().any(|m| m.x("cgroup_peak_kib").is_finite()) {
        "cgroup peak memory"
    } else {
        "PSS"
    };
    for &model in MODELS {
        let Some((bytes, m)) = per_conn(ms, model) else {
            reasons.push(format!("{model}: not measured"));
            holds = false;
            continue;
        };
        let held = held(m);
        let line = format!(
            "{model}: held {held:.0} of {n:.0} idle; newcomer served: {} (in {}); {:.1} KiB per connection ({source}); {} processes, {} threads; CPU {:.1} % of a core holding them (and serving 50 req/s)",
            yes(served(m)),
            crate::sweep::fmt_ms(m.x("newcomer_us")),
            bytes / 1024.0,
            m.x("server_processes"),
            m.x("server_threads"),
            100.0 * m.x("busy_cores"),
        );
        reasons.push(line);
        figures.push((
            format!("{model}: bytes per idle connection"),
            format!("{bytes:.0}"),
        ));
        if model == "select" {
            // The refusal: descriptors past 1,024 are answered 503 and
            // closed, the newcomer among them.
            let refused = held < 0.9 * n || !served(m);
            holds &= refused;
            reasons.push(format!(
                "select refuses past FD_SETSIZE (1,024): {} (needs yes)",
                yes(refused)
            ));
        } else {
            holds &= held >= 0.95 * n && served(m);
        }
    }
    if let (Some((t, tm)), Some((e, _))) = (per_conn(ms, "thread"), per_conn(ms, "epoll")) {
        let r = t / e.max(1.0);
        let threads_ok = tm.x("server_threads") >= 0.95 * n;
        holds &= r >= 2.0 && threads_ok;
        reasons.push(format!(
            "thread ÷ epoll bytes per connection = {r:.1}× (needs ≥ 2×); thread-server runs {} threads for {n:.0} connections (needs about one each)",
            tm.x("server_threads")
        ));
    }
    let cpu = |s: &str| {
        ms.iter()
            .find(|m| m.point.series == s && m.point.idle > 0 && m.error.is_none())
            .map(|m| 100.0 * m.x("busy_cores"))
    };
    if let (Some(p), Some(e)) = (cpu("poll"), cpu("epoll")) {
        // One 10 ms tick in a second is 1 %: the floor of what /proc shows.
        let r = p / e.max(1.0);
        holds &= r >= 2.0;
        reasons.push(format!(
            "CPU holding {n:.0} idle at 50 req/s: poll {p:.1} %, epoll {e:.1} % of a core = {r:.1}× (needs ≥ 2×, epoll counted as ≥ 1 %: poll scans them all per call)"
        ));
    } else {
        return missing("poll or epoll");
    }
    Judgement {
        holds,
        reasons,
        figures,
    }
}
