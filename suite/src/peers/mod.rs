//! Peers: real servers run as rows of the same matrix as the models —
//! nginx, Apache (prefork, worker, event MPMs), lighttpd, php-fpm (directly
//! over FastCGI and behind nginx), nginx in front of fpm-server, fcgiwrap.
//!
//! Each run starts the peer fresh from a configuration generated into the
//! run's directory (`results/<run-id>/peers/<peer>/`, see [`config`]), on a
//! free loopback port, with logging off and `--workers` workers where the
//! server has workers; the load generator drives and verifies it exactly
//! as it does a model, and [`crate::runner::measure_on`] measures the
//! peer's process tree with the same accounting as the models'. The files
//! the peers serve (the workload's bodies, `workload.php`, the CGI program)
//! live in one [`Site`] directory per run.
//!
//! A peer whose program is not installed is left out with a one-line
//! reason ([`Peer::missing`]); a scenario it cannot serve is a row marked
//! `n/a` with the reason ([`Peer::serves`]).

pub mod config;
pub mod counterparts;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use loadgen::Protocol;
use nix::sys::signal::Signal;

use crate::procfs::Cost;
use crate::runner::{self, Plan, Ready, Server};
use crate::scenarios::{Load, Scenario};

/// A real server the suite can run beside the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// nginx, one worker process: an event loop (compare epoll, mio).
    Nginx,
    /// Apache httpd with the prefork MPM (compare prefork).
    ApachePrefork,
    /// Apache httpd with the worker MPM: threads block per connection
    /// (compare threadpool).
    ApacheWorker,
    /// Apache httpd with the event MPM: threads plus a listener that
    /// parks idle keep-alive connections (compare epoll).
    ApacheEvent,
    /// lighttpd: one process, one event loop (compare epoll, poll).
    Lighttpd,
    /// php-fpm driven directly over FastCGI (compare fpm-server).
    PhpFpm,
    /// nginx `fastcgi_pass` to php-fpm over keep-alive upstream
    /// connections (compare swoole).
    NginxPhpFpm,
    /// The same nginx in front of this suite's fpm-server.
    NginxFpmServer,
    /// fcgiwrap: CGI over FastCGI, a fork + exec per request (compare fork).
    Fcgiwrap,
}

/// The Debian package that brings each program (for the one-line reasons).
const PACKAGES: &[(&str, &str)] = &[
    ("nginx", "nginx-light"),
    ("apache2", "apache2"),
    ("lighttpd", "lighttpd"),
    ("php-fpm", "php-fpm"),
    ("php", "php-cli"),
    ("fcgiwrap", "fcgiwrap"),
];

impl Peer {
    /// Every peer, in the order of the report.
    pub const ALL: [Peer; 9] = [
        Peer::Nginx,
        Peer::ApachePrefork,
        Peer::ApacheWorker,
        Peer::ApacheEvent,
        Peer::Lighttpd,
        Peer::PhpFpm,
        Peer::NginxPhpFpm,
        Peer::NginxFpmServer,
        Peer::Fcgiwrap,
    ];

