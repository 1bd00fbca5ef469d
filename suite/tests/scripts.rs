//! The scripts cannot rot silently: every script parses (`bash -n`), none
//! hard-codes a list of models (they read `iomodels models --names`), every
//! `scripts/NAME.sh` a document cites exists, `iomodels models --names`
//! prints the suite's one list, and scripts/lib.sh's `start_server` and A/B
//! skeleton work against a real server. A few seconds in all.

mod util;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use iomodels_suite::models::KNOWN;

/// A script naming this many models or more holds a list of them.
const LIST: usize = 4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// scripts/*.sh and .ci/run.
fn scripts() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("scripts"))
        .expect("scripts/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    all.push(root().join(".ci/run"));
    all.sort();
    assert!(all.len() > 5, "scripts found: {all:?}");
    all
}

fn name(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_script_parses_and_is_executable() {
    for s in scripts() {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&s)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            name(&s),
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(&s).unwrap().permissions().mode();
        // lib.sh is sourced, not run.
        if !s.ends_with("lib.sh") {
            assert!(mode & 0o111 != 0, "{} is not executable", name(&s));
        }
    }
}

/// The model names in `text` as whole words (`epoll-server` and
/// `epoll_wait` name epoll; `threads` and `selectors` name nothing).
fn models_named(text: &str) -> BTreeSet<&'static str> {
    let words: BTreeSet<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    KNOWN
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| words.contains(m))
        .collect()
}

#[test]
fn no_script_hard_codes_the_model_list() {
    assert_eq!(
        models_named("for m in iterative fork prefork thread; do"),
        BTreeSet::from(["fork", "iterative", "prefork", "thread"])
    );
    assert!(models_named("threads selectors epolls").is_empty());
    // A benchmark of fixed contestants is not the model list: bench-cgi.sh
    // sets CGI (fork, cgi) against persistent workers (prefork, fpm).
    const CONTESTANTS: &[(&str, usize)] = &[("bench-cgi.sh", 4)];
    for s in scripts() {
        let text = std::fs::read_to_string(&s).unwrap();
        let named = models_named(&text);
        let allowed = CONTESTANTS
            .iter()
            .find(|(n, _)| s.ends_with(n))
            .map_or(LIST, |(_, most)| most + 1);
        assert!(
            named.len() < allowed,
            "{} names {} models ({}): read them from `iomodels models --names` \
             (scripts/lib.sh model_names) instead of listing them",
            name(&s),
            named.len(),
            named.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}

/// Every Markdown file of the repository outside target/ and .git/.
fn documents(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let base = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(base.as_str(), "target" | ".git" | "node_modules") {
                documents(&p, out);
            }
        } else if base.ends_with(".md") {
            out.push(p);
        }
    }
}

#[test]
fn every_script_a_document_cites_exists() {
    let mut docs = Vec::new();
    documents(&root(), &mut docs);
    assert!(docs.iter().any(|d| d.ends_with("README.md")));
    let mut cited = 0;
    for d in docs.iter().chain(&scripts()) {
        let text = std::fs::read_to_string(d).unwrap();
        for (i, _) in text.match_indices("scripts/") {
            // Skip longer paths that end in scripts/ (e.g. other/scripts/x).
            if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '_') {
                continue;
            }
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c)))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches('.');
            if !path.ends_with(".sh") {
                continue;
            }
            cited += 1;
            assert!(
                root().join(path).is_file(),
                "{} cites {path}, which does not exist",
                name(d)
            );
        }
    }
    assert!(cited > 10, "only {cited} citations of scripts found");
}

#[test]
fn models_names_prints_the_one_list() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["models", "--names"])
        .output()
        .expect("iomodels");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text.lines().collect();
    let known: Vec<&str> = KNOWN.iter().map(|(m, _)| *m).collect();
    assert_eq!(&names[..known.len()], &known[..], "{text}");
}

/// Runs `body` in bash with scripts/lib.sh sourced (lib_init done), in the
/// repository root, everything on CPU 0; returns (success, stdout, stderr).
fn lib_sh(body: &str) -> (bool, String, String) {
    let script = format!(
        "set -euo pipefail\n. scripts/lib.sh\nlib_init lib-test\nBIN={}\n{body}",
        util::bin_dir().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(root())
        .env("SERVER_CPU", "0")
        .env("GEN_CPU", "0")
        .env("READY_TIMEOUT", "10")
        .env("IOMODELS", env!("CARGO_BIN_EXE_iomodels"))
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_server_waits_for_the_ready_line_and_stops_the_server() {
    if !util::have_binary("epoll-server") {
        return;
    }
    // Up: the address answers at once (no sleep between the ready line and
    // the request); the PID is the server's; at exit it is stopped.
    let (ok, out, err) = lib_sh(
        r#"start_server epoll-server "$BIN/epoll-server"
exec 3<>"/dev/tcp/${SERVER_ADDR%:*}/$SERVER_PORT"
printf 'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
grep -q 'Hello, World!' <&3 && echo answered
echo "pid $SERVER_PID $(cat /proc/$SERVER_PID/comm)"
"#,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("answered"), "{out}");
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(out.contains("epoll-server"), "{out}");
    // The exit trap waited for it: gone, not a zombie of ours.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} still runs"
    );

    // A server that cannot start: one line naming it and its own error.
    let (ok, _, err) = lib_sh(r#"start_server epoll-server "$BIN/epoll-server" --no-such-flag"#);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("lib-test: epoll-server exited before its ready line")
            && err.contains("--no-such-flag"),
        "{err}"
    );
}

#[test]
fn check_model_reads_the_one_list() {
    let (ok, _, err) = lib_sh("check_model no-such-model");
    assert!(!ok);
    assert!(
        err.starts_with("lib-test: unknown model 'no-such-model'; the models are: iterative fork"),
        "{err}"
    );
}

#[test]
fn ab_skeleton_alternates_and_prints_medians_and_ratios() {
    if !util::have_binary("epoll-server") || !util::have_binary("loadgen") {
        return;
    }
    // Two contestants, the same server: the shape of the output, not speed.
    let (ok, out, err) = lib_sh(
        r#"start_server epoll-server "$BIN/epoll-server"
ab_add A "$SERVER_PID" "$BIN/loadgen" -t1 -c2 -d300ms "http://$SERVER_ADDR/hello"
ab_add B "$SERVER_PID" "$BIN/loadgen" -t1 -c2 -d300ms --latency "http://$SERVER_ADDR/hello"
ab_run 2
"#,
    );
    assert!(ok, "{out}{err}");
    let order: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("round "))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(order, ["A", "B", "A", "B"], "{out}");
    for l in out.lines().filter(|l| l.starts_with("round ")) {
        assert!(
            l.contains(" req/s ") && l.contains("us/req") && l.contains("generator"),
            "{l}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("round ") && l.contains(" p50 ")),
        "{out}"
    );
    assert!(out.contains("medians:"), "{out}");
    assert!(
        out.contains("ratio B / A: ") && out.contains("server CPU per request"),
        "{out}"
    );
}
