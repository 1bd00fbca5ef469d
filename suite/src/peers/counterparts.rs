//! "Models and their real-world counterparts": each model beside the real
//! server it is a small version of, on the same scenario and protocol of
//! the same run — CPU µs per request, requests/s, p99, and the load
//! generator's CPU (a run where it reached 90 % says so: then compare the
//! CPU per request, not the requests/s).

use std::fmt::Write as _;

use super::Peer;
use crate::scenarios::Scenario;
use crate::summary::Row;

/// One model/peer pair on one scenario.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// The model's row.
    pub model: &'a Row,
    /// The peer's row.
    pub peer: &'a Row,
}

/// Every pair present with results in `rows`: for each peer (in
/// [`Peer::ALL`]'s order) and each of its counterpart models, every
/// scenario (idle sweep aside) both were measured on, in the peer's
/// protocol.
pub fn pairs(rows: &[Row]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    for peer in Peer::ALL {
        for model in peer.counterparts() {
            for p in rows
                .iter()
                .filter(|r| r.model == peer.name() && r.reps > 0 && r.scenario != Scenario::Idle)
            {
                if let Some(m) = rows.iter().find(|r| {
                    r.model == *model
                        && r.reps > 0
                        && r.scenario == p.scenario
                        && r.protocol == p.protocol
                        && r.idle == p.idle
                }) {
                    out.push(Pair { model: m, peer: p });
                }
            }
        }
    }
    out
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn gen(r: &Row) -> String {
    format!(
        "{:.0}%{}",
        r.generator * 100.0,
        if r.generator_limited { " GEN" } else { "" }
    )
}

/// The table as Markdown, empty when no pair was measured.
pub fn markdown(rows: &[Row]) -> String {
    let pairs = pairs(rows);
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| model | peer | scenario | proto | CPU µs/req model | CPU µs/req peer | req/s model | req/s peer | p99 model | p99 peer | gen CPU model / peer |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in pairs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0}us | {:.0}us | {} / {} |",
            p.model.model,
            p.peer.model,
            p.peer.scenario.name(),
            p.peer.protocol.name(),
            num(p.model.cpu_us),
            num(p.peer.cpu_us),
            p.model.rps,
            p.peer.rps,
            p.model.p99_us,
            p.peer.p99_us,
            gen(p.model),
            gen(p.peer),
        );
    }
    s
}
