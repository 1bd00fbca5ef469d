//! The configurations the peers run from, generated into the run's
//! directory (`results/<run-id>/peers/<peer>/`) next to the results, so
//! anyone can read and reproduce exactly what was compared: each peer's
//! own configuration file(s) and a `start.sh` that runs it in the
//! foreground as the suite did (`sh start.sh`; Ctrl-C stops it).
//!
//! Tuned as each server's documentation recommends for a benchmark:
//! keep-alive on with no per-connection request limit (nginx's default of
//! 1,000, lighttpd's of 1,000 and Apache's 100 would make the generator
//! reconnect), access logs off, sendfile where files are served, backlog
//! 1024 like the models' `--backlog`, and `--workers` workers where the
//! server has a worker count (nginx's and lighttpd's one event loop are
//! the counterparts of epoll-server's one thread). Pid files, error logs
//! and the daemons' temporary files stay in the peer's directory (nginx's
//! temporary files in the site, which its unprivileged workers can write).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{program, Peer, Site};

/// What [`generate`] produced: how to start the peer and how to reach it.
#[derive(Debug)]
pub struct Launch {
    /// `sh start.sh` in the peer's directory.
    pub command: Command,
    /// `127.0.0.1:PORT`, where the load generator connects.
    pub addr: String,
    /// Addresses that must accept connections before the peer is ready
    /// (the FastCGI application behind nginx first, then nginx).
    pub ready: Vec<String>,
    /// FastCGI params the load generator adds (`SCRIPT_FILENAME`).
    pub params: Vec<String>,
    /// The files written, relative to the run directory's `peers/`.
    pub files: Vec<PathBuf>,
}

/// Where and with what the configuration is generated.
#[derive(Debug)]
pub struct Env<'a> {
    /// The peer's directory (configs, pid files, error logs).
    pub dir: &'a Path,
    /// The files it serves.
    pub site: &'a Site,
    /// Where `fpm-server` is.
    pub bin_dir: &'a Path,
    /// Workers, for servers that have a worker count.
    pub workers: usize,
}

