//! Processes that outlive their server: a daemon whose parent was killed
//! (nginx behind a start script, php-fpm's children) is re-parented and
//! would keep running after the suite. [`Server::stop`] notes the tree
//! before stopping it and kills what is left of it afterwards.
//!
//! [`Server::stop`]: crate::runner::Server::stop

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// A process of a tree: its pid and start time (`/proc/PID/stat` field
/// 22), so a pid reused by an unrelated process is never signalled.
pub type Member = (u32, u64);

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is index 22 - 3 after the command name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(m: &Member) -> bool {
    // A zombie has exited: it only waits for its parent to reap it.
    let state = std::fs::read_to_string(format!("/proc/{}/stat", m.0))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(str::to_string)
        });
    state.is_some_and(|s| s != "Z") && start_time(m.0) == Some(m.1)
}

fn zombie_or_alive(m: &Member) -> bool {
    start_time(m.0) == Some(m.1)
}

/// Every process of the tree rooted at `root` with its start time, root first.
pub fn tree(root: u32) -> Vec<Member> {
    crate::procfs::tree(root)
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect()
}

/// Makes this process the "child subreaper" of its descendants
/// (`PR_SET_CHILD_SUBREAPER`): an orphaned daemon is re-parented here
/// rather than to init, so [`kill`] can reap it instead of leaving a
/// zombie on a machine whose init does not reap. Also makes SIGINT,
/// SIGTERM and SIGHUP stop every [`Group`] still running before this
/// process exits (peers run in process groups of their own, which a
/// Ctrl-C on the terminal does not reach).
pub fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer
    // argument and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let action = signal::SigAction::new(
        signal::SigHandler::Handler(on_exit_signal),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls kill(2) and _exit(2), both
        // async-signal-safe, and reads atomics.
        let _ = unsafe { signal::sigaction(sig, &action) };
    }
}

/// Process groups of the peers running now (0: a free slot).
static GROUPS: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];

extern "C" fn on_exit_signal(sig: libc::c_int) {
    for g in &GROUPS {
        let pg = g.load(Ordering::SeqCst);
        if pg > 0 {
            // SAFETY: kill(2) is async-signal-safe; a negative pid names
            // the process group.
            unsafe { libc::kill(-pg, libc::SIGTERM) };
        }
    }
    // SAFETY: _exit(2) is async-signal-safe and ends the process.
    unsafe { libc::_exit(128 + sig) };
}

/// A process group (a peer started with `process_group(0)`: Apache's
/// master signals its whole group when it stops, which must not include
/// the suite) that an exit signal stops; unregistered when dropped.
#[derive(Debug)]
pub struct Group(Option<usize>);

impl Group {
    /// Registers the group led by `pid`.
    pub fn register(pid: u32) -> Group {
        let slot = GROUPS.iter().position(|g| {
            g.compare_exchange(0, pid as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Group(slot)
    }
}

impl Group {
    /// Ends whatever is left of the group once its leader has stopped (a
    /// CGI process forked after [`tree`] was read, a worker its master
    /// did not wait for): SIGTERM, a second, SIGKILL; and reaps the ones
    /// re-parented to this process. Returns whether anything was left.
    pub fn end(pg: i32) -> bool {
        use nix::errno::Errno;
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let group = Pid::from_raw(-pg);
        let reap = || loop {
            match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        };
        // Signal 0 to a group succeeds while any member (even a zombie) exists.
        let exists = || reap_then(&reap, || signal::kill(group, None) != Err(Errno::ESRCH));
        if !exists() {
            return false;
        }
        let _ = signal::kill(group, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end && exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = signal::kill(group, Signal::SIGKILL);
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end && exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

fn reap_then(reap: &dyn Fn(), f: impl Fn() -> bool) -> bool {
    reap();
    f()
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            let pg = GROUPS[i].load(Ordering::SeqCst);
            Group::end(pg);
            GROUPS[i].store(0, Ordering::SeqCst);
        }
    }
}

fn reap(m: &Member) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    // Only our own children can be reaped; for others this fails (ECHILD).
    let _ = waitpid(Pid::from_raw(m.0 as i32), Some(WaitPidFlag::WNOHANG));
}

/// SIGTERM to every member still alive, a second to go, then SIGKILL;
/// the ones re-parented to this process (see [`adopt_orphans`]) are
/// reaped. Returns how many had to be signalled.
pub fn kill(members: &[Member]) -> usize {
    let left: Vec<&Member> = members.iter().filter(|m| alive(m)).collect();
    for m in &left {
        let _ = signal::kill(Pid::from_raw(m.0 as i32), Signal::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end && left.iter().any(|m| alive(m)) {
        left.iter().for_each(|m| reap(m));
        std::thread::sleep(Duration::from_millis(10));
    }
    for m in left.iter().filter(|m| alive(m)) {
        let _ = signal::kill(Pid::from_raw(m.0 as i32), Signal::SIGKILL);
    }
    let end = Instant::now() + Duration::from_millis(200);
    loop {
        left.iter().for_each(|m| reap(m));
        if Instant::now() > end || left.iter().all(|m| !zombie_or_alive(m)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    left.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphaned_grandchild_is_killed() {
        // sh starts a sleeping grandchild and is killed: the grandchild
        // survives its parent until `kill` ends it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut members = tree(child.id());
        while members.len() < 2 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            members = tree(child.id());
        }
        assert_eq!(members.len(), 2, "sh and sleep");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(alive(&members[1]), "the grandchild outlived sh");
        assert_eq!(kill(&members[1..]), 1);
        assert!(!alive(&members[1]));
        assert_eq!(kill(&members[1..]), 0);
    }
}
