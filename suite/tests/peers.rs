//! Peers (real servers) against the real thing: `iomodels run --peers …`
//! end to end (verified rows, a CPU figure, the configurations in the run
//! directory, no daemon left running), and every route of workload.php
//! through php-fpm (FastCGI), nginx + php-fpm (HTTP) and fcgiwrap (CGI),
//! verified by the load generator as the models are.
//!
//! A peer that is not installed skips its test with a message; under
//! CI=true it fails (scripts/install-peers.sh installs every peer).

mod util;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use iomodels_suite::peers::{self, Peer, Site};
use iomodels_suite::results::Results;
use iomodels_suite::runner;
use iomodels_suite::scenarios::Scenario;
use loadgen::{Config, ConnMode, RouteSpec, Stop};

/// The tests count this process's children: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn installed(peers: &[Peer]) -> bool {
    let missing: Vec<String> = peers
        .iter()
        .filter_map(|p| p.missing(&util::bin_dir()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{}",
        missing.join("; ")
    );
    eprintln!("skipping: {}", missing.join("; "));
    false
}

/// Pids of this process's children (every thread's).
fn children() -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Reaps and waits until this process has no child left (up to 3 s).
fn no_children_left() -> Vec<u32> {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        while let Ok(s) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if s == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let left = children();
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn peers_run_as_verified_rows_with_configs_and_leave_nothing_running() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers = [Peer::Nginx, Peer::ApachePrefork, Peer::PhpFpm];
    if !installed(&peers) {
        return;
    }
    // Orphans of iomodels would be re-parented here: none may appear.
    iomodels_suite::survivors::adopt_orphans();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["run", "--peers", "nginx,apache-prefork,php-fpm"])
        .args([
            "--scenarios",
            "hello,new-conn",
            "-d",
            "1s",
            "--warmup",
            "200ms",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let left = no_children_left();
    assert!(
        left.is_empty(),
        "left running: {:?}",
        left.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
    );

    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let r = Results::load(&dir.join("results.json")).unwrap();
    assert_eq!(r.config.peers, ["nginx", "apache-prefork", "php-fpm"]);
    assert!(r.config.models.is_empty(), "only peers were named");
    for p in peers {
        for s in [Scenario::Hello, Scenario::NewConn] {
            let rows: Vec<_> = r
                .runs
                .iter()
                .filter(|x| x.model == p.name() && x.scenario == s)
                .collect();
            assert_eq!(rows.len(), 1, "{} {}: one row", p.name(), s.name());
            let row = rows[0];
            assert_eq!(row.protocol, p.protocol(), "a peer runs in its protocol");
            let rep = row
                .report
                .as_ref()
                .unwrap_or_else(|| panic!("{} {}: {:?}", p.name(), s.name(), row.error));
            assert!(
                rep.requests > 200,
                "{} {}: {} requests",
                p.name(),
                s.name(),
                rep.requests
            );
            assert_eq!(
                rep.errors.verify + rep.errors.status,
                0,
                "{} {}",
                p.name(),
                s.name()
            );
            let cost = row.server.as_ref().unwrap();
            assert!(
                cost.cpu_us_per_request > 0.0 && cost.processes >= 1,
                "{} {}: {cost:?}",
                p.name(),
                s.name()
            );
        }
    }
    for f in [
        "nginx/nginx.conf",
        "nginx/start.sh",
        "apache-prefork/apache2.conf",
        "apache-prefork/start.sh",
        "php-fpm/php-fpm.conf",
        "php-fpm/start.sh",
    ] {
        let text = std::fs::read_to_string(dir.join("peers").join(f))
            .unwrap_or_else(|e| panic!("peers/{f}: {e}"));
        assert!(
            text.contains("generated by iomodels") || text.contains("Generated by iomodels"),
            "{f}"
        );
    }
    // The served files can be made again for `start.sh`, byte for byte.
    let again = tempfile::tempdir().unwrap();
    let made = Command::new("sh")
        .arg(dir.join("peers/make-site.sh"))
        .arg(again.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let site = Site::create().unwrap();
    for f in [
        "www/hello",
        "www/_files/1m",
        "www/_bytes/4096",
        "workload.php",
        "workload.cgi",
    ] {
        assert_eq!(
            std::fs::read(again.path().join(f)).unwrap(),
            std::fs::read(site.dir().join(f)).unwrap(),
            "{f}"
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Peers") && md.contains("(peers/php-fpm/)"),
        "{md}"
    );
    assert!(
        md.contains("| _nginx_ | hello | http |"),
        "peers in italics"
    );
}

/// Every route of the workload (and its 400s and 404s), each response
/// verified by the load generator.
fn every_route() -> Vec<RouteSpec> {
    [
        "/hello",
        "/cpu?n=0",
        "/cpu?n=1",
        "/cpu?n=1000",
        "/cpu?n=100000",
        "/cpu?x=1&n=7",
        "/wait?us=0",
        "/wait?us=2000",
        "/bytes?n=0",
        "/bytes?n=1",
        "/bytes?n=100000",
        "/file?name=4k",
        "/file?name=64k",
        "/file?name=1m",
        "/file?name=missing",
        "/echo",
        "/status",
        "/cpu",
        "/cpu?n=x",
        "/cpu?n=-1",
        "/cpu?n=1000000001",
        "/cpu?n=99999999999999999999",
        "/wait?us=10000001",
        "/bytes?n=67108865",
        "/file",
        "/file?name=..",
        "/file?name=a/b",
        "/nope",
    ]
    .iter()
    .map(|t| RouteSpec {
        target: t.to_string(),
        weight: 1,
    })
    .collect()
}

fn drive(peer: Peer, launch: &iomodels_suite::peers::config::Launch, requests: u64) {
    drive_routes(peer, launch, requests, None, every_route());
}

fn drive_routes(
    peer: Peer,
    launch: &iomodels_suite::peers::config::Launch,
    requests: u64,
    method: Option<&str>,
    routes: Vec<RouteSpec>,
) {
    let t = runner::target(&launch.addr, peer.protocol()).unwrap();
    let mut c = Config::new(t);
    c.threads = 1;
    c.connections = 2;
    c.conn_mode = ConnMode::KeepAlive;
    c.stop = Stop::Requests(requests);
    c.timeout_s = 10.0;
    c.body_size = 1000;
    c.params = launch.params.clone();
    c.method = method.map(str::to_string);
    c.routes = routes;
    let r = loadgen::run(&c).unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
    assert_eq!(r.requests, requests, "{}: {:?}", peer.name(), r.errors);
    assert_eq!(r.errors.total(), 0, "{}: {:?}", peer.name(), r.errors);
}

#[test]
fn workload_php_passes_the_models_verification_on_every_route() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers = [Peer::PhpFpm, Peer::NginxPhpFpm, Peer::Fcgiwrap];
    if !installed(&peers) {
        return;
    }
    let site = Site::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = every_route().len() as u64;
    // php-fpm directly (FastCGI) and behind nginx (HTTP): every route 4
    // times; fcgiwrap (a CGI process per request, PHP started each time
    // for all but /hello): every route once.
    for (peer, rounds) in [
        (Peer::PhpFpm, 4),
        (Peer::NginxPhpFpm, 4),
        (Peer::Fcgiwrap, 1),
    ] {
        let pdir = dir.path().join(peer.name());
        let p = peers::start(peer, &site, &pdir, &util::bin_dir(), 2)
            .unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
        drive(peer, &p.launch, routes * rounds);
        if peer == Peer::PhpFpm {
            // `OPTIONS *` (200, no body) and `*` with another method (400).
            let star = || {
                vec![RouteSpec {
                    target: "*".into(),
                    weight: 1,
                }]
            };
            drive_routes(peer, &p.launch, 4, Some("OPTIONS"), star());
            drive_routes(peer, &p.launch, 4, Some("GET"), star());
        }
        drop(p); // stops it, ends its process group
    }
    assert!(no_children_left().is_empty(), "a peer outlived its stop");
}

#[test]
fn a_peer_is_swept_like_a_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !installed(&[Peer::Nginx]) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["sweep", "--peers", "nginx", "--protocol", "both"])
        .args([
            "--from", "500", "--steps", "2", "-d", "200ms", "--warmup", "50ms",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let r = Results::load(&dir.join("results.json")).unwrap();
    assert_eq!(r.config.peers, ["nginx"]);
    // nginx speaks HTTP only: one curve, not two.
    assert_eq!(r.sweeps.len(), 1, "{:?}", r.sweeps);
    let c = &r.sweeps[0];
    assert_eq!((c.model.as_str(), c.error.as_deref()), ("nginx", None));
    assert!(!c.steps.is_empty() && c.steps[0].achieved_rps > 0.0);
    assert!(dir.join("peers/nginx/nginx.conf").is_file());
}
