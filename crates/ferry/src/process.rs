//! Operations on worker processes as the kernel sees them: signalling a worker's
//! whole process group, noticing its exit, reading its resident memory, and
//! describing how it ended. Nothing here knows about channels or requests.
//!
//! A worker's pid is also its process group's id, and once the worker is reaped the
//! kernel may give that number to a new process (another worker, in a crash storm).
//! So [`GroupLeader`] notices an exit through a pidfd, which does not reap: the
//! group is killed while the dead leader, a zombie, still holds its pid, and only
//! then is it reaped.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;

/// A worker process, leader of its own process group.
pub struct GroupLeader {
    child: Child,
    pid: u32,
    /// Readable once the process has exited; `None` where the kernel has no pidfds
    /// (before Linux 5.3), and then an exit is noticed by reaping it.
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl GroupLeader {
    pub fn new(child: Child, pid: u32) -> Self {
        // Safety: the pidfd is ours alone and lives exactly as long as its AsyncFd.
        let pidfd = pidfd_open(pid).and_then(|fd| {
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
        });
        GroupLeader { child, pid, pidfd }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves once the process has exited, leaving it unreaped where it can.
    pub async fn exited(&mut self) {
        match &self.pidfd {
            Some(fd) => {
                let _ = fd.readable().await;
            }
            None => {
                let _ = self.child.wait().await;
            }
        }
    }

    /// Sends `signal` to the whole group (before the leader is reaped, so the id
    /// still names this group).
    pub fn signal(&self, signal: libc::c_int) {
        signal_group(self.pid, signal);
    }

    /// Kills the whole group, then reaps the leader: its exit status.
    pub async fn kill_and_reap(mut self) -> io::Result<ExitStatus> {
        kill_group(self.pid);
        self.child.wait().await
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // The descriptor is ours alone; the kernel opened it close-on-exec.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Kills a worker's whole process group, so nothing it started outlives it.
pub fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    if pid > 0 {
        // The group id is the worker's pid (it was made a group leader at spawn).
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

/// Raises this process's soft limit on open descriptors to the hard limit, since
/// every client connection is one: returns the limit before and after.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

/// CPU time (user + system) `pid` has used, from `/proc/PID/stat`.
pub fn cpu_of(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| std::time::Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// utime + stime from a `/proc/PID/stat` line. The command name (in parentheses)
/// may hold spaces and parentheses itself: the fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid`, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// How a process ended, for log lines: `exited with status 3`, `killed by signal 9`.
pub struct ExitDescription(pub ExitStatus);

impl fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            _ => write!(f, "ended with {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t    1536 kB\nThreads: 1\n";
        assert_eq!(super::parse_vm_rss(status), Some(1536 * 1024));
        assert_eq!(super::parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(super::parse_cpu_ticks(stat), Some(10));
        assert_eq!(super::parse_cpu_ticks("garbage"), None);
        assert!(super::cpu_of(std::process::id()).is_some());
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        let d = |raw| super::ExitDescription(ExitStatus::from_raw(raw)).to_string();
        assert_eq!(d(3 << 8), "exited with status 3");
        assert_eq!(d(9), "killed by signal 9");
    }
}
