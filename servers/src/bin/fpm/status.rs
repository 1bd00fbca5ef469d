//! php-fpm's status page: JSON with its pool fields and the workload's
//! status fields, one entry per worker with `full`, and its plain-text form.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use iomodels_servers::scoreboard;
use iomodels_workload::Status;

use crate::Pool;

/// php-fpm's status page as JSON: its pool fields, the workload's
/// [`Status`] fields (so `/status` verifies like every model's), and with
/// `full` one entry per worker.
pub fn status_page(pool: &Pool, status: Status, full: bool) -> serde_json::Value {
    use serde_json::json;
    let board = &pool.board;
    let c = board.counters();
    let (queue, queue_len) = scoreboard::listen_queue(&pool.listener).unwrap_or((0, 0));
    c.max_listen_queue.fetch_max(queue, Relaxed);
    let (idle, active) = board.idle_active();
    board.note_active(active);
    let start = c.start_time.load(Relaxed);
    let now = scoreboard::now_us();
    let mut page = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    let fields = json!({
        "pool": pool.conf.name,
        "process manager": pool.conf.pm.name(),
        "start time": start,
        "start since": (now / 1_000_000).saturating_sub(start),
        "accepted conn": c.accepted.load(Relaxed),
        "listen queue": queue,
        "max listen queue": c.max_listen_queue.load(Relaxed),
        "listen queue len": queue_len,
        "idle processes": idle,
        "active processes": active,
        "total processes": board.live().count(),
        "max active processes": c.max_active.load(Relaxed),
        "max children reached": c.max_children_reached.load(Relaxed),
        "slow requests": c.slow_requests.load(Relaxed),
    });
    if let (Some(page), serde_json::Value::Object(fields)) = (page.as_object_mut(), fields) {
        page.extend(fields);
        if full {
            let processes: Vec<serde_json::Value> = board
                .live()
                .map(|s| {
                    let spawned = s.spawned_us.load(Relaxed);
                    json!({
                        "pid": s.pid.load(Relaxed),
                        "state": s.state().name(),
                        "start time": spawned / 1_000_000,
                        "start since": now.saturating_sub(spawned) / 1_000_000,
                        "requests": s.requests.load(Relaxed),
                        "request duration": s.running_us().unwrap_or(s.last_duration_us.load(Relaxed)),
                        "request method": s.method(),
                        "request URI": s.uri(),
                    })
                })
                .collect();
            page.insert("processes".into(), processes.into());
        }
    }
    page
}

/// The page as php-fpm's plain text: `name: value` lines, workers after a
/// line of stars.
pub fn status_text(page: &serde_json::Value) -> String {
    const POOL: [&str; 14] = [
        "pool",
        "process manager",
        "start time",
        "start since",
        "accepted conn",
        "listen queue",
        "max listen queue",
        "listen queue len",
        "idle processes",
        "active processes",
        "total processes",
        "max active processes",
        "max children reached",
        "slow requests",
    ];
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    for key in POOL {
        let _ = writeln!(out, "{:<21} {}", format!("{key}:"), show(&page[key]));
    }
    if let Some(procs) = page["processes"].as_array() {
        for p in procs {
            out.push_str("\n************************\n");
            if let Some(obj) = p.as_object() {
                for (k, v) in obj {
                    let _ = writeln!(out, "{:<21} {}", format!("{k}:"), show(v));
                }
            }
        }
    }
    out
}
