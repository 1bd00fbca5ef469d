//! cgi-server against CGI programs that misbehave and clients that try to
//! set meta-variables, over both protocols: bad output is a 502 and the
//! server goes on, a program that hangs is killed and answered 504, and no
//! request header (or FastCGI param) sets `PATH_INFO` or `HTTP_PROXY`.
//! Then php-cgi on the PHP workload, where Debian's php-cgi is installed
//! (under CI=true it must be: scripts/install-peers.sh installs it).

mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use iomodels_workload::{fcgi, Protocol};
use util::{Response, Server};

/// One shell program, its behaviour chosen by the request path.
const PROGRAM: &str = r#"#!/bin/sh
case "$PATH_INFO" in
/env) printf 'Content-Type: text/plain\r\nX-Program: env\r\n\r\n'; env | sort ;;
/nohead) echo 'Hello, without a head' ;;
/fail) printf 'Content-Type: text/plain\r\n\r\npartial'; exit 3 ;;
/empty) exit 0 ;;
/split) printf 'Content-Type: text/plain\r\nX-Evil: a\r\n\r\nb' | tr 'a' '\n' ;;
/redirect) printf 'Location: http://example.org/\r\n\r\n' ;;
/hang) sleep 60 ;;
/echo) printf 'Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n'; cat ;;
*) printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found' ;;
esac
"#;

/// Writes the program into a fresh directory; returns its path.
fn program() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("iomodels-cgi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("program.sh");
    std::fs::write(&path, PROGRAM).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Sends raw request bytes on a new connection and reads one response.
fn exchange(s: &Server, wire: &[u8]) -> Response {
    let mut c = s.connect();
    c.send(wire).unwrap();
    c.read_response(false).unwrap()
}

fn get(s: &Server, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut wire = Vec::new();
    match s.protocol {
        Protocol::Http => {
            wire.extend_from_slice(
                format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n").as_bytes(),
            );
            for (n, v) in headers {
                wire.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
        }
        Protocol::Fcgi => {
            fcgi::encode_request(&mut wire, 1, true, "GET", target, headers, b"");
        }
    }
    exchange(s, &wire)
}

/// The program's environment, one `NAME=value` per line.
fn env_lines(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8_lossy(&r.body)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bad_programs_get_502_and_504_and_the_server_goes_on() {
    let path = program();
    let path = path.to_str().unwrap();
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let s = Server::start(
            "cgi-server",
            protocol,
            &["--program", path, "--cgi-timeout", "1"],
        );
        for (target, status) in [
            ("/nohead", 502),
            ("/fail", 502),
            ("/empty", 502),
            ("/split", 502),
            ("/redirect", 302),
            ("/other", 404),
        ] {
            let r = get(&s, target, &[]);
            assert_eq!(r.status, status, "{protocol:?} {target}: {r:?}");
        }
        // A program that hangs: killed (its whole process group) at the
        // time limit, within a few seconds however busy the machine is.
        let start = Instant::now();
        let r = get(&s, "/hang", &[]);
        assert_eq!(r.status, 504, "{protocol:?}: {r:?}");
        assert!(start.elapsed() < Duration::from_secs(15));
        // The body reaches the program's stdin; the server still serves.
        let mut c = s.connect();
        let wire = c.encode("POST", "/echo", b"to the program");
        c.send(&wire).unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, &r.body[..]), (201, &b"to the program"[..]));
        assert_eq!(s.status()["model"], "cgi");
    }
}

#[test]
fn headers_and_params_cannot_set_meta_variables() {
    let path = program();
    let path = path.to_str().unwrap();
    let s = Server::start("cgi-server", Protocol::Http, &["--program", path]);
    let r = get(
        &s,
        "/env?q=1",
        &[
            ("Proxy", "http://evil.example:1"),
            ("PATH_INFO", "/evil-underscore"),
            ("Path-Info", "/evil-dash"),
            ("X_Real_Ip", "6.6.6.6"),
            ("X-Real-Ip", "1.2.3.4"),
            ("Content-Length", "0"),
        ],
    );
    let env = env_lines(&r);
    let has = |line: &str| env.iter().any(|l| l == line);
    assert!(has("PATH_INFO=/env"), "{env:?}");
    assert!(has("QUERY_STRING=q=1"), "{env:?}");
    assert!(has("HTTP_PATH_INFO=/evil-dash"), "{env:?}");
    assert!(has("HTTP_X_REAL_IP=1.2.3.4"), "{env:?}");
    assert!(has("GATEWAY_INTERFACE=CGI/1.1"), "{env:?}");
    assert!(!env.iter().any(|l| l.starts_with("HTTP_PROXY=")), "{env:?}");
    assert!(!env
        .iter()
        .any(|l| l.contains("evil-underscore") || l.contains("6.6.6.6")));
    // CVE-2019-11043's shape: a %0a in the path never reaches a program.
    let r = get(&s, "/env%0a.php", &[]);
    assert_eq!(r.status, 400);

    // A FastCGI front end's PATH_INFO, SCRIPT_NAME and HTTP_PROXY are not
    // taken either: PATH_INFO comes from the request's own target.
    let s = Server::start("cgi-server", Protocol::Fcgi, &["--program", path]);
    let r = get(
        &s,
        "/env",
        &[
            ("PATH_INFO", "/evil"),
            ("HTTP_PROXY", "http://evil.example:1"),
            ("HTTP_X_OK", "yes"),
        ],
    );
    let env = env_lines(&r);
    assert!(env.iter().any(|l| l == "PATH_INFO=/env"), "{env:?}");
    assert!(env.iter().any(|l| l == "HTTP_X_OK=yes"), "{env:?}");
    assert!(!env.iter().any(|l| l.contains("evil")), "{env:?}");
}

/// php-cgi running the PHP workload: every route verified.
#[test]
fn php_cgi_serves_the_php_workload() {
    let Some(php) = ["/usr/bin/php-cgi", "/usr/local/bin/php-cgi"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "php-cgi is missing under CI (scripts/install-peers.sh installs it)"
        );
        eprintln!("skipped: php-cgi is not installed");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../suite/peers/workload.php");
    for protocol in [Protocol::Http, Protocol::Fcgi] {
        let s = Server::start(
            "cgi-server",
            protocol,
            &["--program", php, "--script", script],
        );
        let mut c = s.connect();
        for (method, target, body) in [
            ("GET", "/hello", &b""[..]),
            ("GET", "/cpu?n=1000", b""),
            ("GET", "/bytes?n=100000", b""),
            ("GET", "/file?name=64k", b""),
            ("GET", "/wait?us=1000", b""),
            ("POST", "/echo", b"php echo"),
            ("GET", "/nothing", b""),
        ] {
            c.request(method, target, body);
        }
    }
}
