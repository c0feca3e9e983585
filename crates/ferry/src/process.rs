//! Operations on worker processes as the kernel sees them: signalling a worker's
//! whole process group, reading its resident memory, and describing how it ended.
//! Nothing here knows about channels or requests.

use std::fmt;
use std::process::ExitStatus;

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
    fn exits_are_described_by_code_or_signal() {
        let d = |raw| super::ExitDescription(ExitStatus::from_raw(raw)).to_string();
        assert_eq!(d(3 << 8), "exited with status 3");
        assert_eq!(d(9), "killed by signal 9");
    }
}
