//! Independent clients agree: curl (HTTP) and cgi-fcgi from libfcgi-bin
//! (FastCGI) get the right bodies from every server. Without the tools the
//! test fails under CI (CI=true; `.ci/run` installs them) and is skipped
//! with a message elsewhere.

mod util;

use std::process::Command;

use iomodels_workload::Protocol;
use util::Server;

const SERVERS: &[(&str, &[&str])] = &[
    ("iterative-server", &[]),
    ("fork-server", &[]),
    ("prefork-server", &["--workers", "2"]),
    ("thread-server", &[]),
    ("threadpool-server", &["--workers", "2"]),
    ("nonblocking-server", &[]),
    ("select-server", &[]),
    ("poll-server", &[]),
    ("sigio-server", &[]),
    ("epoll-server", &[]),
    ("mio-server", &[]),
    ("oneshot-server", &[]),
    ("fpm-server", &["--pm", "static", "--max-children", "2"]),
];

const TARGETS: &[&str] = &[
    "/hello",
    "/cpu?n=1000",
    "/wait?us=1000",
    "/bytes?n=5000",
    "/file?name=64k",
    "/status",
];

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing under CI: .ci/run must install it"
        );
        eprintln!("skipped: {tool} is not installed (scripts/install-peers.sh installs it)");
    }
    found
}

#[test]
fn curl_agrees() {
    if !have("curl") {
        return;
    }
    for (bin, flags) in SERVERS {
        let s = Server::start(bin, Protocol::Http, flags);
        for target in TARGETS {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "-",
                    "-w",
                    "\n%{http_code}",
                    &format!("http://{}{target}", s.addr),
                ])
                .output()
                .expect("curl");
            let text = out.stdout;
            let split = text.iter().rposition(|&b| b == b'\n').expect("status line");
            let status: u16 = std::str::from_utf8(&text[split + 1..])
                .unwrap()
                .parse()
                .unwrap();
            iomodels_workload::verify("GET", target, b"", status, &text[..split])
                .unwrap_or_else(|e| panic!("{bin} {target} via curl: {e}"));
        }
        let out = Command::new("curl")
            .args([
                "-sS",
                "--data-binary",
                "posted by curl",
                &format!("http://{}/echo", s.addr),
            ])
            .output()
            .expect("curl");
        assert_eq!(out.stdout, b"posted by curl");
    }
}

#[test]
fn cgi_fcgi_agrees() {
    if !have("cgi-fcgi") {
        return;
    }
    for (bin, flags) in SERVERS {
        let s = Server::start(bin, Protocol::Fcgi, flags);
        for target in TARGETS {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let out = Command::new("cgi-fcgi")
                .args(["-bind", "-connect", &s.addr])
                .env_clear()
                .env("REQUEST_METHOD", "GET")
                .env("SCRIPT_NAME", path)
                .env("QUERY_STRING", query)
                .output()
                .expect("cgi-fcgi");
            let text = out.stdout;
            let head_end = text
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("CGI head")
                + 4;
            let head = String::from_utf8_lossy(&text[..head_end]);
            let status: u16 = head
                .lines()
                .find_map(|l| l.strip_prefix("Status: "))
                .and_then(|s| s[..3].parse().ok())
                .unwrap();
            iomodels_workload::verify("GET", target, b"", status, &text[head_end..])
                .unwrap_or_else(|e| panic!("{bin} {target} via cgi-fcgi: {e}"));
        }
    }
}