/// A free TCP port on 127.0.0.1 (bound, read, released: the peer binds it
/// right after; a clash fails the start, which is retried once).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| anyhow::anyhow!("no free port on 127.0.0.1: {e}"))?;
    Ok(l.local_addr()?.port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn need(name: &str, env: &Env) -> anyhow::Result<String> {
    program(name, env.bin_dir)
        .map(|p| p.display().to_string())
        .ok_or_else(|| anyhow::anyhow!("{name} is not installed"))
}

/// Writes the peer's configuration into `env.dir` for port `port` (and
/// `upstream` for the FastCGI application behind nginx) and says how to
/// start it.
pub fn generate(peer: Peer, env: &Env, port: u16, upstream: u16) -> anyhow::Result<Launch> {
    std::fs::create_dir_all(env.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", env.dir.display()))?;
    let d = env.dir.display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let app = format!("127.0.0.1:{upstream}");
    let mut files: Vec<(String, String)> = Vec::new();
    let mut params = Vec::new();
    let mut ready = vec![addr.clone()];
    let script = match peer {
        Peer::Nginx => {
            files.push(("nginx.conf".into(), nginx_conf(peer, env, &addr, None)));
            format!(
                "exec {} -e {d}/error.log -p {d} -c {d}/nginx.conf\n",
                need("nginx", env)?
            )
        }
        Peer::ApachePrefork | Peer::ApacheWorker | Peer::ApacheEvent => {
            files.push(("apache2.conf".into(), apache_conf(peer, env, &addr)));
            format!(
                "exec {} -f {d}/apache2.conf -DFOREGROUND\n",
                need("apache2", env)?
            )
        }
        Peer::Lighttpd => {
            files.push(("lighttpd.conf".into(), lighttpd_conf(env, port)));
            format!("exec {} -D -f {d}/lighttpd.conf\n", need("lighttpd", env)?)
        }
        Peer::PhpFpm => {
            files.push(("php-fpm.conf".into(), php_fpm_conf(env, &addr)));
            params.push(format!("SCRIPT_FILENAME={}", env.site.php().display()));
            format!("exec {}\n", php_fpm_command(env)?)
        }
        Peer::NginxPhpFpm | Peer::NginxFpmServer => {
            files.push((
                "nginx.conf".into(),
                nginx_conf(peer, env, &addr, Some(&app)),
            ));
            let backend = if peer == Peer::NginxPhpFpm {
                files.push(("php-fpm.conf".into(), php_fpm_conf(env, &app)));
                php_fpm_command(env)?
            } else {
                format!(
                    "{} --listen {app} --protocol fcgi --pm static --workers {} --data-dir {}",
                    need("fpm-server", env)?,
                    env.workers,
                    env.site.data_dir().display()
                )
            };
            ready.insert(0, app.clone());
            // Two daemons: this shell is their parent (so the suite
            // measures both as one process tree) and gives each its own
            // graceful stop signal.
            format!(
                "{backend} >/dev/null &\napp=$!\n\
                 {} -e {d}/error.log -p {d} -c {d}/nginx.conf &\nweb=$!\n\
                 trap 'kill -QUIT $web $app 2>/dev/null; wait' TERM INT\nwait\n",
                need("nginx", env)?
            )
        }
        Peer::Fcgiwrap => {
            // fcgiwrap hands the FastCGI params to the CGI program as its
            // whole environment: the settings php-fpm gets from env[...].
            params.push(format!("SCRIPT_FILENAME={}", env.site.cgi().display()));
            params.push(format!(
                "IOMODELS_DATA_DIR={}",
                env.site.data_dir().display()
            ));
            params.push(format!("IOMODELS_WORKERS={}", env.workers));
            need("php", env)?;
            format!(
                "exec {} -c {} -s tcp:{addr}\n",
                need("fcgiwrap", env)?,
                env.workers
            )
        }
    };
    if let Some(parent) = env.dir.parent() {
        env.site
            .write_recipe(parent)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", parent.display()))?;
    }
    let start = format!(
        "#!/bin/sh\n# {} — {}.\n# Generated by iomodels for one run; `sh start.sh` runs it again in the\n\
         # foreground ({addr}); Ctrl-C or SIGTERM stops it. Served files: {} (the\n\
         # run removed them; `sh ../make-site.sh` makes them again).\n{script}",
        peer.name(),
        peer.describe(),
        env.site.dir().display()
    );
    files.push(("start.sh".into(), start));
    let mut written = Vec::new();
    for (name, text) in &files {
        let path = env.dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        written.push(PathBuf::from(peer.name()).join(name));
    }
    let mut command = Command::new("sh");
    command.arg(env.dir.join("start.sh"));
    Ok(Launch {
        command,
        addr,
        ready,
        params,
        files: written,
    })
}

fn php_fpm_command(env: &Env) -> anyhow::Result<String> {
    // -R: as root, php-fpm refuses to run a pool as root without it.
    Ok(format!(
        "{} --nodaemonize{} --fpm-config {}/php-fpm.conf",
        need("php-fpm", env)?,
        if is_root() {
            " --allow-to-run-as-root"
        } else {
            ""
        },
        env.dir.display()
    ))
}

/// nginx: one worker; static files with sendfile, or `fastcgi_pass` to
/// `app` over keep-alive upstream connections.
fn nginx_conf(peer: Peer, env: &Env, addr: &str, app: Option<&str>) -> String {
    let d = env.dir.display();
    let www = env.site.www();
    let www = www.display();
    let tmp = env.site.dir().join("tmp").join(peer.name());
    let tmp = tmp.display();
    let mut s = format!(
        "# {} — generated by iomodels. 1 worker process (epoll-server's one thread).\n\
         worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         # Room for the idle sweep's 10,000 connections (nginx allocates every\n\
         # connection slot up front: more would only inflate its RSS).\n\
         worker_rlimit_nofile 30000;\n\
         events {{ worker_connections 12000; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         \x20 keepalive_timeout 60s;\n\
         \x20 keepalive_requests 1000000000;  # nginx's default of 1000 would make clients reconnect\n\
         \x20 open_file_cache max=64;\n\
         \x20 default_type text/plain;\n  types {{ }}\n\
         \x20 client_body_temp_path {tmp}-body;\n  proxy_temp_path {tmp}-proxy;\n\
         \x20 fastcgi_temp_path {tmp}-fastcgi;\n  uwsgi_temp_path {tmp}-uwsgi;\n  scgi_temp_path {tmp}-scgi;\n",
        peer.name()
    );
    if let Some(app) = app {
        // As many idle upstream connections kept as the application has
        // workers: a FastCGI worker stays bound to its connection while
        // nginx keeps it, so keeping more would starve new ones.
        let _ = write!(
            s,
            "  upstream app {{ server {app}; keepalive {}; }}\n\
             \x20 server {{\n    listen {addr} backlog=1024;\n\
             \x20   location / {{\n\
             \x20     fastcgi_pass app;\n      fastcgi_keep_conn on;\n\
             \x20     fastcgi_buffers 64 16k;  # /file?name=1m in memory\n\
             \x20     fastcgi_param SCRIPT_FILENAME {};\n\
             \x20     fastcgi_param REQUEST_METHOD $request_method;\n\
             \x20     fastcgi_param REQUEST_URI $request_uri;\n\
             \x20     fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
             \x20     fastcgi_param QUERY_STRING $query_string;\n\
             \x20     fastcgi_param CONTENT_TYPE $content_type;\n\
             \x20     fastcgi_param CONTENT_LENGTH $content_length;\n\
             \x20     fastcgi_param SERVER_PROTOCOL $server_protocol;\n\
             \x20     fastcgi_param GATEWAY_INTERFACE CGI/1.1;\n\
             \x20     fastcgi_param REMOTE_ADDR $remote_addr;\n\
             \x20     fastcgi_param HTTP_HOST $host;\n\
             \x20   }}\n  }}\n}}\n",
            env.workers,
            env.site.php().display()
        );
    } else {
        let _ = write!(
            s,
            "  server {{\n    listen {addr} backlog=1024;\n    root {www};\n\
             \x20   location = /hello {{ }}\n\
             \x20   # /file?name=F and /bytes?n=N: the files the suite wrote.\n\
             \x20   location = /file {{\n\
             \x20     if ($arg_name !~ \"^[A-Za-z0-9_-][A-Za-z0-9._-]*$\") {{ return 400; }}\n\
             \x20     rewrite ^ /_files/$arg_name? last;\n    }}\n\
             \x20   location = /bytes {{\n\
             \x20     if ($arg_n !~ \"^[0-9]+$\") {{ return 400; }}\n\
             \x20     rewrite ^ /_bytes/$arg_n? last;\n    }}\n\
             \x20   location /_files/ {{ internal; }}\n\
             \x20   location /_bytes/ {{ internal; }}\n\
             \x20   location / {{ return 404; }}\n  }}\n}}\n"
        );
    }
    s
}

