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
    /// The address for the ready line (with the real port when port 0 was asked).
    pub shown: String,
}

impl Startup {
    /// Sets up model `model` with `workers` workers from the common flags.
    pub fn begin(
        model: &'static str,
        common: &Common,
        workers: u32,
        opts: ListenOptions,
    ) -> anyhow::Result<Startup> {
        signals::install()?;
        let data = DataDir::prepare(common.data_dir.as_deref())?;
        let shared = Shared::new(model, common, &data, workers)?;
        let (listener, shown) = net::listen(&common.listen, common.backlog, opts)?;
        Ok(Startup {
            data,
            shared,
            listener,
            shown,
        })
    }
}