    /// The name used on the command line and as the row's model.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Nginx => "nginx",
            Peer::ApachePrefork => "apache-prefork",
            Peer::ApacheWorker => "apache-worker",
            Peer::ApacheEvent => "apache-event",
            Peer::Lighttpd => "lighttpd",
            Peer::PhpFpm => "php-fpm",
            Peer::NginxPhpFpm => "nginx+php-fpm",
            Peer::NginxFpmServer => "nginx+fpm-server",
            Peer::Fcgiwrap => "fcgiwrap",
        }
    }

    /// The peer called `name`.
    pub fn parse(name: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == name)
    }

    /// One line: what runs and how it is set up.
    pub fn describe(self) -> &'static str {
        match self {
            Peer::Nginx => "nginx, 1 worker process (event loop), static files, sendfile",
            Peer::ApachePrefork => "Apache httpd, prefork MPM: N processes block in accept",
            Peer::ApacheWorker => {
                "Apache httpd, worker MPM: 1 process × N threads, a thread per connection"
            }
            Peer::ApacheEvent => {
                "Apache httpd, event MPM: N threads + a listener parking idle connections"
            }
            Peer::Lighttpd => "lighttpd, one process, one event loop",
            Peer::PhpFpm => "php-fpm, pm = static, N children, workload.php over FastCGI",
            Peer::NginxPhpFpm => {
                "nginx (1 worker) fastcgi_pass to php-fpm (N children), keep-alive upstream"
            }
            Peer::NginxFpmServer => {
                "nginx (1 worker) fastcgi_pass to fpm-server (N workers), keep-alive upstream"
            }
            Peer::Fcgiwrap => "fcgiwrap, N processes, fork + exec of a CGI program per request",
        }
    }

    /// What to keep in mind when reading its figures, if anything.
    pub fn caveat(self) -> Option<&'static str> {
        match self {
            Peer::Fcgiwrap => Some(
                "fcgiwrap ignores SIGCHLD, so the kernel discards its CGI processes' CPU times \
                 instead of adding them to its cutime: /proc accounting shows only fcgiwrap's own \
                 (fork, exec, I/O), not the CGI program's; a cgroup counts both",
            ),
            Peer::ApacheEvent => Some(
                "with all of its N threads busy the event MPM closes idle keep-alive \
                 connections (AH00484), which the load generator counts as read errors",
            ),
            _ => None,
        }
    }

    /// The models this peer is the real-world counterpart of.
    pub fn counterparts(self) -> &'static [&'static str] {
        match self {
            Peer::Nginx | Peer::Lighttpd | Peer::ApacheEvent => &["epoll"],
            Peer::ApachePrefork => &["prefork"],
            Peer::ApacheWorker => &["threadpool"],
            Peer::PhpFpm => &["fpm"],
            Peer::NginxPhpFpm | Peer::NginxFpmServer => &["swoole"],
            Peer::Fcgiwrap => &["fork", "cgi"],
        }
    }

    /// The one protocol the load generator speaks to it.
    pub fn protocol(self) -> Protocol {
        match self {
            Peer::PhpFpm | Peer::Fcgiwrap => Protocol::Fcgi,
            _ => Protocol::Http,
        }
    }

    /// A static file server: it has `/hello`, `/file` and fixed `/bytes`,
    /// but nothing that computes or waits.
    pub fn is_static(self) -> bool {
        matches!(
            self,
            Peer::Nginx
                | Peer::ApachePrefork
                | Peer::ApacheWorker
                | Peer::ApacheEvent
                | Peer::Lighttpd
        )
    }

    /// `Err(reason)` when the peer cannot serve `scenario`'s route.
    pub fn serves(self, scenario: Scenario) -> Result<(), &'static str> {
        match scenario {
            Scenario::Cpu if self.is_static() => {
                Err("a static file server has no /cpu (nothing computes)")
            }
            Scenario::Wait if self.is_static() => {
                Err("a static file server has no /wait (nothing waits)")
            }
            _ => Ok(()),
        }
    }

    /// Each worker serves one keep-alive connection until it closes (as
    /// prefork, threadpool and fpm do): an open loop gives it `--workers`
    /// connections, like those models (see `models::Quirks`).
    pub fn pins_connection(self) -> bool {
        matches!(
            self,
            Peer::ApachePrefork | Peer::ApacheWorker | Peer::PhpFpm | Peer::Fcgiwrap
        )
    }

    /// The signal that stops the peer's root process cleanly: nginx and
    /// php-fpm finish gracefully on SIGQUIT; Apache stops on SIGTERM;
    /// lighttpd shuts down gracefully on SIGINT; fcgiwrap and the
    /// two-daemon start scripts (which forward each daemon its own
    /// signal) stop on SIGTERM.
    pub fn stop_signal(self) -> Signal {
        match self {
            Peer::Nginx | Peer::PhpFpm => Signal::SIGQUIT,
            Peer::Lighttpd => Signal::SIGINT,
            _ => Signal::SIGTERM,
        }
    }

    /// The programs it needs (names in [`PACKAGES`] or `*-server` binaries).
    fn programs(self) -> &'static [&'static str] {
        match self {
            Peer::Nginx => &["nginx"],
            Peer::ApachePrefork | Peer::ApacheWorker | Peer::ApacheEvent => &["apache2"],
            Peer::Lighttpd => &["lighttpd"],
            Peer::PhpFpm => &["php-fpm"],
            Peer::NginxPhpFpm => &["nginx", "php-fpm"],
            Peer::NginxFpmServer => &["nginx", "fpm-server"],
            Peer::Fcgiwrap => &["fcgiwrap", "php"],
        }
    }

    /// Why the peer cannot run here (one line), or `None` when it can.
    pub fn missing(self, bin_dir: &Path) -> Option<String> {
        let absent: Vec<&str> = self
            .programs()
            .iter()
            .copied()
            .filter(|p| program(p, bin_dir).is_none())
            .collect();
        if absent.is_empty() {
            return None;
        }
        let packages: Vec<String> = absent
            .iter()
            .filter_map(|p| PACKAGES.iter().find(|(n, _)| n == p))
            .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
            .collect();
        let built: Vec<&str> = absent
            .iter()
            .copied()
            .filter(|p| !PACKAGES.iter().any(|(n, _)| n == p))
            .collect();
        let mut why = Vec::new();
        if !packages.is_empty() {
            why.push(format!(
                "{} not installed (scripts/install-peers.sh installs it)",
                packages.join(", ")
            ));
        }
        if !built.is_empty() {
            why.push(format!(
                "{} not built in {} (cargo build --release --workspace)",
                built.join(", "),
                bin_dir.display()
            ));
        }
        Some(format!("{}: {}", self.name(), why.join("; ")))
    }
}