/// Apache httpd with one MPM, only the modules it needs.
fn apache_conf(peer: Peer, env: &Env, addr: &str) -> String {
    let d = env.dir.display();
    let n = env.workers;
    let modules = "/usr/lib/apache2/modules";
    let (mpm, tuning) = match peer {
        Peer::ApachePrefork => (
            "prefork",
            format!(
                "StartServers {n}\nMinSpareServers 1\nMaxSpareServers {n}\nServerLimit {n}\n\
                 MaxRequestWorkers {n}\nMaxConnectionsPerChild 0\n"
            ),
        ),
        _ => (
            if peer == Peer::ApacheWorker {
                "worker"
            } else {
                "event"
            },
            format!(
                "# One process of N threads (MaxSpareThreads >= MinSpareThreads +\n\
                 # ThreadsPerChild, or Apache would keep replacing the process).\n\
                 ServerLimit 1\nStartServers 1\nThreadLimit {n}\nThreadsPerChild {n}\n\
                 MaxRequestWorkers {n}\nMinSpareThreads 1\nMaxSpareThreads {}\n\
                 MaxConnectionsPerChild 0\n",
                n + 1
            ),
        ),
    };
    let user = if is_root() {
        // Apache will not serve as root: its children drop to www-data.
        let u = if std::fs::read_to_string("/etc/passwd")
            .is_ok_and(|p| p.lines().any(|l| l.starts_with("www-data:")))
        {
            "www-data"
        } else {
            "nobody"
        };
        format!("User {u}\nGroup {u}\n")
    } else {
        String::new()
    };
    format!(
        "# {} — generated by iomodels. MPM {mpm}, {n} workers.\n\
         ServerRoot {d}\nServerName 127.0.0.1\nListen {addr}\nListenBacklog 1024\n\
         PidFile {d}/apache2.pid\nDefaultRuntimeDir {d}\nErrorLog {d}/error.log\nLogLevel warn\n\
         LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\n\
         LoadModule mime_module {modules}/mod_mime.so\n\
         LoadModule rewrite_module {modules}/mod_rewrite.so\n\
         {user}{tuning}\
         # No access log (no CustomLog); keep-alive without a request limit.\n\
         KeepAlive On\nMaxKeepAliveRequests 0\nKeepAliveTimeout 60\nTimeout 60\n\
         EnableSendfile On\nEnableMMAP On\nHostnameLookups Off\n\
         TypesConfig /dev/null\nDocumentRoot {www}\n\
         <Directory />\n  AllowOverride None\n  Options None\n  Require all granted\n  ForceType text/plain\n</Directory>\n\
         # /file?name=F and /bytes?n=N: the files the suite wrote.\n\
         RewriteEngine On\n\
         RewriteCond %{{QUERY_STRING}} (?:^|&)name=([A-Za-z0-9_-][A-Za-z0-9._-]*)(?:&|$)\n\
         RewriteRule ^/file$ /_files/%1? [L]\n\
         RewriteCond %{{QUERY_STRING}} (?:^|&)n=([0-9]+)(?:&|$)\n\
         RewriteRule ^/bytes$ /_bytes/%1? [L]\n",
        peer.name(),
        www = env.site.www().display()
    )
}

