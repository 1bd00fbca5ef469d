//! End-to-end benchmarks that compare the server models: `cargo bench -p
//! iomodels-servers --bench models` works from a fresh checkout, because
//! Cargo builds this crate's binaries before it runs one of its benches
//! and says where they are (`CARGO_BIN_EXE_<name>`); every `*-server`
//! beside them is measured, so a model added to `src/bin/` is benchmarked
//! without a change here.
//!
//! Two groups, one `BenchmarkId` per model, so criterion's report puts the
//! models side by side (HTML under `target/criterion/report/index.html`):
//!
//! * `hello-keepalive-16` — `GET /hello` over 16 keep-alive connections
//!   (1 for iterative-server, which serves one connection at a time);
//! * `hello-new-conn-16` — the same with a new connection per request, 16
//!   at a time: accept, close (and fork-server's fork) in every request.
//!
//! Every server runs with `--workers 16`, so a blocking model has a worker
//! for each connection. One iteration is one request, made by the loadgen
//! library (closed loop, every response verified); the time is loadgen's
//! measured time for the whole batch, so criterion reports requests/s.
//!
//! Before and after a change:
//!
//! ```sh
//! cargo bench -p iomodels-servers --bench models -- --save-baseline before
//! # … change a model …
//! cargo bench -p iomodels-servers --bench models -- --baseline before
//! ```
//!
//! `-- --test` runs every benchmark once (a smoke test: each model starts
//! and answers); a filter such as `-- epoll` runs one model.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iomodels_suite::models;
use loadgen::{Config, ConnMode, Protocol, RouteSpec, Stop, Target};

/// Connections of both groups.
const CONNECTIONS: usize = 16;

/// A server started for the benchmark, stopped (SIGTERM, then SIGKILL) on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `bin` on a free port; `None` (with the reason on stderr)
    /// when it does not come up, e.g. io_uring forbidden by the kernel.
    fn start(bin: &Path) -> Option<Server> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--workers"])
            .arg(CONNECTIONS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut lines = BufReader::new(child.stdout.take()?).lines();
        let addr = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("listening on ").map(str::to_string));
        let Some(addr) = addr else {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            eprintln!("skipping {}: {}", bin.display(), err.trim());
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        // Drain stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Cargo put this crate's binaries.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_epoll-server"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// Runs `iters` requests against `addr`; returns loadgen's measured time.
fn batch(addr: &str, connections: usize, mode: ConnMode, iters: u64) -> Duration {
    let target = Target::parse(&format!("http://{addr}/"), None, None).expect("target");
    let mut c = Config::new(target);
    c.threads = 1;
    c.connections = connections.min(iters as usize).max(1);
    c.conn_mode = mode;
    c.stop = Stop::Requests(iters);
    c.timeout_s = 10.0;
    c.routes = vec![RouteSpec {
        target: "/hello".into(),
        weight: 1,
    }];
    let r = loadgen::run(&c).expect("load generator");
    assert_eq!(r.errors.total(), 0, "errors against {addr}: {:?}", r.errors);
    assert_eq!(r.protocol, Protocol::Http);
    Duration::from_secs_f64(r.duration_s)
}

fn compare_models(c: &mut Criterion) {
    let dir = bin_dir();
    let found = models::discover(&dir);
    assert!(!found.is_empty(), "no *-server in {}", dir.display());
    for (group_name, mode) in [
        ("hello-keepalive-16", ConnMode::KeepAlive),
        ("hello-new-conn-16", ConnMode::NewConn),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        group.sample_size(10);
        for model in &found {
            let q = models::quirks(model);
            // fork-server closes after every request: it has no keep-alive.
            if mode == ConnMode::KeepAlive && q.closes_each_request {
                continue;
            }
            let connections = if q.one_connection { 1 } else { CONNECTIONS };
            let Some(server) = Server::start(&dir.join(format!("{model}-server"))) else {
                continue;
            };
            group.bench_function(BenchmarkId::from_parameter(model), |b| {
                b.iter_custom(|iters| batch(&server.addr, connections, mode, iters))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, compare_models);
criterion_main!(benches);
