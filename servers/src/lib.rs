//! # iomodels-servers
//!
//! One binary per I/O model in `src/bin/`, each serving the iomodels
//! workload (see the `iomodels-workload` crate) over HTTP/1.1 or FastCGI.
//! This library is the small runtime they share, so that a model's file
//! holds only its model:
//!
//! * [`cli`] — the command line every server takes (`--listen`,
//!   `--protocol`, `--workers`, …) and the `main` wrapper that turns errors
//!   into one line on stderr.
//! * [`net`] — listening sockets (TCP or unix), accepting, small socket
//!   helpers.
//! * [`startup`] — what every model does first (signals, data dir, counters,
//!   listener).
//! * [`signals`] — SIGTERM/SIGINT as a flag and a self-pipe.
//! * [`stats`] — counters shared by every process and thread of a server.
//! * [`host`] — the workload's `Host`: response headers, the data dir,
//!   `/status`.
//! * [`ipc`] — frames over the unix socket pairs between a front end and
//!   its worker processes (swoole-server).
//! * [`blocking`] — the serve loop of the blocking models.
//! * [`event`] — what every event-driven model shares: the non-blocking
//!   read/write pump, the connection slab, deadlines, graceful stop.
//! * [`scoreboard`] — a process manager's shared-memory table of its
//!   workers and pool counters (fpm-server).
//! * [`timers`] — deadlines for the event-driven models.
//! * [`supervisor`] — a master's forked children: fork, forward the stop,
//!   reap, respawn with back-off (prefork, fpm, swoole's manager).
//! * [`reload`] — listening sockets inherited across a re-exec (fpm's
//!   SIGUSR2).
//! * [`tasks`] — the graceful stop of the task-per-connection models
//!   (tokio-server, monoio-server): a stop signal per task, and the wait
//!   for the last one.
//! * [`ring`] — io_uring for uring-server: set-up and probing, the requests
//!   in flight, the provided-buffer ring; every io_uring `unsafe` block.

pub mod blocking;
pub mod cli;
pub mod event;
pub mod host;
pub mod ipc;
pub mod net;
pub mod reload;
pub mod ring;
pub mod scoreboard;
pub mod signals;
pub mod startup;
pub mod stats;
pub mod supervisor;
pub mod tasks;
pub mod timers;