/// lighttpd: one process, one event loop (it has no worker count).
fn lighttpd_conf(env: &Env, port: u16) -> String {
    let d = env.dir.display();
    format!(
        "# lighttpd — generated by iomodels. One process, one event loop.\n\
         server.document-root = \"{www}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
         server.pid-file = \"{d}/lighttpd.pid\"\nserver.errorlog = \"{d}/error.log\"\n\
         # No mod_accesslog: no access log.\nserver.modules = (\"mod_rewrite\")\n\
         server.listen-backlog = 1024\nserver.max-fds = 40000\nserver.max-connections = 30000\n\
         server.max-keep-alive-requests = 65535\nserver.max-keep-alive-idle = 60\n\
         server.graceful-shutdown-timeout = 2\nserver.network-backend = \"sendfile\"\n\
         mimetype.assign = (\"\" => \"text/plain\")\n\
         # /file?name=F and /bytes?n=N: the files the suite wrote.\n\
         url.rewrite-once = (\n\
         \x20 \"^/file\\?(?:.*&)?name=([A-Za-z0-9_-][A-Za-z0-9._-]*)(?:&|$)\" => \"/_files/$1\",\n\
         \x20 \"^/bytes\\?(?:.*&)?n=([0-9]+)(?:&|$)\" => \"/_bytes/$1\"\n)\n",
        www = env.site.www().display()
    )
}

/// php-fpm: one static pool of `workers` children running workload.php.
fn php_fpm_conf(env: &Env, listen: &str) -> String {
    let d = env.dir.display();
    let root = if is_root() {
        "user = root\ngroup = root\n"
    } else {
        ""
    };
    format!(
        "; php-fpm — generated by iomodels. pm = static, {n} children.\n\
         [global]\npid = {d}/php-fpm.pid\nerror_log = {d}/error.log\nlog_level = warning\n\
         daemonize = no\nprocess_control_timeout = 2\n\
         [iomodels]\n{root}listen = {listen}\nlisten.backlog = 1024\n\
         pm = static\npm.max_children = {n}\npm.max_requests = 0\n\
         ; No access.log: no access log.\n\
         catch_workers_output = no\nclear_env = yes\n\
         env[IOMODELS_DATA_DIR] = {data}\nenv[IOMODELS_WORKERS] = {n}\n",
        n = env.workers,
        data = env.site.data_dir().display()
    )
}
