//! Coordinated omission: a server that stalls for one second during a 10 s
//! open-loop run at 200 requests/s. Latency from the intended send time
//! (corrected) must show the stall in p99; latency from the actual send
//! (uncorrected) hides it, because only the few requests in flight when the
//! stall began waited. Alone in its own test binary, so nothing else
//! competes for the CPU while it measures. Both I/O backends, in turn.

mod util;

use loadgen::{Config, Stop, Target};
use util::{each_io, Options, TestServer};

use std::time::Duration;

#[test]
fn corrected_latency_shows_a_stall_that_uncorrected_hides() {
    each_io(|io| {
        let server = TestServer::start(Options {
            stall: Some((Duration::from_secs(4), Duration::from_secs(1))),
            ..Options::default()
        });
        let mut c = Config::new(Target::parse(&server.url("/hello"), None, None).unwrap());
        c.threads = 1;
        c.io = Some(io);
        c.connections = 4;
        c.rate = Some(200.0);
        c.stop = Stop::DurationS(10.0);
        let r = loadgen::run(&c).expect("run");
        let corrected = r.latency.p99_us;
        let uncorrected = r.latency_uncorrected.as_ref().unwrap().p99_us;
        eprintln!("p99 corrected {corrected} us, uncorrected {uncorrected} us");
        // ~200 of ~2000 requests were due during the stall and waited up to 1 s.
        assert!(corrected > 300_000, "corrected p99 {corrected} us");
        assert!(uncorrected < 100_000, "uncorrected p99 {uncorrected} us");
        assert!(r.latency.max_us > 800_000);
        let ol = r.open_loop.unwrap();
        assert!(ol.max_lag_ms > 500.0, "{ol:?}");
        assert!((180.0..=205.0).contains(&ol.achieved_rps), "{ol:?}");
        assert_eq!(r.errors.total(), 0);
    });
}