/// A peer running from its generated configuration.
pub struct Started {
    /// The peer's root process (stopped with the peer's own signal).
    pub server: Server,
    /// Its address and the FastCGI params the load generator adds.
    pub launch: config::Launch,
    /// Its process group, ended and reaped when dropped (after `server`).
    _group: crate::survivors::Group,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("pid", &self.server.pid())
            .field("addr", &self.launch.addr)
            .finish()
    }
}

/// Writes `peer`'s configuration into `dir` and starts it (on a free
/// port; a port taken before the peer bound it gets one retry).
pub fn start(
    peer: Peer,
    site: &Site,
    dir: &Path,
    bin_dir: &Path,
    workers: usize,
) -> anyhow::Result<Started> {
    // Absolute: a daemon resolves a relative config path against its own
    // root (Apache's ServerRoot, php-fpm's prefix), not our directory.
    let dir = &std::path::absolute(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let env = config::Env {
        dir,
        site,
        bin_dir,
        workers,
    };
    let mut failure = None;
    for _ in 0..2 {
        let mut launch = config::generate(peer, &env, config::free_port()?, config::free_port()?)?;
        // The command is spawned once; the rest of the launch is kept.
        let mut cmd = std::mem::replace(&mut launch.command, Command::new("true"));
        // A process group of its own: Apache's master signals its whole
        // group when it stops.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Ok(f) = std::fs::File::create(dir.join("stderr.log")) {
            cmd.stderr(f);
        }
        match Server::spawn(cmd, Ready::Accepts(launch.ready.clone())) {
            Ok(mut server) => {
                let group = crate::survivors::Group::register(server.pid());
                server.stop_signal = peer.stop_signal();
                return Ok(Started {
                    server,
                    launch,
                    _group: group,
                });
            }
            Err(e) => failure = Some(e),
        }
    }
    let why = failure.map_or_else(String::new, |e| e.to_string());
    let said = ["stderr.log", "error.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .next();
    match said {
        Some(line) => anyhow::bail!("{}: {why}: {}", peer.name(), line.trim()),
        None => anyhow::bail!("{}: {why}", peer.name()),
    }
}

/// Starts `peer` from a freshly generated configuration, measures one run
/// of `scenario` with [`runner::measure_on`] (the models' measurement) and
/// stops it.
pub fn measure(
    plan: &Plan,
    peer: Peer,
    scenario: Scenario,
    protocol: Protocol,
    load: &Load,
) -> anyhow::Result<(loadgen::Report, Cost)> {
    let site = plan
        .site
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no site directory for the peers"))?;
    let dir = plan.peer_dir.join(peer.name());
    let mut p = start(peer, site, &dir, &plan.bin_dir, plan.workers)?;
    let t = runner::target(&p.launch.addr, protocol)?;
    let params = p.launch.params.clone();
    runner::measure_on(plan, &mut p.server, t, &params, scenario, load)
}

/// Where program `name` is: `*-server` binaries in `bin_dir`; others on
/// PATH or in the sbin directories (Debian installs the daemons in
/// /usr/sbin, which is not on every user's PATH); `php-fpm` is also found
/// under its versioned name (`php-fpm8.2`).
pub fn program(name: &str, bin_dir: &Path) -> Option<PathBuf> {
    if name.ends_with("-server") {
        let p = bin_dir.join(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    for d in &dirs {
        let p = d.join(name);
        if executable(&p) {
            return Some(p);
        }
        if name == "php-fpm" {
            // Debian: php-fpm8.2 (one per installed PHP version).
            let mut versioned: Vec<PathBuf> = std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix("php-fpm"))
                        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                })
                .filter(|p| executable(p))
                .collect();
            versioned.sort();
            if let Some(p) = versioned.pop() {
                return Some(p);
            }
        }
    }
    None
}

