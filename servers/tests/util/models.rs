//! The one list of server models the conformance and abuse suites run,
//! with the flags they start each with.

/// A model as the suites start it.
pub struct Model {
    pub bin: &'static str,
    pub flags: &'static [&'static str],
    /// Serves many requests per connection (all but the CGI-style fork-server).
    pub keep_alive: bool,
    /// Serves several connections at once (all but iterative-server, whose
    /// lesson is that it does not: there a slow client delays everyone).
    pub concurrent: bool,
}

const fn model(bin: &'static str, flags: &'static [&'static str]) -> Model {
    Model {
        bin,
        flags,
        keep_alive: true,
        concurrent: true,
    }
}

/// Every server model with the flags the suite starts it with. Blocking
/// models get 4 workers: the slow-client case pins one of them.
pub const SERVERS: &[Model] = &[
    Model {
        bin: "iterative-server",
        flags: &[],
        keep_alive: true,
        concurrent: false,
    },
    Model {
        bin: "fork-server",
        flags: &[],
        keep_alive: false,
        concurrent: true,
    },
    model("prefork-server", &["--workers", "4"]),
    model("prefork-server", &["--workers", "4", "--accept", "flock"]),
    // Not `--accept reuseport`: there a connection waits for the worker
    // its socket belongs to even when others are idle, so a pinned worker
    // delays some of the cases' clients (tests/accept.rs shows that).
    model(
        "prefork-server",
        &["--workers", "4", "--accept", "exclusive"],
    ),
    model("prefork-server", &["--workers", "4", "--accept", "epoll"]),
    model("thread-server", &[]),
    model("threadpool-server", &["--workers", "4", "--queue", "256"]),
    model("nonblocking-server", &[]),
    model("select-server", &[]),
    model("poll-server", &[]),
    model("sigio-server", &[]),
    model("epoll-server", &[]),
    model("epoll-server", &["--edge"]),
    model("mio-server", &["--workers", "2"]),
    model("oneshot-server", &["--workers", "3"]),
    model("uring-server", &[]),
    // The fallbacks: one-shot accept and recv, and a buffer ring so small
    // that it runs dry (ENOBUFS) whenever several connections receive; two
    // rings, each with its own table of direct descriptors.
    model(
        "uring-server",
        &["--single-shot", "--buffers", "4", "--workers", "2"],
    ),
    // Real descriptors instead of the ring's fixed file table.
    model("uring-server", &["--no-direct"]),
    model(
        "uring-server",
        &["--no-direct", "--single-shot", "--workers", "2"],
    ),
    model("tokio-server", &["--workers", "2"]),
    model("tokio-server", &["--flavor", "current-thread"]),
    model("monoio-server", &["--workers", "2"]),
    model("fpm-server", &["--pm", "static", "--max-children", "4"]),
    model("swoole-server", &["--reactors", "2", "--workers", "2"]),
    // Swoole's own reactor <-> worker channel: datagram pairs, chunked.
    model(
        "swoole-server",
        &["--reactors", "2", "--workers", "2", "--ipc", "dgram"],
    ),
    // SWOOLE_BASE: each worker accepts and runs its own reactor; 4 of
    // them, since a slow client's blocked handler holds its worker's loop.
    model("swoole-server", &["--mode", "base", "--workers", "4"]),
    // A thread per connection; each request forks and executes hello-cgi.
    model("cgi-server", &[]),
    // One thread and glibc's POSIX AIO thread pool underneath.
    model("aio-server", &[]),
];

/// Whether `bin` is chosen: `IOMODELS_ONLY=uring-server,epoll-server` runs
/// the cases for those binaries only (for working on one model; CI runs
/// them all).
pub fn chosen(bin: &str) -> bool {
    let only = std::env::var("IOMODELS_ONLY").ok();
    only.as_deref()
        .is_none_or(|o| o.split(',').any(|b| b == bin))
}
