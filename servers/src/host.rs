//! The workload's [`Host`] as every model uses it: who answers (the
//! `Server` and `X-Worker` headers), the data dir `/file` reads from, and
//! `/status` from the shared [`Stats`].

use std::path::{Path, PathBuf};

use iomodels_workload::routes::{self, Status};
use iomodels_workload::{FileRead, Host, Protocol, Timeouts};

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
        let headers = format!(
            "Server: iomodels-{}\r\nX-Worker: {worker}\r\n",
            shared.model
        )
        .into_bytes();
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
}

impl Host for ServerHost {
    fn response_headers(&self) -> &[u8] {
        &self.headers
    }

    fn timeouts(&self) -> Timeouts {
        self.shared.timeouts
    }

    fn max_conns(&self) -> u64 {
        self.shared.max_conns
    }

    fn read_file(&mut self, name: &str) -> FileRead {
        FileRead::Done(std::fs::read(self.shared.data_dir.join(name)))
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
            uptime_s: self.shared.stats.started().elapsed().as_secs_f64(),
            protocol: self.shared.protocol.name().to_string(),
        }
    }

    fn on_request(&mut self) {
        self.shared.stats.request();
    }
}
