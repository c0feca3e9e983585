//! Counting socket syscalls in `strace -f -yy` output.
//!
//! Lines look like (with `-f`, each starts with the thread id):
//!
//! ```text
//! 1001  sendto(3<UNIX-STREAM:[50100->50101]>, "x", 1, 0, NULL, 0) = 1
//! 1001  read(7<TCP:[127.0.0.1:8080->127.0.0.1:33140]>, 0x7f.., 8192) = -1 EAGAIN (Resource temporarily unavailable)
//! 1002  write(9<UNIX-STREAM:[50102->50103]>, "..."..., 58 <unfinished ...>
//! 1002  <... write resumed>) = 58
//! ```

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Master,
    Worker,
    Other,
}

/// What the file descriptor is, from its `-yy` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fd {
    /// `<UNIX-STREAM:...>` or `<UNIX:...>`: for ferry, a worker channel.
    Unix,
    /// `<TCP:...>`, `<TCPv6:...>`: client connections.
    Tcp,
    /// Anything else (eventfd, pipes, ...).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every call, whatever its result.
    pub calls: u64,
    /// Calls that failed with EAGAIN (nothing to read / no room to write).
    pub eagain: u64,
    /// Calls that moved data (result > 0).
    pub ok: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub by: HashMap<(Side, Fd, Dir), Tally>,
    pub lines: u64,
}

impl Counts {
    pub fn get(&self, side: Side, fd: Fd, dir: Dir) -> Tally {
        self.by.get(&(side, fd, dir)).copied().unwrap_or_default()
    }
}

fn direction(syscall: &str) -> Option<Dir> {
    match syscall {
        "read" | "readv" | "recvfrom" | "recvmsg" | "recvmmsg" => Some(Dir::Read),
        "write" | "writev" | "sendto" | "sendmsg" | "sendmmsg" => Some(Dir::Write),
        _ => None,
    }
}

fn fd_kind(args: &str) -> Fd {
    // "7<UNIX-STREAM:[...]>, ..." : digits, then the annotation.
    let rest = args.trim_start_matches(|c: char| c.is_ascii_digit());
    match rest.strip_prefix('<') {
        Some(a) if a.starts_with("UNIX") => Fd::Unix,
        Some(a) if a.starts_with("TCP") => Fd::Tcp,
        _ => Fd::Other,
    }
}

/// The syscall's return value, from the text after its last " = ".
fn result(line: &str) -> Option<i64> {
    let tail = &line[line.rfind(") = ")? + 4..];
    tail.split_whitespace().next()?.parse().ok()
}

fn record(counts: &mut Counts, key: (Side, Fd, Dir), line: &str) {
    let t = counts.by.entry(key).or_default();
    t.calls += 1;
    match result(line) {
        Some(n) if n > 0 => {
            t.ok += 1;
            t.bytes += n as u64;
        }
        Some(-1) if line.contains(" EAGAIN ") => t.eagain += 1,
        _ => {}
    }
}

/// Counts the read/write-family calls in a trace; `side` says whose thread an id is.
pub fn count(text: &str, default_tid: i32, side: impl Fn(i32) -> Side) -> Counts {
    let mut counts = Counts::default();
    let mut pending: HashMap<i32, (Side, Fd, Dir)> = HashMap::new();
    for line in text.lines() {
        counts.lines += 1;
        let line = line.trim();
        let (tid, call) = match line.split_once(char::is_whitespace) {
            Some((t, rest)) if t.bytes().all(|b| b.is_ascii_digit()) => {
                (t.parse().unwrap_or(default_tid), rest.trim_start())
            }
            _ => (default_tid, line),
        };
        if let Some(resumed) = call.strip_prefix("<... ") {
            // "<... write resumed>) = 58": the result of an earlier unfinished call.
            if let Some(key) = pending.remove(&tid) {
                record(&mut counts, key, resumed);
            }
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let Some(dir) = direction(name) else { continue };
        let key = (side(tid), fd_kind(args), dir);
        if call.ends_with("<unfinished ...>") {
            pending.insert(tid, key);
        } else {
            record(&mut counts, key, call);
        }
    }
    // Calls still unfinished when the tracer detached count as calls.
    for key in pending.into_values() {
        counts.by.entry(key).or_default().calls += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_side_kind_and_direction() {
        let trace = r#"100  sendto(3<UNIX-STREAM:[50100->50101]>, "x = 1", 5, 0, NULL, 0) = 5
200  recvfrom(4<UNIX-STREAM:[50101->50100]>, "x = 1", 8192, 0, NULL, NULL) = 5
200  read(4<UNIX-STREAM:[50101->50100]>, 0x7ffd, 8192) = -1 EAGAIN (Resource temporarily unavailable)
100  read(6<TCP:[127.0.0.1:8080->127.0.0.1:33140]>, "GET / HTTP/1.1\r\n"..., 4096) = 40
101  write(7<UNIX:[50102->50103]>, "abc", 3 <unfinished ...>
100  write(9<anon_inode:[eventfd]>, "\1\0\0\0\0\0\0\0", 8) = 8
101  <... write resumed>) = 3
--- SIGCHLD {si_signo=SIGCHLD} ---
"#;
        let side = |tid| match tid {
            100 | 101 => Side::Master,
            200 => Side::Worker,
            _ => Side::Other,
        };
        let c = count(trace, 100, side);
        let mw = c.get(Side::Master, Fd::Unix, Dir::Write);
        assert_eq!((mw.calls, mw.ok, mw.bytes), (2, 2, 8));
        let wr = c.get(Side::Worker, Fd::Unix, Dir::Read);
        assert_eq!((wr.calls, wr.ok, wr.eagain), (2, 1, 1));
        assert_eq!(c.get(Side::Master, Fd::Tcp, Dir::Read).bytes, 40);
        assert_eq!(c.get(Side::Master, Fd::Other, Dir::Write).calls, 1);
        assert_eq!(c.get(Side::Worker, Fd::Unix, Dir::Write).calls, 0);
    }
}
