//! End-to-end round trips: one keep-alive connection, `GET /hello`, one
//! response, for every `*-server` binary built beside this bench (the
//! profile directory above `deps/`). `cargo bench -p iomodels-suite`
//! compares the models side by side (`BenchmarkId` per model); models that
//! are not built are skipped with a note.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iomodels_suite::{models, runner};
use iomodels_workload::http;

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Sends one request and reads its whole response.
fn round_trip(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) {
    stream.write_all(request).expect("write");
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Some(r)) = http::parse_response(buf, false) {
            assert_eq!(r.status, 200);
            black_box(r.body);
            return;
        }
    }
}

fn models_hello(c: &mut Criterion) {
    let dir = bin_dir();
    let mut request = Vec::new();
    http::encode_request(&mut request, "GET", "/hello", "localhost", &[], &[]);
    let mut group = c.benchmark_group("hello-roundtrip");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(20);
    let found = models::discover(&dir);
    if found.is_empty() {
        eprintln!(
            "no *-server binaries in {}: build the workspace first",
            dir.display()
        );
    }
    for model in found {
        // fork-server closes after each request: a keep-alive round trip
        // does not exist for it.
        if models::quirks(&model).closes_each_request {
            continue;
        }
        let server = match runner::Server::start(
            &runner::server_bin(&dir, &model),
            loadgen::Protocol::Http,
            2,
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping {model}: {e}");
                continue;
            }
        };
        let mut stream = TcpStream::connect(&server.addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = Vec::with_capacity(4096);
        group.bench_with_input(BenchmarkId::from_parameter(&model), &request, |b, req| {
            b.iter(|| round_trip(&mut stream, req, &mut buf))
        });
        drop(stream);
        drop(server);
    }
    group.finish();
}

criterion_group!(benches, models_hello);
criterion_main!(benches);
