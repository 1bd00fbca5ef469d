//! Criterion benchmarks of the sans-IO workload: HTTP request-head parsing,
//! FastCGI request encoding and decoding (records and params), FastCGI
//! response reading, and body verification. `cargo bench -p
//! iomodels-workload`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iomodels_workload::{fcgi, http, routes, verify};

fn http_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("http-parse-head");
    let mut plain = Vec::new();
    http::encode_request(&mut plain, "GET", "/hello", "localhost", &[], &[]);
    let browser = b"GET /cpu?n=2000 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\nCookie: session=0123456789abcdef\r\n\r\n"
        .to_vec();
    for (name, input) in [("minimal", plain), ("browser", browser)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, i| {
            b.iter(|| match http::parse_head(black_box(i)) {
                Ok(http::Parse::Complete(h)) => {
                    black_box(h);
                }
                other => panic!("{:?}", other.is_ok()),
            })
        });
    }
    g.finish();
}

fn fcgi_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("fcgi-request");
    g.throughput(Throughput::Elements(1));
    let extra = [("HTTP_HOST", "localhost"), ("HTTP_USER_AGENT", "loadgen")];
    let mut wire = Vec::new();
    g.bench_function("encode", |b| {
        b.iter(|| {
            wire.clear();
            fcgi::encode_request(
                &mut wire,
                1,
                true,
                "GET",
                black_box("/cpu?n=2000"),
                &extra,
                &[],
            );
            black_box(&wire);
        })
    });
    let mut input = Vec::new();
    fcgi::encode_request(&mut input, 1, true, "GET", "/cpu?n=2000", &extra, &[]);
    g.bench_function("decode", |b| {
        let mut params = Vec::with_capacity(1024);
        b.iter(|| {
            params.clear();
            let mut at = 0;
            while let Ok(Some(r)) = fcgi::parse_record(&input[at..]) {
                if r.header.kind == fcgi::PARAMS {
                    params.extend_from_slice(r.content);
                }
                at += r.len;
            }
            let req = fcgi::CgiRequest::from_params(&params).expect("params");
            black_box(req.target());
        })
    });
    g.finish();
}

fn fcgi_response(c: &mut Criterion) {
    let mut g = c.benchmark_group("fcgi-response-read");
    for size in [13usize, 65536] {
        let mut body = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        routes::extend_pattern(&mut body, size);
        let mut wire = Vec::new();
        for chunk in body.chunks(fcgi::MAX_CONTENT) {
            fcgi::push_stream(&mut wire, fcgi::STDOUT, 1, chunk);
        }
        fcgi::push_stream(&mut wire, fcgi::STDOUT, 1, &[]);
        fcgi::push_end_request(&mut wire, 1, 0, fcgi::ProtocolStatus::RequestComplete);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, w| {
            let mut reader = fcgi::ResponseReader::new();
            b.iter(|| {
                let r = reader.read(black_box(w)).expect("valid").expect("whole");
                black_box((r.status, reader.body().len()));
            })
        });
    }
    g.finish();
}

fn verify_bodies(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("hello", "/hello".into(), b"Hello, World!".to_vec()),
        ("cpu-2000", "/cpu?n=2000".into(), {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ 2000;
            for _ in 0..2000 {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                x ^= x >> 31;
            }
            format!("{x:016x}").into_bytes()
        }),
        ("bytes-64k", "/bytes?n=65536".into(), {
            let mut v = Vec::new();
            routes::extend_pattern(&mut v, 65536);
            v
        }),
    ];
    for (name, target, body) in &cases {
        verify("GET", target, &[], 200, body).expect("the benchmark's bodies are right");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| verify("GET", black_box(target), &[], 200, black_box(body)).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    http_parse,
    fcgi_request,
    fcgi_response,
    verify_bodies
);
criterion_main!(benches);
