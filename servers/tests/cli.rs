//! The shared command line as a user meets it: --help, a bad flag, an
//! address in use, a unix socket, the ready line with the real port.

mod util;

use std::process::{Command, Stdio};

use iomodels_workload::Protocol;
use util::{bin_path, Server};

const BINARIES: &[&str] = &[
    "iterative-server",
    "fork-server",
    "cgi-server",
    "prefork-server",
    "thread-server",
    "threadpool-server",
    "nonblocking-server",
    "select-server",
    "poll-server",
    "sigio-server",
    "aio-server",
    "epoll-server",
    "mio-server",
    "oneshot-server",
    "uring-server",
    "fpm-server",
    "swoole-server",
    "tokio-server",
    "monoio-server",
];

#[test]
fn help_names_the_shared_flags() {
    for bin in BINARIES {
        let out = Command::new(bin_path(bin)).arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--listen",
            "--protocol",
            "--workers",
            "--backlog",
            "--data-dir",
            "--max-conns",
            "--header-timeout",
            "--idle-timeout",
        ] {
            assert!(text.contains(flag), "{bin} --help lacks {flag}");
        }
    }
}

#[test]
fn bad_flag_is_one_line_and_exit_2() {
    for bin in BINARIES {
        for args in [
            &["--no-such-flag"][..],
            &["--protocol", "gopher"],
            &["--listen", "nowhere"],
            &["--workers", "0"],
        ] {
            let out = Command::new(bin_path(bin)).args(args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{bin} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{bin} {args:?}: {err}");
            assert!(err.starts_with(&format!("{bin}: error: ")), "{err}");
        }
    }
}

#[test]
fn address_in_use_is_one_line() {
    for bin in BINARIES {
        let Some(first) = Server::start_or_skip(bin, Protocol::Http, &[]) else {
            continue;
        };
        let out = Command::new(bin_path(bin))
            .args(["--listen", &first.addr])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("cannot listen on") && err.contains("in use"),
            "{err}"
        );
    }
}

#[test]
fn unix_socket_listener() {
    for bin in BINARIES {
        for protocol in [Protocol::Http, Protocol::Fcgi] {
            let path = std::env::temp_dir().join(format!(
                "iomodels-test-{bin}-{}-{}.sock",
                protocol.name(),
                std::process::id()
            ));
            let mut child = Command::new(bin_path(bin))
                .args([
                    "--listen",
                    &format!("unix:{}", path.display()),
                    "--protocol",
                    protocol.name(),
                    "--workers",
                    "2",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let Some(addr) = util::wait_ready_line(child.stdout.take().unwrap(), bin) else {
                let out = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(util::UNAVAILABLE), "{bin}: {err}");
                eprintln!("skipped {bin}: {err}");
                continue;
            };
            assert_eq!(addr, format!("unix:{}", path.display()));
            let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let mut c = UnixClient { stream, protocol };
            c.check();
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&path);
        }
    }
}

struct UnixClient {
    stream: std::os::unix::net::UnixStream,
    protocol: Protocol,
}

impl UnixClient {
    fn check(&mut self) {
        use std::io::{Read, Write};
        let mut wire = Vec::new();
        match self.protocol {
            Protocol::Http => {
                iomodels_workload::http::encode_request(&mut wire, "GET", "/hello", "x", &[], b"")
            }
            Protocol::Fcgi => iomodels_workload::fcgi::encode_request(
                &mut wire,
                1,
                false,
                "GET",
                "/hello",
                &[],
                b"",
            ),
        }
        self.stream.write_all(&wire).unwrap();
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        self.stream.read_to_end(&mut out).unwrap();
        assert!(
            out.windows(13).any(|w| w == b"Hello, World!"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
