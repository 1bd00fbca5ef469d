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
    ("cgi-server", &[]),
    ("prefork-server", &["--workers", "2"]),
    ("thread-server", &[]),
    ("threadpool-server", &["--workers", "2"]),
    ("nonblocking-server", &[]),
    ("select-server", &[]),
    ("poll-server", &[]),
    ("sigio-server", &[]),
    ("aio-server", &[]),
    ("epoll-server", &[]),
    ("mio-server", &[]),
    ("oneshot-server", &[]),
    ("uring-server", &[]),
    ("fpm-server", &["--pm", "static", "--max-children", "2"]),
    ("swoole-server", &["--reactors", "2", "--workers", "2"]),
    ("tokio-server", &[]),
    ("monoio-server", &["--workers", "2"]),
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
        let Some(s) = Server::start_or_skip(bin, Protocol::Http, flags) else {
            continue;
        };
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
        let Some(s) = Server::start_or_skip(bin, Protocol::Fcgi, flags) else {
            continue;
        };
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

/// FastCGI servers nginx sits in front of, as php-fpm and Swoole usually do.
const FASTCGI_UPSTREAMS: &[(&str, &[&str])] = &[
    ("fpm-server", &["--pm", "static", "--max-children", "2"]),
    ("swoole-server", &["--reactors", "2", "--workers", "2"]),
];

/// nginx with `fastcgi_pass` to the server, `fastcgi_keep_conn on` and an
/// upstream `keepalive 8`: /hello through it, several times on the same
/// upstream connections.
#[test]
fn nginx_fastcgi_pass_agrees() {
    // Debian puts nginx in /usr/sbin, which a user's PATH may lack.
    let nginx = if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else if have("nginx") {
        "nginx"
    } else {
        return;
    };
    for (bin, flags) in FASTCGI_UPSTREAMS {
        let s = Server::start(bin, Protocol::Fcgi, flags);
        let dir = std::env::temp_dir().join(format!("iomodels-nginx-{}-{bin}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  fastcgi_temp_path {d}/fastcgi;\n\
               proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream app {{ server {addr}; keepalive 8; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 fastcgi_param REQUEST_METHOD $request_method;\n\
                 fastcgi_param REQUEST_URI $request_uri;\n\
                 fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
                 fastcgi_param QUERY_STRING $query_string;\n\
                 fastcgi_keep_conn on;\n      fastcgi_pass app;\n    }}\n  }}\n}}\n",
            addr = s.addr
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(nginx)
            .args([
                "-p",
                &dir.to_string_lossy(),
                "-e",
                &format!("{d}/error.log"),
                "-c",
            ])
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("nginx");
        // Wait for nginx to listen.
        let addr = format!("127.0.0.1:{port}");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < end,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut c = util::Client::connect(&addr, Protocol::Http);
        for _ in 0..5 {
            let r = c.request("GET", "/hello", b"");
            assert_eq!(r.status, 200, "{bin} behind nginx");
        }
        let r = c.request("GET", "/cpu?n=1000", b"");
        assert_eq!(r.body, b"3b8da2fb439b1d77");
        // fastcgi_keep_conn + keepalive: nginx reused its upstream connection.
        let r = c.request("GET", "/status", b"");
        let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(status["accepted"].as_u64().unwrap() <= 2, "{bin}: {status}");
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
