//! The server models: the ones this suite knows how to describe, and the
//! `*-server` binaries actually present beside the `iomodels` executable
//! (found at run time, so a model added later runs without a change here).

use std::path::{Path, PathBuf};

/// A model the suite can describe: binary name without `-server`, and one line.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "iterative",
        "one connection at a time, blocking (UNP ch.30 design 0)",
    ),
    ("fork", "a new process per request, CGI style (UNP 1)"),
    (
        "cgi",
        "fork + execve of a CGI/1.1 program per request (RFC 3875)",
    ),
    (
        "prefork",
        "master binds, N workers block in accept (php-fpm pm=static)",
    ),
    ("thread", "a thread per connection (UNP 6)"),
    (
        "threadpool",
        "acceptor + bounded queue + N blocking worker threads (UNP 8)",
    ),
    (
        "nonblocking",
        "one thread, O_NONBLOCK sweeps, no readiness API",
    ),
    (
        "select",
        "one thread, select(2); refuses fds >= FD_SETSIZE (1024)",
    ),
    ("poll", "one thread, poll(2)"),
    ("epoll", "one thread, epoll(7) (nginx worker)"),
    ("sigio", "one thread, O_ASYNC + F_SETSIG real-time signals"),
    (
        "aio",
        "one thread, POSIX AIO (glibc's thread pool underneath), signalfd",
    ),
    ("uring", "one thread, io_uring completions"),
    ("mio", "acceptor + N mio event loops (memcached)"),
    ("oneshot", "N threads share one poller with oneshot re-arm"),
    (
        "tokio",
        "a task per connection on tokio (work-stealing or current-thread)",
    ),
    (
        "monoio",
        "a task per connection on monoio: thread-per-core io_uring",
    ),
    ("fpm", "php-fpm-like process manager"),
    (
        "swoole",
        "reactor threads + worker processes (Swoole); --mode base: a reactor per worker",
    ),
];

/// The one-line description of `model`, or a neutral one for a model added
/// after this list was written.
pub fn describe(model: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|(m, _)| *m == model)
        .map_or("(a model this suite has no description for)", |(_, d)| d)
}

/// Where the workspace's binaries are: the directory of the running executable.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The models whose `<model>-server` binary exists in `dir`: known models
/// first in [`KNOWN`]'s order, then unknown ones alphabetically.
pub fn discover(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix("-server").map(str::to_string)
                })
                .filter(|m| !m.is_empty() && !m.contains('.'))
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|m| {
        (
            KNOWN.iter().position(|(k, _)| k == m).unwrap_or(usize::MAX),
            m.clone(),
        )
    });
    found.dedup();
    found
}

/// Every model name: [`KNOWN`]'s, then those of `found` it does not list
/// (`iomodels models --names`, the one list the scripts read).
pub fn names(found: &[String]) -> Vec<&str> {
    let mut all: Vec<&str> = KNOWN.iter().map(|(m, _)| *m).collect();
    all.extend(
        found
            .iter()
            .map(String::as_str)
            .filter(|f| !KNOWN.iter().any(|(k, _)| k == f)),
    );
    all
}

/// How a model has to be driven for its results to mean something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// Serves one connection at a time: more connections would only queue.
    pub one_connection: bool,
    /// Closes after every request: only new-connection mode makes sense.
    pub closes_each_request: bool,
    /// Starts a process for every request (fork-server, cgi-server): its
    /// rate is far below the others' by design.
    pub process_per_request: bool,
    /// Refuses fds >= FD_SETSIZE, so it cannot hold 10,000 idle connections.
    pub fd_setsize: bool,
    /// Each worker serves one keep-alive connection until it closes: more
    /// connections than workers wait unserved (an open loop uses `--workers`).
    pub pins_connection: bool,
}

/// The quirks of `model` (none for models not named here).
pub fn quirks(model: &str) -> Quirks {
    Quirks {
        one_connection: model == "iterative",
        closes_each_request: model == "fork",
        process_per_request: matches!(model, "fork" | "cgi"),
        fd_setsize: model == "select",
        pins_connection: matches!(model, "prefork" | "threadpool" | "fpm")
            || crate::peers::Peer::parse(model).is_some_and(|p| p.pins_connection()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_server_binaries_in_known_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "zeta-server",
            "epoll-server",
            "prefork-server",
            "loadgen",
            "x.d",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(discover(dir.path()), ["prefork", "epoll", "zeta"]);
        assert!(describe("epoll").contains("epoll"));
        assert!(describe("zeta").contains("no description"));
    }

    /// The one list of models (`KNOWN`) and every place that lists them
    /// agree: a binary in servers/Cargo.toml, a row in the model index and
    /// in the README's server table, and a line in the conformance suite.
    #[test]
    fn every_list_of_models_agrees_with_known() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let (cargo, index, readme, conformance) = (
            read("servers/Cargo.toml"),
            read("docs/models/README.md"),
            read("README.md"),
            read("servers/tests/util/models.rs"),
        );
        for (model, _) in KNOWN {
            let bin = format!("{model}-server");
            assert!(
                cargo.contains(&format!("name = \"{bin}\"")),
                "{bin} in servers/Cargo.toml"
            );
            assert!(
                index.contains(&format!("| {model} |")),
                "{model} in docs/models/README.md"
            );
            assert!(readme.contains(&format!("`{bin}`")), "{bin} in README.md");
            assert!(
                conformance.contains(&format!("\"{bin}\"")),
                "{bin} in servers/tests/util/models.rs (the conformance and abuse list)"
            );
        }
    }
}
