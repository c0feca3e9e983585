//! Server processes under test: start, readiness, process trees and counters from
//! /proc, and a teardown that always kills everything that was started.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Process groups started by this process, for the signal handler: on Ctrl-C the
/// servers (which are in their own groups, so the terminal does not signal them)
/// must not outlive the benchmark.
static GROUPS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

fn register_group(pgid: i32) {
    if GROUPS.iter().any(|g| g.load(Ordering::SeqCst) == pgid) {
        return;
    }
    for g in &GROUPS {
        if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister_group(pgid: i32) {
    for g in &GROUPS {
        let _ = g.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    for g in &GROUPS {
        let pgid = g.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) is async-signal-safe.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe; re-raise with the default
    // action so that our exit status says what happened.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Kills every registered server group on SIGINT, SIGTERM or SIGHUP.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                sig,
                on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// A loopback port that nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        // The listener is closed again here; make sure nobody else answers there.
        if TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_millis(200),
        )
        .is_err()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("found no free loopback port"))
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    s.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "no complete response head".to_string())?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {:?}", head.lines().next()))?;
    let mut payload = resp[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        payload = dechunk(&payload);
    }
    Ok((status, payload))
}

fn dechunk(mut src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = src.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&src[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else { break };
        if size == 0 || src.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&src[eol + 2..eol + 2 + size]);
        src = &src[(eol + 4 + size).min(src.len())..];
    }
    out
}

/// A running server: its own process group, every process of which is killed on drop.
pub struct Server {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    stopped: bool,
}

impl Server {
    /// Starts `argv` (under `taskset -c 1` if `pinned`) with output to `log`, and
    /// waits until `GET /` answers 200 (at most `timeout`).
    pub fn start(
        argv: &[OsString],
        envs: &[(&str, &str)],
        pinned: bool,
        port: u16,
        log: &Path,
        timeout: Duration,
    ) -> Result<Server, String> {
        let mut cmd = if pinned {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("1").args(argv);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                // If this benchmark dies without cleaning up, take the server with it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not run {:?}: {e}", argv[0]))?;
        register_group(child.id() as i32);
        let mut server = Server {
            port,
            log: log.to_path_buf(),
            child,
            stopped: false,
        };
        server.wait_ready(timeout)?;
        Ok(server)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the server's leading process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "exited during start-up ({status}); last lines of {}:\n{}",
                    self.log.display(),
                    self.log_tail(8)
                ));
            }
            match http_request(self.port, "GET", "/", b"") {
                Ok((200, _)) => return Ok(()),
                Ok((status, _)) => last = format!("GET / answered {status}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "not ready after {timeout:?} (last attempt: {last}); last lines of {}:\n{}",
            self.log.display(),
            self.log_tail(8)
        ))
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        if tail.is_empty() {
            "  (empty)".into()
        } else {
            tail.iter()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    /// SIGTERM to the server's own process group (so that ferry stops its workers
    /// gracefully), then, after at most 5 s, SIGKILL to every process group of the
    /// tree (ferry's workers have groups of their own) and to any straggler.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let leader = self.pid();
        let pids = tree(leader);
        let mut groups: Vec<i32> = pids
            .iter()
            .filter_map(|&p| stat(p).map(|s| s.pgrp))
            .collect();
        groups.push(leader);
        groups.sort_unstable();
        groups.dedup();
        groups.retain(|&g| g > 1);
        // SAFETY: plain kill(2) on the group this benchmark created.
        unsafe { libc::kill(-leader, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let leader_done = !matches!(self.child.try_wait(), Ok(None));
            if leader_done && pids.iter().all(|&p| !alive(p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for &g in &groups {
            // SAFETY: as above.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        for &p in &pids {
            if alive(p) {
                // SAFETY: as above; a straggler that left its group.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
        unregister_group(leader);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fields of /proc/PID/stat that the benchmark uses.
pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: skip past it.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Thread ids of a process.
pub fn tasks(pid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// Direct children of a process (from /proc/PID/task/*/children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for tid in tasks(pid) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A process and all its descendants, the process first.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        for c in children(out[i]) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// Context switches and CPU time of a set of processes, summed over all their threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub ctx_switches: u64,
    pub cpu_ticks: u64,
    pub threads: usize,
}

pub fn counters(pids: &[i32]) -> Counters {
    let mut c = Counters::default();
    for &pid in pids {
        c.cpu_ticks += stat(pid).map_or(0, |s| s.cpu_ticks);
        for tid in tasks(pid) {
            c.threads += 1;
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
                continue;
            };
            for line in text.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    c.ctx_switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    c
}

/// CPU time, in ns, that every thread of `pids` has run so far, from
/// /proc/PID/task/TID/schedstat (its first field): exact to the nanosecond, where the
/// utime and stime of /proc/PID/stat count whole clock ticks. Summed over the
/// server's whole process tree, it is the benchmark's headline: CPU per request is
/// stable from run to run on a machine whose wall-clock rates swing with steal.
pub fn cpu_ns(pids: &[i32]) -> u64 {
    let mut total = 0;
    for &pid in pids {
        for tid in tasks(pid) {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
            else {
                continue;
            };
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Machine-wide CPU time from the first line of /proc/stat, in clock ticks.
pub struct CpuTimes {
    /// User time of niced processes.
    pub nice: u64,
    /// Time the hypervisor gave our virtual CPUs to someone else.
    pub steal: u64,
    pub total: u64,
}

pub fn cpu_times() -> Option<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
    let f: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some(CpuTimes {
        nice: *f.get(1)?,
        steal: f.get(7).copied().unwrap_or(0),
        // guest and guest_nice are already counted in user and nice.
        total: f.iter().take(8).sum(),
    })
}

/// The CPUs a process may run on (`Cpus_allowed_list`, e.g. "1" or "0-1").
pub fn cpus_allowed(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_string(),
    )
}

/// The tracer of a thread (0: none), from /proc/PID/task/TID/status.
pub fn tracer_of(pid: i32, tid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(dechunk(b"4\r\nping\r\n3\r\n!!!\r\n0\r\n\r\n"), b"ping!!!");
    }

    #[test]
    fn our_own_process_is_visible_in_proc() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert!(alive(me), "state {}", s.state);
        assert!(tasks(me).contains(&me));
        assert!(counters(&[me]).threads >= 1);
    }
}
