//! A delaying TCP relay: where the kernel has no `sch_netem`, this is what
//! puts a round-trip time between the load generator and the server.
//!
//! `iomodels relay --listen 127.0.0.1:0 --to 10.213.0.1:8080 --delay 500us`
//! runs in the generator's network namespace. Every accepted connection
//! gets its own connection to the server; each chunk read in either
//! direction is written on `delay` (half the RTT, plus up to `jitter`)
//! after it was read, never before an earlier chunk of the same direction
//! (a TCP stream does not reorder). One thread reads and one thread writes
//! each direction.
//!
//! What it does not reproduce, unlike netem on the link: packet loss and
//! retransmission, reordering, the congestion window growing over the
//! first round trips (the relay's own hops are on loopback and a veth with
//! no delay, so they open at once), delayed ACKs and Nagle meeting a real
//! RTT (the relay re-chunks the stream: what arrives in one read leaves in
//! one write), and bandwidth-delay effects on large bodies. A connect costs
//! one round trip (the relay accepts at once and connects to the server
//! after half an RTT; its SYN-ACK is not delayed the same way as netem's).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Serves forever: prints `listening on ADDR`, then relays every
/// connection to `to` with `delay` (+ up to `jitter`) each way.
pub fn serve(listen: &str, to: &str, delay: Duration, jitter: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("relay: cannot listen on {listen}: {e}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let to = to.to_string();
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let s = seed;
        std::thread::spawn(move || {
            // The SYN's half of the round trip.
            std::thread::sleep(delay);
            let Ok(server) = TcpStream::connect(&to) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || pipe(client, server, delay, jitter, s));
            pipe(s2, c2, delay, jitter, s ^ 0xA5A5);
            let _ = up.join();
        });
    }
    Ok(())
}

/// Copies `from` to `to`, each chunk `delay` (+ jitter) after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, jitter: Duration, seed: u64) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        let mut last = Instant::now();
        let mut state = seed;
        for (read_at, chunk) in rx {
            let extra = if jitter.is_zero() {
                Duration::ZERO
            } else {
                state = splitmix(state);
                jitter.mul_f64((state >> 11) as f64 / (1u64 << 53) as f64)
            };
            // Never before an earlier chunk: a stream keeps its order.
            let due = (read_at + delay + extra).max(last);
            last = due;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
