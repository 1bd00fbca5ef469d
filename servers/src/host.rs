//! The workload's [`Host`] as every model uses it: who answers (the
//! `Server` and `X-Worker` headers), the data dir `/file` reads from, and
//! `/status` from the shared [`Stats`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use iomodels_workload::routes::{self, Status};
use iomodels_workload::{identity_headers, Conn, FileRequest, Host, Protocol, Timeouts};

use crate::cli::Common;
use crate::stats::Stats;

/// The directory `/file` reads from. A generated one is removed when the
/// value that made it is dropped (in the process that made it).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    generated: bool,
}

impl DataDir {
    /// `dir` as given, or a fresh temporary directory holding the generated
    /// files `4k`, `64k` and `1m` (the `/bytes` pattern).
    pub fn prepare(dir: Option<&Path>) -> anyhow::Result<DataDir> {
        use anyhow::Context;
        if let Some(dir) = dir {
            anyhow::ensure!(
                dir.is_dir(),
                "--data-dir {} is not a directory",
                dir.display()
            );
            return Ok(DataDir {
                path: dir.to_path_buf(),
                generated: false,
            });
        }
        let path = std::env::temp_dir().join(format!("iomodels-data-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        for (name, size) in routes::DATA_FILES {
            let mut content = Vec::with_capacity(size);
            routes::extend_pattern(&mut content, size);
            std::fs::write(path.join(name), content)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(DataDir {
            path,
            generated: true,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.generated {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What every worker of a server shares: built once in `main`.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Model name (`epoll`, `prefork`, …).
    pub model: &'static str,
    /// Protocol served.
    pub protocol: Protocol,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Where `/file` reads.
    pub data_dir: PathBuf,
    /// Counters.
    pub stats: Stats,
    /// Workers the model runs.
    pub workers: u32,
    /// `--max-conns`.
    pub max_conns: u64,
}

impl Shared {
    /// From the common flags.
    pub fn new(
        model: &'static str,
        common: &Common,
        data_dir: &DataDir,
        workers: u32,
    ) -> anyhow::Result<Shared> {
        Ok(Shared {
            model,
            protocol: common.protocol(),
            timeouts: common.timeouts(),
            data_dir: data_dir.path().to_path_buf(),
            stats: Stats::shared()?,
            workers,
            max_conns: common.max_conns(),
        })
    }

    /// The `Server` value.
    pub fn server_name(&self) -> String {
        format!("iomodels-{}", self.model)
    }

    /// A new connection's protocol state, with this server's timeouts.
    pub fn new_conn(&self, now: std::time::Instant) -> Conn {
        Conn::new(self.protocol, self.timeouts, now)
    }

    /// Where file `name` of the data dir is (the workload already checked
    /// that it is a plain file name, never a path).
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// The one `--max-conns` rule: this process takes one more connection if
    /// it holds fewer than `--max-conns` (a per-process limit, so for
    /// multi-process models it applies to each process). The place is
    /// freed when the returned [`Admitted`] is dropped, with the connection.
    /// `None`: refuse it with [`Shared::refuse`].
    pub fn admit(&self) -> Option<Admitted> {
        let held = HELD.fetch_add(1, Ordering::AcqRel);
        if held >= self.max_conns {
            HELD.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(()))
    }

    /// Refuses a connection over `--max-conns`: counts it, writes the
    /// workload's refusal (HTTP 503, FastCGI END_REQUEST(OVERLOADED)) and
    /// shuts the socket down.
    pub fn refuse(&self, fd: OwnedFd) {
        self.stats.refused();
        let headers = identity_headers(self.model, &std::process::id().to_string());
        let refusal = iomodels_workload::refusal(self.protocol, &headers);
        let _ = nix::unistd::write(&fd, &refusal);
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    }
}

/// Does what a `/file` request of `conn` asked for (`request`, from
/// `Conn::take_file_request`), synchronously (the models whose lesson is
/// not asynchronous disk I/O): opens the file of `data_dir` into `file`
/// (the connection's open file), or reads the next piece of it.
pub fn serve_file(
    data_dir: &Path,
    request: FileRequest,
    conn: &mut Conn,
    file: &mut Option<std::fs::File>,
    host: &mut dyn Host,
    now: std::time::Instant,
) {
    use std::os::unix::fs::FileExt;
    match request {
        FileRequest::Open(name) => {
            let opened = std::fs::File::open(data_dir.join(&*name)).and_then(|f| {
                let size = f.metadata()?.len();
                *file = Some(f);
                Ok(size)
            });
            conn.file_opened(opened, now, host);
        }
        FileRequest::Read { offset, len } => {
            let mut buf = vec![0u8; len];
            let read = match file.as_ref() {
                Some(f) => f.read_at(&mut buf, offset).map(|n| &buf[..n]),
                None => Err(std::io::ErrorKind::NotFound.into()),
            };
            conn.file_read(read, now, host);
        }
    }
}

/// Connections this process holds, against `--max-conns`.
static HELD: AtomicU64 = AtomicU64::new(0);

/// A connection's place under `--max-conns` (see [`Shared::admit`]).
#[derive(Debug)]
pub struct Admitted(());

impl Drop for Admitted {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One worker's host (a process or a thread): `worker` is its `X-Worker`
/// value, `<pid>` or `<pid>.<thread index>`.
#[derive(Debug, Clone)]
pub struct ServerHost {
    shared: Shared,
    worker: String,
    headers: Vec<u8>,
}

impl ServerHost {
    /// The host of the calling process (X-Worker: pid).
    pub fn for_process(shared: &Shared) -> ServerHost {
        Self::with_worker(shared, std::process::id().to_string())
    }

    /// The host of thread `index` of this process (X-Worker: pid.index).
    pub fn for_thread(shared: &Shared, index: usize) -> ServerHost {
        Self::with_worker(shared, format!("{}.{index}", std::process::id()))
    }

    fn with_worker(shared: &Shared, worker: String) -> ServerHost {
        let headers = identity_headers(shared.model, &worker);
        ServerHost {
            shared: shared.clone(),
            worker,
            headers,
        }
    }

    /// What every worker shares.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats
    }

    /// The timeouts connections apply.
    pub fn timeouts(&self) -> Timeouts {
        self.shared.timeouts
    }

    /// Serves what a `/file` request of `conn` needs now ([`serve_file`]).
    pub fn serve_file(
        &mut self,
        conn: &mut Conn,
        file: &mut Option<std::fs::File>,
        now: std::time::Instant,
    ) -> bool {
        let Some(request) = conn.take_file_request() else {
            return false;
        };
        let dir = self.shared.data_dir.clone();
        serve_file(&dir, request, conn, file, self, now);
        true
    }
}

impl Host for ServerHost {
    fn response_headers(&self) -> &[u8] {
        &self.headers
    }

    fn max_conns(&self) -> u64 {
        self.shared.max_conns
    }

    fn status(&mut self) -> Status {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.shared.stats.counters();
        Status {
            model: self.shared.model.to_string(),
            pid: std::process::id(),
            worker: self.worker.clone(),
            workers: self.shared.workers,
            // This request is counted once it is answered; count it now.
            requests: c.requests.load(Relaxed) + 1,
            accepted: c.accepted.load(Relaxed),
            connections: c.open.load(Relaxed),
            refused: c.refused.load(Relaxed),
            write_timeouts: c.write_timeouts.load(Relaxed),
            enters: crate::ring::enters(),
            uptime_s: self.shared.stats.started().elapsed().as_secs_f64(),
            protocol: self.shared.protocol.name().to_string(),
        }
    }

    fn on_request(&mut self) {
        self.shared.stats.request();
    }

    fn on_write_timeout(&mut self) {
        self.shared.stats.write_timeout();
    }
}