/// Parses `--peers`: names, `all` (every peer) or `none`.
pub fn parse_list(names: &[String]) -> Result<Vec<Peer>, String> {
    let mut out = Vec::new();
    for n in names {
        match n.as_str() {
            "all" => out.extend(Peer::ALL),
            "none" | "" => {}
            _ => match Peer::parse(n) {
                Some(p) => out.push(p),
                None => {
                    return Err(format!(
                        "unknown peer {n} (peers: {}, all, none)",
                        Peer::ALL.map(Peer::name).join(", ")
                    ))
                }
            },
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The files the peers serve, in one directory readable by every user
/// (Apache's children drop root privileges to www-data), made once per
/// run and removed with it:
///
/// * `www/hello` — `Hello, World!`;
/// * `www/_files/{4k,64k,1m}` — the data files of the workload (the
///   `/bytes` pattern), served as `/file?name=F`, and the data dir of
///   php-fpm and fpm-server;
/// * `www/_bytes/N` — fixed `/bytes?n=N` bodies for static servers;
/// * `workload.php` — every route in PHP (php-fpm);
/// * `workload.cgi` — the CGI program fcgiwrap runs.
#[derive(Debug)]
pub struct Site {
    dir: PathBuf,
}

/// `/bytes?n=N` bodies written for the static servers.
pub const STATIC_BYTES: &[usize] = &[0, 1, 13, 26, 100, 1000, 1024, 4096, 16384, 65536];

/// The PHP workload (every route of DESIGN.md), written into the site.
pub const WORKLOAD_PHP: &str = include_str!("../../peers/workload.php");
/// The CGI program fcgiwrap runs.
pub const WORKLOAD_CGI: &str = include_str!("../../peers/workload.cgi");

impl Site {
    /// Writes a new site under the system's temporary directory.
    pub fn create() -> anyhow::Result<Site> {
        let base = std::env::temp_dir();
        let dir = (0..100)
            .map(|i| base.join(format!("iomodels-site-{}-{i}", std::process::id())))
            .find(|d| std::fs::create_dir(d).is_ok())
            .ok_or_else(|| {
                anyhow::anyhow!("cannot create a site directory in {}", base.display())
            })?;
        let site = Site { dir };
        site.fill().map_err(|e| {
            anyhow::anyhow!(
                "cannot write the peers' site in {}: {e}",
                site.dir.display()
            )
        })?;
        Ok(site)
    }

    fn fill(&self) -> std::io::Result<()> {
        use iomodels_workload::routes;
        let open = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        };
        let www = self.www();
        for d in [&self.dir, &www, &www.join("_files"), &www.join("_bytes")] {
            std::fs::create_dir_all(d)?;
            open(d, 0o755)?;
        }
        // nginx's temporary files (its workers run unprivileged).
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        open(&tmp, 0o1777)?;
        std::fs::write(www.join("hello"), routes::HELLO)?;
        let mut body = Vec::new();
        for (name, size) in routes::DATA_FILES {
            body.clear();
            routes::extend_pattern(&mut body, size);
            std::fs::write(www.join("_files").join(name), &body)?;
        }
        for &n in STATIC_BYTES {
            body.clear();
            routes::extend_pattern(&mut body, n);
            std::fs::write(www.join("_bytes").join(n.to_string()), &body)?;
        }
        std::fs::write(self.php(), WORKLOAD_PHP)?;
        std::fs::write(self.cgi(), WORKLOAD_CGI)?;
        open(&self.cgi(), 0o755)?;
        Ok(())
    }

    /// Writes into `dir` what recreates this site by hand: `make-site.sh`
    /// (the bodies, generated with awk) and copies of `workload.php` and
    /// `workload.cgi`, so a run's `start.sh` can be rerun after the site
    /// (a temporary directory) is gone.
    pub fn write_recipe(&self, dir: &Path) -> std::io::Result<()> {
        use iomodels_workload::routes;
        std::fs::create_dir_all(dir)?;
        let files: Vec<String> = routes::DATA_FILES
            .iter()
            .map(|(name, size)| format!("pattern {size} > \"$site/www/_files/{name}\""))
            .collect();
        let bytes: Vec<String> = STATIC_BYTES.iter().map(|n| n.to_string()).collect();
        let script = format!(
            "#!/bin/sh\n\
             # Recreates the files the peers of this run served, as iomodels wrote\n\
             # them: /hello's body, the data files and the fixed /bytes bodies (byte\n\
             # i = 'a' + i % 26), and workload.php / workload.cgi from beside this\n\
             # script. Usage: sh make-site.sh [DIR] (default: where this run had it).\n\
             set -e\nsite=${{1:-{}}}\nhere=$(dirname \"$0\")\n\
             mkdir -p \"$site/www/_files\" \"$site/www/_bytes\" \"$site/tmp\"\n\
             chmod 755 \"$site\" \"$site/www\" \"$site/www/_files\" \"$site/www/_bytes\"\n\
             chmod 1777 \"$site/tmp\"\n\
             pattern() {{ awk -v n=\"$1\" 'BEGIN {{ for (i = 0; i < n; i++) printf \"%c\", 97 + i % 26 }}'; }}\n\
             printf 'Hello, World!' > \"$site/www/hello\"\n\
             {}\n\
             for n in {}; do pattern \"$n\" > \"$site/www/_bytes/$n\"; done\n\
             cp \"$here/workload.php\" \"$here/workload.cgi\" \"$site/\"\n\
             chmod 755 \"$site/workload.cgi\"\n",
            self.dir.display(),
            files.join("\n"),
            bytes.join(" ")
        );
        std::fs::write(dir.join("make-site.sh"), script)?;
        std::fs::write(dir.join("workload.php"), WORKLOAD_PHP)?;
        std::fs::write(dir.join("workload.cgi"), WORKLOAD_CGI)
    }

    /// The site's root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The static servers' document root.
    pub fn www(&self) -> PathBuf {
        self.dir.join("www")
    }

    /// The data dir `/file` reads from.
    pub fn data_dir(&self) -> PathBuf {
        self.www().join("_files")
    }

    /// `workload.php`.
    pub fn php(&self) -> PathBuf {
        self.dir.join("workload.php")
    }

    /// `workload.cgi`.
    pub fn cgi(&self) -> PathBuf {
        self.dir.join("workload.cgi")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lists_parse() {
        for p in Peer::ALL {
            assert_eq!(Peer::parse(p.name()), Some(p));
        }
        assert_eq!(parse_list(&["all".into()]).unwrap().len(), Peer::ALL.len());
        assert_eq!(parse_list(&["none".into()]).unwrap(), vec![]);
        assert_eq!(
            parse_list(&["php-fpm".into(), "nginx".into(), "nginx".into()]).unwrap(),
            vec![Peer::Nginx, Peer::PhpFpm]
        );
        assert!(parse_list(&["tomcat".into()])
            .unwrap_err()
            .contains("unknown peer tomcat"));
    }

    #[test]
    fn static_servers_do_not_compute() {
        assert!(Peer::Nginx.serves(Scenario::Cpu).is_err());
        assert!(Peer::Lighttpd.serves(Scenario::Wait).is_err());
        assert!(Peer::Nginx.serves(Scenario::File).is_ok());
        assert!(Peer::PhpFpm.serves(Scenario::Cpu).is_ok());
        assert_eq!(Peer::PhpFpm.protocol(), Protocol::Fcgi);
        assert!(crate::models::quirks("apache-prefork").pins_connection);
        assert!(!crate::models::quirks("apache-event").pins_connection);
    }

    #[test]
    fn a_missing_program_is_one_line_naming_the_package() {
        let empty = std::path::Path::new("/nonexistent");
        let why = Peer::NginxFpmServer.missing(empty);
        assert!(why.is_some_and(|w| w.contains("fpm-server") && !w.contains('\n')));
    }

    #[test]
    fn the_site_holds_the_workload_bodies() {
        let site = Site::create().unwrap();
        assert_eq!(
            std::fs::read(site.www().join("hello")).unwrap(),
            b"Hello, World!"
        );
        let f = std::fs::read(site.data_dir().join("64k")).unwrap();
        assert_eq!(f.len(), 65536);
        assert!(iomodels_workload::routes::verify("GET", "/file?name=64k", b"", 200, &f).is_ok());
        let dir = site.dir().to_path_buf();
        drop(site);
        assert!(!dir.exists());
    }
}
