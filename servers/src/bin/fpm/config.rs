//! fpm-server's settings: the process manager of a pool, one pool's
//! settings from the flags, and the pools file (`--config`,
//! docs/models/fpm.md) with php-fpm's consistency rules.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;
use iomodels_servers::cli;
use iomodels_servers::net::ListenAddr;
use iomodels_workload::Protocol;

use crate::Args;

/// The process manager of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pm {
    /// A fixed number of workers (--max-children).
    Static,
    /// Between --min-spare and --max-spare idle workers, at most --max-children.
    Dynamic,
    /// No worker until a connection waits; idle ones leave after --process-idle-timeout.
    Ondemand,
}

impl Pm {
    pub fn name(self) -> &'static str {
        match self {
            Pm::Static => "static",
            Pm::Dynamic => "dynamic",
            Pm::Ondemand => "ondemand",
        }
    }
}

/// One pool's settings.
#[derive(Debug, Clone)]
pub struct PoolConf {
    pub name: String,
    pub listen: ListenAddr,
    pub protocol: Protocol,
    pub pm: Pm,
    pub max_children: u32,
    pub start_servers: u32,
    pub min_spare: u32,
    pub max_spare: u32,
    pub process_idle_timeout: Duration,
    pub max_requests: u64,
    pub request_terminate_timeout: Option<Duration>,
    pub slowlog_timeout: Option<Duration>,
}

impl PoolConf {
    /// Pool "www" from the command line.
    pub fn from_args(args: &Args) -> anyhow::Result<PoolConf> {
        let max_children = args.max_children.unwrap_or(args.common.workers());
        let explicit_spare = args.max_spare.is_some();
        let max_spare = args.max_spare.unwrap_or(3).min(max_children);
        let min_spare = if explicit_spare || args.min_spare <= max_spare {
            args.min_spare
        } else {
            max_spare
        };
        let conf = PoolConf {
            name: "www".into(),
            listen: args.common.listen.clone(),
            protocol: args.common.protocol(),
            pm: args.pm,
            max_children,
            start_servers: args
                .start_servers
                .unwrap_or(min_spare + max_spare.saturating_sub(min_spare) / 2),
            min_spare,
            max_spare,
            process_idle_timeout: args.process_idle_timeout,
            max_requests: args.max_requests,
            request_terminate_timeout: args.request_terminate_timeout,
            slowlog_timeout: args.slowlog_timeout,
        };
        conf.check()?;
        Ok(conf)
    }

    /// php-fpm's consistency rules.
    pub fn check(&self) -> anyhow::Result<()> {
        let n = &self.name;
        if self.pm == Pm::Dynamic {
            if self.min_spare > self.max_spare {
                bail!(
                    "pool {n}: min-spare ({}) is above max-spare ({})",
                    self.min_spare,
                    self.max_spare
                );
            }
            if self.max_spare > self.max_children {
                bail!(
                    "pool {n}: max-spare ({}) is above max-children ({})",
                    self.max_spare,
                    self.max_children
                );
            }
            if self.start_servers < self.min_spare || self.start_servers > self.max_spare {
                bail!(
                    "pool {n}: start-servers ({}) must be from min-spare ({}) to max-spare ({})",
                    self.start_servers,
                    self.min_spare,
                    self.max_spare
                );
            }
        }
        if self.max_children == 0 {
            bail!("pool {n}: max-children must be at least 1");
        }
        Ok(())
    }

    /// Workers the manager starts with.
    pub fn initial(&self) -> u32 {
        match self.pm {
            Pm::Static => self.max_children,
            Pm::Dynamic => self.start_servers,
            Pm::Ondemand => 0,
        }
    }
}

/// Reads a pools file: `[name]` starts a pool, `key = value` sets one of
/// its settings (php-fpm's names or the flags' names), `;` and `#` start
/// comments. Settings not given come from the command line.
pub fn parse_config(text: &str, path: &Path, args: &Args) -> anyhow::Result<Vec<PoolConf>> {
    let base = PoolConf::from_args(args)?;
    let mut pools: Vec<(PoolConf, bool, bool)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = raw.split([';', '#']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            if name.is_empty() || pools.iter().any(|(p, _, _)| p.name == name) {
                bail!("{}: empty or repeated pool name [{name}]", at());
            }
            let mut conf = base.clone();
            conf.name = name.to_string();
            pools.push((conf, false, false));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}: expected `key = value` or `[pool]`", at());
        };
        let (key, value) = (key.trim(), value.trim());
        let Some((pool, has_listen, has_start)) = pools.last_mut() else {
            bail!("{}: `{key}` before any [pool] section", at());
        };
        let num = |v: &str| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("{}: {key}: '{v}' is not a number", at()))
        };
        let secs = |v: &str| -> anyhow::Result<Duration> {
            cli::parse_seconds(v.trim_end_matches('s'))
                .map_err(|e| anyhow::anyhow!("{}: {key}: {e}", at()))
        };
        match key.trim_start_matches("pm.").replace('-', "_").as_str() {
            "listen" => {
                pool.listen =
                    ListenAddr::parse(value).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                *has_listen = true;
            }
            "protocol" => {
                pool.protocol = match value {
                    "http" => Protocol::Http,
                    "fcgi" => Protocol::Fcgi,
                    _ => bail!("{}: protocol must be http or fcgi", at()),
                }
            }
            "pm" => {
                pool.pm = Pm::from_str(value, true).map_err(|_| {
                    anyhow::anyhow!("{}: pm must be static, dynamic or ondemand", at())
                })?
            }
            "max_children" => pool.max_children = num(value)? as u32,
            "start_servers" => {
                pool.start_servers = num(value)? as u32;
                *has_start = true;
            }
            "min_spare_servers" | "min_spare" => pool.min_spare = num(value)? as u32,
            "max_spare_servers" | "max_spare" => pool.max_spare = num(value)? as u32,
            "process_idle_timeout" => pool.process_idle_timeout = secs(value)?,
            "max_requests" => pool.max_requests = num(value)?,
            "request_terminate_timeout" => pool.request_terminate_timeout = Some(secs(value)?),
            "request_slowlog_timeout" | "slowlog_timeout" => {
                pool.slowlog_timeout = Some(secs(value)?)
            }
            _ => bail!("{}: unknown setting `{key}`", at()),
        }
    }
    if pools.is_empty() {
        bail!("{}: no [pool] section", path.display());
    }
    let mut out = Vec::new();
    for (mut pool, has_listen, has_start) in pools {
        if !has_listen {
            bail!("{}: pool {} has no `listen`", path.display(), pool.name);
        }
        if !has_start {
            pool.start_servers = pool.min_spare + pool.max_spare.saturating_sub(pool.min_spare) / 2;
        }
        pool.check()?;
        out.push(pool);
    }
    Ok(out)
}

/// The pools to run: those of `--config FILE`, or pool "www" from the flags.
pub fn pools(args: &Args) -> anyhow::Result<Vec<PoolConf>> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            parse_config(&text, path, args)
        }
        None => Ok(vec![PoolConf::from_args(args)?]),
    }
}
