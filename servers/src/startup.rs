//! What every model does before its own code: take SIGTERM/SIGINT, prepare
//! the data dir, map the shared counters, and bind the listening socket.

use std::os::fd::OwnedFd;

use crate::cli::Common;
use crate::host::{DataDir, Shared};
use crate::net::{self, ListenOptions};
use crate::signals;

/// A server that is set up but not yet serving (it prints its ready line
/// when it is).
#[derive(Debug)]
pub struct Startup {
    /// The data dir; a generated one is removed when this is dropped, so
    /// `main` keeps it alive until the end.
    pub data: DataDir,
    /// What every worker shares.
    pub shared: Shared,
    /// The listening socket.
    pub listener: OwnedFd,
    /// More sockets bound to the same address with SO_REUSEPORT, one per
    /// worker after the first, when [`ListenOptions::per_worker`] asked for
    /// them (empty otherwise).
    pub more: Vec<OwnedFd>,
    /// The address for the ready line (with the real port when port 0 was asked).
    pub shown: String,
    /// The workers the model runs: `--workers`, or the number of CPUs for
    /// models that have workers (the one place that default is decided).
    pub workers: u32,
}

/// How many workers a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// `--workers N`, by default the number of CPUs.
    FromFlag,
    /// A fixed number the model decides (one loop, one thread, a pool
    /// sized by its own flags).
    Fixed(u32),
}

impl Startup {
    /// Sets up model `model` from the common flags: installs the stop
    /// signals, prepares the data dir, maps the shared counters and binds
    /// the listener (or one SO_REUSEPORT listener per worker).
    pub fn begin(
        model: &'static str,
        common: &Common,
        workers: Workers,
        opts: ListenOptions,
    ) -> anyhow::Result<Startup> {
        let workers = match workers {
            Workers::FromFlag => common.workers(),
            Workers::Fixed(n) => n,
        };
        signals::install()?;
        let data = DataDir::prepare(common.data_dir.as_deref())?;
        let shared = Shared::new(model, common, &data, workers)?;
        let count = if opts.per_worker { workers.max(1) } else { 1 };
        let (mut listeners, shown) = net::listen_many(&common.listen, common.backlog, opts, count)?;
        let listener = listeners.remove(0);
        Ok(Startup {
            data,
            shared,
            listener,
            more: listeners,
            shown,
            workers,
        })
    }
}
